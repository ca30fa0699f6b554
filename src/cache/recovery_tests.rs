//! Recovery from the vault when the recovered blocks do not fit the shards they are routed
//! to at start: the placement at start differs from the one they were written under (as
//! after a controller failure: the survivors carried the failed controller's sections,
//! and at restart all three controllers are back).

use std::path::Path;
use std::sync::Arc;

use super::domain::shard_of;
use super::tests::id;
use super::{Cache, Route, SectionRouter};
use crate::meta::{MetaStore, Provisioning, RecoveredBlock, VolumeHandle};
use crate::testing::open_small_store;
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, SECTION_SIZE};

/// 8 MiB per domain: 8 slots per shard.
const DOMAIN_BYTES: u64 = 8 << 20;
const SLOTS_PER_SHARD: usize = 8;
/// Sections written, all in shard 0: more than one shard of one domain holds.
const SECTIONS: usize = 12;

/// Spreads the listed sections over the three (owner, mirror) pairs, so each domain's
/// shard 0 holds two thirds of them; everything else goes to (0, 1).
struct Rotating(Vec<u64>);

impl SectionRouter for Rotating {
    fn route(&self, key: super::SectionKey) -> Route {
        match self.0.iter().position(|&section| section == key.1) {
            Some(at) => Route {
                owner: id(at % 3),
                mirror: Some(id((at + 1) % 3)),
            },
            None => Route {
                owner: id(0),
                mirror: Some(id(1)),
            },
        }
    }
}

/// Every section owned by controller 1 and mirrored by controller 2.
struct AllOnFirst;

impl SectionRouter for AllOnFirst {
    fn route(&self, _key: super::SectionKey) -> Route {
        Route {
            owner: id(0),
            mirror: Some(id(1)),
        }
    }
}

fn handle(meta: &MetaStore, id: u32) -> Arc<VolumeHandle> {
    meta.state().volumes.get(&id).cloned().unwrap()
}

fn pattern(section: usize, block: usize) -> Vec<u8> {
    (0..BLOCK_SIZE)
        .map(|at| (section * 131 + block * 17 + at / 3) as u8)
        .collect()
}

/// Every block of every written section reads back as written.
fn check_all(cache: &Cache, volume: &VolumeHandle, sections: &[u64], when: &str) {
    let mut buf = vec![0u8; SECTION_SIZE];
    for (at, &section) in sections.iter().enumerate() {
        cache
            .read(volume, section * SECTION_SIZE as u64, &mut buf)
            .unwrap();
        for block in 0..BLOCKS_PER_SECTION {
            assert!(
                buf[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE] == pattern(at, block)[..],
                "{when}: section {section} block {block} does not read back as written"
            );
        }
    }
}

/// A crash: open the store again from its files, as a restart after kill -9 would.
/// Starts a cache over `meta` with `recovered` installed (every section routed to
/// controller 1, mirrored on 2) and checks its counters, mirrors and every block.
fn start_and_check(
    meta: &Arc<MetaStore>,
    recovered: Vec<RecoveredBlock>,
    volume: u32,
    sections: &[u64],
    when: &str,
) {
    let cache = Cache::start(
        meta.clone(),
        3,
        DOMAIN_BYTES,
        recovered,
        Arc::new(AllOnFirst),
    );
    cache.set_manual_destage(true);
    cache.check_counters().unwrap();
    cache.check_mirrors().unwrap();
    check_all(&cache, &handle(meta, volume), sections, when);
}

fn reopen(dir: &Path) -> (Arc<MetaStore>, Vec<RecoveredBlock>) {
    let (meta, recovered) = open_small_store(dir);
    (Arc::new(meta), recovered)
}

#[test]
fn recovered_blocks_beyond_a_shards_slots_are_kept_and_survive_another_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = reopen(dir.path());
    let pool = meta.create_pool("pool", 64 << 20, 1 << 30).unwrap();
    let record = meta
        .create_volume("v", pool.id, 16 << 20, Provisioning::Thin)
        .unwrap();
    let sections: Vec<u64> = (0..256u64)
        .filter(|&section| shard_of((record.id, section)) == 0)
        .take(SECTIONS)
        .collect();
    assert_eq!(sections.len(), SECTIONS);

    // Before the crash: each domain's shard 0 holds 8 of the 12 sections (full), all
    // dirty and flushed to the vault.
    let cache = Cache::start(
        meta.clone(),
        3,
        DOMAIN_BYTES,
        Vec::new(),
        Arc::new(Rotating(sections.clone())),
    );
    cache.set_manual_destage(true);
    assert_eq!(
        cache.domains[id(0)].shards[0].inner.lock().slots.len(),
        SLOTS_PER_SHARD
    );
    let volume = handle(&meta, record.id);
    for (at, &section) in sections.iter().enumerate() {
        let data: Vec<u8> = (0..BLOCKS_PER_SECTION)
            .flat_map(|block| pattern(at, block))
            .collect();
        cache
            .write(&volume, section * SECTION_SIZE as u64, &data)
            .unwrap();
    }
    cache.flush().unwrap();
    for domain in cache.domains.values() {
        assert_eq!(
            domain.shards[0].inner.lock().available(),
            0,
            "the test means to fill shard 0 of every domain"
        );
    }

    // Restart: all 12 sections now route to controller 1 (mirror 2), whose shard 0 has 8
    // slots.
    let (meta, recovered) = reopen(dir.path());
    assert_eq!(recovered.len(), SECTIONS * BLOCKS_PER_SECTION);
    start_and_check(&meta, recovered, record.id, &sections, "after the restart");

    // kill -9 right after start: nothing recovered may have been given up.
    let (meta, recovered) = reopen(dir.path());
    assert!(recovered.len() <= SECTIONS * BLOCKS_PER_SECTION);
    start_and_check(
        &meta,
        recovered,
        record.id,
        &sections,
        "after a second crash",
    );
}
