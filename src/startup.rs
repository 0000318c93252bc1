//! Settings ▶ a running broker: validate everything once, bind, serve.

use crate::broker::Broker;
use crate::client_auth::{AssertionRules, Skew};
use crate::clock::SharedClock;
use crate::config::{check_issuer, ReplayBackend, Settings};
use crate::crypto::SigningKey;
use crate::mint::TokenIssuer;
use crate::policy::{Lifetimes, Policy, PolicyError};
use crate::replay::{AnyReplayStore, MemoryStore, RedisStore};
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
    let public: Vec<&str> =
        example.agents.iter().flat_map(|a| a.keys.iter().map(|k| k.thumbprint())).collect();
    for agent in &policy.agents {
        if agent.keys.iter().any(|k| public.contains(&k.thumbprint())) {
            return Err(StartupError::Policy(PolicyError {
                file: agent.source.clone(),
                reason: format!(
                    "agent {:?} trusts the example agent key, whose private half is public in the agent-sts repository; register your own key (agent-sts keygen), or use serve --dev",
                    agent.id
                ),
            }));
        }
    }
    Ok(())
}

fn signing_key(settings: &Settings, mode: Mode) -> Result<SigningKey, StartupError> {
    let s = &settings.signing;
    match (&s.key_file, mode) {
        (Some(path), _) => {
            let pem =
                std::fs::read(path).map_err(|e| StartupError::Key(format!("{}: {e}", path.display())))?;
            SigningKey::from_pem(s.alg, &pem, s.kid.as_deref())
                .map_err(|e| StartupError::Key(format!("{}: {e}", path.display())))
        }
        (None, Mode::Dev) => SigningKey::generate(s.alg).map_err(|e| StartupError::Key(e.to_string())),
        (None, Mode::Production) => Err(StartupError::Config(
            "signing.key_file is required (create one with `agent-sts keygen`, or run `serve --dev`)".into(),
        )),
    }
}

fn additional_public_keys(
    settings: &Settings,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StartupError> {
    settings
        .signing
        .additional_public_keys
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| StartupError::Key(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| StartupError::Key(format!("{}: not a JWK object: {e}", path.display())))
        })
        .collect()
}

/// Build the broker: policy, signing key, replay store, limits. `issuer` is already checked.
pub fn build_broker(
    settings: &Settings,
    mode: Mode,
    issuer: String,
    clock: SharedClock,
) -> Result<Broker, StartupError> {
    let policy = load_policy(settings, mode)?;
    let key = signing_key(settings, mode)?;
    let tokens = TokenIssuer::new(issuer.clone(), key, additional_public_keys(settings)?)
        .map_err(|e| StartupError::Key(e.to_string()))?;
    let r = &settings.replay;
    let backend = r.backend.unwrap_or(match mode {
        Mode::Dev => ReplayBackend::Memory,
        Mode::Production => ReplayBackend::Redis,
    });
    let replay = match backend {
        ReplayBackend::Memory => {
            // An entry lives until the assertion's exp (at most max lifetime + skew ahead)
            // plus the skew; a full store refuses (503) rather than forget.
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
        ReplayBackend::Redis => AnyReplayStore::Redis(Box::new(
            RedisStore::new(
                &r.redis_url,
                &r.key_prefix,
                Duration::from_millis(r.command_timeout_ms),
                clock.clone(),
            )
            .map_err(|e| StartupError::Config(format!("replay.redis_url: {e}")))?,
        )),
    };
    let t = &settings.tokens;
    Ok(Broker {
        policy: Arc::new(policy),
        rules: assertion_rules(&issuer, t),
        lifetimes: Lifetimes { default_secs: t.default_lifetime_secs, max_secs: t.max_lifetime_secs },
        tokens,
        replay,
        clock,
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
    issuer: String,
    broker: Arc<Broker>,
    server: actix_web::dev::Server,
}

impl Application {
    /// Validate settings, load policy and keys, bind the listener. Nothing is served until
    /// [`Application::run_until_stopped`].
    pub fn build(settings: Settings, mode: Mode, clock: SharedClock) -> Result<Application, StartupError> {
        let addr = settings.server.listen.clone();
        let listener =
            TcpListener::bind(&addr).map_err(|source| StartupError::Bind { addr: addr.clone(), source })?;
        let local =
            listener.local_addr().map_err(|source| StartupError::Bind { addr: addr.clone(), source })?;
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
        let broker = Arc::new(build_broker(&settings, mode, issuer.clone(), clock)?);
        let server = crate::http::server(listener, broker.clone(), &settings)
            .map_err(|source| StartupError::Bind { addr, source })?;
        tracing::info!(
            %issuer,
            listen = %local,
            replay = broker.replay.kind(),
            agents = broker.policy.agents.len(),
            servers = broker.policy.servers.len(),
            "agent-sts ready to serve"
        );
        Ok(Application { port: local.port(), issuer, broker, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
