//! A node in memory: enough pools, volumes and capacity logic for the REST layer.
//!
//! Why a fake and not the real `NodeApi` on a small store: the tests of the node's own
//! rules for pools and volumes run on the real one (`Fixture::on_node`,
//! `crate::node::small_node_api`: `field_lists_match_the_serialized_objects`,
//! `pools_are_created_read_listed_and_deleted_with_approval`,
//! `volumes_are_created_resized_and_deleted`,
//! `pools_update_names_capacities_thresholds_and_ssd`, `pool_owners_must_be_pool_admins`);
//! the tests that still use this one need states the real node cannot reach quickly or
//! at all in a unit test:
//! - pools and volumes of GiBs and a 1 TiB system (`SYSTEM_CAPACITY`), so the tables and
//!   the capacity refusals show GiB/TiB figures; the small store holds about 128 MiB;
//! - sizes that are not 4 KiB multiples and names with spaces, which the node refuses;
//! - a fixed system name and serial (`troika-test`, 4242) the tables are checked against;
//! - a create that panics (a volume named `boom`), to check the server survives it;
//! - `updated_at` that moves on every change (a logical clock), where the node's
//!   millisecond clock may not between two quick calls;
//! - controllers stopped halfway through failback and re-mirroring (see [`controllers`]),
//!   moved on by the test, where the real node's background work runs on its own clock.
//!
//! It follows the live node's rules (`node::api` over `meta::store`) where the REST layer
//! can see them: unique names, THIN or THICK provisioning, thresholds with
//! 1 <= warning <= critical <= 100, capacities that hold what a pool already uses and fit
//! the system, LIMITED pools that refuse new or bigger volumes, and the node's error codes.
//! It does not check name characters or 4 KiB alignment, so tests can use short sizes and
//! names with spaces. Its three controllers are the small model in [`controllers`].

mod controllers;

use super::*;
use crate::mgmt::api::ControllerInfo;

pub(crate) const SYSTEM_CAPACITY: u64 = 1 << 40;
pub(crate) const GIB: u64 = 1 << 30;

/// Milliseconds since the Unix epoch of the test node's first tick.
const EPOCH_MS: u64 = 1_700_000_000_000;
const DEFAULT_WARNING_PERCENT: u8 = 80;
const DEFAULT_CRITICAL_PERCENT: u8 = 90;

/// A pool as stored; the derived fields of [`PoolInfo`] are computed on read.
#[derive(Clone)]
struct StoredPool {
    id: u32,
    name: String,
    physical_capacity: u64,
    virtual_capacity: u64,
    physical_capacity_warning: u8,
    physical_capacity_critical: u8,
    ssd_enabled: bool,
    owners: Vec<u32>,
    created_at: u64,
    updated_at: u64,
}

#[derive(Default)]
struct State {
    pools: BTreeMap<u32, StoredPool>,
    volumes: BTreeMap<u32, VolumeInfo>,
    controllers: controllers::Controllers,
    next_id: u32,
    /// A logical clock for `created_at` and `updated_at`, so that every change moves it.
    clock: u64,
}

fn capacity_exceeded(message: String) -> MgmtError {
    MgmtError::new("POOL_CAPACITY_EXCEEDED", 409, message)
}

impl State {
    fn allocate_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn now(&mut self) -> u64 {
        self.clock += 1;
        EPOCH_MS + self.clock
    }

    fn pool_volumes(&self, pool_id: u32) -> impl Iterator<Item = &VolumeInfo> {
        self.volumes
            .values()
            .filter(move |volume| volume.pool_id == pool_id)
    }

    fn pool_info(&self, pool: &StoredPool) -> PoolInfo {
        let allocated_virtual: u64 = self.pool_volumes(pool.id).map(|v| v.size).sum();
        let allocated_physical: u64 = self.pool_volumes(pool.id).map(|v| v.allocated).sum();
        // As the node: LOCKED when full, LIMITED from the critical threshold on.
        let state = if allocated_physical >= pool.physical_capacity {
            "LOCKED"
        } else if allocated_physical.saturating_mul(100)
            >= pool.physical_capacity * u64::from(pool.physical_capacity_critical)
        {
            "LIMITED"
        } else {
            "NORMAL"
        };
        PoolInfo {
            id: pool.id,
            name: pool.name.clone(),
            physical_capacity: pool.physical_capacity,
            virtual_capacity: pool.virtual_capacity,
            allocated_physical_space: allocated_physical,
            free_physical_space: pool.physical_capacity.saturating_sub(allocated_physical),
            free_virtual_space: pool.virtual_capacity.saturating_sub(allocated_virtual),
            allocated_virtual_space: allocated_virtual,
            physical_capacity_warning: pool.physical_capacity_warning,
            physical_capacity_critical: pool.physical_capacity_critical,
            ssd_enabled: pool.ssd_enabled,
            owners: pool.owners.clone(),
            volumes_count: self.pool_volumes(pool.id).count() as u64,
            state: state.into(),
            created_at: pool.created_at,
            updated_at: pool.updated_at,
        }
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let pool = self
            .pools
            .get(&id)
            .ok_or_else(|| MgmtError::pool_not_found(id))?;
        Ok(self.pool_info(pool))
    }

    fn volume_mut(&mut self, id: u32) -> Result<&mut VolumeInfo, MgmtError> {
        self.volumes
            .get_mut(&id)
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    /// Whether a volume of `size` bytes (replacing volume `replacing`) fits the pool's
    /// virtual capacity.
    fn check_virtual(
        &self,
        pool: &PoolInfo,
        size: u64,
        replacing: Option<u32>,
    ) -> Result<(), MgmtError> {
        let others: u64 = self
            .pool_volumes(pool.id)
            .filter(|volume| Some(volume.id) != replacing)
            .map(|volume| volume.size)
            .sum();
        if others.saturating_add(size) > pool.virtual_capacity {
            return Err(capacity_exceeded(format!(
                "pool {:?} has {} of {} virtual bytes free; {size} do not fit",
                pool.name,
                pool.virtual_capacity - others,
                pool.virtual_capacity
            )));
        }
        Ok(())
    }

    fn check_not_limited(pool: &PoolInfo, what: &str) -> Result<(), MgmtError> {
        if pool.state == "NORMAL" {
            return Ok(());
        }
        Err(capacity_exceeded(format!(
            "pool {:?} is {}; cannot {what}",
            pool.name, pool.state
        )))
    }

    fn check_physical(pool: &PoolInfo, bytes: u64) -> Result<(), MgmtError> {
        if bytes > pool.free_physical_space {
            return Err(capacity_exceeded(format!(
                "pool {:?} has {} physical bytes free; a thick volume needs {bytes}",
                pool.name, pool.free_physical_space
            )));
        }
        Ok(())
    }

    fn check_name(&self, kind: &str, name: &str) -> Result<(), MgmtError> {
        if name.is_empty() {
            return Err(MgmtError::bad_request(format!("a {kind} needs a name")));
        }
        let taken = match kind {
            "pool" => self.pools.values().any(|pool| pool.name == name),
            _ => self.volumes.values().any(|volume| volume.name == name),
        };
        if taken {
            return Err(MgmtError::name_conflict(kind, name));
        }
        Ok(())
    }

    /// The checks of the node's `MetaStore::update_pool` on a changed pool.
    fn check_pool_update(&self, before: &StoredPool, pool: &StoredPool) -> Result<(), MgmtError> {
        if pool.name != before.name {
            self.check_name("pool", &pool.name)?;
        }
        if pool.physical_capacity_warning == 0
            || pool.physical_capacity_critical > 100
            || pool.physical_capacity_warning > pool.physical_capacity_critical
        {
            return Err(MgmtError::bad_request(format!(
                "pool {:?}: thresholds must satisfy 1 <= warning ({}) <= critical ({}) <= 100 percent",
                pool.name, pool.physical_capacity_warning, pool.physical_capacity_critical
            )));
        }
        if pool.physical_capacity == before.physical_capacity
            && pool.virtual_capacity == before.virtual_capacity
        {
            return Ok(());
        }
        if pool.virtual_capacity < pool.physical_capacity {
            return Err(MgmtError::bad_request(format!(
                "pool {:?}: virtual capacity must not be below physical capacity",
                pool.name
            )));
        }
        let used = self.pool_info(before);
        if pool.physical_capacity < used.allocated_physical_space {
            return Err(capacity_exceeded(format!(
                "pool {:?} already holds {} bytes",
                pool.name, used.allocated_physical_space
            )));
        }
        if pool.virtual_capacity < used.allocated_virtual_space {
            return Err(capacity_exceeded(format!(
                "pool {:?} holds volumes of {} bytes",
                pool.name, used.allocated_virtual_space
            )));
        }
        let others: u64 = self
            .pools
            .values()
            .filter(|other| other.id != pool.id)
            .map(|other| other.physical_capacity)
            .sum();
        if others.saturating_add(pool.physical_capacity) > SYSTEM_CAPACITY {
            return Err(capacity_exceeded(format!(
                "pool {:?} asks {} bytes; the system has {} free",
                pool.name,
                pool.physical_capacity,
                SYSTEM_CAPACITY - others
            )));
        }
        Ok(())
    }
}

/// THIN (the default) or THICK, in any case, as the node accepts them.
fn provisioning(text: Option<&str>) -> Result<&'static str, MgmtError> {
    match text.map(str::to_ascii_uppercase).as_deref() {
        None | Some("THIN") => Ok("THIN"),
        Some("THICK") => Ok("THICK"),
        Some(other) => Err(MgmtError::bad_request(format!(
            "provtype {other:?} is not known; use THIN or THICK"
        ))),
    }
}

/// The node as far as the REST layer can tell: names, ids, capacities, conflicts.
#[derive(Default)]
pub(crate) struct Memory {
    state: Mutex<State>,
}

impl Memory {
    /// Moves the controllers' background work (failback, re-mirroring) on by `step` of
    /// the whole, as time would on the node.
    pub(crate) fn advance_controllers(&self, step: f64) {
        let mut state = self.state.lock();
        let now = state.now();
        state.controllers.advance(step, now);
    }
}

/// Hosts are not modelled by the fake (the trait's defaults answer).
impl crate::mgmt::api::HostManagement for Memory {}

/// Drives are not modelled by the fake (the trait's defaults answer).
impl crate::mgmt::api::DriveManagement for Memory {}

impl Management for Memory {
    fn system(&self) -> SystemInfo {
        let state = self.state.lock();
        let allocated: u64 = state.pools.values().map(|p| p.physical_capacity).sum();
        SystemInfo {
            name: "troika-test".into(),
            serial: 4242,
            serial_number: 4242,
            version: API_LEVEL.into(),
            troika_version: env!("CARGO_PKG_VERSION").into(),
            model: "troika".into(),
            state: "ACTIVE".into(),
            operational_state: OperationalState {
                state: "ACTIVE".into(),
                read_only_system: false,
            },
            physical_capacity: SYSTEM_CAPACITY,
            allocated_physical_capacity: allocated,
            free_physical_capacity: SYSTEM_CAPACITY - allocated,
            used_physical_capacity: state.volumes.values().map(|v| v.used).sum(),
            controllers: 3,
            pools_count: state.pools.len() as u64,
            volumes_count: state.volumes.len() as u64,
            started_at: EPOCH_MS,
            reads: Default::default(),
            ssd_cache: None,
        }
    }

    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock();
        state.check_name("pool", &request.name)?;
        let allocated: u64 = state.pools.values().map(|p| p.physical_capacity).sum();
        if allocated.saturating_add(request.physical_capacity) > SYSTEM_CAPACITY {
            return Err(MgmtError::new(
                "SYSTEM_CAPACITY_EXCEEDED",
                409,
                "not enough physical capacity",
            ));
        }
        let id = state.allocate_id();
        let now = state.now();
        let pool = StoredPool {
            id,
            name: request.name,
            physical_capacity: request.physical_capacity,
            virtual_capacity: request
                .virtual_capacity
                .unwrap_or(request.physical_capacity),
            physical_capacity_warning: DEFAULT_WARNING_PERCENT,
            physical_capacity_critical: DEFAULT_CRITICAL_PERCENT,
            ssd_enabled: true,
            owners: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        state.pools.insert(id, pool);
        state.pool(id)
    }

    fn pools(&self) -> Vec<PoolInfo> {
        let state = self.state.lock();
        state
            .pools
            .values()
            .map(|pool| state.pool_info(pool))
            .collect()
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        self.state.lock().pool(id)
    }

    fn update_pool(&self, id: u32, update: PoolUpdate) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock();
        let before = state
            .pools
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::pool_not_found(id))?;
        let mut pool = before.clone();
        let PoolUpdate {
            name,
            physical_capacity,
            virtual_capacity,
            physical_capacity_warning,
            physical_capacity_critical,
            ssd_enabled,
            owners,
        } = update;
        pool.name = name.unwrap_or(pool.name);
        pool.physical_capacity = physical_capacity.unwrap_or(pool.physical_capacity);
        pool.virtual_capacity = virtual_capacity.unwrap_or(pool.virtual_capacity);
        pool.physical_capacity_warning =
            physical_capacity_warning.unwrap_or(pool.physical_capacity_warning);
        pool.physical_capacity_critical =
            physical_capacity_critical.unwrap_or(pool.physical_capacity_critical);
        pool.ssd_enabled = ssd_enabled.unwrap_or(pool.ssd_enabled);
        pool.owners = owners.unwrap_or(pool.owners);
        state.check_pool_update(&before, &pool)?;
        pool.updated_at = state.now();
        let new_name = pool.name.clone();
        state.pools.insert(id, pool);
        for volume in state.volumes.values_mut() {
            if volume.pool_id == id {
                volume.pool_name = new_name.clone();
            }
        }
        state.pool(id)
    }

    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock();
        let info = state.pool(id)?;
        if info.volumes_count > 0 {
            return Err(MgmtError::new(
                "POOL_NOT_EMPTY",
                409,
                "delete its volumes first",
            ));
        }
        state.pools.remove(&id);
        Ok(info)
    }

    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError> {
        if request.name == "boom" {
            panic!("the test node fails on a volume named boom");
        }
        let provtype = provisioning(request.provtype.as_deref())?;
        let mut state = self.state.lock();
        state.check_name("volume", &request.name)?;
        if request.size == 0 {
            return Err(MgmtError::bad_request("size must be positive"));
        }
        let pool = state.pool(request.pool_id)?;
        state.check_virtual(&pool, request.size, None)?;
        State::check_not_limited(&pool, "create a volume in it")?;
        if provtype == "THICK" {
            State::check_physical(&pool, request.size)?;
        }
        let id = state.allocate_id();
        let now = state.now();
        let volume = VolumeInfo {
            id,
            name: request.name,
            size: request.size,
            pool_id: pool.id,
            pool_name: pool.name,
            provtype: provtype.into(),
            volume_type: "MASTER".into(),
            dataset_type: "VOLUME".into(),
            parent_id: 0,
            family_id: id,
            depth: 0,
            has_children: false,
            write_protected: request.write_protected.unwrap_or(false),
            ssd_enabled: request.ssd_enabled.unwrap_or(true),
            used: 0,
            allocated: if provtype == "THICK" { request.size } else { 0 },
            unique_size: 0,
            tree_allocated: 0,
            num_blocks: request.size / 512,
            rmr_source: false,
            rmr_target: false,
            rmr_snapshot_guid: None,
            mapped: false,
            cg_id: None,
            lock_expires_at: None,
            lock_state: "UNLOCKED".into(),
            serial: format!("742b0f000000{id:04x}"),
            created_at: now,
            updated_at: now,
        };
        state.volumes.insert(id, volume.clone());
        Ok(volume)
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        self.state.lock().volumes.values().cloned().collect()
    }

    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let state = self.state.lock();
        state
            .volumes
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    fn update_volume(&self, id: u32, update: VolumeUpdate) -> Result<VolumeInfo, MgmtError> {
        let VolumeUpdate {
            name,
            size,
            write_protected,
            ssd_enabled,
            lock_expires_at: _,
        } = update;
        let before = {
            let mut state = self.state.lock();
            let before = state.volume_mut(id)?.clone();
            if let Some(name) = &name
                && *name != before.name
            {
                state.check_name("volume", name)?;
            }
            before
        };
        if let Some(size) = size {
            self.resize_volume(id, size)?;
        }
        let mut state = self.state.lock();
        let now = state.now();
        let volume = state.volume_mut(id)?;
        volume.name = name.unwrap_or(before.name);
        volume.write_protected = write_protected.unwrap_or(before.write_protected);
        volume.ssd_enabled = ssd_enabled.unwrap_or(before.ssd_enabled);
        volume.updated_at = now;
        Ok(volume.clone())
    }

    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock();
        let before = state.volume_mut(id)?.clone();
        if new_size == 0 {
            return Err(MgmtError::bad_request("size must be positive"));
        }
        let pool = state.pool(before.pool_id)?;
        state.check_virtual(&pool, new_size, Some(id))?;
        let thick = before.provtype == "THICK";
        if new_size > before.size {
            State::check_not_limited(&pool, "grow a volume in it")?;
            if thick {
                State::check_physical(&pool, new_size - before.size)?;
            }
        }
        let now = state.now();
        let volume = state.volume_mut(id)?;
        volume.size = new_size;
        if thick {
            volume.allocated = new_size;
        }
        volume.updated_at = now;
        Ok(volume.clone())
    }

    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        self.state
            .lock()
            .volumes
            .remove(&id)
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    fn metrics_text(&self) -> String {
        "# TYPE troika_volumes gauge\ntroika_volumes 0\n".into()
    }

    fn controllers(&self) -> Vec<ControllerInfo> {
        self.state.lock().controllers.infos()
    }

    fn fail_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError> {
        let mut state = self.state.lock();
        let now = state.now();
        state.controllers.fail(id, now)
    }

    fn recover_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError> {
        let mut state = self.state.lock();
        let now = state.now();
        state.controllers.recover(id, now)
    }
}
