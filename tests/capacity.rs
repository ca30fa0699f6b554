//! Pool capacity states and volume protection, end to end through the real binary: a full
//! pool is LOCKED (hosts' writes refused with ENOSPC, nothing they wrote before is
//! damaged) and unlocks when space is freed; a THICK volume reserves its size; a
//! write-protected volume refuses writes with EPERM; events say what happened and
//! survive a restart and a kill -9, which raises SYSTEM_RECOVERED.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const ENOSPC: i32 = 28;
const EPERM: i32 = 1;

/// One request on the node's unix socket (a local administrator); the parsed envelope.
fn api(node: &TestNode, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
    let mut stream = UnixStream::connect(node.mgmt_socket()).expect("management socket");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (status, body) = common::split_response(&response);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn create(node: &TestNode, path: &str, body: Value) -> Value {
    let (status, envelope) = api(node, "POST", path, Some(body));
    assert_eq!(status, 201, "POST {path}: {envelope}");
    envelope["result"].clone()
}

fn pool_state(node: &TestNode, pool: u64) -> String {
    let (_, envelope) = api(node, "GET", &format!("/api/rest/pools/{pool}"), None);
    envelope["result"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Event codes currently in the log, oldest first.
fn event_codes(node: &TestNode) -> Vec<String> {
    let (status, envelope) = api(node, "GET", "/api/rest/events?page_size=1000", None);
    assert_eq!(status, 200, "{envelope}");
    envelope["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["code"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (bounded) until the monitor has raised `code`.
fn wait_for_event(node: &TestNode, code: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !event_codes(node).iter().any(|c| c == code) {
        assert!(Instant::now() < deadline, "no {code} event within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pattern(seed: u64, buf: &mut [u8]) {
    for (index, byte) in buf.iter_mut().enumerate() {
        *byte = (seed as usize * 131 + index * 7) as u8;
    }
}

#[test]
fn a_full_pool_locks_refuses_writes_and_unlocks_when_space_is_freed() {
    let mut node = TestNode::start();
    let pool = create(
        &node,
        "/api/rest/pools",
        json!({"name": "small", "physical_capacity": 8 * MIB, "virtual_capacity": 64 * MIB}),
    );
    let pool_id = pool["id"].as_u64().unwrap();
    create(
        &node,
        "/api/rest/volumes",
        json!({"name": "thin", "pool_id": pool_id, "size": 64 * MIB}),
    );
    assert_eq!(pool_state(&node, pool_id), "NORMAL");

    let mut client = NbdClient::connect(&node.nbd_socket(), "thin").unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut written = 0;
    let refusal = loop {
        pattern(written, &mut buf);
        match client.write(written * MIB, &buf, 0) {
            Ok(()) => written += 1,
            Err(error) => break error.raw_os_error(),
        }
        assert!(written < 64, "a 64 MiB volume filled an 8 MiB pool");
    };
    assert_eq!(refusal, Some(ENOSPC));
    assert_eq!(pool_state(&node, pool_id), "LOCKED");
    // Locked means no writes at all, also to blocks that already hold data.
    pattern(0, &mut buf);
    let overwrite = client.write(0, &buf[..4096], 0).unwrap_err();
    assert_eq!(overwrite.raw_os_error(), Some(ENOSPC));
    // Creating a volume in a locked pool is refused with the capacity code.
    let (status, envelope) = api(
        &node,
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "more", "pool_id": pool_id, "size": MIB})),
    );
    assert_eq!(
        (status, envelope["error"]["code"].as_str()),
        (409, Some("POOL_CAPACITY_EXCEEDED"))
    );
    wait_for_event(&node, "POOL_LOCKED");
    let codes = event_codes(&node);
    for code in [
        "POOL_CAPACITY_WARNING",
        "POOL_CAPACITY_CRITICAL",
        "POOL_LIMITED",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} missing in {codes:?}"
        );
    }

    // What was written before the pool filled is intact.
    client.flush().unwrap();
    let mut back = vec![0u8; MIB as usize];
    for mib in 0..written {
        pattern(mib, &mut buf);
        client.read(mib * MIB, &mut back).unwrap();
        assert!(back == buf, "MiB {mib} changed when the pool filled up");
    }

    // Freeing space unlocks the pool and writes work again.
    client.trim(0, (4 * MIB) as u32).unwrap();
    client.flush().unwrap();
    assert_ne!(pool_state(&node, pool_id), "LOCKED");
    client.write(0, &buf[..4096], 0).unwrap();
    wait_for_event(&node, "POOL_UNLOCKED");
    client.disconnect();
    node.stop();
}

#[test]
fn thick_volumes_reserve_their_size_and_write_protection_refuses_writes() {
    let mut node = TestNode::start();
    let pool = create(
        &node,
        "/api/rest/pools",
        json!({"name": "p", "physical_capacity": 32 * MIB, "virtual_capacity": 256 * MIB}),
    );
    let pool_id = pool["id"].as_u64().unwrap();
    let thick = create(
        &node,
        "/api/rest/volumes",
        json!({"name": "thick", "pool_id": pool_id, "size": 16 * MIB, "provtype": "THICK"}),
    );
    assert_eq!(thick["provtype"], "THICK");
    assert_eq!(thick["allocated"], 16 * MIB);
    let (_, envelope) = api(&node, "GET", &format!("/api/rest/pools/{pool_id}"), None);
    assert_eq!(envelope["result"]["allocated_physical_space"], 16 * MIB);
    // A second thick volume larger than what is left does not fit.
    let (status, envelope) = api(
        &node,
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "big", "pool_id": pool_id, "size": 24 * MIB, "provtype": "THICK"})),
    );
    assert_eq!(
        (status, envelope["error"]["code"].as_str()),
        (409, Some("POOL_CAPACITY_EXCEEDED"))
    );

    // The thick volume can be written whole, twice over, whatever the pool's thin use.
    let mut client = NbdClient::connect(&node.nbd_socket(), "thick").unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for round in 0..2 {
        for mib in 0..16 {
            pattern(mib + round, &mut buf);
            client.write(mib * MIB, &buf, 0).unwrap();
        }
        client.flush().unwrap();
    }

    // Write protection: existing connections get EPERM, reads still work.
    let id = thick["id"].as_u64().unwrap();
    let (status, envelope) = api(
        &node,
        "PUT",
        &format!("/api/rest/volumes/{id}"),
        Some(json!({"write_protected": true})),
    );
    assert_eq!(status, 200, "{envelope}");
    assert_eq!(envelope["result"]["write_protected"], true);
    let refused = client.write(0, &buf[..4096], 0).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(EPERM));
    let mut back = vec![0u8; MIB as usize];
    pattern(1, &mut buf);
    client.read(0, &mut back).unwrap();
    assert!(back == buf);
    client.disconnect();

    // It stays protected across a restart (the catalog holds it).
    node.restart();
    let mut client = NbdClient::connect(&node.nbd_socket(), "thick").unwrap();
    let refused = client.write(0, &buf[..4096], 0).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(EPERM));
    client.disconnect();
    node.stop();
}

#[test]
fn events_survive_restarts_and_a_crash_is_reported() {
    let mut node = TestNode::start();
    node.pool_and_volume("p", "64M", "v", "16M");
    let before = event_codes(&node);
    assert!(before.iter().any(|c| c == "VOLUME_CREATED"), "{before:?}");

    node.stop();
    node.restart();
    let after_stop = event_codes(&node);
    assert_eq!(&after_stop[..before.len()], &before[..]);
    assert!(
        after_stop.iter().any(|c| c == "SYSTEM_SHUTDOWN"),
        "{after_stop:?}"
    );
    assert_eq!(
        after_stop.last().map(String::as_str),
        Some("SYSTEM_STARTED")
    );

    // Leave work for recovery, then crash.
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").unwrap();
    client.write(0, &[7u8; 4096], 0).unwrap();
    client.flush().unwrap();
    node.kill9();
    node.restart();
    let after_crash = event_codes(&node);
    assert_eq!(&after_crash[..after_stop.len()], &after_stop[..]);
    assert_eq!(
        after_crash.last().map(String::as_str),
        Some("SYSTEM_RECOVERED")
    );
    let (_, envelope) = api(
        &node,
        "GET",
        "/api/rest/events?code=eq:SYSTEM_RECOVERED",
        None,
    );
    let description = envelope["result"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("recovered from media"),
        "{description}"
    );
    node.stop();
}
