//! The metadata store: catalog, maps and segment table under one lock, the journal that
//! makes their changes durable, checkpoints, and recovery from media at start.
//!
//! Rules every change follows: the in-memory change and the append of its journal record
//! happen under the state write lock (so journal order is the order of changes); a caller
//! that must promise durability commits the journal before answering. Recovery loads the
//! newest checkpoint and replays the journal from the superblock's `replay_from` in order;
//! every record kind is idempotent and generation-guarded, so records the checkpoint
//! already reflects can be replayed again without harm.
//!
//! A catalog change is journaled and committed before it is applied in memory (both under
//! the state write lock, so no reader sees it before it is durable, and journal order is
//! still the order of changes). Any failure to make metadata durable (a journal write or
//! fsync, a checkpoint or superblock write) stops the node through
//! [`crate::fatal::durability_failure`] naming the vault device: the store never answers
//! success for a change that was not committed, and never serves one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::catalog::{Catalog, CatalogOp};
use super::checkpoint::{Superblock, build_checkpoint, write_checkpoint, write_superblock};
use super::forest::{Forest, Freed, MapEntry};
use super::journal::{Journal, JournalError};

use super::records;
use super::replay::{RecoveredBlock, VaultCopies};
use super::usage::{PoolUsage, VolumeHandle};
use crate::io::{Device, IoRing};
use crate::layout::{Array, RepairOutcome, SegmentAllocator, block_checksum};
use crate::secrets::NodeKey;
use crate::ssd::{SsdCache, SsdRead};
use crate::types::{BLOCK_SIZE, IoError, Lba, VolumeId};

#[cfg(test)]
mod bounds_tests;
mod clones;
mod datasets;
#[cfg(test)]
mod durability_tests;
pub mod host_ops;
mod open;
#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod secrets_tests;
pub mod snapshots;

use super::apply::apply_to_forest;
use datasets::{add_snapshot_handles, family_table, rebuild_handles};

/// A control-plane or recovery failure, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("pool {0} does not exist")]
    PoolNotFound(String),
    #[error("volume {0} does not exist")]
    VolumeNotFound(String),
    #[error("consistency group {0} does not exist")]
    CgNotFound(String),
    #[error("a {kind} named {name:?} already exists; choose another name")]
    NameConflict { kind: &'static str, name: String },
    #[error("pool {0:?} still holds volumes; delete them first")]
    PoolNotEmpty(String),
    #[error("{0}")]
    Capacity(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Locked(String),
    /// A number outside its bound (see [`crate::meta::bounds`]).
    #[error(transparent)]
    OutOfRange(#[from] crate::meta::bounds::OutOfRange),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Media(String),
    #[error(
        "the secrets on {ssd} were sealed with another node key (fingerprint {recorded:016x}) than the one given (fingerprint {given:016x})"
    )]
    WrongKey {
        ssd: String,
        recorded: u64,
        given: u64,
    },
}

/// Everything the store's lock protects.
pub struct MetaState {
    pub catalog: Catalog,
    pub maps: Forest,
    pub alloc: SegmentAllocator,
    pub pools: HashMap<u32, Arc<PoolUsage>>,
    pub volumes: HashMap<u32, Arc<VolumeHandle>>,
    /// The account each family's blocks are charged to (kept after its last member goes,
    /// for the blocks still waiting to be reclaimed).
    pub family_accounts: HashMap<u32, Arc<PoolUsage>>,
    /// How many snapshots each dataset has (only datasets that have some).
    pub children: HashMap<u32, u32>,
}

impl MetaState {
    /// Hands blocks whose last reference went back to the allocator (reusable once the
    /// journal is durable past `ticket`) and their families' accounts.
    pub fn release_freed(&mut self, freed: &[Freed], ticket: u64) {
        for (phys, family) in freed {
            self.alloc.remove_live(*phys, ticket);
            if let Some(account) = self.family_accounts.get(family) {
                account.release(1);
            }
        }
    }

    /// The ids of every member of `dataset`'s family (the datasets that may share its
    /// blocks).
    pub fn family_member_ids(&self, family: u32) -> Vec<u32> {
        self.catalog
            .family_members(family)
            .map(|volume| volume.id)
            .collect()
    }
}

/// Lost blocks remembered between two monitor passes.
pub const LOST_BLOCKS_KEPT: usize = 64;

/// Counters an operator watches.
#[derive(Default)]
pub struct MetaCounters {
    pub checksum_repairs: AtomicU64,
    /// Reads of a block on a failed drive, rebuilt from the rest of its row.
    pub degraded_reads: AtomicU64,
    pub unrecoverable_reads: AtomicU64,
    /// The latest lost blocks (`volume NAME block LBA`), at most [`LOST_BLOCKS_KEPT`],
    /// for the monitor to name in its event.
    pub lost_blocks: parking_lot::Mutex<Vec<String>>,
    pub checkpoints: AtomicU64,
    pub media_blocks_written: AtomicU64,
    pub media_rows_written: AtomicU64,
}

/// What `open` did.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub formatted: bool,
    pub replayed_batches: u64,
    pub replayed_records: u64,
    pub recovered_blocks: u64,
    pub elapsed: Duration,
    /// The vault was of format 1 (secrets plain): its catalog was rewritten sealed in a
    /// checkpoint during the open.
    pub sealed_plain_secrets: bool,
}

/// How a verified read of one block ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockRead {
    /// Nothing mapped: the block reads as zeroes (the buffer is zero-filled).
    Unmapped,
    /// Read and verified: the map entry's generation, physical block and checksum, and
    /// whether the bytes came from the SSD read cache (`ssd`) rather than the drives.
    Read {
        generation: u64,
        phys: u64,
        checksum: u64,
        ssd: bool,
    },
    /// The copy on media was bad and was rebuilt from parity; it should be rewritten.
    Repaired { generation: u64 },
}

/// See the module doc.
pub struct MetaStore {
    array: Array,
    ssd: Arc<Device>,
    journal: Journal,
    state: RwLock<MetaState>,
    superblock: Mutex<Superblock>,
    /// Seals the catalog's secrets in journal records and checkpoints.
    key: Arc<NodeKey>,
    generation: AtomicU64,
    map_version: AtomicU64,
    /// Moves after every applied catalog change (see `catalog_generation`).
    catalog_generation: AtomicU64,
    usable_blocks: u64,
    failed: AtomicBool,
    /// Dataset → family, readable without the state lock (a leaf lock: the destage
    /// thread reads it under shard locks).
    families: RwLock<HashMap<u32, u32>>,
    /// The SSD read-cache tier, when the model has one (attached once, at start).
    read_cache: std::sync::OnceLock<Arc<SsdCache>>,
    pub counters: MetaCounters,
}

impl MetaStore {
    /// Puts the SSD read-cache tier under the verified read path (once; later calls are
    /// ignored).
    pub fn attach_read_cache(&self, cache: Arc<SsdCache>) {
        let _ = self.read_cache.set(cache);
    }

    /// The SSD read-cache tier, if attached.
    pub fn read_cache(&self) -> Option<&Arc<SsdCache>> {
        self.read_cache.get()
    }

    pub fn array(&self) -> &Array {
        &self.array
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn serial(&self) -> u64 {
        self.superblock.lock().serial
    }

    /// User blocks the array offers to pools (after the cleaning reserve).
    pub fn usable_blocks(&self) -> u64 {
        self.usable_blocks
    }

    /// A new, never used write generation.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel)
    }

    /// Changes whenever a map entry changes; lets a reader detect a race with destage.
    pub fn map_version(&self) -> u64 {
        self.map_version.load(Ordering::Acquire)
    }

    pub fn state(&self) -> RwLockReadGuard<'_, MetaState> {
        self.state.read()
    }

    /// The state for a change; the map version moves so racing readers retry.
    pub fn state_mut(&self) -> RwLockWriteGuard<'_, MetaState> {
        let guard = self.state.write();
        self.map_version.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// [`MetaStore::state_mut`] when no one holds the state lock (tests that must not
    /// block on a lock the calling thread may hold).
    #[cfg(test)]
    pub fn try_state_mut(&self) -> Option<RwLockWriteGuard<'_, MetaState>> {
        let guard = self.state.try_write()?;
        self.map_version.fetch_add(1, Ordering::AcqRel);
        Some(guard)
    }

    /// The vault device's name in the hardware model (`ssd0`).
    pub fn ssd_name(&self) -> &str {
        self.ssd.name()
    }

    /// Where the vault device is (so nothing else is put there).
    pub fn ssd_path(&self) -> &std::path::Path {
        self.ssd.path()
    }

    /// Stops the node: `operation` on `device` could not make metadata or data durable
    /// (see [`crate::fatal`]). Marks the store failed first, so that in unit tests, where
    /// the stop is a panic, every later look at [`MetaStore::has_failed`] (health, the
    /// destage loops) sees it.
    pub fn fail(&self, device: &str, operation: &str, error: &dyn std::fmt::Display) -> ! {
        self.failed.store(true, Ordering::Release);
        crate::fatal::durability_failure(device, operation, error)
    }

    /// Whether a durability failure stopped the store, here or in its journal (seen only
    /// in unit tests: in the node the process has ended).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire) || self.journal.has_failed()
    }

    /// Journals a catalog change and commits it, then applies it in memory and rebuilds
    /// the data path's handles: durable when it returns. The caller holds the state write
    /// lock, so nobody sees the change before it is committed. A commit that fails stops
    /// the node (in the journal itself, or here for a journal that already failed), so it
    /// never returns with the change applied but not committed.
    fn log_catalog(&self, state: &mut MetaState, op: CatalogOp) {
        let body = match records::encode_catalog(&op, &self.key) {
            Ok(body) => body,
            Err(err) => self.fail(self.ssd.name(), "sealing a catalog change", &err),
        };
        let (ticket, _) = self
            .journal
            .append(records::CATALOG, |out| out.extend_from_slice(&body));
        if let Err(err) = self.journal.commit(ticket) {
            self.fail(self.ssd.name(), "journal commit", &err);
        }
        state.catalog.apply(&op);
        apply_to_forest(&mut state.maps, &state.catalog, &op);
        self.catalog_generation.fetch_add(1, Ordering::AcqRel);
        let added = match &op {
            CatalogOp::CreateSnapshots { snapshots, .. }
                if add_snapshot_handles(state, snapshots) =>
            {
                let mut families = self.families.write();
                for snapshot in snapshots {
                    families.insert(snapshot.id, snapshot.family());
                }
                true
            }
            _ => false,
        };
        if !added {
            rebuild_handles(state);
            *self.families.write() = family_table(state);
        }
        #[cfg(test)]
        self.check_handles(state);
    }

    /// Tests: the handles, child counts and family table kept up by `log_catalog` are
    /// what a full rebuild from the catalog gives.
    #[cfg(test)]
    fn check_handles(&self, state: &MetaState) {
        let mut children: HashMap<u32, u32> = HashMap::new();
        for volume in state.catalog.volumes.values() {
            if volume.parent_id != 0 {
                *children.entry(volume.parent_id).or_default() += 1;
            }
        }
        assert_eq!(state.children.len(), children.len(), "child counts");
        for (parent, count) in &children {
            assert_eq!(state.children.get(parent).copied(), Some(*count));
        }
        assert_eq!(*self.families.read(), family_table(state), "family table");
        assert_eq!(state.volumes.len(), state.catalog.volumes.len(), "handles");
        for (id, volume) in &state.catalog.volumes {
            let handle = &state.volumes[id];
            assert_eq!(handle.family, volume.family());
            let account = &state.family_accounts[&volume.family()];
            assert!(Arc::ptr_eq(&handle.pool, account), "dataset {id}'s account");
        }
    }

    /// The family whose identity `dataset`'s blocks carry (its own id when unknown).
    /// Reads a leaf lock only: callable under cache shard locks.
    pub fn family_of(&self, dataset: u32) -> u32 {
        self.families
            .read()
            .get(&dataset)
            .copied()
            .unwrap_or(dataset)
    }

    /// Frees up to `budget` nodes of dropped trees (deleted snapshots, replaced contents)
    /// and hands their last-referenced blocks back. Returns the nodes freed.
    pub fn reclaim_step(&self, budget: usize) -> usize {
        // The common case, nothing to reclaim, costs a read lock, not the write lock.
        if self.state.read().maps.pending() == 0 {
            return 0;
        }
        let mut state = self.state_mut();
        let mut freed = Vec::new();
        let done = state.maps.reclaim(budget, &mut freed);
        if !freed.is_empty() {
            let ticket = self.journal.last_ticket();
            state.release_freed(&freed, ticket);
        }
        done
    }

    /// Tree nodes still waiting to be reclaimed.
    pub fn reclaim_pending(&self) -> usize {
        self.state.read().maps.pending()
    }

    /// Drops map entries of `[start, end)` written before `generation` and journals it
    /// (not committed: a later flush commits it).
    /// The caller holds the state lock (from [`MetaStore::state_mut`]).
    pub fn trim_locked(
        &self,
        state: &mut MetaState,
        volume: u32,
        start: Lba,
        end: Lba,
        generation: u64,
    ) {
        if !state.maps.contains(volume) {
            return;
        }
        let mut freed = Vec::new();
        state
            .maps
            .remove_range(volume, start, end, generation, &mut freed, &mut |_, _| {});
        let (ticket, _) = self.journal.append(records::TRIM, |out| {
            records::encode_trim(volume, start, end, generation, out)
        });
        state.release_freed(&freed, ticket);
    }

    /// Reads one block of `volume` into `buf`, verifying it against the map and repairing
    /// it from parity when it fails. With `ssd_partition` (the owner's partition of the SSD
    /// read cache), a cached copy of the mapped physical block is tried first; it answers
    /// only when it passes the same verification, otherwise the drives do.
    pub fn read_block(
        &self,
        ring: &mut IoRing,
        volume: &VolumeHandle,
        lba: Lba,
        buf: &mut [u8],
        ssd_partition: Option<usize>,
    ) -> Result<BlockRead, IoError> {
        for _ in 0..4 {
            let entry = self.lookup(volume.id.0, lba);
            let Some(entry) = entry else {
                buf[..BLOCK_SIZE].fill(0);
                return Ok(BlockRead::Unmapped);
            };
            let identity = VolumeId(volume.family);
            let read_ok = |ssd: bool| BlockRead::Read {
                generation: entry.generation,
                phys: entry.phys,
                checksum: entry.checksum,
                ssd,
            };
            if let (Some(partition), Some(cache)) = (ssd_partition, self.read_cache.get()) {
                let verify = |block: &[u8]| block_checksum(identity, lba, block) == entry.checksum;
                if cache.read(ring, partition, entry.phys, &mut buf[..BLOCK_SIZE], &verify)
                    == SsdRead::Hit
                {
                    return Ok(read_ok(true));
                }
            }
            let read = self.array.read_block(ring, entry.phys, buf);
            if read.is_ok() && block_checksum(identity, lba, &buf[..BLOCK_SIZE]) == entry.checksum {
                return Ok(read_ok(false));
            }
            if self.lookup(volume.id.0, lba) != Some(entry) {
                continue; // moved while we read it: read the new copy
            }
            let verify = |block: &[u8]| block_checksum(identity, lba, block) == entry.checksum;
            match self.array.repair_block(ring, entry.phys, &verify, buf) {
                RepairOutcome::Reconstructed => {
                    self.counters.degraded_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(read_ok(false));
                }
                RepairOutcome::Repaired => {
                    self.counters
                        .checksum_repairs
                        .fetch_add(1, Ordering::Relaxed);
                    crate::say!(
                        "troika: repaired block {lba} of volume {} (physical block {}) from parity: the copy on media could not be read or failed its checksum",
                        volume.name,
                        entry.phys
                    );
                    return Ok(BlockRead::Repaired {
                        generation: entry.generation,
                    });
                }
                RepairOutcome::Lost => {}
            }
            self.counters
                .unrecoverable_reads
                .fetch_add(1, Ordering::Relaxed);
            {
                let mut lost = self.counters.lost_blocks.lock();
                if lost.len() < LOST_BLOCKS_KEPT {
                    lost.push(format!("volume {} block {lba}", volume.name));
                }
            }
            return Err(IoError::Media {
                volume: volume.name.clone(),
                detail: format!(
                    "block {lba} (physical {}) fails its checksum and parity cannot rebuild it",
                    entry.phys
                ),
            });
        }
        Err(IoError::Media {
            volume: volume.name.clone(),
            detail: format!("block {lba} kept moving while being read"),
        })
    }

    pub fn lookup(&self, volume: u32, lba: Lba) -> Option<MapEntry> {
        self.state.read().maps.get(volume, lba)
    }

    /// The newest vault copy of each of the `wanted` blocks in the journal records from
    /// `from` on that nothing newer superseded, judged as start-up recovery judges them
    /// ([`VaultCopies`]: destaged map entries, copies by reference, trims, restores and
    /// deletions after the copy win) against `state`, the current catalog and maps.
    ///
    /// For the cache, to get back flushed blocks whose only DRAM copy was lost with a
    /// controller. The caller holds the state lock (`state`, read) and keeps vault records
    /// from being appended meanwhile (the cache's flush lock), and the records from `from`
    /// on are still kept (nothing below the cache's vault floor is trimmed). The journal is
    /// committed first, so every change already made in memory is on media and seen.
    pub fn vaulted_copies(
        &self,
        state: &MetaState,
        from: u64,
        wanted: hashbrown::HashSet<(u32, Lba)>,
    ) -> Result<Vec<RecoveredBlock>, MetaError> {
        self.journal.commit_all()?;
        let end = self.journal.next_lsn();
        let mut copies = VaultCopies::only(wanted);
        let reached = self
            .journal
            .scan(from, |lsn, kind, body| {
                copies.apply(lsn, kind, body, &self.key)
            })
            .map_err(|err| MetaError::Media(format!("{}: {err}", self.ssd.path().display())))?;
        if reached != end {
            return Err(MetaError::Media(format!(
                "the journal on {} reads back only to LSN {reached} of {end}; it is damaged",
                self.ssd.path().display()
            )));
        }
        Ok(copies.finish(&state.catalog, &state.maps))
    }

    /// Writes a checkpoint of the current state; a failed write of the checkpoint or the
    /// superblock stops the node (the previous pair stays valid on media). Errors returned
    /// are those that wrote nothing (a checkpoint too large for its slot). `vault_floor` is
    /// called under the state
    /// lock and returns the oldest journal LSN holding vault data still needed; the caller
    /// must keep new vault records from being appended until this returns.
    pub fn checkpoint(&self, vault_floor: impl FnOnce() -> u64) -> Result<(), MetaError> {
        let mut superblock = *self.superblock.lock();
        let media =
            |err: std::io::Error| MetaError::Media(format!("{}: {err}", self.ssd.path().display()));
        let (image, lsn, floor) = {
            let state = self.state.read();
            // Every record appended so far goes to media before `lsn` is taken, so the
            // checkpoint reflects exactly the records before `lsn` and replay applies
            // only the ones after it (vault copies excepted).
            self.journal.commit_all()?;
            let lsn = self.journal.next_lsn();
            let floor = vault_floor();
            let image = build_checkpoint(
                lsn,
                self.generation.load(Ordering::Acquire),
                &state.catalog,
                &state.maps,
                superblock.layout.checkpoint_slot_len,
                &self.key,
            )
            .map_err(media)?;
            (image, lsn, floor)
        };
        let mut ring = IoRing::new(8).map_err(media)?;
        let slot = 1 - superblock.checkpoint_slot;
        #[cfg(test)]
        if let Err(err) = super::failpoint::check(super::failpoint::Failpoint::CheckpointWrite) {
            self.fail(self.ssd.name(), "checkpoint write", &err);
        }
        if let Err(err) = write_checkpoint(&mut ring, &self.ssd, &superblock.layout, slot, &image) {
            self.fail(self.ssd.name(), "checkpoint write", &err);
        }
        superblock.sequence += 1;
        superblock.checkpoint_slot = slot;
        superblock.checkpoint_len = image.len;
        superblock.checkpoint_sum = image.sum;
        superblock.checkpoint_lsn = lsn;
        superblock.replay_from = lsn.min(floor);
        #[cfg(test)]
        if let Err(err) = super::failpoint::check(super::failpoint::Failpoint::SuperblockWrite) {
            self.fail(self.ssd.name(), "superblock write", &err);
        }
        if let Err(err) = write_superblock(&mut ring, &self.ssd, &superblock) {
            self.fail(self.ssd.name(), "superblock write", &err);
        }
        *self.superblock.lock() = superblock;
        self.journal.set_tail(superblock.replay_from);
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
