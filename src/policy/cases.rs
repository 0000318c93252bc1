//! `policy test`: a file of hypothetical requests with the outcome each must have, decided by
//! [`super::explain::explain`]. A policy change that alters any outcome shows up as a named
//! mismatch before it is deployed.
//!
//! ```toml
//! [[case]]
//! name = "deploy workflow on main gets a docs token"
//! issuer = "github-actions"                # federated: an [[issuer]] id (or its iss) ...
//! claims = { sub = "repo:acme/infra:ref:refs/heads/main", repository_id = "89012345" }
//! # claims_file = "github-main.json"       # ... or the claims as a JSON file
//! server = "docs"                          # a server id or resource URI
//! scope = "read write"                     # optional
//! expect = { outcome = "allowed", scopes = "read", rule = "infra-deploy-from-main" }
//!
//! [[case]]
//! name = "the assistant acts for a staff member"
//! issuer = "corp-idp"                      # on-behalf-of: the user's token ...
//! claims = { sub = "alice", groups = ["staff"] }
//! actor = "assistant"                      # ... and the agent acting for her
//! server = "docs"
//! expect = { outcome = "allowed", sub = "alice", agent = "assistant", rule = "assistant-for-staff" }
//!
//! [[case]]
//! name = "agent B carries the token one hop further"
//! token = { sub = "alice", aud = "https://b.example/mcp", client_id = "assistant", scope = "read", entitlement = "delegation:assistant-for-staff", act = { sub = "assistant" } }
//! actor = "agent-b"                        # one of our tokens, exchanged by this agent
//! server = "c"
//! expect = { outcome = "allowed", agent = "agent-b" }
//!
//! [[case]]
//! name = "an agent may not reach tickets"
//! agent = "example-agent"                  # an agent authenticating as itself
//! grant = "client_credentials"             # optional: decides the error code
//! server = "https://tickets.mcp.example/mcp"
//! expect = { outcome = "refused", error = "invalid_target" }
//! ```

use super::explain::{explain, Explanation, Hypothetical, Outcome, Via, Who};
use super::{Lifetimes, Policy};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default, rename = "case")]
    cases: Vec<CaseDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDef {
    name: String,
    agent: Option<String>,
    issuer: Option<String>,
    claims: Option<toml::Table>,
    claims_file: Option<String>,
    actor: Option<String>,
    token: Option<toml::Table>,
    grant: Option<String>,
    server: String,
    scope: Option<String>,
    expect: ExpectDef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectDef {
    outcome: String,
    scopes: Option<String>,
    rule: Option<String>,
    agent: Option<String>,
    sub: Option<String>,
    error: Option<String>,
    lifetime_secs: Option<u64>,
}

/// One case's result.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// Empty when the case passed.
    pub mismatches: Vec<String>,
    pub explanation: Explanation,
}

/// Read a cases file (claims files are found relative to it). `Err` for a file that can't be
/// read or doesn't describe cases; mismatches are in the results.
pub fn run_cases(
    policy: &Policy,
    path: &Path,
    lifetimes: Lifetimes,
    broker_issuer: Option<&str>,
) -> Result<Vec<CaseResult>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let file: CasesFile =
        toml::from_str(&text).map_err(|e| format!("{shown}: {}", e.to_string().trim_end()))?;
    if file.cases.is_empty() {
        return Err(format!("{shown}: no [[case]] tables"));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    file.cases
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            run_case(policy, base, c, lifetimes, broker_issuer)
                .map_err(|e| format!("{shown}: case '{name}': {e}"))
        })
        .collect()
}

fn claims_of(base: &Path, c: &CaseDef) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let value = match (&c.claims, &c.claims_file) {
        (Some(t), None) => serde_json::to_value(t).map_err(|e| e.to_string())?,
        (None, Some(f)) => {
            let p = base.join(f);
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        _ => return Err("a federated case has exactly one of claims, claims_file".into()),
    };
    match value {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err("the claims must be a JSON object".into()),
    }
}

fn run_case(
    policy: &Policy,
    base: &Path,
    c: CaseDef,
    lifetimes: Lifetimes,
    broker_issuer: Option<&str>,
) -> Result<CaseResult, String> {
    let who = match (&c.agent, &c.issuer, &c.actor, &c.token) {
        (Some(id), None, None, None) => Who::Agent { id: id.clone() },
        (None, Some(issuer), None, None) => {
            Who::Federated { issuer: issuer.clone(), claims: claims_of(base, &c)? }
        }
        (None, Some(issuer), Some(actor), None) => {
            Who::OnBehalfOf { issuer: issuer.clone(), claims: claims_of(base, &c)?, actor: actor.clone() }
        }
        (None, None, Some(actor), Some(token)) => Who::Carried {
            token: match serde_json::to_value(token).map_err(|e| e.to_string())? {
                serde_json::Value::Object(m) => m,
                _ => return Err("token must be a table".into()),
            },
            actor: actor.clone(),
        },
        _ => {
            return Err(
                "a case is one of: agent; issuer + claims; issuer + claims + actor; token + actor".into()
            )
        }
    };
    let via = match c.grant.as_deref() {
        None => None,
        Some(g) => Some(Via::parse(g).ok_or_else(|| format!("unknown grant '{g}'"))?),
    };
    let expect = &c.expect;
    if !matches!(expect.outcome.as_str(), "allowed" | "refused") {
        return Err(format!("expect.outcome is 'allowed' or 'refused', not '{}'", expect.outcome));
    }
    let via =
        via.or(matches!(who, Who::OnBehalfOf { .. } | Who::Carried { .. }).then_some(Via::TokenExchange));
    let h = Hypothetical {
        who,
        via,
        server: c.server.clone(),
        scope: c.scope.clone(),
        broker_issuer: broker_issuer.map(String::from),
    };
    let explanation = explain(policy, &h, lifetimes);
    let mut mismatches: Vec<String> = Vec::new();
    let mut checks = vec![("rule", &expect.rule, explanation.rule.clone())];
    match &explanation.outcome {
        Outcome::Allowed { agent, sub, scopes, lifetime_secs, .. } => {
            if expect.outcome != "allowed" {
                mismatches.push("expected refused, got allowed".into());
            }
            checks.push(("scopes", &expect.scopes, Some(scopes.clone())));
            checks.push(("agent", &expect.agent, Some(agent.clone())));
            checks.push(("sub", &expect.sub, Some(sub.clone())));
            checks.push(("error", &expect.error, None));
            if let Some(l) = expect.lifetime_secs.filter(|l| l != lifetime_secs) {
                mismatches.push(format!("expected lifetime_secs {l}, got {lifetime_secs}"));
            }
        }
        Outcome::Refused { code, reason } => {
            if expect.outcome != "refused" {
                mismatches.push(format!("expected allowed, got refused ({code}: {reason})"));
            }
            checks.push(("error", &expect.error, Some(code.as_str().to_string())));
            checks.push(("scopes", &expect.scopes, None));
            checks.push(("agent", &expect.agent, None));
            checks.push(("sub", &expect.sub, None));
        }
    }
    for (what, want, got) in checks {
        if let Some(w) = want.as_ref().filter(|w| got.as_deref() != Some(w.as_str())) {
            let got = got.map_or("none".to_string(), |g| format!("'{g}'"));
            mismatches.push(format!("expected {what} '{w}', got {got}"));
        }
    }
    Ok(CaseResult { name: c.name, mismatches, explanation })
}
