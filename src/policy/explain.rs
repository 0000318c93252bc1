//! `policy explain`: a hypothetical request decided by the very functions the broker runs
//! once a request's JWTs have verified ([`Policy::map_federated`], [`Policy::delegation_rule`],
//! [`Policy::may_exchange`], [`Policy::check_chain`], [`super::decide`]), with a trace of
//! why. Signatures, audiences and times are not part of it: the input is what a verified
//! token would say.

use super::delegation::may_act_names;
use super::{decide, Decision, Entitlement, Lifetimes, Policy};
use crate::mint::Act;
use crate::protocol::{ErrorCode, ScopeSet};
use std::fmt;

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Who asks.
#[derive(Debug, Clone)]
pub enum Who {
    /// An agent authenticated by its own assertion.
    Agent { id: String },
    /// A trusted issuer's token (federation): the issuer by policy id or exact `iss`, and the
    /// token's claims.
    Federated { issuer: String, claims: JsonObject },
    /// An agent acting for the subject of a trusted issuer's token (on-behalf-of).
    OnBehalfOf { issuer: String, claims: JsonObject, actor: String },
    /// An agent exchanging one of our tokens (re-scoping it, or carrying it one hop further as
    /// the operator of its audience): the token's claims (`sub`, `aud`, `client_id`, `scope`,
    /// `entitlement`, `act`).
    Carried { token: JsonObject, actor: String },
}

/// Which grant carries the request; it decides the error code of a refusal, as in the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    ClientCredentials,
    JwtBearer,
    TokenExchange,
}

impl Via {
    pub fn parse(name: &str) -> Option<Via> {
        Some(match name {
            "client_credentials" | "client-credentials" => Via::ClientCredentials,
            "jwt-bearer" | "jwt_bearer" | "urn:ietf:params:oauth:grant-type:jwt-bearer" => Via::JwtBearer,
            "token-exchange" | "token_exchange" | "urn:ietf:params:oauth:grant-type:token-exchange" => {
                Via::TokenExchange
            }
            _ => return None,
        })
    }

    /// The code of a refused JWT in this grant (RFC 7523 section 3.1 and 3.2, RFC 8693 section 2.2.2).
    fn jwt_refusal(self) -> ErrorCode {
        match self {
            Via::ClientCredentials => ErrorCode::InvalidClient,
            Via::JwtBearer => ErrorCode::InvalidGrant,
            Via::TokenExchange => ErrorCode::InvalidRequest,
        }
    }
}

/// A hypothetical request.
#[derive(Debug, Clone)]
pub struct Hypothetical {
    pub who: Who,
    /// Default: client_credentials for an agent, jwt-bearer for a federated token.
    pub via: Option<Via>,
    /// A server id or resource URI.
    pub server: String,
    pub scope: Option<String>,
    /// This broker's issuer, when known (a `may_act` naming an `iss` is compared with it).
    pub broker_issuer: Option<String>,
}

/// What the broker would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed {
        agent: String,
        sub: String,
        server: String,
        resource: String,
        scopes: String,
        lifetime_secs: u64,
    },
    Refused {
        code: ErrorCode,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Explanation {
    pub outcome: Outcome,
    /// The rule that mapped the request, if one did.
    pub rule: Option<String>,
    /// What was looked at, in order.
    pub trace: Vec<String>,
}

impl Explanation {
    fn refused(code: ErrorCode, reason: impl Into<String>, rule: Option<String>, trace: Vec<String>) -> Self {
        Explanation { outcome: Outcome::Refused { code, reason: reason.into() }, rule, trace }
    }
}

/// Decide `h` against `policy` as the broker would after verifying its JWTs.
pub fn explain(policy: &Policy, h: &Hypothetical, lifetimes: Lifetimes) -> Explanation {
    let mut trace = Vec::new();
    // What an exchange adds: the subject's entitlement, the subject token's scopes, the act.
    let mut subject: Option<Entitlement> = None;
    let mut ceiling: Option<ScopeSet> = None;
    let mut act: Option<Act> = None;
    let (agent, sub, rule) = match &h.who {
        Who::Agent { id } => {
            let via = h.via.unwrap_or(Via::ClientCredentials);
            let Some(agent) = policy.agent(id) else {
                return Explanation::refused(
                    via.jwt_refusal(),
                    format!("'{id}' is not a registered agent"),
                    None,
                    trace,
                );
            };
            if agent.disabled {
                return Explanation::refused(
                    via.jwt_refusal(),
                    format!("agent '{id}' is disabled"),
                    None,
                    trace,
                );
            }
            trace.push(format!("agent '{id}' (from {}) authenticates as itself", agent.source));
            (agent, id.clone(), None)
        }
        Who::Federated { issuer, claims } => {
            let via = h.via.unwrap_or(Via::JwtBearer);
            let Some(index) = policy.issuer_index(issuer).or_else(|| policy.issuer_by_iss(issuer)) else {
                return Explanation::refused(
                    via.jwt_refusal(),
                    format!("'{issuer}' is not a trusted issuer (no [[issuer]] has this id or iss)"),
                    None,
                    trace,
                );
            };
            let config = &policy.issuers[index];
            trace.push(format!("issuer '{}' ({}); its rules:", config.id, config.issuer));
            for (r, outcomes) in policy.federation_trace(index, claims) {
                let verdict = if outcomes.iter().all(|o| o.holds) { "MATCHES" } else { "does not match" };
                trace.push(format!("  rule '{}' -> agent '{}': {verdict}", r.id, policy.agents[r.agent].id));
                for o in outcomes {
                    trace.push(format!("    {o}"));
                }
            }
            let (rule, agent) = match policy.map_federated(index, claims) {
                Ok(found) => found,
                Err(deny) => return Explanation::refused(via.jwt_refusal(), deny.to_string(), None, trace),
            };
            let Some(sub) = claims.get("sub").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) else {
                return Explanation::refused(
                    via.jwt_refusal(),
                    "the token has no sub",
                    Some(rule.id.clone()),
                    trace,
                );
            };
            trace.push(format!("rule '{}' maps the token to agent '{}'", rule.id, agent.id));
            subject = Some(Entitlement::Federation(rule.index));
            (agent, sub.to_string(), Some(rule.id.clone()))
        }
        Who::OnBehalfOf { issuer, claims, actor } => {
            let Some(index) = policy.issuer_index(issuer).or_else(|| policy.issuer_by_iss(issuer)) else {
                return subject_invalid(format!("'{issuer}' is not a trusted issuer"), trace);
            };
            let Some(actor_index) = policy.agent_index(actor) else {
                return Explanation::refused(
                    ErrorCode::InvalidClient,
                    format!("'{actor}' is not a registered agent"),
                    None,
                    trace,
                );
            };
            let Some(sub) = claims.get("sub").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) else {
                return subject_invalid("has no sub".into(), trace);
            };
            if let Err(e) =
                may_act_names(claims.get("may_act"), actor, h.broker_issuer.as_deref().unwrap_or_default())
            {
                return subject_invalid(e, trace);
            }
            trace.push(format!(
                "issuer '{}'; delegation rules for actor '{actor}':",
                policy.issuers[index].id
            ));
            for (r, outcomes) in policy.delegation_trace(index, actor_index, claims) {
                let verdict = if outcomes.iter().all(|o| o.holds) { "MATCHES" } else { "does not match" };
                trace.push(format!("  rule '{}': {verdict}", r.id));
                for o in outcomes {
                    trace.push(format!("    {o}"));
                }
            }
            let rule = match policy.delegation_rule(index, actor_index, claims) {
                Ok(r) => r,
                Err(deny) => return subject_invalid(deny.to_string(), trace),
            };
            let prior = match claims.get("act").map(|v| serde_json::from_value::<Act>(v.clone())) {
                None => None,
                Some(Ok(a)) => Some(Box::new(a)),
                Some(Err(_)) => return subject_invalid("its act claim is malformed".into(), trace),
            };
            let chain = Act { sub: actor.clone(), act: prior };
            if let Err(e) = policy.check_chain(&chain) {
                return Explanation::refused(ErrorCode::InvalidRequest, e, Some(rule.id.clone()), trace);
            }
            trace.push(format!("rule '{}' lets agent '{actor}' act for '{sub}'", rule.id));
            subject = Some(Entitlement::Delegation(rule.index));
            if rule.limit_to_subject_scopes {
                ceiling = Some(Policy::subject_scopes(claims).unwrap_or_default());
            }
            act = Some(chain);
            (&policy.agents[actor_index], sub.to_string(), Some(rule.id.clone()))
        }
        Who::Carried { token, actor } => {
            let Some(agent) = policy.agent(actor).filter(|a| !a.disabled) else {
                return Explanation::refused(
                    ErrorCode::InvalidClient,
                    format!("'{actor}' is not a registered, enabled agent"),
                    None,
                    trace,
                );
            };
            let text = |name: &str| token.get(name).and_then(|v| v.as_str()).unwrap_or_default();
            let (sub, aud, client_id) = (text("sub"), text("aud"), text("client_id"));
            if !policy.may_exchange(actor, client_id, aud) {
                return subject_invalid(
                    format!("only the agent it was issued to ('{client_id}'), or the operator of its audience, may exchange it"),
                    trace,
                );
            }
            let Some(entitlement) = token
                .get("entitlement")
                .and_then(|v| v.as_str())
                .and_then(|e| policy.entitlement_from_claim(e))
            else {
                return subject_invalid("records no entitlement this policy has".into(), trace);
            };
            let prior = match token.get("act").map(|v| serde_json::from_value::<Act>(v.clone())) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(_)) => return subject_invalid("its act claim is malformed".into(), trace),
            };
            let chain = Act::nest(prior, actor);
            if let Err(e) = policy.check_chain(&chain) {
                return Explanation::refused(ErrorCode::InvalidRequest, e, None, trace);
            }
            trace.push(format!(
                "agent '{actor}' may exchange the token (issued to '{client_id}' for {aud}); its subject's entitlement: {}",
                policy.entitlement_name(entitlement)
            ));
            ceiling = Some(ScopeSet::parse(text("scope")).unwrap_or_default());
            subject = Some(entitlement);
            act = Some(chain);
            (agent, sub.to_string(), None)
        }
    };
    let requested = match h.scope.as_deref().map(ScopeSet::parse) {
        None => None,
        Some(Ok(s)) if s.is_empty() => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Explanation::refused(ErrorCode::InvalidScope, e.to_string(), rule, trace),
    };
    let (resources, audiences) = if h.server.contains("://") {
        (vec![h.server.clone()], Vec::new())
    } else {
        (Vec::new(), vec![h.server.clone()])
    };
    let decision = Decision {
        agent,
        resources: &resources,
        audiences: &audiences,
        requested: requested.as_ref(),
        ceiling: ceiling.as_ref(),
        subject: match subject {
            Some(Entitlement::Agent(a)) if policy.agents[a].id == agent.id => None,
            other => other,
        },
    };
    match decide(policy, &decision, lifetimes) {
        Ok(permit) => {
            if let Some(a) =
                policy.server_by_resource(&permit.server.resource).and_then(|i| agent.allowance(i))
            {
                trace.push(format!(
                    "agent '{}' may reach server '{}': scopes {} (default: {})",
                    agent.id, permit.server.id, a.scopes, a.default_scopes
                ));
            }
            if let Some(a) = &act {
                trace.push(format!("act: {}", a.chain().join(" < ")));
            }
            Explanation {
                outcome: Outcome::Allowed {
                    agent: agent.id.clone(),
                    sub,
                    server: permit.server.id.clone(),
                    resource: permit.server.resource.clone(),
                    scopes: permit.scopes.to_string(),
                    lifetime_secs: permit.lifetime_secs,
                },
                rule,
                trace,
            }
        }
        Err(deny) => {
            let e = deny.to_oauth();
            Explanation::refused(e.code, e.description, rule, trace)
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.trace {
            writeln!(f, "{line}")?;
        }
        match &self.outcome {
            Outcome::Allowed { agent, sub, server, resource, scopes, lifetime_secs } => {
                writeln!(f, "decision: ALLOWED")?;
                writeln!(f, "  client_id: {agent}")?;
                writeln!(f, "  sub: {sub}")?;
                writeln!(f, "  aud: {resource} (server '{server}')")?;
                writeln!(f, "  scope: {scopes}")?;
                writeln!(f, "  lifetime: at most {lifetime_secs} s")?;
            }
            Outcome::Refused { code, reason } => {
                writeln!(f, "decision: REFUSED {code}: {reason}")?;
            }
        }
        if let Some(rule) = &self.rule {
            writeln!(f, "  rule: {rule}")?;
        }
        Ok(())
    }
}

/// A refusal of the token exchange's `subject_token` (RFC 8693 section 2.2.2: invalid_request).
fn subject_invalid(reason: String, trace: Vec<String>) -> Explanation {
    Explanation::refused(ErrorCode::InvalidRequest, format!("subject_token: {reason}"), None, trace)
}
