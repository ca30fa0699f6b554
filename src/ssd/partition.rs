//! One controller's partition: its index shards, staging ring, identity log and counters.
//!
//! The index is split into shards by a hash of phys; each shard is a policy over its own
//! contiguous range of the partition's slots behind its own mutex, so requests for
//! different blocks rarely meet on a lock. A shard also lists the slots being written
//! right now (at most one writer batch): a lookup that lands on one of them is a miss,
//! and its high-water mark (policy slots ever handed out, see `entries.rs`), which bounds
//! what a checkpoint writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use super::SsdCacheStats;
use super::format::{Geometry, PAGE};
use super::persist::{IdentityLog, LiveIndex};
use super::policy::{self, CachePolicy, SlotId};
use super::staging::{STAGING_PAGES, Staging};

/// Blocks per writer batch: at most this many slots of a partition are being written at
/// once (the writer's batch size lives here, below the writer, so the writer and the
/// shards that mark its slots do not import each other).
pub(super) const BATCH: usize = 64;

/// One shard of a partition's index.
pub(super) struct Shard {
    pub policy: Box<dyn CachePolicy>,
    /// The shard's first slot in the partition; policy slots are relative to it.
    pub first_slot: u32,
    /// Policy slots whose data is being written (reads miss them).
    pub writing: Vec<SlotId>,
    /// Policy slots ever handed out (or restored): every slot the shard used is below it.
    pub high_water: SlotId,
}

impl Shard {
    /// The partition slot of `phys`, without recording an access.
    pub fn slot_of(&self, phys: u64) -> Option<u32> {
        self.policy.peek(phys).map(|slot| self.first_slot + slot)
    }

    /// The partition slot of `phys` for a read: records the access; `None` when absent or
    /// being written.
    pub fn slot_for_read(&mut self, phys: u64) -> Option<u32> {
        let slot = self.policy.get(phys)?;
        (!self.writing.contains(&slot)).then_some(self.first_slot + slot)
    }

    /// Notes that the policy placed a key in policy slot `local`.
    pub fn note_used(&mut self, local: SlotId) {
        self.high_water = self.high_water.max(local + 1);
    }

    /// True when `phys` is held in partition slot `slot` and not being written.
    pub fn holds(&self, phys: u64, slot: u32) -> bool {
        slot.checked_sub(self.first_slot).is_some_and(|local| {
            self.policy.peek(phys) == Some(local) && !self.writing.contains(&local)
        })
    }
}

/// Counters of one partition (atomics: bumped without locks from any thread).
#[derive(Default)]
pub(super) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub mismatches: AtomicU64,
    pub admissions: AtomicU64,
    pub evictions: AtomicU64,
    pub throttled: AtomicU64,
    pub rejected: AtomicU64,
    pub bytes_written: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(super) struct Partition {
    pub index: usize,
    pub shards: Box<[Mutex<Shard>]>,
    pub staging: Staging,
    pub log: Mutex<IdentityLog>,
    pub online: AtomicBool,
    pub counters: Counters,
    geometry: Geometry,
}

impl Partition {
    pub fn new(index: usize, geometry: Geometry, log: IdentityLog) -> Partition {
        let shards = (0..geometry.shards)
            .map(|shard| {
                let (first_slot, len) = geometry.shard_range(shard);
                Mutex::new(Shard {
                    policy: policy::chosen(len),
                    first_slot,
                    writing: Vec::with_capacity(BATCH),
                    high_water: 0,
                })
            })
            .collect();
        Partition {
            index,
            shards,
            staging: Staging::new(STAGING_PAGES),
            log: Mutex::new(log),
            online: AtomicBool::new(true),
            counters: Counters::default(),
            geometry,
        }
    }

    /// The shard that indexes `phys`.
    pub fn shard_for(&self, phys: u64) -> MutexGuard<'_, Shard> {
        self.shards[self.geometry.shard_of_key(phys) as usize].lock()
    }

    /// Puts an entry found on media back; false when it cannot be (wrong shard, taken).
    pub fn restore(&self, phys: u64, slot: u32) -> bool {
        let shard = self.geometry.shard_of_key(phys);
        if shard != self.geometry.shard_of_slot(slot) {
            return false;
        }
        let mut shard = self.shards[shard as usize].lock();
        let local = slot - shard.first_slot;
        let restored = shard.policy.restore(phys, local);
        if restored {
            shard.note_used(local);
        }
        restored
    }

    /// Raises the shards' high-water marks to at least `marks` (what the media recorded).
    pub fn raise_marks(&self, marks: &[u32]) {
        for (shard, &mark) in self.shards.iter().zip(marks) {
            let mut shard = shard.lock();
            shard.high_water = shard.high_water.max(mark);
        }
    }

    pub fn cached_blocks(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| u64::from(shard.lock().policy.len()))
            .sum()
    }

    /// Everything this partition keeps in DRAM for its entries: the policies' tables plus
    /// the shards' own bookkeeping (the staging ring is fixed and not per entry).
    pub fn index_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock();
                (shard.policy.index_bytes()
                    + shard.writing.capacity() * std::mem::size_of::<SlotId>()
                    + std::mem::size_of::<Shard>()) as u64
            })
            .sum()
    }

    pub fn stats(&self, failed: bool) -> SsdCacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        let cached_blocks = self.cached_blocks();
        SsdCacheStats {
            capacity_bytes: u64::from(self.geometry.slots) * PAGE as u64,
            cached_bytes: cached_blocks * PAGE as u64,
            cached_blocks,
            index_bytes: self.index_bytes(),
            hits: read(&counters.hits),
            misses: read(&counters.misses),
            mismatches: read(&counters.mismatches),
            admissions: read(&counters.admissions),
            evictions: read(&counters.evictions),
            throttled: read(&counters.throttled),
            rejected: read(&counters.rejected),
            bytes_written: read(&counters.bytes_written),
            failed,
        }
    }
}

impl LiveIndex for Partition {
    /// A key can live only in a slot of its own shard.
    fn still_cached(&self, phys: u64, slot: u32) -> bool {
        let shard = self.geometry.shard_of_key(phys);
        shard == self.geometry.shard_of_slot(slot)
            && self.shards[shard as usize].lock().slot_of(phys) == Some(slot)
    }

    fn marks(&self) -> Vec<u32> {
        self.shards
            .iter()
            .map(|shard| shard.lock().high_water)
            .collect()
    }
}
