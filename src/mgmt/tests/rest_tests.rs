//! Routes, envelope, pagination, filters, approval.

use super::*;

/// The unit of the tests on the real node (where the fake's tests use GiB: the small
/// store holds about 128 MiB).
const MIB: u64 = 1 << 20;

#[test]
fn system_answers_in_the_envelope() {
    let server = TestServer::start();
    let response = only_response(
        &server.raw(b"GET /api/rest/system HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("connection"), Some("close"));
    let envelope = response.json();
    assert_eq!(envelope["error"], Value::Null);
    assert_eq!(envelope["metadata"], json!({"ready": true}));
    assert_eq!(envelope["result"]["name"], "troika-test");
    assert_eq!(envelope["result"]["physical_capacity"], SYSTEM_CAPACITY);
    // `version` is the InfiniBox API level clients check; troika's release is separate.
    assert_eq!(envelope["result"]["version"], "2.0.0");
    assert_eq!(envelope["result"]["version"], API_LEVEL);
    assert_eq!(
        envelope["result"]["troika_version"],
        env!("CARGO_PKG_VERSION")
    );
}

/// On the real node's management calls: the objects it serializes are the ones clients see.
#[test]
fn field_lists_match_the_serialized_objects() {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::node::small_node_api(dir.path());
    let pool = node
        .create_pool(PoolCreate {
            name: "p".into(),
            physical_capacity: 16 << 20,
            virtual_capacity: None,
        })
        .unwrap();
    let volume = node
        .create_volume(VolumeCreate {
            name: "v".into(),
            pool_id: pool.id,
            size: 4 << 20,
            provtype: None,
            ssd_enabled: None,
            write_protected: None,
        })
        .unwrap();
    let keys = |value: Value| {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let sorted = |fields: &[&str]| {
        let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        fields.sort();
        fields
    };
    assert_eq!(
        keys(serde_json::to_value(pool).unwrap()),
        sorted(&field_names(&POOL))
    );
    assert_eq!(
        keys(serde_json::to_value(volume).unwrap()),
        sorted(&field_names(&VOLUME))
    );
}

/// On the real node.
#[test]
fn pools_are_created_read_listed_and_deleted_with_approval() {
    let server = TestServer::start_on_node();
    let body = json!({"name": "gold", "physical_capacity": 10 * MIB, "virtual_capacity": 20 * MIB});
    let (status, created) = server.call("POST", "/api/rest/pools", Some(body.clone()));
    assert_eq!(status, 201);
    assert_eq!(created["error"], Value::Null);
    assert_eq!(created["result"]["virtual_capacity"], 20 * MIB);
    let id = created["result"]["id"].as_u64().unwrap();

    let (status, again) = server.call("POST", "/api/rest/pools", Some(body));
    assert_eq!(status, 409);
    assert_error(&again, "NAME_CONFLICT");

    let (_, system) = server.call("GET", "/api/rest/system", None);
    let system_capacity = system["result"]["physical_capacity"].as_u64().unwrap();
    let too_big = json!({"name": "huge", "physical_capacity": 2 * system_capacity});
    let (status, refused) = server.call("POST", "/api/rest/pools", Some(too_big));
    assert_eq!(status, 409);
    assert_error(&refused, "SYSTEM_CAPACITY_EXCEEDED");

    let (status, one) = server.call("GET", &format!("/api/rest/pools/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(one["result"], created["result"]);

    let (status, list) = server.call("GET", "/api/rest/pools", None);
    assert_eq!(status, 200);
    assert_eq!(names(&list), ["gold"]);

    let (status, refused) = server.call("DELETE", &format!("/api/rest/pools/{id}"), None);
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, refused) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{id}?approved=false"),
        None,
    );
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");

    let (status, deleted) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{id}?approved=true"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(deleted["result"]["name"], "gold");

    let (status, gone) = server.call("GET", &format!("/api/rest/pools/{id}"), None);
    assert_eq!(status, 404);
    assert_error(&gone, "POOL_NOT_FOUND");
    let (status, gone) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{id}?approved=true"),
        None,
    );
    assert_eq!(status, 404);
    assert_error(&gone, "POOL_NOT_FOUND");
    let (status, bad_id) = server.call("GET", "/api/rest/pools/abc", None);
    assert_eq!(status, 404);
    assert_error(&bad_id, "POOL_NOT_FOUND");
}

/// On the real node.
#[test]
fn volumes_are_created_resized_and_deleted() {
    let server = TestServer::start_on_node();
    let pool = server.create_pool("silver", 64 * MIB);
    let body = json!({"name": "db", "pool_id": pool, "size": 10 * MIB, "provtype": "THICK"});
    let (status, created) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 201);
    assert_eq!(created["result"]["type"], "MASTER");
    assert_eq!(created["result"]["provtype"], "THICK");
    assert_eq!(created["result"]["pool_name"], "silver");
    let id = created["result"]["id"].as_u64().unwrap();
    let path = format!("/api/rest/volumes/{id}");

    let no_pool = json!({"name": "x", "pool_id": 999, "size": MIB});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(no_pool));
    assert_eq!(status, 404);
    assert_error(&refused, "POOL_NOT_FOUND");

    let (status, grown) = server.call("PUT", &path, Some(json!({"size": 20 * MIB})));
    assert_eq!(status, 200);
    assert_eq!(grown["result"]["size"], 20 * MIB);

    let (status, refused) = server.call("PUT", &path, Some(json!({"size": 5 * MIB})));
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, shrunk) = server.call(
        "PUT",
        &format!("{path}?approved=true"),
        Some(json!({"size": 5 * MIB})),
    );
    assert_eq!(status, 200);
    assert_eq!(shrunk["result"]["size"], 5 * MIB);

    // One PUT may rename and resize; a field the update does not know is refused by name.
    let (status, changed) = server.call(
        "PUT",
        &path,
        Some(json!({"size": 6 * MIB, "name": "renamed"})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["result"]["name"], "renamed");
    assert_eq!(changed["result"]["size"], 6 * MIB);
    let (status, refused) = server.call("PUT", &path, Some(json!({"colour": "red"})));
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{refused}"
    );

    let (status, busy) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{pool}?approved=true"),
        None,
    );
    assert_eq!(status, 409);
    assert_error(&busy, "POOL_NOT_EMPTY");

    let (status, refused) = server.call("DELETE", &path, None);
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, deleted) = server.call("DELETE", &format!("{path}?approved=true"), None);
    assert_eq!(status, 200);
    assert_eq!(deleted["result"]["name"], "renamed");
    let (status, gone) = server.call("GET", &path, None);
    assert_eq!(status, 404);
    assert_error(&gone, "VOLUME_NOT_FOUND");
    let (status, gone) = server.call("PUT", &path, Some(json!({"size": MIB})));
    assert_eq!(status, 404);
    assert_error(&gone, "VOLUME_NOT_FOUND");
}

#[test]
fn bad_bodies_are_refused_naming_the_field() {
    let server = TestServer::start();
    let mut stream = server.connect();
    let body = br#"{"name": "p", "physical_capacity": "#;
    let request = format!(
        "POST /api/rest/pools HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let response = only_response(&read_to_close(&mut stream));
    assert_eq!(response.status, 400);
    assert_error(&response.json(), "BAD_REQUEST");

    let (status, missing) = server.call("POST", "/api/rest/pools", Some(json!({"name": "p"})));
    assert_eq!(status, 400);
    assert_error(&missing, "BAD_REQUEST");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("physical_capacity"),
        "{missing}"
    );

    let wrong_type = json!({"name": "v", "pool_id": "one", "size": 1});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(wrong_type));
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");

    let (status, empty) = server.call("POST", "/api/rest/volumes", None);
    assert_eq!(status, 400);
    assert_error(&empty, "BAD_REQUEST");
    server.assert_alive();
}

#[test]
fn lists_page_with_metadata() {
    let server = TestServer::start();
    for index in 0..7 {
        server.create_pool(&format!("pool-{index}"), GIB);
    }
    let (status, page) = server.call("GET", "/api/rest/pools?page_size=3&page=2", None);
    assert_eq!(status, 200);
    assert_eq!(names(&page), ["pool-3", "pool-4", "pool-5"]);
    assert_eq!(
        page["metadata"],
        json!({"ready": true, "page": 2, "page_size": 3, "pages_total": 3, "number_of_objects": 7})
    );
    let (_, last) = server.call("GET", "/api/rest/pools?page_size=3&page=3", None);
    assert_eq!(names(&last), ["pool-6"]);
    let (status, past) = server.call("GET", "/api/rest/pools?page_size=3&page=4", None);
    assert_eq!(status, 200);
    assert_eq!(past["result"], json!([]));

    let (_, default) = server.call("GET", "/api/rest/pools", None);
    assert_eq!(default["metadata"]["page"], 1);
    assert_eq!(default["metadata"]["page_size"], 50);
    assert_eq!(default["metadata"]["pages_total"], 1);
    assert_eq!(default["metadata"]["number_of_objects"], 7);

    let (_, largest) = server.call("GET", "/api/rest/pools?page_size=1000", None);
    assert_eq!(largest["metadata"]["page_size"], 1000);
    for bad in ["1001", "0", "-1", "many"] {
        let (status, refused) =
            server.call("GET", &format!("/api/rest/pools?page_size={bad}"), None);
        assert_eq!(status, 400);
        assert_error(&refused, "INVALID_PAGE_SIZE");
    }
    let (status, refused) = server.call("GET", "/api/rest/pools?page=0", None);
    assert_eq!(status, 400);
    assert_error(&refused, "INVALID_PAGE");

    let (_, empty) = server.call("GET", "/api/rest/volumes", None);
    assert_eq!(empty["result"], json!([]));
    assert_eq!(empty["metadata"]["number_of_objects"], 0);
    assert_eq!(empty["metadata"]["pages_total"], 0);
}

#[test]
fn lists_filter_sort_and_project() {
    let server = TestServer::start();
    let ids: Vec<u32> = ["b", "c", "a"]
        .iter()
        .map(|name| server.create_pool(name, GIB))
        .collect();
    let big = server.create_pool("big pool", 10 * GIB);
    server.create_volume("v1", ids[0], GIB / 2);
    server.create_volume("v2", big, GIB);
    server.create_volume("v3", big, 2 * GIB);

    let get = |path: &str| {
        let (status, envelope) = server.call("GET", path, None);
        assert_eq!(status, 200, "{path}: {envelope}");
        envelope
    };
    assert_eq!(names(&get("/api/rest/pools?name=eq:c")), ["c"]);
    assert_eq!(names(&get("/api/rest/pools?name=c")), ["c"]);
    assert_eq!(
        names(&get("/api/rest/pools?name=eq:big%20pool")),
        ["big pool"]
    );
    assert_eq!(names(&get("/api/rest/pools?name=big+pool")), ["big pool"]);
    assert_eq!(
        names(&get(&format!("/api/rest/pools?id=eq:{}", ids[2]))),
        ["a"]
    );
    assert_eq!(
        names(&get("/api/rest/pools?name=ne:c&sort=name")),
        ["a", "b", "big pool"]
    );
    assert_eq!(
        names(&get("/api/rest/pools?sort=name")),
        ["a", "b", "big pool", "c"]
    );
    assert_eq!(
        names(&get("/api/rest/pools?sort=-id")),
        ["big pool", "a", "c", "b"]
    );
    assert_eq!(
        names(&get("/api/rest/pools?sort=-volumes_count,name")),
        ["big pool", "b", "a", "c"]
    );
    assert_eq!(names(&get("/api/rest/pools?name=in:[a,c]")), ["c", "a"]);
    assert_eq!(names(&get("/api/rest/pools?name=in:(a,c)")), ["c", "a"]);
    assert_eq!(names(&get("/api/rest/pools?name=in:a,c")), ["c", "a"]);
    assert_eq!(
        names(&get("/api/rest/pools?name=notin:(a,c)")),
        ["b", "big pool"]
    );
    assert_eq!(
        names(&get("/api/rest/pools?name=notin:a,c")),
        ["b", "big pool"]
    );
    assert_eq!(names(&get("/api/rest/pools?name=like:bi")), ["big pool"]);
    let filtered = get(&format!("/api/rest/pools?physical_capacity=gt:{GIB}"));
    assert_eq!(names(&filtered), ["big pool"]);
    assert_eq!(filtered["metadata"]["number_of_objects"], 1);
    assert_eq!(
        names(&get(&format!(
            "/api/rest/volumes?pool_id=eq:{big}&sort=-size"
        ))),
        ["v3", "v2"]
    );
    assert_eq!(
        names(&get(&format!(
            "/api/rest/volumes?size=between:{},{GIB}",
            GIB / 2
        ))),
        ["v1", "v2"]
    );
    assert_eq!(
        names(&get(
            "/api/rest/volumes?pool_name=eq:big%20pool&size=lt:2147483648"
        )),
        ["v2"]
    );
    assert_eq!(
        names(&get("/api/rest/volumes?write_protected=eq:false")).len(),
        3
    );
    assert_eq!(
        get("/api/rest/pools?name=eq:a&fields=id,name")["result"],
        json!([{"id": ids[2], "name": "a"}])
    );

    let (status, refused) = server.call("GET", "/api/rest/pools?name=%FF", None);
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    for (path, what) in [
        ("/api/rest/pools?colour=eq:red", "colour"),
        ("/api/rest/pools?sort=colour", "colour"),
        ("/api/rest/pools?fields=name,colour", "colour"),
        ("/api/rest/pools?id=eq:seven", "seven"),
        ("/api/rest/pools?id=between:1", "between"),
        ("/api/rest/pools?id=like:1", "like"),
    ] {
        let (status, refused) = server.call("GET", path, None);
        assert_eq!(status, 400, "{path}");
        assert_error(&refused, "BAD_REQUEST");
        assert!(
            refused["error"]["message"].as_str().unwrap().contains(what),
            "{path}: {refused}"
        );
    }
}

#[test]
fn metrics_are_prometheus_text() {
    let server = TestServer::start();
    let response =
        only_response(&server.raw(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(
        String::from_utf8(response.body)
            .unwrap()
            .contains("troika_volumes 0")
    );
    let (status, text) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(text.as_str().unwrap().starts_with("# TYPE"));
}

#[test]
fn unknown_paths_and_wrong_methods_are_refused() {
    let server = TestServer::start();
    for path in [
        "/",
        "/api",
        "/api/rest",
        "/api/rest/filesystems",
        "/api/rest/pools/1/luns",
    ] {
        let (status, refused) = server.call("GET", path, None);
        assert_eq!(status, 404, "{path}");
        assert_error(&refused, "NOT_FOUND");
    }
    for (method, path, allow) in [
        ("POST", "/api/rest/system", "GET"),
        ("DELETE", "/api/rest/pools", "GET, POST"),
        ("PATCH", "/api/rest/pools/1", "GET, PUT, DELETE"),
        ("GET", "/api/rest/users/login", "POST"),
        ("PATCH", "/api/rest/volumes/1", "GET, PUT, DELETE"),
        ("POST", "/metrics", "GET"),
    ] {
        let request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n\r\n");
        let response = only_response(&server.raw(request.as_bytes()));
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), Some(allow));
        assert_error(&response.json(), "METHOD_NOT_ALLOWED");
    }
    // A trailing slash names the same resource.
    let (status, _) = server.call("GET", "/api/rest/system/", None);
    assert_eq!(status, 200);
}

#[test]
fn single_objects_project_the_fields_asked_for() {
    let server = TestServer::start();
    let pool = server.create_pool("p", GIB);
    let (status, one) = server.call(
        "GET",
        &format!("/api/rest/pools/{pool}?fields=id,name"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(one["result"], json!({"id": pool, "name": "p"}));
    let (status, system) = server.call("GET", "/api/rest/system?fields=version", None);
    assert_eq!(status, 200);
    assert_eq!(system["result"], json!({"version": API_LEVEL}));
    let (status, refused) = server.call(
        "GET",
        &format!("/api/rest/pools/{pool}?fields=name,colour"),
        None,
    );
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
}

#[test]
fn event_types_are_one_object_of_codes_levels_and_reporters() {
    let server = TestServer::start();
    let (status, envelope) = server.call("GET", "/api/rest/events/types", None);
    assert_eq!(status, 200);
    let types = &envelope["result"];
    let mut keys: Vec<&str> = types
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["codes", "levels", "reporters", "types", "visibilities"]
    );
    let codes = types["codes"].as_array().unwrap();
    assert_eq!(codes.len(), crate::mgmt::events::EVENT_TYPES.len());
    for code in ["POOL_CREATED", "VOLUME_RESIZED", "USER_LOGIN_FAILURE"] {
        assert!(codes.contains(&json!(code)), "{code}");
    }
    assert_eq!(
        types["levels"],
        json!([
            {"name": "INFO", "value": 1},
            {"name": "WARNING", "value": 2},
            {"name": "ERROR", "value": 3},
            {"name": "CRITICAL", "value": 4},
        ])
    );
    assert_eq!(types["visibilities"], json!(["CUSTOMER"]));
    let reporters = types["reporters"].as_array().unwrap();
    assert!(reporters.contains(&json!("MANAGEMENT")), "{reporters:?}");
    let login_failure = types["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kind| kind["code"] == "USER_LOGIN_FAILURE")
        .unwrap();
    assert_eq!(login_failure["level"], "WARNING");
    assert_eq!(login_failure["reporter"], "SECURITY");
}

/// On the real node: its own rules for names, thresholds and capacities.
#[test]
fn pools_update_names_capacities_thresholds_and_ssd() {
    let server = TestServer::start_on_node();
    let gold = server.create_pool("gold", 10 * MIB);
    server.create_pool("silver", MIB);
    let volume = server.create_volume("v", gold, 4 * MIB);
    let path = format!("/api/rest/pools/{gold}");
    let put = |body: Value| server.call("PUT", &path, Some(body));

    let (status, created) = server.call("GET", &path, None);
    assert_eq!(status, 200);
    assert_eq!(created["result"]["physical_capacity_warning"], 80);
    assert_eq!(created["result"]["physical_capacity_critical"], 90);
    assert_eq!(created["result"]["ssd_enabled"], true);
    assert_eq!(created["result"]["owners"], json!([]));

    let (status, renamed) = put(json!({"name": "platinum", "ssd_enabled": false}));
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["result"]["name"], "platinum");
    assert_eq!(renamed["result"]["ssd_enabled"], false);
    let (_, moved) = server.call("GET", &format!("/api/rest/volumes/{volume}"), None);
    assert_eq!(moved["result"]["pool_name"], "platinum");
    // Renaming to its own name is no conflict; to another pool's name is.
    let (status, _) = put(json!({"name": "platinum"}));
    assert_eq!(status, 200);
    let (status, refused) = put(json!({"name": "silver"}));
    assert_eq!(status, 409);
    assert_error(&refused, "NAME_CONFLICT");

    let (status, thresholds) = put(json!({
        "physical_capacity_warning": 50, "physical_capacity_critical": 60,
    }));
    assert_eq!(status, 200);
    assert_eq!(thresholds["result"]["physical_capacity_warning"], 50);
    assert_eq!(thresholds["result"]["physical_capacity_critical"], 60);
    for bad in [
        json!({"physical_capacity_warning": 70}),
        json!({"physical_capacity_warning": 0}),
        json!({"physical_capacity_critical": 101}),
    ] {
        let (status, refused) = put(bad.clone());
        assert_eq!(status, 400, "{bad}");
        assert_error(&refused, "BAD_REQUEST");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("thresholds"),
            "{refused}"
        );
    }
    let (status, refused) = put(json!({"physical_capacity_warning": 300}));
    assert_eq!(status, 400, "a percent above u8 is a bad body: {refused}");

    let (status, grown) = put(json!({"physical_capacity": 20 * MIB, "virtual_capacity": 40 * MIB}));
    assert_eq!(status, 200);
    assert_eq!(grown["result"]["free_virtual_space"], 36 * MIB);
    let (status, refused) = put(json!({"virtual_capacity": 3 * MIB, "physical_capacity": MIB}));
    assert_eq!(
        status, 409,
        "the volume holds 4 MiB of the virtual capacity"
    );
    assert_error(&refused, "POOL_CAPACITY_EXCEEDED");
    let (_, system) = server.call("GET", "/api/rest/system", None);
    let system_capacity = system["result"]["physical_capacity"].as_u64().unwrap();
    let (status, refused) = put(json!({
        "physical_capacity": system_capacity, "virtual_capacity": system_capacity,
    }));
    assert_eq!(status, 409);
    assert_error(&refused, "POOL_CAPACITY_EXCEEDED");
    let (status, unchanged) = server.call("GET", &path, None);
    assert_eq!(status, 200);
    assert_eq!(
        unchanged["result"], grown["result"],
        "a refused update changes nothing"
    );

    let (status, refused) = server.call("PUT", "/api/rest/pools/999", Some(json!({"name": "x"})));
    assert_eq!(status, 404);
    assert_error(&refused, "POOL_NOT_FOUND");
}

/// On the real node.
#[test]
fn pool_owners_must_be_pool_admins() {
    let server = TestServer::start_on_node();
    let pool = server.create_pool("p", MIB);
    let mut ids = Vec::new();
    for (name, role) in [("ops", "POOL_ADMIN"), ("viewer", "READ_ONLY")] {
        let body = json!({"name": name, "password": "long enough", "role": role});
        let (status, user) = server.call("POST", "/api/rest/users", Some(body));
        assert_eq!(status, 201, "{user}");
        ids.push(user["result"]["id"].as_u64().unwrap());
    }
    let owners = format!("/api/rest/pools/{pool}/owners");
    let (status, added) = server.call("POST", &owners, Some(json!({"user_id": ids[0]})));
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["result"]["owners"], json!([ids[0]]));
    let (_, listed) = server.call("GET", &owners, None);
    assert_eq!(names(&listed), ["ops"]);
    let (status, refused) = server.call("POST", &owners, Some(json!({"user_id": ids[1]})));
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    let (status, refused) = server.call(
        "PUT",
        &format!("/api/rest/pools/{pool}"),
        Some(json!({"owners": [ids[1]]})),
    );
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");

    let (status, removed) = server.call("DELETE", &format!("{owners}/{}", ids[0]), None);
    assert_eq!(status, 200);
    assert_eq!(removed["result"]["owners"], json!([]));
    let (status, gone) = server.call("DELETE", &format!("{owners}/{}", ids[0]), None);
    assert_eq!(status, 404);
    assert_error(&gone, "USER_NOT_FOUND");
}

#[test]
fn volumes_take_thick_provisioning_protection_and_ssd() {
    let server = TestServer::start();
    let body = json!({"name": "p", "physical_capacity": 10 * GIB, "virtual_capacity": 20 * GIB});
    let (status, created) = server.call("POST", "/api/rest/pools", Some(body));
    assert_eq!(status, 201);
    let pool = created["result"]["id"].as_u64().unwrap() as u32;
    let body = json!({
        "name": "thick", "pool_id": pool, "size": 4 * GIB, "provtype": "thick",
        "write_protected": true, "ssd_enabled": false,
    });
    let (status, created) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 201, "{created}");
    let volume = &created["result"];
    assert_eq!(volume["provtype"], "THICK");
    assert_eq!(volume["allocated"], 4 * GIB);
    assert_eq!(volume["write_protected"], true);
    assert_eq!(volume["ssd_enabled"], false);
    assert_eq!(volume["family_id"], volume["id"]);
    assert_eq!(volume["lock_state"], "UNLOCKED");
    let (_, pool_now) = server.call("GET", &format!("/api/rest/pools/{pool}"), None);
    assert_eq!(pool_now["result"]["allocated_physical_space"], 4 * GIB);

    let body = json!({"name": "x", "pool_id": pool, "size": GIB, "provtype": "THIN_ISH"});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    // Thick space is physical: 7 GiB more do not fit the 6 GiB left.
    let body = json!({"name": "big", "pool_id": pool, "size": 7 * GIB, "provtype": "THICK"});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 409);
    assert_error(&refused, "POOL_CAPACITY_EXCEEDED");

    let path = format!("/api/rest/volumes/{}", volume["id"]);
    let (status, changed) = server.call(
        "PUT",
        &path,
        Some(json!({"write_protected": false, "ssd_enabled": true})),
    );
    assert_eq!(status, 200);
    assert_eq!(changed["result"]["write_protected"], false);
    assert_eq!(changed["result"]["ssd_enabled"], true);
    assert!(changed["result"]["updated_at"].as_u64() > volume["updated_at"].as_u64());

    server.create_volume("other", pool, GIB);
    let (status, refused) = server.call("PUT", &path, Some(json!({"name": "other"})));
    assert_eq!(status, 409);
    assert_error(&refused, "NAME_CONFLICT");
    // Past the critical threshold (90%) the pool is LIMITED: no growth, no new volumes.
    let (status, grown) = server.call("PUT", &path, Some(json!({"size": 9 * GIB})));
    assert_eq!(status, 200, "{grown}");
    let (_, limited) = server.call("GET", &format!("/api/rest/pools/{pool}"), None);
    assert_eq!(limited["result"]["state"], "LIMITED");
    let body = json!({"name": "late", "pool_id": pool, "size": 4096});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 409);
    assert_error(&refused, "POOL_CAPACITY_EXCEEDED");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("LIMITED"),
        "{refused}"
    );
}
