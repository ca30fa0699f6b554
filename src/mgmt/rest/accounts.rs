//! Handlers of the user routes: login and logout with the session cookie, the current
//! user, and the ADMIN's management of local users. Every change raises an event naming
//! who made it.

use serde::Deserialize;

use super::auth::{PasswordRefusal, check_password};
use super::list::list_response;
use super::openapi::{USER, field_names};
use super::{Call, Mgmt};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::Response;
use crate::mgmt::users::{SESSION_COOKIE, UserCreate, UserInfo, UserUpdate};

/// `POST /api/rest/users/login` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
    /// Sent by some clients; sessions here are always cookie sessions.
    #[serde(default)]
    #[allow(dead_code)]
    clientid: Option<String>,
}

pub fn login(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let Login {
        username, password, ..
    } = call.body()?;
    let (user, token) = match check_password(mgmt, call.request, &username, || {
        mgmt.users.login(&username, &password)
    }) {
        Ok(found) => found,
        Err(PasswordRefusal::Failed(error)) => return Err(error),
        Err(PasswordRefusal::Limited(response)) => return Ok(response),
    };
    mgmt.events.raise(
        "USER_LOGIN_SUCCESS",
        format!("user {:?} logged in", user.name),
        Some(u64::from(user.id)),
        Some(user.name.as_str()),
    );
    let mut response = call.object(200, &user)?;
    response.headers.push((
        "Set-Cookie",
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
    ));
    Ok(response)
}

pub fn logout(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let user = current(mgmt, call)?;
    if let Some(token) = &call.caller.session {
        mgmt.users.logout(token);
    }
    mgmt.events.raise(
        "USER_LOGOUT",
        format!("user {:?} logged out", user.name),
        Some(u64::from(user.id)),
        Some(user.name.as_str()),
    );
    let mut response = call.object(200, &user)?;
    response.headers.push((
        "Set-Cookie",
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Max-Age=0"),
    ));
    Ok(response)
}

/// The caller as a user; the local socket's administrator is shown as the built-in admin.
fn current(mgmt: &Mgmt, call: &Call) -> Result<UserInfo, MgmtError> {
    match call.caller.user_id {
        Some(id) => mgmt.users.get(id),
        None => mgmt.users.by_name("admin").ok_or_else(|| {
            MgmtError::new(
                "USER_NOT_FOUND",
                404,
                "the local socket acts as an administrator but the user \"admin\" no longer exists",
            )
        }),
    }
}

pub fn current_user(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &current(mgmt, call)?)
}

fn user_id(call: &Call) -> Result<u32, MgmtError> {
    call.id(0, |what| {
        MgmtError::new("USER_NOT_FOUND", 404, format!("user {what} does not exist"))
    })
}

pub fn list_users(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    list_response(&mgmt.users.list(), &field_names(&USER), &call.query)
}

pub fn get_user(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    call.object(200, &mgmt.users.get(user_id(call)?)?)
}

pub fn create_user(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let request: UserCreate = call.body()?;
    let user = mgmt.users.create(request)?;
    call.raise(
        mgmt,
        "USER_CREATED",
        user.id,
        format!(
            "user {:?} created with role {}",
            user.name,
            user.role.as_str()
        ),
    );
    call.object(201, &user)
}

pub fn update_user(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let id = user_id(call)?;
    let request: UserUpdate = call.body()?;
    let password_changed = request.password.is_some();
    let user = mgmt.users.update(id, request)?;
    call.raise(
        mgmt,
        "USER_UPDATED",
        user.id,
        format!(
            "user {:?} updated: role {}, enabled {}{}",
            user.name,
            user.role.as_str(),
            user.enabled,
            if password_changed {
                ", password changed"
            } else {
                ""
            }
        ),
    );
    call.object(200, &user)
}

pub fn delete_user(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let id = user_id(call)?;
    mgmt.users.get(id)?;
    call.require_approval("deleting a user")?;
    let user = mgmt.users.delete(id)?;
    for pool in mgmt.api.pools() {
        if pool.owners.contains(&id) {
            let owners = pool.owners.iter().copied().filter(|o| *o != id).collect();
            mgmt.api.update_pool(
                pool.id,
                crate::mgmt::api::PoolUpdate {
                    owners: Some(owners),
                    ..Default::default()
                },
            )?;
        }
    }
    call.raise(
        mgmt,
        "USER_DELETED",
        user.id,
        format!("user {:?} deleted", user.name),
    );
    call.object(200, &user)
}
