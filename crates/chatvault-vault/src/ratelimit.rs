//! In-memory fixed-window rate limits (per client IP and per account), on top of the durable guess
//! limit. Per process: with N processes the effective limit is up to N times higher.
//!
//! Memory is bounded: keys live in [`SHARDS`] independently locked maps of at most
//! [`MAX_KEYS`]` / SHARDS` entries each. A full shard drops the keys of past windows (at most once
//! per window, so no request pays for a scan twice); if it is still full, every key of the current
//! window being live, a **new** key is refused until the window ends (fail closed: a flood of
//! fresh addresses cannot grow the map or bypass the limit, at the price of refusing other new
//! clients that hash to the same shard for the rest of the minute).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;

const WINDOW_SECS: u64 = 60;
/// Number of independently locked shards.
pub const SHARDS: usize = 16;
/// Maximum number of keys tracked at once (over all shards).
pub const MAX_KEYS: usize = 100_000;
const MAX_PER_SHARD: usize = MAX_KEYS / SHARDS;

#[derive(Debug)]
struct Shard<K> {
    map: HashMap<K, (u64, u32)>,
    purged_window: u64,
}

/// Allows `per_minute` events per key per 60-second window; `0` disables the limit.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    hasher: RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter of `per_minute` events per key (0 = unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        purged_window: u64::MAX,
                    })
                })
                .collect(),
        }
    }

    /// Records one event for `key` at `now`; returns false if the key is over its limit (or is
    /// new while its shard is full of live keys).
    pub fn check(&self, key: &K, now: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let window = now / WINDOW_SECS;
        let shard = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let Ok(mut shard) = self.shards[shard].lock() else {
            return true;
        };
        if shard.map.len() >= MAX_PER_SHARD && shard.purged_window != window {
            shard.map.retain(|_, (w, _)| *w == window);
            shard.map.shrink_to(MAX_PER_SHARD);
            shard.purged_window = window;
        }
        if shard.map.len() >= MAX_PER_SHARD && !shard.map.contains_key(key) {
            return false;
        }
        let entry = shard.map.entry(key.clone()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Keys currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.map.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_over_limit_refused_then_next_window_allowed() {
        let rl = RateLimiter::new(2);
        assert!(rl.check(&"a", 60));
        assert!(rl.check(&"a", 61));
        assert!(!rl.check(&"a", 62));
        assert!(rl.check(&"b", 62));
        assert!(rl.check(&"a", 120));
    }

    #[test]
    fn check_zero_disables_limit() {
        let rl = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(rl.check(&1, 0));
        }
    }

    #[test]
    fn memory_bounded_under_a_flood_of_new_keys_and_freed_next_window() {
        let rl = RateLimiter::new(5);
        let mut refused = 0;
        for k in 0..(MAX_KEYS as u64 * 2) {
            if !rl.check(&k, 0) {
                refused += 1;
            }
        }
        assert!(rl.tracked() <= MAX_KEYS, "{}", rl.tracked());
        assert!(refused >= MAX_KEYS as u64, "{refused}");
        // A key already tracked keeps its own budget while its shard is full.
        let known = (0..MAX_KEYS as u64 * 2).find(|k| rl.check(k, 1)).unwrap();
        assert!(rl.check(&known, 2));
        // Next window: old keys are dropped when a shard fills up again, new keys get in.
        for k in 0..(MAX_KEYS as u64 / 2) {
            assert!(rl.check(&(k + 10_000_000), 60));
        }
        assert!(rl.tracked() <= MAX_KEYS);
        assert!(rl.check(&u64::MAX, 61));
    }
}
