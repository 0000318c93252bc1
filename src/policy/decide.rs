//! The policy decision: a pure function from the exchange context to a permit or a
//! denial with its reason. No I/O, no clock reads.

use super::{Agent, Entitlement, Policy, Server};
use crate::protocol::{OAuthError, ScopeSet};

/// Token lifetimes from the configuration: the default, and the cap on every policy value.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub default_secs: u64,
    pub max_secs: u64,
}

/// What the decision looks at.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The agent whose allowance applies (the client, or the actor in an exchange).
    pub agent: &'a Agent,
    /// `resource` values (RFC 8707) and `audience` values (RFC 8693).
    pub resources: &'a [String],
    pub audiences: &'a [String],
    /// The requested scope, if any.
    pub requested: Option<&'a ScopeSet>,
    /// For exchanges: the subject token's scopes; the result is never wider.
    pub ceiling: Option<&'a ScopeSet>,
    /// When the subject is not the agent itself (a delegated or carried token): what the
    /// subject may have by policy; the result is never wider than that either.
    pub subject: Option<Entitlement>,
}

#[derive(Debug)]
pub struct Permit<'a> {
    pub server: &'a Server,
    pub scopes: ScopeSet,
    pub lifetime_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    NoTarget,
    MultipleTargets,
    UnknownTarget(String),
    NotAllowed { agent: String, server: String },
    NoScope { agent: String, server: String, requested: bool },
    SubjectNotAllowed { subject: String, server: String },
}

impl Deny {
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            Deny::NoTarget => OAuthError::invalid_target(
                "name the MCP server with `resource` (RFC 8707) or `audience` (RFC 8693)",
            ),
            Deny::MultipleTargets => OAuthError::invalid_target(
                "a token is issued for exactly one MCP server; send one resource (RFC 8707 section 2)",
            ),
            Deny::UnknownTarget(t) => {
                OAuthError::invalid_target(format!("unknown resource or audience '{}'", truncate(t)))
            }
            Deny::NotAllowed { agent, server } => {
                OAuthError::invalid_target(format!("agent '{agent}' may not reach server '{server}'"))
            }
            Deny::NoScope { agent, server, requested: true } => OAuthError::invalid_scope(format!(
                "none of the requested scopes is granted to agent '{agent}' on server '{server}'"
            )),
            Deny::NoScope { agent, server, requested: false } => OAuthError::invalid_scope(format!(
                "no scope requested and no default scopes for agent '{agent}' on server '{server}'"
            )),
            Deny::SubjectNotAllowed { subject, server } => OAuthError::invalid_target(format!(
                "the token's subject ({subject}) may not reach server '{server}'; a delegated token never exceeds its subject"
            )),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Decide. Steps: (1) resolve every `resource`/`audience` to a server, exactly one;
/// (2) the agent must have an allowance for it, and (2b) the subject's entitlement too when
/// the subject is not the agent; (3) scopes = requested ∩ allowed (or the agent's default
/// scopes when none is requested) ∩ the subject's entitlement ∩ ceiling, non-empty;
/// (4) lifetime = the least of the default, the configured max, the server's max and the
/// agent's max.
pub fn decide<'p>(policy: &'p Policy, d: &Decision<'_>, lifetimes: Lifetimes) -> Result<Permit<'p>, Deny> {
    // 1. One target.
    let mut target: Option<usize> = None;
    let resolved = d
        .resources
        .iter()
        .map(|r| (r, policy.server_by_resource(r)))
        .chain(d.audiences.iter().map(|a| (a, policy.server_by_audience(a))));
    for (name, server) in resolved {
        let server = server.ok_or_else(|| Deny::UnknownTarget(name.clone()))?;
        match target {
            Some(t) if t != server => return Err(Deny::MultipleTargets),
            _ => target = Some(server),
        }
    }
    let server_idx = target.ok_or(Deny::NoTarget)?;
    let server = &policy.servers[server_idx];

    // 2. Allowed to reach it.
    let allowance = d
        .agent
        .allowance(server_idx)
        .ok_or_else(|| Deny::NotAllowed { agent: d.agent.id.clone(), server: server.id.clone() })?;

    // 2b. The subject, when it is not the agent itself, must be entitled to it too.
    let entitled = match d.subject {
        None => None,
        Some(e) => Some(policy.entitlement_allowance(e, server_idx).ok_or_else(|| {
            Deny::SubjectNotAllowed { subject: policy.entitlement_name(e), server: server.id.clone() }
        })?),
    };

    // 3. Scopes.
    let mut scopes = match d.requested {
        Some(req) => req.intersection(&allowance.scopes),
        None => ScopeSet::clone(&allowance.default_scopes),
    };
    if let Some(e) = entitled {
        scopes = scopes.intersection(&e.scopes);
    }
    if let Some(ceiling) = d.ceiling {
        scopes = scopes.intersection(ceiling);
    }
    if scopes.is_empty() {
        return Err(Deny::NoScope {
            agent: d.agent.id.clone(),
            server: server.id.clone(),
            requested: d.requested.is_some(),
        });
    }

    // 4. Lifetime.
    let lifetime_secs = [
        Some(lifetimes.default_secs),
        Some(lifetimes.max_secs),
        server.max_token_lifetime_secs,
        d.agent.max_token_lifetime_secs,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(lifetimes.default_secs);

    Ok(Permit { server, scopes, lifetime_secs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_key_pair, Alg};
    use crate::protocol::ErrorCode;

    fn policy() -> Policy {
        let jwk = serde_json::Value::Object(generate_key_pair(Alg::ES256, None).expect("gen").public_jwk);
        let jwk: toml::Value = serde_json::from_value(jwk).expect("toml");
        let text = format!(
            r#"
[[server]]
id = "docs"
resource = "https://docs.example/mcp"
scopes = ["read", "write", "admin"]
max_token_lifetime_secs = 600

[[server]]
id = "tickets"
resource = "https://tickets.example/mcp"
scopes = ["read"]

[[agent]]
id = "bot"
max_token_lifetime_secs = 120
keys = [{jwk}]
[[agent.allow]]
server = "docs"
scopes = ["read", "write"]
default_scopes = ["read"]
"#
        );
        Policy::from_sources(&[("p.toml".into(), text)]).expect("valid")
    }

    const LIFE: Lifetimes = Lifetimes { default_secs: 300, max_secs: 3600 };

    fn run(
        p: &Policy,
        resources: &[&str],
        audiences: &[&str],
        scope: Option<&str>,
    ) -> Result<(String, String, u64), Deny> {
        let resources: Vec<String> = resources.iter().map(|s| s.to_string()).collect();
        let audiences: Vec<String> = audiences.iter().map(|s| s.to_string()).collect();
        let requested = scope.map(|s| ScopeSet::parse(s).expect("scope"));
        let d = Decision {
            agent: p.agent("bot").expect("bot"),
            resources: &resources,
            audiences: &audiences,
            requested: requested.as_ref(),
            ceiling: None,
            subject: None,
        };
        decide(p, &d, LIFE)
            .map(|permit| (permit.server.id.clone(), permit.scopes.to_string(), permit.lifetime_secs))
    }

    #[test]
    fn narrows_scopes_and_lifetime() {
        let p = policy();
        let got = run(&p, &["https://docs.example/mcp"], &[], Some("read admin other")).expect("permit");
        assert_eq!(got, ("docs".into(), "read".into(), 120));
        let got = run(&p, &[], &["docs"], None).expect("default scopes");
        assert_eq!(got.1, "read");
    }

    /// RFC 8707 §2: unknown, unreachable, missing or several targets are invalid_target.
    #[test]
    fn rfc8707_target_denials() {
        let p = policy();
        assert_eq!(
            run(&p, &["https://nope.example"], &[], None),
            Err(Deny::UnknownTarget("https://nope.example".into()))
        );
        assert!(matches!(run(&p, &["https://tickets.example/mcp"], &[], None), Err(Deny::NotAllowed { .. })));
        assert_eq!(run(&p, &[], &[], None), Err(Deny::NoTarget));
        assert_eq!(
            run(&p, &["https://docs.example/mcp", "https://tickets.example/mcp"], &[], None),
            Err(Deny::MultipleTargets)
        );
        assert!(
            run(&p, &["https://docs.example/mcp"], &["docs"], None).is_ok(),
            "same server twice is one target"
        );
        for deny in [Deny::NoTarget, Deny::MultipleTargets, Deny::UnknownTarget("x".into())] {
            assert_eq!(deny.to_oauth().code, ErrorCode::InvalidTarget);
        }
    }

    /// RFC 6749 §3.3 / §5.2: nothing left after narrowing is invalid_scope.
    #[test]
    fn empty_scope_is_invalid_scope() {
        let p = policy();
        let deny = run(&p, &["https://docs.example/mcp"], &[], Some("admin")).unwrap_err();
        assert_eq!(deny.to_oauth().code, ErrorCode::InvalidScope);
    }

    #[test]
    fn ceiling_never_widens() {
        let p = policy();
        let resources = vec!["https://docs.example/mcp".to_string()];
        let requested = ScopeSet::parse("read write").expect("scope");
        let ceiling = ScopeSet::parse("write").expect("scope");
        let d = Decision {
            agent: p.agent("bot").expect("bot"),
            resources: &resources,
            audiences: &[],
            requested: Some(&requested),
            ceiling: Some(&ceiling),
            subject: None,
        };
        assert_eq!(decide(&p, &d, LIFE).expect("permit").scopes.to_string(), "write");
    }
}
