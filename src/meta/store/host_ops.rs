//! Hosts, clusters and LUN mappings on the store: every change is checked against the
//! catalog's rules (see [`crate::meta::host_records`]) under the state write lock, then journaled
//! as one catalog record, so it is durable when the call returns and a refused change
//! changes nothing.

use std::sync::atomic::Ordering;

use super::datasets::{refuse_taken_name, validate_name, volume_record};
use super::{MetaError, MetaState, MetaStore};
use crate::clock::now_ms;
use crate::meta::catalog::{
    Catalog, CatalogOp, ChapMethod, ChapSettings, ClusterRecord, HostPort, HostRecord, LunOwner,
    LunRecord, PortKind, VolumeRecord,
};

/// The highest LUN number a mapping may use (single-level peripheral addressing).
pub const MAX_LUN: u32 = 255;
/// The first LUN a host's own mapping gets when none is asked for.
pub const FIRST_HOST_LUN: u32 = 1;
/// The first LUN a cluster's mapping gets when none is asked for.
pub const FIRST_CLUSTER_LUN: u32 = 11;
/// CHAP secrets are 12 to 16 characters (InfiniBox's rule; RFC 3720 advises at least 12).
pub const CHAP_SECRET_LEN: std::ops::RangeInclusive<usize> = 12..=16;
/// The longest iSCSI name (RFC 3720: 223 bytes).
pub const MAX_ISCSI_NAME: usize = 223;
/// The longest NBD TLS identity (a PSK identity or certificate subject), in bytes.
pub const MAX_NBD_IDENTITY: usize = 255;

/// A refused host, cluster or mapping change: an InfiniBox error code, its HTTP status
/// and a message for the operator; or a store failure.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{message}")]
    Refused {
        code: &'static str,
        status: u16,
        message: String,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

fn refused(code: &'static str, status: u16, message: String) -> HostError {
    HostError::Refused {
        code,
        status,
        message,
    }
}

pub fn host_not_found(what: impl std::fmt::Display) -> HostError {
    refused("HOST_NOT_FOUND", 404, format!("host {what} does not exist"))
}

pub fn cluster_not_found(what: impl std::fmt::Display) -> HostError {
    refused(
        "CLUSTER_NOT_FOUND",
        404,
        format!("host cluster {what} does not exist"),
    )
}

/// Checks an initiator address for its kind: iSCSI names as `iqn.YYYY-MM.domain[:...]`,
/// `eui.` and 16 hex digits, or `naa.` and 16 or 32; FC WWPNs as 16 hex digits
/// (colons allowed); NBD identities as 1 to 255 bytes of printable characters without
/// ':' (psktool's key files separate identity and key with it).
pub fn validate_port(kind: PortKind, address: &str) -> Result<(), HostError> {
    let ok = match kind {
        PortKind::Nbd => valid_nbd_identity(address),
        PortKind::Iscsi => valid_iscsi_name(address),
        PortKind::Fc => {
            let digits: String = address.chars().filter(|c| *c != ':').collect();
            digits.len() == 16 && digits.chars().all(|c| c.is_ascii_hexdigit())
        }
    };
    if ok {
        Ok(())
    } else {
        Err(refused(
            "INVALID_PORT_ADDRESS",
            400,
            match kind {
                PortKind::Iscsi => format!(
                    "{address:?} is not an iSCSI name: use iqn.YYYY-MM.reversed.domain[:identifier], eui. and 16 hex digits, or naa. and 16 or 32 hex digits"
                ),
                PortKind::Fc => {
                    format!("{address:?} is not an FC WWPN: use 16 hex digits (colons allowed)")
                }
                PortKind::Nbd => format!(
                    "{address:?} is not an NBD identity: use 1 to {MAX_NBD_IDENTITY} bytes of printable characters without ':'"
                ),
            },
        ))
    }
}

fn valid_nbd_identity(identity: &str) -> bool {
    (1..=MAX_NBD_IDENTITY).contains(&identity.len())
        && identity.chars().all(|c| !c.is_control() && c != ':')
}

fn all_hex(text: &str) -> bool {
    text.chars().all(|c| c.is_ascii_hexdigit())
}

fn valid_iscsi_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_ISCSI_NAME || !name.is_ascii() {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("eui.") {
        return hex.len() == 16 && all_hex(hex);
    }
    if let Some(hex) = lower.strip_prefix("naa.") {
        return (hex.len() == 16 || hex.len() == 32) && all_hex(hex);
    }
    let Some(rest) = lower.strip_prefix("iqn.") else {
        return false;
    };
    let bytes = rest.as_bytes();
    let date_ok = bytes.len() > 8
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && (1..=12).contains(&rest[5..7].parse::<u32>().unwrap_or(0))
        && bytes[7] == b'.';
    if !date_ok {
        return false;
    }
    let (domain, identifier) = match rest[8..].split_once(':') {
        Some((domain, identifier)) => (domain, Some(identifier)),
        None => (&rest[8..], None),
    };
    !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && identifier.is_none_or(|id| id.chars().all(|c| c.is_ascii_graphic()))
}

/// Checks CHAP settings: CHAP needs the inbound user and a 12..16 character secret;
/// MUTUAL_CHAP the outbound pair too, with a secret other than the inbound one.
pub fn validate_chap(chap: &ChapSettings) -> Result<(), HostError> {
    let bad = |message: String| Err(refused("INVALID_CHAP_SETTINGS", 400, message));
    let check_pair = |direction: &str, user: &str, secret: &str| -> Result<(), HostError> {
        if user.is_empty() || user.len() > 255 || !user.chars().all(|c| c.is_ascii_graphic()) {
            return bad(format!(
                "{} needs a {direction} CHAP user name (1 to 255 printable characters)",
                chap.method.as_str()
            ));
        }
        if !CHAP_SECRET_LEN.contains(&secret.len()) || !secret.chars().all(|c| c.is_ascii_graphic())
        {
            return bad(format!(
                "the {direction} CHAP secret must be 12 to 16 printable characters (got {})",
                secret.len()
            ));
        }
        Ok(())
    };
    match chap.method {
        ChapMethod::None => Ok(()),
        ChapMethod::Chap => check_pair("inbound", &chap.inbound_user, &chap.inbound_secret),
        ChapMethod::MutualChap => {
            check_pair("inbound", &chap.inbound_user, &chap.inbound_secret)?;
            check_pair("outbound", &chap.outbound_user, &chap.outbound_secret)?;
            if chap.outbound_secret == chap.inbound_secret {
                return bad(
                    "MUTUAL_CHAP needs an outbound secret other than the inbound one".into(),
                );
            }
            Ok(())
        }
    }
}

/// Refuses deleting a dataset while a host or cluster sees it.
pub(super) fn check_unmapped(state: &MetaState, volume: &VolumeRecord) -> Result<(), MetaError> {
    let Some(lun) = state
        .catalog
        .luns
        .values()
        .find(|lun| lun.volume_id == volume.id)
    else {
        return Ok(());
    };
    let owner = owner_name(state, lun.owner);
    Err(MetaError::Invalid(format!(
        "{:?} is mapped to {owner} as LUN {}; unmap it first",
        volume.name, lun.lun
    )))
}

fn owner_name(state: &MetaState, owner: LunOwner) -> String {
    match owner {
        LunOwner::Host(id) => state
            .catalog
            .hosts
            .get(&id)
            .map_or(format!("host {id}"), |h| format!("host {:?}", h.name)),
        LunOwner::Cluster(id) => state
            .catalog
            .clusters
            .get(&id)
            .map_or(format!("cluster {id}"), |c| format!("cluster {:?}", c.name)),
    }
}

/// The LUN numbers `owner` may not take: its own, and those of everyone sharing its
/// view (a host's cluster; a cluster's hosts).
fn taken_luns(state: &MetaState, owner: LunOwner) -> Vec<u32> {
    let catalog = &state.catalog;
    let cluster_of = |host: u32| catalog.hosts.get(&host).and_then(|h| h.cluster_id);
    catalog
        .luns
        .values()
        .filter(|lun| match (owner, lun.owner) {
            (a, b) if a == b => true,
            (LunOwner::Host(host), LunOwner::Cluster(cluster)) => cluster_of(host) == Some(cluster),
            (LunOwner::Cluster(cluster), LunOwner::Host(host)) => cluster_of(host) == Some(cluster),
            _ => false,
        })
        .map(|lun| lun.lun)
        .collect()
}

impl MetaStore {
    /// Moves after every applied catalog change (any kind); read without locks, so the
    /// iSCSI target can tell cheaply whether its view of hosts and LUNs is current.
    pub fn catalog_generation(&self) -> u64 {
        self.catalog_generation.load(Ordering::Acquire)
    }

    /// Stores a host as new (`id` 0) or in place of host `id`: a unique valid name,
    /// valid ports no other host has, valid CHAP settings, and an existing cluster whose
    /// LUNs do not clash with the host's own.
    pub fn save_host(&self, mut host: HostRecord) -> Result<HostRecord, HostError> {
        validate_name(&host.name)?;
        validate_chap(&host.chap)?;
        let mut state = self.state_mut();
        let catalog = &state.catalog;
        let others = (catalog.hosts.values()).map(|other| (other.id, other.name.as_str()));
        refuse_taken_name("host", &host.name, host.id, others)?;
        for (index, port) in host.ports.iter().enumerate() {
            validate_port(port.kind, &port.address)?;
            let twice = host.ports[..index]
                .iter()
                .any(|other| other.address.eq_ignore_ascii_case(&port.address));
            let owner = catalog
                .hosts
                .values()
                .find(|other| other.id != host.id && other.has_initiator(&port.address));
            if let Some(owner) = owner {
                return Err(refused(
                    "PORT_ALREADY_BELONGS_TO_HOST",
                    409,
                    format!(
                        "initiator {} already belongs to host {:?}; remove it there first",
                        port.address, owner.name
                    ),
                ));
            }
            if twice {
                return Err(refused(
                    "PORT_ALREADY_BELONGS_TO_HOST",
                    409,
                    format!(
                        "initiator {} is listed twice for host {:?}",
                        port.address, host.name
                    ),
                ));
            }
        }
        let before = if host.id == 0 {
            None
        } else {
            Some(
                catalog
                    .hosts
                    .get(&host.id)
                    .cloned()
                    .ok_or_else(|| host_not_found(host.id))?,
            )
        };
        if let Some(cluster) = host.cluster_id
            && before.as_ref().and_then(|b| b.cluster_id) != Some(cluster)
        {
            let cluster_record = catalog
                .clusters
                .get(&cluster)
                .ok_or_else(|| cluster_not_found(cluster))?;
            if host.id != 0 {
                let own = taken_luns(&state, LunOwner::Host(host.id));
                let shared = taken_luns(&state, LunOwner::Cluster(cluster));
                if let Some(clash) = own.iter().find(|lun| shared.contains(lun)) {
                    return Err(refused(
                        "LUN_CONFLICT",
                        409,
                        format!(
                            "host {:?} maps LUN {clash} and so does cluster {:?}; unmap one first",
                            host.name, cluster_record.name
                        ),
                    ));
                }
            }
        }
        let now = now_ms();
        host.updated_at = now;
        match before {
            None => {
                host.id = state.catalog.next_host_id.max(1);
                host.created_at = now;
            }
            Some(before) => host.created_at = before.created_at,
        }
        self.log_catalog(&mut state, CatalogOp::SaveHost(host.clone()));
        Ok(host)
    }

    /// Deletes a host; its own mappings go with it (its cluster's stay with the cluster).
    pub fn delete_host(&self, id: u32) -> Result<HostRecord, HostError> {
        self.delete_record(
            |catalog| catalog.hosts.get(&id),
            || host_not_found(id),
            CatalogOp::DeleteHost { id },
        )
    }

    /// Stores a cluster as new (`id` 0) or renames cluster `id`.
    pub fn save_cluster(&self, mut cluster: ClusterRecord) -> Result<ClusterRecord, HostError> {
        validate_name(&cluster.name)?;
        let mut state = self.state_mut();
        let others = (state.catalog.clusters.values()).map(|other| (other.id, other.name.as_str()));
        refuse_taken_name("host cluster", &cluster.name, cluster.id, others)?;
        let now = now_ms();
        cluster.updated_at = now;
        if cluster.id == 0 {
            cluster.id = state.catalog.next_cluster_id.max(1);
            cluster.created_at = now;
        } else {
            let before = state
                .catalog
                .clusters
                .get(&cluster.id)
                .ok_or_else(|| cluster_not_found(cluster.id))?;
            cluster.created_at = before.created_at;
        }
        self.log_catalog(&mut state, CatalogOp::SaveCluster(cluster.clone()));
        Ok(cluster)
    }

    /// Deletes a cluster and its mappings; its hosts stay, outside any cluster.
    pub fn delete_cluster(&self, id: u32) -> Result<ClusterRecord, HostError> {
        self.delete_record(
            |catalog| catalog.clusters.get(&id),
            || cluster_not_found(id),
            CatalogOp::DeleteCluster { id },
        )
    }

    /// Journals the deletion `op` of the record `find` picks out of the catalog and
    /// returns the record as it was; `missing` when there is none.
    fn delete_record<T: Clone>(
        &self,
        find: impl FnOnce(&Catalog) -> Option<&T>,
        missing: impl FnOnce() -> HostError,
        op: CatalogOp,
    ) -> Result<T, HostError> {
        let mut state = self.state_mut();
        let record = find(&state.catalog).cloned().ok_or_else(missing)?;
        self.log_catalog(&mut state, op);
        Ok(record)
    }

    /// Maps dataset `volume_id` to `owner` as `lun` (the lowest free number from 1 for a
    /// host, 11 for a cluster, when `None`). A dataset is seen once per host (directly or
    /// through its cluster); a number is used once in a host's view.
    pub fn map_lun(
        &self,
        owner: LunOwner,
        volume_id: u32,
        lun: Option<u32>,
    ) -> Result<LunRecord, HostError> {
        let mut state = self.state_mut();
        let volume = volume_record(&state, volume_id)?;
        let owner_text = match owner {
            LunOwner::Host(id) if !state.catalog.hosts.contains_key(&id) => {
                return Err(host_not_found(id));
            }
            LunOwner::Cluster(id) if !state.catalog.clusters.contains_key(&id) => {
                return Err(cluster_not_found(id));
            }
            _ => owner_name(&state, owner),
        };
        if let Some(existing) = self.view_mapping(&state, owner, volume_id) {
            return Err(refused(
                "VOLUME_ALREADY_MAPPED",
                409,
                format!(
                    "{:?} is already mapped to {} as LUN {}",
                    volume.name,
                    owner_name(&state, existing.owner),
                    existing.lun
                ),
            ));
        }
        let taken = taken_luns(&state, owner);
        let lun = match lun {
            Some(lun) if lun > MAX_LUN => {
                return Err(refused(
                    "LUN_OUT_OF_RANGE",
                    400,
                    format!("LUN {lun} is out of range: use 0 to {MAX_LUN}"),
                ));
            }
            Some(lun) if taken.contains(&lun) => {
                return Err(refused(
                    "LUN_ALREADY_IN_USE",
                    409,
                    format!(
                        "LUN {lun} is already in use in the view of {owner_text}; choose another or leave it out"
                    ),
                ));
            }
            Some(lun) => lun,
            None => {
                let first = match owner {
                    LunOwner::Host(_) => FIRST_HOST_LUN,
                    LunOwner::Cluster(_) => FIRST_CLUSTER_LUN,
                };
                (first..=MAX_LUN)
                    .chain(0..first)
                    .find(|lun| !taken.contains(lun))
                    .ok_or_else(|| {
                        refused(
                            "NO_FREE_LUN",
                            409,
                            format!("{owner_text} uses every LUN from 0 to {MAX_LUN}"),
                        )
                    })?
            }
        };
        let record = LunRecord {
            id: state.catalog.next_lun_id.max(1),
            owner,
            lun,
            volume_id,
            created_at: now_ms(),
        };
        self.log_catalog(&mut state, CatalogOp::MapLun(record.clone()));
        Ok(record)
    }

    /// A mapping of `volume_id` that `owner` (or a host sharing its view) already sees.
    fn view_mapping(
        &self,
        state: &MetaState,
        owner: LunOwner,
        volume_id: u32,
    ) -> Option<LunRecord> {
        let catalog = &state.catalog;
        let cluster_of = |host: u32| catalog.hosts.get(&host).and_then(|h| h.cluster_id);
        catalog
            .luns
            .values()
            .filter(|lun| lun.volume_id == volume_id)
            .find(|lun| match (owner, lun.owner) {
                (a, b) if a == b => true,
                (LunOwner::Host(host), LunOwner::Cluster(cluster))
                | (LunOwner::Cluster(cluster), LunOwner::Host(host)) => {
                    cluster_of(host) == Some(cluster)
                }
                _ => false,
            })
            .cloned()
    }

    /// Removes `owner`'s mapping of LUN `lun` (or, with `by_volume`, of dataset `lun`).
    pub fn unmap_lun(
        &self,
        owner: LunOwner,
        key: u32,
        by_volume: bool,
    ) -> Result<LunRecord, HostError> {
        let mut state = self.state_mut();
        let found = state
            .catalog
            .luns
            .values()
            .find(|lun| {
                lun.owner == owner
                    && if by_volume {
                        lun.volume_id == key
                    } else {
                        lun.lun == key
                    }
            })
            .cloned();
        let Some(lun) = found else {
            return Err(refused(
                "LUN_NOT_FOUND",
                404,
                format!(
                    "{} has no mapping of {} {key}",
                    owner_name(&state, owner),
                    if by_volume { "volume" } else { "LUN" }
                ),
            ));
        };
        self.log_catalog(&mut state, CatalogOp::UnmapLun { id: lun.id });
        Ok(lun)
    }

    /// Adds an initiator port to host `id`.
    pub fn add_host_port(&self, id: u32, port: HostPort) -> Result<HostRecord, HostError> {
        let mut host = self.host_record(id)?;
        if host.has_initiator(&port.address) {
            return Err(refused(
                "PORT_ALREADY_BELONGS_TO_HOST",
                409,
                format!(
                    "initiator {} already belongs to host {:?}",
                    port.address, host.name
                ),
            ));
        }
        host.ports.push(port);
        self.save_host(host)
    }

    /// Removes initiator `address` (case-insensitive) from host `id`.
    pub fn remove_host_port(&self, id: u32, address: &str) -> Result<HostRecord, HostError> {
        let mut host = self.host_record(id)?;
        let count = host.ports.len();
        host.ports
            .retain(|port| !port.address.eq_ignore_ascii_case(address));
        if host.ports.len() == count {
            return Err(refused(
                "PORT_NOT_FOUND",
                404,
                format!("host {:?} has no port {address}", host.name),
            ));
        }
        self.save_host(host)
    }

    pub fn host_record(&self, id: u32) -> Result<HostRecord, HostError> {
        self.state()
            .catalog
            .hosts
            .get(&id)
            .cloned()
            .ok_or_else(|| host_not_found(id))
    }

    pub fn cluster_record(&self, id: u32) -> Result<ClusterRecord, HostError> {
        self.state()
            .catalog
            .clusters
            .get(&id)
            .cloned()
            .ok_or_else(|| cluster_not_found(id))
    }
}

#[cfg(test)]
mod tests;
