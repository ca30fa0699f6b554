//! Tests of the SSD tier on sparse files in a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::format::{PAGE, Record};
use super::*;
use crate::io::{AlignedBuf, Device, FaultEffect, FaultOp, FaultPlane, FaultSpec, FaultTrigger};

pub(super) const MIB: u64 = 1 << 20;
pub(super) const DRAIN: Duration = Duration::from_secs(30);
const FAST: u64 = 1 << 30;

pub(super) struct Rig {
    _dir: tempfile::TempDir,
    pub(super) path: PathBuf,
    size: u64,
    failures: Arc<Mutex<Vec<String>>>,
    plane: FaultPlane,
}

impl Rig {
    pub(super) fn new(size: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssd0.img");
        Rig {
            _dir: dir,
            path,
            size,
            failures: Arc::new(Mutex::new(Vec::new())),
            plane: FaultPlane::new(),
        }
    }

    fn device(&self) -> Arc<Device> {
        let device = Device::open(&self.path, Some(self.size), None).unwrap();
        let faults = self.plane.attach("ssd0", &self.path, 0).unwrap();
        Arc::new(device.with_faults(faults))
    }

    pub(super) fn open_with(&self, partitions: usize, rate: u64) -> (Arc<SsdCache>, OpenReport) {
        let failures = self.failures.clone();
        SsdCache::open(
            CacheRegion {
                device: self.device(),
                offset: 0,
                len: self.size,
            },
            SsdCacheSettings {
                partitions,
                write_bytes_per_sec: rate,
                on_failure: Box::new(move |message| failures.lock().push(message)),
            },
        )
        .unwrap()
    }

    pub(super) fn open(&self, partitions: usize) -> (Arc<SsdCache>, OpenReport) {
        self.open_with(partitions, FAST)
    }

    fn inject(&self, op: FaultOp) {
        self.plane
            .inject(FaultSpec {
                device: "ssd0".to_string(),
                op,
                effect: FaultEffect::Eio,
                trigger: FaultTrigger::Nth(1),
                seed: 1,
            })
            .unwrap();
    }

    /// Overwrites `len` bytes at `offset` of the backing file (behind the cache's back).
    pub(super) fn scribble(&self, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        file.write_all_at(bytes, offset).unwrap();
        file.sync_all().unwrap();
    }
}

/// The bytes of physical block `phys` in these tests.
pub(super) fn block(phys: u64) -> AlignedBuf {
    let mut buf = AlignedBuf::new(PAGE);
    for (index, word) in buf.chunks_exact_mut(8).enumerate() {
        let value = phys.wrapping_mul(0x0100_0000_01B3) ^ (index as u64).wrapping_mul(0x9E37);
        word.copy_from_slice(&value.to_le_bytes());
    }
    buf
}

pub(super) fn identity(phys: u64) -> BlockIdentity {
    BlockIdentity {
        phys,
        family: 7,
        lba: phys * 2,
        generation: 3,
        checksum: phys ^ 0xABCD,
    }
}

pub(super) fn offer_all(cache: &SsdCache, partition: usize, keys: impl Iterator<Item = u64>) {
    for phys in keys {
        // An offer may meet the writer on the staging lock; a test wants every block in.
        let deadline = Instant::now() + DRAIN;
        while !cache.offer(partition, identity(phys), &block(phys)) {
            assert!(Instant::now() < deadline, "offer {phys}");
            std::thread::yield_now();
        }
    }
    assert!(cache.drain(DRAIN), "staging drains");
}

/// Reads `phys` through `partition` with the real verification.
pub(super) fn read(cache: &SsdCache, partition: usize, phys: u64) -> SsdRead {
    let expected = block(phys);
    let mut buf = AlignedBuf::new(PAGE);
    let outcome = crate::io::with_thread_ring(|ring| {
        cache.read(ring, partition, phys, &mut buf, &|bytes| {
            bytes == &expected[..]
        })
    });
    if outcome == SsdRead::Hit {
        assert_eq!(&buf[..], &expected[..], "a hit returns the block's bytes");
    }
    outcome
}

pub(super) fn read_with(
    cache: &SsdCache,
    partition: usize,
    phys: u64,
    verify: &dyn Fn(&[u8]) -> bool,
) -> SsdRead {
    let mut buf = AlignedBuf::new(PAGE);
    crate::io::with_thread_ring(|ring| cache.read(ring, partition, phys, &mut buf, verify))
}

/// Device byte offset of the slot holding `phys` in `partition`.
pub(super) fn slot_offset(cache: &SsdCache, partition: usize, phys: u64) -> Option<u64> {
    let inner = &cache.inner;
    let slot = inner.partitions[partition].shard_for(phys).slot_of(phys)?;
    Some(inner.media.base + inner.media.geometry.slot_offset(partition, slot))
}

#[test]
fn a_block_offered_reads_back_after_the_writer_drains() {
    let rig = Rig::new(8 * MIB);
    let (cache, report) = rig.open(2);
    assert!(report.formatted);
    offer_all(&cache, 0, 1000..1100);
    for phys in 1000..1100 {
        assert_eq!(read(&cache, 0, phys), SsdRead::Hit, "phys {phys}");
    }
    assert_eq!(read(&cache, 0, 5), SsdRead::Miss);
    assert_eq!(
        read(&cache, 1, 1000),
        SsdRead::Miss,
        "partition 1 holds nothing"
    );
    let (total, parts) = cache.stats();
    assert_eq!(total.admissions, 100);
    assert_eq!(total.cached_blocks, 100);
    assert_eq!(total.hits, 100);
    assert_eq!(parts[0].cached_blocks, 100);
    assert_eq!(parts[1].cached_blocks, 0);
    assert_eq!(total.bytes_written, 100 * PAGE as u64);
    assert!(total.index_bytes > 0 && !total.failed);
    cache.shutdown();
    cache.shutdown();
}

#[test]
fn a_rejected_verification_is_a_counted_mismatch_and_drops_the_entry() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(1);
    offer_all(&cache, 0, 10..12);
    assert_eq!(read_with(&cache, 0, 10, &|_| false), SsdRead::Mismatch);
    assert_eq!(cache.stats().0.mismatches, 1);
    assert_eq!(read_with(&cache, 0, 10, &|_| true), SsdRead::Miss, "gone");
    assert_eq!(read(&cache, 0, 11), SsdRead::Hit);
    assert_eq!(cache.stats().0.cached_blocks, 1);
}

#[test]
fn a_bit_flipped_on_the_ssd_is_a_mismatch_never_a_hit() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(1);
    offer_all(&cache, 0, 20..30);
    let offset = slot_offset(&cache, 0, 25).unwrap();
    let mut bytes = block(25)[..16].to_vec();
    bytes[3] ^= 0x10;
    rig.scribble(offset + 100, &bytes);
    assert_eq!(read(&cache, 0, 25), SsdRead::Mismatch);
    assert_eq!(read(&cache, 0, 25), SsdRead::Miss);
    assert_eq!(read(&cache, 0, 24), SsdRead::Hit);
    assert_eq!(cache.stats().0.mismatches, 1);
}

#[test]
fn a_clean_shutdown_keeps_every_block_across_a_restart() {
    let rig = Rig::new(8 * MIB);
    let (cache, _) = rig.open(2);
    offer_all(&cache, 0, 0..300);
    offer_all(&cache, 1, 5000..5200);
    cache.shutdown();
    drop(cache);
    let (cache, report) = rig.open(2);
    assert!(!report.formatted);
    assert_eq!((report.restored, report.dropped), (500, 0));
    for phys in 0..300 {
        assert_eq!(read(&cache, 0, phys), SsdRead::Hit, "phys {phys}");
    }
    for phys in 5000..5200 {
        assert_eq!(read(&cache, 1, phys), SsdRead::Hit, "phys {phys}");
    }
}

#[test]
fn a_kill_keeps_every_durable_block_and_forgotten_ones_stay_forgotten() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(1);
    // A small cache: evictions and several checkpoints happen on the way.
    let keys = 0..3000u64;
    for chunk in keys.clone().collect::<Vec<_>>().chunks(500) {
        offer_all(&cache, 0, chunk.iter().copied());
    }
    let recent = (2900..3000).filter(|&phys| slot_offset(&cache, 0, phys).is_some());
    assert!(recent.count() > 50, "the last offers are cached");
    cache.forget_range(2900, 2950);
    // A range far larger than the cache is scanned, not probed key by key.
    cache.forget_range(2960, 1 << 40);
    let cached: Vec<u64> = keys
        .clone()
        .filter(|&phys| slot_offset(&cache, 0, phys).is_some())
        .collect();
    assert!(cached.len() > 100, "the cache is full: {}", cached.len());
    assert!(cache.stats().0.evictions > 0);
    drop(cache); // no shutdown: no final checkpoint
    let (cache, report) = rig.open(1);
    assert!(!report.formatted);
    assert_eq!(report.restored, cached.len() as u64);
    for &phys in &cached {
        assert_eq!(read(&cache, 0, phys), SsdRead::Hit, "phys {phys}");
    }
    for phys in (2900..2950).chain(2960..3000) {
        assert_eq!(
            read_with(&cache, 0, phys, &|_| true),
            SsdRead::Miss,
            "forgotten {phys}"
        );
    }
    for phys in keys {
        assert_ne!(read(&cache, 0, phys), SsdRead::Mismatch, "phys {phys}");
    }
}

#[test]
fn a_garbage_log_page_or_checkpoint_drops_entries_without_wrong_data() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(1);
    offer_all(&cache, 0, 0..100);
    let geometry = cache.inner.media.geometry;
    drop(cache);
    // The log's first page holds the first batch's records.
    let garbage: Vec<u8> = (0..PAGE).map(|i| (i * 7 + 3) as u8).collect();
    rig.scribble(geometry.log_offset(0, 0), &garbage);
    let (cache, report) = rig.open(1);
    assert!(report.restored < 100, "entries were dropped: {report:?}");
    for phys in 0..100 {
        assert_ne!(read(&cache, 0, phys), SsdRead::Mismatch, "phys {phys}");
    }
    offer_all(&cache, 0, 200..220);
    cache.shutdown();
    drop(cache);
    // Two clean shutdowns: both checkpoint copies carry entries.
    let (cache, _) = rig.open(1);
    offer_all(&cache, 0, 220..230);
    cache.shutdown();
    drop(cache);
    let (cache, report) = rig.open(1);
    assert_eq!(report.restored, 30);
    let epoch = cache.inner.partitions[0].log.lock().epoch;
    assert!(epoch > 1);
    drop(cache);
    // Garbage over every entry page of a copy (a copy writes only those below its marks).
    let entry_pages = (geometry.checkpoint_pages - 1) as usize;
    let damage = |copy| {
        let garbage = garbage.repeat(entry_pages);
        rig.scribble(geometry.checkpoint_offset(0, copy, 1), &garbage);
    };
    // The newest copy damaged: the older copy and its log (intact) are used.
    damage(epoch % 2);
    let (cache, report) = rig.open(1);
    assert_eq!(report.restored, 30, "the older copy and its log");
    for phys in 200..230 {
        assert_eq!(read(&cache, 0, phys), SsdRead::Hit);
    }
    drop(cache);
    // Both copies damaged: nothing is trusted.
    damage((epoch + 1) % 2);
    let (cache, report) = rig.open(1);
    assert_eq!(report.restored, 0, "a damaged checkpoint is not trusted");
    for phys in (0..100).chain(200..230) {
        assert_eq!(read_with(&cache, 0, phys, &|_| true), SsdRead::Miss);
    }
    drop(cache);
    rig.scribble(0, &garbage);
    let (_cache, report) = rig.open(1);
    assert!(report.formatted, "a damaged header formats");
}

#[test]
fn a_read_error_fails_the_tier_once() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(2);
    offer_all(&cache, 0, 0..10);
    rig.inject(FaultOp::Read);
    assert_eq!(read(&cache, 0, 3), SsdRead::Miss);
    assert_eq!(read(&cache, 0, 4), SsdRead::Miss);
    assert!(!cache.offer(0, identity(50), &block(50)));
    assert!(cache.stats().0.failed);
    cache.shutdown();
    let failures = rig.failures.lock();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("ssd0") && failures[0].contains("reading a cached block"));
    assert!(failures[0].contains("replace the SSD"), "{}", failures[0]);
}

#[test]
fn a_write_error_fails_the_tier_once() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(2);
    rig.inject(FaultOp::Write);
    for phys in 0..10 {
        cache.offer(1, identity(phys), &block(phys));
    }
    let deadline = Instant::now() + DRAIN;
    while !cache.stats().0.failed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cache.stats().0.failed);
    assert!(!cache.offer(1, identity(50), &block(50)));
    for phys in 0..10 {
        assert_eq!(read_with(&cache, 1, phys, &|_| true), SsdRead::Miss);
    }
    drop(cache);
    assert_eq!(rig.failures.lock().len(), 1);
}

#[test]
fn offers_far_beyond_the_write_budget_are_dropped_and_counted() {
    let rig = Rig::new(32 * MIB);
    let (cache, _) = rig.open_with(1, 64 * 1024);
    let offered = 4000u64;
    let taken = (0..offered)
        .filter(|&phys| cache.offer(0, identity(phys), &block(phys)))
        .count() as u64;
    cache.shutdown();
    let stats = cache.stats().0;
    assert!(taken < offered, "some offers were dropped");
    assert_eq!(stats.throttled, offered - taken);
    assert!(stats.admissions < offered);
}

#[test]
fn an_offline_partition_is_adopted_by_the_others_until_it_is_back() {
    let rig = Rig::new(8 * MIB);
    let (cache, _) = rig.open(2);
    offer_all(&cache, 1, 40..45);
    assert_eq!(read(&cache, 0, 42), SsdRead::Miss);
    cache.set_partition_online(1, false);
    assert_eq!(read(&cache, 0, 42), SsdRead::Hit, "adopted");
    assert!(
        !cache.offer(1, identity(60), &block(60)),
        "offline takes no offers"
    );
    cache.set_partition_online(1, true);
    assert_eq!(read(&cache, 0, 42), SsdRead::Miss);
    assert_eq!(read(&cache, 1, 42), SsdRead::Hit, "nothing was dropped");
}

#[test]
fn readers_racing_the_writer_never_see_unverified_bytes() {
    let rig = Rig::new(2 * MIB);
    let (cache, _) = rig.open(1);
    let keys = 600u64;
    let done = std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(4);
    std::thread::scope(|scope| {
        for reader in 0..2u64 {
            let (cache, done) = (&cache, &done);
            scope.spawn(move || {
                let mut phys = reader;
                for _ in 0..1_000_000 {
                    if done.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() >= deadline
                    {
                        break;
                    }
                    phys = (phys * 31 + 7) % keys;
                    read(cache, 0, phys);
                }
            });
        }
        for round in 0..8u64 {
            if Instant::now() >= deadline {
                break;
            }
            for phys in 0..keys {
                cache.offer(
                    0,
                    identity((phys + round * 97) % keys),
                    &block((phys + round * 97) % keys),
                );
            }
            cache.drain(DRAIN);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let stats = cache.stats().0;
    assert!(stats.evictions > 0 && stats.hits > 0, "{stats:?}");
    assert_eq!(
        stats.mismatches, 0,
        "a slot rewritten under a read is a plain miss"
    );
}

/// The identity of `phys` moved to `new` (what the cleaner hands `relocate`).
fn moved_to(phys: u64, new: u64) -> BlockIdentity {
    BlockIdentity {
        phys: new,
        ..identity(phys)
    }
}

#[test]
fn a_relocated_block_answers_for_its_new_phys_also_after_a_restart() {
    let rig = Rig::new(4 * MIB);
    let (cache, _) = rig.open(2);
    let geometry = cache.inner.media.geometry;
    assert!(geometry.shards > 1);
    let olds: Vec<u64> = (100..140).collect();
    offer_all(&cache, 1, olds.iter().copied());
    // Half move within their shard, half to another shard.
    let mut next = 10_000u64;
    let moves: Vec<(u64, u64)> = olds
        .iter()
        .enumerate()
        .map(|(at, &old)| {
            let same = at % 2 == 0;
            while (geometry.shard_of_key(next) == geometry.shard_of_key(old)) != same {
                next += 1;
            }
            next += 1;
            (old, next - 1)
        })
        .collect();
    for &(old, new) in &moves {
        cache.relocate(old, moved_to(old, new));
    }
    assert!(cache.drain(DRAIN));
    let check = |cache: &SsdCache| {
        for &(old, new) in &moves {
            let old_bytes = block(old);
            let verify_old = |bytes: &[u8]| bytes == &old_bytes[..];
            let shards = (geometry.shard_of_key(old), geometry.shard_of_key(new));
            assert_eq!(
                read_with(cache, 1, new, &verify_old),
                SsdRead::Hit,
                "{old} -> {new}, shards {shards:?}"
            );
            assert_eq!(read_with(cache, 1, old, &|_| true), SsdRead::Miss);
        }
    };
    check(&cache);
    assert_eq!(cache.stats().0.cached_blocks, olds.len() as u64);
    drop(cache); // no shutdown: the moves are only in the log
    let (cache, report) = rig.open(2);
    assert_eq!(report.restored, olds.len() as u64);
    check(&cache);
}

#[test]
fn log_records_round_trip_and_a_flipped_bit_fails_them() {
    let record = Record::new(format::RecordKind::Admit, 9, identity(77));
    let mut bytes = [0u8; 64];
    record.encode(5, &mut bytes);
    assert_eq!(Record::decode(5, &bytes), Some(record));
    assert_eq!(Record::decode(6, &bytes), None, "another instance's record");
    bytes[10] ^= 1;
    assert_eq!(Record::decode(5, &bytes), None);
}
