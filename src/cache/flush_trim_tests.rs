//! A trim that runs while a flush is between copying dirty blocks and appending their
//! vault records (seen in the power-cut test after a failover, whose promoted mirror
//! copies make the next flush copy megabytes): once the trim is acknowledged and flushed,
//! a crash must not bring the trimmed block's old bytes back from that flush's vault copy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::tests::id;
use super::{Cache, Route, SectionRouter};
use crate::meta::{MetaStore, Provisioning, RecoveredBlock, VolumeHandle};
use crate::testing::open_small_store;
use crate::types::BLOCK_SIZE;

/// 8 MiB per domain.
const DOMAIN_BYTES: u64 = 8 << 20;
/// The block trimmed during the flush, and its neighbour, flushed and kept.
const TRIMMED: u64 = 5;
const KEPT: u64 = 6;

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

fn reopen(dir: &Path) -> (Arc<MetaStore>, Vec<RecoveredBlock>) {
    let (meta, recovered) = open_small_store(dir);
    (Arc::new(meta), recovered)
}

fn handle(meta: &MetaStore, id: u32) -> Arc<VolumeHandle> {
    meta.state().volumes.get(&id).cloned().unwrap()
}

fn read_block(cache: &Cache, volume: &VolumeHandle, lba: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK_SIZE];
    cache
        .read(volume, lba * BLOCK_SIZE as u64, &mut buf)
        .unwrap();
    buf
}

/// The trim runs inside the flush's window when the locks let it (`true`), exactly as
/// [`Cache::discard_blocks`] does; with the window closed it must wait for the flush.
fn trim_inside_flush(cache: &Cache, volume: u32) -> bool {
    let Some(mut state) = cache.meta.try_state_mut() else {
        return false;
    };
    let generation = cache.meta.next_generation();
    cache.discard_locked(&mut state, volume, TRIMMED, TRIMMED + 1, generation);
    true
}

#[test]
fn a_flushed_trim_survives_a_crash_when_it_raced_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = reopen(dir.path());
    let pool = meta.create_pool("pool", 64 << 20, 1 << 30).unwrap();
    let record = meta
        .create_volume("v", pool.id, 16 << 20, Provisioning::Thin)
        .unwrap();
    let cache = Cache::start(
        meta.clone(),
        3,
        DOMAIN_BYTES,
        Vec::new(),
        Arc::new(AllOnFirst),
    );
    cache.set_manual_destage(true);
    let volume = handle(&meta, record.id);
    let old = vec![0xA5u8; 2 * BLOCK_SIZE];
    cache
        .write(&volume, TRIMMED * BLOCK_SIZE as u64, &old)
        .unwrap();

    // A flush copies both dirty blocks; a trim of the first one comes in before the
    // flush appends their vault records (or, when the flush keeps trims out meanwhile,
    // right after it).
    let trimmed_inside = Arc::new(AtomicBool::new(false));
    let flag = trimmed_inside.clone();
    let volume_id = record.id;
    cache.set_flush_hook(Box::new(move |cache| {
        flag.store(trim_inside_flush(cache, volume_id), Ordering::Release);
    }));
    cache.flush().unwrap();
    assert!(
        !cache.flush_hook_pending(),
        "the flush copied no dirty block, so the race was never set up"
    );
    if !trimmed_inside.load(Ordering::Acquire) {
        cache
            .trim(&volume, TRIMMED * BLOCK_SIZE as u64, BLOCK_SIZE as u64)
            .unwrap();
    }
    assert_eq!(read_block(&cache, &volume, TRIMMED), vec![0u8; BLOCK_SIZE]);
    // The trim was acknowledged; this flush makes it durable.
    cache.flush().unwrap();

    // A crash: the store opened again from its files, nothing stopped cleanly.
    let (meta, recovered) = reopen(dir.path());
    let lbas: Vec<u64> = recovered
        .iter()
        .filter(|block| block.volume == record.id)
        .map(|block| block.lba)
        .collect();
    assert!(
        lbas.contains(&KEPT),
        "the flushed write to block {KEPT} was not recovered from the vault: {lbas:?}"
    );
    assert!(
        !lbas.contains(&TRIMMED),
        "recovery brings back the vault copy of block {TRIMMED} written before its flushed trim (trim inside the flush: {})",
        trimmed_inside.load(Ordering::Acquire)
    );
    let cache = Cache::start(
        meta.clone(),
        3,
        DOMAIN_BYTES,
        recovered,
        Arc::new(AllOnFirst),
    );
    cache.set_manual_destage(true);
    let volume = handle(&meta, record.id);
    assert_eq!(
        read_block(&cache, &volume, TRIMMED),
        vec![0u8; BLOCK_SIZE],
        "block {TRIMMED} was trimmed and flushed but reads back its old bytes after the crash"
    );
    assert_eq!(read_block(&cache, &volume, KEPT), vec![0xA5u8; BLOCK_SIZE]);
}
