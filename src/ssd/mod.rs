//! The SSD read-cache tier between the DRAM cache and the NL-SAS drives.
//!
//! What it promises:
//! - **Keyed by physical block.** A cached block is a copy of one 4 KiB physical block of
//!   the array. The array is redirect-on-write, so a physical block that a map entry names
//!   never changes while it is named: overwrite, trim, restore, delete and copy by
//!   reference change the maps, never the bytes of a named block.
//! - **Never an answer without proof.** [`SsdCache::read`] hands bytes out only when the
//!   caller's `verify` (the map entry's checksum over identity and bytes) accepts them. A
//!   failed verification is a miss, is counted, and drops the entry.
//! - **What changes a physical block's meaning tells the tier**: a segment about to be
//!   reused is forgotten ([`SsdCache::forget_range`]), a block the cleaner moved is carried
//!   over ([`SsdCache::relocate`]).
//! - **Per controller.** The region is split into one partition per controller; each caches
//!   what its controller owns. A failed controller's partition is adopted: reads of any
//!   partition look in it too until the controller is back (safe because every hit is
//!   verified).
//! - **Persistent.** Each slot's identity is written beside the data; at start the index is
//!   rebuilt from it. Anything uncertain is dropped.
//! - **Losing the SSD loses only cache.** An I/O error on the region fails the tier: every
//!   read goes to the drives, nothing is admitted, and `on_failure` is told once.
//! - **Cheap.** Admission never blocks a caller: offered blocks are copied into a bounded
//!   staging area and written by a background writer at a bounded rate; an offer that
//!   does not fit is dropped and counted.

pub mod policy;

use std::sync::Arc;

use crate::io::{Device, IoRing};

/// Where the cache lives: a byte range of an SSD device.
pub struct CacheRegion {
    pub device: Arc<Device>,
    /// First byte of the region (4 KiB aligned).
    pub offset: u64,
    /// Bytes in the region (a multiple of 4 KiB).
    pub len: u64,
}

/// How the tier runs.
pub struct SsdCacheSettings {
    /// One partition per controller.
    pub partitions: usize,
    /// The writer's budget: bytes written to the SSD per second, at most.
    pub write_bytes_per_sec: u64,
    /// Called once, from whichever thread saw it, when an I/O error fails the tier.
    pub on_failure: Box<dyn Fn(String) + Send + Sync>,
}

/// What a cached block is, persisted beside it on the SSD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIdentity {
    /// Physical block number on the array (the key).
    pub phys: u64,
    /// Volume family (the checksum's identity) and block address the copy was made for.
    pub family: u32,
    pub lba: u64,
    /// The map entry's generation and checksum when the copy was made.
    pub generation: u64,
    pub checksum: u64,
}

/// The outcome of [`SsdCache::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsdRead {
    /// The buffer holds the block, verified.
    Hit,
    /// Not cached (or the tier is off or failed).
    Miss,
    /// A copy was found but failed verification: counted, dropped, and a miss.
    Mismatch,
}

/// What opening found.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// The region was new (or unreadable as a cache) and was formatted.
    pub formatted: bool,
    /// Entries put back into the index from media.
    pub restored: u64,
    /// Entries found on media but dropped as uncertain.
    pub dropped: u64,
    pub elapsed: std::time::Duration,
}

/// Counters and sizes, for `/metrics`, `troika top` and `troika system show`.
#[derive(Clone, Debug, Default)]
pub struct SsdCacheStats {
    pub capacity_bytes: u64,
    pub cached_bytes: u64,
    pub cached_blocks: u64,
    pub index_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub mismatches: u64,
    pub admissions: u64,
    pub evictions: u64,
    /// Offers dropped: staging full or over the write budget.
    pub throttled: u64,
    pub bytes_written: u64,
    pub failed: bool,
}

/// See the module doc.
pub struct SsdCache {
    _private: (),
}

impl SsdCache {
    /// Opens the cache on `region`, formatting it when it holds no cache of this layout,
    /// and starts the writer thread(s).
    pub fn open(
        region: CacheRegion,
        settings: SsdCacheSettings,
    ) -> Result<(Arc<SsdCache>, OpenReport), String> {
        let _ = (region, settings);
        todo!("the SSD tier (helper: ssd-tier)")
    }

    /// Reads the block at `phys` into `buf` (4 KiB) when partition `partition`, or an
    /// adopted partition, holds it and `verify` accepts the bytes.
    pub fn read(
        &self,
        ring: &mut IoRing,
        partition: usize,
        phys: u64,
        buf: &mut [u8],
        verify: &dyn Fn(&[u8]) -> bool,
    ) -> SsdRead {
        let _ = (ring, partition, phys, buf, verify);
        todo!()
    }

    /// Offers a block for admission to `partition`; never blocks. Returns false when it was
    /// dropped (staging full, over budget, tier failed).
    pub fn offer(&self, partition: usize, identity: BlockIdentity, bytes: &[u8]) -> bool {
        let _ = (partition, identity, bytes);
        todo!()
    }

    /// Forgets every cached block with `first <= phys < end` (a segment about to be
    /// written again).
    pub fn forget_range(&self, first: u64, end: u64) {
        let _ = (first, end);
        todo!()
    }

    /// The cleaner moved a block from `old` to `new`: the copy now answers for `new`.
    pub fn relocate(&self, old: u64, new: u64) {
        let _ = (old, new);
        todo!()
    }

    /// A controller failed (`online == false`: its partition is adopted by every other
    /// partition's reads and takes no admissions) or came back.
    pub fn set_partition_online(&self, partition: usize, online: bool) {
        let _ = (partition, online);
        todo!()
    }

    /// The tier's counters, whole and per partition.
    pub fn stats(&self) -> (SsdCacheStats, Vec<SsdCacheStats>) {
        todo!()
    }

    /// Writes what is staged and persists the index (a clean stop). Idempotent.
    pub fn shutdown(&self) {
        todo!()
    }
}
