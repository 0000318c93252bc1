//! Trusted issuers of platform JWTs (CI systems, clusters, IdPs) and their verifying keys.
//!
//! The policy names every issuer the broker trusts (`[[issuer]]`, [`IssuerConfig`]); the
//! registry ([`Issuers`]) maps a token's exact `iss` to that issuer's keys
//! ([`IssuerKeys`]). An `iss` no `[[issuer]]` names is not in the map: nothing about it
//! is ever fetched, so an unverified token can't make the broker contact anything.
//!
//! Keys come inline from the policy, from a `jwks_uri`, or by OpenID Connect discovery;
//! fetched keys are refreshed in the background and read on the token path without I/O
//! (see `cache.rs`). Checking the token itself is the shared JWT checklist's job; this
//! module only answers "which key".

mod cache;
mod config;
mod fetch;
mod jwks;

pub use cache::{IssuerKeys, IssuerStatus};
pub use config::{check_url, is_loopback_host, IssuerConfig, IssuerToml, KeySource, DEFAULT_ALGORITHMS};
pub use fetch::FetchSettings;

use fetch::Fetcher;
pub use jwks::{parse_jwk, parse_jwks, KeySet, LookupError, ParsedJwks};

use crate::clock::SharedClock;
use crate::config::IssuerFetchSettings;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// The trusted issuers, by exact `iss`. Cheap to read from every worker; refresh tasks run
/// on the runtime [`Issuers::start`] was called on and stop when their issuer is removed
/// or the registry is dropped.
pub struct Issuers {
    by_iss: ArcSwap<HashMap<String, Arc<IssuerKeys>>>,
    fetcher: Arc<Fetcher>,
    settings: Arc<FetchSettings>,
    clock: SharedClock,
    control: Mutex<Control>,
}

#[derive(Default)]
struct Control {
    /// Set by `start`: where refresh tasks run.
    runtime: Option<tokio::runtime::Handle>,
    /// The refresh task of each fetched issuer, by issuer id.
    tasks: HashMap<String, AbortHandle>,
}

/// What a [`Issuers::reconcile`] did, by issuer id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// New issuers.
    pub added: Vec<String>,
    /// Same id, other key source or algorithms: cache dropped, keys fetched anew.
    pub replaced: Vec<String>,
    /// Same keys (other settings may have changed): cache kept, no fetch.
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.status()).finish()
    }
}

impl Issuers {
    /// A registry of `configs` with the `[issuers]` settings; nothing is fetched until
    /// [`Issuers::start`].
    pub fn new(
        settings: &IssuerFetchSettings,
        clock: SharedClock,
        configs: &[IssuerConfig],
    ) -> Result<Issuers, String> {
        Self::with_settings(FetchSettings::from_config(settings)?, clock, configs)
    }

    /// As [`Issuers::new`], with the settings as durations (tests use short ones).
    pub fn with_settings(
        settings: FetchSettings,
        clock: SharedClock,
        configs: &[IssuerConfig],
    ) -> Result<Issuers, String> {
        let fetcher = Arc::new(Fetcher::new(&settings)?);
        let issuers = Issuers {
            by_iss: ArcSwap::from_pointee(HashMap::new()),
            fetcher,
            settings: Arc::new(settings),
            clock,
            control: Mutex::new(Control::default()),
        };
        issuers.reconcile(configs)?;
        Ok(issuers)
    }

    /// Call `f` with the result of every key refresh (ok or failed), for metrics.
    pub fn observe_fetches(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        self.fetcher.observe(Box::new(f));
    }

    /// The issuer whose tokens carry exactly this `iss`. A map lookup: never a scan, never I/O.
    pub fn get(&self, iss: &str) -> Option<Arc<IssuerKeys>> {
        self.by_iss.load().get(iss).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_iss.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_iss.load().is_empty()
    }

    /// Every issuer's status, by id.
    pub fn status(&self) -> Vec<IssuerStatus> {
        let mut all: Vec<IssuerStatus> = self.by_iss.load().values().map(|k| k.status()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Start fetching, on the current tokio runtime: one task per fetched issuer, which
    /// fetches at once and then keeps the keys fresh. Returns without waiting for any fetch.
    /// Issuers added later by [`Issuers::reconcile`] start on the same runtime.
    pub fn start(&self) -> Result<(), String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "trusted issuers: start needs a tokio runtime".to_string())?;
        let mut control = self.lock();
        if control.runtime.is_some() {
            return Ok(());
        }
        control.runtime = Some(handle);
        for keys in self.by_iss.load().values() {
            self.spawn(&mut control, keys);
        }
        Ok(())
    }

    /// Adopt a reloaded policy's issuers: keep the cache of an issuer whose keys come from
    /// the same place under the same algorithms (its other settings are updated), fetch
    /// new and changed ones, stop the tasks of removed ones. Duplicate ids or `iss`
    /// strings are refused and nothing changes.
    pub fn reconcile(&self, configs: &[IssuerConfig]) -> Result<ReconcileReport, String> {
        let mut seen_ids: HashMap<&str, ()> = HashMap::with_capacity(configs.len());
        let mut seen_iss: HashMap<&str, &str> = HashMap::with_capacity(configs.len());
        for c in configs {
            if seen_ids.insert(c.id.as_str(), ()).is_some() {
                return Err(format!("issuer {:?} is defined twice", c.id));
            }
            if let Some(other) = seen_iss.insert(c.issuer.as_str(), c.id.as_str()) {
                return Err(format!("issuers {other:?} and {:?} both have issuer {:?}", c.id, c.issuer));
            }
        }
        let mut control = self.lock();
        let old = self.by_iss.load_full();
        let old_by_id: HashMap<&str, &Arc<IssuerKeys>> = old.values().map(|k| (k.id(), k)).collect();
        let mut report = ReconcileReport::default();
        let mut next: HashMap<String, Arc<IssuerKeys>> = HashMap::with_capacity(configs.len());
        let mut to_start = Vec::new();
        for c in configs {
            let keys = match old_by_id.get(c.id.as_str()) {
                Some(existing) if existing.config().same_keys_as(c) => {
                    existing.set_config(c.clone());
                    report.kept.push(c.id.clone());
                    Arc::clone(existing)
                }
                existing => {
                    if let Some(existing) = existing {
                        existing.set_running(false);
                        Self::stop(&mut control, &c.id);
                        report.replaced.push(c.id.clone());
                    } else {
                        report.added.push(c.id.clone());
                    }
                    let fresh =
                        Arc::new(IssuerKeys::new(c.clone(), self.settings.clone(), self.clock.clone()));
                    to_start.push(fresh.clone());
                    fresh
                }
            };
            next.insert(c.issuer.clone(), keys);
        }
        for (id, keys) in &old_by_id {
            if !configs.iter().any(|c| c.id == *id) {
                keys.set_running(false);
                Self::stop(&mut control, id);
                report.removed.push((*id).to_string());
            }
        }
        self.by_iss.store(Arc::new(next));
        if control.runtime.is_some() {
            for keys in &to_start {
                self.spawn(&mut control, keys);
            }
        }
        Ok(report)
    }

    fn spawn(&self, control: &mut Control, keys: &Arc<IssuerKeys>) {
        let Some(runtime) = &control.runtime else { return };
        if !keys.is_fetched() || control.tasks.contains_key(keys.id()) {
            return;
        }
        keys.set_running(true);
        let task = runtime.spawn(keys.clone().refresh_loop(self.fetcher.clone()));
        control.tasks.insert(keys.id().to_string(), task.abort_handle());
    }

    fn stop(control: &mut Control, id: &str) {
        if let Some(task) = control.tasks.remove(id) {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Issuers {
    fn drop(&mut self) {
        let control = self.lock();
        for task in control.tasks.values() {
            task.abort();
        }
        // A request still holding an issuer must not wait for a refetch that won't come.
        for keys in self.by_iss.load().values() {
            keys.set_running(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared by every HTTP worker.
    #[test]
    fn the_registry_and_its_issuers_are_send_and_sync() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<Issuers>();
        shared::<Arc<IssuerKeys>>();
    }

    #[test]
    fn start_needs_a_runtime_and_inline_issuers_need_no_task() {
        let pair = crate::crypto::generate_key_pair(crate::crypto::Alg::ES256, Some("k")).expect("gen");
        let t = IssuerToml {
            id: "inline".into(),
            issuer: "https://inline.example".into(),
            keys: Some(vec![pair.public_jwk]),
            jwks_uri: None,
            discovery: false,
            algorithms: None,
            audience: None,
            max_token_age_secs: None,
            single_use: Some(false),
            id_jag: false,
        };
        let c = IssuerConfig::from_toml("p.toml", &t).expect("valid");
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let issuers = Issuers::with_settings(FetchSettings::default(), clock, &[c]).expect("registry");
        assert!(issuers.start().is_err(), "no runtime here");
        let keys = issuers.get("https://inline.example").expect("listed");
        assert!(keys.lookup(Some("k"), crate::crypto::Alg::ES256).is_ok());
        assert!(!keys.config().single_use);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        runtime.block_on(async {
            issuers.start().expect("start");
            // No task for inline keys: an unknown kid answers at once, with no fetch.
            let got = keys.lookup_or_refetch(Some("other"), crate::crypto::Alg::ES256).await;
            assert_eq!(got.unwrap_err(), LookupError::UnknownKid);
        });
        assert!(issuers.lock().tasks.is_empty());
    }
}
