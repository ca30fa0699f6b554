//! A second controller failure inside the re-mirror window: controller 1 fails, the mirror
//! copies of its sections become primaries on controller 2 without a mirror copy yet, and
//! controller 2 fails too (by a fault) before re-mirroring reaches them. Every write that
//! was flushed must still read back exactly: at once, after a checkpoint, and after a
//! restart from media. Writes after the last flush of a block may read back as that
//! flushed version (or, never flushed, as what the array holds).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use hashbrown::HashMap;

use super::domain::shard_of;
use super::tests::FaultPoint;
use super::tests::id;
use super::{Cache, Route, SectionKey, SectionRouter, StrandedReport};
use crate::meta::{MetaStore, Provisioning, RecoveredBlock, VolumeHandle};
use crate::testing::open_small_store;
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, SECTION_SIZE};

/// 8 MiB per domain: 8 slots per shard.
const DOMAIN_BYTES: u64 = 8 << 20;

/// Phase 0: all three controllers up. Phase 1: controller 1 failed. Phase 2: controllers
/// 1 and 2 failed.
const PHASES: usize = 3;

/// Per section, its route in each phase; sections not listed go to (1, 2), (2, 3), (3).
struct Phased {
    phase: AtomicU8,
    routes: HashMap<u64, [Route; PHASES]>,
}

/// The usual fate of a section of controller 1: promoted on 2, then on 3.
const FOLLOWS_FAILURES: [Route; PHASES] = [
    Route {
        owner: id(0),
        mirror: Some(id(1)),
    },
    Route {
        owner: id(1),
        mirror: Some(id(2)),
    },
    Route {
        owner: id(2),
        mirror: None,
    },
];

impl Phased {
    fn new(routes: HashMap<u64, [Route; PHASES]>) -> Phased {
        Phased {
            phase: AtomicU8::new(0),
            routes,
        }
    }

    fn at(&self, phase: usize, key: SectionKey) -> Route {
        self.routes.get(&key.1).unwrap_or(&FOLLOWS_FAILURES)[phase]
    }
}

impl SectionRouter for Phased {
    fn route(&self, key: SectionKey) -> Route {
        self.at(self.phase.load(Ordering::Acquire) as usize, key)
    }
}

/// The placement of one phase, for `fail_domain`'s old and new arguments.
struct AtPhase<'a>(&'a Phased, usize);

impl SectionRouter for AtPhase<'_> {
    fn route(&self, key: SectionKey) -> Route {
        self.0.at(self.1, key)
    }
}

/// A static copy of one phase's placement, for the cache started after a restart.
struct Frozen(Phased, usize);

impl SectionRouter for Frozen {
    fn route(&self, key: SectionKey) -> Route {
        self.0.at(self.1, key)
    }
}

fn pattern(section: u64, block: usize, version: u8) -> Vec<u8> {
    (0..BLOCK_SIZE)
        .map(|at| (section as usize * 131 + block * 17 + at / 3) as u8 ^ version.wrapping_mul(0x5B))
        .collect()
}

fn section_data(section: u64, version: u8) -> Vec<u8> {
    (0..BLOCKS_PER_SECTION)
        .flat_map(|block| pattern(section, block, version))
        .collect()
}

fn handle(meta: &MetaStore, id: u32) -> Arc<VolumeHandle> {
    meta.state().volumes.get(&id).cloned().unwrap()
}

/// What each block must read back as: `Some(version)` of [`pattern`], `None` for zeroes.
type Expected = HashMap<(u64, usize), Option<u8>>;

fn check(cache: &Cache, volume: &VolumeHandle, expected: &Expected, when: &str) {
    let mut buf = vec![0u8; BLOCK_SIZE];
    let mut wrong = Vec::new();
    let mut keys: Vec<_> = expected.keys().copied().collect();
    keys.sort_unstable();
    for (section, block) in keys {
        let offset = (section * BLOCKS_PER_SECTION as u64 + block as u64) * BLOCK_SIZE as u64;
        cache.read(volume, offset, &mut buf).unwrap();
        let want = match expected[&(section, block)] {
            Some(version) => pattern(section, block, version),
            None => vec![0u8; BLOCK_SIZE],
        };
        if buf != want {
            wrong.push(format!("section {section} block {block}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{when}: {} of {} blocks do not read back as flushed: {}",
        wrong.len(),
        expected.len(),
        wrong.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
    );
}

/// Fails `failed` going from `phase` to `phase + 1`, as the controllers layer does.
fn fail(cache: &Cache, router: &Phased, failed: usize, phase: usize) -> StrandedReport {
    cache.pause();
    let failure = cache.fail_domain(
        id(failed),
        &AtPhase(router, phase),
        &AtPhase(router, phase + 1),
    );
    router.phase.store(phase as u8 + 1, Ordering::Release);
    cache.resume();
    failure.stranded
}

/// (blocks without a mirror copy, reloaded, lost, lost but back at a flushed version).
fn counts(report: &StrandedReport) -> (u64, u64, u64, u64) {
    assert!(report.error.is_none(), "{:?}", report.error);
    (
        report.blocks,
        report.reloaded,
        report.lost,
        report.lost_to_older,
    )
}

fn write_section(cache: &Cache, volume: &VolumeHandle, section: u64, version: u8) {
    cache
        .write(
            volume,
            section * SECTION_SIZE as u64,
            &section_data(section, version),
        )
        .unwrap();
}

fn expect_section(expected: &mut Expected, section: u64, version: Option<u8>) {
    for block in 0..BLOCKS_PER_SECTION {
        expected.insert((section, block), version);
    }
}

/// Checkpoints, then opens the store again from its files (kill -9) and starts a cache
/// with the recovered blocks under the phase-2 placement; every block must read back.
fn checkpoint_restart_and_check(
    dir: &Path,
    cache: &Cache,
    routes: HashMap<u64, [Route; PHASES]>,
    volume: u32,
    expected: &Expected,
) {
    cache.checkpoint().unwrap();
    let (meta, recovered): (MetaStore, Vec<RecoveredBlock>) = open_small_store(dir);
    let meta = Arc::new(meta);
    let restarted = Cache::start(
        meta.clone(),
        3,
        DOMAIN_BYTES,
        recovered,
        Arc::new(Frozen(Phased::new(routes), 2)),
    );
    restarted.set_manual_destage(true);
    restarted.check_counters().unwrap();
    check(
        &restarted,
        &handle(&meta, volume),
        expected,
        "after a checkpoint and a restart",
    );
}

fn sections_in_shard(volume: u32, wanted: impl Fn(usize) -> bool, count: usize) -> Vec<u64> {
    let found: Vec<u64> = (0..256u64)
        .filter(|&section| wanted(shard_of((volume, section))))
        .take(count)
        .collect();
    assert_eq!(found.len(), count);
    found
}

/// A fresh store with one pool and one 16 MiB thin volume.
fn store_with_volume(dir: &Path) -> (Arc<MetaStore>, crate::meta::VolumeRecord) {
    let (meta, _) = open_small_store(dir);
    let meta = Arc::new(meta);
    let pool = meta.create_pool("pool", 64 << 20, 1 << 30).unwrap();
    let record = meta
        .create_volume("v", pool.id, 16 << 20, Provisioning::Thin)
        .unwrap();
    (meta, record)
}

/// Three domains routed by `routes` (phase 0), destaged only when a test asks.
fn start(
    meta: &Arc<MetaStore>,
    volume: u32,
    routes: HashMap<u64, [Route; PHASES]>,
) -> (Arc<Phased>, Arc<Cache>, Arc<VolumeHandle>) {
    let router = Arc::new(Phased::new(routes));
    let cache = Cache::start(meta.clone(), 3, DOMAIN_BYTES, Vec::new(), router.clone());
    cache.set_manual_destage(true);
    (router, cache, handle(meta, volume))
}

/// Writes flushed on controller 2 after controller 1 failed. Controller 3's shard 0 is
/// full of dirty sections when controller 2 fails, so the reload must make room there.
#[test]
fn flushed_writes_without_a_mirror_copy_survive_the_failure_of_their_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, record) = store_with_volume(dir.path());
    // Controller 1's sections: two in shard 0, four elsewhere.
    let in_shard_0 = sections_in_shard(record.id, |shard| shard == 0, 10);
    let stranded_0 = in_shard_0[..2].to_vec();
    let stranded_other = sections_in_shard(record.id, |shard| shard != 0, 4);
    // Controller 3 owns eight more sections of shard 0 (all its slots there), mirrored
    // half on controller 1, half on 2.
    let fillers = in_shard_0[2..].to_vec();
    let mut routes = HashMap::new();
    for (at, &section) in fillers.iter().enumerate() {
        let first_mirror = if at < 4 { 0 } else { 1 };
        routes.insert(
            section,
            [
                Route {
                    owner: id(2),
                    mirror: Some(id(first_mirror)),
                },
                Route {
                    owner: id(2),
                    mirror: Some(id(1)),
                },
                Route {
                    owner: id(2),
                    mirror: None,
                },
            ],
        );
    }
    let (router, cache, volume) = start(&meta, record.id, routes.clone());
    let mut expected = Expected::new();
    let stranded: Vec<u64> = stranded_0.iter().chain(&stranded_other).copied().collect();
    for &section in stranded.iter().chain(&fillers) {
        write_section(&cache, &volume, section, 1);
        expect_section(&mut expected, section, Some(1));
    }
    assert_eq!(
        cache.domains[id(2)].shards[0].inner.lock().available(),
        0,
        "the test means to fill shard 0 of controller 3"
    );

    fail(&cache, &router, 0, 0);
    assert!(cache.unmirrored_blocks() >= (stranded.len() * BLOCKS_PER_SECTION) as u64);
    cache.flush().unwrap();

    // After the flush: an overwrite whose mirror copy never got made (not acknowledged,
    // never flushed) and an acknowledged, mirrored overwrite (never flushed either).
    cache.arm_fault(FaultPoint::AfterPrimary);
    let offset = (stranded_0[0] * BLOCKS_PER_SECTION as u64 + 3) * BLOCK_SIZE as u64;
    assert!(
        cache
            .write(&volume, offset, &pattern(stranded_0[0], 3, 2))
            .is_err()
    );
    let section = stranded_other[0];
    let offset = (section * BLOCKS_PER_SECTION as u64 + 5) * BLOCK_SIZE as u64;
    cache
        .write(&volume, offset, &pattern(section, 5, 3))
        .unwrap();
    expected.insert((section, 5), Some(3));

    // Controller 2 fails by a fault before re-mirroring reached its sections. Of its 95
    // blocks without a mirror copy (six sections but the block written again with a
    // mirror copy), all are in the vault; the one overwritten after the flush is back
    // at its flushed version.
    let report = fail(&cache, &router, 1, 1);
    assert_eq!(counts(&report), (95, 95, 1, 1));
    assert_eq!(report.owners, vec![id(2)]);
    assert!(
        cache.counters.blocks_destaged.load(Ordering::Relaxed) > 0,
        "controller 3 had room without destaging"
    );
    cache.check_counters().unwrap();
    cache.check_mirrors().unwrap();
    check(&cache, &volume, &expected, "right after the second failure");
    checkpoint_restart_and_check(dir.path(), &cache, routes, record.id, &expected);
}

/// Writes flushed (on controller 1) before controller 1 failed and not flushed again
/// before controller 2 failed; writes never flushed are lost, and read back as the array
/// holds them (zeroes here) or as their last flushed version.
#[test]
fn writes_flushed_before_the_first_failure_survive_a_second_failure_before_remirroring() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, record) = store_with_volume(dir.path());
    let (router, cache, volume) = start(&meta, record.id, HashMap::new());
    let mut expected = Expected::new();
    let flushed: Vec<u64> = (0..6).collect();
    let unflushed: Vec<u64> = (10..12).collect();
    for &section in &flushed {
        write_section(&cache, &volume, section, 1);
        expect_section(&mut expected, section, Some(1));
    }
    cache.flush().unwrap();
    // Acknowledged after the flush, never flushed: lost with controller 2.
    for &section in &unflushed {
        write_section(&cache, &volume, section, 1);
        expect_section(&mut expected, section, None);
    }
    let offset = (flushed[0] * BLOCKS_PER_SECTION as u64 + 7) * BLOCK_SIZE as u64;
    cache
        .write(&volume, offset, &pattern(flushed[0], 7, 4))
        .unwrap();

    assert_eq!(counts(&fail(&cache, &router, 0, 0)), (0, 0, 0, 0));
    // 8 sections without a mirror copy: the 6 flushed ones come back (one block at its
    // flushed version, not its later write), the 2 never flushed are lost.
    assert_eq!(counts(&fail(&cache, &router, 1, 1)), (128, 96, 33, 1));
    cache.check_counters().unwrap();
    cache.check_mirrors().unwrap();
    check(&cache, &volume, &expected, "right after the second failure");
    checkpoint_restart_and_check(dir.path(), &cache, HashMap::new(), record.id, &expected);
}

/// A mirror copy made by the re-mirror worker after its owner flushed the blocks keeps
/// their vault records: the owner fails, the copies become primaries (not vaulted again
/// yet), a checkpoint runs, and the node restarts from media.
#[test]
fn a_re_mirrored_copy_keeps_the_vault_records_of_flushed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, record) = store_with_volume(dir.path());
    let (router, cache, volume) = start(&meta, record.id, HashMap::new());
    let mut expected = Expected::new();
    for section in 0..4 {
        write_section(&cache, &volume, section, 1);
        expect_section(&mut expected, section, Some(1));
    }
    fail(&cache, &router, 0, 0);
    // Controller 2 vaults the promoted blocks, then re-mirroring copies them to 3.
    cache.flush().unwrap();
    assert_eq!(
        cache.remirror_all(id(2)).unwrap(),
        4 * BLOCKS_PER_SECTION as u64
    );
    assert_eq!(cache.unmirrored_blocks(), 0);
    assert_eq!(counts(&fail(&cache, &router, 1, 1)), (0, 0, 0, 0));
    check(&cache, &volume, &expected, "right after the second failure");
    checkpoint_restart_and_check(dir.path(), &cache, HashMap::new(), record.id, &expected);
}
