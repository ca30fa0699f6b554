//! Measurements of the tier at the shipped models' sizes (run with `--ignored --nocapture`):
//! what `open` costs in time and memory, what a checkpoint writes.

use std::time::Instant;

use super::persist_tests::checkpoint_bytes;
use super::tests::{MIB, Rig, identity, offer_all};
use super::*;
use crate::io::IoRing;

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Gives freed heap back to the system, then resets `VmHWM` to the current RSS.
fn reset_peak() {
    // SAFETY: malloc_trim only releases free heap pages; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Bytes the backing file really occupies on disk.
fn allocated_bytes(rig: &Rig) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&rig.path).unwrap().blocks() * 512
}

fn timed_open(rig: &Rig, what: &str) -> Arc<SsdCache> {
    reset_peak();
    let (rss_before, _) = memory_mib();
    let started = Instant::now();
    let (cache, report) = rig.open(3);
    let elapsed = started.elapsed();
    let (rss, peak) = memory_mib();
    let geometry = cache.inner.media.geometry;
    println!(
        "{what}: open {elapsed:?} (restored {}, formatted {}); RSS +{:.1} MiB after open, peak +{:.1} MiB during it; index {} bytes; {} slots and {} pages per checkpoint copy per partition",
        report.restored,
        report.formatted,
        rss - rss_before,
        peak - rss_before,
        cache.stats().0.index_bytes,
        geometry.slots,
        geometry.checkpoint_pages
    );
    cache
}

fn timed_shutdown(rig: &Rig, cache: Arc<SsdCache>, what: &str) {
    let started = Instant::now();
    let bytes = checkpoint_bytes(&cache);
    println!(
        "{what}: a checkpoint of the 3 partitions wrote {bytes} bytes in {:?}",
        started.elapsed()
    );
    let disk_before = allocated_bytes(rig);
    let started = Instant::now();
    cache.shutdown();
    println!(
        "{what}: shutdown (checkpoint) {:?}; the file grew by {} bytes on disk",
        started.elapsed(),
        allocated_bytes(rig) - disk_before
    );
}

/// The dev model's cache SSD (75 GiB sparse, 3 partitions): empty, then with 1 GiB cached.
#[test]
#[ignore]
fn open_and_checkpoint_cost_on_the_dev_model() {
    let rig = Rig::new(75 << 30);
    let cache = timed_open(&rig, "new region");
    drop(cache);
    let cache = timed_open(&rig, "empty cache");
    // Something logged, nothing cached: a checkpoint of an empty cache.
    offer_all(&cache, 0, 0..1);
    cache.forget_range(0, 1);
    timed_shutdown(&rig, cache, "empty cache");
    let cache = timed_open(&rig, "empty cache, checkpointed");
    let blocks = (1u64 << 30) / PAGE as u64;
    let per_partition = blocks / 3;
    let started = Instant::now();
    for partition in 0..3u64 {
        let first = 1_000_000 * partition;
        offer_all(&cache, partition as usize, first..first + per_partition);
    }
    println!(
        "cached {} MiB in {:?}",
        cache.stats().0.cached_bytes / MIB,
        started.elapsed()
    );
    timed_shutdown(&rig, cache, "1 GiB cached");
    let cache = timed_open(&rig, "1 GiB cached");
    assert_eq!(cache.stats().0.cached_blocks, per_partition * 3);
}
/// Measures `open` on a full region (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn rebuild_time_of_full_regions() {
    for gib in [1u64, 8] {
        let rig = Rig::new(gib << 30);
        let (cache, _) = rig.open(2);
        let media = &cache.inner.media;
        let geometry = media.geometry;
        let mut ring = IoRing::new(64).unwrap();
        let mut next = vec![0u64; geometry.shards as usize];
        let full: Vec<u32> = (0..geometry.shards)
            .map(|shard| geometry.shard_range(shard).1)
            .collect();
        let mut entries = entries::Entries::with_marks(geometry, &full);
        entries.for_each_mut(|slot, entry| {
            let shard = geometry.shard_of_slot(slot);
            let at = &mut next[shard as usize];
            while geometry.shard_of_key(*at) != shard {
                *at += 1;
            }
            *at += 1;
            *entry = identity(*at - 1);
        });
        for partition in cache.inner.partitions.iter() {
            let mut source = persist::entries_source(media, &entries);
            partition
                .log
                .lock()
                .write_checkpoint(media, &mut ring, &full, &mut source)
                .unwrap();
        }
        drop(cache);
        let (cache, report) = rig.open(2);
        let stats = cache.stats().0;
        assert_eq!(report.restored, u64::from(geometry.slots) * 2);
        println!(
            "{gib} GiB, 2 partitions: {} blocks restored in {:?}; index {} bytes = {:.1} B per cached block",
            report.restored,
            report.elapsed,
            stats.index_bytes,
            stats.index_bytes as f64 / stats.cached_blocks as f64
        );
    }
}
