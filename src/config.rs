//! Settings: a TOML file plus `AGENT_STS__SECTION__KEY` environment overrides, read with the
//! `config` crate. Unknown keys (in the file or the environment) are refused.

use crate::crypto::Alg;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub signing: SigningSettings,
    #[serde(default)]
    pub tokens: TokenSettings,
    #[serde(default)]
    pub replay: ReplaySettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
    #[serde(default)]
    pub otel: OtelSettings,
    #[serde(default)]
    pub issuers: IssuerFetchSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on, e.g. `0.0.0.0:8080`. Port 0 picks a free port.
    pub listen: String,
    /// The canonical issuer URL: https (http only on loopback), no trailing slash. Used
    /// byte-identically in metadata, in every token's `iss`, and as an accepted assertion `aud`.
    pub issuer: Option<String>,
    /// Largest accepted token request body.
    pub max_body_bytes: usize,
    /// HTTP worker threads (default: one per CPU).
    pub workers: Option<usize>,
    /// On SIGTERM/SIGINT: stop accepting, then give in-flight requests this long to finish.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            issuer: None,
            max_body_bytes: 16 * 1024,
            workers: None,
            shutdown_timeout_secs: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// A policy file, or a directory whose `*.toml` files form the policy.
    pub path: Option<PathBuf>,
    /// Reload when the policy files (or the signing key files) change, checked this often;
    /// 0 turns watching off (SIGHUP still reloads).
    pub watch_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningSettings {
    /// PEM (PKCS#8) private key that signs access tokens.
    pub key_file: Option<PathBuf>,
    pub alg: Alg,
    /// Key id in the JWKS and token headers (default: the RFC 7638 thumbprint).
    pub kid: Option<String>,
    /// Public JWK files published in the JWKS besides the active key (key rotation).
    pub additional_public_keys: Vec<PathBuf>,
    /// Key rotation: the `kid` of the key in `keys` that signs.
    pub active: Option<String>,
    /// Key rotation: every signing key, published in the JWKS; only `active` signs. Replaces
    /// `key_file`/`kid`/`additional_public_keys` (not both).
    pub keys: Vec<SigningKeySettings>,
}

impl Default for SigningSettings {
    fn default() -> Self {
        SigningSettings {
            key_file: None,
            alg: Alg::ES256,
            kid: None,
            additional_public_keys: Vec::new(),
            active: None,
            keys: Vec::new(),
        }
    }
}

/// One `[[signing.keys]]` entry: a private key (it may become active) or, for a key that
/// signs elsewhere or was retired from signing, its public JWK alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeySettings {
    pub kid: String,
    /// Default: inferred from the key (RSA: RS256).
    pub alg: Option<Alg>,
    /// PKCS#8 PEM private key.
    pub key_file: Option<PathBuf>,
    /// A public JWK (JSON) instead of the private key: published and verified, never signs.
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    pub default_lifetime_secs: u64,
    pub max_lifetime_secs: u64,
    /// How far ahead an assertion's `exp` may be (plus `future_skew_secs`).
    pub max_assertion_lifetime_secs: u64,
    /// How long after its `exp` a JWT is still accepted (clocks that run behind).
    pub clock_skew_secs: u64,
    /// How far in the future `iat` and `nbf` may be (clocks that run ahead). It is also how
    /// long fresh assertions are refused after the replay store lost its record (fresh ones
    /// pass from loss + this + 1 s), so it is small: NTP keeps clocks far closer than this.
    pub future_skew_secs: u64,
    /// Also accept `<issuer>/token` as an assertion's `aud` (what Authlib sends). Off by
    /// default: draft-ietf-oauth-rfc7523bis asks for the issuer identifier alone.
    pub accept_token_endpoint_audience: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            default_lifetime_secs: 300,
            max_lifetime_secs: 3600,
            max_assertion_lifetime_secs: 300,
            clock_skew_secs: 60,
            future_skew_secs: 1,
            accept_token_endpoint_audience: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayBackend {
    Memory,
    Redis,
}

/// How the Redis replay store is deployed (README: "Replay store: topologies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisTopology {
    /// One Redis, or a managed endpoint, at `redis_url`.
    #[default]
    Single,
    /// The master that the Sentinels in `nodes` name `sentinel_master`.
    Sentinel,
    /// Redis Cluster, found from the seed nodes in `nodes`.
    Cluster,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySettings {
    /// `redis` (default; required when several brokers share the load) or `memory`
    /// (single process; the dev-mode default).
    pub backend: Option<ReplayBackend>,
    /// Single: the server. Sentinel: scheme, credentials and database for the master (its
    /// host and port come from Sentinel).
    pub redis_url: String,
    pub topology: RedisTopology,
    /// Sentinel: the Sentinels' URLs; Cluster: seed nodes' URLs.
    pub nodes: Vec<String>,
    /// Sentinel: the monitored master's name.
    pub sentinel_master: Option<String>,
    /// PEM CA bundle that must have signed the Redis servers' certificates (`rediss://`);
    /// replaces the system trust store.
    pub tls_ca_file: Option<PathBuf>,
    /// Replicas that must acknowledge each spend (`WAIT`) before a token is issued.
    pub min_replica_acks: u32,
    /// How long `WAIT` waits for those acknowledgements (less than the command timeout).
    pub replica_ack_timeout_ms: u64,
    pub command_timeout_ms: u64,
    pub key_prefix: String,
    /// Most unexpired entries the in-memory store holds; past that it refuses (503).
    pub memory_capacity: usize,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            backend: None,
            redis_url: "redis://127.0.0.1:6379".into(),
            topology: RedisTopology::Single,
            nodes: Vec::new(),
            sentinel_master: None,
            tls_ca_file: None,
            min_replica_acks: 0,
            replica_ack_timeout_ms: 100,
            command_timeout_ms: 250,
            key_prefix: "agent-sts:".into(),
            memory_capacity: 200_000,
        }
    }
}

impl ReplaySettings {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError(format!("replay.{why}")));
        if self.command_timeout_ms == 0 {
            return bad("command_timeout_ms must be at least 1");
        }
        if self.key_prefix.contains(['{', '}']) {
            return bad("key_prefix must not contain { or } (the broker sets the Redis Cluster hash tags)");
        }
        match self.topology {
            RedisTopology::Single => {}
            RedisTopology::Sentinel if self.nodes.is_empty() => {
                return bad("nodes must list the Sentinels' URLs when topology is sentinel")
            }
            RedisTopology::Sentinel if self.sentinel_master.as_deref().is_none_or(str::is_empty) => {
                return bad("sentinel_master must name the master when topology is sentinel")
            }
            RedisTopology::Cluster if self.nodes.is_empty() => {
                return bad("nodes must list seed nodes' URLs when topology is cluster")
            }
            _ => {}
        }
        if self.min_replica_acks > 0
            && (self.replica_ack_timeout_ms == 0 || self.replica_ack_timeout_ms >= self.command_timeout_ms)
        {
            return bad("replica_ack_timeout_ms must be at least 1 and less than command_timeout_ms");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings { path: None, watch_interval_secs: 5 }
    }
}

/// Prometheus metrics (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Count and serve metrics.
    pub enabled: bool,
    /// Serve `/metrics` on this address only (e.g. `0.0.0.0:9090`, not exposed publicly).
    /// Unset: `/metrics` is served on `server.listen`.
    pub listen: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { enabled: true, listen: None }
    }
}

/// OpenTelemetry trace export over OTLP/HTTP (protobuf). Off unless an endpoint is set here
/// or in `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSettings {
    /// Collector base URL, e.g. `http://otel-collector:4318` (`/v1/traces` is appended).
    pub endpoint: Option<String>,
    /// Extra request headers (authentication for a hosted backend).
    pub headers: std::collections::BTreeMap<String, String>,
    /// `service.name` (default: `OTEL_SERVICE_NAME`, else `agent-sts`).
    pub service_name: Option<String>,
    /// Fraction of new traces sampled (a caller's sampled flag is followed).
    pub sample_ratio: f64,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings { endpoint: None, headers: Default::default(), service_name: None, sample_ratio: 1.0 }
    }
}

/// How trusted issuers' keys are fetched (`[issuers]`; the issuers themselves are in the
/// policy, `[[issuer]]`). See `src/issuers/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerFetchSettings {
    /// Bound on one fetch (connect, TLS, headers and body; discovery and JWKS together).
    pub fetch_timeout_ms: u64,
    /// Largest accepted JWKS or discovery document; enforced while the body streams in.
    pub max_jwks_bytes: usize,
    /// Bounds on the refresh interval a `Cache-Control: max-age` may set.
    pub min_refresh_secs: u64,
    pub max_refresh_secs: u64,
    /// Refresh interval when the response has no usable `max-age`.
    pub default_refresh_secs: u64,
    /// At most one refetch per issuer in this many seconds when a token names an unknown `kid`.
    pub unknown_kid_refetch_secs: u64,
    /// Back-off after a failed fetch: starts here, doubles (with jitter) up to `retry_max_secs`.
    pub retry_initial_ms: u64,
    pub retry_max_secs: u64,
    /// Extra trusted root certificates (PEM), for issuers behind a private CA.
    pub ca_file: Option<PathBuf>,
}

impl Default for IssuerFetchSettings {
    fn default() -> Self {
        IssuerFetchSettings {
            fetch_timeout_ms: 5000,
            max_jwks_bytes: 256 * 1024,
            min_refresh_secs: 60,
            max_refresh_secs: 24 * 3600,
            default_refresh_secs: 300,
            unknown_kid_refetch_secs: 30,
            retry_initial_ms: 1000,
            retry_max_secs: 300,
            ca_file: None,
        }
    }
}

impl IssuerFetchSettings {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(format!("issuers.{m}")));
        if !(1..=60_000).contains(&self.fetch_timeout_ms) {
            return bad("fetch_timeout_ms must be between 1 and 60000");
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_jwks_bytes) {
            return bad("max_jwks_bytes must be between 1024 and 16777216");
        }
        if self.min_refresh_secs == 0
            || self.min_refresh_secs > self.default_refresh_secs
            || self.default_refresh_secs > self.max_refresh_secs
        {
            return bad("refresh: need 1 <= min_refresh_secs <= default_refresh_secs <= max_refresh_secs");
        }
        if self.unknown_kid_refetch_secs == 0 {
            return bad("unknown_kid_refetch_secs must be at least 1");
        }
        if self.retry_initial_ms == 0 || self.retry_max_secs == 0 {
            return bad("retry_initial_ms and retry_max_secs must be at least 1");
        }
        if let Some(f) = &self.ca_file {
            if !f.is_file() {
                return Err(ConfigError(format!("issuers.ca_file {}: no such file", f.display())));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Read `file` (if given) and the `AGENT_STS__*` environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder = Config::builder();
        if let Some(f) = file {
            if !f.is_file() {
                return Err(ConfigError(format!("{}: no such file", f.display())));
            }
            builder = builder.add_source(File::from(f).format(FileFormat::Toml).required(true));
        }
        let env: config::Map<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("AGENT_STS__")).collect();
        builder = builder.add_source(
            Environment::with_prefix("AGENT_STS")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("signing.additional_public_keys")
                .with_list_parse_key("replay.nodes")
                .source(Some(env)),
        );
        let cfg = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let settings: Settings = cfg.try_deserialize().map_err(|e| ConfigError(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let t = &self.tokens;
        if t.default_lifetime_secs == 0 || t.default_lifetime_secs > t.max_lifetime_secs {
            return Err(ConfigError(
                "tokens.default_lifetime_secs must be between 1 and tokens.max_lifetime_secs".into(),
            ));
        }
        if t.max_assertion_lifetime_secs == 0 {
            return Err(ConfigError("tokens.max_assertion_lifetime_secs must be at least 1".into()));
        }
        self.replay.check()?;
        let sg = &self.signing;
        if !sg.keys.is_empty() || sg.active.is_some() {
            if sg.key_file.is_some() || sg.kid.is_some() || !sg.additional_public_keys.is_empty() {
                return Err(ConfigError(
                    "signing: use either [[signing.keys]] with signing.active, or key_file/kid/additional_public_keys, not both".into(),
                ));
            }
            let active = sg.active.as_deref().ok_or_else(|| {
                ConfigError("signing.active is required with [[signing.keys]]: the kid that signs".into())
            })?;
            for (i, k) in sg.keys.iter().enumerate() {
                if k.kid.is_empty() || sg.keys[..i].iter().any(|o| o.kid == k.kid) {
                    return Err(ConfigError(format!(
                        "signing.keys: kid {:?} is empty or listed twice",
                        k.kid
                    )));
                }
                if k.key_file.is_some() == k.public_key_file.is_some() {
                    return Err(ConfigError(format!(
                        "signing.keys {:?}: give exactly one of key_file and public_key_file",
                        k.kid
                    )));
                }
            }
            match sg.keys.iter().find(|k| k.kid == active) {
                Some(k) if k.key_file.is_some() => {}
                Some(_) => {
                    return Err(ConfigError(format!(
                        "signing.active {active:?} has no key_file: the active key must be a private key"
                    )))
                }
                None => return Err(ConfigError(format!("signing.active {active:?} is not in signing.keys"))),
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError("server.max_body_bytes must be at least 1024".into()));
        }
        if !(0.0..=1.0).contains(&self.otel.sample_ratio) {
            return Err(ConfigError("otel.sample_ratio must be between 0 and 1".into()));
        }
        if let Some(issuer) = &self.server.issuer {
            check_issuer(issuer)?;
        }
        self.issuers.check()?;
        Ok(())
    }
}

/// RFC 8414 §2: the issuer is an https URL with no query or fragment; we also refuse a
/// trailing slash, so the one string is byte-identical everywhere clients compare it.
/// http is allowed only on a loopback host (development).
pub fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError(format!("server.issuer {issuer:?}: {why}"));
    let url = url::Url::parse(issuer).map_err(|e| bad(&e.to_string()))?;
    if issuer.ends_with('/') {
        return Err(bad("must not end with a slash"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must have no query or fragment"));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(bad("must be https (http only on a loopback host)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn file_and_environment_overrides() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nissuer = \"https://sts.example\"\n[replay]\nbackend = \"memory\"\n")
            .expect("write");
        let s = Settings::load_from(
            Some(&f),
            env(&[
                ("AGENT_STS__SERVER__LISTEN", "0.0.0.0:9999"),
                ("AGENT_STS__TOKENS__MAX_LIFETIME_SECS", "600"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.server.listen, "0.0.0.0:9999");
        assert_eq!(s.server.issuer.as_deref(), Some("https://sts.example"));
        assert_eq!(s.tokens.max_lifetime_secs, 600);
        assert_eq!(s.replay.backend, Some(ReplayBackend::Memory));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nlisten_addr = \"x\"\n").expect("write");
        assert!(Settings::load_from(Some(&f), env(&[])).is_err());
        assert!(Settings::load_from(None, env(&[("AGENT_STS__SERVER__PORT", "1")])).is_err());
        assert!(Settings::load_from(None, env(&[("AGENT_STS__NOPE__X", "1")])).is_err());
    }

    #[test]
    fn issuers_section_is_checked() {
        let s = Settings::load_from(None, env(&[("AGENT_STS__ISSUERS__FETCH_TIMEOUT_MS", "750")]))
            .expect("valid");
        assert_eq!(s.issuers.fetch_timeout_ms, 750);
        assert_eq!(s.issuers.max_jwks_bytes, 256 * 1024);
        for (k, v) in [
            ("AGENT_STS__ISSUERS__FETCH_TIMEOUT_MS", "0"),
            ("AGENT_STS__ISSUERS__MAX_JWKS_BYTES", "10"),
            ("AGENT_STS__ISSUERS__MIN_REFRESH_SECS", "600"),
            ("AGENT_STS__ISSUERS__UNKNOWN_KID_REFETCH_SECS", "0"),
            ("AGENT_STS__ISSUERS__CA_FILE", "/nonexistent/ca.pem"),
            ("AGENT_STS__ISSUERS__JWKS_URL", "x"),
        ] {
            assert!(Settings::load_from(None, env(&[(k, v)])).is_err(), "{k}={v} must be refused");
        }
    }

    #[test]
    fn replay_topologies_are_checked() {
        let s = Settings::load_from(
            None,
            env(&[
                ("AGENT_STS__REPLAY__TOPOLOGY", "cluster"),
                ("AGENT_STS__REPLAY__NODES", "redis://10.0.0.1:6379,redis://10.0.0.2:6379"),
                ("AGENT_STS__REPLAY__MIN_REPLICA_ACKS", "1"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.replay.topology, RedisTopology::Cluster);
        assert_eq!(s.replay.nodes.len(), 2);
        assert_eq!(s.replay.min_replica_acks, 1);
        assert!(Settings::load_from(None, env(&[("AGENT_STS__REPLAY__TOPOLOGY", "cluster")])).is_err());
        assert!(Settings::load_from(
            None,
            env(&[
                ("AGENT_STS__REPLAY__TOPOLOGY", "sentinel"),
                ("AGENT_STS__REPLAY__NODES", "redis://s:26379")
            ])
        )
        .is_err());
        assert!(Settings::load_from(None, env(&[("AGENT_STS__REPLAY__KEY_PREFIX", "{x}")])).is_err());
        assert!(Settings::load_from(
            None,
            env(&[
                ("AGENT_STS__REPLAY__MIN_REPLICA_ACKS", "1"),
                ("AGENT_STS__REPLAY__REPLICA_ACK_TIMEOUT_MS", "250")
            ])
        )
        .is_err());
    }

    #[test]
    fn issuer_must_be_canonical() {
        assert!(check_issuer("https://sts.example").is_ok());
        assert!(check_issuer("https://sts.example/tenant").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        assert!(check_issuer("https://sts.example/").is_err());
        assert!(check_issuer("http://sts.example").is_err());
        assert!(check_issuer("https://sts.example?x=1").is_err());
        assert!(
            Settings::load_from(None, env(&[("AGENT_STS__SERVER__ISSUER", "https://x.example/")])).is_err()
        );
    }
}
