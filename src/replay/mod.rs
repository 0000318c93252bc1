//! Replay protection: every assertion's `jti` is spent once, atomically, before any token is
//! issued (RFC 7523 §3 item 7). Keys are namespaced by issuer and hashed, so the store never
//! holds a raw `jti`, and entries expire when the assertion does.
//!
//! A shared store can lose what it was told (a restart without persistence, a failover to a
//! replica that missed the last writes, an eviction). The Redis store detects a total loss on
//! the same round trip as each spend (a generation marker, [`redis`]) and then refuses every
//! assertion that could have been spent before the loss ([`window`]); partial loss through
//! asynchronous replication is closed by `WAIT` (`replay.min_replica_acks`).

mod memory;
mod redis;
pub mod window;

pub use self::redis::{
    group_of, key_slot, marker_key_names, spent_key_name, RedisConfig, RedisStore, Topology, GROUPS,
};
pub use memory::MemoryStore;
pub use window::{AssertionTimes, LossWindow, Tolerances};

use crate::protocol::OAuthError;

use std::future::Future;

/// The SHA-256 of (issuer, jti): what the store remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    pub fn for_jti(issuer: &str, jti: &str) -> ReplayKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update((issuer.len() as u64).to_be_bytes());
        h.update(issuer.as_bytes());
        h.update(jti.as_bytes());
        ReplayKey(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// First use: the key is now spent.
    Fresh,
    /// The key was already spent.
    Replayed,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
    #[error("replay store timed out after {0} ms")]
    Timeout(u64),
    #[error("in-memory replay store is full ({0} unexpired entries)")]
    Full(usize),
    /// The store lost its record of spent assertions and this one could have been spent
    /// before the loss.
    #[error("replay record lost; the assertion could have been spent before the loss")]
    RecordLost { retry_after_secs: u64 },
    /// `WAIT` saw fewer replicas acknowledge the spend than `replay.min_replica_acks`.
    #[error("replay spend reached {acked} replica(s), {wanted} required")]
    ReplicasUnconfirmed { acked: i64, wanted: u32 },
}

impl ReplayError {
    /// The client's answer: always 503 `temporarily_unavailable`, no token (fail closed).
    /// The description says what the caller can do; causes stay in the log.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            ReplayError::RecordLost { retry_after_secs } => OAuthError::unavailable(
                "the replay record was lost (the replay store restarted or failed over) and this \
                 assertion could have been used before; sign a new assertion and retry",
            )
            .with_retry_after(*retry_after_secs),
            ReplayError::ReplicasUnconfirmed { .. } => OAuthError::unavailable(
                "the replay store could not confirm the spend on its replicas; sign a new assertion and retry",
            ),
            _ => OAuthError::unavailable("the replay store is unavailable; retry shortly"),
        }
    }
}

/// A loss of the replay record whose window is still open (for `/readyz` and the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostRecord {
    /// Marker groups whose record was lost, of [`GROUPS`].
    pub groups_affected: usize,
    /// The earliest loss (Unix ms).
    pub lost_at_ms: i64,
    /// From this second on, freshly signed assertions are accepted in every affected group.
    pub fresh_from_secs: i64,
    /// From this second on, nothing is refused for the loss any more.
    pub ends_at_secs: i64,
}

/// What `/readyz` reports about the store once it answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    pub lost: Option<LostRecord>,
}

/// Spend-once storage. `spend` must be atomic across every broker instance that shares the
/// store: two concurrent calls with one key yield exactly one [`Spend::Fresh`], and a
/// [`Spend::Fresh`] is never returned for a key spent before, even across a loss of the
/// store's data (then the store refuses with [`ReplayError::RecordLost`]).
pub trait ReplayStore: Send + Sync {
    /// Spend `key`, remembered until `expires_at_ms` (Unix ms). `times` are the assertion's
    /// own claims, used to decide whether it could have been spent before a loss.
    fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
        times: &AssertionTimes,
    ) -> impl Future<Output = Result<Spend, ReplayError>> + Send;
    /// Whether the store answers now.
    fn ping(&self) -> impl Future<Output = Result<(), ReplayError>> + Send {
        async { self.readiness().await.map(|_| ()) }
    }
    /// Whether the store answers now, and any loss whose window is still open (`/readyz`).
    fn readiness(&self) -> impl Future<Output = Result<Readiness, ReplayError>> + Send;
}

/// The configured store.
pub enum AnyReplayStore {
    Memory(MemoryStore),
    Redis(Box<RedisStore>),
}

impl AnyReplayStore {
    pub fn kind(&self) -> &'static str {
        match self {
            AnyReplayStore::Memory(_) => "memory",
            AnyReplayStore::Redis(r) => r.kind(),
        }
    }
}

impl ReplayStore for AnyReplayStore {
    async fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
        times: &AssertionTimes,
    ) -> Result<Spend, ReplayError> {
        match self {
            AnyReplayStore::Memory(m) => m.spend(key, expires_at_ms, times).await,
            AnyReplayStore::Redis(r) => r.spend(key, expires_at_ms, times).await,
        }
    }

    async fn readiness(&self) -> Result<Readiness, ReplayError> {
        match self {
            AnyReplayStore::Memory(m) => m.readiness().await,
            AnyReplayStore::Redis(r) => r.readiness().await,
        }
    }
}
