//! Live, lock-free handles the data path holds on a volume and on its pool's space.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::types::{BLOCK_SIZE, VolumeId};

/// A space account in blocks: mapped blocks of its volumes plus the blocks written into
/// cache that will need new space when destaged, plus space set aside for thick volumes.
///
/// A pool has one; a thick volume has one of its own, sized to the volume, whose blocks are
/// set aside in its pool's `thick_blocks`. The pool is LOCKED while its account is full:
/// hosts' writes to its volumes are refused with "no space" until space is freed.
#[derive(Debug)]
pub struct PoolUsage {
    pub name: String,
    pub capacity_blocks: AtomicU64,
    pub used_blocks: AtomicU64,
    /// Blocks reserved for thick volumes (their whole size), whatever they hold.
    pub thick_blocks: AtomicU64,
}

impl PoolUsage {
    pub fn new(name: String, capacity_bytes: u64) -> Arc<PoolUsage> {
        Arc::new(PoolUsage {
            name,
            capacity_blocks: AtomicU64::new(capacity_bytes / BLOCK_SIZE as u64),
            used_blocks: AtomicU64::new(0),
            thick_blocks: AtomicU64::new(0),
        })
    }

    /// Takes one block of space; `false` when the account is full.
    pub fn try_reserve(&self) -> bool {
        let capacity = self.capacity_blocks.load(Ordering::Relaxed);
        let thick = self.thick_blocks.load(Ordering::Relaxed);
        self.used_blocks
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                (used + thick < capacity).then_some(used + 1)
            })
            .is_ok()
    }

    /// Whether every block is taken (written, cached or set aside for thick volumes).
    pub fn is_full(&self) -> bool {
        self.used_blocks.load(Ordering::Relaxed) + self.thick_blocks.load(Ordering::Relaxed)
            >= self.capacity_blocks.load(Ordering::Relaxed)
    }

    /// Bytes taken: written or cached blocks plus thick reservations.
    pub fn allocated_bytes(&self) -> u64 {
        (self.used_blocks.load(Ordering::Acquire) + self.thick_blocks.load(Ordering::Acquire))
            * BLOCK_SIZE as u64
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
    /// The family whose identity the dataset's blocks carry (checksums, summaries).
    pub family: u32,
    pub name: String,
    pub size: AtomicU64,
    /// The account the volume's blocks are charged to: its pool's for a thin volume, its
    /// own reservation for a thick one.
    pub pool: Arc<PoolUsage>,
    /// The pool the volume lives in; host writes are refused while it is full (LOCKED).
    pub home_pool: Arc<PoolUsage>,
    /// Hosts may read but not write.
    pub write_protected: AtomicBool,
    pub deleted: AtomicBool,
    /// Blocks this volume may put in the SSD read cache: its own `ssd_enabled` and its
    /// pool's both true. Kept current when either changes.
    pub ssd_enabled: AtomicBool,
    /// Where this volume's block reads were served from.
    pub reads: crate::types::ReadSources,
}

impl VolumeHandle {
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn is_write_protected(&self) -> bool {
        self.write_protected.load(Ordering::Acquire)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}
