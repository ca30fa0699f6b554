//! Copies by reference (EXTENDED COPY inside the node): the destination's blocks are made
//! to refer to the source's blocks on the array instead of receiving a copy of their bytes.
//!
//! Promises:
//! - After [`Cache::share_blocks`] returns, the destination range reads exactly what the
//!   source range held when the call started (or, for a block a host wrote meanwhile,
//!   what it wrote: concurrent overlapping commands have no order).
//! - Only blocks already on the array are shared. A source block written and not yet
//!   destaged, or one that changed while the call ran, or one that needed a parity repair,
//!   is copied as bytes through the cache instead.
//! - Sharing takes no space: the block gains a reference; the destination's previous
//!   blocks are released as by a trim.
//! - The change is journaled (a trim of the destination range, then the shared entries)
//!   and becomes durable with the next flush, as a write does; a destination block written
//!   before the call and still in cache or in the vault is superseded, also after a crash.
//! - Each source block is read once and verified, because its checksum is bound to its
//!   address and must be sealed anew for the destination address; no data is written.

use crate::io::with_thread_ring;
use crate::layout::block_checksum;
use crate::meta::records::SharedBlock;
use crate::meta::{BlockRead, MapEntry, VolumeHandle};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, IoError, VolumeId};

use super::Cache;

/// Most blocks shared under one hold of the metadata lock (4 MiB).
pub const SHARE_CHUNK_BLOCKS: u64 = 1024;

/// What [`Cache::share_blocks`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareOutcome {
    /// Blocks that now refer to the source's blocks.
    pub shared: u64,
    /// Blocks that read as zeroes in the source and were released in the destination.
    pub released: u64,
    /// Blocks copied as bytes (not yet on the array, changed meanwhile, or repaired).
    pub copied: u64,
}

/// A source block read and verified, with the checksum it has at its new address.
struct Sealed {
    offset: u64,
    source: MapEntry,
    checksum: u64,
}

impl Cache {
    /// Whether blocks of `source` can be shared into `destination`: the same family (a
    /// block's checksum and space account belong to its family) and, within one dataset,
    /// ranges that do not overlap.
    pub fn can_share(
        source: &VolumeHandle,
        from: u64,
        destination: &VolumeHandle,
        to: u64,
        blocks: u64,
    ) -> bool {
        source.family == destination.family
            && (source.id != destination.id || from + blocks <= to || to + blocks <= from)
    }

    /// Makes blocks `[to, to+blocks)` of `destination` hold what blocks `[from,
    /// from+blocks)` of `source` hold, sharing the source's blocks where it can (see the
    /// module doc). The caller checks [`Cache::can_share`] first.
    pub fn share_blocks(
        &self,
        source: &VolumeHandle,
        from: u64,
        destination: &VolumeHandle,
        to: u64,
        blocks: u64,
    ) -> Result<ShareOutcome, IoError> {
        let block = BLOCK_SIZE as u64;
        Self::check_range(source, from * block, blocks * block)?;
        Self::check_range(destination, to * block, blocks * block)?;
        Self::check_writable(destination)?;
        if !Self::can_share(source, from, destination, to, blocks) {
            return Err(IoError::NotFast);
        }
        let mut outcome = ShareOutcome::default();
        let mut done = 0;
        while done < blocks {
            let count = (blocks - done).min(SHARE_CHUNK_BLOCKS);
            self.share_chunk(
                source,
                from + done,
                destination,
                to + done,
                count,
                &mut outcome,
            )?;
            done += count;
        }
        Ok(outcome)
    }

    fn share_chunk(
        &self,
        source: &VolumeHandle,
        from: u64,
        destination: &VolumeHandle,
        to: u64,
        count: u64,
        outcome: &mut ShareOutcome,
    ) -> Result<(), IoError> {
        // 1. What the source refers to now.
        let mut mapped: Vec<(u64, MapEntry)> = Vec::new();
        self.meta
            .state()
            .maps
            .visit_range(source.id.0, from, from + count, &mut |lba, entry| {
                mapped.push((lba - from, entry));
                true
            });
        // 2. Read the blocks (all in flight together), verify each, and seal its checksum
        //    for its new address. A block that fails is read again through the verified
        //    path, which repairs it from parity; a repaired block is copied, not shared.
        let mut data = crate::io::AlignedBuf::new(mapped.len().max(1) * BLOCK_SIZE);
        let phys: Vec<u64> = mapped.iter().map(|(_, entry)| entry.phys).collect();
        let mut failed = Vec::new();
        with_thread_ring(|ring| {
            self.meta
                .array()
                .read_blocks(ring, &phys, &mut data, &mut failed)
        });
        let mut sealed = Vec::with_capacity(mapped.len());
        let mut buf = crate::io::AlignedBuf::new(BLOCK_SIZE);
        let identity = VolumeId(source.family);
        for (index, (offset, entry)) in mapped.iter().enumerate() {
            let bytes = &data[index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE];
            let verified = failed.binary_search(&index).is_err()
                && block_checksum(identity, from + offset, bytes) == entry.checksum;
            let block = if verified {
                bytes
            } else {
                let read = with_thread_ring(|ring| {
                    self.meta
                        .read_block(ring, source, from + offset, &mut buf, None)
                })?;
                if !matches!(read, BlockRead::Read { generation, .. } if generation == entry.generation)
                {
                    continue;
                }
                &buf[..]
            };
            sealed.push(Sealed {
                offset: *offset,
                source: *entry,
                checksum: block_checksum(VolumeId(destination.family), to + offset, block),
            });
        }
        // 3. Under the metadata lock: keep what is unchanged and not in cache, release the
        //    destination range, share.
        let mut copy: Vec<u64> = Vec::new();
        let mut shares: Vec<SharedBlock> = Vec::with_capacity(sealed.len());
        let released_dirty;
        {
            let mut state = self.meta.state_mut();
            let generation = self.meta.next_generation();
            let mut next_sealed = sealed.iter().peekable();
            let mut dirty = (u64::MAX, 0u16);
            for offset in 0..count {
                let lba = from + offset;
                let section = lba / BLOCKS_PER_SECTION as u64;
                if dirty.0 != section {
                    dirty = (section, self.dirty_mask((source.id.0, section)));
                }
                let in_cache = dirty.1 & (1 << (lba % BLOCKS_PER_SECTION as u64)) != 0;
                let now = state.maps.get(source.id.0, lba);
                let seal = next_sealed.next_if(|seal| seal.offset == offset);
                match (in_cache, now, seal) {
                    // Reads as zeroes now: the destination block is released.
                    (false, None, _) => outcome.released += 1,
                    (false, Some(now), Some(seal))
                        if now.generation == seal.source.generation
                            && now.checksum == seal.source.checksum =>
                    {
                        shares.push(SharedBlock {
                            lba: to + offset,
                            home: lba,
                            entry: MapEntry {
                                phys: now.phys,
                                checksum: seal.checksum,
                                generation,
                            },
                        });
                    }
                    _ => copy.push(offset),
                }
            }
            released_dirty =
                self.discard_locked(&mut state, destination.id.0, to, to + count, generation);
            self.meta
                .share_locked(&mut state, destination.id.0, &shares);
        }
        if released_dirty {
            self.signals.space.notify_all();
        }
        outcome.shared += shares.len() as u64;
        // 4. The rest as bytes, through the cache.
        for offset in copy {
            self.read(source, (from + offset) * BLOCK_SIZE as u64, &mut buf)?;
            self.write(destination, (to + offset) * BLOCK_SIZE as u64, &buf)?;
            outcome.copied += 1;
        }
        Ok(())
    }
}
