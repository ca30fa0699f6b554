//! The component schemas (enclosures, drives, the rebuild) against their structs, for the
//! OpenAPI tests: the test fake has no drives, so the objects are built here; the routes
//! run on a real node in `tests/drives_api.rs`.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::mgmt::drive_api::{DriveInfo, DriveReplace, EnclosureInfo, RebuildInfo, RebuildUpdate};

fn drive() -> DriveInfo {
    DriveInfo {
        id: 3,
        drive_index: 4,
        enclosure_index: 1,
        serial_number: "TRK00000001D0003".into(),
        bytes_capacity: 96 << 20,
        state: "REBUILDING".into(),
        name: "nlsas3".into(),
        path: "/data/nlsas3.img".into(),
        rebuild_progress: 40.0,
        read_errors: 8,
        failure_reason: Some("8 read errors".into()),
    }
}

/// One object of a component schema; `None` for a schema that is not one.
pub(super) fn real_object(schema: &str) -> Option<Value> {
    let value = match schema {
        "Drive" => serde_json::to_value(drive()),
        "Enclosure" => serde_json::to_value(EnclosureInfo {
            id: 1,
            state: "DEGRADED".into(),
            drives: vec![drive()],
        }),
        "Rebuild" => serde_json::to_value(RebuildInfo {
            phase: "REBUILD".into(),
            drive_id: Some(3),
            progress: 0.4,
            segments_done: 40,
            segments: 100,
            bytes: 1 << 20,
            seconds: 2.0,
            bytes_per_second: 524_288.0,
            eta_seconds: Some(3.0),
            priority: "MEDIUM".into(),
            drives_out: 1,
        }),
        _ => return None,
    };
    Some(value.expect("a component object serializes"))
}

fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_json::from_value(body.clone()).map_err(|error| error.to_string())
}

/// The fields of `body` the struct of body schema `name` received; `None` for a schema
/// that is not a component one. Exhaustive destructurings, as in the OpenAPI test.
pub(super) fn body_fields_received(
    name: &str,
    body: &Value,
) -> Option<Result<Vec<&'static str>, String>> {
    match name {
        "DriveReplace" => Some(parse(body).map(|DriveReplace { path: _ }| vec!["path"])),
        "RebuildUpdate" => Some(parse(body).map(|RebuildUpdate { priority: _ }| vec!["priority"])),
        _ => None,
    }
}
