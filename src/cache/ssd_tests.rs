//! The SSD read-cache tier under the DRAM cache, in process: an oracle of what every block
//! holds against random writes, trims, write-zeroes, snapshot restores and refreshes,
//! copies by reference, cleaning, controller failover and failback, and restarts (clean,
//! and from media after a flush), over a DRAM cache so small that most reads go through
//! the SSD tier. Every read must equal the oracle, and no cached copy may ever fail its
//! verification (a stale copy is the sign of a missed invalidation: `forget_range`).
//! A second test shows that the cleaner's moves keep blocks cached (`relocate`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tempfile::TempDir;

use super::shard::SectionKey;
use super::tests::id;
use super::{Cache, Route, SectionRouter};
use crate::io::Device;
use crate::meta::store::snapshots::SnapshotSpec;
use crate::meta::{MetaStore, Provisioning, VolumeHandle};
use crate::ssd::{CacheRegion, SsdCache, SsdCacheSettings, SsdCacheStats};
use crate::testing::open_small_store;
use crate::types::BLOCK_SIZE;

/// The smallest DRAM a domain gets (8 slots in each of 16 shards: 8 MiB).
const DOMAIN_BYTES: u64 = 4 << 20;
/// The volume the oracle follows: 16 MiB.
const VOLUME_BLOCKS: u64 = 4096;
/// A volume read to push everything else out of DRAM (SSD cache off): 32 MiB.
const FILLER_BLOCKS: u64 = 8192;
const SSD_CACHE_BYTES: u64 = 64 << 20;

/// Sections spread over the controllers by section number; when one failed, its
/// sections' mirrors own them (as the controllers layer places them) and the third
/// controller mirrors.
fn placed(key: SectionKey, failed: Option<usize>) -> Route {
    let owner = key.1 as usize % 3;
    let mirror = (owner + 1) % 3;
    let third = (owner + 2) % 3;
    let (owner, mirror) = match failed {
        Some(failed) if failed == owner => (mirror, third),
        Some(failed) if failed == mirror => (owner, third),
        _ => (owner, mirror),
    };
    Route {
        owner: id(owner),
        mirror: Some(id(mirror)),
    }
}

struct Placed(Option<usize>);

impl SectionRouter for Placed {
    fn route(&self, key: SectionKey) -> Route {
        placed(key, self.0)
    }
}

/// The placement in force: every controller, or all but the failed one.
struct Switchable(AtomicUsize);

impl Switchable {
    fn failed(&self) -> Option<usize> {
        let failed = self.0.load(Ordering::Acquire);
        (failed != usize::MAX).then_some(failed)
    }
}

impl SectionRouter for Switchable {
    fn route(&self, key: SectionKey) -> Route {
        placed(key, self.failed())
    }
}

/// Block `lba` as write number `tag` left it (tag 0: zeroes).
fn pattern(tag: u64, lba: u64) -> Vec<u8> {
    if tag == 0 {
        return vec![0; BLOCK_SIZE];
    }
    let mut block = vec![0u8; BLOCK_SIZE];
    for (index, chunk) in block.chunks_mut(8).enumerate() {
        let word = tag
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(lba << 20)
            .wrapping_add(index as u64);
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    block
}

fn open_ssd(dir: &Path) -> Arc<SsdCache> {
    let device = Device::open(&dir.join("ssd1.img"), Some(SSD_CACHE_BYTES), None).unwrap();
    let (ssd, _report) = SsdCache::open(
        CacheRegion {
            device: Arc::new(device),
            offset: 0,
            len: SSD_CACHE_BYTES,
        },
        SsdCacheSettings {
            partitions: 3,
            write_bytes_per_sec: 2_000_000_000,
            on_failure: Box::new(|detail| panic!("the SSD cache failed in a test: {detail}")),
        },
    )
    .unwrap();
    ssd
}

/// A small node in process: store, SSD tier, cache, and the oracle of two datasets.
struct Rig {
    dir: TempDir,
    meta: Arc<MetaStore>,
    ssd: Arc<SsdCache>,
    cache: Arc<Cache>,
    router: Arc<Switchable>,
    volume: u32,
    filler: u32,
    snapshot: Option<u32>,
    /// Per block, what it holds: `pattern(tag, lba)` of the write numbered `tag` to
    /// address `lba` (a copy by reference keeps its source's address): the volume, and
    /// its snapshot.
    expected: Vec<(u64, u64)>,
    expected_snapshot: Vec<(u64, u64)>,
    next_tag: u64,
    snapshots_taken: u32,
    /// Mismatches counted by the tiers of earlier runs (before restarts).
    mismatches_before: u64,
    ssd_hits: u64,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (meta, _) = open_small_store(dir.path());
        let meta = Arc::new(meta);
        let pool = meta.create_pool("pool", 100 << 20, 1 << 30).unwrap();
        let volume = meta
            .create_volume("v", pool.id, VOLUME_BLOCKS * 4096, Provisioning::Thin)
            .unwrap()
            .id;
        let filler = meta
            .create_volume("filler", pool.id, FILLER_BLOCKS * 4096, Provisioning::Thin)
            .unwrap()
            .id;
        meta.update_volume(filler, |record| record.ssd_enabled = false)
            .unwrap();
        let router = Arc::new(Switchable(AtomicUsize::new(usize::MAX)));
        let ssd = open_ssd(dir.path());
        if std::env::var_os("TROIKA_TEST_NO_SSD").is_none() {
            meta.attach_read_cache(ssd.clone());
        }
        let cache = Cache::start(meta.clone(), 3, DOMAIN_BYTES, Vec::new(), router.clone());
        cache.set_manual_destage(true);
        if std::env::var_os("TROIKA_TEST_NO_SSD").is_none() {
            cache.attach_ssd(ssd.clone());
        }
        let rig = Rig {
            dir,
            meta,
            ssd,
            cache,
            router,
            volume,
            filler,
            snapshot: None,
            expected: vec![(0, 0); VOLUME_BLOCKS as usize],
            expected_snapshot: Vec::new(),
            next_tag: 1,
            snapshots_taken: 0,
            mismatches_before: 0,
            ssd_hits: 0,
        };
        let filler_handle = rig.handle(filler);
        let chunk = vec![0x33u8; 1 << 20];
        for at in (0..FILLER_BLOCKS * 4096).step_by(chunk.len()) {
            rig.cache.write(&filler_handle, at, &chunk).unwrap();
            rig.cache.destage_all(64).unwrap();
        }
        rig
    }

    fn handle(&self, id: u32) -> Arc<VolumeHandle> {
        self.meta.state().volumes.get(&id).cloned().unwrap()
    }

    fn write(&mut self, lba: u64, blocks: u64) {
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut data = Vec::with_capacity(blocks as usize * BLOCK_SIZE);
        for at in lba..lba + blocks {
            data.extend_from_slice(&pattern(tag, at));
            self.expected[at as usize] = (tag, at);
        }
        let handle = self.handle(self.volume);
        self.cache.write(&handle, lba * 4096, &data).unwrap();
    }

    fn zero(&mut self, lba: u64, blocks: u64, as_trim: bool) {
        let handle = self.handle(self.volume);
        if as_trim {
            self.cache.trim(&handle, lba * 4096, blocks * 4096).unwrap();
        } else {
            self.cache
                .write_zeroes(&handle, lba * 4096, blocks * 4096, true, false)
                .unwrap();
        }
        self.expected[lba as usize..(lba + blocks) as usize].fill((0, 0));
    }

    /// Reads a range of the volume (or of its snapshot) and compares it with the oracle.
    fn read(&mut self, of_snapshot: bool, lba: u64, blocks: u64, what: &str) {
        let (id, expected) = match (of_snapshot, self.snapshot) {
            (true, Some(snapshot)) => (snapshot, &self.expected_snapshot),
            _ => (self.volume, &self.expected),
        };
        let handle = self.handle(id);
        let before = handle.reads.ssd_hits.load(Ordering::Relaxed);
        let mut buf = vec![0u8; blocks as usize * BLOCK_SIZE];
        self.cache.read(&handle, lba * 4096, &mut buf).unwrap();
        for (index, block) in buf.chunks(BLOCK_SIZE).enumerate() {
            let at = lba + index as u64;
            let (tag, written_at) = expected[at as usize];
            if block != pattern(tag, written_at).as_slice() {
                let holds = (0..self.next_tag)
                    .flat_map(|t| (0..VOLUME_BLOCKS).map(move |l| (t, l)))
                    .find(|&(t, l)| block == pattern(t, l).as_slice());
                panic!(
                    "{what}: block {at} of dataset {id} is not write {tag}'s (made for block {written_at}) but {holds:?}"
                );
            }
        }
        self.ssd_hits += handle.reads.ssd_hits.load(Ordering::Relaxed) - before;
    }

    /// Pushes everything out of DRAM (its clean blocks are offered to the SSD tier) and
    /// gives the tier's writer a moment.
    fn evict(&self) {
        let handle = self.handle(self.filler);
        let mut buf = vec![0u8; 1 << 20];
        for at in (0..FILLER_BLOCKS * 4096).step_by(buf.len()) {
            self.cache.read(&handle, at, &mut buf).unwrap();
        }
        self.settle_writer();
    }

    /// Waits (at most 5 s) until the tier's writers took what was offered.
    fn settle_writer(&self) {
        self.ssd.drain(Duration::from_secs(5));
    }

    fn destage(&self) {
        self.cache.destage_all(256).unwrap();
    }

    fn snapshot(&mut self) {
        self.destage();
        self.snapshots_taken += 1;
        let spec = SnapshotSpec {
            parent: self.volume,
            name: format!("s{}", self.snapshots_taken),
            write_protected: true,
            lock_expires_at: None,
            policy: None,
        };
        let (records, _) = self.meta.create_snapshots(&[spec], None).unwrap();
        self.snapshot = Some(records[0].id);
        self.expected_snapshot = self.expected.clone();
    }

    /// Restores the volume from its snapshot (`restore`) or the snapshot from the volume
    /// (refresh), as the node does: destaged, the target's cache dropped, then the map.
    fn take_contents(&mut self, restore: bool) {
        let Some(snapshot) = self.snapshot else {
            return;
        };
        let (target, source) = if restore {
            (self.volume, snapshot)
        } else {
            (snapshot, self.volume)
        };
        self.destage();
        self.meta.check_take_contents(target, source).unwrap();
        self.cache.pause();
        self.cache.forget_volume(target);
        self.meta.take_contents(&[(target, source)]).unwrap();
        self.cache.resume();
        if restore {
            self.expected = self.expected_snapshot.clone();
        } else {
            self.expected_snapshot = self.expected.clone();
        }
    }

    fn share(&mut self, from: u64, to: u64, blocks: u64) {
        let handle = self.handle(self.volume);
        if !Cache::can_share(&handle, from, &handle, to, blocks) {
            return;
        }
        self.cache
            .share_blocks(&handle, from, &handle, to, blocks)
            .unwrap();
        self.expected
            .copy_within(from as usize..(from + blocks) as usize, to as usize);
    }

    fn clean(&self) {
        for _ in 0..3 {
            if !self.cache.clean_now().unwrap() {
                break;
            }
        }
    }

    /// Fails controller `which` as the controllers layer does (requests paused).
    fn fail(&self, which: usize) {
        if self.router.failed().is_some() {
            return;
        }
        self.cache.pause();
        self.cache
            .fail_domain(id(which), &Placed(None), &Placed(Some(which)));
        self.router.0.store(which, Ordering::Release);
        self.cache.resume();
    }

    /// Brings the failed controller back and moves its sections home in one step.
    fn failback(&self) {
        let Some(which) = self.router.failed() else {
            return;
        };
        self.cache.recover_domain(id(which));
        self.cache.set_accepting(id(which), true);
        self.cache.pause();
        let moved = self.cache.reassign(&Placed(Some(which)), &Placed(None));
        if moved.is_ok() {
            self.router.0.store(usize::MAX, Ordering::Release);
        }
        self.cache.resume();
    }

    /// Stops and starts again from the files: `clean` as a node stops (everything
    /// destaged, the tier shut down), or as after a crash once writes were flushed to the
    /// vault (nothing destaged; the tier persisted what it had, then the store recovers).
    fn restart(&mut self, clean: bool) {
        self.failback();
        if clean {
            self.destage();
            self.cache.shutdown().unwrap();
        } else {
            self.cache.flush().unwrap();
            self.cache.checkpoint().unwrap();
        }
        self.ssd.shutdown();
        self.mismatches_before += self.ssd.stats().0.mismatches;
        let (meta, recovered) = open_small_store(self.dir.path());
        let meta = Arc::new(meta);
        let ssd = open_ssd(self.dir.path());
        let cache = Cache::start(
            meta.clone(),
            3,
            DOMAIN_BYTES,
            recovered,
            self.router.clone(),
        );
        cache.set_manual_destage(true);
        if std::env::var_os("TROIKA_TEST_NO_SSD").is_none() {
            meta.attach_read_cache(ssd.clone());
            cache.attach_ssd(ssd.clone());
        }
        self.meta = meta;
        self.ssd = ssd;
        self.cache = cache;
    }

    fn stats(&self) -> SsdCacheStats {
        self.ssd.stats().0
    }

    fn mismatches(&self) -> u64 {
        self.mismatches_before + self.stats().mismatches
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        lba: u64,
        blocks: u64,
    },
    Trim {
        lba: u64,
        blocks: u64,
    },
    Zero {
        lba: u64,
        blocks: u64,
    },
    Read {
        snapshot: bool,
        lba: u64,
        blocks: u64,
    },
    Evict,
    Destage,
    Snapshot,
    Restore,
    Refresh,
    Share {
        from: u64,
        to: u64,
        blocks: u64,
    },
    Clean,
    Fail {
        which: usize,
    },
    Failback,
    Restart {
        clean: bool,
    },
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..VOLUME_BLOCKS, 1u64..48).prop_map(|(lba, blocks)| (lba, blocks.min(VOLUME_BLOCKS - lba)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => range().prop_map(|(lba, blocks)| Op::Write { lba, blocks }),
        1 => range().prop_map(|(lba, blocks)| Op::Trim { lba, blocks }),
        1 => range().prop_map(|(lba, blocks)| Op::Zero { lba, blocks }),
        8 => (any::<bool>(), range())
            .prop_map(|(snapshot, (lba, blocks))| Op::Read { snapshot, lba, blocks }),
        3 => Just(Op::Evict),
        3 => Just(Op::Destage),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restore),
        1 => Just(Op::Refresh),
        2 => (range(), 0..VOLUME_BLOCKS).prop_map(|((from, blocks), to)| Op::Share {
            from,
            to: to.min(VOLUME_BLOCKS - blocks),
            blocks,
        }),
        2 => Just(Op::Clean),
        1 => (0usize..3).prop_map(|which| Op::Fail { which }),
        1 => Just(Op::Failback),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
    ]
}

impl Rig {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { lba, blocks } => self.write(lba, blocks),
            Op::Trim { lba, blocks } => self.zero(lba, blocks, true),
            Op::Zero { lba, blocks } => self.zero(lba, blocks, false),
            Op::Read {
                snapshot,
                lba,
                blocks,
            } => self.read(snapshot, lba, blocks, &format!("{op:?}")),
            Op::Evict => self.evict(),
            Op::Destage => self.destage(),
            Op::Snapshot if self.snapshots_taken < 3 => self.snapshot(),
            Op::Snapshot => {}
            Op::Restore => self.take_contents(true),
            Op::Refresh => self.take_contents(false),
            Op::Share { from, to, blocks } => self.share(from, to, blocks),
            Op::Clean => {
                self.destage();
                self.clean();
            }
            Op::Fail { which } => self.fail(which),
            Op::Failback => self.failback(),
            Op::Restart { clean } => self.restart(clean),
        }
    }

    /// Reads everything twice with DRAM emptied before each pass, against the oracle.
    fn check_all(&mut self, what: &str) {
        for _ in 0..2 {
            self.destage();
            self.evict();
            for lba in (0..VOLUME_BLOCKS).step_by(64) {
                self.read(false, lba, 64, what);
                self.read(true, lba, 64, what);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_read_through_the_ssd_tier_equals_the_oracle(
        ops in proptest::collection::vec(op(), 30..60)
    ) {
        let mut rig = Rig::new();
        // Something to cache from the start, read once so its clean copies are noted.
        rig.write(0, VOLUME_BLOCKS / 2);
        rig.destage();
        rig.read(false, 0, VOLUME_BLOCKS / 2, "first read");
        rig.evict();
        for op in &ops {
            rig.apply(op);
        }
        rig.check_all("final pass");
        prop_assert!(rig.ssd_hits > 0, "no read was served by the SSD tier: the test proves nothing");
        prop_assert_eq!(
            rig.mismatches(),
            0,
            "a cached copy failed verification: some change of a physical block's meaning did not reach the tier"
        );
    }
}

/// The cleaner moves live blocks; their cached copies move with them, so the blocks still
/// read from the SSD tier afterwards.
#[test]
fn cleaned_blocks_stay_in_the_ssd_tier() {
    let mut rig = Rig::new();
    // Hot blocks interleaved with garbage, in the same rows.
    let hot: Vec<u64> = (0..512).map(|i| i * 2).collect();
    rig.write(0, 1024);
    rig.destage();
    for &lba in &hot {
        rig.read(false, lba, 1, "hot read");
    }
    rig.evict();
    assert!(
        rig.stats().admissions >= hot.len() as u64 / 2,
        "{:?}",
        rig.stats()
    );
    // The garbage is overwritten (elsewhere): the hot blocks' rows are mostly dead.
    for lba in (0..1024).filter(|lba| lba % 2 == 1) {
        rig.write(lba, 1);
    }
    rig.destage();
    let before: Vec<u64> = hot
        .iter()
        .map(|&lba| rig.meta.lookup(rig.volume, lba).unwrap().phys)
        .collect();
    for _ in 0..64 {
        if !rig.cache.clean_now().unwrap() {
            break;
        }
    }
    let moved = hot
        .iter()
        .zip(&before)
        .filter(|&(&lba, &old)| rig.meta.lookup(rig.volume, lba).unwrap().phys != old)
        .count();
    assert!(
        moved >= hot.len() / 2,
        "the cleaner moved only {moved} hot blocks"
    );
    rig.evict();
    let hits_before = rig.ssd_hits;
    for (&lba, &old) in hot.iter().zip(&before) {
        if rig.meta.lookup(rig.volume, lba).unwrap().phys != old {
            rig.read(false, lba, 1, "after cleaning");
        }
    }
    let hits = rig.ssd_hits - hits_before;
    println!("cleaning moved {moved} hot blocks; {hits} of them were read from the SSD tier");
    // The tier carries every moved copy over (within its index shard or, read back and
    // staged again, into another one); without `relocate` none would be found at all.
    assert!(
        hits >= moved as u64 / 2,
        "of {moved} moved hot blocks only {hits} were read from the SSD tier"
    );
    assert_eq!(rig.mismatches(), 0);
}

/// Blocks cached in the tier are trimmed; their segments are freed and written again with
/// other blocks. Reading those must find nothing stale in the tier (`forget_range` ran
/// before the segments were rewritten): no cached copy fails its verification.
#[test]
fn reused_places_are_forgotten() {
    let mut rig = Rig::new();
    rig.write(0, 1024);
    rig.destage();
    rig.read(false, 0, 1024, "first read");
    rig.evict();
    let cached = rig.stats().cached_blocks;
    assert!(cached >= 512, "only {cached} blocks were cached");
    let old: Vec<u64> = (0..1024)
        .map(|lba| rig.meta.lookup(rig.volume, lba).unwrap().phys)
        .collect();
    rig.zero(0, 1024, true);
    rig.destage();
    rig.meta.journal().commit_all().unwrap();
    // New blocks elsewhere take the freed segments again.
    for round in 0..4 {
        rig.write(2048 + round * 512, 512);
        rig.destage();
    }
    let reused = (2048..4096)
        .filter(|&lba| {
            let phys = rig.meta.lookup(rig.volume, lba).unwrap().phys;
            old.contains(&phys)
        })
        .count();
    assert!(reused >= 256, "only {reused} places were written again");
    rig.evict();
    rig.read(false, 2048, 2048, "after reuse");
    assert_eq!(
        rig.mismatches(),
        0,
        "copies of places written again were still in the tier"
    );
}
