//! The policy's `[[issuer]]` table: a trusted issuer of platform JWTs (a CI system, a
//! cluster, an IdP) and where its verifying keys come from.
//!
//! ```toml
//! [[issuer]]
//! id = "github-actions"
//! issuer = "https://token.actions.githubusercontent.com"   # the tokens' iss, byte for byte
//! discovery = true           # or jwks_uri = "https://…", or keys = [ {JWK}, … ]
//! algorithms = ["RS256"]     # default ["RS256", "ES256"]
//! audience = "https://sts.example.com"   # default: the broker's issuer
//! max_token_age_secs = 900   # optional: refuse tokens issued longer ago than this
//! single_use = true          # default: each token is spent once (its jti)
//! id_jag = false             # trusted to issue ID-JAGs (enterprise-managed authorization)
//! ```

use super::jwks::{parse_jwk, KeySet};
use crate::crypto::Alg;
use serde::Deserialize;
use std::sync::Arc;

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// One `[[issuer]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerToml {
    pub id: String,
    pub issuer: String,
    pub keys: Option<Vec<JsonObject>>,
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub discovery: bool,
    pub algorithms: Option<Vec<Alg>>,
    pub audience: Option<String>,
    pub max_token_age_secs: Option<u64>,
    pub single_use: Option<bool>,
    /// Trusted to issue Identity Assertion JWT Authorization Grants (ID-JAGs).
    #[serde(default)]
    pub id_jag: bool,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// Public keys written in the policy: loaded at validation, never fetched.
    Inline(Arc<KeySet>),
    /// A JWK Set (RFC 7517 section 5) at this URL.
    JwksUri(String),
    /// OpenID Connect Discovery 1.0: `<issuer>/.well-known/openid-configuration`, whose
    /// `issuer` must equal ours byte for byte (section 4.3) and whose `jwks_uri` is then fetched.
    Discovery,
}

impl KeySource {
    pub fn kind(&self) -> &'static str {
        match self {
            KeySource::Inline(_) => "inline",
            KeySource::JwksUri(_) => "jwks_uri",
            KeySource::Discovery => "discovery",
        }
    }
}

/// A validated `[[issuer]]`.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub id: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    pub source: KeySource,
    /// Accepted algorithms (a subset of [`Alg::ALL`], no duplicates, in the order written).
    pub algorithms: Vec<Alg>,
    /// The `aud` its tokens must contain; `None`: the broker's issuer.
    pub audience: Option<String>,
    /// Refuse a token whose `iat` is older than this (it then must carry `iat`).
    pub max_token_age_secs: Option<u64>,
    /// Spend each token's `jti` (or a hash of the token) in the replay store.
    pub single_use: bool,
    /// Trusted to issue ID-JAGs (Identity Assertion JWT Authorization Grants).
    pub id_jag: bool,
    /// The policy file it came from (not part of equality).
    pub file: String,
}

/// Equal when every setting is equal; the file it came from does not count.
impl PartialEq for IssuerConfig {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.same_keys_as(other)
            && self.audience == other.audience
            && self.max_token_age_secs == other.max_token_age_secs
            && self.single_use == other.single_use
            && self.id_jag == other.id_jag
    }
}

pub const DEFAULT_ALGORITHMS: [Alg; 2] = [Alg::RS256, Alg::ES256];

impl IssuerConfig {
    /// Validate one table. The error names the issuer and the reason; the caller prefixes
    /// the file name. `file` is kept for messages.
    pub fn from_toml(file: &str, t: &IssuerToml) -> Result<IssuerConfig, String> {
        check_id(&t.id)?;
        let ctx = format!("issuer {:?}", t.id);
        let fail = |why: String| format!("{ctx}: {why}");
        check_url(&t.issuer, true).map_err(|e| fail(format!("issuer {:?} {e}", t.issuer)))?;
        let algorithms = match &t.algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(list) if list.is_empty() => return Err(fail("algorithms is empty".into())),
            Some(list) => {
                let mut seen: Vec<Alg> = Vec::with_capacity(list.len());
                for a in list {
                    if seen.contains(a) {
                        return Err(fail(format!("algorithm {a} is listed twice")));
                    }
                    seen.push(*a);
                }
                seen
            }
        };
        let source = match (&t.keys, &t.jwks_uri, t.discovery) {
            (Some(keys), None, false) => {
                KeySource::Inline(Arc::new(inline_keys(keys, &algorithms).map_err(fail)?))
            }
            (None, Some(uri), false) => {
                check_url(uri, false).map_err(|e| fail(format!("jwks_uri {uri:?} {e}")))?;
                KeySource::JwksUri(uri.clone())
            }
            (None, None, true) => KeySource::Discovery,
            _ => return Err(fail("needs exactly one key source: keys, jwks_uri or discovery = true".into())),
        };
        if let Some(aud) = &t.audience {
            if aud.is_empty() || aud.len() > 1024 {
                return Err(fail("audience must be 1 to 1024 characters".into()));
            }
        }
        if t.max_token_age_secs == Some(0) {
            return Err(fail("max_token_age_secs must be at least 1".into()));
        }
        Ok(IssuerConfig {
            id: t.id.clone(),
            issuer: t.issuer.clone(),
            source,
            algorithms,
            audience: t.audience.clone(),
            max_token_age_secs: t.max_token_age_secs,
            single_use: t.single_use.unwrap_or(true),
            id_jag: t.id_jag,
            file: file.to_string(),
        })
    }

    /// True when the keys of `self` and `other` come from the same place under the same
    /// rules, so a policy reload may keep the cached keys.
    pub fn same_keys_as(&self, other: &Self) -> bool {
        self.issuer == other.issuer && self.source == other.source && self.algorithms == other.algorithms
    }
}

/// Inline keys are the operator's own words: every key must be usable, none is skipped.
fn inline_keys(keys: &[JsonObject], algorithms: &[Alg]) -> Result<KeySet, String> {
    if keys.is_empty() {
        return Err("keys is empty".into());
    }
    let mut parsed = Vec::with_capacity(keys.len());
    for (n, jwk) in keys.iter().enumerate() {
        let key = parse_jwk(jwk, algorithms).map_err(|e| format!("key #{}: {e}", n + 1))?;
        parsed.push(key);
    }
    KeySet::from_keys(parsed).map_err(|kid| format!("two keys have kid {kid:?}"))
}

/// Policy ids: 1 to 255 printable ASCII characters, no spaces or quotes (as agents and servers).
fn check_id(id: &str) -> Result<(), String> {
    if crate::policy::is_valid_id(id) {
        Ok(())
    } else {
        Err(format!("issuer id {id:?} must be 1 to 255 printable ASCII characters without spaces or quotes"))
    }
}

/// True for the hosts on which plain http is allowed (development, tests).
pub fn is_loopback_host(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

/// An URL the broker may fetch or compare: absolute, https (http only on a loopback host),
/// no fragment, no user info. An issuer also has no query (OpenID Connect Discovery 1.0
/// section 3); a trailing slash is kept as written (some IdPs put one in `iss`).
pub fn check_url(text: &str, is_issuer: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("is not an absolute URL: {e}"))?;
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(&url));
    if !scheme_ok {
        return Err("must be https (http only on a loopback host: 127.0.0.1, [::1], localhost)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user info".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    if is_issuer && url.query().is_some() {
        return Err("must not have a query".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::generate_key_pair;

    fn table(extra: &str) -> Result<IssuerConfig, String> {
        let text = format!("id = \"ci\"\nissuer = \"https://ci.example\"\n{extra}");
        let t: IssuerToml = toml::from_str(&text).map_err(|e| e.to_string())?;
        IssuerConfig::from_toml("p.toml", &t)
    }

    fn jwk_toml(alg: Alg, kid: &str) -> String {
        let pair = generate_key_pair(alg, Some(kid)).expect("gen");
        let t: toml::Value =
            serde_json::from_value(serde_json::Value::Object(pair.public_jwk)).expect("toml");
        t.to_string()
    }

    #[test]
    fn defaults() {
        let c = table("discovery = true").expect("valid");
        assert_eq!(c.source, KeySource::Discovery);
        assert_eq!(c.algorithms, vec![Alg::RS256, Alg::ES256]);
        assert!(c.single_use);
        assert_eq!(c.audience, None);
        assert_eq!(c.max_token_age_secs, None);
    }

    #[test]
    fn exactly_one_key_source() {
        assert!(table("").is_err());
        assert!(table("discovery = false").is_err());
        assert!(table("discovery = true\njwks_uri = \"https://ci.example/jwks\"").is_err());
        assert!(table(&format!("discovery = true\nkeys = [{}]", jwk_toml(Alg::ES256, "a"))).is_err());
        assert!(table("keys = []").is_err());
        let c = table("jwks_uri = \"https://keys.example/jwks?v=1\"").expect("valid");
        assert_eq!(c.source, KeySource::JwksUri("https://keys.example/jwks?v=1".into()));
    }

    /// The broker fetches over https only; http is for loopback hosts (tests, development).
    #[test]
    fn http_only_on_loopback() {
        assert!(table("jwks_uri = \"http://keys.example/jwks\"").is_err());
        assert!(table("jwks_uri = \"http://10.0.0.1/jwks\"").is_err());
        assert!(table("jwks_uri = \"ftp://keys.example/jwks\"").is_err());
        assert!(table("jwks_uri = \"https://user:pw@keys.example/jwks\"").is_err());
        assert!(table("jwks_uri = \"http://127.0.0.1:9/jwks\"").is_ok());
        assert!(table("jwks_uri = \"http://[::1]:9/jwks\"").is_ok());
        assert!(table("jwks_uri = \"http://localhost:9/jwks\"").is_ok());
        let t: IssuerToml =
            toml::from_str("id = \"x\"\nissuer = \"http://ci.example\"\ndiscovery = true").expect("toml");
        assert!(IssuerConfig::from_toml("p.toml", &t).is_err());
        let t: IssuerToml =
            toml::from_str("id = \"x\"\nissuer = \"https://ci.example?a=1\"\ndiscovery = true")
                .expect("toml");
        assert!(IssuerConfig::from_toml("p.toml", &t).is_err());
        let t: IssuerToml =
            toml::from_str("id = \"x\"\nissuer = \"https://tenant.example/\"\ndiscovery = true")
                .expect("toml");
        assert_eq!(
            IssuerConfig::from_toml("p.toml", &t).expect("trailing slash kept").issuer,
            "https://tenant.example/"
        );
    }

    #[test]
    fn algorithms_are_checked() {
        assert!(table("discovery = true\nalgorithms = []").is_err());
        assert!(table("discovery = true\nalgorithms = [\"ES256\", \"ES256\"]").is_err());
        // none and HMAC cannot even be named (RFC 8725 section 2.1).
        assert!(table("discovery = true\nalgorithms = [\"none\"]").is_err());
        assert!(table("discovery = true\nalgorithms = [\"HS256\"]").is_err());
        let c = table("discovery = true\nalgorithms = [\"PS256\", \"EdDSA\"]").expect("valid");
        assert_eq!(c.algorithms, vec![Alg::PS256, Alg::EdDSA]);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(table("discovery = true\njku = \"https://x\"").is_err());
        assert!(table("discovery = true\nmax_token_age_secs = 0").is_err());
        assert!(table("discovery = true\naudience = \"\"").is_err());
        let t: IssuerToml =
            toml::from_str("id = \"a b\"\nissuer = \"https://x.example\"\ndiscovery = true").expect("toml");
        assert!(IssuerConfig::from_toml("p.toml", &t).is_err());
    }

    #[test]
    fn inline_keys_must_all_be_usable() {
        let ok = table(&format!("keys = [{}, {}]", jwk_toml(Alg::ES256, "a"), jwk_toml(Alg::RS256, "b")))
            .expect("valid");
        match &ok.source {
            KeySource::Inline(set) => assert_eq!(set.len(), 2),
            other => panic!("{other:?}"),
        }
        // An ES384 key when only the defaults (RS256, ES256) are accepted.
        assert!(table(&format!("keys = [{}]", jwk_toml(Alg::ES384, "a"))).is_err());
        // Two keys with one kid.
        assert!(
            table(&format!("keys = [{}, {}]", jwk_toml(Alg::ES256, "a"), jwk_toml(Alg::ES256, "a"))).is_err()
        );
    }

    #[test]
    fn equality_ignores_the_file_and_tells_key_changes_apart() {
        let a = table("discovery = true").expect("valid");
        let mut b = a.clone();
        b.file = "other.toml".into();
        assert_eq!(a, b);
        b.audience = Some("https://sts.example".into());
        assert_ne!(a, b);
        assert!(a.same_keys_as(&b));
        b.algorithms = vec![Alg::RS256];
        assert!(!a.same_keys_as(&b));
    }
}
