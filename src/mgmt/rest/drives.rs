//! Handlers of the component routes: the rack tree InfiniBox clients read
//! (`GET /components`, what infinisdk's `system.components` fetches), enclosures and their
//! drives, failing (with approval) and replacing a drive, and the rebuild's status and
//! priority. Drives are named by enclosure and drive index, both from 1, as InfiniBox
//! names them (see [`crate::mgmt::drive_api`] for the mapping onto troika's drive numbers).
//!
//! Failing a drive raises `DRIVE_FAILED` through the node (its reason names the caller);
//! replacing one raises `DRIVE_REPLACED` here, naming the caller and the new device.

use serde::Serialize;

use super::list::list_response;
use super::openapi::{DRIVE, ENCLOSURE, field_names};
use super::{Call, Mgmt};
use crate::layout::HealPriority;
use crate::mgmt::api::MgmtError;
use crate::mgmt::drive_api::{
    DriveInfo, DriveReplace, EnclosureInfo, RebuildUpdate, drive_not_found, id_of_slot,
};
use crate::mgmt::http::Response;

/// The rack as InfiniBox shows it at `/components` (schema `Components`): infinisdk builds
/// its component tree from this one answer and needs every list present.
#[derive(Serialize)]
struct Components {
    rack: u32,
    enclosures: Vec<EnclosureInfo>,
    nodes: Vec<ComponentNode>,
    ups: Vec<serde_json::Value>,
    pdus: Vec<serde_json::Value>,
}

/// A controller in the rack tree, as an InfiniBox node (no ports or local drives shown).
#[derive(Serialize)]
struct ComponentNode {
    id: u32,
    name: String,
    model: String,
    state: String,
    ib_ports: Vec<serde_json::Value>,
    fc_ports: Vec<serde_json::Value>,
    eth_ports: Vec<serde_json::Value>,
    drives: Vec<serde_json::Value>,
    services: Vec<serde_json::Value>,
}

/// The drives grouped into their enclosures, in order.
fn enclosures(mgmt: &Mgmt) -> Vec<EnclosureInfo> {
    let mut enclosures: Vec<EnclosureInfo> = Vec::new();
    for drive in mgmt.api.drives() {
        if enclosures
            .last()
            .is_none_or(|enclosure| enclosure.id != drive.enclosure_index)
        {
            enclosures.push(EnclosureInfo {
                id: drive.enclosure_index,
                state: "OK".to_owned(),
                drives: Vec::new(),
            });
        }
        let enclosure = enclosures.last_mut().expect("pushed above");
        if drive.state != "ACTIVE" {
            enclosure.state = "DEGRADED".to_owned();
        }
        enclosure.drives.push(drive);
    }
    enclosures
}

fn enclosure_not_found(what: String) -> MgmtError {
    MgmtError::new(
        "ENCLOSURE_NOT_FOUND",
        404,
        format!("enclosure {what} does not exist; GET /api/rest/components/enclosures lists them"),
    )
}

/// The enclosure the path's first parameter names.
fn named_enclosure(mgmt: &Mgmt, call: &Call) -> Result<EnclosureInfo, MgmtError> {
    let id = call.id(0, enclosure_not_found)?;
    enclosures(mgmt)
        .into_iter()
        .find(|enclosure| enclosure.id == id)
        .ok_or_else(|| enclosure_not_found(id.to_string()))
}

/// The drive the path's enclosure and drive indexes name.
fn named_drive(mgmt: &Mgmt, call: &Call) -> Result<DriveInfo, MgmtError> {
    let enclosure = named_enclosure(mgmt, call)?;
    let text = call.params.get(1).copied().unwrap_or("");
    let not_found = || drive_not_found(format!("{text:?} of enclosure {}", enclosure.id));
    let index: u32 = text.parse().map_err(|_| not_found())?;
    let id = id_of_slot(enclosure.id, index).ok_or_else(not_found)?;
    enclosure
        .drives
        .into_iter()
        .find(|drive| drive.id == id)
        .ok_or_else(not_found)
}

pub fn get_components(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let model = mgmt.api.system().model;
    let nodes = mgmt
        .api
        .controllers()
        .into_iter()
        .map(|controller| ComponentNode {
            id: controller.id,
            name: controller.name,
            model: model.clone(),
            state: controller.state,
            ib_ports: Vec::new(),
            fc_ports: Vec::new(),
            eth_ports: Vec::new(),
            drives: Vec::new(),
            services: Vec::new(),
        })
        .collect();
    let components = Components {
        rack: 1,
        enclosures: enclosures(mgmt),
        nodes,
        ups: Vec::new(),
        pdus: Vec::new(),
    };
    call.object(200, &components)
}

pub fn list_enclosures(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&enclosures(mgmt), &field_names(&ENCLOSURE), &call.query)
}

pub fn get_enclosure(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &named_enclosure(mgmt, call)?)
}

pub fn list_enclosure_drives(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let enclosure = named_enclosure(mgmt, call)?;
    list_response(&enclosure.drives, &field_names(&DRIVE), &call.query)
}

/// Every drive of every enclosure, by id (troika's flat list; `troika drive ls` reads it).
pub fn list_drives(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&mgmt.api.drives(), &field_names(&DRIVE), &call.query)
}

pub fn get_drive(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &named_drive(mgmt, call)?)
}

/// Answers at once with the drive FAILED (or REBUILDING); the rebuild goes on in the
/// background and raises `REBUILD_STARTED` and `REBUILD_COMPLETED`.
pub fn fail_drive(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let drive = named_drive(mgmt, call)?;
    call.require_approval(&format!(
        "failing drive {} ({}) (it is never used again; its data is rebuilt from parity \
         into spare space and the array has less redundancy until that is done)",
        drive.id, drive.name
    ))?;
    let reason = format!("failed by user {:?} through the API", call.caller.name);
    call.object(200, &mgmt.api.fail_drive(drive.id, &reason)?)
}

/// Answers once the new device is in place (REPLACING); the copy-back goes on in the
/// background and raises `DRIVE_COPYBACK_COMPLETED`.
pub fn replace_drive(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let drive = named_drive(mgmt, call)?;
    let DriveReplace { path } = call.body()?;
    let replaced = mgmt.api.replace_drive(drive.id, &path)?;
    call.raise(
        mgmt,
        "DRIVE_REPLACED",
        replaced.id,
        format!(
            "Drive {} ({}) was replaced by {} (serial {}); its data is being copied back onto it",
            replaced.id, replaced.name, replaced.path, replaced.serial_number
        ),
    );
    call.object(200, &replaced)
}

pub fn get_rebuild(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.api.rebuild()?)
}

pub fn update_rebuild(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let RebuildUpdate { priority } = call.body()?;
    let priority = HealPriority::parse(&priority).ok_or_else(|| {
        MgmtError::bad_request(format!(
            "rebuild priority {priority:?} is not known; use LOW, MEDIUM or HIGH"
        ))
    })?;
    call.object(200, &mgmt.api.set_rebuild_priority(priority)?)
}
