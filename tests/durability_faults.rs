//! Durability errors stop the node one way (issue "Faults"), against the real binary with
//! EIO injected on the vault SSD through the REST API:
//!
//! - EIO on the journal's fsync during a management change: the node exits with status 2,
//!   the client never hears success, and after a restart the change is wholly there or
//!   wholly absent, and the node serves what its journal holds.
//! - EIO on the journal's fsync during an NBD FLUSH: the flush never succeeds, the node
//!   exits 2, and every flush acknowledged before the fault reads back after a restart.
//! - EIO on an SSD write during the clean stop: the node exits 2 instead of claiming a
//!   clean stop, and the previous checkpoint plus the journal recover everything flushed.

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::time::Duration;

use common::TestNode;
use common::nbd_client::NbdClient;

const BLOCK: usize = 4096;

/// Waits for the node to stop by itself and checks it did so the durability way: exit
/// status 2 and one message naming the device and the operation.
fn expect_durability_stop(node: &mut TestNode, device: &str, operation: &str) {
    let status = node
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the node did not stop after EIO:\n{}", node.log_text()));
    let log = node.log_text();
    assert_eq!(
        status.code(),
        Some(2),
        "exit status 2 after EIO ({status}):\n{log}"
    );
    let messages: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("durability failure"))
        .collect();
    assert_eq!(messages.len(), 1, "one operator message:\n{log}");
    assert!(
        messages[0].contains(device) && messages[0].contains(operation),
        "the message names {device} and {operation}: {}",
        messages[0]
    );
}

fn block(lba: u64, version: u8) -> Vec<u8> {
    let mut data = vec![version; BLOCK];
    data[..8].copy_from_slice(&lba.to_le_bytes());
    data
}

#[test]
fn eio_on_the_journal_fsync_during_a_management_change_stops_the_node() {
    let mut node = TestNode::start();
    let socket = node.mgmt_socket();
    rest_unix::ok(
        &socket,
        "POST",
        "/api/rest/pools",
        Some(r#"{"name": "before", "physical_capacity": 104857600}"#),
    );
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "ssd0", "op": "fsync", "error": "EIO", "nth": 1}"#,
    );
    let answer = rest_unix::call(
        &socket,
        "POST",
        "/api/rest/pools",
        Some(r#"{"name": "during", "physical_capacity": 104857600}"#),
    );
    if let Ok((status, body)) = &answer {
        assert!(
            !(200..300).contains(status),
            "the change was answered as a success though its journal record is not durable: {status} {body}"
        );
    }
    expect_durability_stop(&mut node, "ssd0", "fsync");
    node.restart();
    let pools: Vec<String> = rest_unix::list(&socket, "pools", "")
        .iter()
        .map(|pool| pool["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(pools.contains(&"before".to_string()), "{pools:?}");
    // Wholly there or wholly absent: if there, it is whole and usable.
    if pools.contains(&"during".to_string()) {
        let during = rest_unix::list(&socket, "pools", "name=eq:during");
        assert_eq!(during[0]["physical_capacity"].as_u64(), Some(104_857_600));
    }
    // The node serves what its journal holds: a change now commits and survives a restart.
    rest_unix::ok(
        &socket,
        "POST",
        "/api/rest/pools",
        Some(r#"{"name": "after", "physical_capacity": 104857600}"#),
    );
    node.restart();
    assert_eq!(rest_unix::list(&socket, "pools", "name=eq:after").len(), 1);
    node.stop();
}

#[test]
fn eio_on_the_journal_fsync_during_a_flush_stops_the_node_and_keeps_earlier_flushes() {
    let mut node = TestNode::start();
    node.pool_and_volume("p", "200M", "v", "64M");
    let nbd = node.nbd_socket();
    let mut client = NbdClient::connect(&nbd, "v").expect("connect");
    for lba in 0..256u64 {
        client
            .write(lba * BLOCK as u64, &block(lba, 1), 0)
            .expect("write");
    }
    client.flush().expect("first flush");
    for lba in 0..256u64 {
        client
            .write(lba * BLOCK as u64, &block(lba, 2), 0)
            .expect("write");
    }
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "ssd0", "op": "fsync", "error": "EIO", "nth": 1}"#,
    );
    assert!(
        client.flush().is_err(),
        "a flush whose journal fsync failed was answered as a success"
    );
    expect_durability_stop(&mut node, "ssd0", "fsync");
    node.restart();
    let mut client = NbdClient::connect(&nbd, "v").expect("reconnect");
    let mut buf = vec![0u8; BLOCK];
    for lba in 0..256u64 {
        client.read(lba * BLOCK as u64, &mut buf).expect("read");
        assert!(
            buf == block(lba, 1) || buf == block(lba, 2),
            "block {lba} lost its flushed contents (first byte now {})",
            buf[8]
        );
    }
    client.disconnect();
    node.stop();
}

#[test]
fn eio_on_the_ssd_during_the_clean_stop_stops_with_status_2_and_recovers() {
    let mut node = TestNode::start();
    node.pool_and_volume("p", "200M", "v", "64M");
    let nbd = node.nbd_socket();
    let mut client = NbdClient::connect(&nbd, "v").expect("connect");
    for lba in 0..512u64 {
        client
            .write(lba * BLOCK as u64, &block(lba, 7), 0)
            .expect("write");
    }
    client.flush().expect("flush");
    client.disconnect();
    // Every SSD write fails from now on: the stop's destage commits and checkpoint cannot
    // be made durable.
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "ssd0", "op": "write", "error": "EIO"}"#,
    );
    node.signal(libc::SIGTERM);
    expect_durability_stop(&mut node, "ssd0", "write");
    node.restart();
    let mut client = NbdClient::connect(&nbd, "v").expect("reconnect");
    let mut buf = vec![0u8; BLOCK];
    for lba in 0..512u64 {
        client.read(lba * BLOCK as u64, &mut buf).expect("read");
        assert_eq!(buf, block(lba, 7), "block {lba} after the failed stop");
    }
    client.disconnect();
    node.stop();
}
