//! Routes, envelope, pagination, filters, approval.

use super::*;

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
}

#[test]
fn field_lists_match_the_serialized_objects() {
    let memory = Memory::default();
    let pool = memory
        .create_pool(PoolCreate {
            name: "p".into(),
            physical_capacity: GIB,
            virtual_capacity: None,
        })
        .unwrap();
    let volume = memory
        .create_volume(VolumeCreate {
            name: "v".into(),
            pool_id: pool.id,
            size: GIB,
            provtype: None,
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
        sorted(POOL_FIELDS)
    );
    assert_eq!(
        keys(serde_json::to_value(volume).unwrap()),
        sorted(VOLUME_FIELDS)
    );
}

#[test]
fn pools_are_created_read_listed_and_deleted_with_approval() {
    let server = TestServer::start();
    let body = json!({"name": "gold", "physical_capacity": 10 * GIB, "virtual_capacity": 20 * GIB});
    let (status, created) = server.call("POST", "/api/rest/pools", Some(body.clone()));
    assert_eq!(status, 201);
    assert_eq!(created["error"], Value::Null);
    assert_eq!(created["result"]["virtual_capacity"], 20 * GIB);
    let id = created["result"]["id"].as_u64().unwrap();

    let (status, again) = server.call("POST", "/api/rest/pools", Some(body));
    assert_eq!(status, 409);
    assert_error(&again, "NAME_CONFLICT");

    let too_big = json!({"name": "huge", "physical_capacity": 2 * SYSTEM_CAPACITY});
    let (status, refused) = server.call("POST", "/api/rest/pools", Some(too_big));
    assert_eq!(status, 409);
    assert_error(&refused, "INSUFFICIENT_PHYSICAL_CAPACITY");

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

#[test]
fn volumes_are_created_resized_and_deleted() {
    let server = TestServer::start();
    let pool = server.create_pool("silver", 100 * GIB);
    let body = json!({"name": "db", "pool_id": pool, "size": 10 * GIB, "provtype": "THICK"});
    let (status, created) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 201);
    assert_eq!(created["result"]["type"], "MASTER");
    assert_eq!(created["result"]["provtype"], "THICK");
    assert_eq!(created["result"]["pool_name"], "silver");
    let id = created["result"]["id"].as_u64().unwrap();
    let path = format!("/api/rest/volumes/{id}");

    let no_pool = json!({"name": "x", "pool_id": 999, "size": GIB});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(no_pool));
    assert_eq!(status, 404);
    assert_error(&refused, "POOL_NOT_FOUND");

    let (status, grown) = server.call("PUT", &path, Some(json!({"size": 20 * GIB})));
    assert_eq!(status, 200);
    assert_eq!(grown["result"]["size"], 20 * GIB);

    let (status, refused) = server.call("PUT", &path, Some(json!({"size": 5 * GIB})));
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, shrunk) = server.call(
        "PUT",
        &format!("{path}?approved=true"),
        Some(json!({"size": 5 * GIB})),
    );
    assert_eq!(status, 200);
    assert_eq!(shrunk["result"]["size"], 5 * GIB);

    let (status, refused) = server.call(
        "PUT",
        &path,
        Some(json!({"size": 6 * GIB, "name": "renamed"})),
    );
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name")
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
    assert_eq!(deleted["result"]["name"], "db");
    let (status, gone) = server.call("GET", &path, None);
    assert_eq!(status, 404);
    assert_error(&gone, "VOLUME_NOT_FOUND");
    let (status, gone) = server.call("PUT", &path, Some(json!({"size": GIB})));
    assert_eq!(status, 404);
    assert_error(&gone, "VOLUME_NOT_FOUND");
}

#[test]
fn bad_bodies_are_refused_naming_the_field() {
    let server = TestServer::start();
    let mut stream = server.connect();
    let body = br#"{"name": "p", "physical_capacity": "#;
    let request = format!(
        "POST /api/rest/pools HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
        "/api/rest/hosts",
        "/api/rest/pools/1/luns",
    ] {
        let (status, refused) = server.call("GET", path, None);
        assert_eq!(status, 404, "{path}");
        assert_error(&refused, "NOT_FOUND");
    }
    for (method, path, allow) in [
        ("POST", "/api/rest/system", "GET"),
        ("DELETE", "/api/rest/pools", "GET, POST"),
        ("PUT", "/api/rest/pools/1", "GET, DELETE"),
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
