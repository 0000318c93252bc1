//! Key layout and the spend script.
//!
//! Spent keys are split into [`GROUPS`] groups by the first byte of their hash. Every key of a
//! group carries the group's hash tag, `{<prefix>g<N>:<k>}`, so the group's generation marker
//! and all its spent keys live in one Redis Cluster slot: the script that reads the marker
//! and sets the spent key touches one slot on one node and stays atomic. `k` is the first
//! counter that puts group `N` into the `N`-th of [`GROUPS`] equal slot ranges, so the groups
//! spread evenly over masters that own contiguous, equal slot ranges (what
//! `redis-cli --cluster create` makes), and a master's failure touches only its share.

use crate::replay::ReplayKey;

/// Marker groups: each has its own generation marker and hash slot.
pub const GROUPS: usize = 64;
const SLOTS: u16 = 16384;

/// The group of a spent key.
pub fn group(key: &ReplayKey) -> usize {
    usize::from(key.0[0]) % GROUPS
}

/// The group whose marker covers the assertion `(issuer, jti)`.
pub fn group_of(issuer: &str, jti: &str) -> usize {
    group(&ReplayKey::for_jti(issuer, jti))
}

/// The name of the spent key of `(issuer, jti)` under `prefix` (for operators and tests).
pub fn spent_key_name(prefix: &str, issuer: &str, jti: &str) -> String {
    let key = ReplayKey::for_jti(issuer, jti);
    Keys::new(prefix).spent(group(&key), &key)
}

/// The names of every group's generation marker under `prefix` (for operators and tests).
pub fn marker_key_names(prefix: &str) -> Vec<String> {
    let keys = Keys::new(prefix);
    keys.markers
}

/// CRC16/XMODEM, the checksum Redis Cluster uses for key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The Redis Cluster slot of `key`, hash tags included.
pub fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &b[open + 1..];
        rest.iter().position(|&c| c == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(b)) % SLOTS
}

/// The hash tag of every group for one key prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    tags: Vec<String>,
    markers: Vec<String>,
    slots: Vec<u16>,
}

impl Keys {
    /// `prefix` must hold no `{` or `}` (the settings check refuses them).
    pub fn new(prefix: &str) -> Keys {
        let width = SLOTS / GROUPS as u16;
        let (tags, slots): (Vec<String>, Vec<u16>) = (0..GROUPS)
            .map(|n| {
                let lo = n as u16 * width;
                (0u32..)
                    .map(|k| format!("{{{prefix}g{n}:{k}}}"))
                    .map(|tag| {
                        let slot = key_slot(&tag);
                        (tag, slot)
                    })
                    .find(|(_, slot)| (lo..lo + width).contains(slot))
                    .unwrap_or_else(|| (format!("{{{prefix}g{n}}}"), 0))
            })
            .unzip();
        let markers = tags.iter().map(|t| format!("{t}gen")).collect();
        Keys { tags, markers, slots }
    }

    pub fn marker(&self, group: usize) -> &str {
        &self.markers[group]
    }

    pub fn spent(&self, group: usize, key: &ReplayKey) -> String {
        format!("{}jti:{}", self.tags[group], key.hex())
    }

    pub fn slot(&self, group: usize) -> u16 {
        self.slots[group]
    }
}

/// The spend, atomic on one node: read the group's generation marker (creating it, with the
/// broker's time, when it is missing: the store lost everything it held for this group), then
/// `SET spent 1 NX PX ttl`. Without a spent key (`/readyz`), only the marker part runs.
pub const SPEND_SCRIPT: &str = r"
-- KEYS[1]: the group's generation marker; KEYS[2] (absent when probing): the spent key.
-- ARGV[1]: now (Unix ms, broker clock); ARGV[2]: the spent key's TTL (ms).
-- Returns {1 if KEYS[2] was spent now, else 0; the marker (creation time, ms); 1 if created now}
local created = 0
local gen = redis.call('GET', KEYS[1])
if not gen then
  gen = ARGV[1]
  redis.call('SET', KEYS[1], gen)
  created = 1
end
if KEYS[2] and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return {1, gen, created}
end
return {0, gen, created}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // CLUSTER KEYSLOT values from Redis 7.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
    }

    /// Spent keys spread over every group, about evenly: a group lost (a Cluster master
    /// wiped or failed over) then closes only its share of assertions.
    #[test]
    fn spent_keys_spread_over_every_group() {
        let mut per_group = [0usize; GROUPS];
        for i in 0..6400 {
            let g = group_of("agent", &format!("jti-{i}"));
            assert_eq!(g, group(&ReplayKey::for_jti("agent", &format!("jti-{i}"))));
            per_group[g] += 1;
        }
        // 100 expected per group; a fair hash stays well inside 50..=150.
        assert!(per_group.iter().all(|&n| (50..=150).contains(&n)), "{per_group:?}");
    }

    #[test]
    fn every_group_gets_its_own_slot_range() {
        let keys = Keys::new("agent-sts:");
        let width = SLOTS / GROUPS as u16;
        for g in 0..GROUPS {
            let k = ReplayKey::for_jti("a", &g.to_string());
            assert_eq!(key_slot(keys.marker(g)), keys.slot(g));
            assert_eq!(key_slot(&keys.spent(g, &k)), keys.slot(g));
            assert_eq!(keys.slot(g) / width, g as u16);
        }
    }
}
