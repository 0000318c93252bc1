//! Revoked access tokens (RFC 7009): a token's `jti` is remembered as revoked until the
//! token's own `exp`, in the replay store's Redis (shared by every instance) or, with the
//! memory backend, in this process. Introspection and token exchange consult it.

use crate::clock::SharedClock;
use crate::replay::{AnyReplayStore, ReplayError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most revoked tokens the memory backend remembers at once; past that it refuses (fail
/// closed: a revocation that can't be stored is an error, never a silent no-op).
const MEMORY_CAPACITY: usize = 100_000;

pub struct Revocations {
    store: Arc<AnyReplayStore>,
    /// Memory backend: sha256(jti) ▶ until (Unix ms).
    memory: Mutex<HashMap<[u8; 32], i64>>,
    clock: SharedClock,
}

fn digest(jti: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"revoked\0");
    h.update(jti.as_bytes());
    h.finalize().into()
}

impl Revocations {
    pub fn new(store: Arc<AnyReplayStore>, clock: SharedClock) -> Revocations {
        Revocations { store, memory: Mutex::new(HashMap::new()), clock }
    }

    fn redis_key(prefix: &str, d: &[u8; 32]) -> String {
        format!("{prefix}revoked:{}", hex::encode(d))
    }

    /// Remember `jti` as revoked until `exp` (Unix seconds; the token's own expiry).
    pub async fn revoke(&self, jti: &str, exp: i64) -> Result<(), ReplayError> {
        let d = digest(jti);
        let now_ms = self.clock.now_ms();
        // One extra minute: instances whose clocks run behind still see it.
        let until_ms = exp.saturating_mul(1000).saturating_add(60_000);
        let ttl_ms = (until_ms - now_ms).max(1);
        match &*self.store {
            AnyReplayStore::Redis(r) => {
                let key = Self::redis_key(r.prefix(), &d);
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(1).arg("PX").arg(ttl_ms);
                r.command(&key, cmd).await.map(|_| ())
            }
            AnyReplayStore::Memory(_) => {
                let mut m =
                    self.memory.lock().map_err(|_| ReplayError::Unavailable("lock poisoned".into()))?;
                if m.len() >= MEMORY_CAPACITY {
                    m.retain(|_, until| *until > now_ms);
                }
                if m.len() >= MEMORY_CAPACITY && !m.contains_key(&d) {
                    return Err(ReplayError::Full(MEMORY_CAPACITY));
                }
                m.insert(d, until_ms);
                Ok(())
            }
        }
    }

    /// Whether `jti` was revoked (and the token has not expired since).
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, ReplayError> {
        let d = digest(jti);
        match &*self.store {
            AnyReplayStore::Redis(r) => {
                let key = Self::redis_key(r.prefix(), &d);
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(&key);
                match r.command(&key, cmd).await? {
                    redis::Value::Int(n) => Ok(n > 0),
                    other => Err(ReplayError::Unavailable(format!("unexpected EXISTS reply {other:?}"))),
                }
            }
            AnyReplayStore::Memory(_) => {
                let now_ms = self.clock.now_ms();
                let m = self.memory.lock().map_err(|_| ReplayError::Unavailable("lock poisoned".into()))?;
                Ok(m.get(&d).is_some_and(|until| *until > now_ms))
            }
        }
    }
}
