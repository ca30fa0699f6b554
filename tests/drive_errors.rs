//! Drive errors (issue "Faults", part 5), with EIO injected on single NL-SAS drives through
//! the REST API of the real binary:
//!
//! - every read of one drive fails: data whose cache copy is gone still reads back, rebuilt
//!   from the row's other units and parity, and the node goes on serving;
//! - a write to another drive fails: that drive is failed (a DRIVE_FAILED event names it),
//!   the row goes to the healthy drives, the node goes on serving, and everything written
//!   reads back, before and after a restart (which keeps both drives failed). The model
//!   (`hw/ci.toml`) has no spare space, so two failed drives leave rows with exactly P and
//!   Q's worth of redundancy gone and still readable.

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use common::TestNode;
use common::nbd_client::NbdClient;

const BLOCK: usize = 4096;
/// 48 MiB: written, flushed and destaged, then read with a cold cache after a restart.
const BLOCKS: u64 = 12 * 1024;

fn block(lba: u64, version: u8) -> Vec<u8> {
    let mut data = vec![version; BLOCK];
    data[..8].copy_from_slice(&lba.to_le_bytes());
    data
}

fn fill(node: &TestNode, version: u8) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
    let mut chunk = Vec::with_capacity(64 * BLOCK);
    for first in (0..BLOCKS).step_by(64) {
        chunk.clear();
        for lba in first..first + 64 {
            chunk.extend_from_slice(&block(lba, version));
        }
        client
            .write(first * BLOCK as u64, &chunk, 0)
            .expect("write");
    }
    client.flush().expect("flush");
    client.disconnect();
}

fn read_all(node: &TestNode, version: u8) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
    let mut buf = vec![0u8; 64 * BLOCK];
    for first in (0..BLOCKS).step_by(64) {
        client
            .read(first * BLOCK as u64, &mut buf)
            .unwrap_or_else(|e| panic!("read at block {first}: {e}\n{}", node.log_text()));
        for (i, got) in buf.chunks(BLOCK).enumerate() {
            let lba = first + i as u64;
            assert!(got == block(lba, version), "block {lba} reads back wrong");
        }
    }
    client.disconnect();
}

#[test]
fn drives_that_fail_reads_or_writes_are_failed_and_everything_still_reads_back() {
    let mut node = TestNode::start();
    node.pool_and_volume("p", "300M", "v", "64M");
    fill(&node, 1);
    // A clean stop destages everything; the restarted node's cache is cold.
    node.stop();
    node.restart();
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas2", "op": "read", "error": "EIO"}"#,
    );
    read_all(&node, 1);
    let fired = rest_unix::list(&node.mgmt_socket(), "faults", "")[0]["fired"]
        .as_u64()
        .unwrap_or(0);
    assert!(fired > 0, "no read reached nlsas2: the test proves nothing");
    eprintln!("{fired} reads of nlsas2 failed; every block read back from the others");

    // A failed row write fails the drive, not the node.
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas3", "op": "write", "error": "EIO"}"#,
    );
    for version in 2..4 {
        fill(&node, version);
        read_all(&node, version);
    }
    let events = rest_unix::list(&node.mgmt_socket(), "events", "code=DRIVE_FAILED");
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|event| event["description"].as_str())
        .collect();
    assert!(
        texts.iter().any(|text| text.contains("nlsas3")),
        "no DRIVE_FAILED event names nlsas3: {texts:?}\n{}",
        node.log_text()
    );
    assert!(
        texts.iter().any(|text| text.contains("nlsas2")),
        "the drive whose every read failed was not failed: {texts:?}"
    );
    node.stop();
    node.restart();
    read_all(&node, 3);
    assert!(
        node.log_text()
            .lines()
            .all(|line| !line.contains("durability failure")),
        "{}",
        node.log_text()
    );
    node.stop();
}

/// Waits (bounded) for an event with `code` whose description names `needle`.
fn wait_for_event(node: &TestNode, code: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let events = rest_unix::list(&node.mgmt_socket(), "events", &format!("code={code}"));
        if let Some(text) = events
            .iter()
            .filter_map(|event| event["description"].as_str())
            .find(|text| text.contains(needle) && text.contains(code_word(code)))
        {
            return text.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {code} event naming {needle} within 120 s:\n{}",
            node.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn code_word(code: &str) -> &'static str {
    match code {
        "REBUILD_COMPLETED" => "completed",
        _ => "",
    }
}

#[test]
fn a_failed_drive_of_a_declustered_array_is_rebuilt_into_spare_space() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/ci-raid.toml");
    let mut node = TestNode::start_with_model(model);
    node.pool_and_volume("p", "300M", "v", "64M");
    fill(&node, 1);
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas3", "op": "write", "error": "EIO"}"#,
    );
    fill(&node, 2);
    wait_for_event(&node, "DRIVE_FAILED", "nlsas3");
    let done = wait_for_event(&node, "REBUILD_COMPLETED", "nlsas3");
    eprintln!("{done}");
    read_all(&node, 2);
    node.stop();
    node.restart();
    read_all(&node, 2);
    node.stop();
}

#[test]
fn a_drive_slower_than_the_model_allows_is_failed_and_its_data_rebuilt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/ci-raid.toml");
    let text = std::fs::read_to_string(source).expect("read hw/ci-raid.toml");
    let text = text.replace(
        "spare_drives = 2",
        "spare_drives = 2\ndrive_timeout_ms = 300",
    );
    assert!(text.contains("drive_timeout_ms = 300"));
    let model = dir.path().join("slow.toml");
    std::fs::write(&model, text).expect("write the model");
    let mut node = TestNode::start_with_model(model);
    node.pool_and_volume("p", "300M", "v", "64M");
    fill(&node, 1);
    node.stop();
    node.restart();
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas6", "op": "read", "delay_ms": 800}"#,
    );
    read_all(&node, 1);
    let failed = wait_for_event(&node, "DRIVE_FAILED", "nlsas6");
    assert!(failed.contains("drive timeout"), "{failed}");
    wait_for_event(&node, "REBUILD_COMPLETED", "nlsas6");
    read_all(&node, 1);
    node.stop();
}
