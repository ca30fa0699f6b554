//! The management API over the live node: the [`Management`] calls the REST server makes,
//! turned into catalog changes on the metadata store and cache discards.
//!
//! Pool states come from real use: a pool is LIMITED once its allocated space (written and
//! cached blocks plus thick reservations) reaches its critical threshold — no new or bigger
//! volumes — and LOCKED once it is full, when the cache refuses hosts' writes to its
//! volumes with "no space" until space is freed.

use crate::io::FaultPlane;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::cache::Cache;
use crate::controller::{ControllerError, Controllers};
use crate::hw::HwModel;
use crate::meta::{MetaError, MetaState, MetaStore, PoolRecord, Provisioning, VolumeRecord};
use crate::mgmt::api::{
    API_LEVEL, CgCreate, CgInfo, CgUpdate, ChangedBlocks, ControllerInfo, OperationalState,
    PolicyCreate, PolicyInfo, PolicyUpdate, PoolUpdate, ReadSourcesInfo, ScrubInfo, SnapshotCreate,
    SsdCacheInfo, VolumeUpdate,
};
use crate::mgmt::{
    Management, MgmtError, PoolCreate, PoolInfo, SystemInfo, VolumeCreate, VolumeInfo,
};
use crate::types::BLOCK_SIZE;

/// The management API over the live node.
pub struct NodeApi {
    pub hw: HwModel,
    pub meta: Arc<MetaStore>,
    pub cache: Arc<Cache>,
    pub controllers: Arc<Controllers>,
    /// Fault injection and simulated write caches on the model's devices.
    pub faults: Arc<FaultPlane>,
    /// The background scrub.
    pub scrub: Arc<super::scrub::Scrubber>,
    pub started_at: u64,
}

pub(super) fn mgmt_error(err: MetaError) -> MgmtError {
    match err {
        MetaError::PoolNotFound(what) => MgmtError::pool_not_found(what),
        MetaError::VolumeNotFound(what) => MgmtError::volume_not_found(what),
        MetaError::CgNotFound(what) => MgmtError::cg_not_found(what),
        MetaError::Locked(message) => MgmtError::new("SNAPSHOT_LOCKED", 409, message),
        MetaError::NameConflict { kind, name } => MgmtError::name_conflict(kind, &name),
        MetaError::PoolNotEmpty(name) => MgmtError::new(
            "POOL_NOT_EMPTY",
            409,
            format!("pool {name:?} still holds volumes; delete them first"),
        ),
        MetaError::Capacity(message) => MgmtError::new("POOL_CAPACITY_EXCEEDED", 409, message),
        MetaError::Invalid(message) => MgmtError::bad_request(message),
        MetaError::OutOfRange(refused) => MgmtError::new(refused.code, 400, refused.message),
        other @ (MetaError::Journal(_) | MetaError::Media(_) | MetaError::WrongKey { .. }) => {
            MgmtError::internal(other.to_string())
        }
    }
}

/// The management error for a refused controller operation: an unknown number is not
/// found, anything else conflicts with the controllers' states.
pub(super) fn controller_error(err: ControllerError) -> MgmtError {
    match err {
        ControllerError::NotFound { .. } => {
            MgmtError::new("CONTROLLER_NOT_FOUND", 404, err.to_string())
        }
        ControllerError::Transition { .. }
        | ControllerError::LastLive { .. }
        | ControllerError::StillRemirroring { .. }
        | ControllerError::FailbackUnderWay { .. } => {
            MgmtError::new("CONTROLLER_STATE", 409, err.to_string())
        }
    }
}

fn pool_info(state: &MetaState, pool: &PoolRecord) -> PoolInfo {
    let allocated = state
        .pools
        .get(&pool.id)
        .map_or(0, |usage| usage.allocated_bytes());
    let (mut volumes_count, mut virtual_used) = (0, 0);
    // Snapshots share their family's space and take no virtual capacity.
    for volume in state.catalog.volumes.values() {
        if volume.pool_id == pool.id && !volume.is_snapshot() {
            volumes_count += 1;
            virtual_used += volume.size;
        }
    }
    PoolInfo {
        id: pool.id,
        name: pool.name.clone(),
        physical_capacity: pool.physical_capacity,
        virtual_capacity: pool.virtual_capacity,
        allocated_physical_space: allocated,
        free_physical_space: pool.physical_capacity.saturating_sub(allocated),
        free_virtual_space: pool.virtual_capacity.saturating_sub(virtual_used),
        allocated_virtual_space: virtual_used,
        physical_capacity_warning: pool.physical_capacity_warning,
        physical_capacity_critical: pool.physical_capacity_critical,
        ssd_enabled: pool.ssd_enabled,
        owners: pool.owners.clone(),
        volumes_count,
        state: pool.capacity_level(allocated).pool_state().into(),
        created_at: pool.created_at,
        updated_at: pool.updated_at,
    }
}

/// InfiniBox's lock states.
pub(super) fn lock_state(lock_expires_at: Option<u64>) -> &'static str {
    match lock_expires_at {
        None => "UNLOCKED",
        Some(until) if until > crate::clock::now_ms() => "LOCKED",
        Some(_) => "EXPIRED",
    }
}

pub(super) fn volume_info(state: &MetaState, serial: u64, volume: &VolumeRecord) -> VolumeInfo {
    // A thick volume's own account also counts blocks still in cache; a thin one's share
    // of its pool's account is not kept apart, so it shows its mapped blocks.
    let mapped = state.maps.len(volume.id) * BLOCK_SIZE as u64;
    let used = match (volume.provtype, state.volumes.get(&volume.id)) {
        (Provisioning::Thick, Some(handle)) => handle.pool.used_bytes(),
        _ => mapped,
    };
    let pool_name = state
        .catalog
        .pools
        .get(&volume.pool_id)
        .map(|pool| pool.name.clone())
        .unwrap_or_default();
    VolumeInfo {
        id: volume.id,
        name: volume.name.clone(),
        size: volume.size,
        pool_id: volume.pool_id,
        pool_name,
        provtype: volume.provtype.as_str().into(),
        volume_type: volume.kind.as_str().into(),
        dataset_type: "VOLUME".into(),
        parent_id: volume.parent_id,
        family_id: volume.family(),
        depth: state.catalog.depth(volume.id),
        has_children: state.children.contains_key(&volume.id),
        write_protected: volume.write_protected,
        ssd_enabled: volume.ssd_enabled,
        used,
        allocated: match volume.provtype {
            Provisioning::Thick => volume.size,
            Provisioning::Thin => used,
        },
        unique_size: state.maps.unique_blocks(volume.id) * BLOCK_SIZE as u64,
        tree_allocated: state
            .family_accounts
            .get(&volume.family())
            .map_or(0, |account| account.used_bytes()),
        num_blocks: volume.size / 512,
        rmr_source: false,
        rmr_target: false,
        rmr_snapshot_guid: None,
        mapped: state.catalog.is_mapped(volume.id),
        cg_id: volume.cg_id,
        lock_expires_at: volume.lock_expires_at,
        lock_state: lock_state(volume.lock_expires_at).into(),
        serial: super::iscsi::dataset_serial(serial, volume.id),
        created_at: volume.created_at,
        updated_at: volume.updated_at.max(volume.created_at),
    }
}

impl NodeApi {
    fn with_pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let state = self.meta.state();
        let pool = state
            .catalog
            .pools
            .get(&id)
            .ok_or_else(|| MgmtError::pool_not_found(id))?;
        Ok(pool_info(&state, pool))
    }

    fn with_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let state = self.meta.state();
        let volume = state
            .catalog
            .volumes
            .get(&id)
            .ok_or_else(|| MgmtError::volume_not_found(id))?;
        Ok(volume_info(&state, self.meta.serial(), volume))
    }
}

fn provisioning(text: Option<&str>) -> Result<Provisioning, MgmtError> {
    match text.map(str::to_ascii_uppercase).as_deref() {
        None | Some("THIN") => Ok(Provisioning::Thin),
        Some("THICK") => Ok(Provisioning::Thick),
        Some(other) => Err(MgmtError::bad_request(format!(
            "provtype {other:?} is not known; use THIN or THICK"
        ))),
    }
}

/// Blocks read since start, by where they were found, over every controller.
fn read_sources(cache: &Cache) -> ReadSourcesInfo {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let mut info = ReadSourcesInfo::default();
    for sources in &cache.counters.reads_by_controller {
        info.dram_hits += load(&sources.dram_hits);
        info.ssd_hits += load(&sources.ssd_hits);
        info.misses += load(&sources.misses);
    }
    info
}

/// The SSD tier's totals in the shape `system show` reports.
fn ssd_cache_info(cache: &Cache) -> Option<SsdCacheInfo> {
    let (total, _) = cache.ssd()?.stats();
    Some(SsdCacheInfo {
        state: if total.failed { "FAILED" } else { "ACTIVE" }.into(),
        capacity: total.capacity_bytes,
        cached_bytes: total.cached_bytes,
        index_bytes: total.index_bytes,
        index_bytes_per_block: if total.cached_blocks == 0 {
            0.0
        } else {
            total.index_bytes as f64 / total.cached_blocks as f64
        },
        hits: total.hits,
        misses: total.misses,
        mismatches: total.mismatches,
        admissions: total.admissions,
        evictions: total.evictions,
        throttled: total.throttled,
        bypassed: cache.counters.ssd_bypassed.load(Ordering::Relaxed),
        bytes_written: total.bytes_written,
    })
}

impl Management for NodeApi {
    fn fault_plane(&self) -> Option<&FaultPlane> {
        Some(&self.faults)
    }

    fn system(&self) -> SystemInfo {
        let state = self.meta.state();
        let promised: u64 = state
            .catalog
            .pools
            .values()
            .map(|pool| pool.physical_capacity)
            .sum();
        let used: u64 = state.pools.values().map(|usage| usage.used_bytes()).sum();
        let physical = self.meta.usable_blocks() * BLOCK_SIZE as u64;
        let health = if self.meta.has_failed() {
            "FAILED"
        } else if self.controllers.live_count() < self.hw.controllers.min(2) {
            // One controller left: writes are vaulted before they are acknowledged.
            "DEGRADED"
        } else {
            "ACTIVE"
        };
        SystemInfo {
            name: self.hw.name.clone(),
            serial: self.meta.serial(),
            serial_number: self.meta.serial(),
            version: API_LEVEL.into(),
            troika_version: env!("CARGO_PKG_VERSION").into(),
            model: format!(
                "troika {} controllers, {}+2 x {} NL-SAS",
                self.hw.controllers,
                self.hw.stripe.data,
                self.hw.nlsas.len()
            ),
            state: health.into(),
            operational_state: OperationalState {
                state: health.into(),
                read_only_system: false,
            },
            physical_capacity: physical,
            allocated_physical_capacity: promised,
            free_physical_capacity: physical.saturating_sub(promised),
            used_physical_capacity: used,
            controllers: self.controllers.ids().len(),
            pools_count: state.catalog.pools.len() as u64,
            volumes_count: state.catalog.volumes.len() as u64,
            started_at: self.started_at,
            reads: read_sources(&self.cache),
            ssd_cache: ssd_cache_info(&self.cache),
        }
    }

    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError> {
        let virtual_capacity = request
            .virtual_capacity
            .unwrap_or(request.physical_capacity);
        let pool = self
            .meta
            .create_pool(&request.name, request.physical_capacity, virtual_capacity)
            .map_err(|err| match err {
                MetaError::Capacity(message) => {
                    MgmtError::new("SYSTEM_CAPACITY_EXCEEDED", 409, message)
                }
                other => mgmt_error(other),
            })?;
        self.with_pool(pool.id)
    }

    fn pools(&self) -> Vec<PoolInfo> {
        let state = self.meta.state();
        state
            .catalog
            .pools
            .values()
            .map(|pool| pool_info(&state, pool))
            .collect()
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        self.with_pool(id)
    }

    fn update_pool(&self, id: u32, update: PoolUpdate) -> Result<PoolInfo, MgmtError> {
        self.meta
            .update_pool(id, |pool| {
                if let Some(name) = update.name {
                    pool.name = name;
                }
                if let Some(physical) = update.physical_capacity {
                    pool.physical_capacity = physical;
                }
                if let Some(virtual_capacity) = update.virtual_capacity {
                    pool.virtual_capacity = virtual_capacity;
                }
                if let Some(warning) = update.physical_capacity_warning {
                    pool.physical_capacity_warning = warning;
                }
                if let Some(critical) = update.physical_capacity_critical {
                    pool.physical_capacity_critical = critical;
                }
                if let Some(ssd) = update.ssd_enabled {
                    pool.ssd_enabled = ssd;
                }
                if let Some(owners) = update.owners {
                    pool.owners = owners;
                }
            })
            .map_err(|err| match err {
                MetaError::Capacity(message) => {
                    MgmtError::new("POOL_CAPACITY_EXCEEDED", 409, message)
                }
                other => mgmt_error(other),
            })?;
        self.with_pool(id)
    }

    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let info = self.pool(id)?;
        self.meta.delete_pool(id).map_err(mgmt_error)?;
        Ok(info)
    }

    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError> {
        let provtype = provisioning(request.provtype.as_deref())?;
        let volume = self
            .meta
            .create_volume(&request.name, request.pool_id, request.size, provtype)
            .map_err(mgmt_error)?;
        if request.write_protected.is_some() || request.ssd_enabled.is_some() {
            return self.update_volume(
                volume.id,
                VolumeUpdate {
                    write_protected: request.write_protected,
                    ssd_enabled: request.ssd_enabled,
                    ..VolumeUpdate::default()
                },
            );
        }
        self.with_volume(volume.id)
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        let state = self.meta.state();
        let serial = self.meta.serial();
        state
            .catalog
            .volumes
            .values()
            .map(|volume| volume_info(&state, serial, volume))
            .collect()
    }

    fn volumes_page(&self, skip: usize, take: usize, descending: bool) -> (usize, Vec<VolumeInfo>) {
        let state = self.meta.state();
        let serial = self.meta.serial();
        let volumes = &state.catalog.volumes;
        let info = |volume: &VolumeRecord| volume_info(&state, serial, volume);
        let page = if descending {
            volumes
                .values()
                .rev()
                .skip(skip)
                .take(take)
                .map(info)
                .collect()
        } else {
            volumes.values().skip(skip).take(take).map(info).collect()
        };
        (volumes.len(), page)
    }

    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        self.with_volume(id)
    }

    fn update_volume(&self, id: u32, update: VolumeUpdate) -> Result<VolumeInfo, MgmtError> {
        // Everything is checked before anything changes, so a refused request changes
        // nothing; the size goes first because it is the change that touches data.
        self.meta
            .check_volume_change(
                id,
                update.name.as_deref(),
                update.size,
                update.lock_expires_at,
            )
            .map_err(mgmt_error)?;
        if let Some(size) = update.size {
            self.resize_volume(id, size)?;
        }
        self.meta
            .update_volume(id, |volume| {
                if let Some(name) = update.name {
                    volume.name = name;
                }
                if let Some(protected) = update.write_protected {
                    volume.write_protected = protected;
                }
                if let Some(ssd) = update.ssd_enabled {
                    volume.ssd_enabled = ssd;
                }
                if let Some(until) = update.lock_expires_at {
                    volume.lock_expires_at = Some(until);
                }
            })
            .map_err(mgmt_error)?;
        self.with_volume(id)
    }

    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError> {
        let before = self.with_volume(id)?;
        self.meta.resize_volume(id, new_size).map_err(mgmt_error)?;
        if new_size < before.size {
            let block = BLOCK_SIZE as u64;
            self.cache
                .discard_blocks(id, new_size / block, before.size / block);
        }
        self.with_volume(id)
    }

    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        self.delete_volume_now(id)
    }

    fn create_snapshots(
        &self,
        requests: Vec<SnapshotCreate>,
    ) -> Result<Vec<VolumeInfo>, MgmtError> {
        self.take_snapshots(requests)
    }

    fn restore_volume(&self, id: u32, source: u32) -> Result<VolumeInfo, MgmtError> {
        self.restore(id, source)
    }

    fn refresh_snapshot(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        self.refresh(id)
    }

    fn changed_blocks(&self, id: u32, base: u32) -> Result<ChangedBlocks, MgmtError> {
        self.diff(id, base)
    }

    fn cgs(&self) -> Vec<CgInfo> {
        self.all_cgs()
    }

    fn cg(&self, id: u32) -> Result<CgInfo, MgmtError> {
        self.one_cg(id)
    }

    fn create_cg(&self, request: CgCreate) -> Result<CgInfo, MgmtError> {
        self.new_cg(request)
    }

    fn update_cg(&self, id: u32, update: CgUpdate) -> Result<CgInfo, MgmtError> {
        self.change_cg(id, update)
    }

    fn delete_cg(&self, id: u32, delete_members: bool) -> Result<CgInfo, MgmtError> {
        self.remove_cg(id, delete_members)
    }

    fn cg_members(&self, id: u32) -> Result<Vec<VolumeInfo>, MgmtError> {
        self.cg_member_infos(id)
    }

    fn add_cg_member(&self, cg: u32, volume: u32) -> Result<VolumeInfo, MgmtError> {
        self.join_cg(cg, volume)
    }

    fn remove_cg_member(&self, cg: u32, volume: u32) -> Result<VolumeInfo, MgmtError> {
        self.leave_cg(cg, volume)
    }

    fn restore_cg(&self, id: u32, source: u32) -> Result<CgInfo, MgmtError> {
        self.restore_group(id, source)
    }

    fn refresh_cg(&self, id: u32) -> Result<CgInfo, MgmtError> {
        self.refresh_group(id)
    }

    fn policies(&self) -> Vec<PolicyInfo> {
        self.all_policies()
    }

    fn policy(&self, id: u32) -> Result<PolicyInfo, MgmtError> {
        self.one_policy(id)
    }

    fn create_policy(&self, request: PolicyCreate) -> Result<PolicyInfo, MgmtError> {
        self.new_policy(request)
    }

    fn update_policy(&self, id: u32, update: PolicyUpdate) -> Result<PolicyInfo, MgmtError> {
        self.change_policy(id, update)
    }

    fn delete_policy(&self, id: u32) -> Result<PolicyInfo, MgmtError> {
        self.remove_policy(id)
    }

    fn set_policy_asset(&self, id: u32, volume: u32, add: bool) -> Result<PolicyInfo, MgmtError> {
        self.policy_asset(id, volume, add)
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        crate::stats::render_node_metrics(
            &mut out,
            &self.meta,
            &self.cache,
            self.controllers.stats(),
        );
        let gauges: Vec<crate::stats::ControllerGauges> = self
            .controllers
            .infos()
            .into_iter()
            .map(|info| crate::stats::ControllerGauges {
                id: info.id,
                up: info.state == "ACTIVE" || info.state == "RECOVERING",
                dirty_bytes: info.dirty_bytes,
                mirror_bytes: info.mirror_bytes,
                mirror_lag_bytes: info.mirror_lag_bytes,
                failovers: info.failovers,
            })
            .collect();
        crate::stats::render_controller_gauges(&mut out, &gauges);
        self.scrub.render_metrics(&mut out);
        out
    }

    fn scrub(&self) -> Result<ScrubInfo, MgmtError> {
        Ok(self.scrub.info())
    }

    fn start_scrub(&self) -> Result<ScrubInfo, MgmtError> {
        Ok(self.scrub.start())
    }

    fn stop_scrub(&self) -> Result<ScrubInfo, MgmtError> {
        Ok(self.scrub.stop())
    }

    fn controllers(&self) -> Vec<ControllerInfo> {
        self.controllers.infos()
    }

    fn fail_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError> {
        self.controllers
            .fail_by_number(id)
            .map_err(controller_error)
    }

    fn recover_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError> {
        self.controllers
            .recover_by_number(id)
            .map_err(controller_error)
    }
}

impl NodeApi {
    /// Deletes a volume or snapshot: refused (changing nothing) while it has snapshots or
    /// a lock holds it; otherwise its cached blocks go, then the catalog entry, and its
    /// space comes back in the background.
    pub(super) fn delete_volume_now(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let info = self.volume(id)?;
        self.meta.check_delete(id).map_err(mgmt_error)?;
        if let Some(handle) = self.meta.state().volumes.get(&id) {
            handle.deleted.store(true, Ordering::Release);
        }
        self.cache.forget_volume(id);
        self.meta.delete_volume(id).map_err(mgmt_error)?;
        Ok(info)
    }
}

#[cfg(test)]
mod controller_error_tests {
    use super::*;
    use crate::controller::state::{ControllerEvent, ControllerState, InvalidTransition};
    use crate::types::ControllerId;

    /// The REST answers for refused controller operations, word for word as operators
    /// (and scripts matching on them) have always seen them.
    #[test]
    fn controller_refusals_keep_their_codes_and_messages() {
        let id = |number| ControllerId::from_number(number, 3).unwrap();
        let cases = [
            (
                ControllerError::NotFound {
                    number: 9,
                    count: 3,
                },
                "CONTROLLER_NOT_FOUND",
                404,
                "there is no controller 9; this node has controllers 1 to 3",
            ),
            (
                ControllerError::Transition {
                    id: id(2),
                    action: "recover",
                    refused: InvalidTransition {
                        from: ControllerState::Active,
                        event: ControllerEvent::Recover,
                    },
                },
                "CONTROLLER_STATE",
                409,
                "controller 2 cannot recover now: a controller in state ACTIVE cannot take event Recover",
            ),
            (
                ControllerError::LastLive { id: id(3) },
                "CONTROLLER_STATE",
                409,
                "controller 3 is the last live controller; failing it would stop the node",
            ),
            (
                ControllerError::StillRemirroring {
                    unmirrored_mib: 3.0,
                },
                "CONTROLLER_STATE",
                409,
                "controllers are still re-mirroring 3.0 MiB of dirty data after the last failure; fail another controller once REDUNDANCY_RESTORED is raised (see `troika controller ls`)",
            ),
            (
                ControllerError::FailbackUnderWay {
                    returning: id(1),
                    id: id(2),
                },
                "CONTROLLER_STATE",
                409,
                "controller 1 is still failing back; recover controller 2 once it is ACTIVE (see `troika controller ls`)",
            ),
        ];
        for (err, code, status, message) in cases {
            let mapped = controller_error(err);
            assert_eq!(
                (mapped.code, mapped.status, mapped.message.as_str()),
                (code, status, message)
            );
        }
    }
}
