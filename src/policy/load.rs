//! Policy files (TOML) ▶ a validated [`Policy`]. Any fault stops the load with the file
//! and the reason: unknown fields, unknown server, a scope the server does not offer,
//! duplicate ids, a key that does not parse.

use super::{Agent, Allowance, Policy, RateLimit, Server};
use crate::crypto::VerifyingKey;
use crate::protocol::ScopeSet;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct PolicyError {
    pub file: String,
    pub reason: String,
}

fn err(file: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError { file: file.to_string(), reason: reason.into() }
}

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerDef {
    id: String,
    resource: String,
    scopes: Vec<String>,
    max_token_lifetime_secs: Option<u64>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowDef {
    server: String,
    scopes: Vec<String>,
    #[serde(default)]
    default_scopes: Vec<String>,
}

impl Policy {
    /// Load a policy file, or every `*.toml` file of a directory (in name order).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let files = if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| err(&shown, format!("cannot read directory: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(err(&shown, "no *.toml policy files in this directory"));
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut sources = Vec::with_capacity(files.len());
        for f in files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|e| err(&name, format!("cannot read: {e}")))?;
            sources.push((name, text));
        }
        Policy::from_sources(&sources)
    }

    /// Build from `(file name, TOML text)` pairs: the files of one policy.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Policy, PolicyError> {
        let mut parsed = Vec::with_capacity(sources.len());
        for (name, text) in sources {
            let file: PolicyFile =
                toml::from_str(text).map_err(|e| err(name, e.to_string().trim_end().to_string()))?;
            parsed.push((name.as_str(), file));
        }
        let mut policy =
            Policy { sources: sources.iter().map(|(n, _)| n.clone()).collect(), ..Policy::default() };
        for (name, file) in &parsed {
            for s in &file.server {
                add_server(&mut policy, name, s)?;
            }
        }
        for (name, file) in &parsed {
            for i in &file.issuer {
                add_issuer(&mut policy, name, i)?;
            }
        }
        for (name, file) in &parsed {
            for a in &file.agent {
                add_agent(&mut policy, name, a)?;
            }
        }
        for (name, file) in &parsed {
            for f in &file.federation {
                add_federation(&mut policy, name, f)?;
            }
        }
        policy.federation_index = super::federation::index(policy.issuers.len(), &policy.federation);
        Ok(policy)
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
    let keys = parse_keys(file, &ctx, &s.keys)?;
    let idx = policy.servers.len();
    policy.by_server_id.insert(s.id.clone(), idx);
    policy.by_resource.insert(s.resource.clone(), idx);
    policy.servers.push(Server {
        id: s.id.clone(),
        resource: s.resource.clone(),
        scopes,
        max_token_lifetime_secs: s.max_token_lifetime_secs,
        keys,
        source: file.to_string(),
    });
    Ok(())
}

/// Public JWKs ▶ verifiers, each `kid` once.
fn parse_keys(
    file: &str,
    ctx: &str,
    jwks: &[serde_json::Map<String, serde_json::Value>],
) -> Result<Vec<VerifyingKey>, PolicyError> {
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(jwks.len());
    for (n, jwk) in jwks.iter().enumerate() {
        let key =
            VerifyingKey::from_jwk(jwk).map_err(|e| err(file, format!("{ctx}: key #{}: {e}", n + 1)))?;
        if keys.iter().any(|k| k.kid() == key.kid()) {
            return Err(err(file, format!("{ctx}: two keys have kid {:?}", key.kid())));
        }
        keys.push(key);
    }
    Ok(keys)
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

fn add_federation(
    policy: &mut Policy,
    file: &str,
    d: &super::federation::FederationDef,
) -> Result<(), PolicyError> {
    if let Some(r) = policy.federation.iter().find(|r| r.id == d.id) {
        return Err(err(file, format!("federation rule '{}' is defined twice (also in {})", d.id, r.source)));
    }
    let rule = super::federation::rule_from_def(policy, file, d)?;
    policy.federation.push(rule);
    Ok(())
}

fn add_agent(policy: &mut Policy, file: &str, a: &AgentDef) -> Result<(), PolicyError> {
    check_id(file, "agent", &a.id)?;
    let ctx = format!("agent {:?}", a.id);
    // A JWT's iss names either an agent or a trusted issuer, never both.
    if let Some(&i) = policy.by_issuer_iss.get(&a.id) {
        return Err(err(
            file,
            format!(
                "{ctx}: its id is also the iss of issuer '{}'; a JWT's iss must name one of them",
                policy.issuers[i].id
            ),
        ));
    }
    if let Some(&i) = policy.by_agent_id.get(&a.id) {
        return Err(err(file, format!("{ctx} is defined twice (also in {})", policy.agents[i].source)));
    }
    check_lifetime(file, &ctx, a.max_token_lifetime_secs)?;
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
                format!("{ctx}: rate_limit needs per_second > 0 (at most 1000000) and burst >= 1"),
            ))
        }
    };
    let mut allow: Vec<Allowance> = Vec::with_capacity(a.allow.len());
    for al in &a.allow {
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
        allow.push(Allowance { server, scopes, default_scopes });
    }
    policy.by_agent_id.insert(a.id.clone(), policy.agents.len());
    policy.agents.push(Agent {
        id: a.id.clone(),
        disabled: a.disabled,
        max_token_lifetime_secs: a.max_token_lifetime_secs,
        keys,
        allow,
        rate_limit,
        source: file.to_string(),
    });
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
}
