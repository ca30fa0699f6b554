//! A failure to make metadata durable stops the store (in unit tests a panic from
//! `fatal::durability_failure`), it never answers success for an uncommitted change nor
//! serves one, and the store reopened from media holds each change wholly or not at all:
//! a journal write, a torn journal write or a journal fsync failing under a management
//! change, a checkpoint or superblock write failing, and a torn batch at the journal's
//! tail.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::MetaStore;
use crate::meta::failpoint::{Failpoint, arm};
use crate::meta::journal::tests::stop_message;
use crate::testing::open_small_store;

const POOL: u64 = 16 << 20;

fn open(dir: &Path) -> MetaStore {
    open_small_store(dir).0
}

/// The catalog as it would be checkpointed: what the store serves.
fn catalog_json(store: &MetaStore) -> String {
    serde_json::to_string(&store.state().catalog).unwrap()
}

fn has_pool(store: &MetaStore, name: &str) -> bool {
    store.state().catalog.pool_by_name(name).is_some()
}

/// Creates pool `name` with `point` armed; expects the store to stop naming `operation`.
fn create_pool_failing(store: &MetaStore, name: &str, point: Failpoint, operation: &str) {
    arm(point, 0);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.create_pool(name, POOL, POOL)
    }));
    let message = stop_message(outcome);
    assert!(
        message.contains(&format!("{operation} on ssd0 failed")),
        "{message}"
    );
    assert!(store.has_failed(), "the store is marked failed");
}

#[test]
fn a_failed_journal_write_during_a_catalog_change_leaves_it_wholly_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_pool("before", POOL, POOL).unwrap();
    let committed = catalog_json(&store);
    create_pool_failing(&store, "lost", Failpoint::JournalWrite, "journal write");
    // Not applied in memory: nothing uncommitted is served, not even by a store that
    // would keep running.
    assert!(!has_pool(&store, "lost"));
    assert_eq!(catalog_json(&store), committed);
    drop(store);
    let reopened = open(dir.path());
    assert!(has_pool(&reopened, "before"));
    assert!(!has_pool(&reopened, "lost"));
    assert_eq!(catalog_json(&reopened), committed);
}

#[test]
fn a_torn_journal_write_during_a_catalog_change_leaves_the_whole_batch_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let pool = store.create_pool("before", POOL, POOL).unwrap();
    let volume = store
        .create_volume("v", pool.id, 8 << 20, crate::meta::Provisioning::Thin)
        .unwrap();
    let committed = catalog_json(&store);
    // Uncommitted trims make the next batch several pages long, so a write that lands
    // only its first page tears it.
    append_trims(&store, volume.id);
    create_pool_failing(&store, "lost", Failpoint::JournalTornWrite, "journal write");
    assert!(!has_pool(&store, "lost"));
    drop(store);
    let (reopened, _, report) = reopen_with_report(dir.path());
    assert!(!has_pool(&reopened, "lost"));
    assert_eq!(catalog_json(&reopened), committed);
    // Only the batches of the pool and the volume replay: none of the torn one's records.
    assert_eq!(report.replayed_records, 2, "{report:?}");
}

#[test]
fn a_failed_journal_fsync_during_a_catalog_change_stops_and_the_change_is_whole_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_pool("before", POOL, POOL).unwrap();
    let committed = catalog_json(&store);
    create_pool_failing(&store, "maybe", Failpoint::JournalSync, "journal fsync");
    assert!(
        !has_pool(&store, "maybe"),
        "never served before it is durable"
    );
    assert_eq!(catalog_json(&store), committed);
    drop(store);
    // The write reached the file before the sync failed, so the record is on media:
    // the reopened store holds the change wholly, as its journal does.
    let reopened = open(dir.path());
    let pool = reopened
        .state()
        .catalog
        .pool_by_name("maybe")
        .cloned()
        .expect("the landed record replays");
    assert_eq!(
        (pool.physical_capacity, pool.virtual_capacity),
        (POOL, POOL)
    );
    assert!(has_pool(&reopened, "before"));
    assert_eq!(reopened.state().catalog.pools.len(), 2);
}

#[test]
fn a_failed_checkpoint_or_superblock_write_recovers_from_the_previous_pair_and_the_journal() {
    for (point, operation) in [
        (Failpoint::CheckpointWrite, "checkpoint write"),
        (Failpoint::SuperblockWrite, "superblock write"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_pool("checkpointed", POOL, POOL).unwrap();
        store.checkpoint(|| u64::MAX).unwrap();
        store.create_pool("journaled", POOL, POOL).unwrap();
        let expected = catalog_json(&store);
        let checkpoints = store.counters.checkpoints.load(Ordering::Relaxed);
        arm(point, 0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.checkpoint(|| u64::MAX)
        }));
        let message = stop_message(outcome);
        assert!(
            message.contains(&format!("{operation} on ssd0 failed")),
            "{message}"
        );
        assert_eq!(
            store.counters.checkpoints.load(Ordering::Relaxed),
            checkpoints
        );
        drop(store);
        let (reopened, _, report) = reopen_with_report(dir.path());
        assert_eq!(catalog_json(&reopened), expected, "{operation}");
        assert_eq!(report.replayed_records, 1, "{operation}: {report:?}");
    }
}

#[test]
fn a_torn_batch_at_the_journal_tail_replays_up_to_the_last_whole_batch() {
    // Old content (zeroes, what the log region held before) and garbage, over the
    // header sector or over a payload sector of the last batch.
    for (sector, garbage) in [(0u64, false), (0, true), (1, false), (20, true)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let first = store.create_pool("first", POOL, POOL).unwrap();
        let volume = store
            .create_volume("v", first.id, 8 << 20, crate::meta::Provisioning::Thin)
            .unwrap();
        let whole = catalog_json(&store);
        let last_lsn = store.journal().next_lsn();
        // A last batch of many sectors: trims, then the pool record.
        append_trims(&store, volume.id);
        store.create_pool("third", POOL, POOL).unwrap();
        let layout = store.superblock.lock().layout;
        drop(store);
        let at = layout.log_start + last_lsn % layout.log_len + sector * 512;
        let bytes: Vec<u8> = if garbage {
            (0..512u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect()
        } else {
            vec![0; 512]
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("ssd0.img"))
            .unwrap();
        file.write_at(&bytes, at).unwrap();
        file.sync_all().unwrap();
        drop(file);
        let (reopened, _, report) = reopen_with_report(dir.path());
        let case = format!("sector {sector}, garbage {garbage}");
        assert!(!has_pool(&reopened, "third"), "{case}");
        assert_eq!(catalog_json(&reopened), whole, "{case}");
        assert_eq!(report.replayed_batches, 2, "{case}: {report:?}");
        // Writing resumes where the whole batches end: a new change survives a reopen.
        reopened.create_pool("fourth", POOL, POOL).unwrap();
        drop(reopened);
        let again = open(dir.path());
        assert!(
            has_pool(&again, "fourth") && !has_pool(&again, "third"),
            "{case}"
        );
    }
}

/// Journals (without committing) 400 one-block trims of `volume`: about 14 KiB of records.
fn append_trims(store: &MetaStore, volume: u32) {
    let mut state = store.state_mut();
    for lba in 0..400 {
        let generation = store.next_generation();
        store.trim_locked(&mut state, volume, lba, lba + 1, generation);
    }
}

/// Reopens the small store and reports what recovery replayed.
fn reopen_with_report(dir: &Path) -> (MetaStore, Vec<super::RecoveredBlock>, super::OpenReport) {
    crate::testing::open_small_store_with_report(dir)
}
