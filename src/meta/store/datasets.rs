//! Pools and volumes: creating, changing and deleting them, the checks that keep a change
//! within the pool's and the system's capacity, and rebuilding the lock-free handles the
//! data path holds after every catalog change. Every change goes through
//! `MetaStore::log_catalog`: journaled and committed, then applied, under the state write
//! lock (a commit that fails stops the node, so no change is ever applied uncommitted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hashbrown::HashMap;

use super::{MetaError, MetaState, MetaStore};
use crate::clock::now_ms;
use crate::meta::bounds::{OutOfRange, check_byte_count, same_name};
use crate::meta::catalog::{CapacityLevel, CatalogOp, PoolRecord, Provisioning, VolumeRecord};
use crate::meta::usage::{PoolUsage, VolumeHandle};
use crate::types::{BLOCK_SIZE, VolumeId};

impl MetaStore {
    pub fn create_pool(
        &self,
        name: &str,
        physical: u64,
        virtual_capacity: u64,
    ) -> Result<PoolRecord, MetaError> {
        validate_name(name)?;
        let mut state = self.state_mut();
        if pool_name_taken(&state, name, None) {
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
        self.log_catalog(&mut state, CatalogOp::CreatePool(pool.clone()));
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
        self.log_catalog(&mut state, CatalogOp::DeletePool { id });
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
        if volume_name_taken(&state, name, None) {
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
        self.log_catalog(&mut state, CatalogOp::CreateVolume(volume.clone()));
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
        let mut pool = changed(&before, change, |pool, before| {
            pool.id = id;
            pool.created_at = before.created_at;
        });
        pool.updated_at = now_ms();
        if pool.name != before.name {
            check_rename("pool", &pool.name, |name| {
                pool_name_taken(&state, name, Some(id))
            })?;
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
        self.log_catalog(&mut state, CatalogOp::UpdatePool(pool.clone()));
        Ok(pool)
    }

    fn check_pool_capacities(&self, state: &MetaState, pool: &PoolRecord) -> Result<(), MetaError> {
        let physical = pool.physical_capacity;
        let what = format!("pool {:?}", pool.name);
        check_byte_count(&what, "physical_capacity", physical)?;
        check_byte_count(&what, "virtual_capacity", pool.virtual_capacity)?;
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
            .filter(|volume| volume.pool_id == pool.id && !volume.is_snapshot())
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

    /// Whether renaming volume `id` to `name`, resizing it to `size` and locking it until
    /// `lock` would be accepted, without changing anything: lets a caller that makes
    /// several changes refuse the whole request before it makes the first.
    pub fn check_volume_change(
        &self,
        id: u32,
        name: Option<&str>,
        size: Option<u64>,
        lock: Option<u64>,
    ) -> Result<(), MetaError> {
        let state = self.state();
        let volume = volume_record(&state, id)?;
        if let Some(until) = lock.filter(|until| volume.lock_expires_at != Some(*until)) {
            check_lock_change(&volume, Some(until))?;
        }
        if let Some(name) = name.filter(|name| *name != volume.name) {
            validate_name(name)?;
            if volume_name_taken(&state, name, Some(id)) {
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
        let mut volume = changed(&before, change, |volume, before| {
            volume.id = id;
            volume.size = before.size;
            volume.pool_id = before.pool_id;
            volume.provtype = before.provtype;
            volume.created_at = before.created_at;
            volume.kind = before.kind;
            volume.parent_id = before.parent_id;
            volume.family_id = before.family_id;
            volume.cg_id = before.cg_id;
        });
        let mut unchanged = volume.clone();
        unchanged.lock_expires_at = before.lock_expires_at;
        unchanged.updated_at = before.updated_at;
        if unchanged != before {
            check_unlocked(&before, "change")?;
        }
        if volume.lock_expires_at != before.lock_expires_at {
            check_lock_change(&before, volume.lock_expires_at)?;
        }
        volume.updated_at = now_ms();
        if volume.name != before.name {
            check_rename("volume", &volume.name, |name| {
                volume_name_taken(&state, name, Some(id))
            })?;
        }
        self.log_catalog(&mut state, CatalogOp::UpdateVolume(volume.clone()));
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
        self.log_catalog(&mut state, CatalogOp::ResizeVolume { id, size });
        Ok(state.catalog.volumes[&id].clone())
    }

    /// Whether volume or snapshot `id` may be deleted: not while snapshots of it exist
    /// or a lock holds it.
    pub fn check_delete(&self, id: u32) -> Result<VolumeRecord, MetaError> {
        let state = self.state();
        let volume = volume_record(&state, id)?;
        check_unlocked(&volume, "delete")?;
        // cycle: deleting a volume asks host_ops.rs whether a LUN still maps it; that
        // file looks volumes up with the dataset helpers here.
        super::host_ops::check_unmapped(&state, &volume)?;
        let children: Vec<&str> = state
            .catalog
            .volumes
            .values()
            .filter(|child| child.parent_id == id)
            .map(|child| child.name.as_str())
            .take(5)
            .collect();
        if !children.is_empty() {
            return Err(MetaError::Invalid(format!(
                "{} {:?} has snapshots ({}{}); delete them first",
                if volume.is_snapshot() {
                    "snapshot"
                } else {
                    "volume"
                },
                volume.name,
                children.join(", "),
                if children.len() == 5 { ", ..." } else { "" }
            )));
        }
        Ok(volume)
    }

    /// Deletes a volume or snapshot (the cache must already have dropped it). Blocks no
    /// other dataset refers to go back to the pool in the background
    /// ([`MetaStore::reclaim_step`]).
    pub fn delete_volume(&self, id: u32) -> Result<VolumeRecord, MetaError> {
        self.check_delete(id)?;
        let mut state = self.state_mut();
        let volume = volume_record(&state, id)?;
        // Its handle is marked deleted by the handle rebuild once the deletion is
        // committed, not before.
        self.log_catalog(&mut state, CatalogOp::DeleteVolume { id });
        Ok(volume)
    }
}

/// Dataset → family for every dataset.
pub(super) fn family_table(state: &MetaState) -> HashMap<u32, u32> {
    state
        .catalog
        .volumes
        .values()
        .map(|volume| (volume.id, volume.family()))
        .collect()
}

/// A volume's handle; `pool_ssd` is its pool's `ssd_enabled` (the handle's is both).
fn new_handle(
    volume: &VolumeRecord,
    account: Arc<PoolUsage>,
    home_pool: Arc<PoolUsage>,
    pool_ssd: bool,
) -> Arc<VolumeHandle> {
    Arc::new(VolumeHandle {
        id: VolumeId(volume.id),
        family: volume.family(),
        name: volume.name.clone(),
        size: AtomicU64::new(volume.size),
        pool: account,
        home_pool,
        write_protected: AtomicBool::new(volume.write_protected),
        deleted: AtomicBool::new(false),
        ssd_enabled: AtomicBool::new(volume.ssd_enabled && pool_ssd),
        reads: Default::default(),
    })
}

/// What [`rebuild_handles`] does for `snapshots` just added to the catalog, without
/// walking every dataset: a snapshot holds no thick reservation and is charged to its
/// family's account, so only its own handle and its parent's child count are new. With
/// thousands of datasets the full rebuild dominated a snapshot's creation. Returns false,
/// changing nothing, when a snapshot's family or pool has no account yet (the caller then
/// rebuilds everything).
pub(super) fn add_snapshot_handles(state: &mut MetaState, snapshots: &[VolumeRecord]) -> bool {
    let known = snapshots.iter().all(|snapshot| {
        state.family_accounts.contains_key(&snapshot.family())
            && state.pools.contains_key(&snapshot.pool_id)
            && !state.volumes.contains_key(&snapshot.id)
    });
    if !known {
        return false;
    }
    for snapshot in snapshots {
        let account = state.family_accounts[&snapshot.family()].clone();
        let home_pool = state.pools[&snapshot.pool_id].clone();
        let pool_ssd = state
            .catalog
            .pools
            .get(&snapshot.pool_id)
            .is_none_or(|pool| pool.ssd_enabled);
        let handle = new_handle(snapshot, account, home_pool, pool_ssd);
        state.volumes.insert(snapshot.id, handle);
        *state.children.entry(snapshot.parent_id).or_default() += 1;
    }
    true
}

pub(super) fn rebuild_handles(state: &mut MetaState) {
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
    let mut thick_blocks: HashMap<u32, u64> = HashMap::new();
    for volume in state.catalog.volumes.values() {
        let size_blocks = volume.size / BLOCK_SIZE as u64;
        let thick = volume.provtype == Provisioning::Thick && !volume.is_snapshot();
        if thick {
            *thick_blocks.entry(volume.pool_id).or_default() += size_blocks;
        }
        let home_pool = state.pools[&volume.pool_id].clone();
        // A family's blocks are charged to one account: its pool's for a thin master,
        // the master's own reservation for a thick one.
        let account = state
            .family_accounts
            .entry(volume.family())
            .or_insert_with(|| {
                if thick {
                    PoolUsage::new(home_pool.name.clone(), volume.size)
                } else {
                    home_pool.clone()
                }
            })
            .clone();
        let ssd_enabled = volume.ssd_enabled
            && state
                .catalog
                .pools
                .get(&volume.pool_id)
                .is_none_or(|pool| pool.ssd_enabled);
        if !state.volumes.contains_key(&volume.id) {
            let handle = new_handle(volume, account.clone(), home_pool, ssd_enabled);
            state.volumes.insert(volume.id, handle);
        }
        let handle = &state.volumes[&volume.id];
        handle.ssd_enabled.store(ssd_enabled, Ordering::Release);
        handle.size.store(volume.size, Ordering::Release);
        handle
            .write_protected
            .store(volume.write_protected, Ordering::Release);
        if thick {
            account
                .capacity_blocks
                .store(size_blocks, Ordering::Release);
        }
    }
    for (id, usage) in &state.pools {
        let reserved = thick_blocks.get(id).copied().unwrap_or(0);
        usage.thick_blocks.store(reserved, Ordering::Release);
    }
    state.children.clear();
    for volume in state.catalog.volumes.values() {
        if volume.parent_id != 0 {
            *state.children.entry(volume.parent_id).or_default() += 1;
        }
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

/// A lock may be set on a snapshot, and extended but never shortened or removed while
/// it holds.
fn check_lock_change(volume: &VolumeRecord, until: Option<u64>) -> Result<(), MetaError> {
    if !volume.is_snapshot() {
        return Err(MetaError::Invalid(format!(
            "volume {:?} is not a snapshot; only snapshots can be locked",
            volume.name
        )));
    }
    let now = now_ms();
    if let Some(until) = until {
        let what = format!("snapshot {:?}", volume.name);
        crate::meta::bounds::check_lock_end(&what, until, now)?;
    }
    match (volume.lock_expires_at.filter(|at| *at > now), until) {
        (Some(current), Some(new)) if new >= current => Ok(()),
        (Some(current), _) => Err(MetaError::Locked(format!(
            "snapshot {:?} is locked until {}; a lock can be extended but not shortened or removed",
            volume.name,
            crate::types::format_time(current)
        ))),
        (None, _) => Ok(()),
    }
}

/// Refuses changing or deleting a dataset a lock still holds.
pub(super) fn check_unlocked(volume: &VolumeRecord, what: &str) -> Result<(), MetaError> {
    let now = now_ms();
    if let Some(until) = volume.lock_expires_at.filter(|until| *until > now) {
        return Err(MetaError::Locked(format!(
            "{} {:?} is locked until {} ({} s from now); nobody can {what} it before then",
            if volume.is_snapshot() {
                "snapshot"
            } else {
                "volume"
            },
            volume.name,
            crate::types::format_time(until),
            (until - now).div_ceil(1000)
        )));
    }
    Ok(())
}

pub(super) fn pool_record(state: &MetaState, id: u32) -> Result<PoolRecord, MetaError> {
    state
        .catalog
        .pools
        .get(&id)
        .cloned()
        .ok_or_else(|| MetaError::PoolNotFound(id.to_string()))
}

pub(super) fn volume_record(state: &MetaState, id: u32) -> Result<VolumeRecord, MetaError> {
    state
        .catalog
        .volumes
        .get(&id)
        .cloned()
        .ok_or_else(|| MetaError::VolumeNotFound(id.to_string()))
}

/// Whether a pool other than `except` has `name` (without regard to case).
pub(super) fn pool_name_taken(state: &MetaState, name: &str, except: Option<u32>) -> bool {
    (state.catalog.pools.values())
        .any(|pool| same_name(&pool.name, name) && Some(pool.id) != except)
}

/// Whether a volume or snapshot other than `except` has `name` (without regard to case).
pub(super) fn volume_name_taken(state: &MetaState, name: &str, except: Option<u32>) -> bool {
    (state.catalog.volumes.values())
        .any(|volume| same_name(&volume.name, name) && Some(volume.id) != except)
}

/// Whether a consistency group other than `except` has `name` (without regard to case).
pub(super) fn cg_name_taken(state: &MetaState, name: &str, except: Option<u32>) -> bool {
    (state.catalog.cgs.values()).any(|cg| same_name(&cg.name, name) && Some(cg.id) != except)
}

/// A copy of `before` as the caller's `change` leaves it, with the fields the caller may
/// not change put back by `keep`.
fn changed<T: Clone>(before: &T, change: impl FnOnce(&mut T), keep: impl FnOnce(&mut T, &T)) -> T {
    let mut record = before.clone();
    change(&mut record);
    keep(&mut record, before);
    record
}

/// Checks the new name of a `kind` record: valid, and not `taken` by another record.
fn check_rename(
    kind: &'static str,
    name: &str,
    taken: impl FnOnce(&str) -> bool,
) -> Result<(), MetaError> {
    validate_name(name)?;
    if taken(name) {
        return Err(MetaError::NameConflict {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Refuses `name` for the `kind` record `id` (0: a new one) when another of `others`
/// (their ids and names) has it, without regard to case.
pub(super) fn refuse_taken_name<'a>(
    kind: &'static str,
    name: &str,
    id: u32,
    mut others: impl Iterator<Item = (u32, &'a str)>,
) -> Result<(), MetaError> {
    if others.any(|(other, taken)| same_name(taken, name) && other != id) {
        return Err(MetaError::NameConflict {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn validate_name(name: &str) -> Result<(), MetaError> {
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

/// The largest volume the node serves (1 PiB).
const MAX_VOLUME_BYTES: u64 = 1 << 50;

fn validate_volume_size(name: &str, size: u64) -> Result<(), MetaError> {
    check_byte_count(&format!("volume {name:?}"), "size", size)?;
    if size > MAX_VOLUME_BYTES {
        return Err(OutOfRange {
            code: "PARAM_OUT_OF_RANGE",
            message: format!(
                "volume {name:?}: size {size} is larger than the node's {MAX_VOLUME_BYTES}-byte (1 PiB) volume limit"
            ),
        }
        .into());
    }
    if size == 0 || !size.is_multiple_of(BLOCK_SIZE as u64) {
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
    if pool.capacity_level(allocated) >= CapacityLevel::Critical {
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
        .filter(|volume| {
            volume.pool_id == pool.id && !volume.is_snapshot() && Some(volume.id) != replacing
        })
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
