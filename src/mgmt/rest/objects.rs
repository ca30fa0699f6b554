//! Handlers of the system, pool, volume, event and metrics routes. Each one that changes
//! something checks the caller's rights on the object first, then calls the node, then
//! raises the event that says what changed and who changed it.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::require_pool_owner;
use super::list::{ListQuery, list_response, paged_list_response};
use super::openapi::{EVENT, FEATURE, POOL, USER, VOLUME, field_names};
use super::{Call, Mgmt, to_json};
use crate::mgmt::api::{MgmtError, PoolCreate, PoolUpdate, VolumeCreate, VolumeUpdate};
use crate::mgmt::events::{EVENT_TYPES, Event, Level, VISIBILITY_CUSTOMER};
use crate::mgmt::http::Response;

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The API features this node implements, as `GET /api/rest/_features` lists them.
const FEATURES: &[(&str, u32)] = &[
    ("pools", 1),
    ("volumes", 1),
    ("thick_provisioning", 1),
    ("users", 1),
    ("pool_owners", 1),
    ("controllers", 1),
    ("events", 1),
    ("metrics", 1),
    // infinisdk calls snapshots SNAPSHOT (not SNAP) when this is present.
    ("snapshots", 1),
    ("consistency_groups", 1),
];

/// The system, with the fingerprint of the TLS certificate the node serves (null when it
/// serves no HTTPS) so a client can compare it with the one it was shown.
pub fn get_system(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let mut system = to_json(&mgmt.api.system())?;
    if let Value::Object(fields) = &mut system {
        fields.insert(
            "tls_certificate_sha256".to_owned(),
            mgmt.tls_fingerprint
                .clone()
                .map_or(Value::Null, Value::String),
        );
    }
    call.object(200, &system)
}

pub fn get_features(_mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let features: Vec<Value> = FEATURES
        .iter()
        .map(|(name, version)| json!({"name": name, "version": version, "enabled": true}))
        .collect();
    list_response(&features, &field_names(&FEATURE), &call.query)
}

pub fn get_metrics(mgmt: &Mgmt, _call: &Call) -> Result<Response, MgmtError> {
    Ok(Response {
        status: 200,
        content_type: METRICS_CONTENT_TYPE,
        headers: Vec::new(),
        body: (mgmt.api.metrics_text() + &mgmt.limiter.metrics_text()).into_bytes(),
    })
}

fn pool_id(call: &Call, index: usize) -> Result<u32, MgmtError> {
    call.id(index, MgmtError::pool_not_found)
}

fn volume_id(call: &Call) -> Result<u32, MgmtError> {
    call.id(0, MgmtError::volume_not_found)
}

pub fn list_pools(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&mgmt.api.pools(), &field_names(&POOL), &call.query)
}

pub fn create_pool(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: PoolCreate = call.body()?;
    let pool = mgmt.api.create_pool(request)?;
    call.raise(
        mgmt,
        "POOL_CREATED",
        pool.id,
        format!(
            "pool {:?} created with {} bytes physical and {} bytes virtual capacity",
            pool.name, pool.physical_capacity, pool.virtual_capacity
        ),
    );
    call.object(201, &pool)
}

pub fn get_pool(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.api.pool(pool_id(call, 0)?)?)
}

pub fn update_pool(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let id = pool_id(call, 0)?;
    let update: PoolUpdate = call.body()?;
    if let Some(owners) = &update.owners {
        for owner in owners {
            check_pool_owner_user(mgmt, *owner)?;
        }
    }
    let before = mgmt.api.pool(id)?;
    let pool = mgmt.api.update_pool(id, update)?;
    let (code, description) = if before.name != pool.name {
        (
            "POOL_RENAMED",
            format!("pool {:?} renamed to {:?}", before.name, pool.name),
        )
    } else {
        ("POOL_UPDATED", format!("pool {:?} updated", pool.name))
    };
    call.raise(mgmt, code, id, description);
    call.object(200, &pool)
}

pub fn delete_pool(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let id = pool_id(call, 0)?;
    mgmt.api.pool(id)?;
    call.require_approval("deleting a pool")?;
    let pool = mgmt.api.delete_pool(id)?;
    call.raise(
        mgmt,
        "POOL_DELETED",
        id,
        format!("pool {:?} deleted", pool.name),
    );
    call.object(200, &pool)
}

/// Only POOL_ADMIN users can own pools (an ADMIN already manages every pool).
fn check_pool_owner_user(mgmt: &Mgmt, user_id: u32) -> Result<(), MgmtError> {
    let user = mgmt.users.get(user_id)?;
    if user.role != crate::mgmt::users::Role::PoolAdmin {
        return Err(MgmtError::bad_request(format!(
            "user {:?} has the role {}; only POOL_ADMIN users can own pools",
            user.name,
            user.role.as_str()
        )));
    }
    Ok(())
}

pub fn list_pool_owners(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let pool = mgmt.api.pool(pool_id(call, 0)?)?;
    let mut owners: Vec<_> = pool
        .owners
        .iter()
        .filter_map(|id| mgmt.users.get(*id).ok())
        .collect();
    owners.sort_by_key(|user| user.id);
    list_response(&owners, &field_names(&USER), &call.query)
}

pub fn add_pool_owner(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PoolOwner {
        user_id: u32,
    }
    let id = pool_id(call, 0)?;
    let PoolOwner { user_id } = call.body()?;
    check_pool_owner_user(mgmt, user_id)?;
    let mut owners = mgmt.api.pool(id)?.owners;
    if !owners.contains(&user_id) {
        owners.push(user_id);
    }
    change_owners(mgmt, call, id, owners, 201)
}

pub fn remove_pool_owner(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let id = pool_id(call, 0)?;
    let user_id: u32 = call.id(1, |what| {
        MgmtError::new("USER_NOT_FOUND", 404, format!("user {what} does not exist"))
    })?;
    let mut owners = mgmt.api.pool(id)?.owners;
    let before = owners.len();
    owners.retain(|owner| *owner != user_id);
    if owners.len() == before {
        return Err(MgmtError::new(
            "USER_NOT_FOUND",
            404,
            format!("user {user_id} is not an owner of pool {id}"),
        ));
    }
    change_owners(mgmt, call, id, owners, 200)
}

fn change_owners(
    mgmt: &Mgmt,
    call: &Call,
    id: u32,
    owners: Vec<u32>,
    status: u16,
) -> Result<Response, MgmtError> {
    let pool = mgmt.api.update_pool(
        id,
        PoolUpdate {
            owners: Some(owners),
            ..PoolUpdate::default()
        },
    )?;
    call.raise(
        mgmt,
        "POOL_UPDATED",
        id,
        format!("pool {:?} owners are now {:?}", pool.name, pool.owners),
    );
    call.object(status, &pool)
}

pub fn list_volumes(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    paged_list_response(
        &call.query,
        &field_names(&VOLUME),
        || mgmt.api.volumes(),
        |skip, take, descending| mgmt.api.volumes_page(skip, take, descending),
    )
}

pub fn create_volume(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let body: Value = call.body()?;
    if body
        .get("parent_id")
        .is_some_and(|parent| !parent.is_null())
    {
        return super::snapshots::create_snapshot(mgmt, call);
    }
    let request: VolumeCreate = call.body()?;
    let pool = mgmt.api.pool(request.pool_id)?;
    require_pool_owner(
        mgmt,
        &call.caller,
        pool.id,
        &pool.owners,
        "create a volume in this pool",
    )?;
    let volume = mgmt.api.create_volume(request)?;
    call.raise(
        mgmt,
        "VOLUME_CREATED",
        volume.id,
        format!(
            "volume {:?} created in pool {:?}: {} bytes, {}",
            volume.name, volume.pool_name, volume.size, volume.provtype
        ),
    );
    call.object(201, &volume)
}

pub fn get_volume(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.api.volume(volume_id(call)?)?)
}

/// Checks that the caller may change volume `id` and returns its pool's owners check
/// result and the volume as it is now.
fn volume_for_change(
    mgmt: &Mgmt,
    call: &Call,
    what: &str,
) -> Result<crate::mgmt::api::VolumeInfo, MgmtError> {
    let volume = mgmt.api.volume(volume_id(call)?)?;
    let pool = mgmt.api.pool(volume.pool_id)?;
    require_pool_owner(mgmt, &call.caller, pool.id, &pool.owners, what)?;
    Ok(volume)
}

pub fn update_volume(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let before = volume_for_change(mgmt, call, "change a volume in this pool")?;
    let update: VolumeUpdate = call.body()?;
    if update.size.is_some_and(|size| size < before.size) {
        call.require_approval("shrinking a volume (it discards the data past the new end)")?;
    }
    let volume = mgmt.api.update_volume(before.id, update)?;
    if volume.name != before.name {
        call.raise(
            mgmt,
            "VOLUME_RENAMED",
            volume.id,
            format!("volume {:?} renamed to {:?}", before.name, volume.name),
        );
    }
    if volume.write_protected != before.write_protected || volume.ssd_enabled != before.ssd_enabled
    {
        call.raise(
            mgmt,
            "VOLUME_UPDATED",
            volume.id,
            format!(
                "volume {:?}: write_protected={}, ssd_enabled={}",
                volume.name, volume.write_protected, volume.ssd_enabled
            ),
        );
    }
    if volume.size != before.size {
        call.raise(
            mgmt,
            "VOLUME_RESIZED",
            volume.id,
            format!(
                "volume {:?} resized from {} to {} bytes",
                volume.name, before.size, volume.size
            ),
        );
    }
    call.object(200, &volume)
}

pub fn delete_volume(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let volume = volume_for_change(mgmt, call, "delete a volume in this pool")?;
    call.require_approval("deleting a volume")?;
    let volume = mgmt.api.delete_volume(volume.id)?;
    call.raise(
        mgmt,
        "VOLUME_DELETED",
        volume.id,
        format!(
            "volume {:?} deleted from pool {:?}",
            volume.name, volume.pool_name
        ),
    );
    call.object(200, &volume)
}

/// The value of one field of an event, as it serializes (filters read a few fields of
/// every stored event, so this avoids encoding whole events).
fn event_field(event: &Event, field: &str) -> Value {
    match field {
        "id" => json!(event.id),
        "code" => json!(event.code),
        "level" => json!(event.level),
        "description" => json!(event.description),
        "timestamp" => json!(event.timestamp),
        "reporter" => json!(event.reporter),
        "affected_entity_id" => json!(event.affected_entity_id),
        "username" => json!(event.username),
        "visibility" => json!(event.visibility),
        "seq_num" => json!(event.seq_num),
        _ => Value::Null,
    }
}

/// The JSON row of an event holding only `fields` (what the filters read).
fn event_row(event: &Event, fields: &[&str]) -> Value {
    let row: Map<String, Value> = fields
        .iter()
        .map(|field| ((*field).to_owned(), event_field(event, field)))
        .collect();
    Value::Object(row)
}

/// Events are kept in id order, so the usual orders (by id or time) page without sorting
/// the whole log; filters see rows of only the fields they name.
pub fn list_events(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let view = ListQuery::parse(&call.query, &field_names(&EVENT))?;
    let filter_fields: Vec<&str> = view.filter_fields().collect();
    let failure: RefCell<Option<MgmtError>> = RefCell::new(None);
    let keep = |event: &Event| -> bool {
        if filter_fields.is_empty() {
            return true;
        }
        if failure.borrow().is_some() {
            return false;
        }
        match view.matches(&event_row(event, &filter_fields)) {
            Ok(keep) => keep,
            Err(error) => {
                *failure.borrow_mut() = Some(error);
                false
            }
        }
    };
    let response = match view.id_order(&["timestamp", "seq_num"]) {
        Some(newest_first) => {
            let (skip, take) = view.window();
            let (total, events) = mgmt.events.query(&keep, newest_first, skip, take);
            view.respond_objects(total, &events)?
        }
        None => {
            let (_, events) = mgmt.events.query(&keep, false, 0, usize::MAX);
            let mut rows = events.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
            view.sort(&mut rows);
            let total = rows.len();
            let (skip, take) = view.window();
            let page = rows.into_iter().skip(skip).take(take).collect();
            view.respond(total, page)
        }
    };
    match failure.into_inner() {
        Some(error) => Err(error),
        None => Ok(response),
    }
}

pub fn get_event(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let not_found = |what: String| {
        MgmtError::new(
            "EVENT_NOT_FOUND",
            404,
            format!("event {what} does not exist"),
        )
    };
    let id = u64::from(call.id(0, not_found)?);
    let (_, events) = mgmt
        .events
        .query(&|event: &Event| event.id == id, false, 0, 1);
    match events.into_iter().next() {
        Some(event) => call.object(200, &event),
        None => Err(not_found(id.to_string())),
    }
}

pub fn list_event_types(_mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let mut reporters: Vec<&str> = EVENT_TYPES.iter().map(|kind| kind.reporter).collect();
    reporters.sort_unstable();
    reporters.dedup();
    let types: Vec<Value> = EVENT_TYPES
        .iter()
        .map(|kind| {
            json!({
                "code": kind.code,
                "level": kind.level.as_str(),
                "reporter": kind.reporter,
                "description": kind.description,
                "visibility": VISIBILITY_CUSTOMER,
            })
        })
        .collect();
    let levels: Vec<Value> = Level::ALL
        .iter()
        .enumerate()
        .map(|(index, level)| json!({"name": level.as_str(), "value": index + 1}))
        .collect();
    let answer = json!({
        "codes": EVENT_TYPES.iter().map(|kind| kind.code).collect::<Vec<_>>(),
        "levels": levels,
        "visibilities": [VISIBILITY_CUSTOMER],
        "reporters": reporters,
        "types": types,
    });
    call.object(200, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::events::Level;

    #[test]
    fn event_fields_read_as_the_event_serializes() {
        let event = Event {
            id: 7,
            code: "VOLUME_CREATED".into(),
            level: Level::Warning,
            description: "d".into(),
            timestamp: 123,
            reporter: "MANAGEMENT".into(),
            affected_entity_id: Some(3),
            username: None,
            visibility: "CUSTOMER".into(),
            seq_num: 7,
        };
        let Value::Object(all) = to_json(&event).unwrap() else {
            panic!("an event serializes to an object");
        };
        for (field, value) in &all {
            assert_eq!(&event_field(&event, field), value, "field {field}");
        }
    }
}
