//! A latency histogram with fixed buckets, cheap enough for every event: one
//! relaxed atomic add per bucket, count and sum, no lock.
//!
//! Owns the bucket bounds, recording, snapshots and the arithmetic on them
//! (the difference of two snapshots, a quantile estimated from one) and the
//! Prometheus text of a histogram. Does not own when snapshots are taken or
//! what is shown from them (see `crate::stats`), nor which latencies are
//! recorded (the router records its calls).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds; one more bucket catches the rest.
/// From half a millisecond (a call served on this node) to ten seconds (past
/// any sane `ROUTE_TIMEOUT_MS`).
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS: usize = BOUNDS.len() + 1;

/// Latencies recorded so far, by bucket.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    /// The sum of every latency, in microseconds.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn record(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts as of now. Taken bucket by bucket while others record, so
    /// a latency recorded meanwhile may be in the buckets and not the sum:
    /// the figures are estimates anyway.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment (or between two: [`Snapshot::since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    buckets: [u64; BUCKETS],
    sum_micros: u64,
}

impl Snapshot {
    /// How many latencies.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated linearly within
    /// its bucket; `None` with nothing recorded. A quantile in the last,
    /// unbounded bucket reads as the largest bound.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the wanted latency, 1-based: at least the first.
        let rank = (q.clamp(0.0, 1.0) * count as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (i, &in_bucket) in self.buckets.iter().enumerate() {
            if in_bucket == 0 || ((below + in_bucket) as f64) < rank {
                below += in_bucket;
                continue;
            }
            let Some(&upper) = BOUNDS.get(i) else {
                return Some(BOUNDS[BOUNDS.len() - 1] * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
            let within = (rank - below as f64) / in_bucket as f64;
            return Some((lower + (upper - lower) * within) * 1000.0);
        }
        Some(BOUNDS[BOUNDS.len() - 1] * 1000.0)
    }

    /// Appends the Prometheus text of this histogram as `name`.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, in_bucket) in BOUNDS.iter().zip(self.buckets) {
            cumulative += in_bucket;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_fall_in_the_bucket_of_their_rank() {
        let histogram = Histogram::new();
        assert_eq!(histogram.snapshot().quantile_ms(0.5), None);
        // 98 fast calls (in the 1–2.5 ms bucket), 2 slow ones (0.5–1 s).
        for _ in 0..98 {
            histogram.record(Duration::from_micros(1800));
        }
        histogram.record(ms(700));
        histogram.record(ms(800));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 100);
        let p50 = snapshot.quantile_ms(0.5).unwrap();
        assert!((1.0..=2.5).contains(&p50), "{p50}");
        let p99 = snapshot.quantile_ms(0.99).unwrap();
        assert!((500.0..=1000.0).contains(&p99), "{p99}");
        // Interpolated: the 50th of 98 in one bucket is about half way.
        assert!((p50 - (1.0 + 1.5 * 50.0 / 98.0)).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn the_difference_of_snapshots_is_what_came_between() {
        let histogram = Histogram::new();
        histogram.record(ms(3000));
        let earlier = histogram.snapshot();
        histogram.record(ms(2));
        histogram.record(ms(2));
        let between = histogram.snapshot().since(&earlier);
        assert_eq!(between.count(), 2);
        assert_eq!(between.sum_micros, 4000);
        let p99 = between.quantile_ms(0.99).unwrap();
        assert!((1.0..=2.5).contains(&p99), "{p99}");
    }

    #[test]
    fn past_the_last_bound_reads_as_the_last_bound() {
        let histogram = Histogram::new();
        histogram.record(Duration::from_secs(60));
        assert_eq!(histogram.snapshot().quantile_ms(0.5), Some(10_000.0));
    }

    #[test]
    fn the_prometheus_text_is_cumulative() {
        let histogram = Histogram::new();
        histogram.record(ms(2));
        histogram.record(ms(20));
        let mut text = String::new();
        histogram.snapshot().render("x_seconds", "help", &mut text);
        assert!(text.contains("# TYPE x_seconds histogram\n"), "{text}");
        assert!(
            text.contains("x_seconds_bucket{le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.025\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_sum 0.022\n"), "{text}");
        assert!(text.contains("x_seconds_count 2\n"), "{text}");
    }
}
