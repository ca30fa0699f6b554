//! The invariants the cache asserts where it relies on them (destage commit, mirror
//! release, promotion of a mirror copy) stop the node when broken: each test breaks one
//! through the cache's own state, as a bug would, and expects the assertion's message.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tempfile::TempDir;

use super::shard::{SectionKey, Slot};
use super::tests::id;
use super::{Cache, Route, SectionRouter};
use crate::meta::{Provisioning, VolumeHandle};
use crate::testing::open_small_store;
use crate::types::SECTION_SIZE;

/// 8 MiB per domain: 8 slots per shard.
const DOMAIN_BYTES: u64 = 8 << 20;

/// Every section at one place.
struct Fixed(Route);

impl SectionRouter for Fixed {
    fn route(&self, _key: SectionKey) -> Route {
        self.0
    }
}

/// Owned by controller 1, mirrored by controller 2: the placement the tests start with.
const FIRST: Route = Route {
    owner: id(0),
    mirror: Some(id(1)),
};
/// After controller 1 failed: controller 2 owns, controller 3 mirrors.
const AFTER_FIRST_FAILED: Route = Route {
    owner: id(1),
    mirror: Some(id(2)),
};

/// A store with one volume and a cache of three controllers over it (placed as
/// [`FIRST`], destaged only when a test asks) holding section 0 of the volume written
/// and mirrored. The directory must outlive the cache.
fn written_section() -> (TempDir, Arc<Cache>, Arc<VolumeHandle>, SectionKey) {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = open_small_store(dir.path());
    let meta = Arc::new(meta);
    let pool = meta.create_pool("pool", 64 << 20, 1 << 30).unwrap();
    let record = meta
        .create_volume("v", pool.id, 16 << 20, Provisioning::Thin)
        .unwrap();
    let cache = Cache::start(
        meta.clone(),
        3,
        DOMAIN_BYTES,
        Vec::new(),
        Arc::new(Fixed(FIRST)),
    );
    cache.set_manual_destage(true);
    let volume = meta.state().volumes.get(&record.id).cloned().unwrap();
    cache.write(&volume, 0, &[0x5A; SECTION_SIZE]).unwrap();
    (dir, cache, volume, (record.id, 0))
}

/// Changes the slot of `key` in controller `domain` (0-based) as a bug would.
fn break_slot(cache: &Cache, domain: usize, key: SectionKey, change: impl FnOnce(&mut Slot)) {
    let mut shard = cache.domains[id(domain)].shard(key).inner.lock();
    let slot = shard.index[&key];
    change(&mut shard.slots[slot as usize]);
}

/// Fails controller 1 as the controllers layer does (requests paused meanwhile).
fn fail_first(cache: &Cache) {
    cache.pause();
    cache.fail_domain(id(0), &Fixed(FIRST), &Fixed(AFTER_FIRST_FAILED));
    cache.resume();
}

#[test]
fn the_unbroken_setup_destages_and_fails_over_cleanly() {
    let (_dir, cache, _volume, _key) = written_section();
    fail_first(&cache);
    cache.destage_now(1).unwrap();
    cache.check_counters().unwrap();
    assert_eq!(cache.dirty_bytes(), 0);
}

#[test]
#[should_panic(expected = "its count of dirty blocks it owns would go below zero")]
fn destage_commit_stops_when_the_owners_dirty_count_would_go_below_zero() {
    let (_dir, cache, _volume, _key) = written_section();
    cache.domains[id(0)]
        .primary_dirty
        .store(0, Ordering::Release);
    let _ = cache.destage_now(0);
}

#[test]
#[should_panic(expected = "was flushed to the vault, but until its destage commits nothing kept")]
fn destage_commit_stops_when_a_flushed_block_has_no_vault_record_kept() {
    let (_dir, cache, _volume, key) = written_section();
    cache.flush().unwrap();
    break_slot(&cache, 0, key, |slot| slot.vault_lsn = u64::MAX);
    let _ = cache.destage_now(0);
}

#[test]
#[should_panic(expected = "whose bytes are not in its cache; destaging them would write garbage")]
fn destage_stops_before_taking_dirty_blocks_without_their_bytes() {
    let (_dir, cache, _volume, key) = written_section();
    break_slot(&cache, 0, key, |slot| slot.valid = 0);
    let _ = cache.destage_now(0);
}

#[test]
#[should_panic(expected = "its count of mirror copies would go below zero")]
fn mirror_release_stops_when_the_mirrors_count_would_go_below_zero() {
    let (_dir, cache, _volume, _key) = written_section();
    cache.domains[id(1)]
        .mirror_dirty
        .store(0, Ordering::Release);
    let _ = cache.destage_now(0);
}

#[test]
#[should_panic(expected = "are being released before their owner's map commit is durable")]
fn mirror_copies_are_not_released_before_the_owners_map_commit_is_durable() {
    let (_dir, cache, _volume, key) = written_section();
    let durable = cache.meta.journal().durable_ticket();
    cache.release_destaged_mirrors(id(0), &[(key, 0, u64::MAX)], durable + 1);
}

/// Debug builds only: the owner's copy is checked after the mirror copy is released.
#[cfg(debug_assertions)]
#[test]
#[should_panic(
    expected = "still holds dirty at the same generation, neither destaged nor rewritten"
)]
fn a_mirror_copy_the_owner_still_needs_is_not_released() {
    let (_dir, cache, _volume, key) = written_section();
    cache.release_mirror(0, 1, key, u16::MAX, &|_| u64::MAX);
}

/// Debug builds only: the recount walks every slot.
#[cfg(debug_assertions)]
#[test]
#[should_panic(
    expected = "the cache's dirty counts disagree with its slots after controller 1 failed"
)]
fn a_failover_stops_when_the_dirty_counts_disagree_with_the_slots() {
    let (_dir, cache, _volume, _key) = written_section();
    cache.domains[id(1)]
        .mirror_dirty
        .fetch_add(5, Ordering::AcqRel);
    fail_first(&cache);
}

#[test]
#[should_panic(expected = "its count of dirty blocks without a mirror copy would go below zero")]
fn destage_commit_stops_when_the_unmirrored_count_would_go_below_zero() {
    let (_dir, cache, _volume, _key) = written_section();
    fail_first(&cache);
    // The promoted blocks wait for the re-mirror worker: unmirrored.
    assert!(cache.domains[id(1)].unmirrored.load(Ordering::Acquire) > 0);
    cache.domains[id(1)].unmirrored.store(0, Ordering::Release);
    let _ = cache.destage_now(1);
}

#[test]
#[should_panic(expected = "its count of mirror copies would go below zero")]
fn promotion_stops_when_the_mirrors_count_would_go_below_zero() {
    let (_dir, cache, _volume, _key) = written_section();
    cache.domains[id(1)]
        .mirror_dirty
        .store(0, Ordering::Release);
    fail_first(&cache);
}

#[test]
#[should_panic(expected = "lacks the bytes of dirty blocks")]
fn promotion_stops_when_the_mirror_copy_lacks_the_bytes() {
    let (_dir, cache, _volume, key) = written_section();
    break_slot(&cache, 1, key, |slot| slot.valid = 0);
    fail_first(&cache);
}

#[test]
#[should_panic(expected = "holds the owner's copy already")]
fn promotion_stops_on_a_copy_that_is_not_a_mirror_copy() {
    let (_dir, cache, _volume, key) = written_section();
    let state = cache.meta.state();
    cache.promote(id(0), key, &state);
}
