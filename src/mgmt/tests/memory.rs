//! A node in memory: enough pools, volumes and capacity logic for the REST layer.

use super::*;

pub(super) const SYSTEM_CAPACITY: u64 = 1 << 40;
pub(super) const GIB: u64 = 1 << 30;

/// A pool as stored; the derived fields of [`PoolInfo`] are computed on read.
#[derive(Clone)]
struct StoredPool {
    id: u32,
    name: String,
    physical_capacity: u64,
    virtual_capacity: u64,
}

#[derive(Default)]
struct State {
    pools: BTreeMap<u32, StoredPool>,
    volumes: BTreeMap<u32, VolumeInfo>,
    next_id: u32,
}

impl State {
    fn allocate_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn pool_info(&self, pool: &StoredPool) -> PoolInfo {
        let volumes: Vec<&VolumeInfo> = self
            .volumes
            .values()
            .filter(|volume| volume.pool_id == pool.id)
            .collect();
        let allocated_virtual: u64 = volumes.iter().map(|volume| volume.size).sum();
        let allocated_physical: u64 = volumes.iter().map(|volume| volume.allocated).sum();
        PoolInfo {
            id: pool.id,
            name: pool.name.clone(),
            physical_capacity: pool.physical_capacity,
            virtual_capacity: pool.virtual_capacity,
            allocated_physical_space: allocated_physical,
            free_physical_space: pool.physical_capacity - allocated_physical,
            free_virtual_space: pool.virtual_capacity - allocated_virtual,
            allocated_virtual_space: allocated_virtual,
            volumes_count: volumes.len() as u64,
            state: "NORMAL".into(),
            created_at: 1_700_000_000_000 + u64::from(pool.id),
        }
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let pool = self
            .pools
            .get(&id)
            .ok_or_else(|| MgmtError::pool_not_found(id))?;
        Ok(self.pool_info(pool))
    }
}

/// The node as far as the REST layer can tell: names, ids, capacities, conflicts.
#[derive(Default)]
pub(super) struct Memory {
    state: Mutex<State>,
}

impl Management for Memory {
    fn system(&self) -> SystemInfo {
        let state = self.state.lock();
        SystemInfo {
            name: "troika-test".into(),
            serial: 4242,
            version: "0.1.0".into(),
            model: "troika".into(),
            state: "NORMAL".into(),
            physical_capacity: SYSTEM_CAPACITY,
            allocated_physical_capacity: state.pools.values().map(|p| p.physical_capacity).sum(),
        }
    }

    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock();
        if request.name.is_empty() {
            return Err(MgmtError::bad_request("a pool needs a name"));
        }
        if state.pools.values().any(|pool| pool.name == request.name) {
            return Err(MgmtError::name_conflict("pool", &request.name));
        }
        let allocated: u64 = state.pools.values().map(|p| p.physical_capacity).sum();
        if allocated + request.physical_capacity > SYSTEM_CAPACITY {
            return Err(MgmtError::new(
                "INSUFFICIENT_PHYSICAL_CAPACITY",
                409,
                "not enough physical capacity",
            ));
        }
        let id = state.allocate_id();
        let pool = StoredPool {
            id,
            name: request.name,
            physical_capacity: request.physical_capacity,
            virtual_capacity: request
                .virtual_capacity
                .unwrap_or(request.physical_capacity),
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
        let mut state = self.state.lock();
        let pool = state.pool(request.pool_id)?;
        if state.volumes.values().any(|v| v.name == request.name) {
            return Err(MgmtError::name_conflict("volume", &request.name));
        }
        if request.size == 0 {
            return Err(MgmtError::bad_request("size must be positive"));
        }
        if request.size > pool.free_virtual_space {
            return Err(MgmtError::new(
                "INSUFFICIENT_VIRTUAL_CAPACITY",
                409,
                "the pool's virtual capacity is exhausted",
            ));
        }
        let provtype = request.provtype.unwrap_or_else(|| "THIN".into());
        let id = state.allocate_id();
        let volume = VolumeInfo {
            id,
            name: request.name,
            size: request.size,
            pool_id: pool.id,
            pool_name: pool.name,
            allocated: if provtype == "THICK" { request.size } else { 0 },
            provtype,
            volume_type: "MASTER".into(),
            write_protected: false,
            used: 0,
            serial: format!("742b0f000000{id:04x}"),
            created_at: 1_700_000_000_000,
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

    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock();
        let volume = state
            .volumes
            .get_mut(&id)
            .ok_or_else(|| MgmtError::volume_not_found(id))?;
        volume.size = new_size;
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
}
