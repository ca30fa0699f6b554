//! The read path: a host read served from its sections' owners' caches, or from the
//! array through a verified (and if need be repaired) read of the map, whose blocks are
//! then installed clean in the owner's cache; prefetch and block status ride on it.

use std::sync::atomic::Ordering;

use super::shard::Role;
use super::{Cache, Extent, SectionKey};
use crate::io::{AlignedBuf, with_thread_ring};
use crate::meta::{BlockRead, VolumeHandle};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, IoError, SECTION_SIZE};

thread_local! {
    static SCRATCH: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::new(BLOCK_SIZE));
}

/// A block read from the array on its way into its owner's slot: the map version read
/// before it, how the verified read ended, the volume's family, and whether it may be
/// offered to the SSD read cache when its slot goes.
pub(super) struct Fill {
    pub version: u64,
    pub outcome: BlockRead,
    pub family: u32,
    pub admissible: bool,
}

impl Cache {
    /// Brings one block into its owner's slot from the array (zeroes when unmapped).
    pub(super) fn fill_block(
        &self,
        owner: ControllerId,
        volume: &VolumeHandle,
        key: SectionKey,
        block: usize,
    ) -> Result<(), IoError> {
        let lba = key.1 * BLOCKS_PER_SECTION as u64 + block as u64;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let version = self.meta.map_version();
            let outcome = with_thread_ring(|ring| {
                self.meta.read_block(
                    ring,
                    volume,
                    lba,
                    &mut scratch,
                    self.ssd_partition(owner, volume),
                )
            })?;
            // About to be written: not worth offering to the SSD cache.
            let fill = Fill {
                version,
                outcome,
                family: volume.family,
                admissible: false,
            };
            self.install_clean(owner, key, block, &scratch, fill);
            Ok(())
        })
    }

    /// The SSD read cache's partition `owner`'s reads of `volume` look in, if they may.
    fn ssd_partition(&self, owner: ControllerId, volume: &VolumeHandle) -> Option<usize> {
        (self.ssd.get().is_some() && volume.ssd_enabled.load(Ordering::Relaxed))
            .then(|| owner.index())
    }

    /// Installs bytes read from the array, unless the block changed meanwhile.
    pub(super) fn install_clean(
        &self,
        owner: ControllerId,
        key: SectionKey,
        block: usize,
        bytes: &[u8],
        fill: Fill,
    ) {
        let Fill {
            version,
            outcome,
            family,
            admissible,
        } = fill;
        let domain = &self.domains[owner];
        let mut shard = domain.shard(key).inner.lock();
        if self.meta.map_version() != version {
            return;
        }
        let Some(slot) = shard.find_or_insert(key, Role::Primary) else {
            return;
        };
        let bit = 1u16 << block;
        if shard.slots[slot as usize].valid & bit != 0
            || shard.slots[slot as usize].role != Role::Primary
        {
            return;
        }
        shard
            .block_mut(slot, block)
            .copy_from_slice(&bytes[..BLOCK_SIZE]);
        let entry = &mut shard.slots[slot as usize];
        entry.valid |= bit;
        let mut offer_now = false;
        if let BlockRead::Read {
            generation,
            phys,
            checksum,
            ssd,
        } = outcome
        {
            // A copy that came from the SSD is there already: offering it again is waste.
            let admit = admissible && !ssd;
            entry
                .ssd
                .set(block, family, (phys, checksum, generation), admit);
            offer_now = admit;
        } else {
            entry.ssd.clear(bit);
        }
        if let BlockRead::Repaired { generation } = outcome {
            // Rewrite the repaired block elsewhere: it goes out with the next destage.
            // (It is the committed content, so it needs no mirror copy.)
            entry.dirty |= bit;
            entry.unvaulted |= bit;
            entry.generation[block] = generation;
            shard.queue_dirty(slot);
            shard.queue_unvaulted(slot);
            // Counted before the lock goes (see the domain module doc).
            domain.primary_dirty.fetch_add(1, Ordering::AcqRel);
        }
        if offer_now {
            shard.offer_block(slot, block);
        }
    }

    /// Reads `buf.len()` bytes at `offset` of `volume`.
    pub fn read(&self, volume: &VolumeHandle, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        Self::check_range(volume, offset, buf.len() as u64)?;
        let sequential = self.ssd.get().is_some()
            && self.streams.sequential(
                volume.id.0,
                offset,
                buf.len() as u64,
                self.sequential_cutoff.load(Ordering::Relaxed),
            );
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let section = at / SECTION_SIZE as u64;
            let within = (at % SECTION_SIZE as u64) as usize;
            let take = (SECTION_SIZE - within).min(buf.len() - done);
            let owner = self.router.route((volume.id.0, section)).owner;
            self.read_section(
                owner,
                volume,
                section,
                within,
                &mut buf[done..done + take],
                sequential,
            )?;
            done += take;
        }
        Ok(())
    }

    pub(super) fn read_section(
        &self,
        owner: ControllerId,
        volume: &VolumeHandle,
        section: u64,
        within: usize,
        out: &mut [u8],
        sequential: bool,
    ) -> Result<(), IoError> {
        let key = (volume.id.0, section);
        let domain = &self.domains[owner];
        let first_block = within / BLOCK_SIZE;
        let last_block = (within + out.len() - 1) / BLOCK_SIZE;
        let mut missing = 0u16;
        {
            let mut shard = domain.shard(key).inner.lock();
            let slot = shard.find(key);
            for block in first_block..=last_block {
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + out.len());
                let dest = &mut out[start - within..end - within];
                match slot {
                    Some(slot) if shard.slots[slot as usize].valid & (1 << block) != 0 => {
                        dest.copy_from_slice(
                            &shard.block(slot, block)
                                [start - block * BLOCK_SIZE..end - block * BLOCK_SIZE],
                        );
                    }
                    _ => missing |= 1 << block,
                }
            }
        }
        let blocks = (last_block - first_block + 1) as u64;
        let misses = u64::from(missing.count_ones());
        self.counters
            .read_hits
            .fetch_add(blocks - misses, Ordering::Relaxed);
        self.counters
            .read_misses
            .fetch_add(misses, Ordering::Relaxed);
        let by_controller = &self.counters.reads_by_controller[owner.index()];
        for sources in [by_controller, &volume.reads] {
            sources
                .dram_hits
                .fetch_add(blocks - misses, Ordering::Relaxed);
        }
        if missing == 0 {
            return Ok(());
        }
        if sequential {
            self.counters
                .ssd_bypassed
                .fetch_add(misses, Ordering::Relaxed);
        }
        let partition = self.ssd_partition(owner, volume);
        let admissible = partition.is_some() && !sequential;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for block in first_block..=last_block {
                if missing & (1 << block) == 0 {
                    continue;
                }
                let lba = section * BLOCKS_PER_SECTION as u64 + block as u64;
                let version = self.meta.map_version();
                let outcome = with_thread_ring(|ring| {
                    self.meta
                        .read_block(ring, volume, lba, &mut scratch, partition)
                })?;
                let from_ssd = matches!(outcome, BlockRead::Read { ssd: true, .. });
                for sources in [by_controller, &volume.reads] {
                    let counter = if from_ssd {
                        &sources.ssd_hits
                    } else {
                        &sources.misses
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + out.len());
                // A write may have landed in cache since we looked: it wins.
                if !self.copy_if_cached(
                    owner,
                    key,
                    block,
                    start,
                    end,
                    &mut out[start - within..end - within],
                ) {
                    out[start - within..end - within].copy_from_slice(
                        &scratch[start - block * BLOCK_SIZE..end - block * BLOCK_SIZE],
                    );
                    if outcome != BlockRead::Unmapped {
                        let fill = Fill {
                            version,
                            outcome,
                            family: volume.family,
                            admissible,
                        };
                        self.install_clean(owner, key, block, &scratch, fill);
                    }
                }
            }
            Ok(())
        })
    }

    pub(super) fn copy_if_cached(
        &self,
        owner: ControllerId,
        key: SectionKey,
        block: usize,
        start: usize,
        end: usize,
        dest: &mut [u8],
    ) -> bool {
        let mut shard = self.domains[owner].shard(key).inner.lock();
        match shard.find(key) {
            Some(slot) if shard.slots[slot as usize].valid & (1 << block) != 0 => {
                dest.copy_from_slice(
                    &shard.block(slot, block)[start - block * BLOCK_SIZE..end - block * BLOCK_SIZE],
                );
                true
            }
            _ => false,
        }
    }

    /// Brings a range into its owners' caches (reads and discards it), at most 64 MiB.
    pub fn prefetch(&self, volume: &VolumeHandle, offset: u64, len: u64) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        let mut buf = self.prefetch_buffers.take();
        let len = len.min(64 << 20);
        let mut done = 0;
        while done < len {
            let take =
                (len - done).min(SECTION_SIZE as u64 - (offset + done) % SECTION_SIZE as u64);
            self.read(volume, offset + done, &mut buf[..take as usize])?;
            done += take;
        }
        Ok(())
    }

    /// Allocation of a range, block by block, merged into extents (at most 64 MiB looked at).
    pub fn block_status(
        &self,
        volume: &VolumeHandle,
        offset: u64,
        len: u64,
        out: &mut Vec<Extent>,
    ) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        let end = offset + len.min(64 << 20);
        let mut at = offset;
        while at < end {
            let section = at / SECTION_SIZE as u64;
            let key = (volume.id.0, section);
            let owner = self.router.route(key).owner;
            let cached = {
                let mut shard = self.domains[owner].shard(key).inner.lock();
                shard
                    .find(key)
                    .map_or(0, |slot| shard.slots[slot as usize].valid)
            };
            let section_end = ((section + 1) * SECTION_SIZE as u64).min(end);
            let state = self.meta.state();
            let map = &state.maps;
            while at < section_end {
                let block = ((at % SECTION_SIZE as u64) / BLOCK_SIZE as u64) as usize;
                let lba = at / BLOCK_SIZE as u64;
                let allocated = cached & (1 << block) != 0 || map.get(volume.id.0, lba).is_some();
                let next = ((lba + 1) * BLOCK_SIZE as u64).min(end);
                let length = next - at;
                match out.last_mut() {
                    Some(last) if last.hole != allocated => last.length += length,
                    _ => out.push(Extent {
                        length,
                        hole: !allocated,
                        zero: !allocated,
                    }),
                }
                at = next;
            }
        }
        Ok(())
    }
}
