//! One controller's DRAM: its shards of section slots (primaries and mirror copies), its
//! dirty counts, its flush lock and its destage thread.
//!
//! The dirty counts are kept next to the slots' bits, and two rules keep them equal to
//! what the slots hold and never below zero: a count is raised before the shard lock
//! under which its blocks became dirty (or unmirrored) is released, so whoever later
//! sees those bits and lowers the count finds it raised; and it is lowered only through
//! the `release_*` functions, which stop the node (a panic of the calling thread) when
//! a count would go below zero rather than let it wrap around. [`Domain::recount`]
//! recounts them from the slots where nothing moves (an ownership change).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::gate::Gate;
use super::shard::{Role, SectionKey, ShardInner};
use crate::types::{BLOCK_SIZE, ControllerId};

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
    /// Its controller.
    pub id: ControllerId,
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
    pub fn new(id: ControllerId, slots_per_shard: usize) -> Domain {
        let capacity_blocks = (slots_per_shard * SHARDS * crate::types::BLOCKS_PER_SECTION) as u64;
        let gate = Gate::default();
        gate.accepting.store(true, Ordering::Release);
        Domain {
            id,
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

    /// Lowers the count of dirty blocks it owns by `count` (destaged, dropped or moved).
    pub fn release_primary_dirty(&self, count: u64) {
        let before = self.primary_dirty.fetch_sub(count, Ordering::AcqRel);
        assert!(
            before >= count,
            "controller {}: its count of dirty blocks it owns would go below zero ({before} counted, {count} being released): the cache's dirty accounting is broken",
            self.id
        );
    }

    /// Lowers the count of mirror copies it holds by `count` (released, dropped or
    /// promoted).
    pub fn release_mirror_dirty(&self, count: u64) {
        let before = self.mirror_dirty.fetch_sub(count, Ordering::AcqRel);
        assert!(
            before >= count,
            "controller {}: its count of mirror copies would go below zero ({before} counted, {count} being released): the cache's dirty accounting is broken",
            self.id
        );
    }

    /// Lowers the count of its dirty blocks without a mirror copy by `count` (mirrored
    /// now, destaged, dropped or moved).
    pub fn release_unmirrored(&self, count: u64) {
        let before = self.unmirrored.fetch_sub(count, Ordering::AcqRel);
        assert!(
            before >= count,
            "controller {}: its count of dirty blocks without a mirror copy would go below zero ({before} counted, {count} being released): the cache's dirty accounting is broken",
            self.id
        );
    }

    /// Recounts its dirty blocks, mirror copies and unmirrored dirty blocks from its
    /// slots (a walk of every slot, each shard locked in turn) and compares them with its
    /// counts; describes the difference. Only exact while nothing changes its slots.
    pub fn recount(&self) -> Result<(), String> {
        let (mut primary, mut mirror, mut unmirrored) = (0u64, 0u64, 0u64);
        for shard in self.shards.iter() {
            let shard = shard.inner.lock();
            for slot in shard.slots.iter().filter(|slot| slot.key.is_some()) {
                let dirty = u64::from(slot.dirty.count_ones());
                match slot.role {
                    Role::Primary => {
                        primary += dirty;
                        unmirrored += u64::from((slot.unmirrored & slot.dirty).count_ones());
                    }
                    Role::Mirror => mirror += dirty,
                }
            }
        }
        let counted = (
            self.primary_dirty.load(Ordering::Acquire),
            self.mirror_dirty.load(Ordering::Acquire),
            self.unmirrored.load(Ordering::Acquire),
        );
        if counted != (primary, mirror, unmirrored) {
            return Err(format!(
                "controller {}: counts of (dirty blocks it owns, mirror copies, unmirrored dirty blocks) are {counted:?} but its slots hold {:?}",
                self.id,
                (primary, mirror, unmirrored)
            ));
        }
        Ok(())
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
                    .filter(|slot| slot.key.is_some() && slot.role == Role::Primary)
                    .count() as u64
            })
            .sum()
    }
}
