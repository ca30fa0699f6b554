//! Hosts, host clusters and LUN mappings in the catalog: who an initiator is, how it must
//! authenticate, and which datasets it sees as which logical unit numbers.
//!
//! Promises: an initiator name (compared without regard to case, as iSCSI names are)
//! belongs to at most one host; a dataset is mapped at most once to one host or cluster,
//! and a LUN number is used once per host or cluster; a host in a cluster sees the
//! cluster's mappings plus its own and no number is used by both. The store checks these
//! before it journals a change; `apply` here only records it, idempotently, so replay
//! after a crash (or twice) leaves the same catalog. Deleting a dataset, a host or a
//! cluster drops the mappings that named it, so no mapping outlives its parts.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, CatalogOp};

mod stored;

/// How an initiator must prove who it is at login.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChapMethod {
    /// No authentication: the initiator name alone decides.
    #[default]
    None,
    /// The initiator answers the target's CHAP challenge (inbound user and secret).
    Chap,
    /// As `Chap`, and the target answers the initiator's challenge (outbound).
    MutualChap,
}

impl ChapMethod {
    /// InfiniBox's spelling: NONE, CHAP or MUTUAL_CHAP.
    pub fn as_str(self) -> &'static str {
        match self {
            ChapMethod::None => "NONE",
            ChapMethod::Chap => "CHAP",
            ChapMethod::MutualChap => "MUTUAL_CHAP",
        }
    }

    /// Parses InfiniBox's spelling (any case); `None` for anything else.
    pub fn parse(text: &str) -> Option<ChapMethod> {
        match text.to_ascii_uppercase().as_str() {
            "NONE" => Some(ChapMethod::None),
            "CHAP" => Some(ChapMethod::Chap),
            "MUTUAL_CHAP" | "MUTUAL" => Some(ChapMethod::MutualChap),
            _ => None,
        }
    }
}

/// A host's CHAP settings. Secrets are kept here, plain, in memory only, for the target;
/// the management API never shows them, `Debug` does not print them, and on media they
/// are sealed (see `stored`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChapSettings {
    pub method: ChapMethod,
    pub inbound_user: String,
    pub inbound_secret: String,
    pub outbound_user: String,
    pub outbound_secret: String,
}

impl fmt::Debug for ChapSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |secret: &str| if secret.is_empty() { "" } else { "<set>" };
        f.debug_struct("ChapSettings")
            .field("method", &self.method)
            .field("inbound_user", &self.inbound_user)
            .field("inbound_secret", &shown(&self.inbound_secret))
            .field("outbound_user", &self.outbound_user)
            .field("outbound_secret", &shown(&self.outbound_secret))
            .finish()
    }
}

/// The kind of an initiator port.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum PortKind {
    Iscsi,
    /// Accepted and stored; nothing serves Fibre Channel.
    Fc,
    /// An NBD client's TLS identity (PSK identity or certificate subject), compared exactly.
    Nbd,
}

impl PortKind {
    /// InfiniBox's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Iscsi => "ISCSI",
            PortKind::Fc => "FC",
            PortKind::Nbd => "NBD",
        }
    }

    pub fn parse(text: &str) -> Option<PortKind> {
        match text.to_ascii_uppercase().as_str() {
            "ISCSI" => Some(PortKind::Iscsi),
            "FC" => Some(PortKind::Fc),
            "NBD" => Some(PortKind::Nbd),
            _ => None,
        }
    }
}

/// One initiator port of a host: an iSCSI name, an FC WWPN or an NBD TLS identity, stored
/// as given.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPort {
    pub kind: PortKind,
    pub address: String,
}

/// A host: the initiators of one machine, how they authenticate, and its cluster. Its
/// serialized form (journal, checkpoints) seals the CHAP secrets: see `stored`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    pub id: u32,
    pub name: String,
    pub ports: Vec<HostPort>,
    pub chap: ChapSettings,
    pub cluster_id: Option<u32>,
    /// "default" or "linux" (kept for clients; it changes nothing here).
    pub host_type: String,
    pub optimized: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

fn default_host_type() -> String {
    "default".into()
}

fn default_true() -> bool {
    true
}

/// A host cluster: hosts that share the cluster's mappings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterRecord {
    pub id: u32,
    pub name: String,
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: u64,
}

/// Whom a mapping presents its dataset to.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum LunOwner {
    Host(u32),
    Cluster(u32),
}

/// One LUN mapping: dataset `volume_id` appears as `lun` to its owner.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LunRecord {
    pub id: u32,
    pub owner: LunOwner,
    pub lun: u32,
    pub volume_id: u32,
    pub created_at: u64,
}

impl HostRecord {
    /// Whether one of its ports, of any kind, is `initiator` (case-insensitive: no two
    /// hosts may hold addresses that differ only in case).
    pub fn has_initiator(&self, initiator: &str) -> bool {
        self.ports
            .iter()
            .any(|port| port.address.eq_ignore_ascii_case(initiator))
    }

    /// Whether one of its SAN ports (iSCSI or FC, not NBD) is `initiator`
    /// (case-insensitive, as iSCSI names are).
    pub fn has_san_initiator(&self, initiator: &str) -> bool {
        self.ports
            .iter()
            .any(|port| port.kind != PortKind::Nbd && port.address.eq_ignore_ascii_case(initiator))
    }

    /// Whether one of its NBD ports is exactly `identity` (TLS identities are compared
    /// byte for byte).
    pub fn has_nbd_identity(&self, identity: &str) -> bool {
        self.ports
            .iter()
            .any(|port| port.kind == PortKind::Nbd && port.address == identity)
    }
}

impl Catalog {
    /// Records a host, cluster or mapping change; idempotent like every catalog change.
    pub(super) fn apply_host_op(&mut self, op: &CatalogOp) {
        match op {
            CatalogOp::SaveHost(host) => {
                self.next_host_id = self.next_host_id.max(host.id + 1);
                self.hosts.insert(host.id, host.clone());
            }
            CatalogOp::DeleteHost { id } => {
                self.hosts.remove(id);
                self.luns.retain(|_, lun| lun.owner != LunOwner::Host(*id));
            }
            CatalogOp::SaveCluster(cluster) => {
                self.next_cluster_id = self.next_cluster_id.max(cluster.id + 1);
                self.clusters.insert(cluster.id, cluster.clone());
            }
            CatalogOp::DeleteCluster { id } => {
                self.clusters.remove(id);
                self.luns
                    .retain(|_, lun| lun.owner != LunOwner::Cluster(*id));
                for host in self.hosts.values_mut() {
                    if host.cluster_id == Some(*id) {
                        host.cluster_id = None;
                    }
                }
            }
            CatalogOp::MapLun(lun) => {
                self.next_lun_id = self.next_lun_id.max(lun.id + 1);
                self.luns.insert(lun.id, lun.clone());
            }
            CatalogOp::UnmapLun { id } => {
                self.luns.remove(id);
            }
            _ => {}
        }
    }

    /// Drops the mappings of a deleted dataset.
    pub(super) fn unmap_dataset(&mut self, volume_id: u32) {
        self.luns.retain(|_, lun| lun.volume_id != volume_id);
    }

    /// The host one of whose iSCSI or FC ports is `initiator` (case-insensitive); an NBD
    /// identity never names an iSCSI initiator.
    pub fn host_by_initiator(&self, initiator: &str) -> Option<&HostRecord> {
        self.hosts
            .values()
            .find(|host| host.has_san_initiator(initiator))
    }

    /// The host one of whose NBD ports is exactly `identity`.
    pub fn host_by_nbd_identity(&self, identity: &str) -> Option<&HostRecord> {
        self.hosts
            .values()
            .find(|host| host.has_nbd_identity(identity))
    }

    pub fn host_by_name(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.values().find(|host| host.name == name)
    }

    pub fn cluster_by_name(&self, name: &str) -> Option<&ClusterRecord> {
        self.clusters.values().find(|cluster| cluster.name == name)
    }

    /// `(lun, volume_id)` of everything host `host_id` sees, its own mappings and its
    /// cluster's, sorted by LUN.
    pub fn luns_of_host(&self, host_id: u32) -> Vec<(u32, u32)> {
        let Some(host) = self.hosts.get(&host_id) else {
            return Vec::new();
        };
        let cluster = host.cluster_id.map(LunOwner::Cluster);
        let mut luns: Vec<(u32, u32)> = self
            .luns
            .values()
            .filter(|lun| lun.owner == LunOwner::Host(host_id) || Some(lun.owner) == cluster)
            .map(|lun| (lun.lun, lun.volume_id))
            .collect();
        luns.sort_unstable();
        luns
    }

    /// The mappings owned by `owner`, by LUN.
    pub fn luns_of(&self, owner: LunOwner) -> Vec<&LunRecord> {
        let mut luns: Vec<&LunRecord> = self
            .luns
            .values()
            .filter(|lun| lun.owner == owner)
            .collect();
        luns.sort_unstable_by_key(|lun| lun.lun);
        luns
    }

    /// Whether any host or cluster sees dataset `volume_id`.
    pub fn is_mapped(&self, volume_id: u32) -> bool {
        self.luns.values().any(|lun| lun.volume_id == volume_id)
    }

    /// The hosts of cluster `cluster_id`, by id.
    pub fn cluster_hosts(&self, cluster_id: u32) -> impl Iterator<Item = &HostRecord> {
        self.hosts
            .values()
            .filter(move |host| host.cluster_id == Some(cluster_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::catalog::VolumeRecord;

    fn host(id: u32, name: &str, iqn: &str) -> HostRecord {
        HostRecord {
            id,
            name: name.into(),
            ports: vec![HostPort {
                kind: PortKind::Iscsi,
                address: iqn.into(),
            }],
            chap: ChapSettings::default(),
            cluster_id: None,
            host_type: "default".into(),
            optimized: true,
            created_at: 1,
            updated_at: 1,
        }
    }

    fn lun(id: u32, owner: LunOwner, lun: u32, volume_id: u32) -> LunRecord {
        LunRecord {
            id,
            owner,
            lun,
            volume_id,
            created_at: 1,
        }
    }

    #[test]
    fn host_ops_replay_idempotently_and_cascade() {
        let mut clustered = host(2, "h2", "iqn.2000-01.com.example:b");
        clustered.cluster_id = Some(1);
        let ops = [
            CatalogOp::CreateVolume(VolumeRecord::new(1, "v", 1, 4096, 0)),
            CatalogOp::CreateVolume(VolumeRecord::new(2, "w", 1, 4096, 0)),
            CatalogOp::SaveHost(host(1, "h1", "iqn.2000-01.com.example:A")),
            CatalogOp::SaveCluster(ClusterRecord {
                id: 1,
                name: "c".into(),
                created_at: 1,
                updated_at: 1,
            }),
            CatalogOp::SaveHost(clustered),
            CatalogOp::MapLun(lun(1, LunOwner::Host(2), 1, 1)),
            CatalogOp::MapLun(lun(2, LunOwner::Cluster(1), 11, 2)),
        ];
        let mut once = Catalog::new(1);
        ops.iter().for_each(|op| once.apply(op));
        let mut twice = once.clone();
        ops.iter().for_each(|op| twice.apply(op));
        assert_eq!(once, twice);
        assert_eq!(
            once.host_by_initiator("IQN.2000-01.com.example:a")
                .map(|h| h.id),
            Some(1)
        );
        assert_eq!(once.luns_of_host(2), vec![(1, 1), (11, 2)]);
        assert!(once.luns_of_host(1).is_empty());
        assert!(once.is_mapped(2));

        once.apply(&CatalogOp::DeleteVolume { id: 1 });
        assert_eq!(once.luns_of_host(2), vec![(11, 2)]);
        once.apply(&CatalogOp::DeleteCluster { id: 1 });
        assert_eq!(once.hosts[&2].cluster_id, None);
        assert!(!once.is_mapped(2));
        assert_eq!(once.next_host_id, 3);
        assert_eq!(once.next_lun_id, 3);
    }

    #[test]
    fn catalogs_from_before_hosts_load() {
        let old = r#"{"serial":1,"pools":{},"volumes":{},"next_pool_id":1,"next_volume_id":1}"#;
        let catalog: Catalog = serde_json::from_str(old).unwrap();
        assert!(catalog.hosts.is_empty() && catalog.luns.is_empty());
        let old_host = r#"{"id":1,"name":"h","created_at":0}"#;
        let host: HostRecord = serde_json::from_str(old_host).unwrap();
        assert_eq!(host.chap.method, ChapMethod::None);
        assert!(host.optimized);
    }
}
