//! The write path of one section: the owner's copy, then the mirror's.
//!
//! The owner's slot is written first (merging partial blocks with the current bytes), then
//! the same blocks are copied into a mirror slot of the mirror's domain, then the owner's
//! slot is looked at once more: a block the owner destaged (or a trim dropped) in between
//! no longer needs its mirror copy, and that copy is released at once, so the mirror never
//! keeps a block its owner will not release. Each copy keeps, per block, the newest
//! generation it has seen, so two overlapping writes leave the same bytes in both copies.
//! The two shard locks are never held together.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::shard::{Role, SectionKey};
use super::write::block_mask;
use super::{Cache, Route};
use crate::meta::VolumeHandle;
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, IoError};

/// The merged bytes of a write's partial first and last blocks, for the mirror: one pair
/// per thread, so a section write neither allocates nor clears 8 KiB of stack.
struct PartialBlocks {
    bytes: [[u8; BLOCK_SIZE]; 2],
}

thread_local! {
    static PARTIAL: std::cell::RefCell<PartialBlocks> =
        const { std::cell::RefCell::new(PartialBlocks { bytes: [[0; BLOCK_SIZE]; 2] }) };
}

impl Cache {
    pub(super) fn write_section(
        &self,
        route: Route,
        volume: &VolumeHandle,
        section: u64,
        within: usize,
        data: &[u8],
        generation: u64,
    ) -> Result<(), IoError> {
        let key = (volume.id.0, section);
        PARTIAL.with(|partial| {
            let mut partial = partial.borrow_mut();
            self.write_both(route, volume, key, within, data, generation, &mut partial)
        })
    }

    /// [`Cache::write_section`] with the thread's partial-block buffers.
    #[allow(clippy::too_many_arguments)]
    fn write_both(
        &self,
        route: Route,
        volume: &VolumeHandle,
        key: SectionKey,
        within: usize,
        data: &[u8],
        generation: u64,
        partial: &mut PartialBlocks,
    ) -> Result<(), IoError> {
        let first_block = within / BLOCK_SIZE;
        let last_block = (within + data.len() - 1) / BLOCK_SIZE;
        // Read before the owner's copy exists: every vault record of this write (a flush
        // may vault it before the mirror copy is made) is at or after it.
        let since = self.meta.journal().lsn_floor();
        self.write_primary(route.owner, volume, key, within, data, generation, partial)?;
        #[cfg(test)]
        self.fault_point(super::tests::FaultPoint::AfterPrimary)?;
        let Some(mirror) = route.mirror else {
            return Ok(());
        };
        let block_bytes = |block: usize| -> &[u8] {
            if block == first_block && !within.is_multiple_of(BLOCK_SIZE) {
                return &partial.bytes[0];
            }
            let block_end = (block + 1) * BLOCK_SIZE;
            if block == last_block && block_end > within + data.len() {
                return &partial.bytes[1];
            }
            let from = block * BLOCK_SIZE - within;
            &data[from..from + BLOCK_SIZE]
        };
        let mask = block_mask(first_block, last_block);
        if let Err(err) = self.write_mirror(mirror, key, mask, &block_bytes, &|_| generation, since)
        {
            // Not acknowledged: the owner's copy stays (a later write or destage settles
            // it) but must not be mistaken for mirrored.
            self.mark_unmirrored(route.owner, key, mask, generation);
            return Err(err);
        }
        self.counters
            .blocks_mirrored
            .fetch_add(u64::from(mask.count_ones()), Ordering::Relaxed);
        #[cfg(test)]
        self.fault_point(super::tests::FaultPoint::AfterMirror)?;
        self.settle_mirror(route.owner, mirror, key, mask, &|_| generation);
        Ok(())
    }

    /// Writes the owner's copy; keeps the merged bytes of partial end blocks in `partial`.
    #[allow(clippy::too_many_arguments)]
    fn write_primary(
        &self,
        owner: ControllerId,
        volume: &VolumeHandle,
        key: SectionKey,
        within: usize,
        data: &[u8],
        generation: u64,
        partial: &mut PartialBlocks,
    ) -> Result<(), IoError> {
        let domain = &self.domains[owner];
        let first_block = within / BLOCK_SIZE;
        let last_block = (within + data.len() - 1) / BLOCK_SIZE;
        let base_lba = key.1 * BLOCKS_PER_SECTION as u64;
        let mut looked_up: Option<u16> = None;
        let mut deadline = None;
        loop {
            let mut shard = domain.shard(key).inner.lock();
            let Some(slot) = shard.find_or_insert(key, Role::Primary) else {
                drop(shard);
                domain.slot_pressure.store(true, Ordering::Release);
                self.wait_for_space(&mut deadline, Duration::from_millis(10), || IoError::Media {
                    volume: volume.name.clone(),
                    detail: "no cache slot came free for 120 s; destage is stuck, check the NL-SAS devices".into(),
                })?;
                continue;
            };
            if shard.slots[slot as usize].role != Role::Primary {
                // Ownership and the cache disagree: never mix a mirror copy into a primary.
                return Err(IoError::Paused);
            }
            // Partial blocks need their current bytes first.
            let valid = shard.slots[slot as usize].valid;
            if let Some(block) = partial_block_missing(valid, within, data.len()) {
                drop(shard);
                self.fill_block(owner, volume, key, block)?;
                continue;
            }
            // Space accounting: a block that is neither dirty nor mapped needs a block of
            // its pool. Whether it is mapped is known from earlier fills and destages;
            // otherwise ask the map once (outside the shard lock).
            let range = block_mask(first_block, last_block);
            let entry = &mut shard.slots[slot as usize];
            let candidates = range & !(entry.dirty | entry.reserved);
            if candidates & !entry.known != 0 {
                match looked_up {
                    None => {
                        drop(shard);
                        looked_up =
                            Some(self.mapped_bits(volume.id.0, base_lba, first_block, last_block));
                        continue;
                    }
                    Some(bits) => {
                        entry.mapped = (entry.mapped & entry.known) | (bits & range & !entry.known);
                        entry.known |= range;
                    }
                }
            }
            let need = candidates & !entry.mapped;
            reserve_blocks(volume, u64::from(need.count_ones()))?;
            if need != 0 {
                entry.reserved |= need;
                entry.pool = Some(volume.pool.clone());
            }
            let mut newly_dirty = 0;
            for block in first_block..=last_block {
                let bit = 1u16 << block;
                let entry = &mut shard.slots[slot as usize];
                if entry.dirty & bit != 0 && entry.generation[block] > generation {
                    // A write that started later already landed here: it wins.
                    continue;
                }
                if entry.dirty & bit == 0 {
                    newly_dirty += 1;
                }
                entry.valid |= bit;
                entry.dirty |= bit;
                entry.unvaulted |= bit;
                entry.generation[block] = generation;
                entry.ssd.clear(bit);
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + data.len());
                let from = start - within;
                let bytes = shard.block_mut(slot, block);
                bytes[start - block * BLOCK_SIZE..end - block * BLOCK_SIZE]
                    .copy_from_slice(&data[from..from + end - start]);
                if end - start < BLOCK_SIZE {
                    // The same choice as the mirror's `block_bytes` makes.
                    let head = block == first_block && !within.is_multiple_of(BLOCK_SIZE);
                    partial.bytes[usize::from(!head)].copy_from_slice(bytes);
                }
            }
            shard.queue_dirty(slot);
            shard.queue_unvaulted(slot);
            // Counted before the lock goes, so a destage that sees these blocks dirty
            // finds them counted (see the domain module doc).
            let dirty = (newly_dirty > 0).then(|| {
                domain
                    .primary_dirty
                    .fetch_add(newly_dirty, Ordering::AcqRel)
                    + newly_dirty
            });
            drop(shard);
            if let Some(dirty) = dirty
                && dirty + domain.mirror_dirty.load(Ordering::Relaxed) >= self.destage_high
            {
                self.kick_destage(owner);
            }
            return Ok(());
        }
    }

    /// Copies blocks `mask` of section `key` into a mirror slot of domain `mirror`, each
    /// at `generation(block)` unless the slot holds a newer one. Waits for a slot.
    /// `since`: a journal position at or before every vault record of these blocks'
    /// generations (the slot keeps the oldest as its `vault_lsn`, so that the records
    /// outlive checkpoints should the copy become the primary).
    pub(super) fn write_mirror<'a>(
        &self,
        mirror: ControllerId,
        key: SectionKey,
        mask: u16,
        bytes: &'a dyn Fn(usize) -> &'a [u8],
        generation: &dyn Fn(usize) -> u64,
        since: u64,
    ) -> Result<(), IoError> {
        let mut deadline = None;
        loop {
            match self.try_write_mirror(mirror, key, mask, bytes, generation, since) {
                Some(()) => return Ok(()),
                None => {
                    self.domains[mirror]
                        .slot_pressure
                        .store(true, Ordering::Release);
                    self.wait_for_space(&mut deadline, Duration::from_millis(10), || {
                        IoError::Media {
                            volume: String::new(),
                            detail: format!(
                                "controller {} had no cache slot for a mirror copy for 120 s; destage is stuck, check the NL-SAS devices",
                                mirror
                            ),
                        }
                    })?;
                }
            }
        }
    }

    /// One attempt of [`Cache::write_mirror`]; `None` when the domain has no slot free.
    pub(super) fn try_write_mirror<'a>(
        &self,
        mirror: ControllerId,
        key: SectionKey,
        mask: u16,
        bytes: &'a dyn Fn(usize) -> &'a [u8],
        generation: &dyn Fn(usize) -> u64,
        since: u64,
    ) -> Option<()> {
        let domain = &self.domains[mirror];
        let mut shard = domain.shard(key).inner.lock();
        let slot = shard.find_or_insert(key, Role::Mirror)?;
        if shard.slots[slot as usize].role != Role::Mirror {
            // The mirror owns this section itself: ownership changed under a caller that
            // did not hold the pause; nothing to copy.
            return Some(());
        }
        let mut newly_dirty = 0u64;
        for block in 0..BLOCKS_PER_SECTION {
            let bit = 1u16 << block;
            if mask & bit == 0 {
                continue;
            }
            let generation = generation(block);
            let entry = &mut shard.slots[slot as usize];
            if entry.dirty & bit != 0 {
                if entry.generation[block] > generation {
                    continue;
                }
            } else {
                newly_dirty += 1;
            }
            entry.dirty |= bit;
            entry.valid |= bit;
            entry.generation[block] = generation;
            entry.ssd.clear(bit);
            shard
                .block_mut(slot, block)
                .copy_from_slice(&bytes(block)[..BLOCK_SIZE]);
        }
        let entry = &mut shard.slots[slot as usize];
        entry.vault_lsn = entry.vault_lsn.min(since);
        if entry.dirty == 0 {
            shard.release(slot);
        }
        // Counted before the lock goes (see the domain module doc).
        domain.mirror_dirty.fetch_add(newly_dirty, Ordering::AcqRel);
        Some(())
    }

    /// After a mirror copy of blocks `mask`: those the owner still holds dirty at their
    /// generation are mirrored now; the others were destaged or dropped in between, and
    /// their fresh mirror copy is released.
    pub(super) fn settle_mirror(
        &self,
        owner: ControllerId,
        mirror: ControllerId,
        key: SectionKey,
        mask: u16,
        generation: &dyn Fn(usize) -> u64,
    ) {
        let domain = &self.domains[owner];
        let mut stale = 0u16;
        let mut mirrored = 0u64;
        {
            let mut shard = domain.shard(key).inner.lock();
            let slot = shard.index.get(&key).copied();
            for block in 0..BLOCKS_PER_SECTION {
                let bit = 1u16 << block;
                if mask & bit == 0 {
                    continue;
                }
                match slot {
                    Some(slot)
                        if shard.slots[slot as usize].role == Role::Primary
                            && shard.slots[slot as usize].holds_dirty(
                                key,
                                block,
                                generation(block),
                            ) =>
                    {
                        let entry = &mut shard.slots[slot as usize];
                        if entry.unmirrored & bit != 0 {
                            entry.unmirrored &= !bit;
                            mirrored += 1;
                        }
                    }
                    _ => stale |= bit,
                }
            }
        }
        if mirrored > 0 {
            domain.release_unmirrored(mirrored);
        }
        if stale != 0 {
            self.release_mirror(owner, mirror, key, stale, generation);
        }
    }

    /// Releases the mirror copies in domain `mirror` of blocks `mask` of `key` held at or
    /// below `generation(block)` (their owner, domain `owner`, destaged, dropped or
    /// rewrote that generation).
    pub(super) fn release_mirror(
        &self,
        owner: ControllerId,
        mirror: ControllerId,
        key: SectionKey,
        mask: u16,
        generation: &dyn Fn(usize) -> u64,
    ) {
        let domain = &self.domains[mirror];
        let mut released = 0u16;
        // The generations of the copies released (read in debug builds only).
        let released_at;
        {
            let mut shard = domain.shard(key).inner.lock();
            let Some(slot) = shard.index.get(&key).copied() else {
                return;
            };
            if shard.slots[slot as usize].role != Role::Mirror {
                return;
            }
            let entry = &mut shard.slots[slot as usize];
            for block in 0..BLOCKS_PER_SECTION {
                let bit = 1u16 << block;
                if mask & bit != 0
                    && entry.dirty & bit != 0
                    && entry.generation[block] <= generation(block)
                {
                    entry.dirty &= !bit;
                    entry.valid &= !bit;
                    released |= bit;
                }
            }
            released_at = entry.generation;
            if entry.dirty == 0 {
                shard.release(slot);
            }
        }
        if released != 0 {
            domain.release_mirror_dirty(u64::from(released.count_ones()));
            self.signals.space.notify_all();
            debug_assert_eq!(
                self.still_held_dirty(owner, key, released, &released_at),
                0,
                "controller {} released mirror copies of section {} of volume {} (left: the mask of those blocks) that controller {}, their owner, still holds dirty at the same generation, neither destaged nor rewritten: those acknowledged writes are left with one copy",
                mirror,
                key.1,
                key.0,
                owner
            );
        }
    }

    /// Of blocks `mask` of `key`, those `owner` holds as their owner dirty at
    /// `generations[block]` (a lock of one shard of the owner).
    fn still_held_dirty(
        &self,
        owner: ControllerId,
        key: SectionKey,
        mask: u16,
        generations: &[u64; BLOCKS_PER_SECTION],
    ) -> u16 {
        let shard = self.domains[owner].shard(key).inner.lock();
        let Some(&slot) = shard.index.get(&key) else {
            return 0;
        };
        let entry = &shard.slots[slot as usize];
        if entry.role != Role::Primary {
            return 0;
        }
        (0..BLOCKS_PER_SECTION)
            .filter(|&block| {
                mask & (1 << block) != 0 && entry.holds_dirty(key, block, generations[block])
            })
            .fold(0, |held, block| held | 1 << block)
    }

    /// Marks blocks `mask` of the owner's slot, still at `generation`, as lacking a mirror
    /// copy (a mirror write failed).
    fn mark_unmirrored(&self, owner: ControllerId, key: SectionKey, mask: u16, generation: u64) {
        let domain = &self.domains[owner];
        let mut added = 0u64;
        {
            let mut shard = domain.shard(key).inner.lock();
            let Some(slot) = shard.index.get(&key).copied() else {
                return;
            };
            let entry = &mut shard.slots[slot as usize];
            for block in 0..BLOCKS_PER_SECTION {
                let bit = 1u16 << block;
                if mask & bit != 0
                    && entry.holds_dirty(key, block, generation)
                    && entry.unmirrored & bit == 0
                {
                    entry.unmirrored |= bit;
                    added += 1;
                }
            }
            // Counted before the lock goes (see the domain module doc).
            domain.unmirrored.fetch_add(added, Ordering::AcqRel);
        }
    }
}

/// The first of the end blocks of a write of `len` bytes at `within` in a section that the
/// write covers only partly and whose bytes are not in the slot yet (`valid`): its
/// current bytes must be read in before the write merges into it.
fn partial_block_missing(valid: u16, within: usize, len: usize) -> Option<usize> {
    let (first_block, last_block) = (within / BLOCK_SIZE, (within + len - 1) / BLOCK_SIZE);
    [first_block, last_block].into_iter().find(|&block| {
        let start = (block * BLOCK_SIZE).max(within);
        let end = ((block + 1) * BLOCK_SIZE).min(within + len);
        end - start < BLOCK_SIZE && valid & (1 << block) == 0
    })
}

/// Reserves `count` blocks of `volume`'s pool for blocks written for the first time; on
/// failure gives back those taken and refuses the write.
fn reserve_blocks(volume: &VolumeHandle, count: u64) -> Result<(), IoError> {
    for taken in 0..count {
        if !volume.pool.try_reserve() {
            volume.pool.release(taken);
            return Err(IoError::NoSpace {
                pool: volume.pool.name.clone(),
            });
        }
    }
    Ok(())
}
