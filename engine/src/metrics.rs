//! Lock-free fixed-bucket histograms, for the writer's group-commit batch sizes and commit
//! times (and, in the component, request latencies), exported in Prometheus' shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram over non-negative integer observations (nanoseconds, counts) with fixed upper
/// bounds. `observe` is a few relaxed atomic adds.
#[derive(Debug)]
pub struct Histogram {
    /// Inclusive upper bounds, ascending, in observation units.
    bounds: &'static [u64],
    /// One per bound, plus the overflow bucket.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
    /// What one observation unit is worth when exported (1e-9 for nanoseconds → seconds).
    scale: f64,
}

/// A histogram's values at one moment, Prometheus-style (cumulative counts per bound).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `le` bounds, scaled.
    pub bounds: Vec<f64>,
    /// Observations `<=` each bound.
    pub cumulative: Vec<u64>,
    pub count: u64,
    /// Sum of observations, scaled.
    pub sum: f64,
}

/// Latency bounds in nanoseconds: 50 µs to 5 s.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Batch size bounds (requests per group commit).
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

impl Histogram {
    pub fn new(bounds: &'static [u64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram observed in nanoseconds, exported in seconds.
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_NS, 1e-9)
    }

    pub fn observe(&self, value: u64) {
        let index = self.bounds.partition_point(|&b| b < value);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: std::time::Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self.buckets[..self.bounds.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds.iter().map(|&b| b as f64 * self.scale).collect(),
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
        }
    }
}

/// The writer's histograms since open.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterMetrics {
    /// Requests per group commit.
    pub batch_size: HistogramSnapshot,
    /// Time to make one batch durable (log append + fdatasync + redb commit, or the redb
    /// durable commit), in seconds.
    pub commit_seconds: HistogramSnapshot,
    /// Time of each checkpoint (the durable redb commit after which the write-ahead log's
    /// covered segments go, or eventual durability's deferred flush), in seconds. With the
    /// log, writes go on meanwhile.
    pub checkpoint_seconds: HistogramSnapshot,
    /// With the log: catch-up's redb commits (applying logged batches), in seconds.
    pub apply_seconds: HistogramSnapshot,
    /// With the log: how long a batch waited for room in a full overlay, in seconds (the
    /// back-pressure's last resort; empty when writers never waited).
    pub room_wait_seconds: HistogramSnapshot,
    /// With the log: the delay of each batch held back while the overlay was over half its
    /// bound, in seconds (the back-pressure; empty when it never was).
    pub hold_back_seconds: HistogramSnapshot,
    /// Bytes of the main file whose write-back was started in paced chunks, ahead of the
    /// checkpoints' fdatasync (`Options::writeback_chunk_bytes`).
    pub written_back_bytes: u64,
    /// Bytes of acknowledged writes not yet applied to the main file, and their bound.
    pub unapplied_bytes: u64,
    pub unapplied_limit_bytes: u64,
}

/// Counters of the writer's and catch-up's work, readable at any time.
#[derive(Debug)]
pub(crate) struct WriterCounters {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub largest_batch: AtomicU64,
    pub swept: AtomicU64,
    pub batch_size: Histogram,
    pub commit_time: Histogram,
    pub checkpoint_time: Histogram,
    /// Catch-up's redb commits (with the log).
    pub apply_time: Histogram,
    /// How long a batch waited for room in a full overlay (with the log).
    pub room_wait: Histogram,
    /// The delay of each batch held back by an overlay over half its bound (with the log).
    pub hold_back: Histogram,
    /// Bytes of the main file whose write-back was started in paced chunks (`crate::file`).
    pub written_back: Arc<AtomicU64>,
}

impl Default for WriterCounters {
    fn default() -> Self {
        WriterCounters {
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            swept: AtomicU64::new(0),
            batch_size: Histogram::new(crate::metrics::BATCH_BOUNDS, 1.0),
            commit_time: Histogram::latency(),
            checkpoint_time: Histogram::latency(),
            apply_time: Histogram::latency(),
            room_wait: Histogram::latency(),
            hold_back: Histogram::latency(),
            written_back: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new(&[1, 4, 16], 1.0);
        for v in [0, 1, 2, 4, 5, 100] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.bounds, vec![1.0, 4.0, 16.0]);
        assert_eq!(s.cumulative, vec![2, 4, 5]);
        assert_eq!((s.count, s.sum), (6, 112.0));
        let l = Histogram::latency();
        l.observe_duration(std::time::Duration::from_micros(75));
        let s = l.snapshot();
        assert_eq!((s.cumulative[0], s.cumulative[1]), (0, 1));
        assert!((s.sum - 75e-6).abs() < 1e-12);
    }
}
