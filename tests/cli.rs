//! The operator's view: the `troika` CLI (tables and `--json`), its errors and exit codes,
//! `troika serve` start-up failures, and the REST envelope on the management socket.

mod common;

use std::process::{Command, Output};

use common::TestNode;
use common::nbd_client::NbdClient;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(node: &TestNode, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let stdout = node.cli_ok(&full);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("troika {full:?} printed bad JSON ({e}):\n{stdout}"))
}

/// Runs a CLI command that must fail; returns its exit code and all its output.
fn cli_err(node: &TestNode, args: &[&str]) -> (i32, String) {
    let out = node.cli(args);
    assert!(
        !out.status.success(),
        "troika {args:?} succeeded but should fail:\n{}",
        text(&out)
    );
    (out.status.code().unwrap_or(-1), text(&out))
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()
        .expect("a JSON list")
        .iter()
        .find(|o| o["name"] == name)
}

#[test]
fn pools_and_volumes_round_trip_through_the_cli() {
    let node = TestNode::start();
    assert_eq!(json(&node, &["pool", "ls"]), Value::Array(vec![]));
    assert_eq!(json(&node, &["vol", "ls"]), Value::Array(vec![]));

    node.cli_ok(&["pool", "create", "P", "--size", "200M"]);
    let pools = json(&node, &["pool", "ls"]);
    let pool = find(&pools, "P").unwrap_or_else(|| panic!("pool P not listed: {pools:#}"));
    assert_eq!(pool["physical_capacity"], 200 * MIB, "{pool:#}");
    assert_eq!(pool["virtual_capacity"], 200 * MIB, "{pool:#}");
    assert_eq!(pool["volumes_count"], 0, "{pool:#}");
    let pool_id = pool["id"].clone();

    node.cli_ok(&["vol", "create", "V", "--pool", "P", "--size", "64M"]);
    node.cli_ok(&["vol", "create", "W", "--pool", "P", "--size", "100M"]);
    let vols = json(&node, &["vol", "ls"]);
    let v = find(&vols, "V").unwrap_or_else(|| panic!("volume V not listed: {vols:#}"));
    assert_eq!(v["size"], 64 * MIB, "{v:#}");
    assert_eq!(v["pool_id"], pool_id, "{v:#}");
    assert_eq!(v["pool_name"], "P", "{v:#}");
    assert_eq!(find(&vols, "W").expect("W listed")["size"], 100 * MIB);
    let pools = json(&node, &["pool", "ls"]);
    let pool = find(&pools, "P").unwrap();
    assert_eq!(pool["volumes_count"], 2, "{pool:#}");
    assert_eq!(pool["allocated_virtual_space"], 164 * MIB, "{pool:#}");

    // The table output names the objects too.
    let table = node.cli_ok(&["vol", "ls"]);
    assert!(
        table.contains('V') && table.contains('W') && table.contains("SIZE"),
        "{table}"
    );
    let table = node.cli_ok(&["pool", "ls"]);
    assert!(table.contains('P') && table.contains("NAME"), "{table}");

    node.cli_ok(&["vol", "resize", "V", "96M"]);
    let vols = json(&node, &["vol", "ls"]);
    assert_eq!(find(&vols, "V").unwrap()["size"], 96 * MIB, "{vols:#}");

    node.cli_ok(&["vol", "delete", "W"]);
    let vols = json(&node, &["vol", "ls"]);
    assert!(
        find(&vols, "W").is_none(),
        "deleted volume still listed: {vols:#}"
    );
    node.cli_ok(&["vol", "delete", "V"]);
    assert_eq!(json(&node, &["vol", "ls"]), Value::Array(vec![]));
    node.cli_ok(&["pool", "delete", "P"]);
    assert_eq!(json(&node, &["pool", "ls"]), Value::Array(vec![]));
}

#[test]
fn cli_errors_name_the_object_and_exit_non_zero() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");

    let (code, out) = cli_err(&node, &["pool", "create", "P", "--size", "10M"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("NAME_CONFLICT") && out.contains("\"P\""),
        "{out}"
    );

    let (_, out) = cli_err(
        &node,
        &["vol", "create", "V", "--pool", "P", "--size", "1M"],
    );
    assert!(
        out.contains("NAME_CONFLICT") && out.contains("\"V\""),
        "{out}"
    );

    let (_, out) = cli_err(
        &node,
        &["vol", "create", "W", "--pool", "NOPE", "--size", "1M"],
    );
    assert!(
        out.contains("POOL_NOT_FOUND") && out.contains("NOPE"),
        "{out}"
    );

    let (code, out) = cli_err(
        &node,
        &["vol", "create", "W", "--pool", "P", "--size", "12X"],
    );
    assert_eq!(code, 2, "a bad size is a usage error: {out}");
    assert!(out.contains("12X"), "{out}");
    let (code, out) = cli_err(&node, &["pool", "create", "Q", "--size", "12X"]);
    assert_eq!(code, 2, "a bad size is a usage error: {out}");

    // 200M of virtual capacity, 64M already given to V.
    let (_, out) = cli_err(
        &node,
        &["vol", "create", "W", "--pool", "P", "--size", "10G"],
    );
    assert!(
        out.contains("\"P\"") || out.contains("W"),
        "error does not name the object: {out}"
    );
    let (_, out) = cli_err(
        &node,
        &["vol", "create", "W", "--pool", "P", "--size", "137M"],
    );
    assert!(!out.is_empty(), "no message for an over-capacity volume");
    node.cli_ok(&["vol", "create", "W", "--pool", "P", "--size", "136M"]);
    let (_, out) = cli_err(&node, &["vol", "resize", "W", "137M"]);
    assert!(!out.is_empty(), "no message for an over-capacity resize");

    let (_, out) = cli_err(&node, &["pool", "delete", "P"]);
    assert!(out.contains("\"P\""), "{out}");
    let pools = json(&node, &["pool", "ls"]);
    assert!(
        find(&pools, "P").is_some(),
        "pool with volumes was deleted: {pools:#}"
    );

    let (_, out) = cli_err(&node, &["vol", "delete", "NOPE"]);
    assert!(
        out.contains("VOLUME_NOT_FOUND") && out.contains("NOPE"),
        "{out}"
    );
    let (_, out) = cli_err(&node, &["vol", "resize", "NOPE", "1G"]);
    assert!(out.contains("NOPE"), "{out}");
    let (_, out) = cli_err(&node, &["pool", "delete", "NOPE"]);
    assert!(out.contains("NOPE"), "{out}");

    // The errors changed nothing.
    let vols = json(&node, &["vol", "ls"]);
    assert_eq!(vols.as_array().unwrap().len(), 2, "{vols:#}");
    assert_eq!(find(&vols, "V").unwrap()["size"], 64 * MIB);
    assert_eq!(find(&vols, "W").unwrap()["size"], 136 * MIB);
}

#[test]
fn resize_grows_the_nbd_export() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let mut before = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    assert_eq!(before.size, 64 * MIB);
    let data = vec![0xA5u8; 4096];
    before
        .write(64 * MIB - 4096, &data, 0)
        .expect("write at the old end");

    node.cli_ok(&["vol", "resize", "V", "128M"]);
    let mut after = NbdClient::connect(&node.nbd_socket(), "V").expect("connect after resize");
    assert_eq!(after.size, 128 * MIB, "new connections see the new size");
    if common::have("nbdinfo") {
        let out = Command::new("nbdinfo")
            .args(["--size", &node.uri("V")])
            .output()
            .expect("nbdinfo");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (128 * MIB).to_string()
        );
    }
    // The new space is usable and the old data is still there.
    let tail = vec![0x5Au8; 4096];
    after
        .write(128 * MIB - 4096, &tail, 0)
        .expect("write at the new end");
    let mut back = vec![0u8; 4096];
    after
        .read(128 * MIB - 4096, &mut back)
        .expect("read at the new end");
    assert_eq!(back, tail);
    after
        .read(64 * MIB - 4096, &mut back)
        .expect("read at the old end");
    assert_eq!(back, data);
    let mut fresh = vec![1u8; 4096];
    after.read(64 * MIB, &mut fresh).expect("read grown space");
    assert!(fresh.iter().all(|&b| b == 0), "grown space is not zero");
    assert_eq!(
        after
            .raw(0, 0, 128 * MIB, 4096, &[])
            .expect("read past the new end"),
        22
    );
    after.disconnect();
    before.disconnect();
}

#[test]
fn a_second_node_on_the_same_data_dir_refuses_to_start() {
    let node = TestNode::start();
    let out = Command::new(common::troika_bin())
        .args(["serve", "--hw"])
        .arg(common::ci_model())
        .arg("--data")
        .arg(node.data())
        .args(["--nbd-listen", "none"])
        .output()
        .expect("run second troika serve");
    assert!(!out.status.success(), "second node started: {}", text(&out));
    assert!(text(&out).contains("already"), "{}", text(&out));
    // The first node still serves.
    node.cli_ok(&["pool", "ls"]);
}

fn serve_with_model(model: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let hw = dir.path().join("bad.toml");
    std::fs::write(&hw, model).expect("write model");
    Command::new(common::troika_bin())
        .args(["serve", "--hw"])
        .arg(&hw)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--nbd-listen", "none"])
        .output()
        .expect("run troika serve")
}

#[test]
fn a_bad_hardware_model_fails_at_start_naming_the_field() {
    let good = std::fs::read_to_string(common::ci_model()).expect("read ci model");

    let bad_size = good.replacen("size = \"128M\"", "size = \"12Q\"", 1);
    assert_ne!(bad_size, good);
    let out = serve_with_model(&bad_size);
    assert!(
        !out.status.success(),
        "started with a bad size: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("size") && text(&out).contains("12Q"),
        "{}",
        text(&out)
    );

    let unknown = good.replacen("controllers = 3", "controllers = 3\nbogus_field = 1", 1);
    let out = serve_with_model(&unknown);
    assert!(
        !out.status.success(),
        "started with an unknown field: {}",
        text(&out)
    );
    assert!(text(&out).contains("bogus_field"), "{}", text(&out));

    let bad_controllers = good.replacen("controllers = 3", "controllers = \"three\"", 1);
    let out = serve_with_model(&bad_controllers);
    assert!(
        !out.status.success(),
        "started with a bad controllers: {}",
        text(&out)
    );
    assert!(text(&out).contains("controllers"), "{}", text(&out));

    let bad_dram = good.replacen(
        "dram_per_controller = \"32M\"",
        "dram_per_controller = \"lots\"",
        1,
    );
    let out = serve_with_model(&bad_dram);
    assert!(
        !out.status.success(),
        "started with a bad dram: {}",
        text(&out)
    );
    assert!(text(&out).contains("dram_per_controller"), "{}", text(&out));
}

#[test]
fn the_cli_without_a_node_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["vol", "ls"][..],
        &["pool", "ls"],
        &["--json", "vol", "ls"],
        &["pool", "create", "P", "--size", "1G"],
    ] {
        let out = Command::new(common::troika_bin())
            .arg("--data")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run troika");
        assert_eq!(
            out.status.code(),
            Some(3),
            "troika {args:?}: {}",
            text(&out)
        );
        assert!(
            !text(&out).trim().is_empty(),
            "troika {args:?} exits without a message"
        );
    }
}

#[test]
fn rest_pools_use_the_infinibox_envelope() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let (status, body) = node.http_get("/api/rest/pools");
    assert_eq!(status, 200, "{body}");
    let reply: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON ({e}): {body}"));
    let envelope = reply.as_object().expect("an object");
    for key in ["result", "error", "metadata"] {
        assert!(envelope.contains_key(key), "{key} missing from {reply:#}");
    }
    assert!(reply["error"].is_null(), "{reply:#}");
    let pools = reply["result"].as_array().expect("result is a list");
    assert_eq!(pools.len(), 1, "{reply:#}");
    assert_eq!(pools[0]["name"], "P");
    assert!(reply["metadata"].is_object(), "{reply:#}");

    let (status, body) = node.http_get("/api/rest/pools/987654");
    assert_eq!(status, 404, "{body}");
    let reply: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON ({e}): {body}"));
    assert!(reply["result"].is_null(), "{reply:#}");
    assert!(reply["error"]["code"].is_string(), "{reply:#}");
}
