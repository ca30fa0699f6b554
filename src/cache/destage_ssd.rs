//! The destage's duties to the SSD read cache: forgetting what it holds of segments about
//! to be written again, and re-pointing the notes of clean DRAM copies whose blocks the
//! cleaner moved (so a later offer never names a reused place).

use super::Cache;
use crate::meta::MetaState;
use crate::types::BLOCKS_PER_SECTION;

impl Cache {
    /// Points the SSD notes of clean DRAM copies of relocated blocks (any family member's)
    /// at their new places. The caller holds the metadata lock (shard locks come after it).
    pub(super) fn renote_relocated(&self, state: &MetaState, relocations: &[(u32, u64, u64, u64)]) {
        for &(family, lba, old, new) in relocations {
            let section = lba / BLOCKS_PER_SECTION as u64;
            let block = (lba % BLOCKS_PER_SECTION as u64) as usize;
            for member in state.family_member_ids(family) {
                let key = (member, section);
                let owner = self.router.route(key).owner;
                let Some(domain) = self.domains.get(owner) else {
                    continue;
                };
                let mut shard = domain.shard(key).inner.lock();
                let Some(&slot) = shard.index.get(&key) else {
                    continue;
                };
                let notes = &mut shard.slots[slot as usize].ssd;
                if notes.admissible & (1 << block) != 0 && notes.phys[block] == old {
                    notes.phys[block] = new;
                }
            }
        }
    }

    /// Tells the SSD read cache that the segments `rows` opened are about to be written
    /// again: whatever it holds of their physical blocks means nothing any more. Called
    /// before any row is written.
    pub(super) fn forget_reused_segments(&self, geometry: &crate::layout::Geometry, rows: &[u64]) {
        // The store's attachment, made before the cache starts: recovery's destage too.
        let Some(ssd) = self.meta.read_cache() else {
            return;
        };
        let per_segment = geometry.rows_per_segment;
        for &row in rows.iter().filter(|&&row| row % per_segment == 0) {
            let first = geometry.phys(row, 0);
            let end = geometry.phys(row + per_segment, 0);
            ssd.forget_range(first, end);
        }
    }
}
