//! Property tests of the policy decision (`policy::decide`) over generated policies: servers
//! offering any of five scopes, agents with any allowances (and default scopes) on any of
//! them, optional lifetime caps, any request.
//!
//! * Scope narrowing never widens: a permit's scopes are exactly (request, or the agent's
//!   default scopes when none is requested) ∩ the agent's allowance ∩ the ceiling (the
//!   subject token's scopes) ∩ the subject's entitlement when the subject is another party,
//!   and never empty (RFC 6749 section 3.3, RFC 8693 section 2.1).
//! * Deny by default: an agent/server pair the policy does not grant is refused whatever is
//!   asked (`invalid_target`, RFC 8707 section 2), and so is a subject without an entitlement
//!   there; an unknown, missing or second target is refused.
//! * The lifetime is the least of the configured default and maximum and the server's and the
//!   agent's caps.

use agent_sts::policy::{decide, Decision, Deny, Entitlement, Lifetimes, Policy};
use agent_sts::protocol::{ErrorCode, ScopeSet};
use proptest::prelude::*;

const UNIVERSE: [&str; 5] = ["a", "b", "c", "d", "e"];
const LIFETIMES: Lifetimes = Lifetimes { default_secs: 300, max_secs: 3600 };

fn set(mask: u8) -> ScopeSet {
    ScopeSet::from_tokens(UNIVERSE.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, s)| *s))
        .expect("scope tokens")
}

#[derive(Debug, Clone)]
struct Server {
    scopes: u8,
    cap: Option<u64>,
}

#[derive(Debug, Clone)]
struct Agent {
    /// Per server: (allowed, default) masks, already within the server's and the allowed scopes.
    allow: Vec<Option<(u8, u8)>>,
    cap: Option<u64>,
}

#[derive(Debug, Clone)]
struct World {
    servers: Vec<Server>,
    agents: Vec<Agent>,
}

fn world() -> impl Strategy<Value = World> {
    (1usize..=3, 1usize..=3).prop_flat_map(|(ns, na)| {
        let servers = proptest::collection::vec((1u8..32, proptest::option::of(1u64..2000)), ns);
        let agents = proptest::collection::vec(
            (
                proptest::collection::vec(proptest::option::of((0u8..32, 0u8..32)), ns),
                proptest::option::of(1u64..2000),
            ),
            na,
        );
        (servers, agents).prop_map(|(servers, agents)| {
            let servers: Vec<Server> =
                servers.into_iter().map(|(scopes, cap)| Server { scopes, cap }).collect();
            let agents = agents
                .into_iter()
                .map(|(allow, cap)| Agent {
                    allow: allow
                        .into_iter()
                        .zip(&servers)
                        .map(|(a, s)| a.map(|(al, d)| (al & s.scopes, d & al & s.scopes)))
                        .collect(),
                    cap,
                })
                .collect();
            World { servers, agents }
        })
    })
}

fn toml_list(mask: u8) -> String {
    let words: Vec<String> = set(mask).iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", words.join(", "))
}

fn resource(i: usize) -> String {
    format!("https://s{i}.props.test/mcp")
}

impl World {
    fn policy(&self) -> Policy {
        let mut t = String::new();
        for (i, s) in self.servers.iter().enumerate() {
            t += &format!(
                "[[server]]\nid = \"s{i}\"\nresource = \"{}\"\nscopes = {}\n",
                resource(i),
                toml_list(s.scopes)
            );
            if let Some(c) = s.cap {
                t += &format!("max_token_lifetime_secs = {c}\n");
            }
        }
        for (j, a) in self.agents.iter().enumerate() {
            t += &format!("[[agent]]\nid = \"g{j}\"\n");
            if let Some(c) = a.cap {
                t += &format!("max_token_lifetime_secs = {c}\n");
            }
            for (i, al) in a.allow.iter().enumerate() {
                if let Some((allowed, default)) = al {
                    t += &format!(
                        "[[agent.allow]]\nserver = \"s{i}\"\nscopes = {}\ndefault_scopes = {}\n",
                        toml_list(*allowed),
                        toml_list(*default)
                    );
                }
            }
        }
        Policy::from_sources(&[("props.toml".into(), t)]).expect("a generated policy loads")
    }
}

/// How the request names its target.
#[derive(Debug, Clone)]
enum Target {
    None,
    Resource(usize),
    Audience(usize),
    Both(usize, usize),
    Unknown,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::None),
        (0usize..3).prop_map(Target::Resource),
        (0usize..3).prop_map(Target::Audience),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Target::Both(a, b)),
        Just(Target::Unknown),
    ]
}

#[derive(Debug, Clone)]
struct Ask {
    agent: usize,
    target: Target,
    /// A mask, plus a scope no server offers.
    requested: Option<(u8, bool)>,
    ceiling: Option<u8>,
    /// Another agent as the subject (its entitlement caps the decision).
    subject: Option<usize>,
}

fn ask() -> impl Strategy<Value = Ask> {
    (
        0usize..3,
        target(),
        proptest::option::of((0u8..32, any::<bool>())),
        proptest::option::of(0u8..32),
        proptest::option::of(0usize..3),
    )
        .prop_map(|(agent, target, requested, ceiling, subject)| Ask {
            agent,
            target,
            requested,
            ceiling,
            subject,
        })
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn narrowing_never_widens_and_pairs_not_granted_are_denied(w in world(), q in ask()) {
        let policy = w.policy();
        let n = w.servers.len();
        let agent_ix = q.agent % w.agents.len();
        let agent = &policy.agents[agent_ix];
        let in_range = |i: usize| i < n;
        let (resources, audiences): (Vec<String>, Vec<String>) = match q.target {
            Target::None => (vec![], vec![]),
            Target::Resource(i) if in_range(i) => (vec![resource(i)], vec![]),
            Target::Audience(i) if in_range(i) => (vec![], vec![format!("s{i}")]),
            Target::Both(a, b) if in_range(a) && in_range(b) => (vec![resource(a)], vec![format!("s{b}")]),
            _ => (vec!["https://nowhere.props.test/mcp".into()], vec![]),
        };
        let requested = q.requested.map(|(m, junk)| {
            let mut s = set(m);
            if junk {
                s.extend(&ScopeSet::parse("zz").expect("scope"));
            }
            s
        });
        let ceiling = q.ceiling.map(set);
        let subject = q.subject.map(|j| j % w.agents.len()).filter(|j| *j != agent_ix);
        let d = Decision {
            agent,
            resources: &resources,
            audiences: &audiences,
            requested: requested.as_ref(),
            ceiling: ceiling.as_ref(),
            subject: subject.map(Entitlement::Agent),
        };
        let outcome = decide(&policy, &d, LIFETIMES);

        // The target, independently: every name must resolve, to one server.
        let targets: Vec<Option<usize>> = resources
            .iter()
            .map(|r| (0..n).find(|i| resource(*i) == *r))
            .chain(audiences.iter().map(|a| (0..n).find(|i| format!("s{i}") == *a)))
            .collect();
        if targets.is_empty() {
            prop_assert_eq!(outcome.map(|_| ()), Err(Deny::NoTarget));
            return Ok(());
        }
        if targets.iter().any(Option::is_none) {
            prop_assert!(matches!(outcome, Err(Deny::UnknownTarget(_))));
            return Ok(());
        }
        let mut ids: Vec<usize> = targets.into_iter().flatten().collect();
        ids.dedup();
        if ids.len() > 1 {
            prop_assert_eq!(outcome.map(|_| ()), Err(Deny::MultipleTargets));
            return Ok(());
        }
        let server = ids[0];

        // Deny by default: no allowance, no token.
        let Some((allowed, default)) = w.agents[agent_ix].allow[server] else {
            prop_assert!(matches!(outcome, Err(Deny::NotAllowed { .. })), "{:?}", outcome);
            prop_assert_eq!(outcome.map(|_| ()).unwrap_err().to_oauth().code, ErrorCode::InvalidTarget);
            return Ok(());
        };
        let entitled = match subject {
            None => None,
            Some(j) => match w.agents[j].allow[server] {
                None => {
                    prop_assert!(matches!(outcome, Err(Deny::SubjectNotAllowed { .. })), "{:?}", outcome);
                    return Ok(());
                }
                Some((s, _)) => Some(set(s)),
            },
        };

        // Exactly the intersection, never more; nothing left is invalid_scope.
        let mut expected = match &requested {
            Some(r) => r.intersection(&set(allowed)),
            None => set(default),
        };
        if let Some(e) = &entitled {
            expected = expected.intersection(e);
        }
        if let Some(c) = &ceiling {
            expected = expected.intersection(c);
        }
        if expected.is_empty() {
            prop_assert!(matches!(outcome, Err(Deny::NoScope { .. })), "{:?}", outcome);
            prop_assert_eq!(outcome.map(|_| ()).unwrap_err().to_oauth().code, ErrorCode::InvalidScope);
            return Ok(());
        }
        let permit = outcome.expect("a permit");
        prop_assert_eq!(&permit.server.resource, &resource(server));
        prop_assert_eq!(&permit.scopes, &expected);
        prop_assert!(permit.scopes.is_subset(&set(allowed)));
        if let Some(r) = &requested {
            prop_assert!(permit.scopes.is_subset(r));
        }
        let life = [Some(300), Some(3600), w.servers[server].cap, w.agents[agent_ix].cap].into_iter().flatten().min();
        prop_assert_eq!(Some(permit.lifetime_secs), life);
    }
}
