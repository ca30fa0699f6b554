//! The OpenAPI description against the route table, the objects the API answers and the
//! body structs it accepts; every documented route answers an admin.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Credentials, Node, PASSWORD, sorted_keys};
use crate::hw::faults::RawFaultRule;
use crate::io::faults::{FaultEffect, FaultOp, FaultRule, FaultSpec, FaultTrigger, FiredFault};
use crate::mgmt::api::{PoolCreate, PoolUpdate, VolumeCreate, VolumeUpdate};
use crate::mgmt::rest::faults::{FaultCreate, FaultInfo, FiredFaultInfo, PowerCutOptions};
use crate::mgmt::rest::openapi::{self, BODIES, OBJECTS, Schema, field_names};
use crate::mgmt::rest::routes::{Answer, ROUTES};
use crate::mgmt::tests::memory::GIB;
use crate::mgmt::users::{DEFAULT_ADMIN_NAME, UserCreate, UserUpdate};

fn sorted_fields(schema: &Schema) -> Vec<String> {
    field_names(schema)
        .into_iter()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn openapi_describes_exactly_the_routes() {
    let document = openapi::document();
    let mut described = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(operation["responses"].is_object(), "{method} {path}");
            described.insert((path.clone(), method.to_ascii_uppercase()));
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.path.to_owned(), route.method.to_owned()))
        .collect();
    assert_eq!(described, routed);
    // Every schema a route names is described.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for route in ROUTES {
        for name in route.body.into_iter().chain(match route.answer {
            Answer::Object(name) | Answer::List(name) => Some(name),
            _ => None,
        }) {
            assert!(
                schemas.contains_key(name),
                "{} {}: {name}",
                route.method,
                route.path
            );
        }
    }
}

/// The JSON of one real object of each schema in [`OBJECTS`], as the API answers it.
fn real_object(node: &Node, schema: &str) -> Value {
    let get = |path: &str| node.admin_ok("GET", path, None)["result"].clone();
    let first = |path: &str| get(path)[0].clone();
    match schema {
        "System" => get("/api/rest/system"),
        "Feature" => first("/api/rest/_features"),
        "Pool" => first("/api/rest/pools"),
        "Volume" => first("/api/rest/volumes"),
        "Controller" => first("/api/rest/controllers"),
        "User" => first("/api/rest/users"),
        "Event" => first("/api/rest/events"),
        "EventTypes" => get("/api/rest/events/types"),
        "Components" => get("/api/rest/components"),
        // The test fake does not model groups or snapshots: the node's own objects.
        "ConsistencyGroup" => serde_json::to_value(crate::mgmt::api::CgInfo {
            id: 1,
            name: "cg".into(),
            pool_id: 1,
            pool_name: "p".into(),
            cg_type: "MASTER".into(),
            parent_id: 0,
            members_count: 0,
            has_children: false,
            lock_expires_at: None,
            lock_state: "UNLOCKED".into(),
            is_replicated: false,
            created_at: 0,
            updated_at: 0,
        })
        .unwrap(),
        "SnapshotPolicy" => serde_json::to_value(crate::mgmt::api::PolicyInfo {
            id: 1,
            name: "hourly".into(),
            enabled: true,
            schedules: Vec::new(),
            assets: Vec::new(),
            assets_count: 0,
            snapshots_count: 0,
            created_at: 0,
            updated_at: 0,
        })
        .unwrap(),
        "Replica" => json!({"id": 1, "local_cg_id": 1, "entity_type": "CONSISTENCY_GROUP"}),
        "ChangedBlocks" => serde_json::to_value(crate::mgmt::api::ChangedBlocks {
            volume_id: 2,
            base_id: 1,
            block_size: 4096,
            changed_bytes: 0,
            ranges: Vec::new(),
        })
        .unwrap(),
        // The test fake has no devices: the node's own objects.
        "Fault" => serde_json::to_value(FaultInfo::from(&FaultRule {
            id: 1,
            spec: FaultSpec {
                device: "nlsas3".into(),
                op: FaultOp::Write,
                effect: FaultEffect::Eio,
                trigger: FaultTrigger::Nth(3),
                seed: 7,
            },
            matched: 2,
            fired: 0,
        }))
        .unwrap(),
        "FiredFault" => serde_json::to_value(FiredFaultInfo::from(&FiredFault {
            rule: 1,
            device: "nlsas3".into(),
            op: FaultOp::Write,
            sequence: 3,
            offset: 4096,
            len: 65536,
            effect: "EIO".into(),
        }))
        .unwrap(),
        // The test fake has no array: the node's own object.
        "Scrub" => serde_json::to_value(crate::mgmt::api::ScrubInfo {
            state: "IDLE".into(),
            started_at: Some(1),
            last_completed_at: Some(2),
            next_run_at: Some(3),
            ..Default::default()
        })
        .unwrap(),
        "FaultsCleared" => json!({"cleared": 0}),
        "PowerCut" => json!({"seed": 7}),
        other => super::host_schemas::real_object(other)
            .or_else(|| super::drive_schemas::real_object(other))
            .unwrap_or_else(|| panic!("schema {other} has no real object in this test; add one")),
    }
}

#[test]
fn every_object_schema_matches_what_the_api_answers() {
    let node = Node::new();
    let pool = node.create_pool("p", GIB);
    node.create_volume("v", pool, GIB);
    for schema in OBJECTS {
        let object = real_object(&node, schema.name);
        assert_eq!(
            sorted_keys(&object),
            sorted_fields(schema),
            "schema {} against {object}",
            schema.name
        );
    }
    // The objects inside lists have the same keys as the single ones.
    let single = node.admin_ok("GET", &format!("/api/rest/pools/{pool}"), None);
    assert_eq!(
        sorted_keys(&single["result"]),
        sorted_fields(&openapi::POOL)
    );
}

/// A plausible value of a body field.
fn sample(field: &str, kind: &str) -> Value {
    match (field, kind) {
        ("role", _) => json!("POOL_ADMIN"),
        ("provtype", _) => json!("THICK"),
        ("password", _) => json!(PASSWORD),
        ("email", _) => json!("ops@example.com"),
        (_, "string") => json!("name1"),
        (_, "integer") => json!(50),
        (_, "boolean") => json!(true),
        (_, "number") => json!(0.5),
        (_, "[integer]") => json!([1]),
        ("entities", "[object]") => json!([{"id": 1}]),
        ("ports", "[object]") => json!([{"type": "ISCSI", "address": "iqn.2000-01.com.example:a"}]),
        ("schedules", "[object]") => json!([{"name": "hourly", "interval": 3600, "retention": 24}]),
        (field, kind) => panic!("no sample for {field}: {kind}"),
    }
}

fn full_body(schema: &Schema) -> Value {
    let fields = schema
        .fields
        .iter()
        .map(|(field, kind)| ((*field).to_owned(), sample(field, kind)))
        .collect();
    Value::Object(fields)
}

fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_json::from_value(body.clone()).map_err(|error| error.to_string())
}

/// Deserializes `body` as the struct of body schema `name` and returns the names of the
/// fields that arrived. The destructurings are exhaustive, so a field added to a struct
/// fails to compile here until it is listed (and then this test wants it in the schema).
fn fields_received(name: &str, body: &Value) -> Result<Vec<&'static str>, String> {
    fn present(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
        fields
            .iter()
            .filter(|(_, there)| *there)
            .map(|(field, _)| *field)
            .collect()
    }
    Ok(match name {
        "UserCreate" => {
            let UserCreate {
                name: _,
                password: _,
                role: _,
                email,
                enabled,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("password", true),
                ("role", true),
                ("email", email.is_some()),
                ("enabled", enabled.is_some()),
            ])
        }
        "UserUpdate" => {
            let UserUpdate {
                name,
                password,
                role,
                email,
                enabled,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("password", password.is_some()),
                ("role", role.is_some()),
                ("email", email.is_some()),
                ("enabled", enabled.is_some()),
            ])
        }
        "PoolCreate" => {
            let PoolCreate {
                name: _,
                physical_capacity: _,
                virtual_capacity,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("physical_capacity", true),
                ("virtual_capacity", virtual_capacity.is_some()),
            ])
        }
        "PoolUpdate" => {
            let PoolUpdate {
                name,
                physical_capacity,
                virtual_capacity,
                physical_capacity_warning,
                physical_capacity_critical,
                ssd_enabled,
                owners,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("physical_capacity", physical_capacity.is_some()),
                ("virtual_capacity", virtual_capacity.is_some()),
                (
                    "physical_capacity_warning",
                    physical_capacity_warning.is_some(),
                ),
                (
                    "physical_capacity_critical",
                    physical_capacity_critical.is_some(),
                ),
                ("ssd_enabled", ssd_enabled.is_some()),
                ("owners", owners.is_some()),
            ])
        }
        "VolumeCreate" => {
            let VolumeCreate {
                name: _,
                pool_id: _,
                size: _,
                provtype,
                ssd_enabled,
                write_protected,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("pool_id", true),
                ("size", true),
                ("provtype", provtype.is_some()),
                ("ssd_enabled", ssd_enabled.is_some()),
                ("write_protected", write_protected.is_some()),
            ])
        }
        "VolumeUpdate" => {
            let VolumeUpdate {
                name,
                size,
                write_protected,
                ssd_enabled,
                lock_expires_at,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("size", size.is_some()),
                ("write_protected", write_protected.is_some()),
                ("ssd_enabled", ssd_enabled.is_some()),
                ("lock_expires_at", lock_expires_at.is_some()),
            ])
        }
        "SnapshotCreate" => {
            let crate::mgmt::api::SnapshotCreate {
                name,
                parent_id: _,
                write_protected,
                lock_expires_at,
                ssd_enabled,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("parent_id", true),
                ("write_protected", write_protected.is_some()),
                ("lock_expires_at", lock_expires_at.is_some()),
                ("ssd_enabled", ssd_enabled.is_some()),
            ])
        }
        "GroupSnapshot" => {
            let crate::mgmt::rest::snapshots::GroupSnapshot {
                snap_prefix,
                snap_suffix,
                entities,
            } = parse(body)?;
            present(&[
                ("snap_prefix", snap_prefix.is_some()),
                ("snap_suffix", snap_suffix.is_some()),
                ("entities", !entities.is_empty()),
            ])
        }
        "Source" => {
            let source: crate::mgmt::api::SourceRef = parse(body)?;
            present(&[("source_id", source.id() > 0)])
        }
        "CgCreate" => {
            let crate::mgmt::api::CgCreate {
                name,
                pool_id,
                parent_id,
                snap_prefix,
                snap_suffix,
                write_protected,
                lock_expires_at,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("pool_id", pool_id.is_some()),
                ("parent_id", parent_id.is_some()),
                ("snap_prefix", snap_prefix.is_some()),
                ("snap_suffix", snap_suffix.is_some()),
                ("write_protected", write_protected.is_some()),
                ("lock_expires_at", lock_expires_at.is_some()),
            ])
        }
        "PolicyCreate" => {
            let crate::mgmt::api::PolicyCreate {
                name: _,
                enabled,
                schedules: _,
                assets,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("enabled", enabled.is_some()),
                ("schedules", true),
                ("assets", assets.is_some()),
            ])
        }
        "PolicyUpdate" => {
            let crate::mgmt::api::PolicyUpdate {
                name,
                enabled,
                schedules,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("enabled", enabled.is_some()),
                ("schedules", schedules.is_some()),
            ])
        }
        "PolicyAsset" => {
            let crate::mgmt::api::PolicyAsset { entity_id: _ } = parse(body)?;
            present(&[("entity_id", true)])
        }
        "CgUpdate" => {
            let crate::mgmt::api::CgUpdate { name } = parse(body)?;
            present(&[("name", name.is_some())])
        }
        "CgMember" => {
            let crate::mgmt::api::CgMemberAdd { dataset_id: _ } = parse(body)?;
            present(&[("dataset_id", true)])
        }
        "FaultCreate" => {
            let FaultCreate {
                device: _,
                rule:
                    RawFaultRule {
                        device: _,
                        op: _,
                        error,
                        delay_ms,
                        stall_ms,
                        tear,
                        nth,
                        probability,
                        seed,
                    },
            } = parse(body)?;
            present(&[
                ("device", true),
                ("op", true),
                ("error", error.is_some()),
                ("delay_ms", delay_ms.is_some()),
                ("stall_ms", stall_ms.is_some()),
                ("tear", tear.is_some()),
                ("nth", nth.is_some()),
                ("probability", probability.is_some()),
                ("seed", seed.is_some()),
            ])
        }
        "PowerCutOptions" => {
            let PowerCutOptions { seed } = parse(body)?;
            present(&[("seed", seed.is_some())])
        }
        other => match super::host_schemas::body_fields_received(other, body)
            .or_else(|| super::drive_schemas::body_fields_received(other, body))
        {
            Some(received) => received?,
            None => panic!("body schema {other} has no struct in this test; add one"),
        },
    })
}

/// Bodies whose structs ignore unknown fields rather than refuse them.
const LENIENT_BODIES: &[&str] = &[
    "PoolCreate",
    "VolumeCreate",
    // infinisdk sends more fields than troika reads in these.
    "SnapshotCreate",
    "GroupSnapshot",
    "Source",
    "CgCreate",
    "CgMember",
    // infinisdk sends more fields than troika reads in these.
    "HostCreate",
    "HostPort",
    "LunCreate",
    "ClusterCreate",
    "ClusterHost",
];
/// Routes the test fake does not model; `tests/snapshots.rs` calls each of them on the
/// real node.
const NODE_ONLY_PATHS: &[&str] = &[
    "/api/rest/volumes/group_snapshot",
    "/api/rest/volumes/{id}/restore",
    "/api/rest/volumes/{id}/refresh",
    "/api/rest/volumes/{id}/changed_blocks",
    "/api/rest/cgs",
    "/api/rest/cgs/{id}",
    "/api/rest/cgs/{id}/members",
    "/api/rest/cgs/{id}/members/{volume_id}",
    "/api/rest/cgs/{id}/restore",
    "/api/rest/cgs/{id}/refresh",
    "/api/rest/snapshot_policies",
    "/api/rest/snapshot_policies/{id}",
    "/api/rest/snapshot_policies/{id}/assets",
    "/api/rest/snapshot_policies/{id}/assets/{entity_id}",
    // The scrub: `tests/scrub.rs` runs them on a node.
    "/api/rest/components/scrub",
    "/api/rest/components/scrub/start",
    "/api/rest/components/scrub/stop",
    // Hosts, clusters and mappings: `tests/host_api` in this directory runs them on a node.
    "/api/rest/hosts",
    "/api/rest/hosts/{id}",
    "/api/rest/hosts/{id}/ports",
    "/api/rest/hosts/{id}/ports/{type}/{address}",
    "/api/rest/hosts/{id}/luns",
    "/api/rest/hosts/{id}/luns/{lun}",
    "/api/rest/hosts/{id}/luns/lun/{lun}",
    "/api/rest/hosts/{id}/luns/volume_id/{volume_id}",
    "/api/rest/clusters",
    "/api/rest/clusters/{id}",
    "/api/rest/clusters/{id}/hosts",
    "/api/rest/clusters/{id}/hosts/{host_id}",
    "/api/rest/clusters/{id}/luns",
    "/api/rest/clusters/{id}/luns/{lun}",
    "/api/rest/clusters/{id}/luns/lun/{lun}",
    "/api/rest/clusters/{id}/luns/volume_id/{volume_id}",
    // The fake has no devices (every fault route answers FAULTS_UNAVAILABLE, see
    // `faults.rs` here); tests/mgmt_roles.rs and tests/cli.rs inject into a node.
    "/api/rest/faults",
    "/api/rest/faults/log",
    "/api/rest/faults/{id}",
    "/api/rest/faults/power_cut",
    // The fake has no drives (its enclosure list is empty, its rebuild NOT_SUPPORTED);
    // tests/drives_api.rs and tests/mgmt_roles.rs call these on a node.
    "/api/rest/components/enclosures/{enclosure}",
    "/api/rest/components/enclosures/{enclosure}/drives",
    "/api/rest/components/enclosures/{enclosure}/drives/{drive}",
    "/api/rest/components/enclosures/{enclosure}/drives/{drive}/fail",
    "/api/rest/components/enclosures/{enclosure}/drives/{drive}/replace",
    "/api/rest/components/rebuild",
];
/// Bodies whose structs are private to their handler, checked through [`handle`].
const HANDLER_BODIES: &[&str] = &["Login", "PoolOwner"];

#[test]
fn every_body_schema_lists_exactly_what_its_struct_accepts() {
    for schema in BODIES {
        if HANDLER_BODIES.contains(&schema.name) {
            continue;
        }
        let body = full_body(schema);
        let mut received = fields_received(schema.name, &body)
            .unwrap_or_else(|error| panic!("{}: {body} is refused: {error}", schema.name));
        received.sort_unstable();
        let mut listed = field_names(schema);
        listed.sort_unstable();
        assert_eq!(received, listed, "{}", schema.name);

        let mut required_only = serde_json::Map::new();
        for field in schema.required {
            required_only.insert((*field).to_owned(), body[*field].clone());
        }
        let mut required_only = Value::Object(required_only);
        let received = fields_received(schema.name, &required_only)
            .unwrap_or_else(|error| panic!("{}: only the required fields: {error}", schema.name));
        assert_eq!(received, schema.required, "{}", schema.name);
        for field in schema.required {
            let value = required_only
                .as_object_mut()
                .unwrap()
                .remove(*field)
                .unwrap();
            assert!(
                fields_received(schema.name, &required_only).is_err(),
                "{} accepts a body without {field}",
                schema.name
            );
            required_only[*field] = value;
        }

        let mut extra = body.clone();
        extra["unexpected_field"] = json!(1);
        let outcome = fields_received(schema.name, &extra);
        if LENIENT_BODIES.contains(&schema.name) {
            assert!(outcome.is_ok(), "{}: {outcome:?}", schema.name);
        } else {
            let error = outcome.expect_err(schema.name);
            assert!(
                error.contains("unexpected_field"),
                "{}: {error}",
                schema.name
            );
        }
    }
}

#[test]
fn the_handler_bodies_accept_their_schema_and_refuse_more() {
    let node = Node::new();
    let schema = |name: &str| BODIES.iter().find(|schema| schema.name == name).unwrap();
    for name in HANDLER_BODIES {
        assert!(BODIES.iter().any(|schema| schema.name == *name), "{name}");
    }

    let mut login = full_body(schema("Login"));
    login["username"] = json!(DEFAULT_ADMIN_NAME);
    login["password"] = json!(node.fixture.admin_password);
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login.clone()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    login["unexpected_field"] = json!(1);
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login),
    );
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    assert!(
        reply.message().contains("unexpected_field"),
        "{}",
        reply.message()
    );
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(json!({"username": DEFAULT_ADMIN_NAME})),
    );
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));

    let pool = node.create_pool("p", GIB);
    let (user, _) = node.create_user("ops", "POOL_ADMIN");
    let owners = format!("/api/rest/pools/{pool}/owners");
    let mut owner = full_body(schema("PoolOwner"));
    owner["user_id"] = json!(user);
    let reply = node.send(&node.admin, "POST", &owners, Some(owner.clone()));
    assert_eq!(reply.status, 201, "{}", reply.body);
    owner["unexpected_field"] = json!(1);
    let reply = node.send(&node.admin, "POST", &owners, Some(owner));
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    assert!(
        reply.message().contains("unexpected_field"),
        "{}",
        reply.message()
    );
}

/// A body of schema `schema` that its handler accepts, given the objects it acts on.
fn plausible_body(schema: &str, serial: usize, user: u64, pool: u64, password: &str) -> Value {
    match schema {
        "Login" => json!({"username": DEFAULT_ADMIN_NAME, "password": password}),
        "UserCreate" => {
            json!({"name": format!("new{serial}"), "password": PASSWORD, "role": "READ_ONLY"})
        }
        "UserUpdate" => json!({"email": "ops@example.com"}),
        "PoolCreate" => json!({"name": format!("new{serial}"), "physical_capacity": GIB}),
        "PoolUpdate" => json!({"name": format!("renamed{serial}")}),
        "PoolOwner" => json!({"user_id": user}),
        "VolumeCreate" => json!({"name": format!("new{serial}"), "pool_id": pool, "size": GIB}),
        "VolumeUpdate" => json!({"size": 2 * GIB}),
        other => panic!("no plausible body for {other}"),
    }
}

#[test]
fn every_documented_route_answers_an_admin() {
    let node = Node::new();
    let password = node.fixture.admin_password.clone();
    for (serial, route) in ROUTES.iter().enumerate() {
        if NODE_ONLY_PATHS.contains(&route.path) {
            continue;
        }
        // Fresh objects for each route, so deleting routes find theirs.
        let (user, _) = node.create_user(&format!("owner{serial}"), "POOL_ADMIN");
        let pool = node.create_pool(&format!("empty{serial}"), GIB);
        node.admin_ok(
            "POST",
            &format!("/api/rest/pools/{pool}/owners"),
            Some(json!({"user_id": user})),
        );
        let full = node.create_pool(&format!("full{serial}"), 4 * GIB);
        let volume = node.create_volume(&format!("vol{serial}"), full, GIB);
        let event = node.fixture.mgmt.events.last_id();
        let id = if route.path.starts_with("/api/rest/users/") {
            user
        } else if route.path.starts_with("/api/rest/pools/") {
            pool
        } else if route.path.starts_with("/api/rest/volumes/") {
            volume
        } else if route.path.starts_with("/api/rest/controllers/") {
            // Failing comes before recovering in the table, so recovering finds it FAILED.
            1
        } else {
            event
        };
        let target = route
            .path
            .replace("{id}", &id.to_string())
            .replace("{user_id}", &user.to_string());
        let target = if route.approval {
            format!("{target}?approved=true")
        } else {
            target
        };
        let body = route
            .body
            .map(|schema| plausible_body(schema, serial, user, full, &password));
        let reply = node.send(&node.admin, route.method, &target, body);
        assert_eq!(
            reply.status, route.status,
            "{} {target}: {}",
            route.method, reply.body
        );
    }
}
