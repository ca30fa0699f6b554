//! The host, cluster and mapping schemas against their structs, for the OpenAPI tests
//! (the test fake does not model hosts; the routes themselves run on a real node in
//! `node::host_admin::tests`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::mgmt::api::{
    ClusterCreate, ClusterHost, ClusterHostAdd, ClusterInfo, ClusterUpdate, HostCreate, HostInfo,
    HostPortInfo, HostUpdate, LunCreate, LunInfo,
};

fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_json::from_value(body.clone()).map_err(|error| error.to_string())
}

fn present(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
    fields
        .iter()
        .filter(|(_, there)| *there)
        .map(|(field, _)| *field)
        .collect()
}

/// The fields of `body` that the struct of body schema `name` received; `None` for a
/// schema that is not a host one. Exhaustive destructurings, as in the OpenAPI test.
pub(super) fn body_fields_received(
    name: &str,
    body: &Value,
) -> Option<Result<Vec<&'static str>, String>> {
    let received = || -> Result<Vec<&'static str>, String> {
        Ok(match name {
            "HostCreate" => {
                let HostCreate {
                    name: _,
                    ports,
                    host_type,
                    optimized,
                    security_method,
                    security_chap_inbound_username,
                    security_chap_inbound_secret,
                    security_chap_outbound_username,
                    security_chap_outbound_secret,
                } = parse(body)?;
                present(&[
                    ("name", true),
                    ("ports", ports.is_some()),
                    ("host_type", host_type.is_some()),
                    ("optimized", optimized.is_some()),
                    ("security_method", security_method.is_some()),
                    (
                        "security_chap_inbound_username",
                        security_chap_inbound_username.is_some(),
                    ),
                    (
                        "security_chap_inbound_secret",
                        security_chap_inbound_secret.is_some(),
                    ),
                    (
                        "security_chap_outbound_username",
                        security_chap_outbound_username.is_some(),
                    ),
                    (
                        "security_chap_outbound_secret",
                        security_chap_outbound_secret.is_some(),
                    ),
                ])
            }
            "HostUpdate" => {
                let HostUpdate {
                    name,
                    host_type,
                    optimized,
                    security_method,
                    security_chap_inbound_username,
                    security_chap_inbound_secret,
                    security_chap_outbound_username,
                    security_chap_outbound_secret,
                } = parse(body)?;
                present(&[
                    ("name", name.is_some()),
                    ("host_type", host_type.is_some()),
                    ("optimized", optimized.is_some()),
                    ("security_method", security_method.is_some()),
                    (
                        "security_chap_inbound_username",
                        security_chap_inbound_username.is_some(),
                    ),
                    (
                        "security_chap_inbound_secret",
                        security_chap_inbound_secret.is_some(),
                    ),
                    (
                        "security_chap_outbound_username",
                        security_chap_outbound_username.is_some(),
                    ),
                    (
                        "security_chap_outbound_secret",
                        security_chap_outbound_secret.is_some(),
                    ),
                ])
            }
            "HostPort" => {
                let HostPortInfo {
                    port_type: _,
                    address: _,
                } = parse(body)?;
                present(&[("type", true), ("address", true)])
            }
            "LunCreate" => {
                let LunCreate { volume_id: _, lun } = parse(body)?;
                present(&[("volume_id", true), ("lun", lun.is_some())])
            }
            "ClusterCreate" => {
                let ClusterCreate { name: _, host_type } = parse(body)?;
                present(&[("name", true), ("host_type", host_type.is_some())])
            }
            "ClusterUpdate" => {
                let ClusterUpdate { name } = parse(body)?;
                present(&[("name", name.is_some())])
            }
            "ClusterHost" => {
                let ClusterHostAdd { id: _ } = parse(body)?;
                present(&[("id", true)])
            }
            other => return Err(format!("not a host schema: {other}")),
        })
    };
    let known = [
        "HostCreate",
        "HostUpdate",
        "HostPort",
        "LunCreate",
        "ClusterCreate",
        "ClusterUpdate",
        "ClusterHost",
    ];
    known.contains(&name).then(received)
}

fn lun() -> LunInfo {
    LunInfo {
        id: 1,
        lun: 1,
        volume_id: 1,
        host_id: 1,
        host_cluster_id: 0,
        clustered: false,
    }
}

/// The JSON of a real host, cluster or mapping object (the node's own structs).
pub(super) fn real_object(schema: &str) -> Option<Value> {
    let value = match schema {
        "Host" => serde_json::to_value(HostInfo {
            id: 1,
            name: "h".into(),
            ports: vec![HostPortInfo {
                port_type: "ISCSI".into(),
                address: "iqn.2000-01.com.example:a".into(),
            }],
            ports_count: 1,
            luns: vec![lun()],
            luns_count: 1,
            host_cluster_id: 0,
            host_type: "default".into(),
            san_client_type: "HOST".into(),
            security_method: "NONE".into(),
            security_chap_inbound_username: String::new(),
            security_chap_has_inbound_secret: false,
            security_chap_outbound_username: String::new(),
            security_chap_has_outbound_secret: false,
            optimized: true,
            created_at: 0,
            updated_at: 0,
        }),
        "HostCluster" => serde_json::to_value(ClusterInfo {
            id: 1,
            name: "c".into(),
            hosts: vec![ClusterHost {
                id: 1,
                name: "h".into(),
            }],
            hosts_count: 1,
            luns: Vec::new(),
            luns_count: 0,
            host_type: "default".into(),
            san_client_type: "CLUSTER".into(),
            created_at: 0,
            updated_at: 0,
        }),
        "Lun" => serde_json::to_value(lun()),
        _ => return None,
    };
    Some(value.expect("host objects serialize"))
}
