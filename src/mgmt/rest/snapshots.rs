//! Handlers of snapshots, restores, refreshes, changed blocks and consistency groups, in
//! InfiniBox's shapes: a snapshot is `POST /api/rest/volumes {parent_id}`, a restore
//! `POST …/volumes/{id}/restore` with the snapshot's id (a bare number, as infinisdk sends
//! it, or `{"source_id"}`), a group snapshot `POST /api/rest/cgs {parent_id}`.
//!
//! Whoever may change a pool's volumes may snapshot, restore and group them (ADMIN, or a
//! POOL_ADMIN owning the pool); READ_ONLY may not. Restores and refreshes discard data,
//! so they need `approved=true`. Every change raises an event.

use serde::Deserialize;
use serde_json::Value;

use super::auth::require_pool_owner;
use super::list::list_response;
use super::openapi::{CG, REPLICA, VOLUME, field_names};
use super::{Call, Mgmt};
use crate::mgmt::api::{
    CgCreate, CgInfo, CgMemberAdd, CgUpdate, MgmtError, SnapshotCreate, SourceRef, VolumeInfo,
};
use crate::mgmt::http::Response;

/// The caller may change datasets in the pool of `volume`.
fn may_change(mgmt: &Mgmt, call: &Call, pool_id: u32, what: &str) -> Result<(), MgmtError> {
    let pool = mgmt.api.pool(pool_id)?;
    require_pool_owner(mgmt, &call.caller, pool.id, &pool.owners, what)
}

fn path_volume(mgmt: &Mgmt, call: &Call) -> Result<VolumeInfo, MgmtError> {
    mgmt.api.volume(call.id(0, MgmtError::volume_not_found)?)
}

fn path_cg(mgmt: &Mgmt, call: &Call) -> Result<CgInfo, MgmtError> {
    mgmt.api.cg(call.id(0, MgmtError::cg_not_found)?)
}

/// The group the path names, once the caller may change groups in its pool (`what`).
fn cg_for_change(mgmt: &Mgmt, call: &Call, what: &str) -> Result<CgInfo, MgmtError> {
    let cg = path_cg(mgmt, call)?;
    may_change(mgmt, call, cg.pool_id, what)?;
    Ok(cg)
}

/// The volume the path names, once the caller may change volumes in its pool (`what`).
fn volume_for_change(mgmt: &Mgmt, call: &Call, what: &str) -> Result<VolumeInfo, MgmtError> {
    let volume = path_volume(mgmt, call)?;
    may_change(mgmt, call, volume.pool_id, what)?;
    Ok(volume)
}

fn snapshot_event(mgmt: &Mgmt, call: &Call, snapshot: &VolumeInfo) {
    call.raise(
        mgmt,
        "SNAPSHOT_CREATED",
        snapshot.id,
        format!(
            "snapshot {:?} of {} created{}{}",
            snapshot.name,
            snapshot.parent_id,
            if snapshot.write_protected {
                ""
            } else {
                " (writable)"
            },
            snapshot
                .lock_expires_at
                .map(|until| format!(", locked until {}", crate::types::format_time(until)))
                .unwrap_or_default()
        ),
    );
}

/// `POST /api/rest/volumes` with a `parent_id`.
pub fn create_snapshot(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: SnapshotCreate = call.body()?;
    let parent = mgmt.api.volume(request.parent_id)?;
    may_change(mgmt, call, parent.pool_id, "snapshot a volume in this pool")?;
    let mut taken = mgmt.api.create_snapshots(vec![request])?;
    let snapshot = taken
        .pop()
        .ok_or_else(|| MgmtError::internal("the snapshot was not taken"))?;
    snapshot_event(mgmt, call, &snapshot);
    call.object(201, &snapshot)
}

/// `POST /api/rest/volumes/group_snapshot` body.
#[derive(Deserialize)]
pub struct GroupSnapshot {
    #[serde(default)]
    pub snap_prefix: Option<String>,
    #[serde(default)]
    pub snap_suffix: Option<String>,
    pub entities: Vec<Entity>,
}

/// One volume named in a group snapshot.
#[derive(Deserialize)]
pub struct Entity {
    pub id: u32,
}

/// `POST /api/rest/volumes/group_snapshot`: snapshots of several volumes at one instant.
pub fn create_group_snapshot(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: GroupSnapshot = call.body()?;
    if request.entities.is_empty() {
        return Err(MgmtError::bad_request(
            "entities is empty: name the volumes to snapshot",
        ));
    }
    let prefix = request.snap_prefix.unwrap_or_default();
    let suffix = request.snap_suffix.unwrap_or_default();
    if prefix.is_empty() && suffix.is_empty() {
        return Err(MgmtError::bad_request(
            "give snap_prefix or snap_suffix: the snapshots are named after their volumes with them",
        ));
    }
    let mut requests = Vec::with_capacity(request.entities.len());
    for entity in &request.entities {
        let volume = mgmt.api.volume(entity.id)?;
        may_change(mgmt, call, volume.pool_id, "snapshot a volume in this pool")?;
        requests.push(SnapshotCreate {
            name: Some(format!("{prefix}{}{suffix}", volume.name)),
            parent_id: volume.id,
            ..SnapshotCreate::default()
        });
    }
    let snapshots = mgmt.api.create_snapshots(requests)?;
    for snapshot in &snapshots {
        snapshot_event(mgmt, call, snapshot);
    }
    call.object(201, &snapshots)
}

/// The source a restore or refresh body names.
fn source(call: &Call) -> Result<Option<u32>, MgmtError> {
    if call.request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let source: SourceRef = call.body()?;
    Ok(Some(source.id()))
}

/// `POST /api/rest/volumes/{id}/restore` with the snapshot's id.
pub fn restore_volume(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let volume = volume_for_change(mgmt, call, "restore a volume in this pool")?;
    let snapshot = source(call)?.ok_or_else(|| {
        MgmtError::bad_request("name the snapshot to restore from: a bare id or {\"source_id\": N}")
    })?;
    call.require_approval("restoring a volume (its current contents are replaced)")?;
    let restored = mgmt.api.restore_volume(volume.id, snapshot)?;
    call.raise(
        mgmt,
        "VOLUME_RESTORED",
        volume.id,
        format!("{:?} restored from snapshot {snapshot}", volume.name),
    );
    call.object(200, &restored)
}

/// `POST /api/rest/volumes/{id}/refresh`: a snapshot takes its parent's contents.
pub fn refresh_snapshot(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let snapshot = volume_for_change(mgmt, call, "refresh a snapshot in this pool")?;
    // A master volume has no parent to compare with: the node says it is no snapshot.
    if let Some(source) = source(call)?
        && snapshot.parent_id != 0
        && source != snapshot.parent_id
    {
        return Err(MgmtError::bad_request(format!(
            "a snapshot is refreshed from its parent ({}), not from {source}",
            snapshot.parent_id
        )));
    }
    call.require_approval("refreshing a snapshot (its current contents are replaced)")?;
    let refreshed = mgmt.api.refresh_snapshot(snapshot.id)?;
    call.raise(
        mgmt,
        "SNAPSHOT_REFRESHED",
        snapshot.id,
        format!(
            "snapshot {:?} refreshed from {}",
            snapshot.name, snapshot.parent_id
        ),
    );
    call.object(200, &refreshed)
}

/// `GET /api/rest/volumes/{id}/changed_blocks?base_id=B`.
pub fn changed_blocks(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let volume = path_volume(mgmt, call)?;
    let base = call
        .query
        .iter()
        .find(|(key, _)| key == "base_id")
        .map(|(_, value)| value.as_str())
        .ok_or_else(|| {
            MgmtError::bad_request(
                "give base_id: the snapshot (or volume) of the same family to compare with",
            )
        })?;
    let base: u32 = base
        .parse()
        .map_err(|_| MgmtError::bad_request(format!("base_id {base:?} is not an id")))?;
    call.object(200, &mgmt.api.changed_blocks(volume.id, base)?)
}

/// `GET /api/rest/replicas`: none yet (infinisdk lists them before changing a group).
pub fn list_replicas(_mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let none: Vec<Value> = Vec::new();
    list_response(&none, &field_names(&REPLICA), &call.query)
}

pub fn list_cgs(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&mgmt.api.cgs(), &field_names(&CG), &call.query)
}

pub fn get_cg(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &path_cg(mgmt, call)?)
}

/// `POST /api/rest/cgs`: a group (`pool_id`), or a snapshot of group `parent_id`.
pub fn create_cg(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: CgCreate = call.body()?;
    let pool_id = match request.parent_id {
        Some(parent) => mgmt.api.cg(parent)?.pool_id,
        None => request
            .pool_id
            .ok_or_else(|| MgmtError::bad_request("a consistency group needs pool_id"))?,
    };
    may_change(
        mgmt,
        call,
        pool_id,
        "create a consistency group in this pool",
    )?;
    let cg = mgmt.api.create_cg(request)?;
    let code = if cg.parent_id == 0 {
        "CG_CREATED"
    } else {
        "CG_SNAPSHOT_CREATED"
    };
    call.raise(
        mgmt,
        code,
        cg.id,
        format!(
            "consistency group {:?} created ({} members)",
            cg.name, cg.members_count
        ),
    );
    call.object(201, &cg)
}

pub fn update_cg(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cg = cg_for_change(mgmt, call, "change a consistency group in this pool")?;
    let update: CgUpdate = call.body()?;
    call.object(200, &mgmt.api.update_cg(cg.id, update)?)
}

pub fn delete_cg(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cg = cg_for_change(mgmt, call, "delete a consistency group in this pool")?;
    call.require_approval("deleting a consistency group")?;
    let delete_members = call
        .query
        .iter()
        .any(|(key, value)| key == "delete_members" && value.eq_ignore_ascii_case("true"));
    let deleted = mgmt.api.delete_cg(cg.id, delete_members)?;
    call.raise(
        mgmt,
        "CG_DELETED",
        cg.id,
        format!(
            "consistency group {:?} deleted{}",
            cg.name,
            if delete_members || cg.parent_id != 0 {
                " with its members"
            } else {
                ""
            }
        ),
    );
    call.object(200, &deleted)
}

pub fn list_cg_members(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cg = path_cg(mgmt, call)?;
    list_response(
        &mgmt.api.cg_members(cg.id)?,
        &field_names(&VOLUME),
        &call.query,
    )
}

/// Which way a member changes.
#[derive(Clone, Copy)]
enum MemberChange {
    /// `POST /api/rest/cgs/{id}/members {"dataset_id": V}`.
    Add,
    /// `DELETE /api/rest/cgs/{id}/members/{V}`.
    Remove,
}

/// Adds or removes a member volume of a group and raises the event saying so.
fn change_cg_member(mgmt: &Mgmt, call: &Call, change: MemberChange) -> Result<Response, MgmtError> {
    let cg = cg_for_change(mgmt, call, "change a consistency group in this pool")?;
    let (member, code, done, status) = match change {
        MemberChange::Add => {
            let request: CgMemberAdd = call.body()?;
            let member = mgmt.api.add_cg_member(cg.id, request.dataset_id)?;
            (member, "CG_MEMBER_ADDED", "added to", 201)
        }
        MemberChange::Remove => {
            let volume = call.id(1, MgmtError::volume_not_found)?;
            let member = mgmt.api.remove_cg_member(cg.id, volume)?;
            (member, "CG_MEMBER_REMOVED", "removed from", 200)
        }
    };
    call.raise(
        mgmt,
        code,
        cg.id,
        format!(
            "volume {:?} {done} consistency group {:?}",
            member.name, cg.name
        ),
    );
    call.object(status, &member)
}

pub fn add_cg_member(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    change_cg_member(mgmt, call, MemberChange::Add)
}

pub fn remove_cg_member(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    change_cg_member(mgmt, call, MemberChange::Remove)
}

/// `POST /api/rest/cgs/{id}/restore {"source_id": group snapshot}`.
pub fn restore_cg(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cg = cg_for_change(mgmt, call, "restore a consistency group in this pool")?;
    let snapgroup = source(call)?.ok_or_else(|| {
        MgmtError::bad_request("name the group snapshot to restore from: {\"source_id\": N}")
    })?;
    call.require_approval("restoring a consistency group (its members' contents are replaced)")?;
    let restored = mgmt.api.restore_cg(cg.id, snapgroup)?;
    call.raise(
        mgmt,
        "CG_RESTORED",
        cg.id,
        format!(
            "consistency group {:?} restored from group snapshot {snapgroup}",
            cg.name
        ),
    );
    call.object(200, &restored)
}

/// `POST /api/rest/cgs/{id}/refresh`: a group snapshot takes its group's contents.
pub fn refresh_cg(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let cg = cg_for_change(mgmt, call, "refresh a group snapshot in this pool")?;
    call.require_approval("refreshing a group snapshot (its contents are replaced)")?;
    let refreshed = mgmt.api.refresh_cg(cg.id)?;
    call.raise(
        mgmt,
        "CG_SNAPSHOT_REFRESHED",
        cg.id,
        format!("group snapshot {:?} refreshed", cg.name),
    );
    call.object(200, &refreshed)
}
