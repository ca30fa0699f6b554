//! Handlers of the scrub routes: show the background scrub, start a pass, stop it. Both
//! changes are idempotent (starting while a pass runs, or stopping while none does,
//! answers the scrub as it is); the node raises `SCRUB_STARTED` and `SCRUB_STOPPED`
//! itself, whoever caused them.

use super::{Call, Mgmt};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::Response;

pub fn get_scrub(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.api.scrub()?)
}

pub fn start_scrub(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.api.start_scrub()?)
}

pub fn stop_scrub(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.api.stop_scrub()?)
}
