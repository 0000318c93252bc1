//! The policy: which agent may reach which MCP server with which scopes. Deny by default:
//! anything the policy does not grant is refused.
//!
//! Files are parsed and validated once ([`Policy::load`]) into runtime types with keys
//! already validated (their verifiers are built on first use); [`decide`] is a pure
//! function over them. Everything a request looks up is indexed: agents by id, servers by
//! id and by resource, an agent's allowance by server.

pub mod cases;
mod decide;
pub mod delegation;
pub mod explain;
mod federation;
mod load;
pub mod predicate;

pub use decide::{decide, Decision, Deny, Lifetimes, Permit};
pub use delegation::{DelegationDeny, DelegationRule, Entitlement};
pub use federation::{FederationDeny, FederationRule};
pub use load::PolicyError;

use crate::crypto::{Alg, VerifyingKey};
use crate::issuers::IssuerConfig;
use crate::protocol::ScopeSet;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Server {
    pub id: String,
    /// The canonical resource URI (RFC 8707): the `aud` of every token for this server.
    pub resource: String,
    pub scopes: ScopeSet,
    pub max_token_lifetime_secs: Option<u64>,
    /// Keys the server authenticates with to `/introspect` and `/revoke` (may be empty).
    pub keys: Vec<VerifyingKey>,
    /// Index into [`Policy::agents`] of the agent that operates this server, if any.
    pub operator: Option<usize>,
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
    /// Shared between the allowances that list the same scopes: a policy of 100 000 agents
    /// holds a handful of distinct sets, not a million (issue 12).
    pub scopes: Arc<ScopeSet>,
    pub default_scopes: Arc<ScopeSet>,
}

#[derive(Debug)]
pub struct Agent {
    pub id: String,
    pub disabled: bool,
    pub max_token_lifetime_secs: Option<u64>,
    pub keys: Vec<VerifyingKey>,
    /// Sorted by server index ([`Agent::allowance`] searches it).
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

    /// The allowance on a server: a binary search, however many servers the agent reaches.
    pub fn allowance(&self, server: usize) -> Option<&Allowance> {
        self.allow.binary_search_by_key(&server, |a| a.server).ok().map(|i| &self.allow[i])
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
    /// `[[delegation]]` rules, indexed by (issuer, actor).
    pub delegation: Vec<DelegationRule>,
    delegation_index: HashMap<(usize, usize), Vec<usize>>,
    /// `[chains] max_actors`.
    max_actors: usize,
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
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and every part is UTF-8.
        let _ = self.write_summary(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// [`Policy::summary`], written as it is made (a policy of 100 000 agents has a summary
    /// of tens of megabytes).
    pub fn write_summary(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "policy OK: {} file(s), {} server(s), {} agent(s)",
            self.sources.len(),
            self.servers.len(),
            self.agents.len()
        )?;
        writeln!(out, "servers:")?;
        for s in &self.servers {
            let life = s.max_token_lifetime_secs.map_or("default".to_string(), |l| format!("{l}s"));
            writeln!(out, "  {}  {}  scopes: {}  max lifetime: {}", s.id, s.resource, s.scopes, life)?;
            if !s.keys.is_empty() {
                let keys: Vec<String> = s.keys.iter().map(|k| format!("{} ({})", k.kid(), k.alg())).collect();
                writeln!(out, "    introspection/revocation keys: {}", keys.join(", "))?;
            }
        }
        writeln!(out, "agents:")?;
        // Formatted on every core, a batch of chunks at a time, written in order.
        let chunks: Vec<&[Agent]> = self.agents.chunks(1024).collect();
        let batch = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
        for chunks in chunks.chunks(batch) {
            let texts = parallel_map(chunks, |agents| {
                let mut text = Vec::with_capacity(agents.len() * 256);
                for a in agents.iter() {
                    // Writing into a Vec cannot fail.
                    let _ = self.write_agent_summary(&mut text, a);
                }
                text
            });
            for text in texts {
                out.write_all(&text)?;
            }
        }
        out.write_all(self.trust_summary().as_bytes())?;
        Ok(())
    }

    fn write_agent_summary(&self, out: &mut impl std::io::Write, a: &Agent) -> std::io::Result<()> {
        let state = if a.disabled { "  [disabled]" } else { "" };
        write!(out, "  {}{}  keys: ", a.id, state)?;
        if a.keys.is_empty() {
            write!(out, "none (reached through rules only)")?;
        }
        for (i, k) in a.keys.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(out, "{sep}{} ({})", k.kid(), k.alg())?;
        }
        writeln!(out)?;
        if let Some(r) = a.rate_limit {
            writeln!(out, "    rate limit: {}/s, burst {}", r.per_second, r.burst)?;
        }
        for al in &a.allow {
            let server = &self.servers[al.server];
            writeln!(out, "    {}: {} (default: {})", server.id, al.scopes, al.default_scopes)?;
        }
        Ok(())
    }
}

/// `f` over `items` on every available core; results in the order of `items`.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { return done };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|scope| {
        // The TOML parser recurses: the same stack as the main thread's.
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| std::thread::Builder::new().stack_size(8 << 20).spawn_scoped(scope, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            match h.join() {
                Ok(done) => all.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}
