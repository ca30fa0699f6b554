//! Authentication on TCP (basic, sessions, challenges) and the unix socket, public routes
//! and what each role may change.

use base64::Engine;
use serde_json::{Value, json};

use super::{Credentials, Node, PASSWORD};
use crate::mgmt::api::Management;
use crate::mgmt::http::Request;
use crate::mgmt::rest::openapi;
use crate::mgmt::rest::{Origin, handle};
use crate::mgmt::tests::Fixture;
use crate::mgmt::tests::memory::GIB;
use crate::mgmt::users::{DEFAULT_ADMIN_NAME, SESSION_COOKIE};

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
        node.fixture.api().pools().is_empty(),
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

    let volumes = node.fixture.api().volumes();
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
