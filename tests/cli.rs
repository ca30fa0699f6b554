//! The operator's view: the `troika` CLI (tables and `--json`), its errors and exit codes,
//! `troika serve` start-up failures, and the REST envelope on the management socket; the
//! CLI over TCP with credentials, the event log and `top`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    if common::tools::present(&[&common::tools::NBDINFO]) {
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

/// Runs the CLI against `node` with `env` set (and the CLI's own variables cleared first),
/// stdin not a terminal.
fn troika_env(node: &TestNode, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(common::troika_bin());
    for name in [
        "TROIKA_URL",
        "TROIKA_USER",
        "TROIKA_PASSWORD",
        "TROIKA_NEW_PASSWORD",
    ] {
        command.env_remove(name);
    }
    command
        .envs(env.iter().copied())
        .arg("--data")
        .arg(node.data())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run troika CLI")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "troika {what} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parsed(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{stdout}"))
}

#[test]
fn pools_volumes_and_users_are_updated_by_name_over_the_socket() {
    let node = TestNode::start();
    node.cli_ok(&["pool", "create", "P", "--size", "200M"]);
    let pool = json(
        &node,
        &[
            "pool",
            "update",
            "P",
            "--name",
            "Q",
            "--warning",
            "70",
            "--critical",
            "90",
            "--ssd",
            "off",
        ],
    );
    assert_eq!(pool["name"], "Q", "{pool:#}");
    assert_eq!(pool["physical_capacity_warning"], 70, "{pool:#}");
    assert_eq!(pool["physical_capacity_critical"], 90, "{pool:#}");
    assert_eq!(pool["ssd_enabled"], false, "{pool:#}");
    let pool = json(
        &node,
        &[
            "pool",
            "update",
            "Q",
            "--size",
            "300M",
            "--virtual-size",
            "400M",
        ],
    );
    assert_eq!(pool["physical_capacity"], 300 * MIB, "{pool:#}");
    assert_eq!(pool["virtual_capacity"], 400 * MIB, "{pool:#}");
    let table = node.cli_ok(&["pool", "ls"]);
    assert!(
        table.contains("STATE") && table.contains("NORMAL") && table.contains("FREE"),
        "{table}"
    );
    let (code, out) = cli_err(&node, &["pool", "update", "Q"]);
    assert_eq!(code, 2, "an update without changes is a usage error: {out}");

    let volume = json(
        &node,
        &[
            "vol", "create", "V", "--pool", "Q", "--size", "64M", "--thick",
        ],
    );
    assert_eq!(volume["provtype"], "THICK", "{volume:#}");
    let volume = json(
        &node,
        &["vol", "update", "V", "--name", "W", "--write-protect", "on"],
    );
    assert_eq!(volume["name"], "W", "{volume:#}");
    assert_eq!(volume["write_protected"], true, "{volume:#}");
    let table = node.cli_ok(&["vol", "ls"]);
    let row = table
        .lines()
        .find(|line| line.starts_with("W "))
        .unwrap_or_else(|| panic!("W not listed:\n{table}"));
    assert!(
        table.contains("WRITE-PROTECTED") && row.contains("THICK") && row.contains("yes"),
        "{table}"
    );
    let (code, out) = cli_err(&node, &["vol", "update", "NOPE", "--ssd", "on"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("VOLUME_NOT_FOUND") && out.contains("\"NOPE\"") && out.contains("vol ls"),
        "{out}"
    );

    // Users: the new password comes from the environment, never the command line.
    let out = troika_env(
        &node,
        &["user", "create", "alice", "--role", "POOL_ADMIN"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("TROIKA_NEW_PASSWORD"), "{}", text(&out));
    let created = ok(
        troika_env(
            &node,
            &[
                "--json",
                "user",
                "create",
                "alice",
                "--role",
                "POOL_ADMIN",
                "--email",
                "a@example.com",
            ],
            &[("TROIKA_NEW_PASSWORD", "alice-secret-1")],
        ),
        "user create",
    );
    let alice = parsed(&created);
    assert_eq!(alice["role"], "POOL_ADMIN", "{alice:#}");
    let table = node.cli_ok(&["user", "ls"]);
    assert!(
        table.contains("alice") && table.contains("POOL_ADMIN") && table.contains("admin"),
        "{table}"
    );

    let owners = node.cli_ok(&["pool", "owners", "Q", "--add", "alice"]);
    assert!(owners.contains("alice"), "{owners}");
    let pools = json(&node, &["pool", "ls"]);
    assert_eq!(
        find(&pools, "Q").unwrap()["owners"],
        serde_json::json!([alice["id"]])
    );
    let owners = json(&node, &["pool", "owners", "Q", "--remove", "alice"]);
    assert_eq!(owners, Value::Array(vec![]));
    let (_, out) = cli_err(&node, &["pool", "owners", "Q", "--add", "bob"]);
    assert!(
        out.contains("USER_NOT_FOUND") && out.contains("\"bob\"") && out.contains("user ls"),
        "{out}"
    );
    let (_, out) = cli_err(&node, &["pool", "owners", "NOPE"]);
    assert!(
        out.contains("POOL_NOT_FOUND") && out.contains("pool ls"),
        "{out}"
    );

    let user = json(
        &node,
        &[
            "user",
            "update",
            "alice",
            "--disable",
            "--role",
            "READ_ONLY",
        ],
    );
    assert_eq!(user["enabled"], false, "{user:#}");
    assert_eq!(user["role"], "READ_ONLY", "{user:#}");
    let user = json(&node, &["user", "update", "alice", "--enable"]);
    assert_eq!(user["enabled"], true, "{user:#}");
    let (code, _) = cli_err(&node, &["user", "update", "alice", "--enable", "--disable"]);
    assert_eq!(code, 2);
    let whoami = json(&node, &["user", "whoami"]);
    assert!(whoami["name"].is_string(), "{whoami:#}");
    node.cli_ok(&["user", "delete", "alice"]);
    let (_, out) = cli_err(&node, &["user", "delete", "alice"]);
    assert!(
        out.contains("USER_NOT_FOUND") && out.contains("alice"),
        "{out}"
    );

    let system = node.cli_ok(&["system", "show"]);
    for field in [
        "serial",
        "version (API level)",
        "troika version",
        "state",
        "volumes",
    ] {
        assert!(system.contains(field), "{field} missing:\n{system}");
    }
    let system = json(&node, &["system", "show"]);
    assert_eq!(system["volumes_count"], 1, "{system:#}");
    assert!(system["troika_version"].is_string(), "{system:#}");
}

#[test]
fn the_cli_over_tcp_sends_the_users_credentials() {
    let node = TestNode::start_with_api(common::ci_model());
    let url = format!("http://127.0.0.1:{}", node.api_port.expect("an API port"));
    let password = node.admin_password();
    let admin = |args: &[&str]| {
        let mut full = vec!["--url", url.as_str(), "--user", "admin"];
        full.extend_from_slice(args);
        troika_env(&node, &full, &[("TROIKA_PASSWORD", password.as_str())])
    };

    ok(
        admin(&["pool", "create", "P", "--size", "200M"]),
        "pool create",
    );
    ok(
        admin(&["vol", "create", "V", "--pool", "P", "--size", "64M"]),
        "vol create",
    );
    let vols = parsed(&ok(admin(&["--json", "vol", "ls"]), "vol ls"));
    assert!(find(&vols, "V").is_some(), "{vols:#}");
    let whoami = parsed(&ok(admin(&["--json", "user", "whoami"]), "whoami"));
    assert_eq!(whoami["name"], "admin", "{whoami:#}");
    assert_eq!(whoami["role"], "ADMIN", "{whoami:#}");

    // The same from the environment alone.
    let out = troika_env(
        &node,
        &["system", "show"],
        &[
            ("TROIKA_URL", url.as_str()),
            ("TROIKA_USER", "admin"),
            ("TROIKA_PASSWORD", password.as_str()),
        ],
    );
    assert!(ok(out, "system show").contains("troika version"));

    // A READ_ONLY user may look but not change.
    ok(
        troika_env(
            &node,
            &[
                "--url",
                &url,
                "--user",
                "admin",
                "user",
                "create",
                "ro",
                "--role",
                "READ_ONLY",
            ],
            &[
                ("TROIKA_PASSWORD", password.as_str()),
                ("TROIKA_NEW_PASSWORD", "read-only-pw-1"),
            ],
        ),
        "user create ro",
    );
    let reader = |args: &[&str]| {
        let mut full = vec!["--url", url.as_str(), "--user", "ro"];
        full.extend_from_slice(args);
        troika_env(&node, &full, &[("TROIKA_PASSWORD", "read-only-pw-1")])
    };
    assert!(ok(reader(&["vol", "ls"]), "vol ls as ro").contains('V'));
    let out = reader(&["vol", "create", "X", "--pool", "P", "--size", "1M"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"),
        "{}",
        text(&out)
    );

    // Wrong or missing credentials.
    let out = troika_env(
        &node,
        &["--url", &url, "--user", "admin", "vol", "ls"],
        &[("TROIKA_PASSWORD", "not-the-password")],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("--user") && text(&out).contains("TROIKA_PASSWORD"),
        "{}",
        text(&out)
    );
    let out = troika_env(&node, &["--url", &url, "--user", "admin", "vol", "ls"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("TROIKA_PASSWORD"), "{}", text(&out));
    let out = troika_env(&node, &["--url", &url, "vol", "ls"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--user"), "{}", text(&out));

    // https needs a certificate to verify the node with: without --ca, TROIKA_CA or the
    // data directory's tls/server-cert.pem the CLI asks for one (the file is moved aside
    // for this call; this node serves plain HTTP, so nothing reads it meanwhile), and an
    // unreachable address is exit 3. HTTPS itself: tests/mgmt_tls.rs.
    let https = url.replacen("http", "https", 1);
    let cert = node.data().join("tls/server-cert.pem");
    let aside = node.data().join("tls/server-cert.pem.aside");
    std::fs::rename(&cert, &aside).unwrap();
    let out = troika_env(
        &node,
        &["--url", &https, "--user", "admin", "vol", "ls"],
        &[("TROIKA_PASSWORD", password.as_str())],
    );
    std::fs::rename(&aside, &cert).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--ca FILE"), "{}", text(&out));
    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let out = troika_env(
        &node,
        &["--url", &nobody, "--user", "admin", "vol", "ls"],
        &[("TROIKA_PASSWORD", password.as_str())],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn events_are_listed_and_followed() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");

    let listed = node.cli_ok(&["events", "--level", "INFO"]);
    assert!(
        listed.contains("VOLUME_CREATED") && listed.contains("LEVEL"),
        "{listed}"
    );
    let events = json(&node, &["event", "ls", "--code", "VOLUME_CREATED"]);
    let events = events.as_array().expect("a JSON list");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["level"], "INFO");
    let newest = json(&node, &["event", "ls", "--limit", "1"]);
    assert_eq!(newest.as_array().map(Vec::len), Some(1), "{newest:#}");
    let none = json(&node, &["events", "--level", "CRITICAL"]);
    assert_eq!(none, Value::Array(vec![]));
    let (code, _) = cli_err(&node, &["events", "--level", "LOUD"]);
    assert_eq!(code, 2);

    // Nothing new: a bare timeout is a normal end, a missed --count is not.
    let started = Instant::now();
    node.cli_ok(&["events", "--follow", "--timeout", "0.3"]);
    let (code, out) = cli_err(
        &node,
        &[
            "event",
            "follow",
            "--count",
            "1",
            "--timeout",
            "0.3",
            "--level",
            "CRITICAL",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("timed out"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A follower sees a volume created while it runs. It may still be starting when the
    // first volume is created, so keep creating until it reports one (bounded by its
    // own --timeout).
    let mut follower = Command::new(common::troika_bin())
        .arg("--data")
        .arg(node.data())
        .args(["event", "follow", "--count", "1", "--timeout", "10"])
        .args(["--code", "VOLUME_CREATED"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start troika event follow");
    let mut created = 0;
    let status = loop {
        if let Some(status) = follower.try_wait().expect("wait for the follower") {
            break status;
        }
        assert!(created < 20, "the follower did not stop in time");
        created += 1;
        node.cli_ok(&[
            "vol",
            "create",
            &format!("F{created}"),
            "--pool",
            "P",
            "--size",
            "1M",
        ]);
        let deadline = Instant::now() + Duration::from_millis(600);
        while Instant::now() < deadline && follower.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let out = follower.wait_with_output().expect("follower output");
    assert!(status.success(), "follow failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("VOLUME_CREATED") && stdout.contains("F"),
        "{stdout}"
    );
}

#[test]
fn top_shows_the_volumes() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let mut nbd = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let data = vec![0x3Cu8; 64 * 1024];
    for block in 0..16 {
        nbd.write(block * data.len() as u64, &data, 0)
            .expect("write");
    }
    // Keep writing while top samples, for at most a few seconds.
    let writer = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            nbd.write(0, &data, 0).expect("write during top");
        }
        nbd.disconnect();
    });
    let started = Instant::now();
    let frames = node.cli_ok(&["top", "--count", "2", "--interval", "0.2"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    writer.join().expect("writer");
    assert!(frames.contains('V'), "{frames}");
    assert!(
        !frames.contains("\x1b[2J"),
        "top cleared a screen that is not a terminal"
    );
    let (code, out) = cli_err(&node, &["top", "--interval", "0"]);
    assert_eq!(code, 2, "{out}");
}

/// Runs `troika` against `node` until it fails to reach it (exit 3), for at most `timeout`.
fn wait_until_unreachable(node: &TestNode, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = node.cli(&["system", "show"]);
        if out.status.code() == Some(3) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node still answers {timeout:?} after the power cut:\n{}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn faults_are_injected_listed_and_cleared_and_a_power_cut_ends_the_node() {
    let mut node = TestNode::start();

    let (code, out) = cli_err(
        &node,
        &[
            "fault", "inject", "nlsas9", "--op", "write", "--error", "eio",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DEVICE_NOT_FOUND") && out.contains("nlsas3"),
        "{out}"
    );
    let (code, out) = cli_err(
        &node,
        &["fault", "inject", "nlsas3", "--op", "read", "--tear"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BAD_REQUEST") && out.contains("tear"), "{out}");
    let (code, out) = cli_err(&node, &["fault", "inject", "nlsas3", "--op", "write"]);
    assert_eq!(code, 2, "no effect is a usage error: {out}");

    let eio = json(
        &node,
        &[
            "fault", "inject", "nlsas3", "--op", "write", "--error", "eio", "--nth", "1000000",
            "--seed", "7",
        ],
    );
    assert_eq!(
        (
            eio["device"].as_str(),
            eio["op"].as_str(),
            eio["error"].as_str(),
            eio["nth"].as_u64(),
            eio["seed"].as_u64()
        ),
        (
            Some("nlsas3"),
            Some("write"),
            Some("EIO"),
            Some(1_000_000),
            Some(7)
        ),
        "{eio:#}"
    );
    let delay = json(
        &node,
        &[
            "fault",
            "inject",
            "nlsas4",
            "--op",
            "read",
            "--delay-ms",
            "1",
            "--probability",
            "0.000001",
        ],
    );
    assert!(
        delay["seed"].is_u64(),
        "the node picks a seed and reports it: {delay:#}"
    );
    assert_eq!(delay["effect"], "delay 1 ms", "{delay:#}");

    let table = node.cli_ok(&["fault", "ls"]);
    assert!(table.starts_with("ID  "), "{table}");
    assert!(
        table.contains("nlsas3") && table.contains("EIO") && table.contains("nth 1000000"),
        "{table}"
    );
    assert!(
        table.contains("delay 1 ms") && table.contains("p=0.000001"),
        "{table}"
    );
    assert_eq!(
        json(&node, &["fault", "ls"]).as_array().map(Vec::len),
        Some(2)
    );
    assert!(json(&node, &["fault", "log"]).is_array());
    assert!(node.cli_ok(&["fault", "log"]).starts_with("RULE  "));

    let id = eio["id"].as_u64().expect("a rule id").to_string();
    let removed = json(&node, &["fault", "clear", &id]);
    assert_eq!(removed["id"], eio["id"], "{removed:#}");
    let (code, out) = cli_err(&node, &["fault", "clear", &id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAULT_NOT_FOUND"), "{out}");
    assert_eq!(
        node.cli_ok(&["fault", "clear"]),
        "removed 1 fault rule(s)\n"
    );
    assert_eq!(json(&node, &["fault", "ls"]), Value::Array(vec![]));
    let events = |code: &str| json(&node, &["event", "ls", "--code", code]);
    assert_eq!(events("FAULT_INJECTED").as_array().map(Vec::len), Some(2));
    assert_eq!(events("FAULT_CLEARED").as_array().map(Vec::len), Some(2));

    let said = node.cli_ok(&["fault", "power-cut", "--seed", "5"]);
    assert!(said.contains("seed 5") && said.contains("gone"), "{said}");
    wait_until_unreachable(&node, Duration::from_secs(20));
    assert!(
        node.log_text().contains("power cut (seed 5)"),
        "{}",
        node.log_text()
    );
    node.restart();
    let cut = json(&node, &["event", "ls", "--code", "POWER_CUT"]);
    assert_eq!(cut.as_array().map(Vec::len), Some(1), "{cut:#}");
    assert!(
        cut[0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("seed 5")),
        "{cut:#}"
    );
}
