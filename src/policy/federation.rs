//! Federation rules (`[[federation]]`): a token from a trusted issuer (a CI platform, a
//! cluster) whose claims satisfy a rule's predicates acts as the rule's agent, whose
//! `[[agent.allow]]` grants then apply.
//!
//! ```toml
//! [[federation]]
//! id = "infra-deploy-from-main"
//! issuer = "github-actions"            # an [[issuer]] id
//! agent = "infra-deployer"             # an [[agent]] id
//! [federation.claims]                  # all must hold (see predicate.rs)
//! repository_owner_id = "1234567"
//! repository_id = "89012345"
//! ref = "refs/heads/main"
//! job_workflow_ref = { glob = "acme/infra/.github/workflows/deploy.yml@*" }
//! ```
//!
//! Exactly one rule must match: a token that two rules match is refused as ambiguous (fail
//! closed: the broker does not guess which identity was meant), and `policy check` warns
//! about pairs of rules that can match one token. Rules are indexed per issuer by the claim
//! that most of its rules test for an exact string (usually `repository_id` or `sub`), so a
//! request evaluates only the rules that can match it, however many there are.

use super::predicate::{Predicates, TestOutcome};
use super::{Policy, PolicyError};
use serde::Deserialize;
use std::collections::HashMap;

/// One `[[federation]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationDef {
    pub id: String,
    pub issuer: String,
    pub agent: String,
    #[serde(default)]
    pub claims: toml::Table,
}

#[derive(Debug)]
pub struct FederationRule {
    pub id: String,
    /// Its index in [`Policy::federation`].
    pub index: usize,
    /// Index into [`Policy::issuers`].
    pub issuer: usize,
    /// Index into [`Policy::agents`].
    pub agent: usize,
    pub predicates: Predicates,
    pub source: String,
}

/// The rules of one issuer, indexed.
#[derive(Debug, Default)]
pub struct IssuerRules {
    /// The claim most rules of this issuer test for an exact string.
    key_claim: Option<String>,
    by_value: HashMap<String, Vec<usize>>,
    /// Rules without an exact test on `key_claim`: always candidates.
    rest: Vec<usize>,
}

/// Why no rule maps a token to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FederationDeny {
    NoRule { issuer: String },
    Ambiguous { issuer: String, first: String, second: String },
    AgentDisabled { rule: String, agent: String },
}

impl std::fmt::Display for FederationDeny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FederationDeny::NoRule { issuer } => {
                write!(f, "no federation rule of issuer '{issuer}' matches this token's claims")
            }
            FederationDeny::Ambiguous { issuer, first, second } => write!(
                f,
                "federation rules '{first}' and '{second}' of issuer '{issuer}' both match this token; it is refused as ambiguous"
            ),
            FederationDeny::AgentDisabled { rule, agent } => {
                write!(f, "agent '{agent}' (federation rule '{rule}') is disabled")
            }
        }
    }
}

/// Validate one rule against the issuers and agents already loaded.
pub(super) fn rule_from_def(
    policy: &Policy,
    file: &str,
    d: &FederationDef,
) -> Result<FederationRule, PolicyError> {
    let err = |reason: String| PolicyError { file: file.to_string(), reason };
    super::load::check_id(file, "federation rule", &d.id)?;
    let ctx = format!("federation rule '{}'", d.id);
    let issuer = policy
        .issuer_index(&d.issuer)
        .ok_or_else(|| err(format!("{ctx}: no [[issuer]] has id '{}'", d.issuer)))?;
    let agent = policy
        .agent_index(&d.agent)
        .ok_or_else(|| err(format!("{ctx}: no [[agent]] has id '{}'", d.agent)))?;
    let predicates = Predicates::from_toml(&ctx, &d.claims).map_err(err)?;
    if predicates.is_empty() {
        return Err(err(format!(
            "{ctx}: has no claims tests; a rule without one would map every token of issuer '{}' to agent '{}'",
            d.issuer, d.agent
        )));
    }
    let index = policy.federation.len();
    Ok(FederationRule { id: d.id.clone(), index, issuer, agent, predicates, source: file.to_string() })
}

/// Build the per-issuer index over `rules` (all rules of the policy).
pub(super) fn index(issuers: usize, rules: &[FederationRule]) -> Vec<IssuerRules> {
    let mut out: Vec<IssuerRules> = (0..issuers).map(|_| IssuerRules::default()).collect();
    let mut by_issuer: Vec<Vec<usize>> = vec![Vec::new(); issuers];
    for (i, r) in rules.iter().enumerate() {
        by_issuer[r.issuer].push(i);
    }
    for (issuer, members) in by_issuer.into_iter().enumerate() {
        // The top-level claim that the most rules test for an exact string.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for &i in &members {
            for t in &rules[i].predicates.0 {
                if let (Some(name), super::predicate::Test::Equals(super::predicate::Scalar::String(_))) =
                    (t.path.name(), &t.test)
                {
                    *counts.entry(name).or_default() += 1;
                }
            }
        }
        let key =
            counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).map(|(k, _)| k.to_string());
        let slot = &mut out[issuer];
        for &i in &members {
            match key.as_deref().and_then(|k| rules[i].predicates.exact_string(k)) {
                Some(v) => slot.by_value.entry(v.to_string()).or_default().push(i),
                None => slot.rest.push(i),
            }
        }
        slot.key_claim = key;
    }
    out
}

impl Policy {
    /// The rules of `issuer` that can match `claims` (by the index; not yet evaluated).
    pub fn federation_candidates<'p>(
        &'p self,
        issuer: usize,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> impl Iterator<Item = &'p FederationRule> + 'p {
        let slot = &self.federation_index[issuer];
        let keyed: &[usize] = match &slot.key_claim {
            Some(k) => claims
                .get(k)
                .and_then(|v| v.as_str())
                .and_then(|v| slot.by_value.get(v))
                .map_or(&[], |v| v.as_slice()),
            None => &[],
        };
        keyed.iter().chain(slot.rest.iter()).map(move |&i| &self.federation[i])
    }

    /// The one rule of `issuer` whose predicates all hold for `claims`.
    pub fn federation_rule(
        &self,
        issuer: usize,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<&FederationRule, FederationDeny> {
        let issuer_id = || self.issuers[issuer].id.clone();
        let mut matching = self.federation_candidates(issuer, claims).filter(|r| r.predicates.hold(claims));
        match (matching.next(), matching.next()) {
            (Some(r), None) => Ok(r),
            (None, _) => Err(FederationDeny::NoRule { issuer: issuer_id() }),
            (Some(a), Some(b)) => Err(FederationDeny::Ambiguous {
                issuer: issuer_id(),
                first: a.id.clone(),
                second: b.id.clone(),
            }),
        }
    }

    /// The agent a trusted issuer's (verified) token acts as: the one matching rule's agent,
    /// which must be enabled. The broker and `policy explain` both decide with this.
    pub fn map_federated(
        &self,
        issuer: usize,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(&FederationRule, &super::Agent), FederationDeny> {
        let rule = self.federation_rule(issuer, claims)?;
        let agent = &self.agents[rule.agent];
        if agent.disabled {
            return Err(FederationDeny::AgentDisabled { rule: rule.id.clone(), agent: agent.id.clone() });
        }
        Ok((rule, agent))
    }

    /// Every rule of `issuer` with how each of its tests fared (for `policy explain`).
    pub fn federation_trace<'p>(
        &'p self,
        issuer: usize,
        claims: &'p serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(&'p FederationRule, Vec<TestOutcome<'p>>)> {
        self.federation
            .iter()
            .filter(|r| r.issuer == issuer)
            .map(|r| (r, r.predicates.outcomes(claims)))
            .collect()
    }

    /// The trusted issuers and federation rules for `policy check`, with a warning per pair
    /// of rules that can match one token.
    pub fn trust_summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if !self.issuers.is_empty() {
            let _ = writeln!(out, "issuers:");
        }
        for i in &self.issuers {
            let algs: Vec<&str> = i.algorithms.iter().map(|a| a.as_str()).collect();
            let _ = writeln!(
                out,
                "  {}  {}  keys: {}  algorithms: {}  audience: {}  max age: {}  single use: {}",
                i.id,
                i.issuer,
                i.source.kind(),
                algs.join(", "),
                i.audience.as_deref().unwrap_or("(this broker's issuer)"),
                i.max_token_age_secs.map_or("none".to_string(), |s| format!("{s}s")),
                i.single_use
            );
        }
        if !self.federation.is_empty() {
            let _ = writeln!(out, "federation rules:");
        }
        for r in &self.federation {
            let tests: Vec<String> = r.predicates.0.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  {}: issuer {} -> agent {}  when {}",
                r.id,
                self.issuers[r.issuer].id,
                self.agents[r.agent].id,
                tests.join(" and ")
            );
        }
        for s in self.servers.iter().filter(|s| s.operator.is_some()) {
            if let Some(op) = s.operator {
                let _ = writeln!(out, "server {} is operated by agent {}", s.id, self.agents[op].id);
            }
        }
        if !self.delegation.is_empty() {
            let _ = writeln!(out, "delegation rules (chains capped at {} actors):", self.max_actors());
        }
        for r in &self.delegation {
            let tests: Vec<String> = r.subject.0.iter().map(ToString::to_string).collect();
            let allow: Vec<String> =
                r.allow.iter().map(|a| format!("{}: {}", self.servers[a.server].id, a.scopes)).collect();
            let _ = writeln!(
                out,
                "  {}: agent {} acts for subjects of issuer {} when {}; allows {}{}",
                r.id,
                self.agents[r.actor].id,
                self.issuers[r.issuer].id,
                tests.join(" and "),
                allow.join("; "),
                if r.limit_to_subject_scopes { " (within the subject token's scope)" } else { "" }
            );
        }
        for (a, b) in self.delegation_overlaps() {
            let _ = writeln!(
                out,
                "warning: delegation rules '{a}' and '{b}' can both match one subject and actor; such a request is refused as ambiguous"
            );
        }
        for (issuer, a, b) in self.federation_overlaps() {
            let _ = writeln!(
                out,
                "warning: federation rules '{a}' and '{b}' of issuer '{issuer}' can both match one token; such a token is refused as ambiguous"
            );
        }
        out
    }

    /// Pairs of rules (ids) of one issuer that can both match one token (`policy check`
    /// warns about them). Rules keyed under different exact values of the index claim can
    /// never overlap, so only rules in one bucket, and the un-keyed ones against all, are
    /// compared.
    pub fn federation_overlaps(&self) -> Vec<(&str, &str, &str)> {
        let mut out = Vec::new();
        for (issuer, slot) in self.federation_index.iter().enumerate() {
            let mut pair = |a: usize, b: usize| {
                let (ra, rb) = (&self.federation[a], &self.federation[b]);
                if ra.predicates.may_overlap(&rb.predicates) {
                    let (x, y) = if ra.id <= rb.id { (ra, rb) } else { (rb, ra) };
                    out.push((self.issuers[issuer].id.as_str(), x.id.as_str(), y.id.as_str()));
                }
            };
            for bucket in slot.by_value.values() {
                for (n, &a) in bucket.iter().enumerate() {
                    for &b in &bucket[n + 1..] {
                        pair(a, b);
                    }
                }
            }
            let keyed: Vec<usize> = slot.by_value.values().flatten().copied().collect();
            for (n, &a) in slot.rest.iter().enumerate() {
                for &b in slot.rest[n + 1..].iter().chain(keyed.iter()) {
                    pair(a, b);
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;
    use serde_json::json;

    const BASE: &str = r#"
[[server]]
id = "docs"
resource = "https://docs.example/mcp"
scopes = ["read"]

[[issuer]]
id = "gh"
issuer = "https://token.actions.githubusercontent.com"
discovery = true

[[agent]]
id = "deployer"
[[agent.allow]]
server = "docs"
scopes = ["read"]
"#;

    fn load(extra: &str) -> Result<Policy, String> {
        Policy::from_sources(&[("p.toml".into(), format!("{BASE}\n{extra}"))]).map_err(|e| e.to_string())
    }

    fn rule(id: &str, issuer: &str, agent: &str, claims: &str) -> String {
        format!("[[federation]]\nid = \"{id}\"\nissuer = \"{issuer}\"\nagent = \"{agent}\"\n[federation.claims]\n{claims}\n")
    }

    #[test]
    fn refuses_rules_that_name_nothing_or_test_nothing() {
        for (extra, why) in [
            (rule("r", "nope", "deployer", "repo = 'a'"), "no [[issuer]] has id 'nope'"),
            (rule("r", "gh", "nobody", "repo = 'a'"), "no [[agent]] has id 'nobody'"),
            (
                "[[federation]]\nid = \"r\"\nissuer = \"gh\"\nagent = \"deployer\"\n".to_string(),
                "has no claims tests",
            ),
            (
                format!(
                    "{}{}",
                    rule("r", "gh", "deployer", "repo = 'a'"),
                    rule("r", "gh", "deployer", "repo = 'b'")
                ),
                "defined twice",
            ),
            (rule("r", "gh", "deployer", "iss = 'x'"), "issuer's configuration"),
            (
                "[[agent]]\nid = \"https://token.actions.githubusercontent.com\"\n".to_string(),
                "also the iss of issuer 'gh'",
            ),
        ] {
            let e = load(&extra).expect_err(&extra);
            assert!(e.contains(why) && e.starts_with("p.toml: "), "{extra}: {e}");
        }
    }

    #[test]
    fn one_rule_maps_more_are_ambiguous_and_overlaps_are_reported() {
        let p = load(&format!(
            "{}{}{}",
            rule("by-repo", "gh", "deployer", "repository_id = '1'\nref = 'refs/heads/main'"),
            rule("by-repo-tags", "gh", "deployer", "repository_id = '1'\nref = { glob = 'refs/tags/*' }"),
            rule("other-repo", "gh", "deployer", "repository_id = '2'"),
        ))
        .expect("valid");
        let claims = |v: serde_json::Value| v.as_object().cloned().expect("object");
        let (r, a) = p
            .map_federated(0, &claims(json!({"repository_id": "1", "ref": "refs/heads/main"})))
            .expect("maps");
        assert_eq!((r.id.as_str(), a.id.as_str()), ("by-repo", "deployer"));
        assert!(p.map_federated(0, &claims(json!({"repository_id": "3"}))).is_err());
        // Candidates come from the index: a token of repository 2 is tested against one rule.
        let c = claims(json!({"repository_id": "2"}));
        assert_eq!(p.federation_candidates(0, &c).count(), 1);
        assert!(p.federation_overlaps().is_empty(), "main vs tags, and repo 1 vs repo 2, cannot overlap");

        let q = load(&format!(
            "{}{}",
            rule("main", "gh", "deployer", "ref = 'refs/heads/main'"),
            rule("repo", "gh", "deployer", "repository_id = '1'"),
        ))
        .expect("valid");
        assert_eq!(q.federation_overlaps(), vec![("gh", "main", "repo")]);
        let both = claims(json!({"repository_id": "1", "ref": "refs/heads/main"}));
        let e = q.map_federated(0, &both).expect_err("ambiguous");
        assert!(e.to_string().contains("ambiguous"), "{e}");
        assert!(q.summary().contains("warning: federation rules 'main' and 'repo'"), "{}", q.summary());
    }
}
