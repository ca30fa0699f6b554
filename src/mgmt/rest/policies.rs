//! Handlers of snapshot policies (`/api/rest/snapshot_policies`): schedules that snapshot
//! their assets every interval and keep the newest snapshots. Policies span pools, so
//! only an ADMIN creates, changes or deletes them and assigns assets; everyone signed in
//! may read them. Every change raises an event; the node raises its own when a policy
//! takes or retires a snapshot.

use super::list::list_response;
use super::openapi::{SNAPSHOT_POLICY, field_names};
use super::{Call, Mgmt};
use crate::mgmt::api::{MgmtError, PolicyAsset, PolicyCreate, PolicyInfo, PolicyUpdate};
use crate::mgmt::http::Response;

fn path_policy(mgmt: &Mgmt, call: &Call) -> Result<PolicyInfo, MgmtError> {
    mgmt.api.policy(call.id(0, MgmtError::policy_not_found)?)
}

fn describe(policy: &PolicyInfo) -> String {
    let schedules: Vec<String> = policy
        .schedules
        .iter()
        .map(|s| format!("{} every {} s keeps {}", s.name, s.interval, s.retention))
        .collect();
    format!(
        "snapshot policy {:?} ({}; {} assets; {})",
        policy.name,
        schedules.join(", "),
        policy.assets_count,
        if policy.enabled {
            "enabled"
        } else {
            "disabled"
        }
    )
}

pub fn list_policies(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(
        &mgmt.api.policies(),
        &field_names(&SNAPSHOT_POLICY),
        &call.query,
    )
}

pub fn get_policy(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &path_policy(mgmt, call)?)
}

pub fn create_policy(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: PolicyCreate = call.body()?;
    let policy = mgmt.api.create_policy(request)?;
    call.raise(
        mgmt,
        "SNAPSHOT_POLICY_CREATED",
        policy.id,
        describe(&policy),
    );
    call.object(201, &policy)
}

pub fn update_policy(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let before = path_policy(mgmt, call)?;
    let update: PolicyUpdate = call.body()?;
    let policy = mgmt.api.update_policy(before.id, update)?;
    call.raise(
        mgmt,
        "SNAPSHOT_POLICY_UPDATED",
        policy.id,
        describe(&policy),
    );
    call.object(200, &policy)
}

pub fn delete_policy(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let policy = path_policy(mgmt, call)?;
    call.require_approval("deleting a snapshot policy")?;
    let deleted = mgmt.api.delete_policy(policy.id)?;
    call.raise(
        mgmt,
        "SNAPSHOT_POLICY_DELETED",
        policy.id,
        format!(
            "snapshot policy {:?} deleted; the {} snapshots it took stay",
            policy.name, policy.snapshots_count
        ),
    );
    call.object(200, &deleted)
}

pub fn add_asset(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let policy = path_policy(mgmt, call)?;
    let asset: PolicyAsset = call.body()?;
    let volume = mgmt.api.volume(asset.entity_id)?;
    let updated = mgmt.api.set_policy_asset(policy.id, volume.id, true)?;
    call.raise(
        mgmt,
        "SNAPSHOT_POLICY_UPDATED",
        policy.id,
        format!(
            "volume {:?} is now an asset of snapshot policy {:?}",
            volume.name, policy.name
        ),
    );
    call.object(201, &updated)
}

pub fn remove_asset(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let policy = path_policy(mgmt, call)?;
    let volume = call.id(1, MgmtError::volume_not_found)?;
    let updated = mgmt.api.set_policy_asset(policy.id, volume, false)?;
    call.raise(
        mgmt,
        "SNAPSHOT_POLICY_UPDATED",
        policy.id,
        format!(
            "volume {volume} is no longer an asset of snapshot policy {:?}",
            policy.name
        ),
    );
    call.object(200, &updated)
}
