//! Bounds and request guards against the real binary: snapshot locks past 100 years, byte
//! counts past 2^53, names differing only in case, cross-site requests (a `text/plain`
//! body, a foreign `Origin`) and mutual CHAP logins that do not challenge the target (or
//! challenge it with too few bytes) are all refused, and a refused request changes
//! nothing (the objects are listed before and after).

mod common;
#[path = "common/iscsi.rs"]
mod iscsi;
#[path = "common/iscsi_client.rs"]
mod iscsi_client;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestNode, base64_encode, ci_model, split_response};
use iscsi::{api, create_host, map_volume, target_name};
use iscsi_client::{Auth, LoginRefused, Session, report_luns};
use serde_json::{Value, json};

/// 100 years in milliseconds, the longest lock.
const MAX_LOCK_MS: u64 = 100 * 365 * 86_400 * 1000;
/// The largest byte count the API takes.
const MAX_BYTES: u64 = 1 << 53;

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Every pool, volume and consistency group, as the API lists them.
fn everything(node: &TestNode) -> Vec<Vec<Value>> {
    let socket = node.mgmt_socket();
    ["pools", "volumes", "cgs"]
        .iter()
        .map(|collection| rest_unix::list(&socket, collection, ""))
        .collect()
}

/// A request on the unix socket that must be refused with `status` and `code`.
fn refused_unix(
    node: &TestNode,
    method: &str,
    target: &str,
    body: &Value,
    status: u16,
    code: &str,
) {
    let body = body.to_string();
    let (got, answer) = rest_unix::call(&node.mgmt_socket(), method, target, Some(&body))
        .unwrap_or_else(|error| panic!("{method} {target}: {error}"));
    assert_eq!(got, status, "{method} {target} {body}: {answer}");
    assert_eq!(
        answer["error"]["code"], code,
        "{method} {target} {body}: {answer}"
    );
}

#[test]
fn locks_past_100_years_and_sizes_past_2_pow_53_are_refused_and_change_nothing() {
    let node = TestNode::start_with_api(ci_model());
    node.pool_and_volume("p", "200M", "v", "16M");
    let socket = node.mgmt_socket();
    let volume = rest_unix::id_of(&rest_unix::list(&socket, "volumes", "name=eq:v")[0]);
    let pool = rest_unix::id_of(&rest_unix::list(&socket, "pools", "name=eq:p")[0]);
    let snapshot = rest_unix::ok(
        &socket,
        "POST",
        "/api/rest/volumes",
        Some(
            &json!({"name": "s", "parent_id": volume, "lock_expires_at": now_ms() + 3_600_000})
                .to_string(),
        ),
    );
    let snapshot = rest_unix::id_of(&snapshot);
    let before = everything(&node);

    let far = now_ms() + MAX_LOCK_MS + 86_400_000;
    for lock in [far, u64::MAX] {
        let create = json!({"name": "forever", "parent_id": volume, "lock_expires_at": lock});
        refused_unix(
            &node,
            "POST",
            "/api/rest/volumes",
            &create,
            400,
            "LOCK_OUT_OF_RANGE",
        );
        let extend = json!({"lock_expires_at": lock});
        let target = format!("/api/rest/volumes/{snapshot}");
        refused_unix(&node, "PUT", &target, &extend, 400, "LOCK_OUT_OF_RANGE");
        // A rename with it is refused whole.
        let both = json!({"name": "renamed", "lock_expires_at": lock});
        refused_unix(&node, "PUT", &target, &both, 400, "LOCK_OUT_OF_RANGE");
    }
    // The CLI refuses it before asking, by the same bound.
    let out = node.cli(&[
        "snap",
        "create",
        "v",
        "--name",
        "cli",
        "--lock-until",
        "9000w",
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("100 years"), "{text}");

    for (physical, virtual_capacity) in [
        (200u64 << 20, u64::MAX),
        (200 << 20, MAX_BYTES + 4096),
        (u64::MAX - 4095, u64::MAX - 4095),
    ] {
        let pool = json!({"name": "huge", "physical_capacity": physical, "virtual_capacity": virtual_capacity});
        refused_unix(
            &node,
            "POST",
            "/api/rest/pools",
            &pool,
            400,
            "PARAM_OUT_OF_RANGE",
        );
    }
    let target = format!("/api/rest/pools/{pool}");
    let grow = json!({"virtual_capacity": u64::MAX});
    refused_unix(&node, "PUT", &target, &grow, 400, "PARAM_OUT_OF_RANGE");
    for size in [MAX_BYTES + 4096, u64::MAX - 4095] {
        let create = json!({"name": "big", "pool_id": pool, "size": size});
        refused_unix(
            &node,
            "POST",
            "/api/rest/volumes",
            &create,
            400,
            "PARAM_OUT_OF_RANGE",
        );
        let resize = json!({"size": size});
        let target = format!("/api/rest/volumes/{volume}");
        refused_unix(&node, "PUT", &target, &resize, 400, "PARAM_OUT_OF_RANGE");
    }
    // Over TCP as well, with basic credentials.
    let password = node.admin_password();
    let (status, answer) = node.api_json(
        "POST",
        "/api/rest/pools",
        Some(("admin", &password)),
        Some(&json!({"name": "huge", "physical_capacity": 200u64 << 20, "virtual_capacity": u64::MAX})),
    );
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("PARAM_OUT_OF_RANGE")),
        "{answer}"
    );

    assert_eq!(
        everything(&node),
        before,
        "a refused request changed something"
    );
}

#[test]
fn names_differing_only_in_case_are_one_name() {
    let node = TestNode::start();
    node.pool_and_volume("poolA", "200M", "volA", "16M");
    let socket = node.mgmt_socket();
    let pool = rest_unix::id_of(&rest_unix::list(&socket, "pools", "")[0]);
    let before = everything(&node);
    let volume = json!({"name": "VOLA", "pool_id": pool, "size": 16u64 << 20});
    refused_unix(
        &node,
        "POST",
        "/api/rest/volumes",
        &volume,
        409,
        "NAME_CONFLICT",
    );
    let other = json!({"name": "POOLa", "physical_capacity": 100u64 << 20});
    refused_unix(
        &node,
        "POST",
        "/api/rest/pools",
        &other,
        409,
        "NAME_CONFLICT",
    );
    let out = node.cli(&["vol", "create", "vola", "--pool", "poolA", "--size", "16M"]);
    assert!(!out.status.success(), "the CLI created vola beside volA");
    assert_eq!(everything(&node), before);
    // An object may change the case of its own name.
    let volume = rest_unix::id_of(&before[1][0]);
    let renamed = rest_unix::ok(
        &socket,
        "PUT",
        &format!("/api/rest/volumes/{volume}"),
        Some(r#"{"name": "VOLA"}"#),
    );
    assert_eq!(renamed["name"], "VOLA");
}

/// One raw HTTP request on the REST TCP port as admin (basic credentials); the status and
/// the answer.
fn raw_tcp_request(
    node: &TestNode,
    method: &str,
    path: &str,
    fields: &str,
    body: &str,
) -> (u16, Value) {
    let credentials = base64_encode(format!("admin:{}", node.admin_password()).as_bytes());
    let port = node.api_port.expect("a TCP API port");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Authorization: Basic {credentials}\r\n{fields}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = node.raw_tcp(request.as_bytes());
    let (status, text) = split_response(&String::from_utf8_lossy(&answer));
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn cross_site_requests_are_refused_and_change_nothing() {
    let node = TestNode::start_with_api(ci_model());
    node.pool_and_volume("p", "200M", "v", "16M");
    let port = node.api_port.unwrap();
    let before = everything(&node);
    let pool = r#"{"name": "csrf", "physical_capacity": 104857600}"#;
    for (fields, status, code) in [
        // What an HTML form can send.
        (
            "Content-Type: text/plain\r\n",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "Content-Type: application/x-www-form-urlencoded\r\n",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        ("", 415, "UNSUPPORTED_MEDIA_TYPE"),
        // A page on another site, even with a JSON body.
        (
            "Content-Type: application/json\r\nOrigin: http://evil.example\r\n",
            403,
            "ORIGIN_NOT_ALLOWED",
        ),
        (
            "Content-Type: text/plain\r\nOrigin: null\r\n",
            403,
            "ORIGIN_NOT_ALLOWED",
        ),
    ] {
        let (got, answer) = raw_tcp_request(&node, "POST", "/api/rest/pools", fields, pool);
        assert_eq!(got, status, "{fields:?}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{fields:?}: {answer}");
    }
    // A foreign origin cannot read either.
    let (got, _) = raw_tcp_request(
        &node,
        "GET",
        "/api/rest/pools",
        "Origin: https://evil.example\r\n",
        "",
    );
    assert_eq!(got, 403);
    // The unix socket applies the same guards.
    let form = format!(
        "POST /api/rest/pools HTTP/1.1\r\nHost: troika\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{pool}",
        pool.len()
    );
    let (got, _) = split_response(&String::from_utf8_lossy(&node.raw_unix(form.as_bytes())));
    assert_eq!(got, 415);
    assert_eq!(
        everything(&node),
        before,
        "a refused request changed something"
    );

    // The node's own origin (the UI's), with a JSON body, is served.
    let own = format!(
        "Content-Type: application/json; charset=utf-8\r\nOrigin: http://127.0.0.1:{port}\r\n"
    );
    let (got, answer) = raw_tcp_request(&node, "POST", "/api/rest/pools", &own, pool);
    assert_eq!(got, 201, "{answer}");
    // An action without a body needs no Content-Type (as infinisdk sends it).
    let (got, answer) = raw_tcp_request(&node, "POST", "/api/rest/users/logout", "", "");
    assert!((200..300).contains(&got), "{got} {answer}");
}

const HOST: &str = "iqn.2026-12.test.example:mutual";

#[test]
fn a_mutual_chap_host_must_challenge_the_target_with_16_bytes_or_more() {
    let node = TestNode::start_with_iscsi(ci_model(), 1);
    node.cli_ok(&["pool", "create", "pool1", "--size", "200M"]);
    node.cli_ok(&["vol", "create", "va", "--pool", "pool1", "--size", "16M"]);
    let host = create_host(&node, "mutual-host", &[HOST]);
    map_volume(&node, host, "va", 1);
    api(
        &node,
        "PUT",
        &format!("/api/rest/hosts/{host}"),
        json!({
            "security_method": "MUTUAL_CHAP",
            "security_chap_inbound_username": "mutual-host",
            "security_chap_inbound_secret": "inbound-secret-1",
            "security_chap_outbound_username": "array",
            "security_chap_outbound_secret": "outbound-sec-2",
        }),
    );
    let target = target_name(&node);
    let port = node.iscsi_ports[0];
    let auth_failure = Some(LoginRefused {
        class: 2,
        detail: 1,
    });
    let one_way = Session::login(
        port,
        HOST,
        Some(&target),
        Auth::Chap {
            user: "mutual-host",
            secret: "inbound-secret-1",
        },
    );
    assert_eq!(one_way.err(), auth_failure, "one-way CHAP to a mutual host");
    for short in [&[0x5a][..], &[0x5a; 15][..]] {
        let login = Session::login(
            port,
            HOST,
            Some(&target),
            Auth::MutualWith {
                user: "mutual-host",
                secret: "inbound-secret-1",
                target_user: "array",
                target_secret: "outbound-sec-2",
                challenge: short,
            },
        );
        assert_eq!(login.err(), auth_failure, "{}-byte challenge", short.len());
    }
    // The right login still works, with a 16-byte challenge and a longer one.
    for challenge in [&[0x5a; 16][..], &[0x33; 64][..]] {
        let mut session = Session::login(
            port,
            HOST,
            Some(&target),
            Auth::MutualWith {
                user: "mutual-host",
                secret: "inbound-secret-1",
                target_user: "array",
                target_secret: "outbound-sec-2",
                challenge,
            },
        )
        .expect("mutual CHAP login");
        assert_eq!(report_luns(&mut session), vec![1]);
    }
}
