//! The typed control-plane interface the REST server calls, and the objects it returns.
//! Field names follow InfiniBox's REST API so they serialize to its JSON unchanged.

use serde::{Deserialize, Serialize};

pub use super::drive_api::{
    DriveInfo, DriveManagement, DriveReplace, EnclosureInfo, RebuildInfo, RebuildUpdate,
};
pub use super::scrub_api::ScrubInfo;
pub use super::snapshot_api::{
    CgCreate, CgInfo, CgMemberAdd, CgUpdate, ChangedBlocks, ChangedRange, PolicyAsset,
    PolicyCreate, PolicyInfo, PolicyUpdate, ScheduleInfo, SnapshotCreate, SourceRef,
};

fn volume_dataset_type() -> String {
    "VOLUME".into()
}

fn not_modelled(what: &str) -> MgmtError {
    MgmtError::new(
        "NOT_SUPPORTED",
        501,
        format!("this management back end does not model {what}"),
    )
}

/// `GET /api/rest/system`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SystemInfo {
    pub name: String,
    pub serial: u64,
    /// InfiniBox's name for the serial; its clients read this one.
    pub serial_number: u64,
    /// The InfiniBox REST API level this node implements. InfiniBox clients check it
    /// (infinisdk wants at least 2.0); troika's own release is `troika_version`.
    pub version: String,
    pub troika_version: String,
    pub model: String,
    /// ACTIVE, or FAILED after a durability error.
    pub state: String,
    /// `{"state": ..., "read_only_system": false}` as InfiniBox shows it.
    pub operational_state: OperationalState,
    /// Usable physical bytes on the NL-SAS tier (after parity and cleaning reserve).
    pub physical_capacity: u64,
    /// Sum of the pools' physical capacities.
    pub allocated_physical_capacity: u64,
    /// Physical bytes not promised to any pool.
    pub free_physical_capacity: u64,
    /// Bytes written by hosts and held on media or in cache, over all pools.
    pub used_physical_capacity: u64,
    pub controllers: usize,
    pub pools_count: u64,
    pub volumes_count: u64,
    /// Milliseconds since the Unix epoch when this process started serving.
    pub started_at: u64,
    /// Where block reads were served from since start, over every controller.
    #[serde(default)]
    pub reads: ReadSourcesInfo,
    /// The SSD read-cache tier; null when the model has no cache SSD.
    #[serde(default)]
    pub ssd_cache: Option<SsdCacheInfo>,
}

/// Blocks read since start by where they were found: the DRAM cache, the SSD read cache,
/// or the NL-SAS drives.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReadSourcesInfo {
    pub dram_hits: u64,
    pub ssd_hits: u64,
    pub misses: u64,
}

/// The SSD read-cache tier as `system show` reports it (totals over its partitions).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SsdCacheInfo {
    /// ACTIVE, or FAILED after an I/O error on the cache SSD (cache lost, data safe).
    pub state: String,
    pub capacity: u64,
    pub cached_bytes: u64,
    /// DRAM the tier's index holds, and that divided by the blocks cached.
    pub index_bytes: u64,
    pub index_bytes_per_block: f64,
    pub hits: u64,
    pub misses: u64,
    /// Copies found but refused by verification (counted as misses too).
    pub mismatches: u64,
    pub admissions: u64,
    pub evictions: u64,
    /// Offers dropped for the write budget or a full staging area.
    pub throttled: u64,
    /// Blocks kept out because they were part of a long sequential read.
    pub bypassed: u64,
    pub bytes_written: u64,
}

/// The system's state in InfiniBox's shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OperationalState {
    pub state: String,
    pub read_only_system: bool,
}

/// The InfiniBox REST API level the node implements (see [`SystemInfo::version`]).
pub const API_LEVEL: &str = "2.0.0";

/// `POST /api/rest/pools` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolCreate {
    pub name: String,
    pub physical_capacity: u64,
    /// Defaults to `physical_capacity` when absent.
    #[serde(default)]
    pub virtual_capacity: Option<u64>,
}

/// A pool as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolInfo {
    pub id: u32,
    pub name: String,
    pub physical_capacity: u64,
    pub virtual_capacity: u64,
    pub allocated_physical_space: u64,
    pub free_physical_space: u64,
    pub free_virtual_space: u64,
    /// Sum of the sizes of the pool's volumes.
    pub allocated_virtual_space: u64,
    /// Percent of physical capacity in use at which the pool raises a warning.
    pub physical_capacity_warning: u8,
    /// Percent at which it raises a critical event and becomes LIMITED.
    pub physical_capacity_critical: u8,
    pub ssd_enabled: bool,
    /// Ids of the POOL_ADMIN users who manage the pool.
    pub owners: Vec<u32>,
    pub volumes_count: u64,
    /// NORMAL, LIMITED (critical threshold reached: no new or bigger volumes) or LOCKED
    /// (full: hosts' writes are refused until space is freed).
    pub state: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `PUT /api/rest/pools/{id}` body: every field optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolUpdate {
    pub name: Option<String>,
    pub physical_capacity: Option<u64>,
    pub virtual_capacity: Option<u64>,
    pub physical_capacity_warning: Option<u8>,
    pub physical_capacity_critical: Option<u8>,
    pub ssd_enabled: Option<bool>,
    pub owners: Option<Vec<u32>>,
}

/// `POST /api/rest/volumes` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VolumeCreate {
    pub name: String,
    pub pool_id: u32,
    pub size: u64,
    /// THIN (default) or THICK.
    #[serde(default)]
    pub provtype: Option<String>,
    #[serde(default)]
    pub ssd_enabled: Option<bool>,
    #[serde(default)]
    pub write_protected: Option<bool>,
}

/// `PUT /api/rest/volumes/{id}` body: every field optional. A smaller `size` needs
/// approval because it discards data.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VolumeUpdate {
    pub name: Option<String>,
    pub size: Option<u64>,
    pub write_protected: Option<bool>,
    pub ssd_enabled: Option<bool>,
    /// A snapshot's lock: set or extended, never shortened while it holds.
    #[serde(default)]
    pub lock_expires_at: Option<u64>,
}

/// A volume as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VolumeInfo {
    pub id: u32,
    pub name: String,
    pub size: u64,
    pub pool_id: u32,
    pub pool_name: String,
    pub provtype: String,
    /// MASTER or SNAPSHOT.
    #[serde(rename = "type")]
    pub volume_type: String,
    /// VOLUME (InfiniBox also has file systems).
    #[serde(default = "volume_dataset_type")]
    pub dataset_type: String,
    /// The volume a snapshot was taken from; `0` for a master volume.
    pub parent_id: u32,
    /// The master volume of the snapshot family (the volume's own id for a master).
    pub family_id: u32,
    /// 0 for a master volume.
    pub depth: u32,
    pub has_children: bool,
    pub write_protected: bool,
    pub ssd_enabled: bool,
    /// Bytes of the volume's own blocks on media or waiting in cache.
    pub used: u64,
    /// Same as `used` for thin volumes; the full size for thick ones.
    pub allocated: u64,
    /// Bytes only this dataset refers to: what deleting it gives back.
    #[serde(default)]
    pub unique_size: u64,
    /// Bytes the whole family (the master and all its snapshots) holds.
    #[serde(default)]
    pub tree_allocated: u64,
    /// `size` in 512-byte blocks, as InfiniBox counts.
    #[serde(default)]
    pub num_blocks: u64,
    /// Replication (none yet).
    #[serde(default)]
    pub rmr_source: bool,
    #[serde(default)]
    pub rmr_target: bool,
    #[serde(default)]
    pub rmr_snapshot_guid: Option<String>,
    /// Whether the volume is mapped to a host (LUN mapping comes with iSCSI).
    pub mapped: bool,
    pub cg_id: Option<u32>,
    pub lock_expires_at: Option<u64>,
    /// UNLOCKED, LOCKED (until `lock_expires_at`) or EXPIRED.
    pub lock_state: String,
    pub serial: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A control-plane failure: an InfiniBox error code, the HTTP status that goes with it and
/// a message that names the object and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MgmtError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

impl MgmtError {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        MgmtError {
            code,
            status,
            message: message.into(),
        }
    }
    pub fn pool_not_found(what: impl std::fmt::Display) -> Self {
        Self::new("POOL_NOT_FOUND", 404, format!("pool {what} does not exist"))
    }
    pub fn volume_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            "VOLUME_NOT_FOUND",
            404,
            format!("volume {what} does not exist"),
        )
    }
    pub fn controller_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            "CONTROLLER_NOT_FOUND",
            404,
            format!("controller {what} does not exist"),
        )
    }
    pub fn name_conflict(kind: &str, name: &str) -> Self {
        Self::new(
            "NAME_CONFLICT",
            409,
            format!("a {kind} named {name:?} already exists; choose another name"),
        )
    }
    pub fn cg_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            "CONS_GROUP_NOT_FOUND",
            404,
            format!("consistency group {what} does not exist"),
        )
    }
    pub fn policy_not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            "SNAPSHOT_POLICY_NOT_FOUND",
            404,
            format!("snapshot policy {what} does not exist"),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("BAD_REQUEST", 400, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("INTERNAL_ERROR", 500, message)
    }
}

pub use crate::controller::ControllerInfo;

/// What the REST server needs from the node. Every method is a whole, atomic control-plane
/// operation: it either happened (and is durable when it returns) or it did not.
pub trait Management: Send + Sync + HostManagement + DriveManagement {
    /// The node's fault injection (rules on its devices, power cut); `None` where there is
    /// no hardware to inject into (the test fake).
    fn fault_plane(&self) -> Option<&crate::io::FaultPlane> {
        None
    }
    fn system(&self) -> SystemInfo;
    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError>;
    fn pools(&self) -> Vec<PoolInfo>;
    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError>;
    /// Changes the fields given; capacities are checked against use and the system.
    fn update_pool(&self, id: u32, update: PoolUpdate) -> Result<PoolInfo, MgmtError>;
    /// Refuses (`POOL_NOT_EMPTY`, 409) while the pool holds volumes.
    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError>;
    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError>;
    fn volumes(&self) -> Vec<VolumeInfo>;
    /// One page of the volumes in id order (descending when asked) and how many there
    /// are in all: a list without filters or sorting builds only the page it shows.
    fn volumes_page(&self, skip: usize, take: usize, descending: bool) -> (usize, Vec<VolumeInfo>) {
        let all = self.volumes();
        let total = all.len();
        let page = if descending {
            all.into_iter().rev().skip(skip).take(take).collect()
        } else {
            all.into_iter().skip(skip).take(take).collect()
        };
        (total, page)
    }
    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError>;
    /// Changes the size, name, write protection or SSD use; checks every change before it
    /// makes any, so a refused update changes nothing. Shrinking discards data past the
    /// new end (the REST layer asks for approval first).
    fn update_volume(&self, id: u32, update: VolumeUpdate) -> Result<VolumeInfo, MgmtError>;
    /// Grows or shrinks a volume; shrinking discards the data past the new end.
    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError>;
    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError>;
    /// Prometheus text exposition of the node's counters.
    fn metrics_text(&self) -> String;
    /// Every controller, in id order.
    fn controllers(&self) -> Vec<ControllerInfo>;
    /// Injects a hard failure into controller `id` (1-based): its ports close, its DRAM is
    /// discarded, the others take over its sections. Returns once the survivors serve
    /// every section (re-mirroring goes on in the background). Refuses
    /// `CONTROLLER_NOT_FOUND` (404), and `CONTROLLER_STATE` (409) when it is not ACTIVE or
    /// RECOVERING or it is the last live controller.
    fn fail_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError>;
    /// Brings a FAILED controller back: its ports open at once and ownership moves back
    /// to it gradually (RECOVERING, then ACTIVE). Refuses as `fail_controller` does when
    /// it is not FAILED.
    fn recover_controller(&self, id: u32) -> Result<ControllerInfo, MgmtError>;

    // ---- the background scrub (the node; the test fake does not model it)

    /// The scrub's state and the figures of the running or last pass.
    fn scrub(&self) -> Result<ScrubInfo, MgmtError> {
        Err(not_modelled("the scrub"))
    }
    /// Starts a pass over every allocated row now; a running pass goes on (no error).
    fn start_scrub(&self) -> Result<ScrubInfo, MgmtError> {
        Err(not_modelled("the scrub"))
    }
    /// Stops the running pass (the next starts after the interval); none running is no
    /// error.
    fn stop_scrub(&self) -> Result<ScrubInfo, MgmtError> {
        Err(not_modelled("the scrub"))
    }

    // ---- snapshots and consistency groups (the node; the test fake does not model them)

    /// Takes snapshots of several datasets at one instant (one request: one snapshot).
    fn create_snapshots(
        &self,
        _requests: Vec<SnapshotCreate>,
    ) -> Result<Vec<VolumeInfo>, MgmtError> {
        Err(not_modelled("snapshots"))
    }
    /// Volume `id` returns to snapshot `source`'s contents; hosts see them at once.
    fn restore_volume(&self, _id: u32, _source: u32) -> Result<VolumeInfo, MgmtError> {
        Err(not_modelled("snapshots"))
    }
    /// Snapshot `id` takes its parent's current contents.
    fn refresh_snapshot(&self, _id: u32) -> Result<VolumeInfo, MgmtError> {
        Err(not_modelled("snapshots"))
    }
    /// The blocks that differ between dataset `id` and `base` (one family).
    fn changed_blocks(&self, _id: u32, _base: u32) -> Result<ChangedBlocks, MgmtError> {
        Err(not_modelled("snapshots"))
    }
    fn cgs(&self) -> Vec<CgInfo> {
        Vec::new()
    }
    fn cg(&self, id: u32) -> Result<CgInfo, MgmtError> {
        Err(MgmtError::cg_not_found(id))
    }
    /// A new group, or (with `parent_id`) a snapshot of every member of a group at one
    /// instant.
    fn create_cg(&self, _request: CgCreate) -> Result<CgInfo, MgmtError> {
        Err(not_modelled("consistency groups"))
    }
    fn update_cg(&self, id: u32, _update: CgUpdate) -> Result<CgInfo, MgmtError> {
        Err(MgmtError::cg_not_found(id))
    }
    /// Deletes a group; a group snapshot's member snapshots go with it when
    /// `delete_members` (a group's member volumes only leave it).
    fn delete_cg(&self, id: u32, _delete_members: bool) -> Result<CgInfo, MgmtError> {
        Err(MgmtError::cg_not_found(id))
    }
    fn cg_members(&self, id: u32) -> Result<Vec<VolumeInfo>, MgmtError> {
        Err(MgmtError::cg_not_found(id))
    }
    fn add_cg_member(&self, cg: u32, _volume: u32) -> Result<VolumeInfo, MgmtError> {
        Err(MgmtError::cg_not_found(cg))
    }
    fn remove_cg_member(&self, cg: u32, _volume: u32) -> Result<VolumeInfo, MgmtError> {
        Err(MgmtError::cg_not_found(cg))
    }
    /// Every member of group `id` returns to its snapshot in group snapshot `source`, at
    /// one instant.
    fn restore_cg(&self, id: u32, _source: u32) -> Result<CgInfo, MgmtError> {
        Err(MgmtError::cg_not_found(id))
    }
    /// Every member snapshot of group snapshot `id` takes its parent's current contents.
    fn refresh_cg(&self, id: u32) -> Result<CgInfo, MgmtError> {
        Err(MgmtError::cg_not_found(id))
    }
    fn policies(&self) -> Vec<PolicyInfo> {
        Vec::new()
    }
    fn policy(&self, id: u32) -> Result<PolicyInfo, MgmtError> {
        Err(MgmtError::policy_not_found(id))
    }
    fn create_policy(&self, _request: PolicyCreate) -> Result<PolicyInfo, MgmtError> {
        Err(not_modelled("snapshot policies"))
    }
    fn update_policy(&self, id: u32, _update: PolicyUpdate) -> Result<PolicyInfo, MgmtError> {
        Err(MgmtError::policy_not_found(id))
    }
    /// Deletes a policy; the snapshots it took stay.
    fn delete_policy(&self, id: u32) -> Result<PolicyInfo, MgmtError> {
        Err(MgmtError::policy_not_found(id))
    }
    /// The policy starts (`add`) or stops snapshotting master volume `volume`.
    fn set_policy_asset(&self, id: u32, _volume: u32, _add: bool) -> Result<PolicyInfo, MgmtError> {
        Err(MgmtError::policy_not_found(id))
    }
}

// ---- hosts, host clusters and LUN mappings ------------------------------------------

fn not_found_host(id: u32) -> MgmtError {
    MgmtError::new("HOST_NOT_FOUND", 404, format!("host {id} does not exist"))
}

fn not_found_cluster(id: u32) -> MgmtError {
    MgmtError::new(
        "CLUSTER_NOT_FOUND",
        404,
        format!("host cluster {id} does not exist"),
    )
}

/// One initiator port of a host: `{"type": "ISCSI" | "FC" | "NBD", "address": ...}` (the
/// type is accepted in any case; an NBD address is the client's TLS identity).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostPortInfo {
    #[serde(rename = "type")]
    pub port_type: String,
    pub address: String,
}

/// One LUN mapping as InfiniBox shows it. A host's own mapping has `host_cluster_id` 0;
/// a cluster's has `host_id` 0 and `clustered` true.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LunInfo {
    pub id: u32,
    pub lun: u32,
    pub volume_id: u32,
    pub host_id: u32,
    pub host_cluster_id: u32,
    pub clustered: bool,
}

/// A host as the API shows it. CHAP secrets are never shown, only whether they are set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostInfo {
    pub id: u32,
    pub name: String,
    pub ports: Vec<HostPortInfo>,
    pub ports_count: u64,
    /// Its own mappings and its cluster's.
    pub luns: Vec<LunInfo>,
    pub luns_count: u64,
    /// 0 when it is in no cluster.
    pub host_cluster_id: u32,
    pub host_type: String,
    pub san_client_type: String,
    /// NONE, CHAP or MUTUAL_CHAP.
    pub security_method: String,
    pub security_chap_inbound_username: String,
    pub security_chap_has_inbound_secret: bool,
    pub security_chap_outbound_username: String,
    pub security_chap_has_outbound_secret: bool,
    pub optimized: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `POST /api/rest/hosts` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HostCreate {
    pub name: String,
    #[serde(default)]
    pub ports: Option<Vec<HostPortInfo>>,
    #[serde(default)]
    pub host_type: Option<String>,
    #[serde(default)]
    pub optimized: Option<bool>,
    #[serde(default)]
    pub security_method: Option<String>,
    #[serde(default)]
    pub security_chap_inbound_username: Option<String>,
    #[serde(default)]
    pub security_chap_inbound_secret: Option<String>,
    #[serde(default)]
    pub security_chap_outbound_username: Option<String>,
    #[serde(default)]
    pub security_chap_outbound_secret: Option<String>,
}

/// `PUT /api/rest/hosts/{id}` body: every field optional; CHAP fields not given keep
/// their values.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostUpdate {
    pub name: Option<String>,
    pub host_type: Option<String>,
    pub optimized: Option<bool>,
    pub security_method: Option<String>,
    pub security_chap_inbound_username: Option<String>,
    pub security_chap_inbound_secret: Option<String>,
    pub security_chap_outbound_username: Option<String>,
    pub security_chap_outbound_secret: Option<String>,
}

/// `POST .../luns` body: the dataset and, optionally, the LUN number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LunCreate {
    pub volume_id: u32,
    #[serde(default)]
    pub lun: Option<u32>,
}

/// A host cluster as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterInfo {
    pub id: u32,
    pub name: String,
    /// `{"id", "name"}` of each member host.
    pub hosts: Vec<ClusterHost>,
    pub hosts_count: u64,
    pub luns: Vec<LunInfo>,
    pub luns_count: u64,
    pub host_type: String,
    pub san_client_type: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A member host as a cluster lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterHost {
    pub id: u32,
    pub name: String,
}

/// `POST /api/rest/clusters` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterCreate {
    pub name: String,
    #[serde(default)]
    pub host_type: Option<String>,
}

/// `PUT /api/rest/clusters/{id}` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterUpdate {
    pub name: Option<String>,
}

/// `POST /api/rest/clusters/{id}/hosts` body: the host to add.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterHostAdd {
    pub id: u32,
}

/// Whom a LUN mapping presents its dataset to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingTarget {
    Host(u32),
    Cluster(u32),
}

impl MappingTarget {
    fn not_found(self) -> MgmtError {
        match self {
            MappingTarget::Host(id) => not_found_host(id),
            MappingTarget::Cluster(id) => not_found_cluster(id),
        }
    }
}

/// Hosts, clusters and mappings: the node implements them; the test fake does not model
/// them (every call answers not found or NOT_SUPPORTED). Every change is whole and
/// durable when it returns.
pub trait HostManagement: Send + Sync {
    fn hosts(&self) -> Vec<HostInfo> {
        Vec::new()
    }
    fn host(&self, id: u32) -> Result<HostInfo, MgmtError> {
        Err(not_found_host(id))
    }
    /// The id of the host one of whose ports is `address` (case-insensitive).
    fn host_id_by_initiator(&self, address: &str) -> Result<u32, MgmtError> {
        Err(MgmtError::new(
            "HOST_NOT_FOUND",
            404,
            format!("no host has initiator {address}"),
        ))
    }
    fn create_host(&self, _request: HostCreate) -> Result<HostInfo, MgmtError> {
        Err(not_modelled("hosts"))
    }
    fn update_host(&self, id: u32, _update: HostUpdate) -> Result<HostInfo, MgmtError> {
        Err(not_found_host(id))
    }
    /// Deletes a host; its own mappings go with it.
    fn delete_host(&self, id: u32) -> Result<HostInfo, MgmtError> {
        Err(not_found_host(id))
    }
    fn add_host_port(&self, id: u32, _port: HostPortInfo) -> Result<HostInfo, MgmtError> {
        Err(not_found_host(id))
    }
    fn remove_host_port(
        &self,
        id: u32,
        _port_type: &str,
        _address: &str,
    ) -> Result<HostInfo, MgmtError> {
        Err(not_found_host(id))
    }
    fn clusters(&self) -> Vec<ClusterInfo> {
        Vec::new()
    }
    fn cluster(&self, id: u32) -> Result<ClusterInfo, MgmtError> {
        Err(not_found_cluster(id))
    }
    fn create_cluster(&self, _request: ClusterCreate) -> Result<ClusterInfo, MgmtError> {
        Err(not_modelled("host clusters"))
    }
    fn update_cluster(&self, id: u32, _update: ClusterUpdate) -> Result<ClusterInfo, MgmtError> {
        Err(not_found_cluster(id))
    }
    /// Deletes a cluster and its mappings; its hosts stay, outside any cluster.
    fn delete_cluster(&self, id: u32) -> Result<ClusterInfo, MgmtError> {
        Err(not_found_cluster(id))
    }
    /// Host `host` joins (`Some(cluster)`) or leaves (`None`) a cluster.
    fn set_host_cluster(&self, host: u32, _cluster: Option<u32>) -> Result<HostInfo, MgmtError> {
        Err(not_found_host(host))
    }
    /// The mappings `target` sees (for a host, its own and its cluster's), by LUN.
    fn luns(&self, target: MappingTarget) -> Result<Vec<LunInfo>, MgmtError> {
        Err(target.not_found())
    }
    fn map_lun(&self, target: MappingTarget, _request: LunCreate) -> Result<LunInfo, MgmtError> {
        Err(target.not_found())
    }
    /// Removes `target`'s own mapping of LUN `key` (of volume `key` with `by_volume`).
    fn unmap_lun(
        &self,
        target: MappingTarget,
        _key: u32,
        _by_volume: bool,
    ) -> Result<LunInfo, MgmtError> {
        Err(target.not_found())
    }
}
