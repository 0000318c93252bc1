//! One issuer's keys: fetched in the background, read on the token path without I/O.
//!
//! The read path is one `ArcSwap` load and a `HashMap` lookup. A background task (one per
//! fetched issuer, on the runtime the registry was started on) fetches at start, then every
//! refresh interval (`Cache-Control: max-age` within bounds); after a failure it keeps the
//! last good keys and retries with exponential back-off and jitter. The one network wait a
//! token may cause is [`IssuerKeys::lookup_or_refetch`]: a token naming an unknown `kid`
//! asks the task for one early fetch, at most once per `unknown_kid_refetch` per issuer,
//! and every caller that arrives meanwhile waits on that same fetch.

use super::config::{IssuerConfig, KeySource};
use super::fetch::{FetchSettings, Fetcher};
use super::jwks::{parse_jwks, sanitize, KeySet, LookupError};
use crate::clock::SharedClock;
use crate::crypto::{Alg, VerifyingKey};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// What operators see about an issuer (logs, readiness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerStatus {
    pub id: String,
    pub issuer: String,
    /// `inline`, `jwks_uri` or `discovery`.
    pub source: &'static str,
    /// Keys are known: its tokens can be verified.
    pub loaded: bool,
    pub keys: usize,
    /// When the keys in use were fetched (Unix seconds; `None` for inline keys or never).
    pub fetched_at: Option<i64>,
    /// Why the latest fetch failed; `None` when it succeeded.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Default)]
struct KeyState {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<i64>,
    last_error: Option<String>,
    failures: u32,
    /// The skipped-key report of the last fetch, to warn only when it changes.
    skipped: Vec<String>,
}

#[derive(Debug, Default)]
struct RefetchGate {
    /// When the last unknown-kid refetch was granted.
    last: Option<Instant>,
    /// The fetch number that granted refetch will complete.
    target: u64,
}

/// An issuer's configuration and its current keys. Shared (`Arc`) by every HTTP worker.
pub struct IssuerKeys {
    /// The policy id; fixed (a reload that changes it makes another `IssuerKeys`).
    id: String,
    config: ArcSwap<IssuerConfig>,
    state: ArcSwap<KeyState>,
    settings: Arc<FetchSettings>,
    clock: SharedClock,
    /// A refresh task is running for this issuer.
    running: AtomicBool,
    /// Wakes the refresh task for an early fetch.
    wake: Notify,
    /// Number of fetches started.
    started: AtomicU64,
    /// Number of the last fetch finished (successfully or not).
    finished: watch::Sender<u64>,
    gate: Mutex<RefetchGate>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.status();
        f.debug_struct("IssuerKeys")
            .field("id", &status.id)
            .field("loaded", &status.loaded)
            .field("keys", &status.keys)
            .finish()
    }
}

impl IssuerKeys {
    pub(crate) fn new(config: IssuerConfig, settings: Arc<FetchSettings>, clock: SharedClock) -> Self {
        let state = match &config.source {
            KeySource::Inline(keys) => KeyState { keys: Some(keys.clone()), ..KeyState::default() },
            KeySource::JwksUri(_) | KeySource::Discovery => KeyState::default(),
        };
        IssuerKeys {
            id: config.id.clone(),
            config: ArcSwap::from_pointee(config),
            state: ArcSwap::from_pointee(state),
            settings,
            clock,
            running: AtomicBool::new(false),
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
            gate: Mutex::new(RefetchGate::default()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The issuer's current configuration (audience, maximum age, single use, ...).
    pub fn config(&self) -> Arc<IssuerConfig> {
        self.config.load_full()
    }

    pub(crate) fn set_config(&self, config: IssuerConfig) {
        self.config.store(Arc::new(config));
    }

    pub fn is_loaded(&self) -> bool {
        self.state.load().keys.is_some()
    }

    /// The key for a JWS header, from the keys in memory. Never does I/O.
    pub fn lookup(&self, kid: Option<&str>, alg: Alg) -> Result<Arc<VerifyingKey>, LookupError> {
        match &self.state.load().keys {
            Some(keys) => keys.lookup(kid, alg),
            None => Err(LookupError::NotLoaded),
        }
    }

    /// As [`IssuerKeys::lookup`]; when the token names a `kid` the keys in memory don't
    /// have, one early fetch (rate-limited per issuer, shared by concurrent callers,
    /// waited on for at most twice the fetch timeout), then the lookup again.
    pub async fn lookup_or_refetch(
        &self,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Arc<VerifyingKey>, LookupError> {
        match self.lookup(kid, alg) {
            Err(LookupError::UnknownKid) if self.running.load(Ordering::Acquire) => {}
            other => return other,
        }
        let mut finished = self.finished.subscribe();
        let target = {
            let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            let done = *finished.borrow();
            if gate.target > done {
                gate.target // a refetch is under way: wait for it too
            } else if gate.last.is_some_and(|t| t.elapsed() < self.settings.unknown_kid_refetch) {
                drop(gate);
                return self.lookup(kid, alg); // rate-limited
            } else {
                gate.last = Some(Instant::now());
                // If a scheduled fetch is under way, ours is the one after it.
                gate.target = self.started.load(Ordering::Acquire) + 1;
                self.wake.notify_one();
                tracing::debug!(issuer = %self.id, "unknown kid: refetching the issuer's keys");
                gate.target
            }
        };
        let bound = self.settings.timeout.saturating_mul(2) + Duration::from_millis(100);
        let span =
            tracing::info_span!(target: crate::telemetry::SPAN_TARGET, "issuer.key_fetch", issuer = %self.id);
        let _ = tracing::Instrument::instrument(
            tokio::time::timeout(bound, finished.wait_for(|n| *n >= target)),
            span,
        )
        .await;
        self.lookup(kid, alg)
    }

    pub fn status(&self) -> IssuerStatus {
        let config = self.config.load();
        let state = self.state.load();
        IssuerStatus {
            id: config.id.clone(),
            issuer: config.issuer.clone(),
            source: config.source.kind(),
            loaded: state.keys.is_some(),
            keys: state.keys.as_ref().map_or(0, |k| k.len()),
            fetched_at: state.fetched_at,
            last_error: state.last_error.clone(),
            consecutive_failures: state.failures,
        }
    }

    /// Whether this issuer's keys are fetched (and so need a refresh task).
    pub(crate) fn is_fetched(&self) -> bool {
        !matches!(self.config.load().source, KeySource::Inline(_))
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    /// The refresh task: fetch, then sleep until the next refresh (or an early wake-up),
    /// forever. Stopped by aborting it (the registry does, when the issuer goes).
    pub(crate) async fn refresh_loop(self: Arc<Self>, fetcher: Arc<Fetcher>) {
        let mut discovered: Option<(String, Instant)> = None;
        loop {
            let number = self.started.fetch_add(1, Ordering::AcqRel) + 1;
            let config = self.config.load_full();
            let attempt = self.fetch_once(&fetcher, &config, &mut discovered);
            let outcome = match tokio::time::timeout(self.settings.timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(format!("no complete answer within {} ms", self.settings.timeout.as_millis())),
            };
            fetcher.report(outcome.is_ok());
            let wait = match outcome {
                Ok((keys, skipped, max_age)) => self.store(&config, keys, skipped, max_age),
                Err(reason) => {
                    discovered = None; // discover again next time: the keys may have moved
                    self.record_failure(&config, reason)
                }
            };
            self.finished.send_replace(number);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One fetch: discovery (when configured and not fresh) then the JWK Set.
    async fn fetch_once(
        &self,
        fetcher: &Fetcher,
        config: &IssuerConfig,
        discovered: &mut Option<(String, Instant)>,
    ) -> Result<(KeySet, Vec<String>, Option<Duration>), String> {
        let jwks_uri = match &config.source {
            KeySource::JwksUri(uri) => uri.clone(),
            KeySource::Discovery => match discovered {
                Some((uri, at)) if at.elapsed() < self.settings.max_refresh => uri.clone(),
                _ => {
                    let uri = discover(fetcher, &config.issuer).await?;
                    *discovered = Some((uri.clone(), Instant::now()));
                    uri
                }
            },
            KeySource::Inline(_) => return Err("inline keys are not fetched".into()),
        };
        let doc = fetcher.get_json(&jwks_uri).await?;
        let parsed = parse_jwks(&doc.body, &config.algorithms).map_err(|e| format!("{jwks_uri}: {e}"))?;
        Ok((parsed.keys, parsed.skipped, doc.max_age))
    }

    fn store(
        &self,
        config: &IssuerConfig,
        keys: KeySet,
        skipped: Vec<String>,
        max_age: Option<Duration>,
    ) -> Duration {
        let old = self.state.load();
        if !skipped.is_empty() && skipped != old.skipped {
            tracing::warn!(issuer = %config.id, skipped = %skipped.join("; "), "trusted issuer: some published keys are not used");
        }
        let changed = old.keys.as_deref() != Some(&keys);
        let kids: Vec<String> = keys.keys().map(|k| format!("{} ({})", sanitize(k.kid()), k.alg())).collect();
        let wait = self.settings.refresh_after(max_age);
        if changed {
            tracing::info!(issuer = %config.id, keys = %kids.join(", "), refresh_in_secs = wait.as_secs(), "trusted issuer: keys loaded");
        } else {
            tracing::debug!(issuer = %config.id, refresh_in_secs = wait.as_secs(), "trusted issuer: keys unchanged");
        }
        self.state.store(Arc::new(KeyState {
            keys: Some(Arc::new(keys)),
            fetched_at: Some(self.clock.now_secs()),
            last_error: None,
            failures: 0,
            skipped,
        }));
        wait
    }

    fn record_failure(&self, config: &IssuerConfig, reason: String) -> Duration {
        let old = self.state.load();
        let failures = old.failures.saturating_add(1);
        let wait = self.settings.backoff(failures);
        if old.keys.is_some() {
            tracing::warn!(issuer = %config.id, error = %reason, failures, retry_in_ms = wait.as_millis() as u64,
                "trusted issuer: key refresh failed; keeping the last good keys");
        } else {
            tracing::warn!(issuer = %config.id, error = %reason, failures, retry_in_ms = wait.as_millis() as u64,
                "trusted issuer: keys not available; its tokens are refused with 503 until they are");
        }
        self.state.store(Arc::new(KeyState {
            keys: old.keys.clone(),
            fetched_at: old.fetched_at,
            last_error: Some(reason),
            failures,
            skipped: old.skipped.clone(),
        }));
        wait
    }
}

/// OpenID Connect Discovery 1.0: the configuration at `<issuer>/.well-known/openid-configuration`
/// must name exactly our issuer (section 4.3); its `jwks_uri` is then checked like a
/// configured one.
async fn discover(fetcher: &Fetcher, issuer: &str) -> Result<String, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let doc = fetcher.get_json(&url).await?;
    let meta: serde_json::Value =
        serde_json::from_slice(&doc.body).map_err(|e| format!("{url}: not JSON: {e}"))?;
    match meta.get("issuer").and_then(|v| v.as_str()) {
        Some(i) if i == issuer => {}
        Some(i) => {
            return Err(format!(
                "{url}: issuer {} is not {issuer} (OpenID Connect Discovery 1.0 section 4.3)",
                sanitize(i)
            ))
        }
        None => return Err(format!("{url}: no issuer")),
    }
    let jwks_uri =
        meta.get("jwks_uri").and_then(|v| v.as_str()).ok_or_else(|| format!("{url}: no jwks_uri"))?;
    super::config::check_url(jwks_uri, false)
        .map_err(|e| format!("{url}: jwks_uri {} {e}", sanitize(jwks_uri)))?;
    Ok(jwks_uri.to_string())
}
