//! One controller's DRAM: its shards of section slots (primaries and mirror copies), its
//! dirty counts, its flush lock and its destage thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::gate::Gate;
use super::shard::{SectionKey, ShardInner};
use crate::types::BLOCK_SIZE;

pub const SHARDS: usize = 16;

pub struct Shard {
    pub inner: Mutex<ShardInner>,
}

pub fn shard_of(key: SectionKey) -> usize {
    let mixed = (u64::from(key.0) << 40 ^ key.1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 59) as usize % SHARDS
}

/// See the module doc.
pub struct Domain {
    /// Its controller's index (0-based).
    pub index: usize,
    pub shards: Box<[Shard]>,
    pub capacity_blocks: u64,
    /// Dirty blocks it owns (destaged by it).
    pub primary_dirty: AtomicU64,
    /// Dirty blocks it holds as a mirror (released by their owner's destage).
    pub mirror_dirty: AtomicU64,
    /// Of its primary dirty blocks, those without a mirror copy yet.
    pub unmirrored: AtomicU64,
    /// Its DRAM holds data and its destage thread runs (false once failed).
    pub alive: AtomicBool,
    pub gate: Gate,
    pub destage_wake: Condvar,
    /// A writer found no slot it could take here: destage now, whatever the dirty level.
    pub slot_pressure: AtomicBool,
    pub destager: Mutex<Option<JoinHandle<()>>>,
}

impl Domain {
    pub fn new(index: usize, slots_per_shard: usize) -> Domain {
        let capacity_blocks = (slots_per_shard * SHARDS * crate::types::BLOCKS_PER_SECTION) as u64;
        let gate = Gate::default();
        gate.accepting.store(true, Ordering::Release);
        Domain {
            index,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    inner: Mutex::new(ShardInner::new(slots_per_shard)),
                })
                .collect(),
            capacity_blocks,
            primary_dirty: AtomicU64::new(0),
            mirror_dirty: AtomicU64::new(0),
            unmirrored: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            gate,
            destage_wake: Condvar::new(),
            slot_pressure: AtomicBool::new(false),
            destager: Mutex::new(None),
        }
    }

    pub fn shard(&self, key: SectionKey) -> &Shard {
        &self.shards[shard_of(key)]
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Dirty blocks of both roles: what fills its DRAM.
    pub fn dirty_total(&self) -> u64 {
        self.primary_dirty.load(Ordering::Acquire) + self.mirror_dirty.load(Ordering::Acquire)
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.primary_dirty.load(Ordering::Acquire) * BLOCK_SIZE as u64
    }

    pub fn mirror_bytes(&self) -> u64 {
        self.mirror_dirty.load(Ordering::Acquire) * BLOCK_SIZE as u64
    }

    pub fn unmirrored_bytes(&self) -> u64 {
        self.unmirrored.load(Ordering::Acquire) * BLOCK_SIZE as u64
    }

    /// Sections it holds as their owner.
    pub fn owned_sections(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.inner.lock();
                shard
                    .slots
                    .iter()
                    .filter(|slot| slot.key.is_some() && slot.role == super::shard::Role::Primary)
                    .count() as u64
            })
            .sum()
    }
}
