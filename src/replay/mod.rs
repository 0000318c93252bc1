//! Replay protection: every assertion's `jti` is spent once, atomically, before any token is
//! issued (RFC 7523 §3 item 7). Keys are namespaced by issuer and hashed, so the store never
//! holds a raw `jti`, and entries expire when the assertion does.

mod memory;
mod redis;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

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
}

/// Spend-once storage. `spend` must be atomic across every broker instance that shares the
/// store: two concurrent calls with one key yield exactly one [`Spend::Fresh`].
pub trait ReplayStore: Send + Sync {
    /// Spend `key`, remembered until `expires_at_ms` (Unix ms).
    fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
    ) -> impl Future<Output = Result<Spend, ReplayError>> + Send;
    /// Whether the store answers now (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), ReplayError>> + Send;
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
            AnyReplayStore::Redis(_) => "redis",
        }
    }
}

impl ReplayStore for AnyReplayStore {
    async fn spend(&self, key: &ReplayKey, expires_at_ms: i64) -> Result<Spend, ReplayError> {
        match self {
            AnyReplayStore::Memory(m) => m.spend(key, expires_at_ms).await,
            AnyReplayStore::Redis(r) => r.spend(key, expires_at_ms).await,
        }
    }

    async fn ping(&self) -> Result<(), ReplayError> {
        match self {
            AnyReplayStore::Memory(m) => m.ping().await,
            AnyReplayStore::Redis(r) => r.ping().await,
        }
    }
}
