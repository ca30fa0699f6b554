//! The controller routes: the list and its query conventions, one controller, failing
//! (with approval) and recovering, bad numbers, and who may do what.

use serde_json::{Value, json};

use super::{Credentials, Node, Reply};
use crate::mgmt::api::Management;

fn states(node: &Node) -> Vec<String> {
    node.fixture
        .api()
        .controllers()
        .into_iter()
        .map(|controller| controller.state)
        .collect()
}

fn assert_refused(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(
        (reply.status, reply.code()),
        (status, code),
        "{what}: {}",
        reply.body
    );
    assert_eq!(reply.body["result"], Value::Null, "{what}");
}

#[test]
fn controllers_are_listed_with_the_list_conventions() {
    let node = Node::new();
    let list = node.admin_ok("GET", "/api/rest/controllers", None);
    let controllers = list["result"].as_array().unwrap();
    let ids: Vec<u64> = controllers
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(controllers[1]["name"], "controller-2");
    assert_eq!(controllers[1]["state"], "ACTIVE");
    assert_eq!(controllers[1]["ports"], json!(["nbd://127.0.0.1:10810"]));
    assert_eq!(controllers[1]["remirror_progress"], Value::Null);
    assert_eq!(list["metadata"]["number_of_objects"], 3);

    let page = node.admin_ok("GET", "/api/rest/controllers?page_size=2&page=2", None);
    assert_eq!(page["result"].as_array().unwrap().len(), 1);
    assert_eq!(page["result"][0]["id"], 3);
    assert_eq!(page["metadata"]["pages_total"], 2);

    let sorted = node.admin_ok(
        "GET",
        "/api/rest/controllers?sort=-id&fields=id,state",
        None,
    );
    assert_eq!(
        sorted["result"],
        json!([
            {"id": 3, "state": "ACTIVE"},
            {"id": 2, "state": "ACTIVE"},
            {"id": 1, "state": "ACTIVE"},
        ])
    );

    node.admin_ok("POST", "/api/rest/controllers/2/fail?approved=true", None);
    let failed = node.admin_ok("GET", "/api/rest/controllers?state=eq:FAILED", None);
    assert_eq!(failed["metadata"]["number_of_objects"], 1);
    assert_eq!(failed["result"][0]["id"], 2);
    let remirroring = node.admin_ok(
        "GET",
        "/api/rest/controllers?remirror_progress=isnot:null&ownership_share=gt:0.4&fields=id",
        None,
    );
    assert_eq!(remirroring["result"], json!([{"id": 1}, {"id": 3}]));

    let reply = node.send(&node.admin, "GET", "/api/rest/controllers?rack=1", None);
    assert_refused(&reply, 400, "BAD_REQUEST", "an unknown filter field");
    assert!(reply.message().contains("rack"), "{}", reply.message());
    let reply = node.send(
        &node.admin,
        "GET",
        "/api/rest/controllers?page_size=0",
        None,
    );
    assert_refused(&reply, 400, "INVALID_PAGE_SIZE", "page_size=0");
}

#[test]
fn one_controller_is_shown_and_bad_numbers_are_not_found() {
    let node = Node::new();
    let one = node.admin_ok("GET", "/api/rest/controllers/3", None);
    assert_eq!(one["result"]["id"], 3);
    assert_eq!(one["result"]["owned_sections"], 1024);
    let listed = node.admin_ok("GET", "/api/rest/controllers", None);
    assert_eq!(one["result"], listed["result"][2]);
    let projected = node.admin_ok("GET", "/api/rest/controllers/3?fields=state", None);
    assert_eq!(projected["result"], json!({"state": "ACTIVE"}));

    for id in ["0", "4", "-1", "abc", "1.5", "99999999999"] {
        for (method, path) in [
            ("GET", format!("/api/rest/controllers/{id}")),
            (
                "POST",
                format!("/api/rest/controllers/{id}/fail?approved=true"),
            ),
            ("POST", format!("/api/rest/controllers/{id}/fail")),
            ("POST", format!("/api/rest/controllers/{id}/recover")),
        ] {
            let reply = node.send(&node.admin, method, &path, None);
            assert_refused(&reply, 404, "CONTROLLER_NOT_FOUND", &path);
        }
    }
    let reply = node.send(&node.admin, "GET", "/api/rest/controllers/2/fail", None);
    assert_refused(&reply, 405, "METHOD_NOT_ALLOWED", "GET .../fail");
    assert_eq!(reply.header("Allow"), Some("POST"));
    let reply = node.send(&node.admin, "DELETE", "/api/rest/controllers/2", None);
    assert_eq!(reply.header("Allow"), Some("GET"));
    assert_eq!(states(&node), ["ACTIVE"; 3]);
}

#[test]
fn failing_needs_approval_and_recovering_brings_the_controller_back() {
    let node = Node::new();
    for target in [
        "/api/rest/controllers/2/fail",
        "/api/rest/controllers/2/fail?approved=false",
    ] {
        let reply = node.send(&node.admin, "POST", target, None);
        assert_refused(&reply, 403, "APPROVAL_REQUIRED", target);
        assert!(
            reply.message().contains("approved=true"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(states(&node), ["ACTIVE"; 3]);

    let events_before = node.fixture.mgmt.events.last_id();
    let failed = node.admin_ok("POST", "/api/rest/controllers/2/fail?approved=true", None);
    assert_eq!(failed["result"]["id"], 2);
    assert_eq!(failed["result"]["state"], "FAILED");
    assert_eq!(failed["result"]["ports"], json!([]));
    assert_eq!(failed["result"]["owned_sections"], 0);
    assert_eq!(failed["result"]["failovers"], 1);
    // The node raises CONTROLLER_FAILED itself; the REST layer adds nothing.
    assert_eq!(node.fixture.mgmt.events.last_id(), events_before);
    assert_eq!(states(&node), ["ACTIVE", "FAILED", "ACTIVE"]);
    let survivor = node.admin_ok("GET", "/api/rest/controllers/1", None);
    assert_eq!(survivor["result"]["owned_sections"], 1536);
    assert_eq!(survivor["result"]["remirror_progress"], 0.0);

    let reply = node.send(
        &node.admin,
        "POST",
        "/api/rest/controllers/2/fail?approved=true",
        None,
    );
    assert_refused(
        &reply,
        409,
        "CONTROLLER_STATE",
        "failing a FAILED controller",
    );
    node.admin_ok("POST", "/api/rest/controllers/3/fail?approved=true", None);
    let reply = node.send(
        &node.admin,
        "POST",
        "/api/rest/controllers/1/fail?approved=true",
        None,
    );
    assert_refused(
        &reply,
        409,
        "CONTROLLER_STATE",
        "failing the last live controller",
    );
    assert!(reply.message().contains("last"), "{}", reply.message());
    let reply = node.send(&node.admin, "POST", "/api/rest/controllers/1/recover", None);
    assert_refused(
        &reply,
        409,
        "CONTROLLER_STATE",
        "recovering an ACTIVE controller",
    );
    assert_eq!(states(&node), ["ACTIVE", "FAILED", "FAILED"]);

    let recovered = node.admin_ok("POST", "/api/rest/controllers/2/recover", None);
    assert_eq!(recovered["result"]["state"], "RECOVERING");
    assert_eq!(recovered["result"]["failback_progress"], 0.0);
    assert_eq!(
        recovered["result"]["ports"],
        json!(["nbd://127.0.0.1:10810"])
    );
    let reply = node.send(&node.admin, "POST", "/api/rest/controllers/2/recover", None);
    assert_refused(
        &reply,
        409,
        "CONTROLLER_STATE",
        "recovering a RECOVERING one",
    );
    // A RECOVERING controller may fail again.
    let failed = node.admin_ok("POST", "/api/rest/controllers/2/fail?approved=true", None);
    assert_eq!(failed["result"]["failovers"], 2);
    node.admin_ok("POST", "/api/rest/controllers/2/recover", None);
    node.admin_ok("POST", "/api/rest/controllers/3/recover", None);
    node.fixture.api().advance_controllers(0.5);
    let halfway = node.admin_ok("GET", "/api/rest/controllers/2", None);
    assert_eq!(halfway["result"]["failback_progress"], 0.5);
    node.fixture.api().advance_controllers(0.5);
    assert_eq!(states(&node), ["ACTIVE"; 3]);
    let failed_twice = node.admin_ok("GET", "/api/rest/controllers/2", None);
    assert_eq!(failed_twice["result"]["failovers"], 2);
    assert_eq!(failed_twice["result"]["failback_progress"], Value::Null);
}

#[test]
fn only_admins_and_technicians_fail_and_recover() {
    let node = Node::new();
    let (_, technician) = node.create_user("tech", "TECHNICIAN");
    let (_, viewer) = node.create_user("viewer", "READ_ONLY");
    let (_, pool_admin) = node.create_user("ops", "POOL_ADMIN");
    let fail = "/api/rest/controllers/2/fail?approved=true";
    let recover = "/api/rest/controllers/2/recover";

    for who in [&viewer, &pool_admin, &technician, &node.admin] {
        for path in ["/api/rest/controllers", "/api/rest/controllers/2"] {
            let reply = node.send(who, "GET", path, None);
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        }
    }
    for who in [&viewer, &pool_admin] {
        for path in [fail, recover] {
            let reply = node.send(who, "POST", path, None);
            assert_refused(&reply, 403, "PERMISSION_DENIED", path);
            assert!(
                reply.message().contains("ADMIN or TECHNICIAN"),
                "{}",
                reply.message()
            );
        }
    }
    for path in ["/api/rest/controllers", fail, recover] {
        let method = if path == "/api/rest/controllers" {
            "GET"
        } else {
            "POST"
        };
        let reply = node.send(&Credentials::Nobody, method, path, None);
        assert_refused(&reply, 401, "UNAUTHORIZED", path);
    }
    assert_eq!(
        states(&node),
        ["ACTIVE"; 3],
        "refused requests changed nothing"
    );
    let denied: Vec<String> = node
        .events("ACCESS_DENIED")
        .iter()
        .map(|event| event["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(denied, ["viewer", "viewer", "ops", "ops"]);

    let reply = node.send(&technician, "POST", fail, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(states(&node), ["ACTIVE", "FAILED", "ACTIVE"]);
    let reply = node.send(&technician, "POST", recover, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(states(&node), ["ACTIVE", "RECOVERING", "ACTIVE"]);
    // The unix socket is the local ADMIN.
    let reply = node.send(&Credentials::Local, "POST", fail, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = node.send(&node.admin, "POST", recover, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
}
