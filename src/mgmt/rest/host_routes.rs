//! Handlers of hosts (`/api/rest/hosts`), host clusters (`/api/rest/clusters`) and their
//! LUN mappings, in InfiniBox's shapes: ports are `{type, address}`, a mapping is
//! `POST …/luns {volume_id[, lun]}` and is removed by `DELETE …/luns/lun/{lun}` or
//! `…/luns/volume_id/{volume_id}`, a cluster gains a host by `POST …/hosts {id}`.
//!
//! Hosts and clusters span pools, so only an ADMIN creates, changes or deletes them and
//! maps datasets to them; everyone signed in may read them. CHAP secrets are write-only:
//! no answer and no event carries them. Every change raises an event.

use super::list::list_response;
use super::openapi::{CLUSTER, HOST, LUN, field_names};
use super::{Call, Mgmt};
use crate::mgmt::api::{
    ClusterCreate, ClusterHostAdd, ClusterInfo, ClusterUpdate, HostCreate, HostInfo, HostPortInfo,
    HostUpdate, LunCreate, LunInfo, MappingTarget, MgmtError,
};
use crate::mgmt::http::Response;

fn host_not_found(what: String) -> MgmtError {
    MgmtError::new("HOST_NOT_FOUND", 404, format!("host {what} does not exist"))
}

fn cluster_not_found(what: String) -> MgmtError {
    MgmtError::new(
        "CLUSTER_NOT_FOUND",
        404,
        format!("host cluster {what} does not exist"),
    )
}

fn lun_not_found(what: String) -> MgmtError {
    MgmtError::new("LUN_NOT_FOUND", 404, format!("LUN {what} is not mapped"))
}

fn path_host(mgmt: &Mgmt, call: &Call) -> Result<HostInfo, MgmtError> {
    mgmt.api.host(call.id(0, host_not_found)?)
}

fn path_cluster(mgmt: &Mgmt, call: &Call) -> Result<ClusterInfo, MgmtError> {
    mgmt.api.cluster(call.id(0, cluster_not_found)?)
}

/// The host or cluster the path names, by the route's first segment.
fn path_target(mgmt: &Mgmt, call: &Call) -> Result<(MappingTarget, String), MgmtError> {
    if call.request.path().starts_with("/api/rest/clusters") {
        let cluster = path_cluster(mgmt, call)?;
        Ok((
            MappingTarget::Cluster(cluster.id),
            format!("cluster {:?}", cluster.name),
        ))
    } else {
        let host = path_host(mgmt, call)?;
        Ok((
            MappingTarget::Host(host.id),
            format!("host {:?}", host.name),
        ))
    }
}

fn target_id(target: MappingTarget) -> u32 {
    match target {
        MappingTarget::Host(id) | MappingTarget::Cluster(id) => id,
    }
}

fn describe_host(host: &HostInfo) -> String {
    format!(
        "host {:?} ({} ports, security {})",
        host.name, host.ports_count, host.security_method
    )
}

pub fn list_hosts(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&mgmt.api.hosts(), &field_names(&HOST), &call.query)
}

pub fn get_host(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &path_host(mgmt, call)?)
}

pub fn create_host(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: HostCreate = call.body()?;
    let host = mgmt.api.create_host(request)?;
    call.raise(
        mgmt,
        "HOST_CREATED",
        host.id,
        format!("{} created", describe_host(&host)),
    );
    call.object(201, &host)
}

pub fn update_host(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let before = path_host(mgmt, call)?;
    let update: HostUpdate = call.body()?;
    let host = mgmt.api.update_host(before.id, update)?;
    call.raise(
        mgmt,
        "HOST_UPDATED",
        host.id,
        format!("{} changed", describe_host(&host)),
    );
    call.object(200, &host)
}

pub fn delete_host(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let host = path_host(mgmt, call)?;
    call.require_approval("deleting a host")?;
    let deleted = mgmt.api.delete_host(host.id)?;
    call.raise(
        mgmt,
        "HOST_DELETED",
        host.id,
        format!(
            "host {:?} deleted with its {} own LUN mappings",
            host.name,
            host.luns.iter().filter(|lun| !lun.clustered).count()
        ),
    );
    call.object(200, &deleted)
}

pub fn add_port(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let host = path_host(mgmt, call)?;
    let port: HostPortInfo = call.body()?;
    let address = port.address.clone();
    let updated = mgmt.api.add_host_port(host.id, port)?;
    call.raise(
        mgmt,
        "HOST_PORT_ADDED",
        host.id,
        format!("initiator {address} added to host {:?}", host.name),
    );
    call.object(201, &updated)
}

pub fn remove_port(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let host = path_host(mgmt, call)?;
    let port_type = call.params.get(1).copied().unwrap_or("");
    // An NBD identity may hold characters a path cannot ('/', '?', spaces): clients
    // percent-encode them.
    let address = &super::list::decode_path_segment(call.params.get(2).copied().unwrap_or(""));
    let updated = mgmt.api.remove_host_port(host.id, port_type, address)?;
    call.raise(
        mgmt,
        "HOST_PORT_REMOVED",
        host.id,
        format!("initiator {address} removed from host {:?}", host.name),
    );
    call.object(200, &updated)
}

pub fn list_luns(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let (target, _) = path_target(mgmt, call)?;
    list_response(&mgmt.api.luns(target)?, &field_names(&LUN), &call.query)
}

pub fn get_lun(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let (target, name) = path_target(mgmt, call)?;
    let lun = call.id(1, lun_not_found)?;
    let found: Option<LunInfo> = mgmt
        .api
        .luns(target)?
        .into_iter()
        .find(|mapping| mapping.lun == lun);
    match found {
        Some(mapping) => call.object(200, &mapping),
        None => Err(lun_not_found(format!("{lun} of {name}"))),
    }
}

pub fn map_lun(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let (target, name) = path_target(mgmt, call)?;
    let request: LunCreate = call.body()?;
    let volume = mgmt.api.volume(request.volume_id)?;
    let lun = mgmt.api.map_lun(target, request)?;
    call.raise(
        mgmt,
        "LUN_MAPPED",
        target_id(target),
        format!(
            "{} {:?} mapped to {name} as LUN {}",
            if volume.volume_type == "SNAPSHOT" {
                "snapshot"
            } else {
                "volume"
            },
            volume.name,
            lun.lun
        ),
    );
    call.object(201, &lun)
}

fn unmap(mgmt: &Mgmt, call: &Call, by_volume: bool) -> Result<Response, MgmtError> {
    let (target, name) = path_target(mgmt, call)?;
    let key = call.id(
        1,
        if by_volume {
            MgmtError::volume_not_found
        } else {
            lun_not_found
        },
    )?;
    let lun = mgmt.api.unmap_lun(target, key, by_volume)?;
    call.raise(
        mgmt,
        "LUN_UNMAPPED",
        target_id(target),
        format!(
            "volume {} unmapped from {name} (LUN {})",
            lun.volume_id, lun.lun
        ),
    );
    call.object(200, &lun)
}

pub fn unmap_by_lun(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    unmap(mgmt, call, false)
}

pub fn unmap_by_volume(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    unmap(mgmt, call, true)
}

pub fn list_clusters(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&mgmt.api.clusters(), &field_names(&CLUSTER), &call.query)
}

pub fn get_cluster(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &path_cluster(mgmt, call)?)
}

pub fn create_cluster(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: ClusterCreate = call.body()?;
    let cluster = mgmt.api.create_cluster(request)?;
    call.raise(
        mgmt,
        "CLUSTER_CREATED",
        cluster.id,
        format!("host cluster {:?} created", cluster.name),
    );
    call.object(201, &cluster)
}

pub fn update_cluster(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let before = path_cluster(mgmt, call)?;
    let update: ClusterUpdate = call.body()?;
    let cluster = mgmt.api.update_cluster(before.id, update)?;
    call.raise(
        mgmt,
        "CLUSTER_UPDATED",
        cluster.id,
        format!("host cluster {:?} renamed {:?}", before.name, cluster.name),
    );
    call.object(200, &cluster)
}

pub fn delete_cluster(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cluster = path_cluster(mgmt, call)?;
    call.require_approval("deleting a host cluster")?;
    let deleted = mgmt.api.delete_cluster(cluster.id)?;
    call.raise(
        mgmt,
        "CLUSTER_DELETED",
        cluster.id,
        format!(
            "host cluster {:?} deleted with its {} LUN mappings; its {} hosts stay",
            cluster.name, cluster.luns_count, cluster.hosts_count
        ),
    );
    call.object(200, &deleted)
}

pub fn add_cluster_host(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cluster = path_cluster(mgmt, call)?;
    let request: ClusterHostAdd = call.body()?;
    let host = mgmt.api.set_host_cluster(request.id, Some(cluster.id))?;
    call.raise(
        mgmt,
        "CLUSTER_HOST_ADDED",
        cluster.id,
        format!(
            "host {:?} joined host cluster {:?}",
            host.name, cluster.name
        ),
    );
    call.object(201, &mgmt.api.cluster(cluster.id)?)
}

pub fn remove_cluster_host(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cluster = path_cluster(mgmt, call)?;
    let host = mgmt.api.host(call.id(1, host_not_found)?)?;
    if host.host_cluster_id != cluster.id {
        return Err(MgmtError::new(
            "HOST_NOT_IN_CLUSTER",
            409,
            format!(
                "host {:?} is not in host cluster {:?}",
                host.name, cluster.name
            ),
        ));
    }
    mgmt.api.set_host_cluster(host.id, None)?;
    call.raise(
        mgmt,
        "CLUSTER_HOST_REMOVED",
        cluster.id,
        format!("host {:?} left host cluster {:?}", host.name, cluster.name),
    );
    call.object(200, &mgmt.api.cluster(cluster.id)?)
}
