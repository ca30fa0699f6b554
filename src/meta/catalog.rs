//! The catalog: pools and volumes, their names, sizes and identities. Changed only through
//! [`CatalogOp`]s, which are journaled and idempotent, so replaying one twice (a checkpoint
//! taken while it was in flight, then the journal) leaves the same catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// cycle: the catalog holds the host, cluster and LUN records, which are defined beside
// their rules in host_records.rs; host_records.rs turns those rules into catalog ops. One
// file would be two modules in one.
pub use super::host_records::{
    ChapMethod, ChapSettings, ClusterRecord, HostPort, HostRecord, LunOwner, LunRecord, PortKind,
};

/// A pool. Fields added after the first release carry serde defaults, so catalogs
/// written before them still load.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRecord {
    pub id: u32,
    pub name: String,
    pub physical_capacity: u64,
    pub virtual_capacity: u64,
    pub created_at: u64,
    /// Percent of physical capacity in use at which the pool warns.
    #[serde(default = "default_warning_percent")]
    pub physical_capacity_warning: u8,
    /// Percent of physical capacity in use at which the pool is LIMITED (no new volumes,
    /// no growing).
    #[serde(default = "default_critical_percent")]
    pub physical_capacity_critical: u8,
    #[serde(default = "default_true")]
    pub ssd_enabled: bool,
    /// Users (by id) with the POOL_ADMIN role who may manage this pool.
    #[serde(default)]
    pub owners: Vec<u32>,
    #[serde(default)]
    pub updated_at: u64,
}

/// Default warning threshold, percent of physical capacity.
pub const DEFAULT_WARNING_PERCENT: u8 = 80;
/// Default critical threshold, percent of physical capacity.
pub const DEFAULT_CRITICAL_PERCENT: u8 = 90;

fn default_warning_percent() -> u8 {
    DEFAULT_WARNING_PERCENT
}

fn default_critical_percent() -> u8 {
    DEFAULT_CRITICAL_PERCENT
}

fn default_true() -> bool {
    true
}

/// How a volume's space is provisioned.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Provisioning {
    /// Space is taken from the pool as blocks are written.
    #[default]
    Thin,
    /// The whole size is reserved in the pool at creation.
    Thick,
}

impl Provisioning {
    pub fn as_str(self) -> &'static str {
        match self {
            Provisioning::Thin => "THIN",
            Provisioning::Thick => "THICK",
        }
    }
}

/// A volume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: u32,
    pub name: String,
    pub pool_id: u32,
    pub size: u64,
    pub created_at: u64,
    #[serde(default)]
    pub provtype: Provisioning,
    /// Hosts may read but not write.
    #[serde(default)]
    pub write_protected: bool,
    #[serde(default = "default_true")]
    pub ssd_enabled: bool,
    #[serde(default)]
    pub updated_at: u64,
    /// MASTER or SNAPSHOT.
    #[serde(default)]
    pub kind: DatasetKind,
    /// The dataset a snapshot was taken of (0 for a master volume).
    #[serde(default)]
    pub parent_id: u32,
    /// The master volume the family started from (0: the volume's own id). Blocks written
    /// by any member carry the family's identity, so members can share them.
    #[serde(default)]
    pub family_id: u32,
    /// Until this time (ms since the epoch) nobody may delete or change the snapshot.
    #[serde(default)]
    pub lock_expires_at: Option<u64>,
    /// The consistency group the dataset belongs to.
    #[serde(default)]
    pub cg_id: Option<u32>,
    /// For a snapshot a policy took: the policy and the schedule that took it.
    #[serde(default)]
    pub policy: Option<(u32, String)>,
}

/// A snapshot policy: schedules that each take a snapshot of every asset every
/// `interval_secs` and keep the newest `retention` of them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyRecord {
    pub id: u32,
    pub name: String,
    pub enabled: bool,
    pub schedules: Vec<ScheduleRecord>,
    /// Master volumes the policy snapshots.
    pub assets: Vec<u32>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One schedule of a snapshot policy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub name: String,
    pub interval_secs: u64,
    pub retention: u32,
    /// Each snapshot is locked for this long after it is taken.
    #[serde(default)]
    pub lock_secs: Option<u64>,
}

/// Whether a dataset is a master volume or a snapshot.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum DatasetKind {
    #[default]
    Master,
    Snapshot,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Master => "MASTER",
            DatasetKind::Snapshot => "SNAPSHOT",
        }
    }
}

/// A consistency group: volumes snapshotted together at one instant. A group snapshot
/// ("snapgroup") is a group whose `parent_id` names the group it was taken of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgRecord {
    pub id: u32,
    pub name: String,
    pub pool_id: u32,
    #[serde(default)]
    pub parent_id: u32,
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: u64,
    #[serde(default)]
    pub lock_expires_at: Option<u64>,
}

/// How full a pool is, in the order an operator cares about. A pool at `Critical` or
/// above is LIMITED (no new or bigger volumes); at `Locked` it is full and hosts' writes
/// are refused until space is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CapacityLevel {
    Normal,
    Warning,
    Critical,
    Locked,
}

impl CapacityLevel {
    /// The pool state the API shows: NORMAL, LIMITED or LOCKED.
    pub fn pool_state(self) -> &'static str {
        match self {
            CapacityLevel::Normal | CapacityLevel::Warning => "NORMAL",
            CapacityLevel::Critical => "LIMITED",
            CapacityLevel::Locked => "LOCKED",
        }
    }
}

impl PoolRecord {
    /// Where `allocated` bytes put this pool against its capacity and thresholds.
    pub fn capacity_level(&self, allocated: u64) -> CapacityLevel {
        let capacity = self.physical_capacity;
        let percent_of = |percent: u8| capacity * u64::from(percent);
        let used = allocated.saturating_mul(100);
        if allocated >= capacity {
            CapacityLevel::Locked
        } else if used >= percent_of(self.physical_capacity_critical) {
            CapacityLevel::Critical
        } else if used >= percent_of(self.physical_capacity_warning) {
            CapacityLevel::Warning
        } else {
            CapacityLevel::Normal
        }
    }

    /// A pool with default thresholds, SSD enabled and no owners.
    pub fn new(id: u32, name: &str, physical: u64, virtual_capacity: u64, now_ms: u64) -> Self {
        PoolRecord {
            id,
            name: name.into(),
            physical_capacity: physical,
            virtual_capacity,
            created_at: now_ms,
            physical_capacity_warning: DEFAULT_WARNING_PERCENT,
            physical_capacity_critical: DEFAULT_CRITICAL_PERCENT,
            ssd_enabled: true,
            owners: Vec::new(),
            updated_at: now_ms,
        }
    }
}

impl VolumeRecord {
    /// A thin, writable volume.
    pub fn new(id: u32, name: &str, pool_id: u32, size: u64, now_ms: u64) -> Self {
        VolumeRecord {
            id,
            name: name.into(),
            pool_id,
            size,
            created_at: now_ms,
            provtype: Provisioning::Thin,
            write_protected: false,
            ssd_enabled: true,
            updated_at: now_ms,
            kind: DatasetKind::Master,
            parent_id: 0,
            family_id: 0,
            lock_expires_at: None,
            cg_id: None,
            policy: None,
        }
    }

    /// The family whose identity the dataset's blocks carry.
    pub fn family(&self) -> u32 {
        if self.family_id == 0 {
            self.id
        } else {
            self.family_id
        }
    }

    pub fn is_snapshot(&self) -> bool {
        self.kind == DatasetKind::Snapshot
    }

    /// True while a lock forbids deleting or changing the dataset at `now_ms`.
    pub fn is_locked(&self, now_ms: u64) -> bool {
        self.lock_expires_at.is_some_and(|until| until > now_ms)
    }
}

/// One journaled change to the catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CatalogOp {
    CreatePool(PoolRecord),
    DeletePool {
        id: u32,
    },
    CreateVolume(VolumeRecord),
    ResizeVolume {
        id: u32,
        size: u64,
    },
    DeleteVolume {
        id: u32,
    },
    /// Replaces a pool's settable fields (name, capacities, thresholds, owners, ...).
    UpdatePool(PoolRecord),
    /// Replaces a volume's settable fields (name, protection, ...); never its size, which
    /// only `ResizeVolume` changes together with the map.
    UpdateVolume(VolumeRecord),
    /// New snapshots, each taking its parent's current contents, all at one instant;
    /// with `group`, they form that new group snapshot.
    CreateSnapshots {
        snapshots: Vec<VolumeRecord>,
        group: Option<CgRecord>,
    },
    /// Each `(id, from)`: dataset `id` takes the contents of `from` (a restore from a
    /// snapshot, or a snapshot's refresh from its parent), all at one instant.
    TakeContents(Vec<(u32, u32)>),
    CreateCg(CgRecord),
    UpdateCg(CgRecord),
    DeleteCg {
        id: u32,
    },
    CreatePolicy(PolicyRecord),
    /// Replaces a policy (name, schedules, assets, enabled).
    UpdatePolicy(PolicyRecord),
    DeletePolicy {
        id: u32,
    },
    /// Puts a volume into a group (`Some`) or takes it out (`None`).
    SetVolumeCg {
        id: u32,
        cg: Option<u32>,
    },
    /// Creates a host or replaces it whole (name, ports, CHAP, cluster, ...).
    SaveHost(HostRecord),
    /// Deletes a host and its own mappings.
    DeleteHost {
        id: u32,
    },
    /// Creates a host cluster or replaces it (its name).
    SaveCluster(ClusterRecord),
    /// Deletes a cluster and its mappings; its hosts stay, outside any cluster.
    DeleteCluster {
        id: u32,
    },
    /// Maps a dataset to a host or cluster.
    MapLun(LunRecord),
    UnmapLun {
        id: u32,
    },
}

/// Every pool and volume, and the next identifiers to hand out.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Catalog {
    pub serial: u64,
    pub pools: BTreeMap<u32, PoolRecord>,
    pub volumes: BTreeMap<u32, VolumeRecord>,
    pub next_pool_id: u32,
    pub next_volume_id: u32,
    #[serde(default)]
    pub cgs: BTreeMap<u32, CgRecord>,
    #[serde(default)]
    pub next_cg_id: u32,
    #[serde(default)]
    pub policies: BTreeMap<u32, PolicyRecord>,
    #[serde(default)]
    pub next_policy_id: u32,
    #[serde(default)]
    pub hosts: BTreeMap<u32, HostRecord>,
    #[serde(default)]
    pub next_host_id: u32,
    #[serde(default)]
    pub clusters: BTreeMap<u32, ClusterRecord>,
    #[serde(default)]
    pub next_cluster_id: u32,
    /// LUN mappings by their own id.
    #[serde(default)]
    pub luns: BTreeMap<u32, LunRecord>,
    #[serde(default)]
    pub next_lun_id: u32,
}

impl Catalog {
    pub fn new(serial: u64) -> Self {
        Catalog {
            serial,
            next_pool_id: 1,
            next_volume_id: 1,
            next_cg_id: 1,
            ..Default::default()
        }
    }

    /// Applies a change; applying the same change twice is harmless.
    pub fn apply(&mut self, op: &CatalogOp) {
        match op {
            CatalogOp::CreatePool(pool) => {
                self.next_pool_id = self.next_pool_id.max(pool.id + 1);
                self.pools.entry(pool.id).or_insert_with(|| pool.clone());
            }
            CatalogOp::DeletePool { id } => {
                self.pools.remove(id);
            }
            CatalogOp::CreateVolume(volume) => {
                self.next_volume_id = self.next_volume_id.max(volume.id + 1);
                self.volumes
                    .entry(volume.id)
                    .or_insert_with(|| volume.clone());
            }
            CatalogOp::ResizeVolume { id, size } => {
                if let Some(volume) = self.volumes.get_mut(id) {
                    volume.size = *size;
                }
            }
            CatalogOp::DeleteVolume { id } => {
                self.volumes.remove(id);
                self.unmap_dataset(*id);
                for policy in self.policies.values_mut() {
                    policy.assets.retain(|asset| asset != id);
                }
            }
            CatalogOp::UpdatePool(pool) => {
                if let Some(current) = self.pools.get_mut(&pool.id) {
                    *current = pool.clone();
                }
            }
            CatalogOp::UpdateVolume(volume) => {
                if let Some(current) = self.volumes.get_mut(&volume.id) {
                    let size = current.size;
                    *current = volume.clone();
                    current.size = size;
                }
            }
            CatalogOp::CreateSnapshots { snapshots, group } => {
                if let Some(cg) = group {
                    self.next_cg_id = self.next_cg_id.max(cg.id + 1);
                    self.cgs.entry(cg.id).or_insert_with(|| cg.clone());
                }
                for snapshot in snapshots {
                    self.next_volume_id = self.next_volume_id.max(snapshot.id + 1);
                    self.volumes
                        .entry(snapshot.id)
                        .or_insert_with(|| snapshot.clone());
                }
            }
            CatalogOp::TakeContents(pairs) => {
                for (id, from) in pairs {
                    let size = self.volumes.get(from).map(|source| source.size);
                    if let (Some(volume), Some(size)) = (self.volumes.get_mut(id), size) {
                        volume.size = size;
                    }
                }
            }
            CatalogOp::CreateCg(cg) => {
                self.next_cg_id = self.next_cg_id.max(cg.id + 1);
                self.cgs.entry(cg.id).or_insert_with(|| cg.clone());
            }
            CatalogOp::UpdateCg(cg) => {
                if let Some(current) = self.cgs.get_mut(&cg.id) {
                    *current = cg.clone();
                }
            }
            CatalogOp::DeleteCg { id } => {
                self.cgs.remove(id);
                for volume in self.volumes.values_mut() {
                    if volume.cg_id == Some(*id) {
                        volume.cg_id = None;
                    }
                }
            }
            CatalogOp::CreatePolicy(policy) => {
                self.next_policy_id = self.next_policy_id.max(policy.id + 1);
                self.policies
                    .entry(policy.id)
                    .or_insert_with(|| policy.clone());
            }
            CatalogOp::UpdatePolicy(policy) => {
                if let Some(current) = self.policies.get_mut(&policy.id) {
                    *current = policy.clone();
                }
            }
            CatalogOp::DeletePolicy { id } => {
                self.policies.remove(id);
            }
            CatalogOp::SetVolumeCg { id, cg } => {
                if let Some(volume) = self.volumes.get_mut(id) {
                    volume.cg_id = *cg;
                }
            }
            CatalogOp::SaveHost(_)
            | CatalogOp::DeleteHost { .. }
            | CatalogOp::SaveCluster(_)
            | CatalogOp::DeleteCluster { .. }
            | CatalogOp::MapLun(_)
            | CatalogOp::UnmapLun { .. } => self.apply_host_op(op),
        }
    }

    pub fn cg_by_name(&self, name: &str) -> Option<&CgRecord> {
        self.cgs.values().find(|cg| cg.name == name)
    }

    /// Every member of a family.
    pub fn family_members(&self, family: u32) -> impl Iterator<Item = &VolumeRecord> {
        self.volumes
            .values()
            .filter(move |volume| volume.family() == family)
    }

    /// How many snapshot steps separate a dataset from its master (0 for a master).
    pub fn depth(&self, id: u32) -> u32 {
        let mut depth = 0;
        let mut at = self.volumes.get(&id);
        while let Some(volume) = at.filter(|volume| volume.parent_id != 0) {
            depth += 1;
            at = self.volumes.get(&volume.parent_id);
            if depth > 10_000 {
                break;
            }
        }
        depth
    }

    pub fn pool_by_name(&self, name: &str) -> Option<&PoolRecord> {
        self.pools.values().find(|pool| pool.name == name)
    }

    pub fn volume_by_name(&self, name: &str) -> Option<&VolumeRecord> {
        self.volumes.values().find(|volume| volume.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_twice_changes_nothing() {
        let ops = [
            CatalogOp::CreatePool(PoolRecord::new(1, "p", 1 << 30, 1 << 30, 0)),
            CatalogOp::CreateVolume(VolumeRecord::new(1, "v", 1, 1 << 20, 0)),
            CatalogOp::ResizeVolume {
                id: 1,
                size: 2 << 20,
            },
            CatalogOp::CreateVolume(VolumeRecord::new(2, "w", 1, 1 << 20, 0)),
            CatalogOp::DeleteVolume { id: 2 },
        ];
        let mut once = Catalog::new(5);
        ops.iter().for_each(|op| once.apply(op));
        let mut twice = once.clone();
        ops.iter().for_each(|op| twice.apply(op));
        assert_eq!(once, twice);
        assert_eq!(once.volumes[&1].size, 2 << 20);
        assert_eq!(once.next_volume_id, 3);
    }

    #[test]
    fn capacity_levels_follow_the_thresholds() {
        let pool = PoolRecord::new(1, "p", 100, 100, 0);
        assert_eq!(pool.capacity_level(0), CapacityLevel::Normal);
        assert_eq!(pool.capacity_level(80), CapacityLevel::Warning);
        assert_eq!(pool.capacity_level(95), CapacityLevel::Critical);
        assert_eq!(pool.capacity_level(100), CapacityLevel::Locked);
        assert_eq!(pool.capacity_level(95).pool_state(), "LIMITED");
        assert_eq!(pool.capacity_level(80).pool_state(), "NORMAL");
    }

    #[test]
    fn updates_keep_the_size_and_records_from_before_the_new_fields_load() {
        let mut catalog = Catalog::new(1);
        catalog.apply(&CatalogOp::CreateVolume(VolumeRecord::new(
            1, "v", 1, 8192, 0,
        )));
        let mut renamed = VolumeRecord::new(1, "renamed", 1, 4096, 5);
        renamed.write_protected = true;
        catalog.apply(&CatalogOp::UpdateVolume(renamed));
        assert_eq!(catalog.volumes[&1].name, "renamed");
        assert_eq!(catalog.volumes[&1].size, 8192);
        assert!(catalog.volumes[&1].write_protected);

        let old: PoolRecord = serde_json::from_str(
            r#"{"id":1,"name":"p","physical_capacity":1,"virtual_capacity":1,"created_at":0}"#,
        )
        .unwrap();
        assert_eq!(old.physical_capacity_warning, DEFAULT_WARNING_PERCENT);
        assert!(old.ssd_enabled && old.owners.is_empty());
        let old: VolumeRecord =
            serde_json::from_str(r#"{"id":1,"name":"v","pool_id":1,"size":4096,"created_at":0}"#)
                .unwrap();
        assert_eq!(old.provtype, Provisioning::Thin);
    }
}
