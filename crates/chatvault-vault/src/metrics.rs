//! Hand-written Prometheus counters, rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// All metrics of one vault process.
#[derive(Default, Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// KE2s answered, for registered and unknown accounts alike: `/metrics` is public, and
    /// separate counts would tell anyone watching a quiet vault whether the account a token
    /// holder just probed has a record (PROTOCOL.md §10).
    pub recover_starts: Counter,
    /// Successful recoveries (valid KE3).
    pub recoveries_succeeded: Counter,
    /// Failed KE3s.
    pub ke3_failed: Counter,
    /// Records destroyed after too many guesses.
    pub records_destroyed: Counter,
    /// Records registered (including password changes).
    pub records_registered: Counter,
    /// Requests refused by the in-memory rate limits.
    pub rate_limited: Counter,
    /// Database pings made by `/healthz` (at most one per second, however often it is asked).
    pub health_pings: Counter,
    /// Rollback commitments stored (PROTOCOL.md §9.1).
    pub commitments_stored: Counter,
    /// Rollback commitment updates refused because the stored sequence number was not lower.
    pub commitments_stale: Counter,
}

impl Metrics {
    /// Counts one answered request by route template and status.
    pub fn observe(&self, route: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route.to_owned(), status)).or_insert(0) += 1;
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP chatvault_vault_http_requests_total HTTP requests by route and status.\n",
        );
        out.push_str("# TYPE chatvault_vault_http_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "chatvault_vault_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        for (name, help, c) in [
            (
                "recover_starts",
                "KE2 answers (registered and unknown accounts together).",
                &self.recover_starts,
            ),
            (
                "recoveries_succeeded",
                "Successful recoveries (valid KE3).",
                &self.recoveries_succeeded,
            ),
            (
                "ke3_failed",
                "KE3 messages that failed verification.",
                &self.ke3_failed,
            ),
            (
                "records_destroyed",
                "Records destroyed after too many wrong guesses.",
                &self.records_destroyed,
            ),
            (
                "records_registered",
                "Records registered or replaced.",
                &self.records_registered,
            ),
            (
                "rate_limited",
                "Requests refused by in-memory rate limits.",
                &self.rate_limited,
            ),
            (
                "health_pings",
                "Database pings by /healthz (at most one per second).",
                &self.health_pings,
            ),
            (
                "commitments_stored",
                "Rollback commitments stored.",
                &self.commitments_stored,
            ),
            (
                "commitments_stale",
                "Rollback commitment updates refused (sequence number not higher).",
                &self.commitments_stale,
            ),
        ] {
            let _ = writeln!(out, "# HELP chatvault_vault_{name}_total {help}");
            let _ = writeln!(out, "# TYPE chatvault_vault_{name}_total counter");
            let _ = writeln!(out, "chatvault_vault_{name}_total {}", c.get());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_routes_and_counters() {
        let m = Metrics::default();
        m.observe("/healthz", 200);
        m.observe("/healthz", 200);
        m.recover_starts.add(3);
        let text = m.render();
        assert!(
            text.contains(
                "chatvault_vault_http_requests_total{route=\"/healthz\",status=\"200\"} 2"
            )
        );
        assert!(text.contains("chatvault_vault_recover_starts_total 3"));
    }
}
