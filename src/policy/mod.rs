//! The policy: which agent may reach which MCP server with which scopes. Deny by default:
//! anything the policy does not grant is refused.
//!
//! Files are parsed and validated once ([`Policy::load`]) into runtime types with keys
//! already turned into verifiers; [`decide`] is a pure function over them.

pub mod cases;
mod decide;
pub mod explain;
mod federation;
mod load;
pub mod predicate;

pub use decide::{decide, Decision, Deny, Lifetimes, Permit};
pub use federation::{FederationDeny, FederationRule};
pub use load::PolicyError;

use crate::crypto::{Alg, VerifyingKey};
use crate::issuers::IssuerConfig;
use crate::protocol::ScopeSet;
use std::collections::HashMap;

#[derive(Debug)]
pub struct Server {
    pub id: String,
    /// The canonical resource URI (RFC 8707): the `aud` of every token for this server.
    pub resource: String,
    pub scopes: ScopeSet,
    pub max_token_lifetime_secs: Option<u64>,
    /// Keys the server authenticates with to `/introspect` and `/revoke` (may be empty).
    pub keys: Vec<VerifyingKey>,
    pub source: String,
}

impl Server {
    /// As [`Agent::key_for`], over the server's own keys.
    pub fn key_for(&self, kid: Option<&str>, alg: Alg) -> Result<&VerifyingKey, KeySelectError> {
        select_key(&self.keys, kid, alg)
    }
}

/// An agent's rate limit (GCRA): `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
pub struct Allowance {
    /// Index into [`Policy::servers`].
    pub server: usize,
    pub scopes: ScopeSet,
    pub default_scopes: ScopeSet,
}

#[derive(Debug)]
pub struct Agent {
    pub id: String,
    pub disabled: bool,
    pub max_token_lifetime_secs: Option<u64>,
    pub keys: Vec<VerifyingKey>,
    pub allow: Vec<Allowance>,
    /// Tokens per second across every broker instance (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    pub source: String,
}

/// Why no key of an agent verifies a JWS with a given header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySelectError {
    #[error("no registered key has this kid")]
    UnknownKid,
    #[error("the key with this kid is registered for {registered}, not {header}")]
    AlgMismatch { registered: Alg, header: Alg },
    #[error("no registered key is for {0}")]
    NoKeyForAlg(Alg),
    #[error("more than one registered key is for {0}; send a kid")]
    Ambiguous(Alg),
}

impl Agent {
    /// The key that must verify a JWS: by `kid` when the header has one (and then its
    /// registered algorithm must equal the header's), otherwise the only key registered for
    /// the header's algorithm.
    pub fn key_for(&self, kid: Option<&str>, alg: Alg) -> Result<&VerifyingKey, KeySelectError> {
        select_key(&self.keys, kid, alg)
    }

    pub fn allowance(&self, server: usize) -> Option<&Allowance> {
        self.allow.iter().find(|a| a.server == server)
    }
}

/// The key that must verify a JWS: by `kid` when the header has one (and then its
/// registered algorithm must equal the header's), otherwise the only key registered for the
/// header's algorithm.
fn select_key<'k>(
    keys: &'k [VerifyingKey],
    kid: Option<&str>,
    alg: Alg,
) -> Result<&'k VerifyingKey, KeySelectError> {
    match kid {
        Some(kid) => {
            let key = keys.iter().find(|k| k.kid() == kid).ok_or(KeySelectError::UnknownKid)?;
            if key.alg() != alg {
                return Err(KeySelectError::AlgMismatch { registered: key.alg(), header: alg });
            }
            Ok(key)
        }
        None => {
            let mut fitting = keys.iter().filter(|k| k.alg() == alg);
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Ok(k),
                (None, _) => Err(KeySelectError::NoKeyForAlg(alg)),
                (Some(_), Some(_)) => Err(KeySelectError::Ambiguous(alg)),
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Policy {
    pub servers: Vec<Server>,
    pub agents: Vec<Agent>,
    /// Trusted issuers of platform and user tokens (`[[issuer]]`).
    pub issuers: Vec<IssuerConfig>,
    /// `[[federation]]` rules, indexed per issuer in `federation_index`.
    pub federation: Vec<FederationRule>,
    federation_index: Vec<federation::IssuerRules>,
    by_resource: HashMap<String, usize>,
    by_server_id: HashMap<String, usize>,
    by_agent_id: HashMap<String, usize>,
    by_issuer_id: HashMap<String, usize>,
    by_issuer_iss: HashMap<String, usize>,
    pub sources: Vec<String>,
}

impl Policy {
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.by_agent_id.get(id).map(|&i| &self.agents[i])
    }

    pub fn agent_index(&self, id: &str) -> Option<usize> {
        self.by_agent_id.get(id).copied()
    }

    /// An `[[issuer]]` by its policy id.
    pub fn issuer_index(&self, id: &str) -> Option<usize> {
        self.by_issuer_id.get(id).copied()
    }

    /// An `[[issuer]]` by the exact `iss` of its tokens.
    pub fn issuer_by_iss(&self, iss: &str) -> Option<usize> {
        self.by_issuer_iss.get(iss).copied()
    }

    pub fn server_by_resource(&self, resource: &str) -> Option<usize> {
        self.by_resource.get(resource).copied()
    }

    /// An RFC 8693 `audience`: a server's id or its resource URI.
    /// A server by its policy id.
    pub fn server(&self, id: &str) -> Option<&Server> {
        self.by_server_id.get(id).map(|&i| &self.servers[i])
    }

    pub fn server_by_audience(&self, audience: &str) -> Option<usize> {
        self.by_server_id.get(audience).or_else(|| self.by_resource.get(audience)).copied()
    }

    /// Every scope any server offers (for `scopes_supported`, RFC 8414 §2).
    pub fn all_scopes(&self) -> ScopeSet {
        let mut all = ScopeSet::default();
        for s in &self.servers {
            all.extend(&s.scopes);
        }
        all
    }

    /// A human summary: agents, servers, scopes (what `policy check` prints).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "policy OK: {} file(s), {} server(s), {} agent(s)",
            self.sources.len(),
            self.servers.len(),
            self.agents.len()
        );
        let _ = writeln!(out, "servers:");
        for s in &self.servers {
            let life = s.max_token_lifetime_secs.map_or("default".to_string(), |l| format!("{l}s"));
            let _ = writeln!(out, "  {}  {}  scopes: {}  max lifetime: {}", s.id, s.resource, s.scopes, life);
            if !s.keys.is_empty() {
                let keys: Vec<String> = s.keys.iter().map(|k| format!("{} ({})", k.kid(), k.alg())).collect();
                let _ = writeln!(out, "    introspection/revocation keys: {}", keys.join(", "));
            }
        }
        let _ = writeln!(out, "agents:");
        for a in &self.agents {
            let keys: Vec<String> = a.keys.iter().map(|k| format!("{} ({})", k.kid(), k.alg())).collect();
            let state = if a.disabled { "  [disabled]" } else { "" };
            let keys = if keys.is_empty() {
                "none (reached through rules only)".to_string()
            } else {
                keys.join(", ")
            };
            let _ = writeln!(out, "  {}{}  keys: {}", a.id, state, keys);
            if let Some(r) = a.rate_limit {
                let _ = writeln!(out, "    rate limit: {}/s, burst {}", r.per_second, r.burst);
            }
            for al in &a.allow {
                let server = &self.servers[al.server];
                let _ = writeln!(out, "    {}: {} (default: {})", server.id, al.scopes, al.default_scopes);
            }
        }
        out.push_str(&self.trust_summary());
        out
    }
}
