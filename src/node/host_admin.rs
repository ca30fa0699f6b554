//! Hosts, host clusters and LUN mappings over the live node: the [`HostManagement`] calls
//! the REST server makes, turned into checked catalog changes on the metadata store. The
//! iSCSI target reads the result through `Catalog::host_by_initiator` and
//! `Catalog::luns_of_host`, and notices changes through `MetaStore::catalog_generation`;
//! the NBD ports through `Catalog::host_by_nbd_identity` (see `nbd_access`).

use super::api::{NodeApi, mgmt_error};
use crate::meta::catalog::Catalog;
use crate::meta::store::host_ops::HostError;
use crate::meta::{
    ChapMethod, ChapSettings, ClusterRecord, HostPort, HostRecord, LunOwner, LunRecord, PortKind,
};
use crate::mgmt::MgmtError;
use crate::mgmt::api::{
    ClusterCreate, ClusterHost, ClusterInfo, ClusterUpdate, HostCreate, HostInfo, HostManagement,
    HostPortInfo, HostUpdate, LunCreate, LunInfo, MappingTarget,
};

fn host_error(error: HostError) -> MgmtError {
    match error {
        HostError::Refused {
            code,
            status,
            message,
        } => MgmtError::new(code, status, message),
        HostError::Meta(error) => mgmt_error(error),
    }
}

fn owner_of(target: MappingTarget) -> LunOwner {
    match target {
        MappingTarget::Host(id) => LunOwner::Host(id),
        MappingTarget::Cluster(id) => LunOwner::Cluster(id),
    }
}

fn lun_info(lun: &LunRecord) -> LunInfo {
    let (host_id, host_cluster_id) = match lun.owner {
        LunOwner::Host(id) => (id, 0),
        LunOwner::Cluster(id) => (0, id),
    };
    LunInfo {
        id: lun.id,
        lun: lun.lun,
        volume_id: lun.volume_id,
        host_id,
        host_cluster_id,
        clustered: host_cluster_id != 0,
    }
}

/// What host `host` sees: its own mappings and its cluster's, by LUN.
fn host_luns(catalog: &Catalog, host: &HostRecord) -> Vec<LunInfo> {
    let mut luns: Vec<&LunRecord> = catalog.luns_of(LunOwner::Host(host.id));
    if let Some(cluster) = host.cluster_id {
        luns.extend(catalog.luns_of(LunOwner::Cluster(cluster)));
    }
    luns.sort_unstable_by_key(|lun| lun.lun);
    luns.into_iter().map(lun_info).collect()
}

fn host_info(catalog: &Catalog, host: &HostRecord) -> HostInfo {
    let luns = host_luns(catalog, host);
    HostInfo {
        id: host.id,
        name: host.name.clone(),
        ports: host
            .ports
            .iter()
            .map(|port| HostPortInfo {
                port_type: port.kind.as_str().into(),
                address: port.address.clone(),
            })
            .collect(),
        ports_count: host.ports.len() as u64,
        luns_count: luns.len() as u64,
        luns,
        host_cluster_id: host.cluster_id.unwrap_or(0),
        host_type: host.host_type.clone(),
        san_client_type: "HOST".into(),
        security_method: host.chap.method.as_str().into(),
        security_chap_inbound_username: host.chap.inbound_user.clone(),
        security_chap_has_inbound_secret: !host.chap.inbound_secret.is_empty(),
        security_chap_outbound_username: host.chap.outbound_user.clone(),
        security_chap_has_outbound_secret: !host.chap.outbound_secret.is_empty(),
        optimized: host.optimized,
        created_at: host.created_at,
        updated_at: host.updated_at,
    }
}

fn cluster_info(catalog: &Catalog, cluster: &ClusterRecord) -> ClusterInfo {
    let hosts: Vec<ClusterHost> = catalog
        .cluster_hosts(cluster.id)
        .map(|host| ClusterHost {
            id: host.id,
            name: host.name.clone(),
        })
        .collect();
    let luns: Vec<LunInfo> = catalog
        .luns_of(LunOwner::Cluster(cluster.id))
        .into_iter()
        .map(lun_info)
        .collect();
    ClusterInfo {
        id: cluster.id,
        name: cluster.name.clone(),
        hosts_count: hosts.len() as u64,
        hosts,
        luns_count: luns.len() as u64,
        luns,
        host_type: "default".into(),
        san_client_type: "CLUSTER".into(),
        created_at: cluster.created_at,
        updated_at: cluster.updated_at,
    }
}

fn port_kind(text: &str) -> Result<PortKind, MgmtError> {
    PortKind::parse(text).ok_or_else(|| {
        MgmtError::bad_request(format!(
            "port type {text:?} is not known: use ISCSI, FC or NBD"
        ))
    })
}

fn host_type(text: &str) -> Result<String, MgmtError> {
    let lower = text.to_ascii_lowercase();
    if [
        "default", "linux", "windows", "esxi", "aix", "solaris", "hpux",
    ]
    .contains(&lower.as_str())
    {
        Ok(lower)
    } else {
        Err(MgmtError::bad_request(format!(
            "host type {text:?} is not known: use default or linux"
        )))
    }
}

/// CHAP fields of a request laid over `chap`; a field not given keeps its value.
struct ChapChange {
    method: Option<String>,
    inbound_user: Option<String>,
    inbound_secret: Option<String>,
    outbound_user: Option<String>,
    outbound_secret: Option<String>,
}

impl ChapChange {
    fn apply(self, chap: &mut ChapSettings) -> Result<(), MgmtError> {
        if let Some(method) = self.method {
            chap.method = ChapMethod::parse(&method).ok_or_else(|| {
                MgmtError::bad_request(format!(
                    "security_method {method:?} is not known: use NONE, CHAP or MUTUAL_CHAP"
                ))
            })?;
        }
        let set = |field: &mut String, value: Option<String>| {
            if let Some(value) = value {
                *field = value;
            }
        };
        set(&mut chap.inbound_user, self.inbound_user);
        set(&mut chap.inbound_secret, self.inbound_secret);
        set(&mut chap.outbound_user, self.outbound_user);
        set(&mut chap.outbound_secret, self.outbound_secret);
        Ok(())
    }
}

impl NodeApi {
    fn with_host(&self, id: u32) -> Result<HostInfo, MgmtError> {
        let state = self.meta.state();
        let host = state
            .catalog
            .hosts
            .get(&id)
            .ok_or_else(|| host_error(crate::meta::store::host_ops::host_not_found(id)))?;
        Ok(host_info(&state.catalog, host))
    }

    fn with_cluster(&self, id: u32) -> Result<ClusterInfo, MgmtError> {
        let state = self.meta.state();
        let cluster = state
            .catalog
            .clusters
            .get(&id)
            .ok_or_else(|| host_error(crate::meta::store::host_ops::cluster_not_found(id)))?;
        Ok(cluster_info(&state.catalog, cluster))
    }

    fn check_target(&self, target: MappingTarget) -> Result<(), MgmtError> {
        match target {
            MappingTarget::Host(id) => self.with_host(id).map(drop),
            MappingTarget::Cluster(id) => self.with_cluster(id).map(drop),
        }
    }
}

impl HostManagement for NodeApi {
    fn hosts(&self) -> Vec<HostInfo> {
        let state = self.meta.state();
        state
            .catalog
            .hosts
            .values()
            .map(|host| host_info(&state.catalog, host))
            .collect()
    }

    fn host(&self, id: u32) -> Result<HostInfo, MgmtError> {
        self.with_host(id)
    }

    fn host_id_by_initiator(&self, address: &str) -> Result<u32, MgmtError> {
        self.meta
            .state()
            .catalog
            .host_by_initiator(address)
            .map(|host| host.id)
            .ok_or_else(|| {
                MgmtError::new(
                    "HOST_NOT_FOUND",
                    404,
                    format!("no host has initiator {address}"),
                )
            })
    }

    fn create_host(&self, request: HostCreate) -> Result<HostInfo, MgmtError> {
        let mut ports = Vec::new();
        for port in request.ports.unwrap_or_default() {
            ports.push(HostPort {
                kind: port_kind(&port.port_type)?,
                address: port.address,
            });
        }
        let mut chap = ChapSettings::default();
        ChapChange {
            method: request.security_method,
            inbound_user: request.security_chap_inbound_username,
            inbound_secret: request.security_chap_inbound_secret,
            outbound_user: request.security_chap_outbound_username,
            outbound_secret: request.security_chap_outbound_secret,
        }
        .apply(&mut chap)?;
        let host = HostRecord {
            id: 0,
            name: request.name,
            ports,
            chap,
            cluster_id: None,
            host_type: host_type(request.host_type.as_deref().unwrap_or("default"))?,
            optimized: request.optimized.unwrap_or(true),
            created_at: 0,
            updated_at: 0,
        };
        let saved = self.meta.save_host(host).map_err(host_error)?;
        self.with_host(saved.id)
    }

    fn update_host(&self, id: u32, update: HostUpdate) -> Result<HostInfo, MgmtError> {
        let mut host = self.meta.host_record(id).map_err(host_error)?;
        if let Some(name) = update.name {
            host.name = name;
        }
        if let Some(kind) = update.host_type {
            host.host_type = host_type(&kind)?;
        }
        if let Some(optimized) = update.optimized {
            host.optimized = optimized;
        }
        ChapChange {
            method: update.security_method,
            inbound_user: update.security_chap_inbound_username,
            inbound_secret: update.security_chap_inbound_secret,
            outbound_user: update.security_chap_outbound_username,
            outbound_secret: update.security_chap_outbound_secret,
        }
        .apply(&mut host.chap)?;
        self.meta.save_host(host).map_err(host_error)?;
        self.with_host(id)
    }

    fn delete_host(&self, id: u32) -> Result<HostInfo, MgmtError> {
        let info = self.with_host(id)?;
        self.meta.delete_host(id).map_err(host_error)?;
        Ok(info)
    }

    fn add_host_port(&self, id: u32, port: HostPortInfo) -> Result<HostInfo, MgmtError> {
        let port = HostPort {
            kind: port_kind(&port.port_type)?,
            address: port.address,
        };
        self.meta.add_host_port(id, port).map_err(host_error)?;
        self.with_host(id)
    }

    fn remove_host_port(
        &self,
        id: u32,
        port_type: &str,
        address: &str,
    ) -> Result<HostInfo, MgmtError> {
        port_kind(port_type)?;
        self.meta
            .remove_host_port(id, address)
            .map_err(host_error)?;
        self.with_host(id)
    }

    fn clusters(&self) -> Vec<ClusterInfo> {
        let state = self.meta.state();
        state
            .catalog
            .clusters
            .values()
            .map(|cluster| cluster_info(&state.catalog, cluster))
            .collect()
    }

    fn cluster(&self, id: u32) -> Result<ClusterInfo, MgmtError> {
        self.with_cluster(id)
    }

    fn create_cluster(&self, request: ClusterCreate) -> Result<ClusterInfo, MgmtError> {
        if let Some(kind) = &request.host_type {
            host_type(kind)?;
        }
        let cluster = ClusterRecord {
            id: 0,
            name: request.name,
            created_at: 0,
            updated_at: 0,
        };
        let saved = self.meta.save_cluster(cluster).map_err(host_error)?;
        self.with_cluster(saved.id)
    }

    fn update_cluster(&self, id: u32, update: ClusterUpdate) -> Result<ClusterInfo, MgmtError> {
        let mut cluster = self.meta.cluster_record(id).map_err(host_error)?;
        if let Some(name) = update.name {
            cluster.name = name;
        }
        self.meta.save_cluster(cluster).map_err(host_error)?;
        self.with_cluster(id)
    }

    fn delete_cluster(&self, id: u32) -> Result<ClusterInfo, MgmtError> {
        let info = self.with_cluster(id)?;
        self.meta.delete_cluster(id).map_err(host_error)?;
        Ok(info)
    }

    fn set_host_cluster(&self, host: u32, cluster: Option<u32>) -> Result<HostInfo, MgmtError> {
        let mut record = self.meta.host_record(host).map_err(host_error)?;
        match (record.cluster_id, cluster) {
            (Some(current), Some(wanted)) if current != wanted => {
                return Err(MgmtError::new(
                    "HOST_ALREADY_IN_CLUSTER",
                    409,
                    format!(
                        "host {:?} already belongs to cluster {current}; remove it there first",
                        record.name
                    ),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(MgmtError::new(
                    "HOST_ALREADY_IN_CLUSTER",
                    409,
                    format!("host {:?} is already in this cluster", record.name),
                ));
            }
            _ => {}
        }
        record.cluster_id = cluster;
        self.meta.save_host(record).map_err(host_error)?;
        self.with_host(host)
    }

    fn luns(&self, target: MappingTarget) -> Result<Vec<LunInfo>, MgmtError> {
        match target {
            MappingTarget::Host(id) => self.with_host(id).map(|host| host.luns),
            MappingTarget::Cluster(id) => self.with_cluster(id).map(|cluster| cluster.luns),
        }
    }

    fn map_lun(&self, target: MappingTarget, request: LunCreate) -> Result<LunInfo, MgmtError> {
        self.check_target(target)?;
        let lun = self
            .meta
            .map_lun(owner_of(target), request.volume_id, request.lun)
            .map_err(host_error)?;
        Ok(lun_info(&lun))
    }

    fn unmap_lun(
        &self,
        target: MappingTarget,
        key: u32,
        by_volume: bool,
    ) -> Result<LunInfo, MgmtError> {
        self.check_target(target)?;
        let lun = self
            .meta
            .unmap_lun(owner_of(target), key, by_volume)
            .map_err(host_error)?;
        Ok(lun_info(&lun))
    }
}

#[cfg(test)]
mod tests;
