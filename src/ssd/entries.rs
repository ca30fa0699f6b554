//! A partition's checkpoint entries in DRAM, sized by what was ever cached, and which
//! entry pages a checkpoint carries.
//!
//! Slots are handed out from 0 upward within each index shard's range (the policy
//! contract), so each shard has a **high-water mark**: how many of its slots were ever
//! handed out (monotone; a `restore` may place a slot above it, which raises it). A
//! checkpoint records the marks in its header and carries only the entry pages that cover
//! `[shard_start, shard_start + mark)` of each shard: a slot above its shard's mark is
//! empty by definition, whatever stale bytes the media holds for it. So an empty cache
//! costs a header page per checkpoint, and a rebuild allocates 40 B per slot below the
//! marks, not per slot of the partition.

use std::ops::Range;

use super::BlockIdentity;
use super::format::{ENTRIES_PER_PAGE, Geometry, NONE, empty_identity};

/// The entries of the slots below each shard's mark (phys = [`NONE`] for empty).
pub(super) struct Entries {
    geometry: Geometry,
    /// Per shard, one entry per slot from the shard's first slot up to its mark.
    shards: Vec<Vec<BlockIdentity>>,
}

impl Entries {
    /// Every shard empty, up to `marks` (one per shard, each within its shard).
    pub fn with_marks(geometry: Geometry, marks: &[u32]) -> Entries {
        let shards = (0..geometry.shards)
            .map(|shard| {
                let mark = marks.get(shard as usize).copied().unwrap_or(0);
                vec![empty_identity(NONE); mark as usize]
            })
            .collect();
        Entries { geometry, shards }
    }

    /// The high-water mark of every shard.
    pub fn marks(&self) -> Vec<u32> {
        self.shards.iter().map(|shard| shard.len() as u32).collect()
    }

    /// `slot` as (shard, index in the shard), when it is a slot of the partition.
    fn locate(&self, slot: u32) -> Option<(usize, usize)> {
        if slot >= self.geometry.slots {
            return None;
        }
        let shard = self.geometry.shard_of_slot(slot);
        let (first, _) = self.geometry.shard_range(shard);
        Some((shard as usize, (slot - first) as usize))
    }

    /// The entry of `slot`; empty above its shard's mark.
    pub fn get(&self, slot: u32) -> BlockIdentity {
        self.locate(slot)
            .and_then(|(shard, at)| self.shards[shard].get(at).copied())
            .unwrap_or(empty_identity(NONE))
    }

    /// The entry of `slot` when it is below its shard's mark.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut BlockIdentity> {
        let (shard, at) = self.locate(slot)?;
        self.shards[shard].get_mut(at)
    }

    /// The entry of `slot`, raising its shard's mark to cover it (a slot handed out after
    /// the checkpoint); `None` when `slot` is not a slot of the partition.
    pub fn get_mut_raising(&mut self, slot: u32) -> Option<&mut BlockIdentity> {
        let (shard, at) = self.locate(slot)?;
        let entries = &mut self.shards[shard];
        if entries.len() <= at {
            entries.resize(at + 1, empty_identity(NONE));
        }
        Some(&mut entries[at])
    }

    /// Calls `f(slot, entry)` for every slot below the marks.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(u32, &mut BlockIdentity)) {
        for (shard, entries) in self.shards.iter_mut().enumerate() {
            let (first, _) = self.geometry.shard_range(shard as u32);
            for (at, entry) in entries.iter_mut().enumerate() {
                f(first + at as u32, entry);
            }
        }
    }
}

/// True when `slot` is below its shard's mark.
pub(super) fn is_marked(geometry: &Geometry, marks: &[u32], slot: u32) -> bool {
    if slot >= geometry.slots {
        return false;
    }
    let shard = geometry.shard_of_slot(slot);
    let (first, _) = geometry.shard_range(shard);
    marks
        .get(shard as usize)
        .is_some_and(|&mark| slot - first < mark)
}

/// True when `marks` has one mark per shard, each within its shard.
pub(super) fn marks_fit(geometry: &Geometry, marks: &[u32]) -> bool {
    marks.len() == geometry.shards as usize
        && marks
            .iter()
            .enumerate()
            .all(|(shard, &mark)| mark <= geometry.shard_range(shard as u32).1)
}

/// The entry pages (numbered from 0, after the checkpoint's header) that cover the slots
/// below the marks: increasing, disjoint ranges (a page shared by two shards once).
pub(super) fn marked_pages(geometry: &Geometry, marks: &[u32]) -> Vec<Range<u32>> {
    let per_page = ENTRIES_PER_PAGE as u32;
    let mut pages: Vec<Range<u32>> = Vec::new();
    for (shard, &mark) in marks.iter().enumerate() {
        if mark == 0 {
            continue;
        }
        let (first, _) = geometry.shard_range(shard as u32);
        let range = first / per_page..(first + mark - 1) / per_page + 1;
        match pages.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => pages.push(range),
        }
    }
    pages
}
