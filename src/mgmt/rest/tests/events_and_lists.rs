//! The events that changes raise, and filtering, sorting and paging of lists.

use serde_json::{Value, json};

use super::{Credentials, Node, sorted_keys};
use crate::mgmt::tests::Fixture;
use crate::mgmt::tests::memory::GIB;
use crate::mgmt::users::DEFAULT_ADMIN_NAME;

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
