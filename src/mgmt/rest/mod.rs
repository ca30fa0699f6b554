//! The REST API in InfiniBox's shape, over a [`Management`] implementation, the user store
//! and the event log.
//!
//! Every JSON answer is the envelope `{"result", "error", "metadata"}`: `error` is `null` on
//! success and `{"code", "message", "reasons"}` otherwise, `result` is `null` on failure.
//! Lists page, filter, sort and project as [`list`] describes. Destructive operations
//! (deleting, shrinking a volume, failing a controller, injecting a fault, cutting the
//! power) need `approved=true` or fail with `APPROVAL_REQUIRED`.
//!
//! Every route is one row of [`routes::ROUTES`]: method, path, who may call it, and the
//! handler; the same table drives dispatch, the role checks and the OpenAPI description,
//! so they cannot drift apart. A request is answered in this order: refuse what a foreign
//! web page could have sent ([`guard`]: a foreign `Origin` 403, a body that is not JSON
//! 415), find the route (404 / 405), identify the caller (the unix socket is a local administrator; TCP needs a
//! session cookie or HTTP basic credentials, else 401), check the caller's role against the
//! route (403 `PERMISSION_DENIED`, with an `ACCESS_DENIED` event), then run the handler,
//! which checks pool ownership for a POOL_ADMIN before it changes anything. A refused
//! request changes nothing.

pub mod accounts;
pub mod auth;
pub mod controllers;
pub mod drives;
pub mod faults;
pub mod guard;
pub mod host_routes;
pub mod list;
pub mod objects;
pub mod openapi;
pub mod policies;
pub mod routes;
pub mod scrub;
pub mod snapshots;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::api::{Management, MgmtError};
use super::events::EventLog;
use super::http::{HttpError, Request, Response};
use super::login_limit::LoginLimiter;
use super::users::UserStore;
pub use auth::{Caller, Origin};
pub use list::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

const JSON: &str = "application/json";

/// Everything the handlers reach: the node, the users, the event log and the login
/// limiter.
pub struct Mgmt {
    pub api: Arc<dyn Management>,
    pub users: Arc<UserStore>,
    pub events: Arc<EventLog>,
    /// Decides which password checks run (see [`crate::mgmt::login_limit`]).
    pub limiter: Arc<LoginLimiter>,
    /// SHA-256 fingerprint of the node's TLS certificate, when it serves HTTPS; shown in
    /// `GET /api/rest/system` as `tls_certificate_sha256`.
    pub tls_fingerprint: Option<String>,
}

/// One request on its way through a handler: who asked, the path parameters and the
/// decoded query.
pub struct Call<'a> {
    pub request: &'a Request,
    pub caller: Caller,
    /// The `{...}` segments of the route's path, in order.
    pub params: Vec<&'a str>,
    pub query: Vec<(String, String)>,
}

impl Call<'_> {
    /// Path parameter `index` as an object id; a non-number is the object's not-found.
    pub fn id(&self, index: usize, not_found: fn(String) -> MgmtError) -> Result<u32, MgmtError> {
        let text = self.params.get(index).copied().unwrap_or("");
        text.parse().map_err(|_| not_found(format!("id {text:?}")))
    }

    /// The body decoded as `T`; serde's message names the missing or mistyped field.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, MgmtError> {
        parse_body(&self.request.body)
    }

    pub fn approved(&self) -> bool {
        self.query
            .iter()
            .any(|(key, value)| key == "approved" && value.eq_ignore_ascii_case("true"))
    }

    /// Fails with `APPROVAL_REQUIRED` unless the request carries `approved=true`.
    pub fn require_approval(&self, what: &str) -> Result<(), MgmtError> {
        if self.approved() {
            Ok(())
        } else {
            Err(MgmtError::new(
                "APPROVAL_REQUIRED",
                403,
                format!("{what} needs approval: repeat the request with ?approved=true"),
            ))
        }
    }

    /// `{"result": object}` projected to the `fields=a,b` the query asks for, if any
    /// (InfiniBox clients fetch single fields this way).
    pub fn object(&self, status: u16, object: &impl Serialize) -> Result<Response, MgmtError> {
        if !self.query.iter().any(|(key, _)| key == "fields") {
            // No projection: serialize straight into the body.
            let mut body = Vec::with_capacity(1024);
            body.extend_from_slice(b"{\"result\":");
            serde_json::to_writer(&mut body, object).map_err(|error| {
                MgmtError::internal(format!("cannot encode the answer: {error}"))
            })?;
            body.extend_from_slice(b",\"error\":null,\"metadata\":{\"ready\":true}}");
            return Ok(json_response(status, body));
        }
        let mut value = to_json(object)?;
        if let Some((_, wanted)) = self.query.iter().find(|(key, _)| key == "fields")
            && let Value::Object(all) = &mut value
        {
            let mut kept = serde_json::Map::new();
            for field in wanted.split(',').filter(|field| !field.is_empty()) {
                match all.remove(field) {
                    Some(found) => {
                        kept.insert(field.to_owned(), found);
                    }
                    None => {
                        return Err(MgmtError::bad_request(format!(
                            "cannot select unknown field {field:?}"
                        )));
                    }
                }
            }
            value = Value::Object(kept);
        }
        let envelope = json!({"result": value, "error": null, "metadata": {"ready": true}});
        Ok(envelope_response(status, envelope))
    }

    /// Raises event `code` about object `entity`, naming the caller.
    pub fn raise(&self, mgmt: &Mgmt, code: &str, entity: u32, description: String) {
        mgmt.events.raise(
            code,
            description,
            Some(u64::from(entity)),
            Some(self.caller.name.as_str()),
        );
    }
}

/// Answers one request. Never panics on input; failures become error envelopes.
pub fn handle(mgmt: &Mgmt, request: &Request, origin: Origin) -> Response {
    handle_request(mgmt, request, origin).response
}

/// A response, and whether the request proved its caller a user (valid credentials or
/// session cookie, or a login that opened a session): the server then keeps the
/// connection in the room reserved for authenticated clients.
pub struct Handled {
    pub response: Response,
    pub authenticated: bool,
    /// The request's basic credentials were checked and right: the connection may skip
    /// the login limiter when it sends the same `Authorization` again.
    pub basic_verified: bool,
}

/// [`handle`], also saying whether the caller authenticated.
pub fn handle_request(mgmt: &Mgmt, request: &Request, origin: Origin) -> Handled {
    let mut caller = None;
    let mut response = route_request(mgmt, request, origin, &mut caller);
    let mut authenticated = caller.as_ref().is_some_and(|c| c.user_id.is_some());
    let basic_verified = authenticated
        && request.authorization.is_some()
        && caller.as_ref().is_some_and(|c| c.session.is_none());
    let session_prefix = format!("{}=", crate::mgmt::users::SESSION_COOKIE);
    authenticated |= response.status < 300
        && response.headers.iter().any(|(name, value)| {
            *name == "Set-Cookie"
                && value.starts_with(&session_prefix)
                && !value[session_prefix.len()..].starts_with(';')
        });
    if response.status == 429 {
        // A refused login says nothing about the connection's other requests.
        response
            .headers
            .retain(|(name, _)| *name != "WWW-Authenticate");
    }
    Handled {
        response,
        authenticated,
        basic_verified,
    }
}

fn route_request(
    mgmt: &Mgmt,
    request: &Request,
    origin: Origin,
    identified: &mut Option<Caller>,
) -> Response {
    if let Err(refusal) = guard::check(request) {
        return error_response(&refusal);
    }
    let query = match list::parse_query(request.query()) {
        Ok(query) => query,
        Err(error) => return error_response(&error),
    };
    let path = request.path();
    let (route, params) = match routes::find(&request.method, path) {
        routes::Found::Route(route, params) => (route, params),
        routes::Found::MethodNotAllowed(allow) => {
            return method_not_allowed(&request.method, &allow);
        }
        routes::Found::NotFound => {
            return error_response(&MgmtError::new(
                "NOT_FOUND",
                404,
                format!(
                    "no resource at {path}; the API is under /api/rest (see /api/rest/openapi.json)"
                ),
            ));
        }
    };
    let caller = match auth::identify(mgmt, request, origin, route.access) {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    *identified = Some(caller.clone());
    if let Err(error) = auth::check_role(mgmt, &caller, route, request) {
        return error_response(&error);
    }
    let call = Call {
        request,
        caller,
        params,
        query,
    };
    (route.handler)(mgmt, &call).unwrap_or_else(|error| error_response(&error))
}

/// The envelope for a request refused by the HTTP layer.
pub fn http_error_response(error: &HttpError) -> Response {
    envelope_response(
        error.status(),
        error_envelope(error.code(), &error.to_string()),
    )
}

/// The envelope for an API failure, with the failure's own status and code.
pub fn error_response(error: &MgmtError) -> Response {
    let status = if (400..=599).contains(&error.status) {
        error.status
    } else {
        500
    };
    envelope_response(status, error_envelope(error.code, &error.message))
}

fn error_envelope(code: &str, message: &str) -> Value {
    json!({
        "result": null,
        "error": {"code": code, "message": message, "reasons": []},
        "metadata": {"ready": true},
    })
}

fn envelope_response(status: u16, envelope: Value) -> Response {
    json_response(status, envelope.to_string().into_bytes())
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    Response {
        status,
        content_type: JSON,
        headers: Vec::new(),
        body,
    }
}

fn method_not_allowed(method: &str, allow: &str) -> Response {
    let error = MgmtError::new(
        "METHOD_NOT_ALLOWED",
        405,
        format!("method {method} is not allowed here; allowed: {allow}"),
    );
    let mut response = error_response(&error);
    response.headers.push(("Allow", allow.to_owned()));
    response
}

pub(crate) fn to_json(object: &impl Serialize) -> Result<Value, MgmtError> {
    serde_json::to_value(object)
        .map_err(|error| MgmtError::internal(format!("cannot encode the answer: {error}")))
}

/// Decodes a JSON object body.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, MgmtError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MgmtError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| MgmtError::bad_request(format!("invalid request body: {error}")))
}
