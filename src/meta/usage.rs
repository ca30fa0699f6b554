//! Live, lock-free handles the data path holds on a volume and on its pool's space.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::types::{BLOCK_SIZE, VolumeId};

/// A pool's physical space in blocks: mapped blocks of its volumes plus the blocks written
/// into cache that will need new space when destaged.
#[derive(Debug)]
pub struct PoolUsage {
    pub name: String,
    pub capacity_blocks: AtomicU64,
    pub used_blocks: AtomicU64,
}

impl PoolUsage {
    pub fn new(name: String, capacity_bytes: u64) -> Arc<PoolUsage> {
        Arc::new(PoolUsage {
            name,
            capacity_blocks: AtomicU64::new(capacity_bytes / BLOCK_SIZE as u64),
            used_blocks: AtomicU64::new(0),
        })
    }

    /// Takes one block of space; `false` when the pool is full.
    pub fn try_reserve(&self) -> bool {
        let capacity = self.capacity_blocks.load(Ordering::Relaxed);
        self.used_blocks
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                (used < capacity).then_some(used + 1)
            })
            .is_ok()
    }

    /// Counts `blocks` more as used without a limit (blocks that already hold space).
    pub fn add(&self, blocks: u64) {
        self.used_blocks.fetch_add(blocks, Ordering::AcqRel);
    }

    /// Gives back `blocks`.
    pub fn release(&self, blocks: u64) {
        let _ = self
            .used_blocks
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(blocks))
            });
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_blocks.load(Ordering::Acquire) * BLOCK_SIZE as u64
    }
}

/// What the data path needs to know about a volume, without taking the metadata lock.
#[derive(Debug)]
pub struct VolumeHandle {
    pub id: VolumeId,
    pub name: String,
    pub size: AtomicU64,
    pub pool: Arc<PoolUsage>,
    pub deleted: AtomicBool,
}

impl VolumeHandle {
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}
