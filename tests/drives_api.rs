//! The drive management surface (issue "InfiniRAID", items 3, 4, 5 and 7) on the real
//! binary with `hw/ci-raid.toml` (4+2 rows over 10 drives, two drives' worth of spare):
//!
//! - the drives list in InfiniBox's component shape: 10 drives, all ACTIVE, in enclosure 1;
//! - failing drive 3 is refused without approval (REST), for a READ_ONLY user (REST over
//!   TCP), and by the CLI without `--yes` when it cannot ask; `troika drive fail 3 --yes`
//!   fails it, the rebuild starts and completes (bounded waits on REBUILD_STARTED and
//!   REBUILD_COMPLETED), and every block written before reads back with a cold cache;
//! - `/metrics` shows drive 3 FAILED and the rebuild gauges;
//! - replacing is refused for a relative path and a path another drive uses; `troika
//!   drive replace 3 --path NEW` puts NEW in, the copy-back completes
//!   (DRIVE_COPYBACK_COMPLETED) and drive 3 is ACTIVE with a new serial; after a restart
//!   drive 3 is opened at NEW and every block reads back again.
//!
//! A second test fails a drive of the straight `hw/ci.toml` (no spare space, so nothing is
//! rebuilt) and reads everything back by reconstruction, which `troika_degraded_reads_total`
//! counts.

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;
use serde_json::{Value, json};

const BLOCK: usize = 4096;
/// 32 MiB written, destaged by a clean stop, then read back with a cold cache.
const BLOCKS: u64 = 8 * 1024;
const READER_PASSWORD: &str = "reader-password-1";
/// Drive 3 is slot 4 of enclosure 1.
const DRIVE3: &str = "/api/rest/components/enclosures/1/drives/4";

fn raid_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/ci-raid.toml")
}

fn block(lba: u64) -> Vec<u8> {
    let mut data = vec![(lba % 251) as u8 ^ 0x5a; BLOCK];
    data[..8].copy_from_slice(&lba.to_le_bytes());
    data
}

fn fill(node: &TestNode) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
    let mut chunk = Vec::with_capacity(64 * BLOCK);
    for first in (0..BLOCKS).step_by(64) {
        chunk.clear();
        for lba in first..first + 64 {
            chunk.extend_from_slice(&block(lba));
        }
        client
            .write(first * BLOCK as u64, &chunk, 0)
            .expect("write");
    }
    client.flush().expect("flush");
    client.disconnect();
}

fn read_all(node: &TestNode, when: &str) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
    let mut buf = vec![0u8; 64 * BLOCK];
    for first in (0..BLOCKS).step_by(64) {
        client
            .read(first * BLOCK as u64, &mut buf)
            .unwrap_or_else(|e| panic!("{when}: read at block {first}: {e}\n{}", node.log_text()));
        for (i, got) in buf.chunks(BLOCK).enumerate() {
            let lba = first + i as u64;
            assert!(got == block(lba), "{when}: block {lba} reads back wrong");
        }
    }
    client.disconnect();
}

fn drives(node: &TestNode) -> Vec<Value> {
    rest_unix::list(&node.mgmt_socket(), "components/drives", "sort=id")
}

fn drive3(node: &TestNode) -> Value {
    rest_unix::ok(&node.mgmt_socket(), "GET", DRIVE3, None)
}

/// The description of the first event `code`, waiting at most `limit` for it.
fn wait_for_event(node: &TestNode, code: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let events = rest_unix::list(&node.mgmt_socket(), "events", &format!("code=eq:{code}"));
        if let Some(event) = events.first() {
            return event["description"].as_str().unwrap_or("").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {code} event within {limit:?}; drives: {:?}\n{}",
            drives(node),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the metrics sample `line_start` (name and labels), which must be there.
fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {line_start} in /metrics:\n{text}"))
}

fn metrics_text(node: &TestNode) -> String {
    let (status, body) = node.http_get("/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

fn state_sample(drive: u32, state: &str) -> String {
    format!("troika_drive_state{{drive=\"{drive}\",name=\"nlsas{drive}\",state=\"{state}\"}}")
}

/// The refusals that must leave drive 3 ACTIVE.
fn refusals_leave_drive3_active(node: &TestNode) {
    let socket = node.mgmt_socket();
    let fail = format!("{DRIVE3}/fail");
    let (status, answer) = rest_unix::call(&socket, "POST", &fail, None).expect("call");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("APPROVAL_REQUIRED")),
        "{answer}"
    );
    let (status, answer) = node.api_json(
        "POST",
        &format!("{fail}?approved=true"),
        Some(("reader", READER_PASSWORD)),
        None,
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{answer}"
    );
    let output = std::process::Command::new(common::troika_bin())
        .arg("--data")
        .arg(node.data())
        .args(["drive", "fail", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("run troika");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert_eq!(drive3(node)["state"], "ACTIVE");
}

#[test]
fn a_drive_is_failed_rebuilt_replaced_and_copied_back_through_the_cli_and_rest() {
    let mut node = TestNode::start_with_api(raid_model());
    let socket = node.mgmt_socket();
    let listed = drives(&node);
    assert_eq!(listed.len(), 10, "{listed:?}");
    for (id, drive) in listed.iter().enumerate() {
        assert_eq!(drive["id"], id, "{drive}");
        assert_eq!(drive["state"], "ACTIVE", "{drive}");
        assert_eq!(
            (
                drive["enclosure_index"].clone(),
                drive["drive_index"].clone()
            ),
            (json!(1), json!(id + 1))
        );
        assert_eq!(drive["bytes_capacity"], 96 << 20, "{drive}");
    }
    let old_serial = drive3(&node)["serial_number"].clone();

    rest_unix::ok(
        &socket,
        "POST",
        "/api/rest/users",
        Some(
            &json!({"name": "reader", "password": READER_PASSWORD, "role": "READ_ONLY"})
                .to_string(),
        ),
    );
    node.pool_and_volume("p", "300M", "v", "64M");
    fill(&node);
    // A clean stop destages everything; the restarted node's cache is cold.
    node.stop();
    node.restart();
    refusals_leave_drive3_active(&node);

    let out = node.cli_ok(&["drive", "fail", "3", "--yes"]);
    assert!(out.contains("drive 3 (nlsas3) is"), "{out}");
    let (status, answer) = rest_unix::call(
        &socket,
        "POST",
        &format!("{DRIVE3}/fail?approved=true"),
        None,
    )
    .expect("call");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("DRIVE_STATE")),
        "{answer}"
    );
    wait_for_event(&node, "REBUILD_STARTED", Duration::from_secs(10));
    let completed = wait_for_event(&node, "REBUILD_COMPLETED", Duration::from_secs(60));
    assert!(
        completed.contains("MB/s") && !completed.contains("(0.0 MB/s)"),
        "the rebuild moved nothing: {completed}"
    );
    let failed = drive3(&node);
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap_or("")
            .contains("through the API"),
        "{failed}"
    );
    read_all(&node, "after the rebuild");

    let text = metrics_text(&node);
    assert_eq!(metric(&text, &state_sample(3, "FAILED")), 1.0);
    assert_eq!(metric(&text, &state_sample(3, "ACTIVE")), 0.0);
    assert_eq!(metric(&text, &state_sample(4, "ACTIVE")), 1.0);
    assert_eq!(metric(&text, "troika_rebuild_progress_ratio"), 1.0);
    for name in [
        "troika_rebuild_bytes_per_second",
        "troika_rebuild_eta_seconds",
        "troika_degraded_reads_total",
    ] {
        metric(&text, name);
    }

    // Replacement: the refusals, then the CLI.
    let replace = format!("{DRIVE3}/replace");
    for (path, status, code) in [
        ("relative.img".to_owned(), 400, "BAD_REQUEST"),
        (
            node.data().join("nlsas4.img").display().to_string(),
            409,
            "DRIVE_PATH_IN_USE",
        ),
        (
            node.data().join("ssd0.img").display().to_string(),
            409,
            "DRIVE_PATH_IN_USE",
        ),
    ] {
        let body = json!({"path": path}).to_string();
        let (got, answer) = rest_unix::call(&socket, "POST", &replace, Some(&body)).expect("call");
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {answer}"
        );
    }
    let new_path = node.data().join("new-nlsas3.img");
    let out = node.cli_ok(&[
        "drive",
        "replace",
        "3",
        "--path",
        &new_path.display().to_string(),
    ]);
    assert!(out.contains("REPLACING") || out.contains("ACTIVE"), "{out}");
    wait_for_event(&node, "DRIVE_REPLACED", Duration::from_secs(5));
    wait_for_event(&node, "DRIVE_COPYBACK_COMPLETED", Duration::from_secs(60));
    let replaced = drive3(&node);
    assert_eq!(replaced["state"], "ACTIVE", "{replaced}");
    assert_eq!(
        replaced["path"],
        new_path.display().to_string(),
        "{replaced}"
    );
    assert_ne!(replaced["serial_number"], old_serial, "{replaced}");
    let listing = node.cli_ok(&["drive", "ls"]);
    let row3 = listing
        .lines()
        .find(|line| line.starts_with("3 "))
        .unwrap_or("");
    assert!(
        row3.contains("nlsas3") && row3.contains("ACTIVE"),
        "{listing}"
    );

    // A restart opens drive 3 at its new path; the data reads back from the array.
    node.restart();
    let reopened = drive3(&node);
    assert_eq!(
        reopened["path"],
        new_path.display().to_string(),
        "{reopened}"
    );
    assert_eq!(
        reopened["serial_number"], replaced["serial_number"],
        "{reopened}"
    );
    assert_eq!(reopened["state"], "ACTIVE", "{reopened}");
    read_all(&node, "after the copy-back and a restart");

    node.cli_ok(&["drive", "priority", "low"]);
    let rebuild = rest_unix::ok(&socket, "GET", "/api/rest/components/rebuild", None);
    assert_eq!(
        (rebuild["priority"].as_str(), rebuild["phase"].as_str()),
        (Some("LOW"), Some("IDLE")),
        "{rebuild}"
    );
    let (status, _) = node.api_json(
        "PUT",
        "/api/rest/components/rebuild",
        Some(("reader", READER_PASSWORD)),
        Some(&json!({"priority": "HIGH"})),
    );
    assert_eq!(status, 403);
    // The priority an operator set is kept across a restart.
    node.stop();
    node.restart();
    let rebuild = rest_unix::ok(
        &node.mgmt_socket(),
        "GET",
        "/api/rest/components/rebuild",
        None,
    );
    assert_eq!(rebuild["priority"].as_str(), Some("LOW"), "{rebuild}");
    node.stop();
}

#[test]
fn a_failed_drive_without_spare_space_is_read_around_and_counted_as_degraded_reads() {
    let mut node = TestNode::start();
    node.pool_and_volume("p", "300M", "v", "64M");
    fill(&node);
    node.stop();
    node.restart();
    node.cli_ok(&["drive", "fail", "2", "--yes"]);
    read_all(&node, "with drive 2 failed");
    let text = metrics_text(&node);
    assert_eq!(metric(&text, &state_sample(2, "FAILED")), 1.0, "{text}");
    assert!(metric(&text, "troika_degraded_reads_total") > 0.0, "{text}");
    let rebuild = rest_unix::ok(
        &node.mgmt_socket(),
        "GET",
        "/api/rest/components/rebuild",
        None,
    );
    assert_eq!(
        (rebuild["phase"].as_str(), rebuild["drives_out"].as_u64()),
        (Some("IDLE"), Some(1)),
        "{rebuild}"
    );
    node.stop();
}
