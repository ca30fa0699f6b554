//! Handlers of the controller routes: list and show the controllers, fail one (with
//! approval) and recover it. Controllers are named by their number, 1 to the model's count.
//!
//! Unlike the pool and volume handlers these raise no event: failing and recovering are
//! state changes of the node itself, and the node raises `CONTROLLER_FAILED`,
//! `CONTROLLER_RECOVERED` and `REDUNDANCY_RESTORED` when they happen, whoever caused
//! them. A refused caller still gets `ACCESS_DENIED` from the role check.

use super::list::list_response;
use super::openapi::{CONTROLLER, field_names};
use super::{Call, Mgmt};
use crate::mgmt::api::{ControllerInfo, MgmtError};
use crate::mgmt::http::Response;

/// The controller the path names, as it is now; a non-number or an unknown number is
/// `CONTROLLER_NOT_FOUND`.
fn named_controller(mgmt: &Mgmt, call: &Call) -> Result<ControllerInfo, MgmtError> {
    let id = call.id(0, MgmtError::controller_not_found)?;
    mgmt.api
        .controllers()
        .into_iter()
        .find(|controller| controller.id == id)
        .ok_or_else(|| MgmtError::controller_not_found(id))
}

pub fn list_controllers(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(
        &mgmt.api.controllers(),
        &field_names(&CONTROLLER),
        &call.query,
    )
}

pub fn get_controller(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &named_controller(mgmt, call)?)
}

/// Answers once the survivors serve every section; re-mirroring goes on afterwards.
pub fn fail_controller(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let controller = named_controller(mgmt, call)?;
    call.require_approval(
        "failing a controller (its cache is discarded and the others take over its work)",
    )?;
    call.object(200, &mgmt.api.fail_controller(controller.id)?)
}

/// Answers once the controller's ports are open again; failback goes on afterwards.
pub fn recover_controller(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let controller = named_controller(mgmt, call)?;
    call.object(200, &mgmt.api.recover_controller(controller.id)?)
}
