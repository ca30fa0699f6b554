//! Snapshots, consistency groups and snapshot policies through the operator's CLI against
//! the real node: data written with nbdcopy survives in snapshots, comes back with `vol
//! restore` and `cg restore`, `snap diff` finds what changed, locks refuse deletion, a
//! policy's schedule snapshots its volume and keeps the newest until it is disabled or
//! deleted (its snapshots staying), and bad names, lock ends or schedules exit with the
//! documented codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::TestNode;
use serde_json::Value;

const MIB: usize = 1 << 20;
/// Every volume here is this big, so an export reads back exactly what was written.
const VOLUME_SIZE: usize = 4 * MIB;

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

/// Runs a CLI command that must fail with `code`; returns all its output.
fn cli_fails(node: &TestNode, code: i32, args: &[&str]) -> String {
    let out = node.cli(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "troika {args:?} should exit {code}:\n{}",
        text(&out)
    );
    text(&out)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a JSON list")
        .iter()
        .map(|object| object["name"].as_str().expect("a name"))
        .collect()
}

/// `len` bytes that differ for every `seed` and along the buffer (xorshift).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `data` at the start of export `export` with nbdcopy.
fn write_export(node: &TestNode, export: &str, data: &[u8]) {
    let file = node.data().join(format!("upload-{export}.bin"));
    std::fs::write(&file, data).expect("write the upload file");
    run_nbdcopy(&file, &node.uri(export));
}

fn run_nbdcopy(source: &Path, destination: &str) {
    let out = Command::new("nbdcopy")
        .arg(source)
        .arg(destination)
        .output()
        .expect("run nbdcopy");
    assert!(out.status.success(), "nbdcopy failed: {}", text(&out));
}

/// The whole export `export`, read with nbdcopy.
fn read_export(node: &TestNode, export: &str) -> Vec<u8> {
    let out = Command::new("nbdcopy")
        .args([node.uri(export).as_str(), "-"])
        .output()
        .expect("run nbdcopy");
    assert!(
        out.status.success(),
        "nbdcopy from {export} failed: {}",
        text(&out)
    );
    out.stdout
}

fn assert_export(node: &TestNode, export: &str, expected: &[u8], what: &str) {
    let actual = read_export(node, export);
    assert_eq!(actual.len(), expected.len(), "{what}: export size");
    if let Some(at) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: {export} differs at byte {at}");
    }
}

fn skip_without_nbdcopy() -> bool {
    !common::tools::present(&[&common::tools::NBDCOPY])
}

#[test]
fn snapshots_keep_data_and_restore_refresh_and_diff_it() {
    if skip_without_nbdcopy() {
        return;
    }
    let node = TestNode::start();
    node.pool_and_volume("P", "256M", "V", "4M");
    let old = pattern(1, VOLUME_SIZE);
    write_export(&node, "V", &old);

    let snapshot = json(&node, &["snap", "create", "V", "--name", "S1"]);
    let volumes = json(&node, &["vol", "ls"]);
    let volume = volumes
        .as_array()
        .and_then(|list| list.iter().find(|volume| volume["name"] == "V"))
        .unwrap_or_else(|| panic!("V is not listed: {volumes:#}"));
    let volume_id = volume["id"].clone();
    assert_eq!(snapshot["type"], "SNAPSHOT", "{snapshot:#}");
    assert_eq!(snapshot["parent_id"], volume_id, "{snapshot:#}");
    assert_eq!(snapshot["write_protected"], true, "{snapshot:#}");
    assert_eq!(snapshot["lock_state"], "UNLOCKED", "{snapshot:#}");

    // Overwrite the first MiB of V: S1 keeps the old data.
    let new = pattern(2, MIB);
    write_export(&node, "V", &new);
    let mut current = old.clone();
    current[..MIB].copy_from_slice(&new);
    assert_export(&node, "S1", &old, "the snapshot after V was overwritten");
    assert_export(&node, "V", &current, "V after the overwrite");

    assert_eq!(names(&json(&node, &["snap", "ls"])), ["S1"]);
    assert_eq!(names(&json(&node, &["snap", "ls", "V"])), ["S1"]);
    let table = node.cli_ok(&["snap", "ls", "V"]);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME", "ID", "PARENT", "CREATED", "USED", "UNIQUE", "LOCK", "WRITABLE",
    ] {
        assert!(header.contains(column), "no {column} column:\n{table}");
    }
    let row = table.lines().find(|line| line.starts_with("S1 ")).unwrap();
    assert!(
        row.contains(" V ") && row.contains("UNLOCKED") && row.ends_with("no"),
        "{table}"
    );

    // A second snapshot holds the overwrite; the two differ in exactly that MiB.
    node.cli_ok(&["snap", "create", "V", "--name", "S2"]);
    let diff = json(&node, &["snap", "diff", "S2", "S1"]);
    assert_eq!(diff["changed_bytes"], MIB, "{diff:#}");
    assert_eq!(
        diff["ranges"],
        serde_json::json!([{"offset": 0, "length": MIB}]),
        "{diff:#}"
    );
    let printed = node.cli_ok(&["snap", "diff", "S2", "S1"]);
    assert!(
        printed.contains("1048576 bytes") && printed.contains("OFFSET"),
        "{printed}"
    );
    let same = node.cli_ok(&["snap", "diff", "S1", "S1"]);
    assert!(same.contains("same data"), "{same}");

    let restored = json(&node, &["vol", "restore", "V", "S1"]);
    assert_eq!(restored["name"], "V", "{restored:#}");
    assert_export(&node, "V", &old, "V restored from S1");
    assert_export(&node, "S2", &current, "S2 after V was restored");

    // A writable snapshot takes writes without touching its parent, and a refresh gives
    // it the parent's contents again.
    let writable = json(&node, &["snap", "create", "V", "--name", "W", "--writable"]);
    assert_eq!(writable["write_protected"], false, "{writable:#}");
    let scribble = pattern(3, VOLUME_SIZE);
    write_export(&node, "W", &scribble);
    assert_export(&node, "W", &scribble, "the writable snapshot");
    assert_export(&node, "V", &old, "V after its snapshot was written");
    node.cli_ok(&["snap", "refresh", "W"]);
    assert_export(&node, "W", &old, "W refreshed from V");

    let out = cli_fails(&node, 1, &["vol", "restore", "V", "NOPE"]);
    assert!(
        out.contains("snapshot \"NOPE\" does not exist"),
        "unknown snapshot: {out}"
    );
    assert_export(&node, "V", &old, "V after a refused restore");
}

#[test]
fn locked_snapshots_refuse_deletion_and_bad_input_exits_with_its_code() {
    let node = TestNode::start();
    node.pool_and_volume("P", "256M", "V", "4M");

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let locked = json(
        &node,
        &["snap", "create", "V", "--name", "L", "--lock-until", "1h"],
    );
    assert_eq!(locked["lock_state"], "LOCKED", "{locked:#}");
    let until = locked["lock_expires_at"].as_u64().expect("a lock end");
    assert!(
        until >= now_ms + 3_600_000 && until < now_ms + 3_660_000,
        "1h from {now_ms} became {until}"
    );

    node.cli_ok(&["snap", "create", "V", "--name", "U"]);
    let extended = json(
        &node,
        &["snap", "lock", "U", "--until", "2099-01-01 00:00:00"],
    );
    assert_eq!(
        extended["lock_expires_at"], 4_070_908_800_000u64,
        "{extended:#}"
    );
    let table = node.cli_ok(&["snap", "ls"]);
    assert!(
        table.contains("LOCKED until 2099-01-01 00:00:00"),
        "{table}"
    );

    for name in ["U", "L"] {
        let out = cli_fails(&node, 1, &["snap", "delete", name]);
        assert!(
            out.contains("SNAPSHOT_LOCKED") && out.contains("locked"),
            "deleting locked {name}: {out}"
        );
    }
    assert_eq!(names(&json(&node, &["snap", "ls"])), ["L", "U"]);

    node.cli_ok(&["snap", "create", "V", "--name", "D"]);
    let deleted = node.cli_ok(&["snap", "delete", "D"]);
    assert!(deleted.contains("deleted snapshot \"D\""), "{deleted}");

    // Names: unknown ones, and a volume where a snapshot is needed.
    let out = cli_fails(&node, 1, &["snap", "delete", "NOPE"]);
    assert!(out.contains("snapshot \"NOPE\" does not exist"), "{out}");
    let out = cli_fails(&node, 1, &["snap", "delete", "V"]);
    assert!(out.contains("\"V\" is not a snapshot"), "{out}");
    let out = cli_fails(&node, 1, &["snap", "ls", "NOPE"]);
    assert!(out.contains("volume \"NOPE\" does not exist"), "{out}");
    let out = cli_fails(&node, 1, &["snap", "create", "NOPE"]);
    assert!(out.contains("NOPE"), "{out}");
    assert_eq!(
        names(&json(&node, &["vol", "ls", "--pool", "P"])),
        ["L", "U", "V"]
    );

    // Lock ends: malformed ones are usage errors naming the value and the forms accepted,
    // and so is one in the past.
    for bad in ["soon", "7y", "0d", "2030-02-30", "2030-01-01 25:00"] {
        let out = cli_fails(&node, 2, &["snap", "create", "V", "--lock-until", bad]);
        assert!(
            out.contains(bad) && out.contains("7d"),
            "--lock-until {bad}: {out}"
        );
    }
    let out = cli_fails(&node, 2, &["snap", "lock", "U", "--until", "2020-01-01"]);
    assert!(out.contains("not in the future"), "{out}");
    cli_fails(&node, 2, &["snap", "lock", "U"]);
    assert_eq!(names(&json(&node, &["snap", "ls"])), ["L", "U"]);
}

#[test]
fn consistency_groups_snapshot_and_restore_their_members_together() {
    if skip_without_nbdcopy() {
        return;
    }
    let node = TestNode::start();
    node.pool_and_volume("P", "256M", "A", "4M");
    node.cli_ok(&["vol", "create", "B", "--pool", "P", "--size", "4M"]);
    let (a_old, b_old) = (pattern(10, VOLUME_SIZE), pattern(11, VOLUME_SIZE));
    write_export(&node, "A", &a_old);
    write_export(&node, "B", &b_old);

    let group = json(&node, &["cg", "create", "G", "--pool", "P"]);
    assert_eq!(group["type"], "MASTER", "{group:#}");
    let added = node.cli_ok(&["cg", "add", "G", "A"]);
    assert!(
        added.contains("added volume \"A\" to consistency group \"G\""),
        "{added}"
    );
    node.cli_ok(&["cg", "add", "G", "B"]);
    let shown = json(&node, &["cg", "show", "G"]);
    assert_eq!(shown["members_count"], 2, "{shown:#}");
    assert_eq!(names(&shown["members"]), ["A", "B"]);

    let snapgroup = json(&node, &["cg", "snap", "G", "--name", "SG"]);
    assert_eq!(snapgroup["type"], "SNAPSHOT", "{snapgroup:#}");
    assert_eq!(snapgroup["parent_id"], group["id"], "{snapgroup:#}");
    assert_eq!(snapgroup["members_count"], 2, "{snapgroup:#}");
    let shown = node.cli_ok(&["cg", "show", "SG"]);
    assert!(
        shown.contains("snapshot of") && shown.contains("A-SG") && shown.contains("B-SG"),
        "{shown}"
    );
    assert_eq!(names(&json(&node, &["cg", "ls"])), ["G", "SG"]);

    write_export(&node, "A", &pattern(12, VOLUME_SIZE));
    write_export(&node, "B", &pattern(13, MIB));
    let restored = json(&node, &["cg", "restore", "G", "SG"]);
    assert_eq!(restored["name"], "G", "{restored:#}");
    assert_export(&node, "A", &a_old, "A restored with its group");
    assert_export(&node, "B", &b_old, "B restored with its group");

    let out = cli_fails(&node, 1, &["cg", "restore", "G", "G"]);
    assert!(out.contains("\"G\" is not a group snapshot"), "{out}");
    let out = cli_fails(&node, 1, &["cg", "add", "NOPE", "A"]);
    assert!(
        out.contains("consistency group \"NOPE\" does not exist"),
        "{out}"
    );
    let out = cli_fails(&node, 2, &["cg", "snap", "G", "--lock-until", "later"]);
    assert!(out.contains("later"), "{out}");

    let removed = node.cli_ok(&["cg", "remove", "G", "B"]);
    assert!(removed.contains("removed volume \"B\""), "{removed}");
    assert_eq!(json(&node, &["cg", "show", "G"])["members_count"], 1);

    let deleted = node.cli_ok(&["cg", "delete", "SG"]);
    assert!(
        deleted.contains("deleted group snapshot \"SG\"") && deleted.contains("snapshots"),
        "{deleted}"
    );
    assert_eq!(json(&node, &["snap", "ls"]), Value::Array(vec![]));
    node.cli_ok(&["cg", "delete", "G", "--delete-members"]);
    assert_eq!(json(&node, &["cg", "ls"]), Value::Array(vec![]));
    assert_eq!(names(&json(&node, &["vol", "ls"])), ["B"]);
    assert_export(&node, "B", &b_old, "B after the group was deleted");
}

/// The snapshot names in the newest events with `code`, oldest first (the node's policy
/// events say `... snapshot "NAME"`).
fn event_snapshots(node: &TestNode, code: &str) -> Vec<String> {
    let events = json(node, &["event", "ls", "--code", code, "--limit", "1000"]);
    events
        .as_array()
        .expect("a JSON list of events")
        .iter()
        .map(|event| {
            assert_eq!(event["code"], code, "{event:#}");
            let description = event["description"].as_str().expect("a description");
            let quoted = description
                .split("snapshot \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            quoted
                .unwrap_or_else(|| panic!("no snapshot named in {description:?}"))
                .to_owned()
        })
        .collect()
}

fn snapshot_names(node: &TestNode, volume: &str) -> Vec<String> {
    names(&json(node, &["snap", "ls", volume]))
        .into_iter()
        .map(str::to_owned)
        .collect()
}

const TAKEN: &str = "SNAPSHOT_POLICY_SNAPSHOT_CREATED";
const RETIRED: &str = "SNAPSHOT_POLICY_SNAPSHOT_DELETED";

#[test]
fn a_policy_snapshots_its_volume_keeps_the_newest_and_leaves_them_when_deleted() {
    let node = TestNode::start();
    node.pool_and_volume("P", "256M", "V", "4M");

    let policy = json(
        &node,
        &["policy", "create", "SP", "--schedule", "often:1s:2"],
    );
    assert_eq!(
        (&policy["name"], &policy["enabled"], &policy["assets"]),
        (
            &serde_json::json!("SP"),
            &serde_json::json!(true),
            &serde_json::json!([])
        ),
        "{policy:#}"
    );
    assert_eq!(
        policy["schedules"],
        serde_json::json!([{"name": "often", "interval": 1, "retention": 2,
                            "lock_duration": null}]),
        "{policy:#}"
    );
    let table = node.cli_ok(&["policy", "ls"]);
    let row = table
        .lines()
        .find(|line| line.starts_with("SP "))
        .unwrap_or_default();
    assert!(row.contains("often:1s:2") && row.contains("yes"), "{table}");

    let added = node.cli_ok(&["policy", "add", "SP", "V"]);
    assert!(
        added.contains("added volume \"V\" to snapshot policy \"SP\""),
        "{added}"
    );

    // The node takes a snapshot a second and keeps the newest two: wait until it has taken
    // three (and so retired one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let taken = event_snapshots(&node, TAKEN);
        let kept = snapshot_names(&node, "V");
        let shown = json(&node, &["policy", "show", "SP"]);
        if taken.len() >= 3 && kept.len() == 2 && shown["snapshots_count"] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in 10 s the policy took {taken:?} and V has snapshots {kept:?}:\n{shown:#}\n{}",
            node.cli_ok(&["event", "ls"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let shown = node.cli_ok(&["policy", "show", "SP"]);
    for expected in ["SCHEDULE", "often", "1s", "snapshots", "SERIAL"] {
        assert!(shown.contains(expected), "no {expected}:\n{shown}");
    }
    assert!(
        shown.lines().any(|line| line.starts_with("V ")),
        "V is not among the volumes:\n{shown}"
    );

    // Disabled, it takes nothing more. Once a pass under way has finished, what it took
    // and retired adds up: the newest two taken are kept, every older one was retired.
    let disabled = json(&node, &["policy", "disable", "SP"]);
    assert_eq!(disabled["enabled"], false, "{disabled:#}");
    std::thread::sleep(Duration::from_millis(1500));
    let taken = event_snapshots(&node, TAKEN);
    let kept = snapshot_names(&node, "V");
    let retired = event_snapshots(&node, RETIRED);
    assert!(taken.len() >= 3, "{taken:?}");
    for name in &taken {
        assert!(
            name.starts_with("V.p") && name.contains(".often."),
            "{name} is not named after V, its policy and often"
        );
    }
    let newest = taken.len() - 2;
    assert_eq!(kept, taken[newest..], "kept are not the newest taken");
    assert_eq!(retired, taken[..newest], "retired are not the older taken");
    assert_eq!(json(&node, &["policy", "show", "SP"])["snapshots_count"], 2);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        (event_snapshots(&node, TAKEN), snapshot_names(&node, "V")),
        (taken, kept.clone()),
        "a disabled policy went on taking snapshots"
    );

    // Deleted, its snapshots stay, and nothing retires them.
    let deleted = node.cli_ok(&["policy", "delete", "SP"]);
    assert!(
        deleted.contains("deleted snapshot policy \"SP\"")
            && deleted.contains("the 2 snapshots it took stay"),
        "{deleted}"
    );
    assert_eq!(json(&node, &["policy", "ls"]), Value::Array(vec![]));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(snapshot_names(&node, "V"), kept);
    let out = cli_fails(&node, 1, &["policy", "show", "SP"]);
    assert!(
        out.contains("SNAPSHOT_POLICY_NOT_FOUND")
            && out.contains("snapshot policy \"SP\" does not exist")
            && out.contains("`troika policy ls` lists the snapshot policies"),
        "{out}"
    );
    let events = node.cli_ok(&["event", "ls", "--code", "SNAPSHOT_POLICY_DELETED"]);
    assert!(events.contains("\"SP\" deleted"), "{events}");
}

#[test]
fn policy_verbs_refuse_bad_schedules_names_and_volumes() {
    let node = TestNode::start();
    node.pool_and_volume("P", "256M", "V", "4M");
    node.cli_ok(&["snap", "create", "V", "--name", "S"]);

    // Schedules: malformed ones are usage errors naming the value and the form.
    for bad in [
        "hourly:1h",
        "hourly:1h:24:7d:x",
        ":1h:24",
        "hourly:60:24",
        "hourly:1y:24",
        "hourly:0s:24",
        "hourly:1h:0",
        "hourly:1h:many",
        "hourly:1h:24:0d",
        "hourly:1h:24:later",
    ] {
        let out = cli_fails(&node, 2, &["policy", "create", "X", "--schedule", bad]);
        assert!(
            out.contains(bad) && out.contains("NAME:EVERY:KEEP[:LOCK]"),
            "--schedule {bad}: {out}"
        );
    }
    let out = cli_fails(
        &node,
        2,
        &[
            "policy",
            "create",
            "X",
            "--schedule",
            "a:1h:2",
            "--schedule",
            "a:1d:7",
        ],
    );
    assert!(out.contains("two schedules are named \"a\""), "{out}");
    cli_fails(&node, 2, &["policy", "create", "X"]);
    assert_eq!(json(&node, &["policy", "ls"]), Value::Array(vec![]));

    // Two schedules, one with a lock, shown in the form they were given.
    let created = node.cli_ok(&[
        "policy",
        "create",
        "SP",
        "--schedule",
        "hourly:1h:24",
        "--schedule",
        "daily:1d:7:30d",
    ]);
    assert!(created.contains("hourly:1h:24,daily:1d:7:30d"), "{created}");
    let shown = json(&node, &["policy", "show", "SP"]);
    assert_eq!(
        shown["schedules"][1],
        serde_json::json!({"name": "daily", "interval": 86_400, "retention": 7,
                           "lock_duration": 30 * 86_400}),
        "{shown:#}"
    );
    let shown = node.cli_ok(&["policy", "show", "SP"]);
    let daily = shown
        .lines()
        .find(|line| line.starts_with("daily "))
        .unwrap_or_default();
    assert!(
        daily.split_whitespace().eq(["daily", "1d", "7", "30d"]),
        "{shown}"
    );
    assert!(shown.contains("no volumes yet"), "{shown}");
    let out = cli_fails(
        &node,
        1,
        &["policy", "create", "SP", "--schedule", "a:1h:2"],
    );
    assert!(out.contains("NAME_CONFLICT"), "{out}");

    // Names and volumes: unknown ones, a snapshot, one added twice or never added.
    for args in [
        ["policy", "show", "NOPE"].as_slice(),
        &["policy", "enable", "NOPE"],
        &["policy", "disable", "NOPE"],
        &["policy", "delete", "NOPE"],
        &["policy", "add", "NOPE", "V"],
        &["policy", "remove", "NOPE", "V"],
    ] {
        let out = cli_fails(&node, 1, args);
        assert!(
            out.contains("snapshot policy \"NOPE\" does not exist"),
            "{args:?}: {out}"
        );
    }
    let out = cli_fails(&node, 1, &["policy", "add", "SP", "NOPE"]);
    assert!(out.contains("volume \"NOPE\" does not exist"), "{out}");
    let out = cli_fails(&node, 1, &["policy", "add", "SP", "S"]);
    assert!(out.contains("\"S\" is a snapshot"), "{out}");
    node.cli_ok(&["policy", "add", "SP", "V"]);
    let out = cli_fails(&node, 1, &["policy", "add", "SP", "V"]);
    assert!(out.contains("ASSET_ALREADY_ASSIGNED"), "{out}");
    let removed = node.cli_ok(&["policy", "remove", "SP", "V"]);
    assert!(
        removed.contains("removed volume \"V\" from snapshot policy \"SP\""),
        "{removed}"
    );
    let out = cli_fails(&node, 1, &["policy", "remove", "SP", "V"]);
    assert!(out.contains("is not an asset"), "{out}");

    let enabled = node.cli_ok(&["policy", "disable", "SP"]);
    assert!(
        enabled
            .lines()
            .any(|line| line.starts_with("SP ") && line.contains(" no "))
    );
    assert_eq!(json(&node, &["policy", "enable", "SP"])["enabled"], true);
    let deleted = json(&node, &["policy", "delete", "SP"]);
    assert_eq!(deleted["name"], "SP", "{deleted:#}");
    assert_eq!(json(&node, &["policy", "ls"]), Value::Array(vec![]));
}
