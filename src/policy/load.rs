//! Policy files (TOML) ▶ a validated [`Policy`]. Any fault stops the load with the file
//! and the reason: unknown fields, unknown server, a scope the server does not offer,
//! duplicate ids, a key that does not parse.
//!
//! Built for policies of 100 000 agents and more (issue 12), in three steps:
//!
//! 1. **Parse, in parallel.** Every file, and every large file in pieces of about 256 KiB
//!    cut at its top-level `[[table]]` headers ([`pieces`]), is parsed on its own by one
//!    of the machine's cores. Each piece's agents are checked at once (ids, lifetimes,
//!    scopes, keys: everything that does not depend on another file) and kept in a compact
//!    form; the TOML tree of the piece is dropped before the next one is read, so the peak
//!    holds one tree per core, not one for the whole policy.
//! 2. **Servers**, in file order (they are few), then **trusted issuers** (`[[issuer]]`).
//! 3. **Agents**, in file order: duplicate ids, and each allowance resolved to its server.
//! 4. **Rules** that name agents, issuers and servers: `[[federation]]`, server operators,
//!    `[[delegation]]`, `[chains]`; then their indexes.
//!
//! Allowance scope sets are shared ([`Arc`]): a policy of 500 000 allowances holds one copy
//! of each distinct set per piece, not 500 000.

use super::{parallel_map, Agent, Allowance, Policy, RateLimit, Server};
use crate::crypto::VerifyingKey;
use crate::protocol::ScopeSet;
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct PolicyError {
    pub file: String,
    pub reason: String,
}

fn err(file: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError { file: file.to_string(), reason: reason.into() }
}

/// One policy file (or piece of one): a defaulted list per top-level table. A new table
/// kind is a new field here, validated per table in [`build`] (after the servers, when it
/// refers to them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    server: Vec<ServerDef>,
    #[serde(default)]
    agent: Vec<AgentDef>,
    #[serde(default)]
    issuer: Vec<crate::issuers::IssuerToml>,
    #[serde(default)]
    federation: Vec<super::federation::FederationDef>,
    #[serde(default)]
    delegation: Vec<super::delegation::DelegationDef>,
    chains: Option<super::delegation::ChainsDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerDef {
    id: String,
    resource: String,
    scopes: Vec<String>,
    max_token_lifetime_secs: Option<u64>,
    /// The agent that runs this MCP server: it may exchange tokens issued for it (a chain).
    operator: Option<String>,
    /// The server's own public keys: it authenticates with them to `/introspect` and
    /// `/revoke` (RFC 7662, RFC 7009). Optional.
    #[serde(default)]
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentDef {
    id: String,
    #[serde(default)]
    disabled: bool,
    max_token_lifetime_secs: Option<u64>,
    #[serde(default)]
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    allow: Vec<AllowDef>,
    rate_limit: Option<RateLimitDef>,
}

/// `rate_limit = { per_second = 10, burst = 20 }`: tokens per second on average, and how
/// many may come at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitDef {
    per_second: f64,
    burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowDef {
    server: String,
    scopes: Vec<String>,
    #[serde(default)]
    default_scopes: Vec<String>,
}

/// An agent whose own checks have passed; its allowances still name their servers.
struct PendingAgent {
    id: String,
    disabled: bool,
    max_token_lifetime_secs: Option<u64>,
    keys: Vec<VerifyingKey>,
    allow: Vec<PendingAllowance>,
    rate_limit: Option<RateLimit>,
}

struct PendingAllowance {
    server: String,
    scopes: Arc<ScopeSet>,
    default_scopes: Arc<ScopeSet>,
}

/// The checked agents of one piece, with the index of its file.
type PieceAgents = (usize, Vec<PendingAgent>);

/// A parsed piece: its tables, with the agents already checked.
struct Piece {
    source: usize,
    file: PolicyFile,
    agents: Vec<PendingAgent>,
}

/// What went wrong with a piece: TOML (the whole file is then parsed in one piece, for the
/// error's true line and column) or anything else.
enum PieceError {
    Toml(PolicyError),
    Other(PolicyError),
}

/// Pieces of about this size (a piece's TOML tree is about 40 times its text).
const PIECE_BYTES: usize = 1 << 18;

/// Where a policy file's text is.
enum Text<'a> {
    Given(&'a str),
    /// Read by the worker that parses it, and dropped once parsed.
    OnDisk(&'a Path),
}

enum Job {
    /// A piece of a given text (a large file is cut so that all cores parse it).
    Piece(usize, Range<usize>),
    /// A whole file on disk, its pieces one after another.
    File(usize),
}

impl Policy {
    /// Load a policy file, or every `*.toml` file of a directory (in name order). The files
    /// of a directory are read and parsed in parallel, and each file's text is dropped as
    /// soon as it is parsed.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        if !path.is_dir() {
            let text = std::fs::read_to_string(path).map_err(|e| err(&shown, format!("cannot read: {e}")))?;
            return build(vec![shown], &[Text::Given(&text)], PIECE_BYTES);
        }
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| err(&shown, format!("cannot read directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(err(&shown, "no *.toml policy files in this directory"));
        }
        // Large files are read now and cut into pieces for all cores; the others are read
        // by the worker that parses them.
        let mut large: Vec<Option<String>> = Vec::with_capacity(files.len());
        for f in &files {
            let len = std::fs::metadata(f).map_or(0, |m| m.len());
            large.push(if len >= 2 * PIECE_BYTES as u64 {
                let name = f.display().to_string();
                Some(std::fs::read_to_string(f).map_err(|e| err(&name, format!("cannot read: {e}")))?)
            } else {
                None
            });
        }
        let texts: Vec<Text<'_>> = files
            .iter()
            .zip(&large)
            .map(|(f, text)| match text {
                Some(t) => Text::Given(t),
                None => Text::OnDisk(f),
            })
            .collect();
        let names = files.iter().map(|f| f.display().to_string()).collect();
        build(names, &texts, PIECE_BYTES)
    }

    /// Build from `(file name, TOML text)` pairs: the files of one policy.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Policy, PolicyError> {
        let names = sources.iter().map(|(n, _)| n.clone()).collect();
        build(names, &sources.iter().map(|(_, t)| Text::Given(t)).collect::<Vec<_>>(), PIECE_BYTES)
    }
}

fn build(names: Vec<String>, texts: &[Text<'_>], piece_bytes: usize) -> Result<Policy, PolicyError> {
    // 1. Parse every piece and check its agents, on every core.
    let mut jobs: Vec<Job> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match text {
            Text::Given(t) => jobs.extend(pieces(t, piece_bytes).into_iter().map(|r| Job::Piece(i, r))),
            Text::OnDisk(_) => jobs.push(Job::File(i)),
        }
    }
    let mut results = parallel_map(&jobs, |job| match job {
        Job::Piece(i, range) => match &texts[*i] {
            Text::Given(t) => parse_piece(*i, &names[*i], &t[range.clone()]).map(|p| vec![p]),
            Text::OnDisk(_) => Ok(Vec::new()), // never made: files on disk are whole jobs
        },
        Job::File(i) => match &texts[*i] {
            Text::OnDisk(path) => std::fs::read_to_string(path)
                .map_err(|e| PieceError::Other(err(&names[*i], format!("cannot read: {e}"))))
                .and_then(|text| parse_file(*i, &names[*i], &text, piece_bytes)),
            Text::Given(t) => parse_file(*i, &names[*i], t, piece_bytes),
        },
    });
    // A piece of a given text that is not valid TOML on its own: parse the whole text as
    // one, which gives the error where the file has it (or, for a file cut where it should
    // not have been, its right reading), in place of the file's first piece.
    let mut cut_badly = vec![false; texts.len()];
    for (job, result) in jobs.iter().zip(&results) {
        if let (Job::Piece(i, range), Err(PieceError::Toml(_))) = (job, result) {
            cut_badly[*i] |= matches!(&texts[*i], Text::Given(t) if t.len() != range.len());
        }
    }
    let mut skip = vec![false; jobs.len()];
    let mut redone = vec![false; texts.len()];
    for (n, job) in jobs.iter().enumerate() {
        let Job::Piece(i, _) = job else { continue };
        if !cut_badly[*i] {
            continue;
        }
        match &texts[*i] {
            Text::Given(t) if !redone[*i] => {
                redone[*i] = true;
                results[n] = parse_piece(*i, &names[*i], t).map(|p| vec![p]);
            }
            _ => skip[n] = true,
        }
    }
    let mut parsed = Vec::with_capacity(results.len());
    for (result, skip) in results.into_iter().zip(skip) {
        match result {
            _ if skip => {}
            Ok(pieces) => parsed.extend(pieces),
            Err(PieceError::Toml(e) | PieceError::Other(e)) => return Err(e),
        }
    }
    let sources = names;
    // 2. Servers.
    let mut policy = Policy::default();
    for piece in &parsed {
        for s in &piece.file.server {
            add_server(&mut policy, &sources[piece.source], s)?;
        }
    }
    for piece in &parsed {
        for i in &piece.file.issuer {
            add_issuer(&mut policy, &sources[piece.source], i)?;
        }
    }
    // 3. Agents: allowances resolved to servers on every core, then ids checked and the
    // agents added in file order.
    policy.agents.reserve(parsed.iter().map(|p| p.agents.len()).sum());
    let pending: Vec<Mutex<Option<PieceAgents>>> =
        parsed.iter_mut().map(|p| Mutex::new(Some((p.source, std::mem::take(&mut p.agents))))).collect();
    let resolved = parallel_map(&pending, |cell| {
        let taken = cell.lock().ok().and_then(|mut c| c.take());
        let Some((source, agents)) = taken else { return Vec::new() };
        agents.into_iter().map(|a| resolve_agent(&policy, &sources[source], a)).collect::<Vec<_>>()
    });
    for agent in resolved.into_iter().flatten() {
        add_agent(&mut policy, agent)?;
    }
    // 4. Rules.
    add_rules(&mut policy, &sources, &parsed)?;
    policy.sources = sources;
    Ok(policy)
}

/// The tables that name agents, issuers and servers: federation rules (then their index),
/// server operators, delegation rules (then their index), `[chains]`.
fn add_rules(policy: &mut Policy, sources: &[String], parsed: &[Piece]) -> Result<(), PolicyError> {
    for piece in parsed {
        let name = &sources[piece.source];
        for f in &piece.file.federation {
            if let Some(r) = policy.federation.iter().find(|r| r.id == f.id) {
                return Err(err(
                    name,
                    format!("federation rule '{}' is defined twice (also in {})", f.id, r.source),
                ));
            }
            let rule = super::federation::rule_from_def(policy, name, f)?;
            policy.federation.push(rule);
        }
    }
    policy.federation_index = super::federation::index(policy.issuers.len(), &policy.federation);
    for piece in parsed {
        let name = &sources[piece.source];
        for s in &piece.file.server {
            if let Some(op) = &s.operator {
                let agent = policy.agent_index(op).ok_or_else(|| {
                    err(name, format!("server {:?}: operator {op:?} is not an [[agent]]", s.id))
                })?;
                if let Some(i) = policy.server_by_audience(&s.id) {
                    policy.servers[i].operator = Some(agent);
                }
            }
        }
        for d in &piece.file.delegation {
            if let Some(r) = policy.delegation.iter().find(|r| r.id == d.id) {
                return Err(err(
                    name,
                    format!("delegation rule '{}' is defined twice (also in {})", d.id, r.source),
                ));
            }
            let rule = super::delegation::rule_from_def(policy, name, d)?;
            policy.delegation.push(rule);
        }
    }
    policy.delegation_index = super::delegation::index(&policy.delegation);
    policy.max_actors = super::delegation::DEFAULT_MAX_ACTORS;
    let mut chains_from: Option<&str> = None;
    for piece in parsed {
        let name = &sources[piece.source];
        if let Some(c) = &piece.file.chains {
            if let Some(first) = chains_from {
                return Err(err(name, format!("[chains] is set twice (also in {first})")));
            }
            if c.max_actors == 0 || c.max_actors > crate::mint::MAX_ACT_DEPTH {
                return Err(err(
                    name,
                    format!("[chains] max_actors must be between 1 and {}", crate::mint::MAX_ACT_DEPTH),
                ));
            }
            policy.max_actors = c.max_actors;
            chains_from = Some(name);
        }
    }
    Ok(())
}

fn add_issuer(policy: &mut Policy, file: &str, t: &crate::issuers::IssuerToml) -> Result<(), PolicyError> {
    check_id(file, "issuer", &t.id)?;
    let config = crate::issuers::IssuerConfig::from_toml(file, t).map_err(|e| err(file, e))?;
    let ctx = format!("issuer '{}'", t.id);
    if let Some(&i) = policy.by_issuer_id.get(&t.id) {
        return Err(err(file, format!("{ctx} is defined twice (also in {})", policy.issuers[i].file)));
    }
    if let Some(&i) = policy.by_issuer_iss.get(&config.issuer) {
        return Err(err(
            file,
            format!("{ctx}: issuer {} is also issuer '{}'", config.issuer, policy.issuers[i].id),
        ));
    }
    policy.by_issuer_id.insert(config.id.clone(), policy.issuers.len());
    policy.by_issuer_iss.insert(config.issuer.clone(), policy.issuers.len());
    policy.issuers.push(config);
    Ok(())
}

/// `[[delegation.allow]]` entries ▶ allowances: each server known and listed once, every
/// scope offered by it, default scopes among the scopes; sorted by server.
pub(super) fn allowances(
    policy: &Policy,
    file: &str,
    ctx: &str,
    defs: &[AllowDef],
) -> Result<Vec<Allowance>, PolicyError> {
    let mut allow: Vec<Allowance> = Vec::with_capacity(defs.len());
    for al in defs {
        let actx = format!("{ctx}: allow server {:?}", al.server);
        let &server = policy
            .by_server_id
            .get(&al.server)
            .ok_or_else(|| err(file, format!("{actx}: no such server")))?;
        if allow.iter().any(|x| x.server == server) {
            return Err(err(file, format!("{actx}: listed twice")));
        }
        let scopes = scope_set(file, &actx, &al.scopes)?;
        let offered = &policy.servers[server].scopes;
        if let Some(s) = scopes.iter().find(|s| !offered.contains(s)) {
            return Err(err(file, format!("{actx}: scope {s:?} is not offered by the server")));
        }
        let default_scopes = scope_set(file, &format!("{actx} default_scopes"), &al.default_scopes)?;
        if let Some(s) = default_scopes.iter().find(|s| !scopes.contains(s)) {
            return Err(err(file, format!("{actx}: default scope {s:?} is not among the allowed scopes")));
        }
        allow.push(Allowance { server, scopes: Arc::new(scopes), default_scopes: Arc::new(default_scopes) });
    }
    allow.sort_unstable_by_key(|al| al.server);
    Ok(allow)
}

/// A whole file, its pieces one after another (one TOML tree at a time); parsed as one
/// piece when a piece is not valid TOML on its own.
fn parse_file(source: usize, name: &str, text: &str, piece_bytes: usize) -> Result<Vec<Piece>, PieceError> {
    let ranges = pieces(text, piece_bytes);
    let mut out = Vec::with_capacity(ranges.len());
    for r in &ranges {
        match parse_piece(source, name, &text[r.clone()]) {
            Ok(p) => out.push(p),
            Err(PieceError::Toml(_)) if ranges.len() > 1 => {
                return parse_piece(source, name, text).map(|p| vec![p]);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Parse one piece of a file and check its agents.
fn parse_piece(source: usize, name: &str, text: &str) -> Result<Piece, PieceError> {
    let mut file: PolicyFile = toml::from_str(text)
        .map_err(|e| PieceError::Toml(err(name, e.to_string().trim_end().to_string())))?;
    let mut interned = ScopeInterner::default();
    let agents = std::mem::take(&mut file.agent)
        .into_iter()
        .map(|a| check_agent(name, a, &mut interned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PieceError::Other)?;
    Ok(Piece { source, file, agents })
}

/// Where to cut `text` into pieces of at least `target` bytes: only before a line that is a
/// top-level array-of-tables header (`[[agent]]`, `[[server]]`, ...), and only when nothing
/// but comments and blank lines comes before the first header (root keys would otherwise
/// meet those tables in another piece).
///
/// A cut is only ever a guess about where a statement starts: a piece that then does not
/// parse on its own (the cut fell in a multi-line string or array) sends the whole file to
/// be parsed in one piece ([`Policy::from_sources`]). When every piece parses, every cut
/// was at a statement boundary, and each piece's tables are exactly the ones the file
/// defines there: a top-level `[[name]]` header starts a new element and closes everything
/// before it, and a header of a piece that referred to a table of an earlier piece would
/// make `agent` or `server` a table rather than an array, which does not deserialize.
fn pieces(text: &str, target: usize) -> Vec<Range<usize>> {
    let whole = std::iter::once(0..text.len()).collect();
    if text.len() < 2 * target {
        return whole;
    }
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            break;
        }
        if !(t.is_empty() || t.starts_with('#')) {
            return whole;
        }
    }
    // Jump `target` bytes, then take the next line that is a top-level header: the scan
    // reads a few hundred bytes per cut, not the file.
    let bytes = text.as_bytes();
    let mut cuts = vec![0];
    let mut from = target;
    while from + target / 2 < bytes.len() {
        let Some(found) = bytes[from..].windows(3).position(|w| w == b"\n[[") else { break };
        let start = from + found + 1; // just after a newline: a char boundary
        let line = text[start..].split('\n').next().unwrap_or_default();
        if is_top_level_header(line) && bytes.len() - start >= target / 2 {
            cuts.push(start);
            from = start + target;
        } else {
            from = start + 2;
        }
    }
    cuts.push(text.len());
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// `[[name]]` with a bare key (no dots, no quotes), maybe followed by a comment.
fn is_top_level_header(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("[[") else {
        return false;
    };
    let Some((name, after)) = rest.split_once("]]") else {
        return false;
    };
    let after = after.trim();
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && (after.is_empty() || after.starts_with('#'))
}

/// One shared [`ScopeSet`] per distinct list of scope names.
#[derive(Default)]
struct ScopeInterner(HashMap<Vec<String>, Arc<ScopeSet>>);

impl ScopeInterner {
    fn get(
        &mut self,
        file: &str,
        ctx: impl Fn() -> String,
        list: Vec<String>,
    ) -> Result<Arc<ScopeSet>, PolicyError> {
        if let Some(set) = self.0.get(&list) {
            return Ok(set.clone());
        }
        let set = Arc::new(scope_set(file, &ctx(), &list)?);
        self.0.insert(list, set.clone());
        Ok(set)
    }
}

pub(super) fn check_id(file: &str, what: &str, id: &str) -> Result<(), PolicyError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(err(
            file,
            format!("{what} id {id:?} must be 1–255 printable ASCII characters without spaces or quotes"),
        ))
    }
}

fn scope_set(file: &str, ctx: &str, list: &[String]) -> Result<ScopeSet, PolicyError> {
    let set = ScopeSet::from_tokens(list.iter().cloned()).map_err(|e| err(file, format!("{ctx}: {e}")))?;
    if set.len() != list.len() {
        return Err(err(file, format!("{ctx}: a scope is listed twice")));
    }
    Ok(set)
}

fn check_lifetime(file: &str, ctx: &str, l: Option<u64>) -> Result<(), PolicyError> {
    match l {
        Some(0) => Err(err(file, format!("{ctx}: max_token_lifetime_secs must be at least 1"))),
        _ => Ok(()),
    }
}

/// A resource URI (RFC 8707 §2): absolute, no fragment; https, or http on a loopback host.
fn check_resource(file: &str, ctx: &str, resource: &str) -> Result<(), PolicyError> {
    let url = url::Url::parse(resource)
        .map_err(|e| err(file, format!("{ctx}: resource is not an absolute URI: {e}")))?;
    if url.fragment().is_some() {
        return Err(err(file, format!("{ctx}: resource must not have a fragment (RFC 8707 §2)")));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(err(file, format!("{ctx}: resource must be https (http only on a loopback host)")));
    }
    Ok(())
}

fn add_server(policy: &mut Policy, file: &str, s: &ServerDef) -> Result<(), PolicyError> {
    check_id(file, "server", &s.id)?;
    let ctx = format!("server {:?}", s.id);
    if let Some(&i) = policy.by_server_id.get(&s.id) {
        return Err(err(file, format!("{ctx} is defined twice (also in {})", policy.servers[i].source)));
    }
    check_resource(file, &ctx, &s.resource)?;
    if let Some(&i) = policy.by_resource.get(&s.resource) {
        return Err(err(
            file,
            format!("{ctx}: resource {} is also server {:?}", s.resource, policy.servers[i].id),
        ));
    }
    let scopes = scope_set(file, &ctx, &s.scopes)?;
    if scopes.is_empty() {
        return Err(err(file, format!("{ctx}: offers no scopes")));
    }
    check_lifetime(file, &ctx, s.max_token_lifetime_secs)?;
    let keys = parse_keys(file, &|| ctx.clone(), &s.keys)?;
    let idx = policy.servers.len();
    policy.by_server_id.insert(s.id.clone(), idx);
    policy.by_resource.insert(s.resource.clone(), idx);
    policy.servers.push(Server {
        id: s.id.clone(),
        resource: s.resource.clone(),
        scopes,
        max_token_lifetime_secs: s.max_token_lifetime_secs,
        operator: None,
        keys,
        source: file.to_string(),
    });
    Ok(())
}

/// An agent's own checks: id, lifetime, keys, scope lists. Its servers are resolved later.
fn check_agent(file: &str, a: AgentDef, interned: &mut ScopeInterner) -> Result<PendingAgent, PolicyError> {
    // Messages are made only for a fault: this runs 100 000 times for a large policy.
    check_id(file, "agent", &a.id)?;
    let ctx = || format!("agent {:?}", a.id);
    if a.max_token_lifetime_secs == Some(0) {
        check_lifetime(file, &ctx(), a.max_token_lifetime_secs)?;
    }
    // An agent without keys cannot sign assertions; it is reached only through federation
    // (or delegation) rules that name it.
    let keys = parse_keys(file, &ctx, &a.keys)?;
    let rate_limit = match &a.rate_limit {
        None => None,
        Some(r) if r.per_second.is_finite() && r.per_second > 0.0 && r.per_second <= 1e6 && r.burst >= 1 => {
            Some(RateLimit { per_second: r.per_second, burst: r.burst })
        }
        Some(_) => {
            return Err(err(
                file,
                format!("{}: rate_limit needs per_second > 0 (at most 1000000) and burst >= 1", ctx()),
            ))
        }
    };
    let mut allow: Vec<PendingAllowance> = Vec::with_capacity(a.allow.len());
    for al in a.allow {
        let server = al.server;
        let actx = || format!("{}: allow server {server:?}", ctx());
        if allow.iter().any(|x| x.server == server) {
            return Err(err(file, format!("{}: listed twice", actx())));
        }
        let scopes = interned.get(file, actx, al.scopes)?;
        let default_scopes =
            interned.get(file, || format!("{} default_scopes", actx()), al.default_scopes)?;
        if let Some(s) = default_scopes.iter().find(|s| !scopes.contains(s)) {
            return Err(err(
                file,
                format!("{}: default scope {s:?} is not among the allowed scopes", actx()),
            ));
        }
        allow.push(PendingAllowance { server, scopes, default_scopes });
    }
    Ok(PendingAgent {
        id: a.id,
        disabled: a.disabled,
        max_token_lifetime_secs: a.max_token_lifetime_secs,
        keys,
        allow,
        rate_limit,
    })
}

/// Public JWKs ▶ verifiers, each `kid` once.
fn parse_keys(
    file: &str,
    ctx: &dyn Fn() -> String,
    jwks: &[serde_json::Map<String, serde_json::Value>],
) -> Result<Vec<VerifyingKey>, PolicyError> {
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(jwks.len());
    for (n, jwk) in jwks.iter().enumerate() {
        let key =
            VerifyingKey::from_jwk(jwk).map_err(|e| err(file, format!("{}: key #{}: {e}", ctx(), n + 1)))?;
        if keys.iter().any(|k| k.kid() == key.kid()) {
            return Err(err(file, format!("{}: two keys have kid {:?}", ctx(), key.kid())));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// A checked agent with each allowance resolved: it must name a server that offers every
/// scope it allows. Allowances are sorted by server, for [`Agent::allowance`]. A fault
/// comes back with the agent's id, so that a duplicate id is still reported first.
fn resolve_agent(policy: &Policy, file: &str, a: PendingAgent) -> Result<Agent, (String, PolicyError)> {
    let mut allow: Vec<Allowance> = Vec::with_capacity(a.allow.len());
    for al in a.allow {
        let fault =
            |what: String| err(file, format!("agent {:?}: allow server {:?}: {what}", a.id, al.server));
        let Some(&server) = policy.by_server_id.get(&al.server) else {
            return Err((a.id.clone(), fault("no such server".into())));
        };
        let offered = &policy.servers[server].scopes;
        if let Some(s) = al.scopes.iter().find(|s| !offered.contains(s)) {
            return Err((a.id.clone(), fault(format!("scope {s:?} is not offered by the server"))));
        }
        allow.push(Allowance { server, scopes: al.scopes, default_scopes: al.default_scopes });
    }
    allow.sort_unstable_by_key(|al| al.server);
    Ok(Agent {
        id: a.id,
        disabled: a.disabled,
        max_token_lifetime_secs: a.max_token_lifetime_secs,
        keys: a.keys,
        allow,
        rate_limit: a.rate_limit,
        source: file.to_string(),
    })
}

/// Add a resolved agent (or report its fault): its id must be new.
fn add_agent(policy: &mut Policy, agent: Result<Agent, (String, PolicyError)>) -> Result<(), PolicyError> {
    let id = match &agent {
        Ok(a) => &a.id,
        Err((id, _)) => id,
    };
    if let Some(&i) = policy.by_agent_id.get(id) {
        let file = match &agent {
            Ok(a) => a.source.clone(),
            Err((_, e)) => e.file.clone(),
        };
        return Err(err(
            &file,
            format!("agent {id:?} is defined twice (also in {})", policy.agents[i].source),
        ));
    }
    let agent = agent.map_err(|(_, e)| e)?;
    // A JWT's iss names either an agent or a trusted issuer, never both.
    if let Some(&i) = policy.by_issuer_iss.get(&agent.id) {
        return Err(err(
            &agent.source,
            format!(
                "agent {:?}: its id is also the iss of issuer '{}'; a JWT's iss must name one of them",
                agent.id, policy.issuers[i].id
            ),
        ));
    }
    policy.by_agent_id.insert(agent.id.clone(), policy.agents.len());
    policy.agents.push(agent);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_key_pair, Alg};

    fn jwk_toml() -> String {
        let pair = generate_key_pair(Alg::ES256, Some("k1")).expect("gen");
        let v = serde_json::Value::Object(pair.public_jwk);
        let t: toml::Value = serde_json::from_value(v).expect("toml");
        t.to_string()
    }

    fn policy(agent_extra: &str) -> String {
        format!(
            r#"
[[server]]
id = "docs"
resource = "https://docs.example/mcp"
scopes = ["read", "write"]

[[agent]]
id = "bot"
keys = [{}]
{agent_extra}
"#,
            jwk_toml()
        )
    }

    fn load(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_sources(&[("p.toml".into(), text.into())])
    }

    #[test]
    fn loads_a_valid_policy() {
        let p = load(&policy(
            "[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\ndefault_scopes = [\"read\"]",
        ))
        .expect("valid");
        let bot = p.agent("bot").expect("agent");
        assert_eq!(bot.allow.len(), 1);
        assert_eq!(p.server_by_audience("docs"), Some(0));
        assert_eq!(p.server_by_audience("https://docs.example/mcp"), Some(0));
        assert!(p.summary().contains("docs: read (default: read)"));
    }

    #[test]
    fn refuses_unknown_server_and_unoffered_scope() {
        let e = load(&policy("[[agent.allow]]\nserver = \"nope\"\nscopes = [\"read\"]")).unwrap_err();
        assert!(e.reason.contains("no such server"), "{e}");
        let e = load(&policy("[[agent.allow]]\nserver = \"docs\"\nscopes = [\"admin\"]")).unwrap_err();
        assert!(e.reason.contains("not offered"), "{e}");
        let e = load(&policy(
            "[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\ndefault_scopes = [\"write\"]",
        ))
        .unwrap_err();
        assert!(e.reason.contains("default scope"), "{e}");
        assert_eq!(e.file, "p.toml");
    }

    #[test]
    fn refuses_duplicates_unknown_fields_and_bad_keys() {
        let twice = format!("{}\n[[agent]]\nid = \"bot\"\ndisabled = true", policy(""));
        assert!(load(&twice).unwrap_err().reason.contains("defined twice"));
        assert!(load(&policy("colour = \"red\"")).unwrap_err().reason.contains("unknown field"));
        let bad = policy("").replace("\"EC\"", "\"oct\"");
        assert!(load(&bad).unwrap_err().reason.contains("key #1"));
        let http = policy("").replace("https://docs.example", "http://docs.example");
        assert!(load(&http).unwrap_err().reason.contains("https"));
    }

    #[test]
    fn loads_a_directory_and_names_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.toml"), policy("")).expect("write");
        std::fs::write(
            dir.path().join("b.toml"),
            "[[agent]]\nid = \"x\"\ndisabled = true\n[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]",
        )
        .expect("write");
        let p = Policy::load(dir.path()).expect("valid");
        assert_eq!(p.agents.len(), 2, "agent in b.toml may use the server from a.toml");
        std::fs::write(
            dir.path().join("c.toml"),
            "[[server]]\nid = \"docs\"\nresource = \"https://x.example\"\nscopes = [\"r\"]",
        )
        .expect("write");
        let e = Policy::load(dir.path()).unwrap_err();
        assert!(e.file.ends_with("c.toml") && e.reason.contains("a.toml"), "{e}");
    }

    /// An agent id defined in two files is reported in the second, naming the first, and
    /// before any other fault of the second definition.
    #[test]
    fn an_agent_defined_in_two_files_names_both() {
        let second = "[[agent]]\nid = \"bot\"\ndisabled = true\n[[agent.allow]]\nserver = \"ghost\"\nscopes = [\"read\"]\n";
        let e = Policy::from_sources(&[("a.toml".into(), policy("")), ("b.toml".into(), second.into())])
            .unwrap_err();
        assert_eq!(e.file, "b.toml");
        assert!(e.reason.contains("\"bot\" is defined twice (also in a.toml)"), "{e}");
        let e = Policy::from_sources(&[
            ("a.toml".into(), policy("")),
            ("b.toml".into(), second.replace("\"bot\"", "\"bot2\"")),
        ])
        .unwrap_err();
        assert!(e.file == "b.toml" && e.reason.contains("no such server"), "{e}");
    }

    /// One agent with the given inline JWK (TOML), in file `agents.toml` of a directory
    /// whose `servers.toml` defines the server.
    fn load_key(jwk: &str) -> PolicyError {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("servers.toml"),
            "[[server]]\nid = \"docs\"\nresource = \"https://docs.example/mcp\"\nscopes = [\"read\"]\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("agents.toml"),
            format!("[[agent]]\nid = \"bot\"\nkeys = [{jwk}]\n[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\n"),
        )
        .expect("write");
        let e = Policy::load(dir.path()).expect_err("the key must be refused");
        assert!(e.file.ends_with("agents.toml"), "names the file: {e}");
        assert!(e.reason.starts_with("agent \"bot\": key #1: "), "names the agent and the key: {e}");
        e
    }

    fn ec_jwk(crv: &str, x: &[u8], y: &[u8]) -> String {
        use crate::crypto::b64url_encode;
        format!(
            "{{ kty = \"EC\", crv = \"{crv}\", x = \"{}\", y = \"{}\" }}",
            b64url_encode(x),
            b64url_encode(y)
        )
    }

    /// The coordinates of a valid P-256 public key.
    fn p256_point() -> (Vec<u8>, Vec<u8>) {
        let jwk = generate_key_pair(Alg::ES256, None).expect("gen").public_jwk;
        let coord = |m: &str| crate::crypto::b64url_decode(jwk[m].as_str().expect("str")).expect("b64");
        (coord("x"), coord("y"))
    }

    /// NIST SP 800-56A Rev. 3 section 5.6.2.3.4 step 3: a point that does not satisfy the
    /// curve equation is refused at load, with the file and the reason.
    #[test]
    fn refuses_a_key_off_the_curve() {
        let (x, mut y) = p256_point();
        y[31] ^= 1;
        let e = load_key(&ec_jwk("P-256", &x, &y));
        assert!(e.reason.contains("not on the curve"), "{e}");
        let valid = load_key(&ec_jwk("P-256", &x, &p256_point().1));
        assert!(valid.reason.contains("not on the curve"), "another key's y: {valid}");
    }

    /// Section 5.6.2.3.4 step 1: the point at infinity is no public key. It has no affine
    /// coordinates; the all-zero pair that stands for it in some encodings is refused.
    #[test]
    fn refuses_the_point_at_infinity() {
        let e = load_key(&ec_jwk("P-256", &[0; 32], &[0; 32]));
        assert!(e.reason.contains("not on the curve"), "{e}");
        let e = load_key(&ec_jwk("P-384", &[0; 48], &[0; 48]));
        assert!(e.reason.contains("not on the curve"), "{e}");
    }

    /// Section 5.6.2.3.4 step 2 and RFC 7518 section 6.2.1.2: each coordinate is exactly
    /// the field size, and below the field prime; an OKP key is exactly its curve's size.
    #[test]
    fn refuses_coordinates_of_the_wrong_length_or_out_of_range() {
        let (x, y) = p256_point();
        let e = load_key(&ec_jwk("P-256", &x[1..], &y));
        assert!(e.reason.contains("`x` must be 32 octets for ES256") && e.reason.contains("not 31"), "{e}");
        let mut long_y = vec![0u8];
        long_y.extend_from_slice(&y);
        let e = load_key(&ec_jwk("P-256", &x, &long_y));
        assert!(e.reason.contains("`y` must be 32 octets"), "{e}");
        let e = load_key(&ec_jwk("P-384", &x, &y));
        assert!(e.reason.contains("must be 48 octets for ES384"), "{e}");
        let e = load_key(&ec_jwk("P-256", &[0xff; 32], &y));
        assert!(e.reason.contains("`x` is not below the field prime"), "{e}");
        let e = load_key("{ kty = \"OKP\", crv = \"Ed25519\", x = \"AAAA\" }");
        assert!(e.reason.contains("`x` must be 32 octets for Ed25519"), "{e}");
    }

    /// RFC 7518 section 3.3: an RSA key of fewer than 2048 bits is refused at load, also
    /// when leading zero octets pad its modulus to 256 octets.
    #[test]
    fn refuses_an_rsa_key_under_2048_bits() {
        let rsa = openssl::rsa::Rsa::generate(1024).expect("rsa");
        let b64 = |b: &[u8]| crate::crypto::b64url_encode(b);
        let jwk = |n: &[u8]| {
            format!(
                "{{ kty = \"RSA\", alg = \"RS256\", n = \"{}\", e = \"{}\" }}",
                b64(n),
                b64(&rsa.e().to_vec())
            )
        };
        let e = load_key(&jwk(&rsa.n().to_vec()));
        assert!(e.reason.contains("at least 2048 bits"), "{e}");
        let mut padded = vec![0u8; 128];
        padded.extend_from_slice(&rsa.n().to_vec());
        let e = load_key(&jwk(&padded));
        assert!(e.reason.contains("at least 2048 bits"), "{e}");
    }

    fn many_agents(agents: usize, extra_key_member: &str) -> String {
        let mut text = String::from("# servers and agents\n\n");
        for s in 0..20 {
            text.push_str(&format!(
                "[[server]]\nid = \"s{s}\"\nresource = \"https://s{s}.example/mcp\"\nscopes = [\"read\", \"write\"]\n\n"
            ));
        }
        let key = jwk_toml();
        for a in 0..agents {
            let key = if a == agents / 2 {
                key.replacen('{', &format!("{{ {extra_key_member}"), 1)
            } else {
                key.clone()
            };
            text.push_str(&format!(
                "[[agent]]\nid = \"a{a}\"\nkeys = [{key}]\n  [[agent.allow]]\n  server = \"s{}\"\n  scopes = [\"read\"]\n\
                 \n  [[agent.allow]]\n  server = \"s{}\"\n  scopes = [\"write\", \"read\"]\n  default_scopes = [\"write\"]\n\n",
                a % 20,
                (a + 7) % 20
            ));
        }
        text
    }

    fn read_in_pieces(text: &str, piece_bytes: usize) -> Result<Policy, PolicyError> {
        build(vec!["p.toml".into()], &[Text::Given(text)], piece_bytes)
    }

    /// A file read in pieces reads as the whole file does: the same servers and agents, in
    /// the same order, with the same allowances.
    #[test]
    fn a_file_read_in_pieces_reads_as_one() {
        let text = many_agents(300, "");
        let cuts = pieces(&text, 4096);
        assert!(cuts.len() > 10, "cut into {} pieces", cuts.len());
        for r in &cuts[1..] {
            assert!(text[r.clone()].starts_with("[[agent]]") || text[r.clone()].starts_with("[[server]]"));
        }
        let whole = read_in_pieces(&text, usize::MAX / 4).expect("valid");
        let cut = read_in_pieces(&text, 4096).expect("valid");
        assert_eq!(cut.agents.len(), 300);
        assert_eq!(cut.summary(), whole.summary());
        // Root keys before the first table would meet the tables in another piece: not cut.
        assert_eq!(pieces(&format!("x = 1\n{text}"), 4096).len(), 1);
    }

    /// A cut inside a multi-line string (here a JWK member, which keys may carry) makes a
    /// piece that is not TOML on its own: the file is then read whole, and the header-like
    /// lines in the string stay text.
    #[test]
    fn a_cut_inside_a_multi_line_string_reads_the_file_whole() {
        let fake = "[[agent]]\nid = \"fake\"\n".repeat(600);
        let text = many_agents(300, &format!("note = \"\"\"\n{fake}\"\"\", "));
        let string_at = text.find("note = ").expect("note");
        let cuts = pieces(&text, 4096);
        assert!(
            cuts.iter().any(|r| r.start > string_at && r.start < string_at + fake.len()),
            "a cut falls inside the string"
        );
        let p = read_in_pieces(&text, 4096).expect("valid");
        assert_eq!(p.agents.len(), 300);
        assert!(p.agent("fake").is_none());
        // A real fault in such a file is reported with the whole file's line.
        let broken = format!("{text}[[agent]]\nid = \"late\"\ncolour = \"red\"\n");
        let e = read_in_pieces(&broken, 4096).unwrap_err();
        assert!(e.reason.contains("unknown field `colour`"), "{e}");
        let line = broken.lines().count();
        assert!(e.reason.contains(&format!("line {line}")), "the whole file's line number: {e}");
    }
}
