//! The shared replay store: Redis, one atomic `SET key 1 NX PX ttl` per assertion.
//!
//! Connections are multiplexed `ConnectionManager`s (concurrent requests share one pipelined
//! socket) that reconnect by themselves; every call is bounded by the configured command
//! timeout, and any failure is an error: the caller refuses (fail closed).
//!
//! Each HTTP worker thread gets a connection of its own, created lazily on that thread, so the
//! connection's driver task runs where the requests run. With one shared connection every
//! replay check from the other workers crossed threads twice: the load generator measured
//! 117 µs of broker CPU per exchange with one connection and ~111 µs with one per worker
//! (benches/README.md).

use super::{ReplayError, ReplayKey, ReplayStore, Spend};
use crate::clock::SharedClock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Connections per store; worker threads beyond this share them round-robin.
const SLOTS: usize = 8;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's connection slot, assigned round-robin on first use.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

pub struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    slots: Box<[OnceLock<ConnectionManager>]>,
    prefix: String,
    timeout: Duration,
    clock: SharedClock,
}

impl RedisStore {
    /// Set up the store; no connection is made until first use, so the broker starts (and
    /// reports not-ready) while Redis is down.
    pub fn new(url: &str, prefix: &str, timeout: Duration, clock: SharedClock) -> Result<Self, ReplayError> {
        let client = redis::Client::open(url)
            .map_err(|e| ReplayError::Unavailable(format!("invalid redis URL: {}", e.kind_str())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        // Validates the configuration once; the per-thread connections are made on use.
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(RedisStore {
            client,
            config,
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            prefix: prefix.to_string(),
            timeout,
            clock,
        })
    }

    /// This thread's connection, created on first use from this thread (no I/O here: the
    /// connection itself is made lazily by the first command).
    fn conn(&self) -> Result<ConnectionManager, ReplayError> {
        let slot = &self.slots[SLOT.with(|s| *s)];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let fresh = ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            .map_err(|e| ReplayError::Unavailable(e.kind_str().to_string()))?;
        Ok(slot.get_or_init(|| fresh).clone())
    }

    /// A command on this thread's connection, bounded by the command timeout: the broker's
    /// other state beside the replay keys (revoked token ids, rate limits), under the same
    /// key prefix ([`RedisStore::prefix`]).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ReplayError> {
        let mut conn = self.conn()?;
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// A Lua script (EVALSHA, loading it on first use), bounded like [`RedisStore::query`].
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, ReplayError> {
        let mut conn = self.conn()?;
        self.bounded(script.invoke_async(&mut conn)).await
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ReplayError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ReplayError::Unavailable(e.kind_str().to_string())),
            Err(_) => Err(ReplayError::Timeout(self.timeout.as_millis() as u64)),
        }
    }
}

trait KindStr {
    fn kind_str(&self) -> &'static str;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> &'static str {
        if self.is_timeout() {
            "timeout"
        } else if self.is_connection_refusal() {
            "connection refused"
        } else if self.is_io_error() || self.is_connection_dropped() {
            "connection lost"
        } else {
            "command failed"
        }
    }
}

impl ReplayStore for RedisStore {
    async fn spend(&self, key: &ReplayKey, expires_at_ms: i64) -> Result<Spend, ReplayError> {
        // A relative TTL (PX) is immune to clock differences between broker and Redis.
        let ttl_ms = (expires_at_ms - self.clock.now_ms()).max(1);
        let mut conn = self.conn()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}jti:{}", self.prefix, key.hex())).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        let reply: Option<String> = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(if reply.is_some() { Spend::Fresh } else { Spend::Replayed })
    }

    async fn ping(&self) -> Result<(), ReplayError> {
        let mut conn = self.conn()?;
        let _: String = self.bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}
