//! Tests of what checkpoints cost and carry: the shards' high-water marks.

use super::entries::{Entries, is_marked, marked_pages};
use super::format::{ENTRIES_PER_PAGE, Geometry, PAGE};
use super::persist::LiveIndex;
use super::tests::{MIB, Rig, offer_all, read};
use super::*;
use crate::io::IoRing;

/// Checkpoints every partition now; returns the bytes written.
pub(super) fn checkpoint_bytes(cache: &SsdCache) -> u64 {
    let inner = &cache.inner;
    let mut ring = IoRing::new(64).unwrap();
    inner
        .partitions
        .iter()
        .map(|partition| {
            partition
                .log
                .lock()
                .checkpoint(&inner.media, &mut ring, partition)
                .unwrap()
        })
        .sum()
}

fn marks(cache: &SsdCache, partition: usize) -> Vec<u32> {
    cache.inner.partitions[partition].marks()
}

#[test]
fn marked_pages_cover_each_shard_below_its_mark_once() {
    let geometry = Geometry::for_region(64 * MIB, 1).unwrap();
    assert_eq!(geometry.shards, 16);
    let per_page = ENTRIES_PER_PAGE as u32;
    let span = geometry.shard_span();
    let mut marks = vec![0; 16];
    assert!(marked_pages(&geometry, &marks).is_empty(), "empty: no page");
    marks[0] = 1;
    marks[1] = per_page + 1;
    marks[15] = 3;
    let pages = marked_pages(&geometry, &marks);
    let shard1 = span / per_page..(span + per_page) / per_page + 1;
    let last_first = 15 * span;
    assert_eq!(
        pages,
        vec![
            0..1,
            shard1,
            last_first / per_page..(last_first + 2) / per_page + 1
        ]
    );
    assert!(is_marked(&geometry, &marks, span + per_page));
    assert!(!is_marked(&geometry, &marks, span + per_page + 1));
    assert!(!is_marked(&geometry, &marks, 1));
    assert!(!is_marked(&geometry, &marks, geometry.slots));
    let mut entries = Entries::with_marks(geometry, &marks);
    assert!(entries.get_mut(2 * span).is_none(), "shard 2 has no mark");
    entries.get_mut_raising(2 * span + 4).unwrap().phys = 9;
    assert_eq!(entries.marks()[2], 5, "raised to cover the slot");
    assert_eq!(entries.get(2 * span + 4).phys, 9);
    assert!(entries.get_mut_raising(geometry.slots).is_none());
}

#[test]
fn a_checkpoint_writes_only_the_pages_below_the_marks() {
    let rig = Rig::new(256 * MIB);
    let (cache, _) = rig.open(2);
    let geometry = cache.inner.media.geometry;
    let full_copy = u64::from(geometry.checkpoint_pages) * PAGE as u64;
    assert_eq!(
        checkpoint_bytes(&cache),
        2 * PAGE as u64,
        "an empty cache: one header page per partition"
    );
    offer_all(&cache, 0, 0..500);
    let written = checkpoint_bytes(&cache);
    let pages = marked_pages(&geometry, &marks(&cache, 0));
    let expected: u32 = pages.iter().map(|range| range.end - range.start).sum();
    assert_eq!(written, (u64::from(expected) + 2) * PAGE as u64);
    assert!(
        written < full_copy / 4,
        "{written} bytes against {full_copy} for a whole copy"
    );
    assert_eq!(marks(&cache, 1), vec![0; geometry.shards as usize]);
    cache.shutdown();
    drop(cache);
    let (cache, report) = rig.open(2);
    assert_eq!((report.restored, report.dropped), (500, 0));
    for phys in 0..500 {
        assert_eq!(read(&cache, 0, phys), SsdRead::Hit, "phys {phys}");
    }
}

#[test]
fn slots_handed_out_after_a_checkpoint_come_back_from_the_log() {
    let rig = Rig::new(16 * MIB);
    let (cache, _) = rig.open(1);
    offer_all(&cache, 0, 0..100);
    checkpoint_bytes(&cache);
    let recorded = marks(&cache, 0);
    offer_all(&cache, 0, 100..400);
    let grown = marks(&cache, 0);
    assert!(
        grown
            .iter()
            .zip(&recorded)
            .all(|(after, before)| after > before),
        "every shard handed out slots above its recorded mark: {recorded:?} -> {grown:?}"
    );
    drop(cache); // no shutdown: the new slots are only in the log
    let (cache, report) = rig.open(1);
    assert_eq!((report.restored, report.dropped), (400, 0));
    assert_eq!(marks(&cache, 0), grown, "the log raised the marks");
    for phys in 0..400 {
        assert_eq!(read(&cache, 0, phys), SsdRead::Hit, "phys {phys}");
    }
    // Checkpointed with the raised marks, everything survives a second restart.
    cache.shutdown();
    drop(cache);
    let (cache, report) = rig.open(1);
    assert_eq!(report.restored, 400);
    assert_eq!(marks(&cache, 0), grown);
}

#[test]
fn a_region_of_the_format_before_the_marks_is_formatted() {
    let rig = Rig::new(8 * MIB);
    let (cache, _) = rig.open(1);
    offer_all(&cache, 0, 0..50);
    cache.shutdown();
    drop(cache);
    let mut header = std::fs::read(&rig.path).unwrap()[..PAGE].to_vec();
    header[16..20].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&header[..PAGE - 4]);
    header[PAGE - 4..].copy_from_slice(&crc.to_le_bytes());
    rig.scribble(0, &header);
    let (cache, report) = rig.open(1);
    assert!(report.formatted && report.restored == 0, "{report:?}");
    assert_eq!(read(&cache, 0, 7), SsdRead::Miss);
}
