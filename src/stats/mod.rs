//! I/O statistics: per-volume and per-controller operation counts, bytes and latency
//! histograms, and their rendering as Prometheus text.
//!
//! Promises to the data path: recording a request is a handful of relaxed atomic adds on
//! counters the connection already holds (an `Arc<IoStats>` per volume and per controller,
//! looked up once when the export is opened), with no allocation and no lock. Readers take
//! a [`IoSnapshot`]; counters are read one by one, so a snapshot taken under load may be a
//! few requests apart between fields, never torn within one.
//!
//! What is counted: `*_ops`, bytes and latency count requests that completed successfully;
//! a request that failed counts once in `errors` and nowhere else. A fast-zero request the
//! cache declines (`IoError::NotFast`) is a negotiated answer, not an error, and is not
//! counted at all. Latency is measured around the whole call into the cache, so a FUA write
//! includes its flush.
//!
//! Volume lifetime: the [`StatsRegistry`] keys volume stats by volume id and remembers which
//! [`VolumeHandle`] they were made for. When rendering, entries whose volume is no longer
//! live (deleted, or replaced by a new volume with the same id) are dropped, so a deleted
//! volume leaves the output and a recreated one starts from zero.

mod render;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::meta::VolumeHandle;
use crate::types::{ControllerId, PerController};

pub use render::{
    ControllerGauges, escape_label_value, render_controller_gauges, render_node_metrics,
};

/// Upper bounds (inclusive, in nanoseconds) of the finite latency buckets; one more bucket
/// past the last catches everything slower (`+Inf`).
pub const BUCKET_BOUNDS_NANOS: [u64; 17] = [
    25_000,
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
    2_500_000_000,
    5_000_000_000,
];

/// Number of buckets including `+Inf`.
pub const BUCKETS: usize = BUCKET_BOUNDS_NANOS.len() + 1;

/// The `le` label of each bucket, in seconds, written out once so rendering never formats
/// floats for them.
pub const BUCKET_LABELS: [&str; BUCKETS] = [
    "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// A latency histogram with fixed buckets: one atomic count per bucket (not cumulative) and
/// the sum of all recorded latencies in nanoseconds.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation: a binary search over a const array and two relaxed adds.
    pub fn record(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|index| self.buckets[index].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub buckets: [u64; BUCKETS],
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Every observation (the `_count` of the Prometheus histogram).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Observations at or below each bucket's bound (the `_bucket` series).
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut running = 0;
        self.buckets.map(|count| {
            running += count;
            running
        })
    }
}

/// Counters of one volume or one controller. Aligned to a cache line so two volumes' stats
/// never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct IoStats {
    read_ops: AtomicU64,
    write_ops: AtomicU64,
    flush_ops: AtomicU64,
    trim_ops: AtomicU64,
    write_zeroes_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    errors: AtomicU64,
    read_latency: LatencyHistogram,
    write_latency: LatencyHistogram,
    flush_latency: LatencyHistogram,
}

impl IoStats {
    pub fn record_read(&self, bytes: u64, latency: Duration) {
        self.read_ops.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.read_latency.record(latency);
    }

    pub fn record_write(&self, bytes: u64, latency: Duration) {
        self.write_ops.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.write_latency.record(latency);
    }

    pub fn record_flush(&self, latency: Duration) {
        self.flush_ops.fetch_add(1, Ordering::Relaxed);
        self.flush_latency.record(latency);
    }

    pub fn record_trim(&self) {
        self.trim_ops.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_write_zeroes(&self) {
        self.write_zeroes_ops.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> IoSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        IoSnapshot {
            read_ops: load(&self.read_ops),
            write_ops: load(&self.write_ops),
            flush_ops: load(&self.flush_ops),
            trim_ops: load(&self.trim_ops),
            write_zeroes_ops: load(&self.write_zeroes_ops),
            read_bytes: load(&self.read_bytes),
            write_bytes: load(&self.write_bytes),
            errors: load(&self.errors),
            read_latency: self.read_latency.snapshot(),
            write_latency: self.write_latency.snapshot(),
            flush_latency: self.flush_latency.snapshot(),
        }
    }
}

/// [`IoStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    pub read_ops: u64,
    pub write_ops: u64,
    pub flush_ops: u64,
    pub trim_ops: u64,
    pub write_zeroes_ops: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub errors: u64,
    pub read_latency: HistogramSnapshot,
    pub write_latency: HistogramSnapshot,
    pub flush_latency: HistogramSnapshot,
}

/// The stats a volume's connections share, and the volume they were made for.
struct VolumeEntry {
    handle: Weak<VolumeHandle>,
    stats: Arc<IoStats>,
}

impl VolumeEntry {
    fn is_for(&self, handle: &Arc<VolumeHandle>) -> bool {
        std::ptr::eq(self.handle.as_ptr(), Arc::as_ptr(handle))
    }
}

/// Every volume's and every controller's [`IoStats`]. The lock is taken when an export is
/// opened and when metrics are rendered, never per request.
pub struct StatsRegistry {
    volumes: Mutex<HashMap<u32, VolumeEntry>>,
    controllers: PerController<Arc<IoStats>>,
}

impl StatsRegistry {
    /// A registry for a node of `controllers` controllers.
    pub fn new(controllers: usize) -> StatsRegistry {
        StatsRegistry {
            volumes: Mutex::new(HashMap::new()),
            controllers: PerController::new(controllers, |_| Arc::default()),
        }
    }

    /// The stats of the live volume `handle`, created on first use. A volume that reuses a
    /// deleted volume's id gets fresh stats.
    pub fn volume(&self, handle: &Arc<VolumeHandle>) -> Arc<IoStats> {
        let mut volumes = self.volumes.lock();
        let entry = volumes.entry(handle.id.0).or_insert_with(|| VolumeEntry {
            handle: Arc::downgrade(handle),
            stats: Arc::default(),
        });
        if !entry.is_for(handle) {
            *entry = VolumeEntry {
                handle: Arc::downgrade(handle),
                stats: Arc::default(),
            };
        }
        entry.stats.clone()
    }

    /// The stats of controller `id`; `None` if the node has no such controller.
    pub fn controller(&self, id: ControllerId) -> Option<&Arc<IoStats>> {
        self.controllers.get(id)
    }

    pub fn controller_count(&self) -> usize {
        self.controllers.len()
    }

    /// A snapshot per live volume (in the order given; zeroes for a volume never opened),
    /// and forgets every volume not among them.
    pub fn volume_snapshots(&self, live: &[&Arc<VolumeHandle>]) -> Vec<IoSnapshot> {
        let mut volumes = self.volumes.lock();
        volumes.retain(|id, entry| {
            live.iter()
                .any(|handle| handle.id.0 == *id && entry.is_for(handle))
        });
        live.iter()
            .map(|handle| {
                volumes
                    .get(&handle.id.0)
                    .map_or_else(IoSnapshot::default, |entry| entry.stats.snapshot())
            })
            .collect()
    }

    /// How many volumes have stats (for tests of forgetting).
    pub fn tracked_volumes(&self) -> usize {
        self.volumes.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::meta::PoolUsage;
    use crate::types::VolumeId;

    pub(crate) fn handle(id: u32, name: &str) -> Arc<VolumeHandle> {
        let pool = PoolUsage::new("pool".into(), 1 << 30);
        Arc::new(VolumeHandle {
            family: 0,
            id: VolumeId(id),
            name: name.into(),
            size: AtomicU64::new(1 << 20),
            pool: pool.clone(),
            home_pool: pool,
            write_protected: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            ssd_enabled: AtomicBool::new(true),
            reads: Default::default(),
        })
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_nanos(0));
        histogram.record(Duration::from_micros(25));
        histogram.record(Duration::from_nanos(25_001));
        histogram.record(Duration::from_millis(1));
        histogram.record(Duration::from_secs(5));
        histogram.record(Duration::from_secs(6));
        histogram.record(Duration::MAX);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[0], 2);
        assert_eq!(snapshot.buckets[1], 1);
        assert_eq!(snapshot.buckets[5], 1);
        assert_eq!(snapshot.buckets[16], 1);
        assert_eq!(snapshot.buckets[17], 2);
        assert_eq!(snapshot.count(), 7);
        assert_eq!(*snapshot.cumulative().last().unwrap(), 7);
    }

    #[test]
    fn bucket_labels_match_bounds() {
        for (bound, label) in BUCKET_BOUNDS_NANOS.iter().zip(BUCKET_LABELS) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, *bound, "{label}");
        }
        assert_eq!(BUCKET_LABELS[BUCKETS - 1], "+Inf");
    }

    #[test]
    fn io_stats_count_ops_bytes_and_errors() {
        let stats = IoStats::default();
        stats.record_read(4096, Duration::from_micros(30));
        stats.record_write(8192, Duration::from_micros(300));
        stats.record_write(4096, Duration::from_micros(300));
        stats.record_flush(Duration::from_millis(2));
        stats.record_trim();
        stats.record_write_zeroes();
        stats.record_error();
        let snapshot = stats.snapshot();
        assert_eq!((snapshot.read_ops, snapshot.read_bytes), (1, 4096));
        assert_eq!((snapshot.write_ops, snapshot.write_bytes), (2, 12288));
        assert_eq!(snapshot.write_latency.count(), 2);
        assert_eq!(snapshot.write_latency.sum_nanos, 600_000);
        assert_eq!(snapshot.flush_ops, 1);
        assert_eq!(snapshot.trim_ops, 1);
        assert_eq!(snapshot.write_zeroes_ops, 1);
        assert_eq!(snapshot.errors, 1);
        assert_eq!(std::mem::align_of::<IoStats>(), 64);
    }

    #[test]
    fn registry_shares_stats_per_volume_and_forgets_deleted_ones() {
        let registry = StatsRegistry::new(3);
        let first = handle(1, "a");
        let second = handle(2, "b");
        registry
            .volume(&first)
            .record_read(4096, Duration::from_micros(1));
        registry
            .volume(&first)
            .record_read(4096, Duration::from_micros(1));
        let snapshots = registry.volume_snapshots(&[&first, &second]);
        assert_eq!(snapshots[0].read_ops, 2);
        assert_eq!(snapshots[1], IoSnapshot::default());
        assert_eq!(registry.tracked_volumes(), 1);

        // Volume 1 is deleted: the next render forgets it.
        registry.volume(&second).record_trim();
        let snapshots = registry.volume_snapshots(&[&second]);
        assert_eq!(snapshots[0].trim_ops, 1);
        assert_eq!(registry.tracked_volumes(), 1);

        // A new volume under an old id (another handle) starts from zero, even if a
        // connection to the old one still records.
        let old = registry.volume(&second);
        let replacement = handle(2, "b");
        let fresh = registry.volume(&replacement);
        old.record_trim();
        assert_eq!(fresh.snapshot(), IoSnapshot::default());
        assert_eq!(registry.volume_snapshots(&[&replacement])[0].trim_ops, 0);
    }

    #[test]
    fn controllers_are_a_fixed_set() {
        let registry = StatsRegistry::new(3);
        assert_eq!(registry.controller_count(), 3);
        let id = ControllerId::new(2, 3).unwrap();
        registry.controller(id).unwrap().record_error();
        assert_eq!(registry.controller(id).unwrap().snapshot().errors, 1);
        let beyond = ControllerId::new(4, 8).unwrap();
        assert!(registry.controller(beyond).is_none());
    }
}
