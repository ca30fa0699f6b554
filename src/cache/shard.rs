//! One shard of a controller's DRAM cache: a fixed set of 64 KiB section slots with their
//! block states, an index from (volume, section) to slot, clock eviction of clean slots,
//! and the queues of slots holding dirty or not-yet-vaulted blocks.
//!
//! A slot holds a section either as its owner ([`Role::Primary`]: read cache, dirty data,
//! destage) or as its mirror ([`Role::Mirror`]: only the dirty blocks, copied from the
//! owner, released when the owner destages them). A controller never holds both for one
//! section.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::io::AlignedBuf;
use crate::meta::PoolUsage;
use crate::ssd::{BlockIdentity, SsdCache};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, SECTION_SIZE, SectionIndex};

/// Identifies a section of a volume.
pub type SectionKey = (u32, SectionIndex);

/// Why a controller holds a section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It owns the section: serves it, vaults and destages its dirty blocks.
    Primary,
    /// It keeps the second copy of the owner's dirty blocks.
    Mirror,
}

/// Per-section state. Bit `b` of each mask is block `b` of the section.
#[derive(Clone)]
pub struct Slot {
    pub key: Option<SectionKey>,
    pub role: Role,
    /// Blocks whose bytes in the slot are current.
    pub valid: u16,
    /// Blocks written since their last destage commit.
    pub dirty: u16,
    /// Dirty blocks whose current generation is not in the vault yet.
    pub unvaulted: u16,
    /// Dirty blocks that hold a block of new space in their pool.
    pub reserved: u16,
    /// Blocks whose mapping state (`mapped`) is known to the cache.
    pub known: u16,
    /// Of the `known` blocks, those with a map entry.
    pub mapped: u16,
    /// Generation of each block's current bytes.
    pub generation: [u64; BLOCKS_PER_SECTION],
    /// Dirty blocks (of a primary) whose mirror copy is missing: re-mirroring after a
    /// failover has not reached them yet.
    pub unmirrored: u16,
    /// Oldest journal LSN holding a vault copy of a dirty block here (`u64::MAX`: none).
    /// A mirror slot keeps a position at or before every vault record of its dirty
    /// copies: the journal position read before the owner's copy was written (a host
    /// write), or the owner's `vault_lsn` when the copy was made later (re-mirroring,
    /// failback).
    pub vault_lsn: u64,
    pub queued: bool,
    pub in_unvaulted: bool,
    pub referenced: bool,
    pub pool: Option<Arc<PoolUsage>>,
    /// What each clean block's bytes are on the array, for the SSD read cache.
    pub ssd: SsdNotes,
}

/// Per block of a slot: the physical block, checksum and map generation its clean bytes
/// correspond to (set when a verified read installs the block or a destage commits it),
/// and whether it may be offered to the SSD read cache when the slot goes (`admissible`:
/// its volume allows the SSD cache and it was not read as part of a bypassed stream).
/// Any change to a block's bytes or meaning clears its bit.
#[derive(Clone)]
pub struct SsdNotes {
    pub admissible: u16,
    /// The volume family (the checksum's identity) of the slot's volume.
    pub family: u32,
    pub phys: [u64; BLOCKS_PER_SECTION],
    pub checksum: [u64; BLOCKS_PER_SECTION],
    pub generation: [u64; BLOCKS_PER_SECTION],
}

impl SsdNotes {
    const EMPTY: SsdNotes = SsdNotes {
        admissible: 0,
        family: 0,
        phys: [0; BLOCKS_PER_SECTION],
        checksum: [0; BLOCKS_PER_SECTION],
        generation: [0; BLOCKS_PER_SECTION],
    };

    /// Notes that block `block`'s clean bytes are `phys` of `family` at `generation`
    /// with `checksum`; `admissible` says whether they may go to the SSD cache.
    pub fn set(
        &mut self,
        block: usize,
        family: u32,
        (phys, checksum, generation): (u64, u64, u64),
        admissible: bool,
    ) {
        self.family = family;
        self.phys[block] = phys;
        self.checksum[block] = checksum;
        self.generation[block] = generation;
        if admissible {
            self.admissible |= 1 << block;
        } else {
            self.admissible &= !(1 << block);
        }
    }

    /// Forgets what the blocks of `mask` were (rewritten, trimmed, dropped).
    pub fn clear(&mut self, mask: u16) {
        self.admissible &= !mask;
    }
}

/// Where a shard's evicted clean blocks are offered: the SSD read cache and the
/// partition of the shard's controller.
#[derive(Clone)]
pub struct SsdSink {
    pub cache: Arc<SsdCache>,
    pub partition: usize,
}

impl Slot {
    /// True while the slot still holds block `block` of section `key` dirty at `generation`
    /// (not rewritten, discarded, destaged or evicted since).
    pub fn holds_dirty(&self, key: SectionKey, block: usize, generation: u64) -> bool {
        self.key == Some(key)
            && self.dirty & (1 << block) != 0
            && self.generation[block] == generation
    }

    fn empty() -> Slot {
        Slot {
            key: None,
            role: Role::Primary,
            valid: 0,
            dirty: 0,
            unvaulted: 0,
            reserved: 0,
            known: 0,
            mapped: 0,
            unmirrored: 0,
            generation: [0; BLOCKS_PER_SECTION],
            vault_lsn: u64::MAX,
            queued: false,
            in_unvaulted: false,
            referenced: false,
            pool: None,
            ssd: SsdNotes::EMPTY,
        }
    }
}

/// See the module doc.
pub struct ShardInner {
    pub index: HashMap<SectionKey, u32>,
    pub slots: Vec<Slot>,
    data: AlignedBuf,
    free: Vec<u32>,
    clock: usize,
    pub dirty_queue: VecDeque<u32>,
    pub unvaulted: Vec<u32>,
    /// The SSD read cache evicted clean blocks are offered to (none without one).
    pub ssd_sink: Option<SsdSink>,
}

impl ShardInner {
    pub fn new(slots: usize) -> ShardInner {
        ShardInner {
            index: HashMap::with_capacity(slots),
            slots: (0..slots).map(|_| Slot::empty()).collect(),
            data: AlignedBuf::new(slots * SECTION_SIZE),
            free: (0..slots as u32).rev().collect(),
            clock: 0,
            dirty_queue: VecDeque::with_capacity(slots),
            unvaulted: Vec::with_capacity(slots),
            ssd_sink: None,
        }
    }

    /// Offers the admissible clean blocks of a primary slot that is about to go to the
    /// SSD read cache (a non-blocking copy; the tier drops what it cannot take).
    fn offer_to_ssd(&self, slot: usize) {
        let Some(sink) = &self.ssd_sink else {
            return;
        };
        let entry = &self.slots[slot];
        let Some(key) = entry.key else {
            return;
        };
        if entry.role != Role::Primary {
            return;
        }
        let offer = entry.ssd.admissible & entry.valid & !entry.dirty;
        for block in 0..BLOCKS_PER_SECTION {
            if offer & (1 << block) != 0 {
                Self::offer_one(sink, entry, key, block, self.block(slot as u32, block));
            }
        }
    }

    /// Offers one admissible clean block of a primary slot to the SSD read cache now (a
    /// block just read from the drives or just destaged), so that it is there after a
    /// restart even if it never leaves DRAM before. The tier counts a block it holds
    /// already as a use of it.
    pub fn offer_block(&self, slot: u32, block: usize) {
        let (Some(sink), entry) = (&self.ssd_sink, &self.slots[slot as usize]) else {
            return;
        };
        let Some(key) = entry.key else {
            return;
        };
        let bit = 1u16 << block;
        if entry.role == Role::Primary
            && entry.ssd.admissible & entry.valid & !entry.dirty & bit != 0
        {
            Self::offer_one(sink, entry, key, block, self.block(slot, block));
        }
    }

    fn offer_one(sink: &SsdSink, entry: &Slot, key: SectionKey, block: usize, bytes: &[u8]) {
        let identity = BlockIdentity {
            phys: entry.ssd.phys[block],
            family: entry.ssd.family,
            lba: key.1 * BLOCKS_PER_SECTION as u64 + block as u64,
            generation: entry.ssd.generation[block],
            checksum: entry.ssd.checksum[block],
        };
        sink.cache.offer(sink.partition, identity, bytes);
    }

    pub fn find(&mut self, key: SectionKey) -> Option<u32> {
        let slot = *self.index.get(&key)?;
        self.slots[slot as usize].referenced = true;
        Some(slot)
    }

    /// The slot of `key`, taking a free or clean one when the section is not cached (a new
    /// slot has `role`). `None` when every slot holds dirty data.
    pub fn find_or_insert(&mut self, key: SectionKey, role: Role) -> Option<u32> {
        if let Some(slot) = self.find(key) {
            return Some(slot);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.evict()?,
        };
        let entry = &mut self.slots[slot as usize];
        *entry = Slot::empty();
        entry.key = Some(key);
        entry.role = role;
        entry.referenced = true;
        self.index.insert(key, slot);
        Some(slot)
    }

    /// Clock sweep for a slot with no dirty block; drops it from the index.
    fn evict(&mut self) -> Option<u32> {
        let count = self.slots.len();
        for _ in 0..2 * count {
            let slot = self.clock;
            self.clock = (self.clock + 1) % count;
            let entry = &mut self.slots[slot];
            if entry.dirty != 0 {
                continue;
            }
            if entry.referenced {
                entry.referenced = false;
                continue;
            }
            self.offer_to_ssd(slot);
            let entry = &mut self.slots[slot];
            if let Some(key) = entry.key.take() {
                self.index.remove(&key);
            }
            return Some(slot as u32);
        }
        None
    }

    /// Slots a new section could take now: free ones and those with no dirty block.
    pub fn available(&self) -> usize {
        self.free.len()
            + self
                .slots
                .iter()
                .filter(|slot| slot.key.is_some() && slot.dirty == 0)
                .count()
    }

    /// Forgets every slot (a failed controller's DRAM is gone).
    pub fn clear(&mut self) {
        self.index.clear();
        for slot in &mut self.slots {
            *slot = Slot::empty();
        }
        self.free = (0..self.slots.len() as u32).rev().collect();
        self.clock = 0;
        self.dirty_queue.clear();
        self.unvaulted.clear();
    }

    /// Forgets a slot with no dirty block.
    pub fn release(&mut self, slot: u32) {
        self.offer_to_ssd(slot as usize);
        let entry = &mut self.slots[slot as usize];
        debug_assert_eq!(entry.dirty, 0);
        if let Some(key) = entry.key.take() {
            self.index.remove(&key);
        }
        *entry = Slot::empty();
        self.free.push(slot);
    }

    pub fn block(&self, slot: u32, block: usize) -> &[u8] {
        let at = slot as usize * SECTION_SIZE + block * BLOCK_SIZE;
        &self.data[at..at + BLOCK_SIZE]
    }

    pub fn block_mut(&mut self, slot: u32, block: usize) -> &mut [u8] {
        let at = slot as usize * SECTION_SIZE + block * BLOCK_SIZE;
        &mut self.data[at..at + BLOCK_SIZE]
    }

    /// Queues a slot for destage if it is not queued already.
    pub fn queue_dirty(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if entry.dirty != 0 && !entry.queued {
            entry.queued = true;
            self.dirty_queue.push_back(slot);
        }
    }

    /// Lists a slot for the next vault flush if it is not listed already.
    pub fn queue_unvaulted(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if entry.unvaulted != 0 && !entry.in_unvaulted {
            entry.in_unvaulted = true;
            self.unvaulted.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_slots_are_never_evicted() {
        let mut shard = ShardInner::new(4);
        for section in 0..4 {
            let slot = shard.find_or_insert((1, section), Role::Primary).unwrap();
            shard.slots[slot as usize].dirty = 1;
        }
        assert!(shard.find_or_insert((1, 99), Role::Primary).is_none());
        let victim = shard.index[&(1, 2)];
        shard.slots[victim as usize].dirty = 0;
        let slot = shard.find_or_insert((1, 99), Role::Primary).unwrap();
        assert_eq!(slot, victim);
        assert!(!shard.index.contains_key(&(1, 2)));
        for section in [0, 1, 3] {
            assert!(shard.index.contains_key(&(1, section)));
        }
    }
}
