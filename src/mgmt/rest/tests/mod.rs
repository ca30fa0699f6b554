//! The REST layer in process, through [`handle`]: the OpenAPI description against the
//! route table, the real objects and the body structs; authentication on TCP and the unix
//! socket; the events that changes raise; list query edge cases; the controller routes; the
//! fault routes on a node without devices. This file holds the
//! shared fixture: a node, its admin's credentials and a `send` that goes through
//! [`handle`] as a TCP or unix-socket request.

mod auth;
mod controllers;
mod drive_schemas;
mod events_and_lists;
mod faults;
mod host_schemas;
mod openapi;

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Mgmt, Origin, handle};
use crate::mgmt::http::Request;
use crate::mgmt::tests::Fixture;
use crate::mgmt::users::SESSION_COOKIE;

/// A password long enough for the user store.
const PASSWORD: &str = "correct horse";

/// How a test request identifies itself.
#[derive(Clone)]
enum Credentials {
    /// A TCP request without credentials.
    Nobody,
    /// The unix socket.
    Local,
    /// A TCP request with this `Authorization` header.
    Header(String),
    /// A TCP request with this session token in its cookie.
    Session(String),
}

/// One answer: status, extra header fields and the body as JSON (`Null` when not JSON).
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    fn id(&self) -> u64 {
        self.body["result"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id in {}", self.body))
    }
}

fn send(
    mgmt: &Mgmt,
    credentials: &Credentials,
    method: &str,
    target: &str,
    body: Option<&Value>,
) -> Reply {
    let mut request = Request::new(method, target);
    if let Some(body) = body {
        request.body = body.to_string().into_bytes();
        request
            .fields
            .push(("content-type".into(), "application/json".into()));
    }
    let origin = match credentials {
        Credentials::Local => Origin::Local,
        Credentials::Nobody => Origin::Network,
        Credentials::Header(header) => {
            request.authorization = Some(header.clone());
            Origin::Network
        }
        Credentials::Session(token) => {
            request.cookie = Some(format!("other=1; {SESSION_COOKIE}={token}"));
            Origin::Network
        }
    };
    let response = handle(mgmt, &request, origin);
    Reply {
        status: response.status,
        headers: response.headers,
        body: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
    }
}

/// A fixture and the credentials of its admin, with shorthands for common calls.
struct Node {
    fixture: Fixture,
    admin: Credentials,
}

impl Node {
    fn new() -> Node {
        let fixture = Fixture::new();
        let admin = Credentials::Header(fixture.admin_basic());
        Node { fixture, admin }
    }

    fn mgmt(&self) -> &Mgmt {
        &self.fixture.mgmt
    }

    fn send(&self, who: &Credentials, method: &str, target: &str, body: Option<Value>) -> Reply {
        send(self.mgmt(), who, method, target, body.as_ref())
    }

    /// As the admin over TCP with basic credentials; the call must succeed.
    fn admin_ok(&self, method: &str, target: &str, body: Option<Value>) -> Value {
        let reply = self.send(&self.admin, method, target, body);
        assert!(
            reply.status < 300,
            "{method} {target}: {} {}",
            reply.status,
            reply.body
        );
        reply.body
    }

    fn create_pool(&self, name: &str, size: u64) -> u64 {
        let body = json!({"name": name, "physical_capacity": size});
        self.admin_ok("POST", "/api/rest/pools", Some(body))["result"]["id"]
            .as_u64()
            .unwrap()
    }

    fn create_volume(&self, name: &str, pool: u64, size: u64) -> u64 {
        let body = json!({"name": name, "pool_id": pool, "size": size});
        self.admin_ok("POST", "/api/rest/volumes", Some(body))["result"]["id"]
            .as_u64()
            .unwrap()
    }

    /// Creates a user with [`PASSWORD`] and returns its id and basic credentials.
    fn create_user(&self, name: &str, role: &str) -> (u64, Credentials) {
        let body = json!({"name": name, "password": PASSWORD, "role": role});
        let id = self.admin_ok("POST", "/api/rest/users", Some(body))["result"]["id"]
            .as_u64()
            .unwrap();
        (id, Credentials::Header(Fixture::basic(name, PASSWORD)))
    }

    /// The events whose code is `code`, oldest first.
    fn events(&self, code: &str) -> Vec<Value> {
        let body = self.admin_ok("GET", &format!("/api/rest/events?code=eq:{code}"), None);
        body["result"].as_array().unwrap().clone()
    }
}

fn sorted_keys(value: &Value) -> Vec<String> {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"));
    object
        .keys()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
