//! The fault routes on a node without devices (the test fake): the role check still comes
//! first, then every route refuses with `FAULTS_UNAVAILABLE` and raises nothing. The routes
//! on a real node are exercised by tests/mgmt_roles.rs and tests/cli.rs.

use serde_json::json;

use super::{Credentials, Node};

const FAULT_CALLS: &[(&str, &str)] = &[
    ("GET", "/api/rest/faults"),
    ("POST", "/api/rest/faults?approved=true"),
    ("DELETE", "/api/rest/faults?approved=true"),
    ("GET", "/api/rest/faults/log"),
    ("DELETE", "/api/rest/faults/1?approved=true"),
    ("POST", "/api/rest/faults/power_cut?approved=true"),
];

#[test]
fn a_node_without_devices_refuses_every_fault_route_after_the_role_check() {
    let node = Node::new();
    let (_, technician) = node.create_user("tech", "TECHNICIAN");
    let (_, read_only) = node.create_user("viewer", "READ_ONLY");
    let body = json!({"device": "nlsas3", "op": "write", "error": "eio"});
    for (method, target) in FAULT_CALLS {
        let body = (*method == "POST").then(|| body.clone());
        for who in [&node.admin, &technician] {
            let reply = node.send(who, method, target, body.clone());
            assert_eq!(
                (reply.status, reply.code()),
                (409, "FAULTS_UNAVAILABLE"),
                "{method} {target}: {}",
                reply.body
            );
        }
        let reply = node.send(&read_only, method, target, body.clone());
        assert_eq!(
            (reply.status, reply.code()),
            (403, "PERMISSION_DENIED"),
            "{method} {target}"
        );
        let reply = node.send(&Credentials::Nobody, method, target, body);
        assert_eq!(reply.status, 401, "{method} {target}");
    }
    for code in ["FAULT_INJECTED", "FAULT_CLEARED", "POWER_CUT"] {
        assert!(node.events(code).is_empty(), "{code} raised");
    }
}
