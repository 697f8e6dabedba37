//! Live counters behind `.trackfs/stats`: cheap atomics, rendered as `name value` lines.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn incr(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down (requests in flight).
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn enter(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default, Debug)]
pub struct Stats {
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Counter,
    pub cache_bytes: Counter,
    pub bytes_fetched: Counter,
    pub bytes_served: Counter,
    pub reads: Counter,
    pub cdn_requests: Counter,
    pub in_flight: Gauge,
    pub resolves: Counter,
    pub token_renewals: Counter,
    pub retries: Counter,
    pub failovers: Counter,
    pub errors: Counter,
    pub head_hits: Counter,
}

impl Stats {
    /// `name value` per line: easy for people and for `awk`.
    pub fn render(&self, cache_bytes: u64, cache_budget: u64) -> String {
        let rows: [(&str, i128); 17] = [
            ("cache_hits", self.cache_hits.get() as i128),
            ("cache_misses", self.cache_misses.get() as i128),
            ("cache_evictions", self.cache_evictions.get() as i128),
            ("cache_bytes", cache_bytes as i128),
            ("cache_budget_bytes", cache_budget as i128),
            ("bytes_fetched", self.bytes_fetched.get() as i128),
            ("bytes_served", self.bytes_served.get() as i128),
            ("reads", self.reads.get() as i128),
            ("cdn_requests", self.cdn_requests.get() as i128),
            ("in_flight_requests", self.in_flight.get() as i128),
            ("resolves", self.resolves.get() as i128),
            ("token_renewals", self.token_renewals.get() as i128),
            ("retries", self.retries.get() as i128),
            ("failovers", self.failovers.get() as i128),
            ("errors", self.errors.get() as i128),
            ("head_hits", self.head_hits.get() as i128),
            ("version", 1),
        ];
        rows.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }
}
