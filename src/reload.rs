//! The policy snapshot being served, swapped atomically on reload.
//!
//! A [`Served`] is one [`Broker`] (policy, signing keys, rules) with the documents derived
//! from it (metadata, JWKS). Requests load the current `Arc<Served>` once and keep it until
//! they end, so a request in flight finishes under the policy it started with; a reload
//! builds a whole new `Served` and swaps it in with one atomic store.

use crate::broker::Broker;
use actix_web::web::Bytes;
use arc_swap::ArcSwap;
use std::sync::Arc;

pub struct Served {
    pub broker: Arc<Broker>,
    /// RFC 8414 metadata and the RFC 7517 JWKS, rendered once per snapshot.
    pub metadata: Bytes,
    pub jwks: Bytes,
}

impl Served {
    pub fn new(broker: Arc<Broker>) -> Served {
        Served {
            metadata: crate::http::metadata_document(&broker),
            jwks: Bytes::from(broker.tokens.jwks().to_string()),
            broker,
        }
    }
}

/// The slot every handler reads.
pub type Current = ArcSwap<Served>;

use crate::config::Settings;
use crate::startup::{build_snapshot, Mode, ProcessParts};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Re-reads the settings source, rebuilds the snapshot (policy and signing keys), and swaps
/// it in; an invalid policy or key is refused, logged and counted, and the old snapshot keeps
/// serving. What only a restart can change (listeners, replay store, logging, tracing) is
/// kept, and a change to it is logged.
pub struct Reloader {
    source: Box<dyn Fn() -> Result<Settings, String> + Send + Sync>,
    config_file: Option<PathBuf>,
    mode: Mode,
    issuer: String,
    parts: ProcessParts,
    current: Arc<Current>,
    /// One reload at a time; holds the settings of the snapshot now serving.
    serving: Mutex<Settings>,
}

/// The parts of [`Reloader`] fixed at start.
pub struct ReloadContext {
    pub config_file: Option<PathBuf>,
    pub mode: Mode,
    pub issuer: String,
    pub parts: ProcessParts,
}

impl Reloader {
    pub fn new(
        ctx: ReloadContext,
        source: Box<dyn Fn() -> Result<Settings, String> + Send + Sync>,
        settings: Settings,
        current: Arc<Current>,
    ) -> Reloader {
        Reloader {
            source,
            config_file: ctx.config_file,
            mode: ctx.mode,
            issuer: ctx.issuer,
            parts: ctx.parts,
            current,
            serving: Mutex::new(settings),
        }
    }

    /// Reload now (`why`: "SIGHUP", "policy files changed"). Blocking: file reads and key
    /// parsing; call it off the request threads.
    pub fn reload(&self, why: &str) -> Result<(), String> {
        let mut serving = self.serving.lock().map_err(|_| "reload lock poisoned".to_string())?;
        let now_ms = self.parts.clock.now_ms();
        let result = (self.source)().and_then(|settings| {
            build_snapshot(&settings, self.mode, &self.issuer, &self.parts)
                .map(|b| (settings, b))
                .map_err(|e| e.to_string())
        });
        match result {
            Ok((settings, broker)) => {
                for what in restart_only_changes(&serving, &settings) {
                    tracing::warn!(setting = what, "changed, but takes effect only after a restart");
                }
                let (agents, servers) = (broker.policy.agents.len(), broker.policy.servers.len());
                let kid = broker.tokens.kid().to_string();
                self.current.store(Arc::new(Served::new(Arc::new(broker))));
                *serving = settings;
                self.parts.shared.metrics.policy_reload(true, now_ms);
                tracing::info!(reason = why, agents, servers, signing_kid = %kid, "policy and keys reloaded");
                Ok(())
            }
            Err(e) => {
                self.parts.shared.metrics.policy_reload(false, now_ms);
                tracing::error!(reason = why, error = %e, "reload refused; the previous policy and keys keep serving");
                Err(e)
            }
        }
    }

    /// A digest of every file a reload reads: the config file, the policy files, the
    /// signing key files. Unreadable files count as their error, so a file that appears or
    /// disappears changes it too.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut add = |p: &Path| {
            h.update(p.as_os_str().as_encoded_bytes());
            match std::fs::read(p) {
                Ok(bytes) => {
                    h.update((bytes.len() as u64).to_be_bytes());
                    h.update(&bytes);
                }
                Err(e) => h.update(e.kind().to_string().as_bytes()),
            }
        };
        if let Some(f) = &self.config_file {
            add(f);
        }
        let files = match self.serving.lock() {
            Ok(s) => watched_files(&s),
            Err(_) => Vec::new(),
        };
        for f in files {
            add(&f);
        }
        h.finalize().into()
    }

    /// How often to poll the files (`policy.watch_interval_secs`; 0: never).
    pub fn watch_interval(&self) -> Option<std::time::Duration> {
        let secs = self.serving.lock().map(|s| s.policy.watch_interval_secs).unwrap_or(0);
        (secs > 0).then(|| std::time::Duration::from_secs(secs))
    }
}

/// The policy files and signing key files the settings name.
fn watched_files(s: &Settings) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = &s.policy.path {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut files: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                files.sort();
                out.extend(files);
            }
        } else {
            out.push(p.clone());
        }
    }
    let sg = &s.signing;
    out.extend(sg.key_file.iter().cloned());
    out.extend(sg.additional_public_keys.iter().cloned());
    for k in &sg.keys {
        out.extend(k.key_file.iter().cloned());
        out.extend(k.public_key_file.iter().cloned());
    }
    out
}

fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    check("server.listen", old.server.listen == new.server.listen);
    check("server.issuer", old.server.issuer == new.server.issuer);
    check("server.workers", old.server.workers == new.server.workers);
    check("server.max_body_bytes", old.server.max_body_bytes == new.server.max_body_bytes);
    check("replay", format!("{:?}", old.replay) == format!("{:?}", new.replay));
    check("metrics", format!("{:?}", old.metrics) == format!("{:?}", new.metrics));
    check("otel", format!("{:?}", old.otel) == format!("{:?}", new.otel));
    check("log", old.log.format == new.log.format);
    changed
}

/// The file watcher: a thread that fingerprints the watched files every
/// `policy.watch_interval_secs` and reloads when the fingerprint changes.
///
/// Polling, not inotify: the policy usually lives on a Kubernetes ConfigMap or Secret
/// volume, which is updated by swapping a `..data` symlink, an event inotify watches on the
/// files themselves miss; reading a few small files every few seconds costs nothing
/// measurable and sees every kind of update (editor rename, symlink swap, in-place write).
pub struct Watcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Watcher {
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn watch(reloader: Arc<Reloader>) -> Watcher {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new().name("policy-watch".into()).spawn(move || {
        let mut last = reloader.fingerprint();
        let tick = std::time::Duration::from_millis(100);
        let mut waited = std::time::Duration::ZERO;
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            waited += tick;
            let Some(interval) = reloader.watch_interval() else { continue };
            if waited < interval {
                continue;
            }
            waited = std::time::Duration::ZERO;
            let now = reloader.fingerprint();
            if now != last {
                // A failed reload is not retried until the files change again.
                let _ = reloader.reload("policy or key files changed");
                last = reloader.fingerprint();
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the policy file watcher; SIGHUP still reloads");
    }
    Watcher { stop }
}
