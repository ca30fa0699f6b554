//! The typed control-plane interface the REST server calls, and the objects it returns.
//! Field names follow InfiniBox's REST API so they serialize to its JSON unchanged.

use serde::{Deserialize, Serialize};

/// `GET /api/rest/system`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SystemInfo {
    pub name: String,
    pub serial: u64,
    pub version: String,
    pub model: String,
    /// NORMAL, DEGRADED, ...
    pub state: String,
    /// Usable physical bytes on the NL-SAS tier (after parity and cleaning reserve).
    pub physical_capacity: u64,
    /// Sum of the pools' physical capacities.
    pub allocated_physical_capacity: u64,
}

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
    pub volumes_count: u64,
    /// NORMAL, LIMITED or LOCKED.
    pub state: String,
    pub created_at: u64,
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
    /// MASTER (snapshots come later).
    #[serde(rename = "type")]
    pub volume_type: String,
    pub write_protected: bool,
    /// Bytes of the volume's own blocks on media or waiting in cache.
    pub used: u64,
    /// Same as `used` for thin volumes; the full size for thick ones.
    pub allocated: u64,
    pub serial: String,
    pub created_at: u64,
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
    pub fn name_conflict(kind: &str, name: &str) -> Self {
        Self::new(
            "NAME_CONFLICT",
            409,
            format!("a {kind} named {name:?} already exists; choose another name"),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("BAD_REQUEST", 400, message)
    }
}

/// What the REST server needs from the node. Every method is a whole, atomic control-plane
/// operation: it either happened (and is durable when it returns) or it did not.
pub trait Management: Send + Sync {
    fn system(&self) -> SystemInfo;
    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError>;
    fn pools(&self) -> Vec<PoolInfo>;
    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError>;
    /// Refuses (`POOL_NOT_EMPTY`, 409) while the pool holds volumes.
    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError>;
    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError>;
    fn volumes(&self) -> Vec<VolumeInfo>;
    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError>;
    /// Grows or shrinks a volume; shrinking discards the data past the new end.
    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError>;
    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError>;
    /// Prometheus text exposition of the node's counters.
    fn metrics_text(&self) -> String;
}
