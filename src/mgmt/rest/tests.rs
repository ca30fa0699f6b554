//! The REST layer in process, through [`handle`]: the OpenAPI description against the
//! route table, the real objects and the body structs; authentication on TCP and the unix
//! socket; the events that changes raise; list query edge cases.

use std::collections::BTreeSet;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::openapi::{self, BODIES, OBJECTS, Schema, field_names};
use super::routes::ROUTES;
use super::{Mgmt, Origin, handle};
use crate::mgmt::api::{Management, PoolCreate, PoolUpdate, VolumeCreate, VolumeUpdate};
use crate::mgmt::http::Request;
use crate::mgmt::tests::Fixture;
use crate::mgmt::tests::memory::GIB;
use crate::mgmt::users::{DEFAULT_ADMIN_NAME, SESSION_COOKIE, UserCreate, UserUpdate};

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

fn sorted_fields(schema: &Schema) -> Vec<String> {
    field_names(schema)
        .into_iter()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn openapi_describes_exactly_the_routes() {
    let document = openapi::document();
    let mut described = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(operation["responses"].is_object(), "{method} {path}");
            described.insert((path.clone(), method.to_ascii_uppercase()));
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| (route.path.to_owned(), route.method.to_owned()))
        .collect();
    assert_eq!(described, routed);
    // Every schema a route names is described.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for route in ROUTES {
        for name in route.body.into_iter().chain(match route.answer {
            super::routes::Answer::Object(name) | super::routes::Answer::List(name) => Some(name),
            _ => None,
        }) {
            assert!(
                schemas.contains_key(name),
                "{} {}: {name}",
                route.method,
                route.path
            );
        }
    }
}

/// The JSON of one real object of each schema in [`OBJECTS`], as the API answers it.
fn real_object(node: &Node, schema: &str) -> Value {
    let get = |path: &str| node.admin_ok("GET", path, None)["result"].clone();
    let first = |path: &str| get(path)[0].clone();
    match schema {
        "System" => get("/api/rest/system"),
        "Feature" => first("/api/rest/_features"),
        "Pool" => first("/api/rest/pools"),
        "Volume" => first("/api/rest/volumes"),
        "User" => first("/api/rest/users"),
        "Event" => first("/api/rest/events"),
        "EventTypes" => get("/api/rest/events/types"),
        other => panic!("schema {other} has no real object in this test; add one"),
    }
}

#[test]
fn every_object_schema_matches_what_the_api_answers() {
    let node = Node::new();
    let pool = node.create_pool("p", GIB);
    node.create_volume("v", pool, GIB);
    for schema in OBJECTS {
        let object = real_object(&node, schema.name);
        assert_eq!(
            sorted_keys(&object),
            sorted_fields(schema),
            "schema {} against {object}",
            schema.name
        );
    }
    // The objects inside lists have the same keys as the single ones.
    let single = node.admin_ok("GET", &format!("/api/rest/pools/{pool}"), None);
    assert_eq!(
        sorted_keys(&single["result"]),
        sorted_fields(&openapi::POOL)
    );
}

/// A plausible value of a body field.
fn sample(field: &str, kind: &str) -> Value {
    match (field, kind) {
        ("role", _) => json!("POOL_ADMIN"),
        ("provtype", _) => json!("THICK"),
        ("password", _) => json!(PASSWORD),
        ("email", _) => json!("ops@example.com"),
        (_, "string") => json!("name1"),
        (_, "integer") => json!(50),
        (_, "boolean") => json!(true),
        (_, "[integer]") => json!([1]),
        (field, kind) => panic!("no sample for {field}: {kind}"),
    }
}

fn full_body(schema: &Schema) -> Value {
    let fields = schema
        .fields
        .iter()
        .map(|(field, kind)| ((*field).to_owned(), sample(field, kind)))
        .collect();
    Value::Object(fields)
}

fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_json::from_value(body.clone()).map_err(|error| error.to_string())
}

/// Deserializes `body` as the struct of body schema `name` and returns the names of the
/// fields that arrived. The destructurings are exhaustive, so a field added to a struct
/// fails to compile here until it is listed (and then this test wants it in the schema).
fn fields_received(name: &str, body: &Value) -> Result<Vec<&'static str>, String> {
    fn present(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
        fields
            .iter()
            .filter(|(_, there)| *there)
            .map(|(field, _)| *field)
            .collect()
    }
    Ok(match name {
        "UserCreate" => {
            let UserCreate {
                name: _,
                password: _,
                role: _,
                email,
                enabled,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("password", true),
                ("role", true),
                ("email", email.is_some()),
                ("enabled", enabled.is_some()),
            ])
        }
        "UserUpdate" => {
            let UserUpdate {
                name,
                password,
                role,
                email,
                enabled,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("password", password.is_some()),
                ("role", role.is_some()),
                ("email", email.is_some()),
                ("enabled", enabled.is_some()),
            ])
        }
        "PoolCreate" => {
            let PoolCreate {
                name: _,
                physical_capacity: _,
                virtual_capacity,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("physical_capacity", true),
                ("virtual_capacity", virtual_capacity.is_some()),
            ])
        }
        "PoolUpdate" => {
            let PoolUpdate {
                name,
                physical_capacity,
                virtual_capacity,
                physical_capacity_warning,
                physical_capacity_critical,
                ssd_enabled,
                owners,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("physical_capacity", physical_capacity.is_some()),
                ("virtual_capacity", virtual_capacity.is_some()),
                (
                    "physical_capacity_warning",
                    physical_capacity_warning.is_some(),
                ),
                (
                    "physical_capacity_critical",
                    physical_capacity_critical.is_some(),
                ),
                ("ssd_enabled", ssd_enabled.is_some()),
                ("owners", owners.is_some()),
            ])
        }
        "VolumeCreate" => {
            let VolumeCreate {
                name: _,
                pool_id: _,
                size: _,
                provtype,
                ssd_enabled,
                write_protected,
            } = parse(body)?;
            present(&[
                ("name", true),
                ("pool_id", true),
                ("size", true),
                ("provtype", provtype.is_some()),
                ("ssd_enabled", ssd_enabled.is_some()),
                ("write_protected", write_protected.is_some()),
            ])
        }
        "VolumeUpdate" => {
            let VolumeUpdate {
                name,
                size,
                write_protected,
                ssd_enabled,
            } = parse(body)?;
            present(&[
                ("name", name.is_some()),
                ("size", size.is_some()),
                ("write_protected", write_protected.is_some()),
                ("ssd_enabled", ssd_enabled.is_some()),
            ])
        }
        other => panic!("body schema {other} has no struct in this test; add one"),
    })
}

/// Bodies whose structs ignore unknown fields rather than refuse them.
const LENIENT_BODIES: &[&str] = &["PoolCreate", "VolumeCreate"];
/// Bodies whose structs are private to their handler, checked through [`handle`].
const HANDLER_BODIES: &[&str] = &["Login", "PoolOwner"];

#[test]
fn every_body_schema_lists_exactly_what_its_struct_accepts() {
    for schema in BODIES {
        if HANDLER_BODIES.contains(&schema.name) {
            continue;
        }
        let body = full_body(schema);
        let mut received = fields_received(schema.name, &body)
            .unwrap_or_else(|error| panic!("{}: {body} is refused: {error}", schema.name));
        received.sort_unstable();
        let mut listed = field_names(schema);
        listed.sort_unstable();
        assert_eq!(received, listed, "{}", schema.name);

        let mut required_only = serde_json::Map::new();
        for field in schema.required {
            required_only.insert((*field).to_owned(), body[*field].clone());
        }
        let mut required_only = Value::Object(required_only);
        let received = fields_received(schema.name, &required_only)
            .unwrap_or_else(|error| panic!("{}: only the required fields: {error}", schema.name));
        assert_eq!(received, schema.required, "{}", schema.name);
        for field in schema.required {
            let value = required_only
                .as_object_mut()
                .unwrap()
                .remove(*field)
                .unwrap();
            assert!(
                fields_received(schema.name, &required_only).is_err(),
                "{} accepts a body without {field}",
                schema.name
            );
            required_only[*field] = value;
        }

        let mut extra = body.clone();
        extra["unexpected_field"] = json!(1);
        let outcome = fields_received(schema.name, &extra);
        if LENIENT_BODIES.contains(&schema.name) {
            assert!(outcome.is_ok(), "{}: {outcome:?}", schema.name);
        } else {
            let error = outcome.expect_err(schema.name);
            assert!(
                error.contains("unexpected_field"),
                "{}: {error}",
                schema.name
            );
        }
    }
}

#[test]
fn the_handler_bodies_accept_their_schema_and_refuse_more() {
    let node = Node::new();
    let schema = |name: &str| BODIES.iter().find(|schema| schema.name == name).unwrap();
    for name in HANDLER_BODIES {
        assert!(BODIES.iter().any(|schema| schema.name == *name), "{name}");
    }

    let mut login = full_body(schema("Login"));
    login["username"] = json!(DEFAULT_ADMIN_NAME);
    login["password"] = json!(node.fixture.admin_password);
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login.clone()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    login["unexpected_field"] = json!(1);
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login),
    );
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    assert!(
        reply.message().contains("unexpected_field"),
        "{}",
        reply.message()
    );
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(json!({"username": DEFAULT_ADMIN_NAME})),
    );
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));

    let pool = node.create_pool("p", GIB);
    let (user, _) = node.create_user("ops", "POOL_ADMIN");
    let owners = format!("/api/rest/pools/{pool}/owners");
    let mut owner = full_body(schema("PoolOwner"));
    owner["user_id"] = json!(user);
    let reply = node.send(&node.admin, "POST", &owners, Some(owner.clone()));
    assert_eq!(reply.status, 201, "{}", reply.body);
    owner["unexpected_field"] = json!(1);
    let reply = node.send(&node.admin, "POST", &owners, Some(owner));
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    assert!(
        reply.message().contains("unexpected_field"),
        "{}",
        reply.message()
    );
}

/// A body of schema `schema` that its handler accepts, given the objects it acts on.
fn plausible_body(schema: &str, serial: usize, user: u64, pool: u64, password: &str) -> Value {
    match schema {
        "Login" => json!({"username": DEFAULT_ADMIN_NAME, "password": password}),
        "UserCreate" => {
            json!({"name": format!("new{serial}"), "password": PASSWORD, "role": "READ_ONLY"})
        }
        "UserUpdate" => json!({"email": "ops@example.com"}),
        "PoolCreate" => json!({"name": format!("new{serial}"), "physical_capacity": GIB}),
        "PoolUpdate" => json!({"name": format!("renamed{serial}")}),
        "PoolOwner" => json!({"user_id": user}),
        "VolumeCreate" => json!({"name": format!("new{serial}"), "pool_id": pool, "size": GIB}),
        "VolumeUpdate" => json!({"size": 2 * GIB}),
        other => panic!("no plausible body for {other}"),
    }
}

#[test]
fn every_documented_route_answers_an_admin() {
    let node = Node::new();
    let password = node.fixture.admin_password.clone();
    for (serial, route) in ROUTES.iter().enumerate() {
        // Fresh objects for each route, so deleting routes find theirs.
        let (user, _) = node.create_user(&format!("owner{serial}"), "POOL_ADMIN");
        let pool = node.create_pool(&format!("empty{serial}"), GIB);
        node.admin_ok(
            "POST",
            &format!("/api/rest/pools/{pool}/owners"),
            Some(json!({"user_id": user})),
        );
        let full = node.create_pool(&format!("full{serial}"), 4 * GIB);
        let volume = node.create_volume(&format!("vol{serial}"), full, GIB);
        let event = node.fixture.mgmt.events.last_id();
        let id = if route.path.starts_with("/api/rest/users/") {
            user
        } else if route.path.starts_with("/api/rest/pools/") {
            pool
        } else if route.path.starts_with("/api/rest/volumes/") {
            volume
        } else {
            event
        };
        let target = route
            .path
            .replace("{id}", &id.to_string())
            .replace("{user_id}", &user.to_string());
        let target = if route.approval {
            format!("{target}?approved=true")
        } else {
            target
        };
        let body = route
            .body
            .map(|schema| plausible_body(schema, serial, user, full, &password));
        let reply = node.send(&node.admin, route.method, &target, body);
        assert_eq!(
            reply.status, route.status,
            "{} {target}: {}",
            route.method, reply.body
        );
    }
}

#[test]
fn tcp_without_credentials_is_unauthorized_with_a_challenge() {
    let node = Node::new();
    for (method, path) in [
        ("GET", "/api/rest/system"),
        ("GET", "/api/rest/pools"),
        ("POST", "/api/rest/pools"),
        ("GET", "/metrics"),
    ] {
        let reply = node.send(&Credentials::Nobody, method, path, None);
        assert_eq!(
            (reply.status, reply.code()),
            (401, "UNAUTHORIZED"),
            "{path}"
        );
        assert_eq!(
            reply.header("WWW-Authenticate"),
            Some("Basic realm=\"troika\"")
        );
        assert_eq!(reply.body["result"], Value::Null);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode("no colon");
    for header in [
        "Bearer abc",
        "Basic !!!",
        &format!("Basic {encoded}"),
        "Basic",
    ] {
        let who = Credentials::Header(header.to_owned());
        let reply = node.send(&who, "GET", "/api/rest/system", None);
        assert_eq!(
            (reply.status, reply.code()),
            (401, "UNAUTHORIZED"),
            "{header}"
        );
        assert!(reply.header("WWW-Authenticate").is_some(), "{header}");
    }
    let reply = node.send(
        &Credentials::Session("not-a-session".into()),
        "GET",
        "/api/rest/system",
        None,
    );
    assert_eq!(reply.status, 401);
    assert!(
        node.fixture.api.pools().is_empty(),
        "a refused request changes nothing"
    );
    let reply = node.send(&node.admin, "GET", "/api/rest/system", None);
    assert_eq!(reply.status, 200);
}

#[test]
fn a_wrong_password_is_unauthorized_and_raises_a_login_failure() {
    let node = Node::new();
    let wrong = Credentials::Header(Fixture::basic(DEFAULT_ADMIN_NAME, "not the password"));
    let reply = node.send(&wrong, "GET", "/api/rest/system", None);
    assert_eq!((reply.status, reply.code()), (401, "UNAUTHORIZED"));
    assert!(reply.header("WWW-Authenticate").is_some());
    let nobody = Credentials::Header(Fixture::basic("nobody", PASSWORD));
    let unknown = node.send(&nobody, "GET", "/api/rest/system", None);
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.message().replace("nobody", "admin"),
        reply.message(),
        "same words for both"
    );
    let login = json!({"username": DEFAULT_ADMIN_NAME, "password": "still wrong"});
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login),
    );
    assert_eq!((reply.status, reply.code()), (401, "UNAUTHORIZED"));
    assert!(reply.header("Set-Cookie").is_none());

    let failures = node.events("USER_LOGIN_FAILURE");
    let users: Vec<&str> = failures
        .iter()
        .map(|event| event["username"].as_str().unwrap())
        .collect();
    assert_eq!(users, [DEFAULT_ADMIN_NAME, "nobody", DEFAULT_ADMIN_NAME]);
    assert!(failures.iter().all(|event| event["level"] == "WARNING"));
    assert!(
        !failures[0]["description"]
            .as_str()
            .unwrap()
            .contains("not the password")
    );
    let admin = node.admin_ok("GET", "/api/rest/users/current", None);
    assert_eq!(
        admin["result"]["failed_logins"], 0,
        "a success resets the count"
    );
}

fn session_token(set_cookie: &str) -> String {
    let (pair, attributes) = set_cookie.split_once(';').unwrap();
    assert!(attributes.contains("HttpOnly"), "{set_cookie}");
    let (name, token) = pair.split_once('=').unwrap();
    assert_eq!(name, SESSION_COOKIE);
    token.to_owned()
}

#[test]
fn login_opens_a_session_that_authenticates_until_logout() {
    let node = Node::new();
    let (_, _) = node.create_user("viewer", "READ_ONLY");
    let login = json!({"username": "viewer", "password": PASSWORD});
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["result"]["name"], "viewer");
    assert_eq!(reply.body["result"]["role"], "READ_ONLY");
    let token = session_token(reply.header("Set-Cookie").unwrap());
    assert!(token.len() >= 16, "{token}");
    let session = Credentials::Session(token);

    let current = node.send(&session, "GET", "/api/rest/users/current", None);
    assert_eq!(current.status, 200);
    assert_eq!(current.body["result"]["name"], "viewer");
    assert_eq!(
        node.send(&session, "GET", "/api/rest/pools", None).status,
        200
    );
    let refused = node.send(&session, "GET", "/api/rest/users", None);
    assert_eq!((refused.status, refused.code()), (403, "PERMISSION_DENIED"));

    let logout = node.send(&session, "POST", "/api/rest/users/logout", None);
    assert_eq!(logout.status, 200);
    assert!(logout.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    let after = node.send(&session, "GET", "/api/rest/pools", None);
    assert_eq!((after.status, after.code()), (401, "UNAUTHORIZED"));
    assert!(after.header("WWW-Authenticate").is_some());

    let codes: Vec<String> = ["USER_LOGIN_SUCCESS", "USER_LOGOUT"]
        .iter()
        .flat_map(|code| node.events(code))
        .map(|event| format!("{} {}", event["code"], event["username"]))
        .collect();
    assert_eq!(
        codes,
        [
            "\"USER_LOGIN_SUCCESS\" \"viewer\"",
            "\"USER_LOGOUT\" \"viewer\""
        ]
    );
}

#[test]
fn the_unix_socket_acts_as_the_local_admin() {
    let node = Node::new();
    let local = Credentials::Local;
    let reply = node.send(
        &local,
        "POST",
        "/api/rest/pools",
        Some(json!({"name": "p", "physical_capacity": GIB})),
    );
    assert_eq!(reply.status, 201);
    assert_eq!(
        node.send(&local, "GET", "/api/rest/users", None).status,
        200
    );
    let current = node.send(&local, "GET", "/api/rest/users/current", None);
    assert_eq!(current.body["result"]["name"], DEFAULT_ADMIN_NAME);
    // Credentials on the socket are not needed, and wrong ones are not looked at.
    let mut request = Request::new("GET", "/api/rest/users");
    request.authorization = Some(Fixture::basic("nobody", "wrong password"));
    assert_eq!(handle(node.mgmt(), &request, Origin::Local).status, 200);
    assert_eq!(handle(node.mgmt(), &request, Origin::Network).status, 401);
    let created = &node.events("POOL_CREATED")[0];
    assert_eq!(created["username"], "local");
}

#[test]
fn public_routes_need_no_credentials() {
    let node = Node::new();
    let features = node.send(&Credentials::Nobody, "GET", "/api/rest/_features", None);
    assert_eq!(features.status, 200);
    let names: Vec<&str> = features.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| feature["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pools") && names.contains(&"users"),
        "{names:?}"
    );
    let document = node.send(&Credentials::Nobody, "GET", "/api/rest/openapi.json", None);
    assert_eq!(document.status, 200);
    assert_eq!(document.body, openapi::document());
    let login = json!({"username": DEFAULT_ADMIN_NAME, "password": node.fixture.admin_password});
    let reply = node.send(
        &Credentials::Nobody,
        "POST",
        "/api/rest/users/login",
        Some(login),
    );
    assert_eq!(reply.status, 200);
    // A public route still refuses bad credentials rather than ignoring them.
    let wrong = Credentials::Header(Fixture::basic(DEFAULT_ADMIN_NAME, "wrong password"));
    assert_eq!(
        node.send(&wrong, "GET", "/api/rest/_features", None).status,
        401
    );
}

#[test]
fn roles_limit_what_users_may_change() {
    let node = Node::new();
    let mine = node.create_pool("mine", 4 * GIB);
    let theirs = node.create_pool("theirs", 4 * GIB);
    let (pool_admin, ops) = node.create_user("ops", "POOL_ADMIN");
    let (_, viewer) = node.create_user("viewer", "READ_ONLY");
    node.admin_ok(
        "PUT",
        &format!("/api/rest/pools/{mine}"),
        Some(json!({"owners": [pool_admin]})),
    );
    let volume = |pool: u64, name: &str| json!({"name": name, "pool_id": pool, "size": GIB});

    let reply = node.send(&ops, "POST", "/api/rest/volumes", Some(volume(mine, "a")));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = node.send(&ops, "POST", "/api/rest/volumes", Some(volume(theirs, "b")));
    assert_eq!((reply.status, reply.code()), (403, "PERMISSION_DENIED"));
    let reply = node.send(
        &ops,
        "POST",
        "/api/rest/pools",
        Some(json!({"name": "x", "physical_capacity": GIB})),
    );
    assert_eq!((reply.status, reply.code()), (403, "PERMISSION_DENIED"));
    let reply = node.send(
        &viewer,
        "POST",
        "/api/rest/volumes",
        Some(volume(mine, "c")),
    );
    assert_eq!((reply.status, reply.code()), (403, "PERMISSION_DENIED"));
    assert_eq!(
        node.send(&viewer, "GET", "/api/rest/volumes", None).status,
        200
    );

    let volumes = node.fixture.api.volumes();
    let names: Vec<&str> = volumes.iter().map(|volume| volume.name.as_str()).collect();
    assert_eq!(names, ["a"], "refused requests created nothing");
    let denied = node.events("ACCESS_DENIED");
    let users: Vec<&str> = denied
        .iter()
        .map(|e| e["username"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ops", "ops", "viewer"]);
    assert_eq!(denied[0]["affected_entity_id"], theirs);
}

#[test]
fn changes_raise_events_naming_the_user() {
    let node = Node::new();
    let (_, ops) = node.create_user("ops2", "ADMIN");
    let as_ops = |method: &str, path: &str, body: Option<Value>| {
        let reply = node.send(&ops, method, path, body);
        assert!(reply.status < 300, "{method} {path}: {}", reply.body);
        reply
    };
    let pool = as_ops(
        "POST",
        "/api/rest/pools",
        Some(json!({"name": "p", "physical_capacity": 4 * GIB})),
    )
    .id();
    as_ops(
        "PUT",
        &format!("/api/rest/pools/{pool}"),
        Some(json!({"name": "q"})),
    );
    as_ops(
        "PUT",
        &format!("/api/rest/pools/{pool}"),
        Some(json!({"ssd_enabled": false})),
    );
    let volume = as_ops(
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "v", "pool_id": pool, "size": GIB})),
    )
    .id();
    let path = format!("/api/rest/volumes/{volume}");
    as_ops("PUT", &path, Some(json!({"name": "w"})));
    as_ops("PUT", &path, Some(json!({"size": 2 * GIB})));
    as_ops("PUT", &path, Some(json!({"write_protected": true})));
    as_ops("DELETE", &format!("{path}?approved=true"), None);
    as_ops(
        "DELETE",
        &format!("/api/rest/pools/{pool}?approved=true"),
        None,
    );

    let all = node.admin_ok(
        "GET",
        "/api/rest/events?username=eq:ops2&page_size=1000",
        None,
    );
    let seen: Vec<(String, u64)> = all["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["code"].as_str().unwrap().to_owned(),
                event["affected_entity_id"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("POOL_CREATED", pool),
        ("POOL_RENAMED", pool),
        ("POOL_UPDATED", pool),
        ("VOLUME_CREATED", volume),
        ("VOLUME_RENAMED", volume),
        ("VOLUME_RESIZED", volume),
        ("VOLUME_UPDATED", volume),
        ("VOLUME_DELETED", volume),
        ("POOL_DELETED", pool),
    ]
    .iter()
    .map(|(code, id)| ((*code).to_owned(), *id))
    .collect();
    assert_eq!(seen, expected);
    let resized = &node.events("VOLUME_RESIZED")[0];
    let description = resized["description"].as_str().unwrap();
    assert!(
        description.contains(&GIB.to_string()) && description.contains(&(2 * GIB).to_string()),
        "{description}"
    );
    assert_eq!(
        node.events("POOL_RENAMED")[0]["description"],
        "pool \"p\" renamed to \"q\""
    );

    // A refused change raises nothing.
    let before = node.fixture.mgmt.events.last_id();
    let reply = node.send(
        &ops,
        "POST",
        "/api/rest/pools",
        Some(json!({"name": "big", "physical_capacity": u64::MAX / 2})),
    );
    assert_eq!(reply.status, 409);
    assert_eq!(node.fixture.mgmt.events.last_id(), before);
}

#[test]
fn events_filter_sort_and_page() {
    let node = Node::new();
    for index in 0..5 {
        node.create_pool(&format!("p{index}"), GIB);
    }
    let wrong = Credentials::Header(Fixture::basic(DEFAULT_ADMIN_NAME, "wrong password"));
    node.send(&wrong, "GET", "/api/rest/system", None);
    node.send(&wrong, "GET", "/api/rest/system", None);

    let warnings = node.admin_ok("GET", "/api/rest/events?level=eq:WARNING", None);
    let codes: Vec<&str> = warnings["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["USER_LOGIN_FAILURE", "USER_LOGIN_FAILURE"]);
    assert_eq!(warnings["metadata"]["number_of_objects"], 2);

    let created = node.admin_ok("GET", "/api/rest/events?code=eq:POOL_CREATED", None);
    assert_eq!(created["metadata"]["number_of_objects"], 5);
    let total = node.fixture.mgmt.events.len() as u64;
    let newest = node.admin_ok("GET", "/api/rest/events?sort=-id&page_size=1", None);
    assert_eq!(newest["result"].as_array().unwrap().len(), 1);
    assert_eq!(
        newest["result"][0]["id"],
        node.fixture.mgmt.events.last_id()
    );
    assert_eq!(newest["result"][0]["code"], "USER_LOGIN_FAILURE");
    assert_eq!(
        newest["metadata"],
        json!({"ready": true, "page": 1, "page_size": 1, "pages_total": total, "number_of_objects": total})
    );

    let page = node.admin_ok(
        "GET",
        "/api/rest/events?code=eq:POOL_CREATED&page_size=2&page=3&fields=id,code",
        None,
    );
    assert_eq!(
        page["metadata"],
        json!({"ready": true, "page": 3, "page_size": 2, "pages_total": 3, "number_of_objects": 5})
    );
    assert_eq!(sorted_keys(&page["result"][0]), ["code", "id"]);
    let oldest_first = node.admin_ok(
        "GET",
        "/api/rest/events?code=eq:POOL_CREATED&sort=description",
        None,
    );
    let descriptions: Vec<&str> = oldest_first["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    let mut sorted = descriptions.clone();
    sorted.sort_unstable();
    assert_eq!(descriptions, sorted);
    let one = node.admin_ok(
        "GET",
        &format!("/api/rest/events/{}", created["result"][0]["id"]),
        None,
    );
    assert_eq!(one["result"], created["result"][0]);
    let missing = node.send(&node.admin, "GET", "/api/rest/events/999999", None);
    assert_eq!((missing.status, missing.code()), (404, "EVENT_NOT_FOUND"));
    for bad in ["level=eq:WARNING&colour=red", "sort=colour", "page_size=0"] {
        let reply = node.send(&node.admin, "GET", &format!("/api/rest/events?{bad}"), None);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
}

#[test]
fn list_queries_and_their_edge_cases() {
    let node = Node::new();
    let pool = node.create_pool("p", 100 * GIB);
    let ids: Vec<u64> = (1..=9)
        .map(|size| node.create_volume(&format!("v{size}"), pool, size * GIB))
        .collect();
    let names = |query: &str| -> Vec<String> {
        let body = node.admin_ok("GET", &format!("/api/rest/volumes?{query}"), None);
        body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|volume| volume["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Repeated keys are ANDed.
    assert_eq!(
        names(&format!("size=gt:{}&size=lt:{}", GIB, 4 * GIB)),
        ["v2", "v3"]
    );
    assert_eq!(
        names(&format!("size=ge:{}&name=ne:v9&name=ne:v8", 7 * GIB)),
        ["v7"]
    );
    assert_eq!(
        names(&format!("id=in:({},{})", ids[0], ids[1])),
        ["v1", "v2"]
    );
    assert_eq!(names(&format!("id=in:({})", ids[4])), ["v5"]);
    assert_eq!(
        names(&format!(
            "size=between:({},{})&sort=-size",
            3 * GIB,
            5 * GIB
        )),
        ["v5", "v4", "v3"]
    );
    assert_eq!(names("name=between:(v2,v3)"), ["v2", "v3"]);
    assert_eq!(
        names("name=in:(v1,%20v2)"),
        ["v1", "v2"],
        "items are trimmed"
    );
    assert_eq!(names("cg_id=is:null&name=like:v9"), ["v9"]);
    assert!(names("cg_id=isnot:null").is_empty());
    assert_eq!(
        names("size=gt:1&size=lt:9"),
        Vec::<String>::new(),
        "bytes, not GiB"
    );

    for (query, code, what) in [
        ("colour=eq:red", "BAD_REQUEST", "colour"),
        ("size=gt:1&colour=red", "BAD_REQUEST", "colour"),
        ("page_size=1001", "INVALID_PAGE_SIZE", "1001"),
        ("page=0", "INVALID_PAGE", "0"),
        ("page=-1", "INVALID_PAGE", "-1"),
        ("size=between:(1)", "BAD_REQUEST", "between"),
        ("size=between:(1,2,3)", "BAD_REQUEST", "between"),
        ("size=in:(1,x)", "BAD_REQUEST", "x"),
    ] {
        let reply = node.send(
            &node.admin,
            "GET",
            &format!("/api/rest/volumes?{query}"),
            None,
        );
        assert_eq!(
            (reply.status, reply.code()),
            (400, code),
            "{query}: {}",
            reply.body
        );
        assert!(
            reply.message().contains(what),
            "{query}: {}",
            reply.message()
        );
    }
    let largest = node.admin_ok("GET", "/api/rest/volumes?page_size=1000", None);
    assert_eq!(largest["metadata"]["page_size"], 1000);
    // A page past the end is empty, not an error.
    let past = node.admin_ok("GET", "/api/rest/volumes?page_size=5&page=3", None);
    assert_eq!(past["result"], json!([]));
    assert_eq!(past["metadata"]["pages_total"], 2);
}
