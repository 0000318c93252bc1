//! The shared replay store: Redis, one atomic script per assertion on one node.
//!
//! The script ([`keys::SPEND_SCRIPT`]) reads the generation marker of the spent key's group
//! (creating it with the broker's time when missing) and runs `SET key 1 NX PX ttl`, both in
//! one slot. A marker created now, or one newer than the last this broker saw, means the store
//! lost what it held for that group (restart without persistence, `FLUSHALL`, a failover to a
//! node without the data, eviction): from then until the [`LossWindow`] closes, an assertion
//! that could have been spent before the marker's time is refused. Creation is always treated
//! as a loss, because a broker cannot tell "first start ever" from "Redis restarted while no
//! broker was looking"; every broker reads the same marker, so all apply the same window.
//!
//! With `min_replica_acks > 0` the spend is followed, in the same pipeline on the same
//! connection, by `WAIT n timeout`: a token is issued only when the spend reached `n`
//! replicas, so a failover to one of them cannot forget it (asynchronous replication
//! otherwise can, and no marker sees writes lost that way).
//!
//! Every call is bounded by the command timeout; any failure is an error, and the caller
//! refuses (fail closed).

mod keys;
mod link;

pub use keys::{group_of, key_slot, marker_key_names, spent_key_name, GROUPS};
pub use link::Topology;

use super::{
    AssertionTimes, LossWindow, LostRecord, Readiness, ReplayError, ReplayKey, ReplayStore, Spend, Tolerances,
};
use crate::clock::SharedClock;
use keys::{Keys, SPEND_SCRIPT};
use link::Link;
use redis::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How to reach Redis and what a spend must confirm; plain values from the settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: Topology,
    /// PEM CA bundle that signed the servers' certificates (`rediss://`); replaces the
    /// system trust store.
    pub tls_ca_pem: Option<Vec<u8>>,
    pub key_prefix: String,
    pub command_timeout: Duration,
    /// Replicas that must acknowledge a spend (`WAIT`) before a token is issued.
    pub min_replica_acks: u32,
    /// `WAIT`'s own timeout (below the command timeout).
    pub replica_ack_timeout_ms: u64,
    /// The checklist's tolerances, for the loss window.
    pub tolerances: Tolerances,
}

pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    prefix: String,
    keys: Keys,
    script_sha: String,
    timeout: Duration,
    min_replica_acks: u32,
    replica_ack_timeout_ms: u64,
    tolerances: Tolerances,
    clock: SharedClock,
    /// The last marker value seen per group (a change is logged once).
    seen: Box<[AtomicI64]>,
    /// The last marker value logged: markers created together (at start, by `/readyz`) share
    /// one time and one log line.
    warned: AtomicI64,
}

/// What one run of the script (and `WAIT`) said.
struct Outcome {
    spent_now: bool,
    marker_ms: i64,
    created: bool,
    replica_acks: Option<i64>,
}

impl RedisStore {
    /// Set up the store; no connection is made until first use, so the broker starts (and
    /// reports not-ready) while Redis is down.
    pub fn new(config: &RedisConfig, clock: SharedClock) -> Result<Self, ReplayError> {
        let link = Link::new(&config.topology, config.tls_ca_pem.as_deref(), config.command_timeout)
            .map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                link,
                prefix: config.key_prefix.clone(),
                keys: Keys::new(&config.key_prefix),
                script_sha: redis::Script::new(SPEND_SCRIPT).get_hash().to_string(),
                timeout: config.command_timeout,
                min_replica_acks: config.min_replica_acks,
                replica_ack_timeout_ms: config.replica_ack_timeout_ms,
                tolerances: config.tolerances,
                clock,
                seen: (0..GROUPS).map(|_| AtomicI64::new(i64::MIN)).collect(),
                warned: AtomicI64::new(i64::MIN),
            }),
        })
    }

    pub fn kind(&self) -> &'static str {
        self.inner.link.kind()
    }

    /// One single-key command for the broker's other state beside the spent keys (revoked
    /// token ids, rate limits): on the master that owns `key`'s slot, bounded by the command
    /// timeout. A server error is an error.
    pub async fn command(&self, key: &str, cmd: redis::Cmd) -> Result<Value, ReplayError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(cmd);
        let replies = self.inner.bounded(self.inner.link.run(key_slot(key), pipe, 1)).await?;
        match replies.into_iter().next() {
            Some(Value::ServerError(e)) => {
                Err(ReplayError::Unavailable(format!("server error {}", e.code())))
            }
            Some(v) => Ok(v),
            None => Err(ReplayError::Unavailable("no reply".into())),
        }
    }

    /// The configured key prefix (`replay.key_prefix`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// In the background (when a Tokio runtime runs): as soon as Redis answers, read every
    /// group's marker (creating missing ones, so a loss's window starts now rather than at the
    /// first request) and warn about server settings that lose spent keys. Gives up after
    /// `give_up_after` of trying.
    pub fn check_in_background(&self, give_up_after: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let inner = self.inner.clone();
        rt.spawn(async move {
            let deadline = tokio::time::Instant::now() + give_up_after;
            while tokio::time::Instant::now() < deadline {
                if let Ok(r) = inner.readiness().await {
                    if r.lost.is_none() {
                        tracing::info!(
                            kind = inner.link.kind(),
                            "replay store answers; its record is intact"
                        );
                    }
                    inner.check_server_settings().await;
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

impl Inner {
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ReplayError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ReplayError::Unavailable(kind_str(&e).to_string())),
            Err(_) => Err(ReplayError::Timeout(self.timeout.as_millis() as u64)),
        }
    }

    fn pipeline(
        &self,
        by_sha: bool,
        marker: &str,
        spent: Option<&str>,
        now_ms: i64,
        ttl_ms: i64,
    ) -> redis::Pipeline {
        let mut script = if by_sha { redis::cmd("EVALSHA") } else { redis::cmd("EVAL") };
        script.arg(if by_sha { self.script_sha.as_str() } else { SPEND_SCRIPT });
        script.arg(if spent.is_some() { 2 } else { 1 }).arg(marker);
        if let Some(s) = spent {
            script.arg(s);
        }
        script.arg(now_ms).arg(ttl_ms);
        let mut pipe = redis::pipe();
        pipe.ignore_errors().add_command(script);
        if spent.is_some() && self.min_replica_acks > 0 {
            pipe.add_command(
                redis::cmd("WAIT").arg(self.min_replica_acks).arg(self.replica_ack_timeout_ms).clone(),
            );
        }
        pipe
    }

    /// Run the script for `group` (and `WAIT`, when spending and replicas are required). The
    /// script is sent by hash; a server that does not know it (restarted, failed over, or
    /// `SCRIPT FLUSH`) gets it in full once.
    async fn run(
        &self,
        group: usize,
        spent: Option<&str>,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Outcome, ReplayError> {
        let marker = self.keys.marker(group);
        let slot = self.keys.slot(group);
        let by_sha = self.pipeline(true, marker, spent, now_ms, ttl_ms);
        // The replies expected: the script's, and WAIT's when the pipeline has it.
        let count = by_sha.len();
        let mut replies = self.bounded(self.link.run(slot, by_sha, count)).await?;
        if matches!(replies.first(), Some(Value::ServerError(e)) if e.code() == "NOSCRIPT") {
            replies = self
                .bounded(self.link.run(slot, self.pipeline(false, marker, spent, now_ms, ttl_ms), count))
                .await?;
        }
        let mut replies = replies.into_iter();
        let (spent_now, marker_ms, created) = parse_script_reply(replies.next())?;
        let replica_acks = match replies.next() {
            Some(Value::Int(n)) => Some(n),
            None => None,
            Some(other) => return Err(unexpected(&other)),
        };
        Ok(Outcome { spent_now, marker_ms, created, replica_acks })
    }

    /// The window of the group's marker; a marker not seen before whose window is open is
    /// logged at WARN once.
    fn note_marker(&self, group: usize, marker_ms: i64, created: bool, now_secs: i64) -> LossWindow {
        let window = LossWindow { lost_at_ms: marker_ms, tolerances: self.tolerances };
        let before = self.seen[group].swap(marker_ms, Ordering::Relaxed);
        if before != marker_ms
            && window.is_open(now_secs)
            && self.warned.swap(marker_ms, Ordering::Relaxed) != marker_ms
        {
            tracing::warn!(
                group,
                lost_at_ms = marker_ms,
                created_by_this_broker = created,
                fresh_assertions_from = window.fresh_from_secs(),
                window_ends_at = window.ends_at_secs(),
                "replay record lost: the generation marker of a key group was missing (Redis \
                 restarted without persistence, was flushed, failed over to a node without the data, \
                 or evicted it). Assertions that could have been spent before the loss are refused \
                 (503) until the window ends; freshly signed ones are accepted from the time given"
            );
        }
        window
    }

    async fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
        times: &AssertionTimes,
    ) -> Result<Spend, ReplayError> {
        let now_ms = self.clock.now_ms();
        // A relative TTL (PX) is immune to clock differences between broker and Redis.
        let ttl_ms = expires_at_ms.saturating_sub(now_ms).max(1);
        let group = keys::group(key);
        let spent = self.keys.spent(group, key);
        let out = self.run(group, Some(&spent), ttl_ms, now_ms).await?;
        let now_secs = now_ms.div_euclid(1000);
        let window = self.note_marker(group, out.marker_ms, out.created, now_secs);
        if !out.spent_now {
            return Ok(Spend::Replayed);
        }
        if let Some(acked) = out.replica_acks {
            if acked < i64::from(self.min_replica_acks) {
                tracing::warn!(
                    acked,
                    wanted = self.min_replica_acks,
                    "replay spend not confirmed by enough replicas; refused (503)"
                );
                return Err(ReplayError::ReplicasUnconfirmed { acked, wanted: self.min_replica_acks });
            }
        }
        // Assertions can be spent before the loss only while the window is open; an uncapped
        // token (a trusted issuer's) for as long as it passes the checklist.
        if (window.is_open(now_secs) || !times.lifetime_capped) && window.may_have_been_spent(times) {
            return Err(ReplayError::RecordLost { retry_after_secs: window.retry_after_secs(now_secs) });
        }
        Ok(Spend::Fresh)
    }

    async fn readiness(&self) -> Result<Readiness, ReplayError> {
        let now_ms = self.clock.now_ms();
        let now_secs = now_ms.div_euclid(1000);
        let outcomes =
            futures_util::future::try_join_all((0..GROUPS).map(|g| self.run(g, None, 1, now_ms))).await?;
        let mut lost: Option<LostRecord> = None;
        for (group, out) in outcomes.iter().enumerate() {
            let w = self.note_marker(group, out.marker_ms, out.created, now_secs);
            if !w.is_open(now_secs) {
                continue;
            }
            let l = lost.get_or_insert(LostRecord {
                groups_affected: 0,
                lost_at_ms: w.lost_at_ms,
                fresh_from_secs: w.fresh_from_secs(),
                ends_at_secs: w.ends_at_secs(),
            });
            l.groups_affected += 1;
            l.lost_at_ms = l.lost_at_ms.min(w.lost_at_ms);
            l.fresh_from_secs = l.fresh_from_secs.max(w.fresh_from_secs());
            l.ends_at_secs = l.ends_at_secs.max(w.ends_at_secs());
        }
        Ok(Readiness { lost })
    }

    /// Warn when Redis may drop spent keys on its own: any `maxmemory-policy` but
    /// `noeviction` evicts keys (an evicted spent key is a replay that passes). Managed Redis
    /// often disables `CONFIG`; that is said, not treated as an error.
    async fn check_server_settings(&self) {
        match self.bounded(self.link.config_get("maxmemory-policy")).await {
            Ok(policies) => {
                for policy in policies.iter().filter(|p| p.as_str() != "noeviction") {
                    tracing::warn!(
                        maxmemory_policy = %policy,
                        "Redis may evict spent assertions before they expire, and an evicted one can \
                         be replayed; set maxmemory-policy noeviction (a full Redis then refuses \
                         spends and the broker answers 503)"
                    );
                }
            }
            Err(e) => tracing::info!(
                error = %e,
                "could not read Redis maxmemory-policy (CONFIG is often disabled on managed Redis); \
                 make sure it is noeviction"
            ),
        }
    }
}

fn unexpected(v: &Value) -> ReplayError {
    match v {
        Value::ServerError(e) => ReplayError::Unavailable(format!("Redis error {}", e.code())),
        _ => ReplayError::Unavailable("unexpected reply from Redis".into()),
    }
}

/// `{spent now (0|1), marker (ms, as a string), created now (0|1)}`.
fn parse_script_reply(v: Option<Value>) -> Result<(bool, i64, bool), ReplayError> {
    let bad = || ReplayError::Unavailable("unexpected reply from the replay script".into());
    let Some(Value::Array(items)) = v else { return Err(v.as_ref().map_or_else(bad, unexpected)) };
    let [Value::Int(spent), gen, Value::Int(created)] = items.as_slice() else { return Err(bad()) };
    // The marker comes back as a string (GET's reply, or the script's ARGV[1]).
    let marker_ms = match gen {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok()),
        _ => None,
    }
    // A marker that is not a time is not trusted: refuse until an operator deletes it (which
    // then counts as a loss).
    .ok_or_else(|| ReplayError::Unavailable("the replay generation marker is not a number".into()))?;
    Ok((*spent == 1, marker_ms, *created == 1))
}

fn kind_str(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost"
    } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
        "invalid configuration"
    } else {
        "command failed"
    }
}

impl ReplayStore for RedisStore {
    async fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
        times: &AssertionTimes,
    ) -> Result<Spend, ReplayError> {
        self.inner.spend(key, expires_at_ms, times).await
    }

    async fn readiness(&self) -> Result<Readiness, ReplayError> {
        self.inner.readiness().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn store(min_replica_acks: u32) -> RedisStore {
        let config = RedisConfig {
            topology: Topology::Single { url: "redis://127.0.0.1:1".into() },
            tls_ca_pem: None,
            key_prefix: "t:".into(),
            command_timeout: Duration::from_millis(250),
            min_replica_acks,
            replica_ack_timeout_ms: 100,
            tolerances: Tolerances { max_lifetime_secs: 300, future_skew_secs: 5, past_skew_secs: 60 },
        };
        RedisStore::new(&config, Arc::new(SystemClock)).expect("no connection is made yet")
    }

    fn commands(s: &RedisStore, spent: Option<&str>) -> (usize, String) {
        let pipe = s.inner.pipeline(true, "m", spent, 1_000, 60_000);
        (pipe.len(), String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned())
    }

    /// `WAIT` follows a spend only when replicas must confirm it; a readiness probe (no spent
    /// key) never waits for replicas, and without `min_replica_acks` nothing waits.
    #[tokio::test]
    async fn wait_follows_a_spend_only_when_replicas_must_confirm_it() {
        let (n, packed) = commands(&store(1), Some("k"));
        assert_eq!(n, 2);
        assert!(packed.contains("EVALSHA") && packed.contains("WAIT"), "{packed}");
        for (acks, spent) in [(1, None), (0, Some("k")), (0, None)] {
            let (n, packed) = commands(&store(acks), spent);
            assert_eq!(n, 1, "acks {acks}, spent {spent:?}");
            assert!(!packed.contains("WAIT"), "acks {acks}, spent {spent:?}: {packed}");
        }
    }
}
