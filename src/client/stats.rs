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
    /// For the few values that are a moment, not a count (`catalogue_confirmed`).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
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
    /// The disk tier (`readpath::disk`), counted per stored 256 KiB piece.
    pub disk_hits: Counter,
    pub disk_misses: Counter,
    pub disk_bytes_read: Counter,
    pub disk_bytes_written: Counter,
    pub disk_evictions: Counter,
    pub disk_checksum_failures: Counter,
    /// Pieces passed on unstored because the disk did not keep up (or hung).
    pub disk_pieces_skipped: Counter,
    /// Reads of stored pieces given up on because the disk did not answer in time.
    pub disk_reads_timed_out: Counter,
    /// Library refreshes (`catalogue::refresh`) done, and those that could not reach the origin.
    pub refreshes: Counter,
    pub refresh_failures: Counter,
    /// Conditional requests answered `304 Not Modified`.
    pub not_modified: Counter,
    pub albums_added: Counter,
    pub albums_removed: Counter,
    /// When the catalogue the mount shows was last confirmed by the origin, or saved when
    /// the mount started from its snapshot (Unix seconds; 0: never).
    pub catalogue_confirmed: Counter,
}

impl Stats {
    /// `name value` per line: easy for people and for `awk`.
    pub fn render(&self, cache_bytes: u64, cache_budget: u64) -> String {
        let confirmed = self.catalogue_confirmed.get();
        let catalogue_age = match confirmed {
            0 => -1,
            at => unix_now().saturating_sub(at) as i128,
        };
        let rows: [(&str, i128); 31] = [
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
            ("disk_hits", self.disk_hits.get() as i128),
            ("disk_misses", self.disk_misses.get() as i128),
            ("disk_bytes_read", self.disk_bytes_read.get() as i128),
            ("disk_bytes_written", self.disk_bytes_written.get() as i128),
            ("disk_evictions", self.disk_evictions.get() as i128),
            (
                "disk_checksum_failures",
                self.disk_checksum_failures.get() as i128,
            ),
            (
                "disk_pieces_skipped",
                self.disk_pieces_skipped.get() as i128,
            ),
            (
                "disk_reads_timed_out",
                self.disk_reads_timed_out.get() as i128,
            ),
            ("refreshes", self.refreshes.get() as i128),
            ("refresh_failures", self.refresh_failures.get() as i128),
            ("not_modified", self.not_modified.get() as i128),
            ("albums_added", self.albums_added.get() as i128),
            ("albums_removed", self.albums_removed.get() as i128),
            ("snapshot_age_seconds", catalogue_age),
            ("version", 1),
        ];
        rows.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }
}

/// Seconds since 1970, for ages shown in stats.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `trackfs stats` prints: the lines of [`Stats::render`] as a table people can read.
/// It lives next to `render` so the two cannot disagree on a counter's name.
pub fn table(rendered: &str) -> String {
    let value = |name: &str| -> u64 {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    };
    let (hits, misses) = (value("cache_hits"), value("cache_misses"));
    let hit_rate = match hits + misses {
        0 => 0.0,
        all => 100.0 * hits as f64 / all as f64,
    };
    let size = crate::units::format_size;
    let used = format!(
        "{} of {}",
        size(value("cache_bytes")),
        size(value("cache_budget_bytes"))
    );
    let mut rows = vec![
        ("cache hit rate".to_string(), format!("{hit_rate:.1} %")),
        ("cache used".to_string(), used),
        ("fetched from CDN".to_string(), size(value("bytes_fetched"))),
        (
            "served to programs".to_string(),
            size(value("bytes_served")),
        ),
    ];
    for name in [
        "cdn_requests",
        "in_flight_requests",
        "resolves",
        "token_renewals",
        "retries",
        "failovers",
        "errors",
        "cache_evictions",
        "disk_hits",
        "disk_misses",
        "disk_evictions",
        "disk_checksum_failures",
        "disk_pieces_skipped",
        "disk_reads_timed_out",
        "refreshes",
        "refresh_failures",
        "not_modified",
        "albums_added",
        "albums_removed",
    ] {
        rows.push((name.replace('_', " "), value(name).to_string()));
    }
    // -1 (never confirmed) does not parse as a count: shown as such.
    let age = rendered
        .lines()
        .find_map(|l| l.strip_prefix("snapshot_age_seconds "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or("never confirmed".to_string(), |s| format!("{s} s"));
    rows.push(("snapshot age".to_string(), age));
    rows.iter()
        .map(|(name, value)| format!("{name:<22} {value:>14}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_every_counter_it_shows_from_render() {
        let stats = Stats::default();
        stats.cache_hits.add(3);
        stats.cache_misses.incr();
        stats.bytes_fetched.add(3 << 20);
        for (i, counter) in [
            &stats.cdn_requests,
            &stats.resolves,
            &stats.token_renewals,
            &stats.retries,
            &stats.failovers,
            &stats.errors,
            &stats.cache_evictions,
        ]
        .into_iter()
        .enumerate()
        {
            counter.add(101 + i as u64);
        }
        let _busy = stats.in_flight.enter();
        let table = table(&stats.render(1 << 20, 4 << 20));
        assert!(table.contains("75.0 %"), "{table}");
        assert!(table.contains("1.0 MiB of 4.0 MiB"), "{table}");
        assert!(table.contains("3.0 MiB"), "{table}");
        for (row, value) in [
            ("cdn requests", 101),
            ("errors", 106),
            ("cache evictions", 107),
        ] {
            let line = table.lines().find(|l| l.starts_with(row)).expect(row);
            assert!(line.ends_with(&format!(" {value}")), "{line}");
        }
        let line = table.lines().find(|l| l.starts_with("in flight")).unwrap();
        assert!(line.ends_with(" 1"), "{line}");
    }
}
