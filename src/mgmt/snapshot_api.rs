//! The control-plane objects of snapshots and consistency groups, named as InfiniBox's
//! REST API names them (a snapshot is a volume with `type: SNAPSHOT`; a group snapshot is
//! a consistency group with a `parent_id`).

use serde::{Deserialize, Serialize};

/// The bound on a lock end the API enforces (the node's own, from `meta::bounds`), for
/// clients that check a `lock_expires_at` before they send it.
pub use crate::meta::bounds::{MAX_LOCK_MS, MAX_LOCK_SECS, check_lock_end};

/// `POST /api/rest/volumes` with a `parent_id`: a snapshot of that volume or snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SnapshotCreate {
    /// Generated from the parent's name when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub parent_id: u32,
    /// Snapshots are read-only unless this is `false`.
    #[serde(default)]
    pub write_protected: Option<bool>,
    /// Milliseconds since the epoch until which nobody may delete or change it.
    #[serde(default)]
    pub lock_expires_at: Option<u64>,
    #[serde(default)]
    pub ssd_enabled: Option<bool>,
}

/// `POST /api/rest/cgs`: a new group (`pool_id`), or a snapshot of group `parent_id`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CgCreate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub pool_id: Option<u32>,
    #[serde(default)]
    pub parent_id: Option<u32>,
    /// For a group snapshot: the members' snapshots are read-only unless `false`.
    #[serde(default)]
    pub write_protected: Option<bool>,
    /// For a group snapshot: the lock of every member snapshot.
    #[serde(default)]
    pub lock_expires_at: Option<u64>,
    /// For a group snapshot: put before each member's name.
    #[serde(default)]
    pub snap_prefix: Option<String>,
    /// For a group snapshot: appended to each member's name (default `-<group name>`
    /// when there is no prefix either).
    #[serde(default)]
    pub snap_suffix: Option<String>,
}

/// `PUT /api/rest/cgs/{id}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CgUpdate {
    pub name: Option<String>,
}

/// A consistency group or group snapshot as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CgInfo {
    pub id: u32,
    pub name: String,
    pub pool_id: u32,
    pub pool_name: String,
    /// MASTER for a group, SNAPSHOT for a group snapshot.
    #[serde(rename = "type")]
    pub cg_type: String,
    /// The group a group snapshot was taken of; 0 for a group.
    pub parent_id: u32,
    pub members_count: u64,
    pub has_children: bool,
    pub lock_expires_at: Option<u64>,
    pub lock_state: String,
    pub is_replicated: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `POST /api/rest/cgs/{id}/members`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CgMemberAdd {
    #[serde(alias = "volume_id")]
    pub dataset_id: u32,
}

/// One range of blocks that differ between two datasets of a family, in bytes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangedRange {
    pub offset: u64,
    pub length: u64,
}

/// `GET /api/rest/volumes/{id}/changed_blocks?base_id=B`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangedBlocks {
    pub volume_id: u32,
    pub base_id: u32,
    pub block_size: u64,
    pub changed_bytes: u64,
    pub ranges: Vec<ChangedRange>,
}

/// A source named in a restore or refresh body: `{"source_id": N}` (InfiniBox's), or a
/// bare number.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SourceRef {
    Object {
        #[serde(alias = "snapshot_id", alias = "id")]
        source_id: u32,
    },
    Bare(u32),
}

impl SourceRef {
    pub fn id(self) -> u32 {
        match self {
            SourceRef::Object { source_id } => source_id,
            SourceRef::Bare(id) => id,
        }
    }
}

/// One schedule of a snapshot policy as the API shows and takes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInfo {
    pub name: String,
    /// Seconds between snapshots.
    pub interval: u64,
    /// How many of the schedule's snapshots of each asset are kept (the newest).
    pub retention: u32,
    /// Each snapshot is locked for this many seconds after it is taken.
    #[serde(default)]
    pub lock_duration: Option<u64>,
}

/// `GET /api/rest/snapshot_policies`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyInfo {
    pub id: u32,
    pub name: String,
    pub enabled: bool,
    pub schedules: Vec<ScheduleInfo>,
    /// The master volumes it snapshots.
    pub assets: Vec<u32>,
    pub assets_count: u64,
    /// Snapshots it took that exist now.
    pub snapshots_count: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `POST /api/rest/snapshot_policies`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyCreate {
    pub name: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    pub schedules: Vec<ScheduleInfo>,
    #[serde(default)]
    pub assets: Option<Vec<u32>>,
}

/// `PUT /api/rest/snapshot_policies/{id}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub schedules: Option<Vec<ScheduleInfo>>,
}

/// `POST /api/rest/snapshot_policies/{id}/assets`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyAsset {
    pub entity_id: u32,
}
