//! The shared replay store: Redis, one atomic `SET key 1 NX PX ttl` per assertion.
//!
//! The connection is a multiplexed `ConnectionManager` (concurrent requests share one
//! pipelined socket) that reconnects by itself; every call is bounded by the configured
//! command timeout, and any failure is an error: the caller refuses (fail closed).

use super::{ReplayError, ReplayKey, ReplayStore, Spend};
use crate::clock::SharedClock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

pub struct RedisStore {
    conn: ConnectionManager,
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
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(RedisStore { conn, prefix: prefix.to_string(), timeout, clock })
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
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}jti:{}", self.prefix, key.hex())).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        let reply: Option<String> = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(if reply.is_some() { Spend::Fresh } else { Spend::Replayed })
    }

    async fn ping(&self) -> Result<(), ReplayError> {
        let mut conn = self.conn.clone();
        let _: String = self.bounded(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}
