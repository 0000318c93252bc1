//! The embedded replay store: one process only, bounded, entries expire. When it is full of
//! unexpired entries it refuses (fail closed) rather than forget a spent `jti`.

use super::{AssertionTimes, Readiness, ReplayError, ReplayKey, ReplayStore, Spend};
use crate::clock::SharedClock;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    live: HashMap<ReplayKey, i64>,
    by_expiry: BinaryHeap<Reverse<(i64, ReplayKey)>>,
}

impl Shard {
    fn purge(&mut self, now_ms: i64) {
        while let Some(Reverse((exp, key))) = self.by_expiry.peek().copied() {
            if exp > now_ms {
                break;
            }
            self.by_expiry.pop();
            if self.live.get(&key) == Some(&exp) {
                self.live.remove(&key);
            }
        }
    }
}

pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    capacity: usize,
    clock: SharedClock,
}

impl MemoryStore {
    /// A store that holds at most `capacity` unexpired entries.
    pub fn new(capacity: usize, clock: SharedClock) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            capacity,
            clock,
        }
    }

    fn spend_now(&self, key: &ReplayKey, expires_at_ms: i64) -> Result<Spend, ReplayError> {
        let now = self.clock.now_ms();
        let shard = &self.shards[usize::from(key.0[0]) % SHARDS];
        let mut shard = shard.lock().map_err(|_| ReplayError::Unavailable("lock poisoned".into()))?;
        shard.purge(now);
        if shard.live.contains_key(key) {
            return Ok(Spend::Replayed);
        }
        if shard.live.len() >= self.per_shard {
            return Err(ReplayError::Full(self.capacity));
        }
        shard.live.insert(*key, expires_at_ms);
        shard.by_expiry.push(Reverse((expires_at_ms, *key)));
        Ok(Spend::Fresh)
    }
}

/// One process: the record lives and dies with the broker, so it is never lost while anyone
/// could replay into it; the assertion's times are not needed.
impl ReplayStore for MemoryStore {
    async fn spend(
        &self,
        key: &ReplayKey,
        expires_at_ms: i64,
        _: &AssertionTimes,
    ) -> Result<Spend, ReplayError> {
        self.spend_now(key, expires_at_ms)
    }

    async fn readiness(&self) -> Result<Readiness, ReplayError> {
        Ok(Readiness::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, OffsetClock};
    use std::sync::Arc;

    const T: AssertionTimes = AssertionTimes { iat: None, nbf: None, exp: 0, lifetime_capped: true };

    #[tokio::test]
    async fn spends_once_and_forgets_after_expiry() {
        let clock = OffsetClock::new();
        let store = MemoryStore::new(100, clock.clone());
        let key = ReplayKey::for_jti("agent", "jti-1");
        let exp = clock.now_ms() + 10_000;
        assert_eq!(store.spend(&key, exp, &T).await.expect("ok"), Spend::Fresh);
        assert_eq!(store.spend(&key, exp, &T).await.expect("ok"), Spend::Replayed);
        clock.advance_secs(11);
        assert_eq!(store.spend(&key, exp + 20_000, &T).await.expect("ok"), Spend::Fresh);
    }

    /// An entry lives until its `expires_at_ms`, exclusive: that is the first millisecond its
    /// JWT is refused ([`crate::client_auth::Skew::refused_from_ms`]), so it is kept the
    /// millisecond before and forgotten at that one.
    #[test]
    fn purge_forgets_an_entry_at_its_expiry_not_before() {
        let mut shard = Shard::default();
        let key = ReplayKey::for_jti("agent", "jti-1");
        shard.live.insert(key, 5_000);
        shard.by_expiry.push(Reverse((5_000, key)));
        shard.purge(4_999);
        assert!(shard.live.contains_key(&key));
        shard.purge(5_000);
        assert!(!shard.live.contains_key(&key) && shard.by_expiry.is_empty());
    }

    #[tokio::test]
    async fn full_store_refuses_instead_of_evicting() {
        let clock = OffsetClock::new();
        let store = MemoryStore::new(SHARDS, clock.clone());
        let exp = clock.now_ms() + 60_000;
        let mut refused = 0;
        for i in 0..200 {
            match store.spend(&ReplayKey::for_jti("a", &i.to_string()), exp, &T).await {
                Ok(Spend::Fresh) => {}
                Err(ReplayError::Full(_)) => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(refused > 0, "a full store must refuse");
        clock.advance_secs(61);
        assert_eq!(
            store.spend(&ReplayKey::for_jti("a", "new"), exp + 120_000, &T).await.expect("ok"),
            Spend::Fresh
        );
    }

    #[tokio::test]
    async fn concurrent_spends_of_one_key_yield_one_fresh() {
        let clock: SharedClock = OffsetClock::new();
        let store = Arc::new(MemoryStore::new(1000, clock.clone()));
        let key = ReplayKey::for_jti("a", "race");
        let exp = clock.now_ms() + 60_000;
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.spend(&key, exp, &T).await })
            })
            .collect();
        let mut fresh = 0;
        for t in tasks {
            if t.await.expect("join").expect("ok") == Spend::Fresh {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1);
    }
}
