//! Management requests: arbitrary bytes through the HTTP parser and, when they make a
//! request, through the REST layer as a network caller and as the local administrator.
//! The node is an in-memory fake; the user store and event log are the real ones, in a
//! temporary directory made once per process. No input may panic, and no answer may be a
//! server error (the fake node never fails, so a 5xx is the REST layer's own fault).
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use troika::mgmt::api::{
    ControllerInfo, DriveManagement, HostManagement, Management, MgmtError, PoolCreate, PoolInfo,
    PoolUpdate, SystemInfo, VolumeCreate, VolumeInfo, VolumeUpdate,
};
use troika::mgmt::events::EventLog;
use troika::mgmt::http::parse_request;
use troika::mgmt::rest::{Mgmt, Origin, handle};
use troika::mgmt::users::UserStore;

/// Pools and volumes kept in memory, with just enough checking to answer like a node.
#[derive(Default)]
struct FakeNode {
    state: Mutex<(Vec<PoolInfo>, Vec<VolumeInfo>, u32)>,
}

fn pool_info(id: u32, name: &str, capacity: u64) -> PoolInfo {
    serde_json::from_value(json!({
        "id": id, "name": name, "physical_capacity": capacity, "virtual_capacity": capacity,
        "allocated_physical_space": 0, "free_physical_space": capacity,
        "free_virtual_space": capacity, "allocated_virtual_space": 0,
        "physical_capacity_warning": 80, "physical_capacity_critical": 90,
        "ssd_enabled": true, "owners": [], "volumes_count": 0, "state": "NORMAL",
        "created_at": 0, "updated_at": 0,
    }))
    .expect("a pool")
}

fn volume_info(id: u32, request: &VolumeCreate, pool_name: &str) -> VolumeInfo {
    serde_json::from_value(json!({
        "id": id, "name": request.name, "size": request.size, "pool_id": request.pool_id,
        "pool_name": pool_name, "provtype": "THIN", "type": "MASTER", "parent_id": 0,
        "family_id": id, "depth": 0, "has_children": false,
        "write_protected": request.write_protected.unwrap_or(false),
        "ssd_enabled": request.ssd_enabled.unwrap_or(true), "used": 0, "allocated": 0,
        "mapped": false, "cg_id": null, "lock_expires_at": null, "lock_state": "UNLOCKED",
        "serial": format!("fake-{id}"), "created_at": 0, "updated_at": 0,
    }))
    .expect("a volume")
}

fn conflict(taken: bool, kind: &str, name: &str) -> Result<(), MgmtError> {
    if taken {
        Err(MgmtError::name_conflict(kind, name))
    } else {
        Ok(())
    }
}

fn controller_info(id: u32) -> ControllerInfo {
    ControllerInfo {
        id,
        name: format!("controller-{id}"),
        state: "ACTIVE".into(),
        ports: Vec::new(),
        ownership_share: 1.0 / 3.0,
        owned_sections: 0,
        cache_bytes: 32 << 20,
        dirty_bytes: 0,
        mirror_bytes: 0,
        mirror_lag_bytes: 0,
        remirror_progress: None,
        failback_progress: None,
        failovers: 0,
        state_changed_at: 0,
    }
}

/// Three ACTIVE controllers that never change state (failover has its own tests).
fn controller_change(id: u32) -> Result<ControllerInfo, MgmtError> {
    if !(1..=3).contains(&id) {
        return Err(MgmtError::controller_not_found(id));
    }
    Err(MgmtError::new(
        "CONTROLLER_STATE",
        409,
        "the fuzz node does not fail controllers",
    ))
}

/// Hosts, clusters and LUN mappings: the trait's defaults (not supported).
impl HostManagement for FakeNode {}

// The node-only drive routes answer with the defaults (no drives), as in the in-memory fake.
impl DriveManagement for FakeNode {}

impl Management for FakeNode {
    fn system(&self) -> SystemInfo {
        serde_json::from_value(json!({
            "name": "fuzz", "serial": 1, "serial_number": 1, "version": "2.0.0",
            "troika_version": "0", "model": "fake", "state": "ACTIVE",
            "operational_state": {"state": "ACTIVE", "read_only_system": false},
            "physical_capacity": 1u64 << 40, "allocated_physical_capacity": 0,
            "free_physical_capacity": 1u64 << 40, "used_physical_capacity": 0,
            "controllers": 3, "pools_count": 0, "volumes_count": 0, "started_at": 0,
        }))
        .expect("a system")
    }

    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        conflict(
            state.0.iter().any(|p| p.name == request.name),
            "pool",
            &request.name,
        )?;
        state.2 += 1;
        let pool = pool_info(state.2, &request.name, request.physical_capacity);
        state.0.push(pool.clone());
        Ok(pool)
    }

    fn pools(&self) -> Vec<PoolInfo> {
        self.state.lock().unwrap().0.clone()
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let state = self.state.lock().unwrap();
        let pool = state.0.iter().find(|p| p.id == id);
        pool.cloned().ok_or_else(|| MgmtError::pool_not_found(id))
    }

    fn update_pool(&self, id: u32, update: PoolUpdate) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        let pool = state.0.iter_mut().find(|p| p.id == id);
        let pool = pool.ok_or_else(|| MgmtError::pool_not_found(id))?;
        if let Some(name) = update.name {
            pool.name = name;
        }
        if let Some(owners) = update.owners {
            pool.owners = owners;
        }
        Ok(pool.clone())
    }

    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        if state.1.iter().any(|v| v.pool_id == id) {
            return Err(MgmtError::new(
                "POOL_NOT_EMPTY",
                409,
                "the pool has volumes",
            ));
        }
        let index = state.0.iter().position(|p| p.id == id);
        let index = index.ok_or_else(|| MgmtError::pool_not_found(id))?;
        Ok(state.0.remove(index))
    }

    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        let pool = state.0.iter().find(|p| p.id == request.pool_id);
        let pool_name = pool.ok_or_else(|| MgmtError::pool_not_found(request.pool_id))?;
        let pool_name = pool_name.name.clone();
        conflict(
            state.1.iter().any(|v| v.name == request.name),
            "volume",
            &request.name,
        )?;
        state.2 += 1;
        let volume = volume_info(state.2, &request, &pool_name);
        state.1.push(volume.clone());
        Ok(volume)
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        self.state.lock().unwrap().1.clone()
    }

    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let state = self.state.lock().unwrap();
        let volume = state.1.iter().find(|v| v.id == id);
        volume
            .cloned()
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    fn update_volume(&self, id: u32, update: VolumeUpdate) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        let volume = state.1.iter_mut().find(|v| v.id == id);
        let volume = volume.ok_or_else(|| MgmtError::volume_not_found(id))?;
        if let Some(name) = update.name {
            volume.name = name;
        }
        if let Some(write_protected) = update.write_protected {
            volume.write_protected = write_protected;
        }
        Ok(volume.clone())
    }

    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        let volume = state.1.iter_mut().find(|v| v.id == id);
        let volume = volume.ok_or_else(|| MgmtError::volume_not_found(id))?;
        volume.size = new_size;
        Ok(volume.clone())
    }

    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock().unwrap();
        let index = state.1.iter().position(|v| v.id == id);
        let index = index.ok_or_else(|| MgmtError::volume_not_found(id))?;
        Ok(state.1.remove(index))
    }

    fn metrics_text(&self) -> String {
        "# TYPE fuzz_requests counter\nfuzz_requests 1\n".to_owned()
    }

    fn controllers(&self) -> Vec<ControllerInfo> {
        (1..=3).map(controller_info).collect()
    }

    fn fail_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError> {
        controller_change(id)
    }

    fn recover_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError> {
        controller_change(id)
    }
}

/// The REST layer over the fake node, with a real user store and event log in a
/// directory that lives as long as the process.
fn mgmt() -> &'static Mgmt {
    static MGMT: OnceLock<Mgmt> = OnceLock::new();
    MGMT.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("troika-fuzz-mgmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (users, _) = UserStore::open(&dir).expect("a user store");
        Mgmt {
            api: Arc::new(FakeNode::default()),
            users: Arc::new(users),
            events: EventLog::open(&dir).expect("an event log"),
            limiter: Arc::new(troika::mgmt::login_limit::LoginLimiter::new(
                std::time::Duration::from_secs(60),
            )),
            tls_fingerprint: None,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((request, used))) = parse_request(data) else {
        return;
    };
    assert!(used <= data.len());
    for origin in [Origin::Network, Origin::Local] {
        let response = handle(mgmt(), &request, origin);
        assert!(
            (200..500).contains(&response.status),
            "{} {} as {origin:?} answered {}: {}",
            request.method,
            request.target,
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
});
