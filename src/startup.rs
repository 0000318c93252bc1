//! Settings ▶ a running broker: validate everything once, bind, serve.

use crate::broker::{Broker, Shared};
use crate::client_auth::{AssertionRules, Skew};
use crate::clock::SharedClock;
use crate::config::{check_issuer, RedisTopology, ReplayBackend, Settings};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::issuers::Issuers;
use crate::mint::TokenIssuer;
use crate::policy::{Lifetimes, Policy, PolicyError};
use crate::reload::{Current, ReloadContext, Reloader, Served};
use crate::replay::{AnyReplayStore, MemoryStore, RedisConfig, RedisStore, Tolerances, Topology};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// The example policy shipped in `policies/example.toml`, used by dev mode.
pub const EXAMPLE_POLICY: &str = include_str!("../policies/example.toml");
pub const EXAMPLE_POLICY_NAME: &str = "policies/example.toml (embedded)";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(String),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("signing key: {0}")]
    Key(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// How `serve` was asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Production,
    /// No files needed: example policy, in-memory replay store, ephemeral signing key,
    /// issuer from the bound address. Announced loudly at every start.
    Dev,
}

/// Load the policy the settings name (dev mode: the embedded example when none is named).
/// Outside dev mode a policy that trusts the public example agent key is refused.
pub fn load_policy(settings: &Settings, mode: Mode) -> Result<Policy, StartupError> {
    let policy = match (&settings.policy.path, mode) {
        (Some(path), _) => Policy::load(path)?,
        (None, Mode::Dev) => Policy::from_sources(&[(EXAMPLE_POLICY_NAME.into(), EXAMPLE_POLICY.into())])?,
        (None, Mode::Production) => {
            return Err(StartupError::Config("policy.path is required (or run `serve --dev`)".into()))
        }
    };
    if mode == Mode::Production {
        refuse_example_keys(&policy)?;
    }
    Ok(policy)
}

fn refuse_example_keys(policy: &Policy) -> Result<(), StartupError> {
    let example = Policy::from_sources(&[(EXAMPLE_POLICY_NAME.into(), EXAMPLE_POLICY.into())])?;
    // Compared as key material (what equal thumbprints say), so that a policy of 100 000
    // agents is not hashed at every start. The example's agents' keys and its example
    // identity provider's key: their private halves are all in the repository.
    let inline = |p: &Policy| -> Vec<std::sync::Arc<VerifyingKey>> {
        p.issuers
            .iter()
            .filter_map(|i| match &i.source {
                crate::issuers::KeySource::Inline(set) => Some(set.keys().cloned().collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let example_inline = inline(&example);
    let public: Vec<&VerifyingKey> = example
        .agents
        .iter()
        .flat_map(|a| a.keys.iter())
        .chain(example_inline.iter().map(|k| k.as_ref()))
        .collect();
    let is_public = |k: &VerifyingKey| public.iter().any(|p| p.same_public_key(k));
    let refuse = |file: &str, what: String| {
        Err(StartupError::Policy(PolicyError {
            file: file.to_string(),
            reason: format!(
                "{what} trusts a key of the example policy, whose private half is public in the agent-sts repository; register your own key (agent-sts keygen), or use serve --dev"
            ),
        }))
    };
    for agent in &policy.agents {
        if agent.keys.iter().any(is_public) {
            return refuse(&agent.source, format!("agent {:?}", agent.id));
        }
    }
    for issuer in &policy.issuers {
        if let crate::issuers::KeySource::Inline(set) = &issuer.source {
            if set.keys().any(|k| is_public(k)) {
                return refuse(&issuer.file, format!("issuer {:?}", issuer.id));
            }
        }
    }
    Ok(())
}

/// The signing key material: files named in the settings, or (dev mode, none named) one
/// key generated at start and kept across reloads.
#[derive(Clone, Debug)]
pub struct DevKey(Option<crate::crypto::SecretPem>);

impl DevKey {
    /// No generated key: the settings must name the key files.
    pub fn none() -> DevKey {
        DevKey(None)
    }

    pub fn for_mode(settings: &Settings, mode: Mode) -> Result<DevKey, StartupError> {
        let s = &settings.signing;
        if mode == Mode::Dev && s.key_file.is_none() && s.keys.is_empty() {
            let pair = crate::crypto::generate_key_pair(s.alg, None)
                .map_err(|e| StartupError::Key(e.to_string()))?;
            return Ok(DevKey(Some(pair.private_pem)));
        }
        Ok(DevKey(None))
    }
}

fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>, StartupError> {
    std::fs::read(path).map_err(|e| StartupError::Key(format!("{}: {e}", path.display())))
}

fn read_jwk_file(path: &std::path::Path) -> Result<serde_json::Map<String, serde_json::Value>, StartupError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| StartupError::Key(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| StartupError::Key(format!("{}: not a JWK object: {e}", path.display())))
}

/// The token issuer: the active signing key and every published key (rotation: README,
/// "Signing key rotation").
pub fn token_issuer(settings: &Settings, issuer: &str, dev: &DevKey) -> Result<TokenIssuer, StartupError> {
    let s = &settings.signing;
    let key_err =
        |p: &std::path::Path, e: crate::crypto::KeyError| StartupError::Key(format!("{}: {e}", p.display()));
    let (active, published) = if let Some(active_kid) = &s.active {
        let mut active = None;
        let mut published = Vec::new();
        for k in &s.keys {
            if let Some(path) = &k.key_file {
                let pem = read_key_file(path)?;
                let alg = match k.alg {
                    Some(a) => a,
                    None => crate::crypto::detect_alg(&pem).ok_or_else(|| {
                        StartupError::Key(format!(
                            "{}: not a PEM private key of a supported type",
                            path.display()
                        ))
                    })?,
                };
                if &k.kid == active_kid {
                    active =
                        Some(SigningKey::from_pem(alg, &pem, Some(&k.kid)).map_err(|e| key_err(path, e))?);
                } else {
                    published.push(
                        crate::crypto::public_jwk_from_pem(alg, &pem, Some(&k.kid))
                            .map_err(|e| key_err(path, e))?,
                    );
                }
            } else if let Some(path) = &k.public_key_file {
                let mut jwk = read_jwk_file(path)?;
                match jwk.get("kid").and_then(|v| v.as_str()) {
                    Some(kid) if kid != k.kid => {
                        return Err(StartupError::Key(format!(
                            "{}: the JWK's kid {kid:?} is not the configured kid {:?}",
                            path.display(),
                            k.kid
                        )))
                    }
                    _ => {
                        jwk.insert("kid".into(), serde_json::Value::String(k.kid.clone()));
                    }
                }
                published.push(jwk);
            }
        }
        let active = active.ok_or_else(|| {
            StartupError::Config(format!("signing.active {active_kid:?} is not a key_file in signing.keys"))
        })?;
        (active, published)
    } else {
        let key = match (&s.key_file, &dev.0) {
            (Some(path), _) => {
                let pem = read_key_file(path)?;
                SigningKey::from_pem(s.alg, &pem, s.kid.as_deref()).map_err(|e| key_err(path, e))?
            }
            (None, Some(pem)) => SigningKey::from_pem(s.alg, pem.0.as_bytes(), s.kid.as_deref())
                .map_err(|e| StartupError::Key(e.to_string()))?,
            (None, None) => {
                return Err(StartupError::Config(
                    "signing.key_file (or [[signing.keys]]) is required (create one with `agent-sts keygen`, or run `serve --dev`)".into(),
                ))
            }
        };
        let published =
            s.additional_public_keys.iter().map(|p| read_jwk_file(p)).collect::<Result<Vec<_>, _>>()?;
        (key, published)
    };
    TokenIssuer::new(issuer.to_string(), active, published).map_err(|e| StartupError::Key(e.to_string()))
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The Redis store's settings as plain values: where it is, and the checklist's tolerances
/// (the loss window must use exactly what the checklist enforces).
pub fn redis_config(settings: &Settings) -> Result<RedisConfig, StartupError> {
    let r = &settings.replay;
    let t = &settings.tokens;
    let topology = match r.topology {
        RedisTopology::Single => Topology::Single { url: r.redis_url.clone() },
        RedisTopology::Sentinel => Topology::Sentinel {
            sentinels: r.nodes.clone(),
            master_name: r.sentinel_master.clone().unwrap_or_default(),
            master_url: r.redis_url.clone(),
        },
        RedisTopology::Cluster => Topology::Cluster { nodes: r.nodes.clone() },
    };
    let tls_ca_pem = match &r.tls_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| StartupError::Config(format!("replay.tls_ca_file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    Ok(RedisConfig {
        topology,
        tls_ca_pem,
        key_prefix: r.key_prefix.clone(),
        command_timeout: Duration::from_millis(r.command_timeout_ms),
        min_replica_acks: r.min_replica_acks,
        replica_ack_timeout_ms: r.replica_ack_timeout_ms,
        tolerances: Tolerances {
            max_lifetime_secs: as_i64(t.max_assertion_lifetime_secs),
            // Exactly what the checklist enforces (client_auth::checklist): iat/nbf at most
            // future_skew_secs ahead, exp at most max lifetime + future_skew_secs ahead.
            future_skew_secs: as_i64(t.future_skew_secs),
            past_skew_secs: as_i64(t.clock_skew_secs),
        },
    })
}

/// Build the broker: policy, signing key, replay store, limits. `issuer` is already checked.
pub fn build_broker(
    settings: &Settings,
    mode: Mode,
    issuer: String,
    clock: SharedClock,
) -> Result<Broker, StartupError> {
    let parts = ProcessParts::new(settings, mode, clock)?;
    build_snapshot(settings, mode, &issuer, &parts)
}

/// What one process builds once and every policy snapshot shares: the stores, the trusted
/// issuers' key registry, the metrics, the dev-mode key.
#[derive(Clone)]
pub struct ProcessParts {
    pub clock: SharedClock,
    pub replay: Arc<AnyReplayStore>,
    pub shared: Arc<Shared>,
    pub issuers: Arc<Issuers>,
    pub dev: DevKey,
}

impl ProcessParts {
    pub fn new(settings: &Settings, mode: Mode, clock: SharedClock) -> Result<ProcessParts, StartupError> {
        let replay = Arc::new(build_replay(settings, mode, &clock)?);
        let issuers = Issuers::new(&settings.issuers, clock.clone(), &[])
            .map_err(|e| StartupError::Config(format!("trusted issuers: {e}")))?;
        let shared = Arc::new(Shared::new(settings.metrics.enabled, replay.clone(), clock.clone()));
        let observer = shared.clone();
        issuers.observe_fetches(move |ok| observer.metrics.issuer_key_fetch(ok));
        Ok(ProcessParts {
            replay,
            shared,
            issuers: Arc::new(issuers),
            dev: DevKey::for_mode(settings, mode)?,
            clock,
        })
    }
}

/// One policy snapshot: the policy and keys the settings name, over the process's parts.
/// Start-up and every reload go through here; the trusted issuers' registry adopts the
/// policy's issuers last, once everything else is valid.
pub fn build_snapshot(
    settings: &Settings,
    mode: Mode,
    issuer: &str,
    parts: &ProcessParts,
) -> Result<Broker, StartupError> {
    let policy = load_policy(settings, mode)?;
    let tokens = token_issuer(settings, issuer, &parts.dev)?;
    for i in policy.issuers.iter().filter(|i| !i.single_use) {
        tracing::warn!(
            issuer = %i.id,
            iss = %i.issuer,
            "issuer '{}' has single_use = false: its tokens are reused by design (e.g. Kubernetes service-account tokens) and are not spent in the replay store; each can be exchanged again until it expires",
            i.id
        );
    }
    parts
        .issuers
        .reconcile(&policy.issuers)
        .map_err(|e| StartupError::Config(format!("trusted issuers: {e}")))?;
    let t = &settings.tokens;
    Ok(Broker {
        policy: Arc::new(policy),
        rules: assertion_rules(issuer, t),
        lifetimes: Lifetimes { default_secs: t.default_lifetime_secs, max_secs: t.max_lifetime_secs },
        tokens,
        replay: parts.replay.clone(),
        issuers: parts.issuers.clone(),
        clock: parts.clock.clone(),
        shared: parts.shared.clone(),
    })
}

/// The replay store the settings name (one per process; reloads keep it).
pub fn build_replay(
    settings: &Settings,
    mode: Mode,
    clock: &SharedClock,
) -> Result<AnyReplayStore, StartupError> {
    let r = &settings.replay;
    let backend = r.backend.unwrap_or(match mode {
        Mode::Dev => ReplayBackend::Memory,
        Mode::Production => ReplayBackend::Redis,
    });
    Ok(match backend {
        ReplayBackend::Memory => {
            // An entry lives until the assertion's exp (at most max lifetime + future skew
            // ahead) plus the past skew; a full store refuses (503) rather than forget.
            let t = &settings.tokens;
            let longest = t
                .max_assertion_lifetime_secs
                .saturating_add(t.future_skew_secs)
                .saturating_add(t.clock_skew_secs)
                .max(1);
            tracing::info!(
                capacity = r.memory_capacity,
                "replay store: in memory, one process only; room for {} spent assertions, which \
                 sustains at least {} exchanges/s with {}-second assertions; past that it refuses \
                 with 503 (raise replay.memory_capacity, about 140 bytes an entry, or use Redis)",
                r.memory_capacity,
                r.memory_capacity as u64 / longest,
                t.max_assertion_lifetime_secs,
            );
            AnyReplayStore::Memory(MemoryStore::new(r.memory_capacity, clock.clone()))
        }
        ReplayBackend::Redis => {
            let store = RedisStore::new(&redis_config(settings)?, clock.clone())
                .map_err(|e| StartupError::Config(format!("replay: {e}")))?;
            store.check_in_background(Duration::from_secs(600));
            AnyReplayStore::Redis(Box::new(store))
        }
    })
}

/// The agent assertion rules: `aud` is the issuer identifier alone unless the operator turned
/// on the token endpoint compatibility setting, which the start-up log then says.
pub fn assertion_rules(issuer: &str, t: &crate::config::TokenSettings) -> AssertionRules {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut audiences = vec![issuer.to_string()];
    if t.accept_token_endpoint_audience {
        let endpoint = format!("{issuer}/token");
        tracing::warn!(
            audience = %endpoint,
            "tokens.accept_token_endpoint_audience is on: assertions may also name the token endpoint URL as aud (Authlib's default); draft-ietf-oauth-rfc7523bis asks for the issuer identifier alone"
        );
        audiences.push(endpoint);
    }
    AssertionRules {
        audiences,
        max_lifetime_secs: as_i64(t.max_assertion_lifetime_secs),
        skew: Skew { past_secs: as_i64(t.clock_skew_secs), future_secs: as_i64(t.future_skew_secs) },
    }
}

pub const DEV_WARNING: &str = "\
!!! agent-sts is running in DEV MODE: NOT FOR PRODUCTION !!!
!!!  - signing key: ephemeral, generated at start (tokens die with this process)
!!!  - replay store: in memory (replay protection does not span broker instances)
!!!  - policy: the example policy, whose example agent's private key is public";

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    issuer: String,
    current: Arc<Current>,
    reloader: Arc<Reloader>,
    server: actix_web::dev::Server,
    metrics_server: Option<actix_web::dev::Server>,
}

/// Where a reload reads the settings from: the config file (also watched) and a function
/// that reads it again with the same command-line overrides.
pub struct SettingsSource {
    pub config_file: Option<std::path::PathBuf>,
    pub load: Box<dyn Fn() -> Result<Settings, String> + Send + Sync>,
}

impl SettingsSource {
    /// The same settings every time (tests, embedding): a reload re-reads the policy and key
    /// files they name.
    pub fn fixed(settings: &Settings) -> SettingsSource {
        let s = settings.clone();
        SettingsSource { config_file: None, load: Box::new(move || Ok(s.clone())) }
    }
}

fn bind(addr: &str) -> Result<(TcpListener, std::net::SocketAddr), StartupError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr: addr.to_string(), source })?;
    let local =
        listener.local_addr().map_err(|source| StartupError::Bind { addr: addr.to_string(), source })?;
    Ok((listener, local))
}

impl Application {
    /// Validate settings, load policy and keys, bind the listener. Nothing is served until
    /// [`Application::run_until_stopped`].
    pub fn build(settings: Settings, mode: Mode, clock: SharedClock) -> Result<Application, StartupError> {
        let source = SettingsSource::fixed(&settings);
        Self::build_with_source(settings, mode, clock, source)
    }

    pub fn build_with_source(
        settings: Settings,
        mode: Mode,
        clock: SharedClock,
        source: SettingsSource,
    ) -> Result<Application, StartupError> {
        let addr = settings.server.listen.clone();
        let (listener, local) = bind(&addr)?;
        let issuer = match (&settings.server.issuer, mode) {
            (Some(i), _) => i.clone(),
            (None, Mode::Dev) => format!("http://{local}"),
            (None, Mode::Production) => {
                return Err(StartupError::Config(
                    "server.issuer is required (the canonical https URL of this broker)".into(),
                ))
            }
        };
        check_issuer(&issuer).map_err(|e| StartupError::Config(e.to_string()))?;
        if mode == Mode::Dev {
            eprintln!("{DEV_WARNING}");
            tracing::warn!(
                "DEV MODE: ephemeral signing key, in-memory replay store, example policy; not for production"
            );
        }
        let parts = ProcessParts::new(&settings, mode, clock.clone())?;
        let shared = parts.shared.clone();
        let broker = build_snapshot(&settings, mode, &issuer, &parts)?;
        // Fetch trusted issuers' keys in the background; an issuer that is down does not
        // hold up the start (its tokens get 503 until its keys are known). Issuers added by
        // a reload start on the same runtime.
        parts.issuers.start().map_err(StartupError::Config)?;
        shared.metrics.policy_loaded(clock.now_ms());
        let (agents, servers, kid) =
            (broker.policy.agents.len(), broker.policy.servers.len(), broker.tokens.kid().to_string());
        let broker_replay_kind = broker.replay.kind();
        let current = Arc::new(Current::from_pointee(Served::new(Arc::new(broker))));
        let metrics_listener = match (&settings.metrics.listen, settings.metrics.enabled) {
            (Some(a), true) => Some(bind(a)?),
            _ => None,
        };
        let server = crate::http::server(
            listener,
            current.clone(),
            shared.clone(),
            &settings,
            settings.metrics.enabled && metrics_listener.is_none(),
        )
        .map_err(|source| StartupError::Bind { addr: addr.clone(), source })?;
        let (metrics_server, metrics_port) = match metrics_listener {
            Some((l, local)) => (
                Some(
                    crate::http::metrics_server(l, shared.clone(), &settings)
                        .map_err(|source| StartupError::Bind { addr: local.to_string(), source })?,
                ),
                Some(local.port()),
            ),
            None => (None, None),
        };
        tracing::info!(
            %issuer,
            listen = %local,
            metrics = ?metrics_port,
            replay = broker_replay_kind,
            agents,
            servers,
            signing_kid = %kid,
            "agent-sts ready to serve"
        );
        let ctx = ReloadContext { config_file: source.config_file, mode, issuer: issuer.clone(), parts };
        let reloader = Arc::new(Reloader::new(ctx, source.load, settings, current.clone()));
        Ok(Application {
            port: local.port(),
            metrics_port,
            issuer,
            current,
            reloader,
            server,
            metrics_server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port, when `metrics.listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The snapshot serving now.
    pub fn broker(&self) -> Arc<Broker> {
        self.current.load().broker.clone()
    }

    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// A handle that stops the public listener (and, through [`Application::run_until_stopped`],
    /// the metrics listener after it).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serve until the public listener stops; then stop the metrics listener.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.as_ref().map(|m| m.handle());
        let metrics_task = self.metrics_server.map(tokio::spawn);
        let result = self.server.await;
        if let Some(h) = metrics {
            h.stop(true).await;
        }
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        result
    }

    /// Serve, with the process's signals: SIGTERM and SIGINT stop accepting and let
    /// in-flight requests finish (within `server.shutdown_timeout_secs`), then return; SIGHUP
    /// reloads the policy and keys. The policy files are also polled for changes.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let handle = self.server.handle();
        let reloader = self.reloader.clone();
        let watcher = crate::reload::watch(reloader.clone());
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => {
                        let r = reloader.clone();
                        let _ = tokio::task::spawn_blocking(move || r.reload("SIGHUP")).await;
                        continue;
                    }
                };
                tracing::info!(signal = name, "stopping: no new connections; in-flight requests finish");
                handle.stop(true).await;
                break;
            }
        });
        let result = self.run_until_stopped().await;
        watcher.stop();
        tracing::info!("agent-sts stopped");
        result
    }
}
