//! Discards: trim, and the dropping of a volume's cached blocks (and map entries) when
//! blocks are trimmed, a volume shrinks, is deleted or takes other contents. The metadata
//! lock is held throughout, so no reader puts old bytes back, no destage commit slips
//! in between, and no flush appends a vault copy taken before the discard after its
//! record (the flush holds the lock, shared, from its copy to its append).

use super::Cache;
use super::domain::shard_of;
use super::shard::Role;
use crate::meta::VolumeHandle;
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, IoError};

impl Cache {
    /// Makes `[offset, offset+len)` read as zeroes, releasing whole blocks' space.
    pub fn trim(&self, volume: &VolumeHandle, offset: u64, len: u64) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        Self::check_not_protected(volume)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first_full = offset.div_ceil(BLOCK_SIZE as u64);
        let end_full = end / BLOCK_SIZE as u64;
        if first_full >= end_full {
            return self.write_zero_bytes(volume, offset, len);
        }
        let head = first_full * BLOCK_SIZE as u64 - offset;
        if head > 0 {
            self.write_zero_bytes(volume, offset, head)?;
        }
        let tail_start = end_full * BLOCK_SIZE as u64;
        if tail_start < end {
            self.write_zero_bytes(volume, tail_start, end - tail_start)?;
        }
        self.discard_blocks(volume.id.0, first_full, end_full);
        Ok(())
    }

    /// Drops blocks `[start, end)` of a volume from every domain (primaries and mirror
    /// copies) and from the map (trim, shrink, delete).
    ///
    /// The metadata lock is held throughout, so a reader that looked the map up before
    /// the discard cannot put the old bytes back into cache after it (its map version
    /// check fails), and no destage commit can slip in between.
    pub fn discard_blocks(&self, volume: u32, start: u64, end: u64) {
        let mut state = self.meta.state_mut();
        let generation = self.meta.next_generation();
        let released_any = self.discard_locked(&mut state, volume, start, end, generation);
        drop(state);
        if released_any {
            self.signals.space.notify_all();
        }
    }

    /// Drops every cached block of `volume` (dirty ones too, giving back their space
    /// reservations) and leaves its map alone: for a dataset about to be deleted or to
    /// take other contents, whose map the catalog change then drops or replaces whole.
    /// Trimming that map first would cost a walk of every mapped block (and a copy of
    /// every tree node a snapshot shares); recovery drops the vault copies of a deleted
    /// or replaced dataset's blocks by the catalog record itself.
    ///
    /// Holds the metadata lock as [`Cache::discard_blocks`] does, for the same reasons.
    pub fn forget_volume(&self, volume: u32) {
        let state = self.meta.state_mut();
        let generation = self.meta.next_generation();
        let released_any = self.drop_cached(volume, 0, u64::MAX, generation);
        drop(state);
        if released_any {
            self.signals.space.notify_all();
        }
    }

    /// [`Cache::discard_blocks`] for a caller holding the metadata lock: drops cached
    /// blocks written before `generation` and trims the map. Returns whether dirty blocks
    /// were dropped (writers waiting for room should be woken once the lock is released).
    pub(super) fn discard_locked(
        &self,
        state: &mut crate::meta::MetaState,
        volume: u32,
        start: u64,
        end: u64,
        generation: u64,
    ) -> bool {
        let released_any = self.drop_cached(volume, start, end, generation);
        self.meta.trim_locked(state, volume, start, end, generation);
        released_any
    }

    /// The cache's part of a discard: drops blocks `[start, end)` of `volume` written
    /// before `generation` from every domain. The caller holds the metadata lock.
    pub(super) fn drop_cached(&self, volume: u32, start: u64, end: u64, generation: u64) -> bool {
        let first_section = start / BLOCKS_PER_SECTION as u64;
        let end_section = end.div_ceil(BLOCKS_PER_SECTION as u64);
        let mut released_any = false;
        for domain in self.domains.values() {
            for (index, shard) in domain.shards.iter().enumerate() {
                let mut shard = shard.inner.lock();
                let slots: Vec<u32> = if end_section - first_section <= shard.slots.len() as u64 {
                    (first_section..end_section)
                        .filter(|section| shard_of((volume, *section)) == index)
                        .filter_map(|section| shard.index.get(&(volume, section)).copied())
                        .collect()
                } else {
                    shard
                        .index
                        .iter()
                        .filter(|((v, section), _)| {
                            *v == volume && (first_section..end_section).contains(section)
                        })
                        .map(|(_, slot)| *slot)
                        .collect()
                };
                for slot in slots {
                    let section = shard.slots[slot as usize]
                        .key
                        .expect("indexed slot has a key")
                        .1;
                    let mut mask = 0u16;
                    for block in 0..BLOCKS_PER_SECTION {
                        let lba = section * BLOCKS_PER_SECTION as u64 + block as u64;
                        if (start..end).contains(&lba)
                            && shard.slots[slot as usize].generation[block] < generation
                        {
                            mask |= 1 << block;
                        }
                    }
                    let entry = &mut shard.slots[slot as usize];
                    let reserved = (entry.reserved & entry.dirty & mask).count_ones();
                    if reserved > 0
                        && let Some(pool) = &entry.pool
                    {
                        pool.release(u64::from(reserved));
                    }
                    let dropped = u64::from((entry.dirty & mask).count_ones());
                    let unmirrored =
                        u64::from((entry.unmirrored & entry.dirty & mask).count_ones());
                    match entry.role {
                        Role::Primary => {
                            domain.release_primary_dirty(dropped);
                            domain.release_unmirrored(unmirrored);
                        }
                        Role::Mirror => domain.release_mirror_dirty(dropped),
                    }
                    released_any |= dropped > 0;
                    entry.valid &= !mask;
                    entry.ssd.clear(mask);
                    entry.known &= !mask;
                    entry.dirty &= !mask;
                    entry.unvaulted &= !mask;
                    entry.reserved &= !mask;
                    entry.unmirrored &= !mask;
                    if entry.dirty == 0 {
                        entry.vault_lsn = u64::MAX;
                    }
                    if entry.valid == 0 && entry.dirty == 0 {
                        shard.release(slot);
                    }
                }
            }
        }
        released_any
    }
}
