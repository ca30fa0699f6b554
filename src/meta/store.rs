//! The metadata store: catalog, maps and segment table under one lock, the journal that
//! makes their changes durable, checkpoints, and recovery from media at start.
//!
//! Rules every change follows: the in-memory change and the append of its journal record
//! happen under the state write lock (so journal order is the order of changes); a caller
//! that must promise durability commits the journal before answering. Recovery loads the
//! newest checkpoint and replays the journal from the superblock's `replay_from` in order;
//! every record kind is idempotent and generation-guarded, so records the checkpoint
//! already reflects can be replayed again without harm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::catalog::{Catalog, CatalogOp, PoolRecord, Provisioning, VolumeRecord};
use super::checkpoint::{
    SsdLayout, Superblock, SuperblockState, build_checkpoint, read_checkpoint, read_superblock,
    write_checkpoint, write_superblock,
};
use super::journal::{Journal, JournalError};
use super::map::{BlockMap, MapEntry};
use super::records;
use super::replay::Replay;
use super::usage::{PoolUsage, VolumeHandle};
use crate::io::{BufferPool, Device, IoRing};
use crate::layout::{Array, ParityCodec, SegmentAllocator, block_checksum};
use crate::types::{BLOCK_SIZE, IoError, Lba, VolumeId};

/// A control-plane or recovery failure, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("pool {0} does not exist")]
    PoolNotFound(String),
    #[error("volume {0} does not exist")]
    VolumeNotFound(String),
    #[error("a {kind} named {name:?} already exists; choose another name")]
    NameConflict { kind: &'static str, name: String },
    #[error("pool {0:?} still holds volumes; delete them first")]
    PoolNotEmpty(String),
    #[error("{0}")]
    Capacity(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Media(String),
}

/// Everything the store's lock protects.
pub struct MetaState {
    pub catalog: Catalog,
    pub maps: HashMap<u32, BlockMap>,
    pub alloc: SegmentAllocator,
    pub pools: HashMap<u32, Arc<PoolUsage>>,
    pub volumes: HashMap<u32, Arc<VolumeHandle>>,
}

/// Counters an operator watches.
#[derive(Default)]
pub struct MetaCounters {
    pub checksum_repairs: AtomicU64,
    pub unrecoverable_reads: AtomicU64,
    pub checkpoints: AtomicU64,
    pub media_blocks_written: AtomicU64,
    pub media_rows_written: AtomicU64,
}

/// A flushed write found in the vault at start that was not yet destaged.
pub struct RecoveredBlock {
    pub volume: u32,
    pub lba: Lba,
    pub generation: u64,
    pub lsn: u64,
    pub data: Box<[u8]>,
}

/// What `open` did.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub formatted: bool,
    pub replayed_batches: u64,
    pub replayed_records: u64,
    pub recovered_blocks: u64,
    pub elapsed: Duration,
}

/// How a verified read of one block ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockRead {
    /// Nothing mapped: the block reads as zeroes (the buffer is zero-filled).
    Unmapped,
    /// Read and verified.
    Read { generation: u64 },
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
    generation: AtomicU64,
    map_version: AtomicU64,
    usable_blocks: u64,
    repair_rows: Arc<BufferPool>,
    failed: AtomicBool,
    pub counters: MetaCounters,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MetaStore {
    /// Opens the node's metadata: formats a blank vault device, or loads the newest
    /// checkpoint and replays the journal. Returns the flushed blocks that still need to
    /// be destaged.
    pub fn open(
        ssd: Device,
        array: Array,
    ) -> Result<(MetaStore, Vec<RecoveredBlock>, OpenReport), MetaError> {
        let started = Instant::now();
        let ssd_path = ssd.path().display().to_string();
        let media = |err: std::io::Error| MetaError::Media(format!("{ssd_path}: {err}"));
        let mut ring = IoRing::new(64).map_err(media)?;
        let geometry = *array.geometry();
        let mut report = OpenReport::default();
        let (superblock, catalog, maps, generation, recovered, end_lsn) = match read_superblock(
            &mut ring, &ssd,
        )
        .map_err(media)?
        {
            SuperblockState::Blank => {
                let layout = SsdLayout::plan(ssd.size(), geometry.data_blocks())
                    .map_err(MetaError::Invalid)?;
                let serial = now_secs() ^ u64::from(std::process::id()) << 32;
                let catalog = Catalog::new(serial);
                let image = build_checkpoint(
                    0,
                    1,
                    &catalog,
                    std::iter::empty(),
                    0,
                    layout.checkpoint_slot_len,
                )
                .map_err(media)?;
                write_checkpoint(&mut ring, &ssd, &layout, 0, &image).map_err(media)?;
                let superblock = Superblock {
                    sequence: 2,
                    serial,
                    data_devices: geometry.data as u64,
                    unit: geometry.unit,
                    rows_per_segment: geometry.rows_per_segment,
                    rows: geometry.rows,
                    layout,
                    checkpoint_slot: 0,
                    checkpoint_len: image.len,
                    checkpoint_sum: image.sum,
                    checkpoint_lsn: 0,
                    replay_from: 0,
                };
                write_superblock(&mut ring, &ssd, &superblock).map_err(media)?;
                report.formatted = true;
                (superblock, catalog, HashMap::new(), 1, Vec::new(), 0)
            }
            SuperblockState::Unreadable => {
                return Err(MetaError::Media(format!(
                    "{ssd_path} holds data but no valid troika superblock; it is damaged or belongs to something else. Point the hardware model at the right device, or wipe it to start a new node"
                )));
            }
            SuperblockState::Found(superblock) => {
                if !superblock.matches(&geometry) {
                    return Err(MetaError::Invalid(format!(
                        "the data in {} was written with a different array geometry ({}+2, unit {}, {} rows, {} rows per segment) than the hardware model describes; use the model it was created with",
                        ssd.path().display(),
                        superblock.data_devices,
                        superblock.unit,
                        superblock.rows,
                        superblock.rows_per_segment
                    )));
                }
                let loaded = read_checkpoint(&mut ring, &ssd, &superblock).map_err(media)?;
                let mut maps: HashMap<u32, BlockMap> = HashMap::new();
                for id in loaded.catalog.volumes.keys() {
                    maps.insert(*id, BlockMap::new());
                }
                for (volume, lba, entry) in loaded.entries {
                    maps.entry(volume).or_default().set(lba, entry);
                }
                let mut replay = Replay {
                    catalog: loaded.catalog,
                    maps,
                    recovered: HashMap::new(),
                    max_generation: loaded.generation,
                };
                let summary = Journal::replay(
                    &ssd,
                    superblock.layout.log_start,
                    superblock.layout.log_len,
                    superblock.replay_from,
                    |lsn, kind, body| replay.apply(lsn, kind, body),
                )
                .map_err(media)?;
                report.replayed_batches = summary.batches;
                report.replayed_records = summary.records;
                let recovered = replay.finish();
                (
                    superblock,
                    replay.catalog,
                    replay.maps,
                    replay.max_generation + 1,
                    recovered,
                    summary.end_lsn,
                )
            }
        };
        report.recovered_blocks = recovered.len() as u64;
        let alloc = SegmentAllocator::rebuild(
            geometry,
            maps.values()
                .flat_map(|map| map.iter().map(|(_, e)| e.phys)),
        );
        let ssd = Arc::new(ssd);
        let journal = Journal::new(
            ssd.clone(),
            superblock.layout.log_start,
            superblock.layout.log_len,
            end_lsn,
            superblock.replay_from,
        )
        .map_err(media)?;
        let data_blocks = geometry.data_blocks();
        let row_buffer_len = array.row_buffer_len();
        let reserve = (data_blocks / 8).max(6 * geometry.data_blocks_per_segment());
        let mut state = MetaState {
            catalog,
            maps,
            alloc,
            pools: HashMap::new(),
            volumes: HashMap::new(),
        };
        rebuild_handles(&mut state);
        let store = MetaStore {
            array,
            ssd,
            journal,
            state: RwLock::new(state),
            superblock: Mutex::new(superblock),
            generation: AtomicU64::new(generation),
            map_version: AtomicU64::new(0),
            usable_blocks: data_blocks.saturating_sub(reserve),
            repair_rows: BufferPool::new(2, row_buffer_len),
            failed: AtomicBool::new(false),
            counters: MetaCounters::default(),
        };
        report.elapsed = started.elapsed();
        Ok((store, recovered, report))
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

    /// Marks the store failed after a durability error; every later change is refused.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn log_catalog(&self, state: &mut MetaState, op: CatalogOp) -> Result<(), MetaError> {
        state.catalog.apply(&op);
        let (ticket, _) = self
            .journal
            .append(records::CATALOG, |out| records::encode_catalog(&op, out));
        rebuild_handles(state);
        self.journal.commit(ticket).map_err(MetaError::from)
    }

    pub fn create_pool(
        &self,
        name: &str,
        physical: u64,
        virtual_capacity: u64,
    ) -> Result<PoolRecord, MetaError> {
        validate_name(name)?;
        let mut state = self.state_mut();
        if state.catalog.pool_by_name(name).is_some() {
            return Err(MetaError::NameConflict {
                kind: "pool",
                name: name.into(),
            });
        }
        let pool = PoolRecord::new(
            state.catalog.next_pool_id,
            name,
            physical,
            virtual_capacity,
            now_ms(),
        );
        self.check_pool_capacities(&state, &pool)?;
        self.log_catalog(&mut state, CatalogOp::CreatePool(pool.clone()))?;
        Ok(pool)
    }

    pub fn delete_pool(&self, id: u32) -> Result<PoolRecord, MetaError> {
        let mut state = self.state_mut();
        let pool = pool_record(&state, id)?;
        if state
            .catalog
            .volumes
            .values()
            .any(|volume| volume.pool_id == id)
        {
            return Err(MetaError::PoolNotEmpty(pool.name));
        }
        self.log_catalog(&mut state, CatalogOp::DeletePool { id })?;
        Ok(pool)
    }

    pub fn create_volume(
        &self,
        name: &str,
        pool_id: u32,
        size: u64,
        provtype: Provisioning,
    ) -> Result<VolumeRecord, MetaError> {
        validate_name(name)?;
        validate_volume_size(name, size)?;
        let mut state = self.state_mut();
        if state.catalog.volume_by_name(name).is_some() {
            return Err(MetaError::NameConflict {
                kind: "volume",
                name: name.into(),
            });
        }
        let pool = pool_record(&state, pool_id)?;
        check_virtual(&state, &pool, size, None)?;
        check_not_limited(&state, &pool, "create a volume in it")?;
        if provtype == Provisioning::Thick {
            check_physical(&state, &pool, size)?;
        }
        let mut volume =
            VolumeRecord::new(state.catalog.next_volume_id, name, pool_id, size, now_ms());
        volume.provtype = provtype;
        state.maps.insert(volume.id, BlockMap::new());
        self.log_catalog(&mut state, CatalogOp::CreateVolume(volume.clone()))?;
        Ok(volume)
    }

    /// Changes a pool's settable fields through `change`, after checking the result: a
    /// unique valid name, capacities that hold what the pool already uses and fit the
    /// system, and thresholds with warning <= critical <= 100.
    pub fn update_pool(
        &self,
        id: u32,
        change: impl FnOnce(&mut PoolRecord),
    ) -> Result<PoolRecord, MetaError> {
        let mut state = self.state_mut();
        let before = pool_record(&state, id)?;
        let mut pool = before.clone();
        change(&mut pool);
        pool.id = id;
        pool.created_at = before.created_at;
        pool.updated_at = now_ms();
        if pool.name != before.name {
            validate_name(&pool.name)?;
            if state.catalog.pool_by_name(&pool.name).is_some() {
                return Err(MetaError::NameConflict {
                    kind: "pool",
                    name: pool.name,
                });
            }
        }
        if pool.physical_capacity_warning == 0
            || pool.physical_capacity_critical > 100
            || pool.physical_capacity_warning > pool.physical_capacity_critical
        {
            return Err(MetaError::Invalid(format!(
                "pool {:?}: thresholds must satisfy 1 <= warning ({}) <= critical ({}) <= 100 percent",
                pool.name, pool.physical_capacity_warning, pool.physical_capacity_critical
            )));
        }
        if pool.physical_capacity != before.physical_capacity
            || pool.virtual_capacity != before.virtual_capacity
        {
            self.check_pool_capacities(&state, &pool)?;
        }
        self.log_catalog(&mut state, CatalogOp::UpdatePool(pool.clone()))?;
        Ok(pool)
    }

    fn check_pool_capacities(&self, state: &MetaState, pool: &PoolRecord) -> Result<(), MetaError> {
        let physical = pool.physical_capacity;
        if physical < (1 << 20) || !physical.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(MetaError::Invalid(format!(
                "pool {:?}: physical capacity must be at least 1 MiB and a multiple of 4 KiB (got {physical})",
                pool.name
            )));
        }
        if pool.virtual_capacity < physical {
            return Err(MetaError::Invalid(format!(
                "pool {:?}: virtual capacity ({}) must not be below physical capacity ({physical})",
                pool.name, pool.virtual_capacity
            )));
        }
        let allocated = state
            .pools
            .get(&pool.id)
            .map_or(0, |usage| usage.allocated_bytes());
        if physical < allocated {
            return Err(MetaError::Capacity(format!(
                "pool {:?} already holds {allocated} bytes; its physical capacity cannot go below that (asked {physical}); free space first",
                pool.name
            )));
        }
        let sizes: u64 = state
            .catalog
            .volumes
            .values()
            .filter(|volume| volume.pool_id == pool.id)
            .map(|volume| volume.size)
            .sum();
        if pool.virtual_capacity < sizes {
            return Err(MetaError::Capacity(format!(
                "pool {:?} holds volumes of {sizes} bytes in all; its virtual capacity cannot go below that (asked {})",
                pool.name, pool.virtual_capacity
            )));
        }
        let others: u64 = state
            .catalog
            .pools
            .values()
            .filter(|other| other.id != pool.id)
            .map(|other| other.physical_capacity)
            .sum();
        let usable = self.usable_blocks * BLOCK_SIZE as u64;
        if others + physical > usable {
            return Err(MetaError::Capacity(format!(
                "pool {:?} needs {physical} bytes of physical capacity but the system has {} of {usable} usable bytes left for it; ask less or free space",
                pool.name,
                usable.saturating_sub(others)
            )));
        }
        Ok(())
    }

    /// Whether renaming volume `id` to `name` and resizing it to `size` would be accepted,
    /// without changing anything: lets a caller that makes both changes refuse the whole
    /// request before it makes the first.
    pub fn check_volume_change(
        &self,
        id: u32,
        name: Option<&str>,
        size: Option<u64>,
    ) -> Result<(), MetaError> {
        let state = self.state();
        let volume = volume_record(&state, id)?;
        if let Some(name) = name.filter(|name| *name != volume.name) {
            validate_name(name)?;
            if state.catalog.volume_by_name(name).is_some() {
                return Err(MetaError::NameConflict {
                    kind: "volume",
                    name: name.into(),
                });
            }
        }
        if let Some(size) = size {
            check_resize(&state, &volume, size)?;
        }
        Ok(())
    }

    /// Changes a volume's settable fields (name, write protection, SSD use) through
    /// `change`. Size and provisioning are not changed here.
    pub fn update_volume(
        &self,
        id: u32,
        change: impl FnOnce(&mut VolumeRecord),
    ) -> Result<VolumeRecord, MetaError> {
        let mut state = self.state_mut();
        let before = volume_record(&state, id)?;
        let mut volume = before.clone();
        change(&mut volume);
        volume.id = id;
        volume.size = before.size;
        volume.pool_id = before.pool_id;
        volume.provtype = before.provtype;
        volume.created_at = before.created_at;
        volume.updated_at = now_ms();
        if volume.name != before.name {
            validate_name(&volume.name)?;
            if state.catalog.volume_by_name(&volume.name).is_some() {
                return Err(MetaError::NameConflict {
                    kind: "volume",
                    name: volume.name,
                });
            }
        }
        self.log_catalog(&mut state, CatalogOp::UpdateVolume(volume.clone()))?;
        Ok(volume)
    }

    /// Changes a volume's size. Shrinking first drops the map past the new end (the cache
    /// must already have dropped its blocks there).
    pub fn resize_volume(&self, id: u32, size: u64) -> Result<VolumeRecord, MetaError> {
        let mut state = self.state_mut();
        let volume = volume_record(&state, id)?;
        check_resize(&state, &volume, size)?;
        if size < volume.size {
            let generation = self.next_generation();
            self.trim_locked(
                &mut state,
                id,
                size / BLOCK_SIZE as u64,
                volume.size / BLOCK_SIZE as u64,
                generation,
            );
        }
        self.log_catalog(&mut state, CatalogOp::ResizeVolume { id, size })?;
        Ok(state.catalog.volumes[&id].clone())
    }

    /// Deletes a volume and releases its space (the cache must already have dropped it).
    pub fn delete_volume(&self, id: u32) -> Result<VolumeRecord, MetaError> {
        let mut state = self.state_mut();
        let volume = volume_record(&state, id)?;
        if let Some(handle) = state.volumes.get(&id) {
            handle.deleted.store(true, Ordering::Release);
        }
        let generation = self.next_generation();
        self.trim_locked(&mut state, id, 0, u64::MAX / BLOCK_SIZE as u64, generation);
        state.maps.remove(&id);
        self.log_catalog(&mut state, CatalogOp::DeleteVolume { id })?;
        Ok(volume)
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
        let Some(map) = state.maps.get_mut(&volume) else {
            return;
        };
        let mut freed = Vec::new();
        map.remove_range(start, end, generation, |_, entry| freed.push(entry.phys));
        let (ticket, _) = self.journal.append(records::TRIM, |out| {
            records::encode_trim(volume, start, end, generation, out)
        });
        for phys in &freed {
            state.alloc.remove_live(*phys, ticket);
        }
        if let Some(handle) = state.volumes.get(&volume) {
            handle.pool.release(freed.len() as u64);
        }
    }

    /// Reads one block of `volume` into `buf`, verifying it against the map and repairing
    /// it from parity when it fails.
    pub fn read_block(
        &self,
        ring: &mut IoRing,
        volume: &VolumeHandle,
        lba: Lba,
        buf: &mut [u8],
    ) -> Result<BlockRead, IoError> {
        for _ in 0..4 {
            let entry = self.lookup(volume.id.0, lba);
            let Some(entry) = entry else {
                buf[..BLOCK_SIZE].fill(0);
                return Ok(BlockRead::Unmapped);
            };
            let read = self.array.read_block(ring, entry.phys, buf);
            if read.is_ok() && block_checksum(volume.id, lba, &buf[..BLOCK_SIZE]) == entry.checksum
            {
                return Ok(BlockRead::Read {
                    generation: entry.generation,
                });
            }
            if self.lookup(volume.id.0, lba) != Some(entry) {
                continue; // moved while we read it: read the new copy
            }
            let verify = |block: &[u8]| block_checksum(volume.id, lba, block) == entry.checksum;
            let geometry = self.array.geometry();
            let mut codec =
                ParityCodec::new(geometry.data, geometry.unit as usize).map_err(|err| {
                    IoError::Media {
                        volume: volume.name.clone(),
                        detail: err.to_string(),
                    }
                })?;
            // Repairs share a small fixed set of row buffers: a storm of bad blocks waits
            // for one instead of allocating without bound.
            let mut row = self.repair_rows.take();
            if self
                .array
                .repair_block(ring, &mut codec, entry.phys, &verify, &mut row, buf)
            {
                self.counters
                    .checksum_repairs
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "troika: repaired block {lba} of volume {} (physical block {}) from parity: the copy on media failed its checksum",
                    volume.name, entry.phys
                );
                return Ok(BlockRead::Repaired {
                    generation: entry.generation,
                });
            }
            self.counters
                .unrecoverable_reads
                .fetch_add(1, Ordering::Relaxed);
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
        self.state
            .read()
            .maps
            .get(&volume)
            .and_then(|map| map.get(lba))
    }

    /// Writes a checkpoint of the current state. `vault_floor` is called under the state
    /// lock and returns the oldest journal LSN holding vault data still needed; the caller
    /// must keep new vault records from being appended until this returns.
    pub fn checkpoint(&self, vault_floor: impl FnOnce() -> u64) -> Result<(), MetaError> {
        let mut superblock = *self.superblock.lock();
        let media =
            |err: std::io::Error| MetaError::Media(format!("{}: {err}", self.ssd.path().display()));
        let (image, lsn, floor) = {
            let state = self.state.read();
            let lsn = self.journal.next_lsn();
            let floor = vault_floor();
            let count: u64 = state.maps.values().map(BlockMap::len).sum();
            let entries = state
                .maps
                .iter()
                .flat_map(|(volume, map)| map.iter().map(move |(lba, e)| (*volume, lba, e)));
            let image = build_checkpoint(
                lsn,
                self.generation.load(Ordering::Acquire),
                &state.catalog,
                entries,
                count,
                superblock.layout.checkpoint_slot_len,
            )
            .map_err(media)?;
            (image, lsn, floor)
        };
        let mut ring = IoRing::new(8).map_err(media)?;
        let slot = 1 - superblock.checkpoint_slot;
        write_checkpoint(&mut ring, &self.ssd, &superblock.layout, slot, &image).map_err(media)?;
        superblock.sequence += 1;
        superblock.checkpoint_slot = slot;
        superblock.checkpoint_len = image.len;
        superblock.checkpoint_sum = image.sum;
        superblock.checkpoint_lsn = lsn;
        superblock.replay_from = lsn.min(floor);
        write_superblock(&mut ring, &self.ssd, &superblock).map_err(media)?;
        *self.superblock.lock() = superblock;
        self.journal.set_tail(superblock.replay_from);
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn rebuild_handles(state: &mut MetaState) {
    for pool in state.catalog.pools.values() {
        let usage = state
            .pools
            .entry(pool.id)
            .or_insert_with(|| PoolUsage::new(pool.name.clone(), pool.physical_capacity));
        usage.capacity_blocks.store(
            pool.physical_capacity / BLOCK_SIZE as u64,
            Ordering::Release,
        );
    }
    let pools = &state.catalog.pools;
    state.pools.retain(|id, _| pools.contains_key(id));
    let mut fresh_pool_blocks: HashMap<u32, u64> = HashMap::new();
    let mut thick_blocks: HashMap<u32, u64> = HashMap::new();
    for volume in state.catalog.volumes.values() {
        let size_blocks = volume.size / BLOCK_SIZE as u64;
        let thick = volume.provtype == Provisioning::Thick;
        if thick {
            *thick_blocks.entry(volume.pool_id).or_default() += size_blocks;
        }
        if !state.volumes.contains_key(&volume.id) {
            let mapped = state.maps.get(&volume.id).map_or(0, BlockMap::len);
            let home_pool = state.pools[&volume.pool_id].clone();
            let account = if thick {
                let own = PoolUsage::new(home_pool.name.clone(), volume.size);
                own.add(mapped);
                own
            } else {
                *fresh_pool_blocks.entry(volume.pool_id).or_default() += mapped;
                home_pool.clone()
            };
            let handle = Arc::new(VolumeHandle {
                id: VolumeId(volume.id),
                name: volume.name.clone(),
                size: AtomicU64::new(volume.size),
                pool: account,
                home_pool,
                write_protected: AtomicBool::new(volume.write_protected),
                deleted: AtomicBool::new(false),
            });
            state.volumes.insert(volume.id, handle);
        }
        let handle = &state.volumes[&volume.id];
        handle.size.store(volume.size, Ordering::Release);
        handle
            .write_protected
            .store(volume.write_protected, Ordering::Release);
        if thick {
            handle
                .pool
                .capacity_blocks
                .store(size_blocks, Ordering::Release);
        }
    }
    for (id, usage) in &state.pools {
        let reserved = thick_blocks.get(id).copied().unwrap_or(0);
        usage.thick_blocks.store(reserved, Ordering::Release);
    }
    for (pool, blocks) in fresh_pool_blocks {
        state.pools[&pool].add(blocks);
    }
    let volumes = &state.catalog.volumes;
    state.volumes.retain(|id, handle| {
        let keep = volumes.contains_key(id);
        if !keep {
            handle.deleted.store(true, Ordering::Release);
        }
        keep
    });
}

fn pool_record(state: &MetaState, id: u32) -> Result<PoolRecord, MetaError> {
    state
        .catalog
        .pools
        .get(&id)
        .cloned()
        .ok_or_else(|| MetaError::PoolNotFound(id.to_string()))
}

fn volume_record(state: &MetaState, id: u32) -> Result<VolumeRecord, MetaError> {
    state
        .catalog
        .volumes
        .get(&id)
        .cloned()
        .ok_or_else(|| MetaError::VolumeNotFound(id.to_string()))
}

fn validate_name(name: &str) -> Result<(), MetaError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        && !name.starts_with('-')
        && !name.chars().all(|c| c == '.');
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "name {name:?} is not valid: use 1 to 64 letters, digits, '-', '_', '.', ':' (not starting with '-', not only dots)"
        )))
    }
}

fn validate_volume_size(name: &str, size: u64) -> Result<(), MetaError> {
    if size == 0 || !size.is_multiple_of(BLOCK_SIZE as u64) || size > (1u64 << 50) {
        return Err(MetaError::Invalid(format!(
            "volume {name:?}: size must be a non-zero multiple of 4 KiB up to 1 PiB (got {size})"
        )));
    }
    Ok(())
}

/// Whether `volume` may take `size`: a valid size that fits the pool's virtual capacity,
/// and, to grow, a pool that is not LIMITED and physical space for a thick volume.
fn check_resize(state: &MetaState, volume: &VolumeRecord, size: u64) -> Result<(), MetaError> {
    validate_volume_size(&volume.name, size)?;
    let pool = &state.catalog.pools[&volume.pool_id];
    check_virtual(state, pool, size, Some(volume.id))?;
    if size > volume.size {
        check_not_limited(state, pool, "grow a volume in it")?;
        if volume.provtype == Provisioning::Thick {
            check_physical(state, pool, size - volume.size)?;
        }
    }
    Ok(())
}

/// A thick volume (or its growth) needs `bytes` of free physical space in the pool.
fn check_physical(state: &MetaState, pool: &PoolRecord, bytes: u64) -> Result<(), MetaError> {
    let allocated = state
        .pools
        .get(&pool.id)
        .map_or(0, |usage| usage.allocated_bytes());
    let free = pool.physical_capacity.saturating_sub(allocated);
    if bytes > free {
        return Err(MetaError::Capacity(format!(
            "pool {:?} has {free} bytes of physical space free and a thick volume needs {bytes}; grow the pool, free space or use a thin volume",
            pool.name
        )));
    }
    Ok(())
}

/// A pool whose use reached its critical threshold is LIMITED: no new or bigger volumes.
fn check_not_limited(state: &MetaState, pool: &PoolRecord, what: &str) -> Result<(), MetaError> {
    let allocated = state
        .pools
        .get(&pool.id)
        .map_or(0, |usage| usage.allocated_bytes());
    if allocated.saturating_mul(100)
        >= pool.physical_capacity * u64::from(pool.physical_capacity_critical)
    {
        return Err(MetaError::Capacity(format!(
            "pool {:?} is LIMITED: {allocated} of {} bytes are in use (critical threshold {}%); cannot {what}. Free space or grow the pool",
            pool.name, pool.physical_capacity, pool.physical_capacity_critical
        )));
    }
    Ok(())
}

fn check_virtual(
    state: &MetaState,
    pool: &PoolRecord,
    size: u64,
    replacing: Option<u32>,
) -> Result<(), MetaError> {
    let others: u64 = state
        .catalog
        .volumes
        .values()
        .filter(|volume| volume.pool_id == pool.id && Some(volume.id) != replacing)
        .map(|volume| volume.size)
        .sum();
    if others + size > pool.virtual_capacity {
        return Err(MetaError::Capacity(format!(
            "pool {:?} has {} bytes of virtual capacity left and the volume needs {size}; grow the pool's virtual capacity or make the volume smaller",
            pool.name,
            pool.virtual_capacity.saturating_sub(others)
        )));
    }
    Ok(())
}
