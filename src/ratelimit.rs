//! Per-agent rate limits (policy `rate_limit = { per_second, burst }`), by the generic cell
//! rate algorithm: each agent has a theoretical arrival time (TAT); a request is allowed
//! when `max(TAT, now) + interval - now <= interval * burst`, and then moves the TAT one
//! interval on. With Redis it is one Lua script, one round trip, on one key per agent, with
//! Redis's own clock (so every broker instance shares one budget and one time); the key
//! carries a hash tag, so it stays a single-slot script on Redis Cluster. With the memory
//! backend it is the same arithmetic in this process.
//!
//! The broker asks only after the request's assertion (or trusted token) has passed every
//! check, signature and replay included: a forged or replayed request never spends an
//! agent's budget.

use crate::clock::SharedClock;
use crate::policy::RateLimit;
use crate::replay::{AnyReplayStore, ReplayError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `KEYS[1]`: the agent's TAT (ms, Redis time); `ARGV[1]`: the interval in ms (may be
/// fractional); `ARGV[2]`: the burst. Returns `{1, 0}` allowed or `{0, retry_after_ms}`.
const GCRA: &str = r#"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused; the earliest retry, in milliseconds.
    Limited {
        retry_after_ms: u64,
    },
}

pub struct RateLimiter {
    store: Arc<AnyReplayStore>,
    /// Memory backend: agent id ▶ TAT (ms).
    memory: Mutex<HashMap<String, f64>>,
    clock: SharedClock,
}

fn interval_ms(limit: RateLimit) -> f64 {
    1000.0 / limit.per_second
}

impl RateLimiter {
    pub fn new(store: Arc<AnyReplayStore>, clock: SharedClock) -> RateLimiter {
        RateLimiter { store, memory: Mutex::new(HashMap::new()), clock }
    }

    /// Take one token from `agent`'s budget, if there is one.
    pub async fn check(&self, agent: &str, limit: RateLimit) -> Result<Verdict, ReplayError> {
        let interval = interval_ms(limit);
        match &*self.store {
            AnyReplayStore::Redis(r) => {
                use sha2::{Digest, Sha256};
                let id = hex::encode(&Sha256::digest(agent.as_bytes())[..16]);
                let key = format!("{}rl:{{{id}}}", r.prefix());
                // EVAL (not EVALSHA): one round trip whatever the server's script cache holds.
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(GCRA).arg(1).arg(&key).arg(interval).arg(limit.burst);
                let (allowed, retry) = match r.command(&key, cmd).await? {
                    redis::Value::Array(v) => match v.as_slice() {
                        [redis::Value::Int(a), redis::Value::Int(b)] => (*a, *b),
                        _ => return Err(ReplayError::Unavailable("unexpected rate limit reply".into())),
                    },
                    _ => return Err(ReplayError::Unavailable("unexpected rate limit reply".into())),
                };
                Ok(if allowed == 1 {
                    Verdict::Allowed
                } else {
                    Verdict::Limited { retry_after_ms: u64::try_from(retry).unwrap_or(1).max(1) }
                })
            }
            AnyReplayStore::Memory(_) => {
                let now = self.clock.now_ms() as f64;
                let mut m =
                    self.memory.lock().map_err(|_| ReplayError::Unavailable("lock poisoned".into()))?;
                let tat = m.get(agent).copied().unwrap_or(now).max(now);
                let new_tat = tat + interval;
                let allow_at = new_tat - interval * f64::from(limit.burst);
                if allow_at > now {
                    return Ok(Verdict::Limited { retry_after_ms: (allow_at - now).ceil().max(1.0) as u64 });
                }
                m.insert(agent.to_string(), new_tat);
                Ok(Verdict::Allowed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;
    use crate::replay::MemoryStore;

    #[tokio::test]
    async fn gcra_allows_the_burst_then_the_rate() {
        let clock = OffsetClock::new();
        let store = Arc::new(AnyReplayStore::Memory(MemoryStore::new(10, clock.clone())));
        let rl = RateLimiter::new(store, clock.clone());
        let limit = RateLimit { per_second: 2.0, burst: 3 };
        for _ in 0..3 {
            assert_eq!(rl.check("a", limit).await.expect("ok"), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after_ms } = rl.check("a", limit).await.expect("ok") else {
            panic!("the fourth at once is over the burst");
        };
        assert!((1..=500).contains(&retry_after_ms), "{retry_after_ms}");
        assert_eq!(rl.check("b", limit).await.expect("ok"), Verdict::Allowed, "budgets are per agent");
        clock.advance_secs(1);
        assert_eq!(rl.check("a", limit).await.expect("ok"), Verdict::Allowed, "two more a second later");
        assert_eq!(rl.check("a", limit).await.expect("ok"), Verdict::Allowed);
        assert!(matches!(rl.check("a", limit).await.expect("ok"), Verdict::Limited { .. }));
    }
}
