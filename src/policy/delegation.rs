//! Delegation (issue 8): which agents may act for which subjects, on which servers, with
//! which scopes; who may carry a token one hop further; and what every hop is capped by.
//!
//! ```toml
//! [[delegation]]
//! id = "assistant-for-staff"
//! issuer = "corp-idp"                  # the [[issuer]] whose user tokens are subjects
//! actor = "assistant"                  # the agent that may act for them
//! limit_to_subject_scopes = true       # also cap by the subject token's own `scope`
//! [delegation.subject]                 # tests on the subject token (predicate.rs)
//! groups = { contains = "staff" }
//! email = { glob = "*@acme.example" }
//!   [[delegation.allow]]               # what the subject may have through this rule
//!   server = "docs"
//!   scopes = ["read", "write"]
//!
//! [[server]]
//! id = "agent-b"
//! resource = "https://agent-b.example/mcp"
//! scopes = ["ask"]
//! operator = "agent-b"                 # the agent that runs this MCP server
//!
//! [chains]
//! max_actors = 3                       # the deepest `act` chain issued (default 3)
//! ```
//!
//! Every token records its subject's **entitlement**: what its subject may have on each
//! server by policy. A token of an agent acting as itself: that agent's allowances; a
//! federated token: its rule's agent's; an on-behalf-of token: its delegation rule's. An
//! exchange of the token, whoever carries it, is capped by that entitlement on the new
//! server, by the new actor's own allowance there, by the token's own scopes, and by the
//! request: a delegated token never carries more than its subject could get directly, nor
//! more than its actor may get (the confused deputy has nothing to lend).

use super::predicate::Predicates;
use super::{Allowance, Policy, PolicyError};
use crate::protocol::ScopeSet;
use serde::Deserialize;
use std::collections::HashMap;

/// The default cap on the `act` chain of an issued token.
pub const DEFAULT_MAX_ACTORS: usize = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DelegationDef {
    pub(super) id: String,
    issuer: String,
    actor: String,
    #[serde(default)]
    subject: toml::Table,
    #[serde(default)]
    limit_to_subject_scopes: bool,
    #[serde(default)]
    allow: Vec<super::load::AllowDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChainsDef {
    pub(super) max_actors: usize,
}

#[derive(Debug)]
pub struct DelegationRule {
    pub id: String,
    /// Its index in [`Policy::delegation`].
    pub index: usize,
    /// Index into [`Policy::issuers`].
    pub issuer: usize,
    /// Index into [`Policy::agents`].
    pub actor: usize,
    pub subject: Predicates,
    pub limit_to_subject_scopes: bool,
    pub allow: Vec<Allowance>,
    pub source: String,
}

impl DelegationRule {
    pub fn allowance(&self, server: usize) -> Option<&Allowance> {
        self.allow.iter().find(|a| a.server == server)
    }
}

/// What a token's subject may have by policy, recorded in every token this broker issues
/// (claim `entitlement`) so that a later exchange is capped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// An agent acting as itself: its own allowances.
    Agent(usize),
    /// A federated token: the agent its federation rule maps to.
    Federation(usize),
    /// An on-behalf-of token: its delegation rule's allowances.
    Delegation(usize),
}

/// Why no delegation applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelegationDeny {
    NoRule { issuer: String, actor: String },
    Ambiguous { first: String, second: String },
    ActorDisabled { actor: String },
}

impl std::fmt::Display for DelegationDeny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DelegationDeny::NoRule { issuer, actor } => write!(
                f,
                "no delegation rule lets agent '{actor}' act for this subject of issuer '{issuer}'"
            ),
            DelegationDeny::Ambiguous { first, second } => write!(
                f,
                "delegation rules '{first}' and '{second}' both match this subject and actor; refused as ambiguous"
            ),
            DelegationDeny::ActorDisabled { actor } => write!(f, "agent '{actor}' is disabled"),
        }
    }
}

pub(super) fn rule_from_def(
    policy: &Policy,
    file: &str,
    d: &DelegationDef,
) -> Result<DelegationRule, PolicyError> {
    let err = |reason: String| PolicyError { file: file.to_string(), reason };
    super::load::check_id(file, "delegation rule", &d.id)?;
    let ctx = format!("delegation rule '{}'", d.id);
    let issuer = policy
        .issuer_index(&d.issuer)
        .ok_or_else(|| err(format!("{ctx}: no [[issuer]] has id '{}'", d.issuer)))?;
    let actor = policy
        .agent_index(&d.actor)
        .ok_or_else(|| err(format!("{ctx}: no [[agent]] has id '{}'", d.actor)))?;
    let subject = Predicates::from_toml(&ctx, &d.subject).map_err(err)?;
    if subject.is_empty() {
        return Err(err(format!(
            "{ctx}: has no [delegation.subject] tests; a rule without one would let agent '{}' act for every subject of issuer '{}'",
            d.actor, d.issuer
        )));
    }
    if d.allow.is_empty() {
        return Err(err(format!("{ctx}: allows no server ([[delegation.allow]])")));
    }
    let allow = super::load::allowances(policy, file, &ctx, &d.allow)?;
    Ok(DelegationRule {
        id: d.id.clone(),
        index: policy.delegation.len(),
        issuer,
        actor,
        subject,
        limit_to_subject_scopes: d.limit_to_subject_scopes,
        allow,
        source: file.to_string(),
    })
}

/// The rules of each (issuer, actor) pair.
pub(super) fn index(rules: &[DelegationRule]) -> HashMap<(usize, usize), Vec<usize>> {
    let mut out: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        out.entry((r.issuer, r.actor)).or_default().push(i);
    }
    out
}

impl Policy {
    /// The one delegation rule that lets `actor` act for a verified token of `issuer` with
    /// these `claims`. The broker and `policy explain` both decide with this.
    pub fn delegation_rule(
        &self,
        issuer: usize,
        actor: usize,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<&DelegationRule, DelegationDeny> {
        let agent = &self.agents[actor];
        if agent.disabled {
            return Err(DelegationDeny::ActorDisabled { actor: agent.id.clone() });
        }
        let candidates = self.delegation_index.get(&(issuer, actor)).map_or(&[][..], |v| v.as_slice());
        let mut matching = candidates.iter().map(|&i| &self.delegation[i]).filter(|r| r.subject.hold(claims));
        match (matching.next(), matching.next()) {
            (Some(r), None) => Ok(r),
            (None, _) => Err(DelegationDeny::NoRule {
                issuer: self.issuers[issuer].id.clone(),
                actor: agent.id.clone(),
            }),
            (Some(a), Some(b)) => {
                Err(DelegationDeny::Ambiguous { first: a.id.clone(), second: b.id.clone() })
            }
        }
    }

    /// The delegation rules of (`issuer`, `actor`) with how each subject test fared.
    pub fn delegation_trace<'p>(
        &'p self,
        issuer: usize,
        actor: usize,
        claims: &'p serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(&'p DelegationRule, Vec<super::predicate::TestOutcome<'p>>)> {
        let candidates = self.delegation_index.get(&(issuer, actor)).map_or(&[][..], |v| v.as_slice());
        candidates.iter().map(|&i| &self.delegation[i]).map(|r| (r, r.subject.outcomes(claims))).collect()
    }

    /// What an entitlement allows on `server`, if anything.
    pub fn entitlement_allowance(&self, e: Entitlement, server: usize) -> Option<&Allowance> {
        match e {
            Entitlement::Agent(a) => self.agents[a].allowance(server),
            Entitlement::Federation(r) => self.agents[self.federation[r].agent].allowance(server),
            Entitlement::Delegation(r) => self.delegation[r].allowance(server),
        }
    }

    /// The claim value recording an entitlement (`agent:<id>`, `federation:<rule>`,
    /// `delegation:<rule>`).
    pub fn entitlement_claim(&self, e: Entitlement) -> String {
        match e {
            Entitlement::Agent(a) => format!("agent:{}", self.agents[a].id),
            Entitlement::Federation(r) => format!("federation:{}", self.federation[r].id),
            Entitlement::Delegation(r) => format!("delegation:{}", self.delegation[r].id),
        }
    }

    /// The entitlement a claim value names, in this policy (`None` when what it names is
    /// gone: the token can then not be exchanged, fail closed).
    pub fn entitlement_from_claim(&self, claim: &str) -> Option<Entitlement> {
        let (kind, id) = claim.split_once(':')?;
        match kind {
            "agent" => self.agent_index(id).map(Entitlement::Agent),
            "federation" => self.federation.iter().position(|r| r.id == id).map(Entitlement::Federation),
            "delegation" => self.delegation.iter().position(|r| r.id == id).map(Entitlement::Delegation),
            _ => None,
        }
    }

    /// Describe an entitlement for messages.
    pub fn entitlement_name(&self, e: Entitlement) -> String {
        match e {
            Entitlement::Agent(a) => format!("agent '{}'", self.agents[a].id),
            Entitlement::Federation(r) => {
                format!(
                    "agent '{}' (federation rule '{}')",
                    self.agents[self.federation[r].agent].id, self.federation[r].id
                )
            }
            Entitlement::Delegation(r) => format!("delegation rule '{}'", self.delegation[r].id),
        }
    }

    /// Whether `actor` may exchange one of our tokens issued to `client_id` for `aud`: it is
    /// the agent the token was issued to, or the operator of its audience.
    pub fn may_exchange(&self, actor: &str, client_id: &str, aud: &str) -> bool {
        actor == client_id
            || self
                .server_by_resource(aud)
                .and_then(|s| self.operator_of(s))
                .is_some_and(|o| self.agents[o].id == actor)
    }

    /// The agent that operates a server (`operator`), if the policy names one.
    pub fn operator_of(&self, server: usize) -> Option<usize> {
        self.servers[server].operator
    }

    /// The deepest `act` chain this broker issues (`[chains] max_actors`, default 3).
    pub fn max_actors(&self) -> usize {
        self.max_actors
    }

    /// Refuse an `act` chain deeper than `[chains] max_actors`.
    pub fn check_chain(&self, act: &crate::mint::Act) -> Result<(), String> {
        let max = self.max_actors;
        if act.depth() > max {
            return Err(format!(
                "the act chain would name {} actors; this broker issues at most {max} (RFC 8693 section 4.1)",
                act.depth()
            ));
        }
        Ok(())
    }

    /// Scopes the subject token itself carries (`scope`, RFC 8693 section 4.2; `scp`, as
    /// Entra and Okta write it), for rules with `limit_to_subject_scopes`. `None`: it names
    /// none (the rule then allows nothing).
    pub fn subject_scopes(claims: &serde_json::Map<String, serde_json::Value>) -> Option<ScopeSet> {
        match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(serde_json::Value::String(s)) => ScopeSet::parse(s).ok(),
            Some(serde_json::Value::Array(a)) => {
                ScopeSet::from_tokens(a.iter().filter_map(|v| v.as_str().map(String::from))).ok()
            }
            _ => None,
        }
    }

    /// Pairs of delegation rules (ids) with one issuer and actor whose subjects can overlap.
    pub fn delegation_overlaps(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for members in self.delegation_index.values() {
            for (n, &a) in members.iter().enumerate() {
                for &b in &members[n + 1..] {
                    let (ra, rb) = (&self.delegation[a], &self.delegation[b]);
                    if ra.subject.may_overlap(&rb.subject) {
                        let (x, y) = if ra.id <= rb.id { (ra, rb) } else { (rb, ra) };
                        out.push((x.id.as_str(), y.id.as_str()));
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// RFC 8693 section 4.4: `may_act`, when a subject token carries it, names the party allowed
/// to act for the subject. It must name this actor: its `sub` is the agent id, and its `iss`,
/// if present, this broker.
pub fn may_act_names(
    may_act: Option<&serde_json::Value>,
    actor: &str,
    broker_issuer: &str,
) -> Result<(), String> {
    let Some(may_act) = may_act else { return Ok(()) };
    let names_actor = may_act.get("sub").and_then(|v| v.as_str()) == Some(actor)
        && may_act.get("iss").is_none_or(|i| i.as_str() == Some(broker_issuer));
    if names_actor {
        Ok(())
    } else {
        Err(format!("its may_act does not name agent '{actor}' (RFC 8693 section 4.4)"))
    }
}
