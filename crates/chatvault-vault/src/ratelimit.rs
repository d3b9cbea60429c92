//! In-memory fixed-window rate limits (per client IP and per account), on top of the durable guess
//! limit. Per process: with N processes the effective limit is up to N times higher.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

const WINDOW_SECS: u64 = 60;
const MAX_KEYS: usize = 100_000;

/// Allows `per_minute` events per key per 60-second window; `0` disables the limit.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    windows: Mutex<HashMap<K, (u64, u32)>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter of `per_minute` events per key (0 = unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records one event for `key` at `now`; returns false if the key is over its limit.
    pub fn check(&self, key: &K, now: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let window = now / WINDOW_SECS;
        let Ok(mut map) = self.windows.lock() else {
            return true;
        };
        if map.len() >= MAX_KEYS {
            map.retain(|_, (w, _)| *w == window);
        }
        let entry = map.entry(key.clone()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
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
}
