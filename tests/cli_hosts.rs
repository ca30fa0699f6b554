//! Hosts, host clusters and LUN mappings through the operator's CLI against the real
//! node: every `host` and `cluster` verb, with tables and `--json`; secrets never printed;
//! refusals (a second host claiming an initiator, a short CHAP secret, a LUN in use,
//! deleting a mapped volume) exit 1 with the API's code; everything survives a crash
//! restart (kill -9, journal replay).

mod common;

use std::process::Output;

use common::TestNode;
use serde_json::Value;

const IQN_A: &str = "iqn.2024-01.com.example:host-a";
const NBD_ID: &str = "CN=backup/1 ?x+y%";
const IQN_B: &str = "iqn.2024-01.com.example:host-b";

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

/// Runs a CLI command that must fail with exit code 1 and `code` in its output.
fn refused(node: &TestNode, code: &str, args: &[&str]) {
    let out = node.cli(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "troika {args:?}:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains(code),
        "troika {args:?}:\n{}",
        text(&out)
    );
}

#[test]
fn host_and_cluster_verbs() {
    let mut node = TestNode::start();
    node.pool_and_volume("p", "64M", "v1", "4M");
    node.cli_ok(&["vol", "create", "v2", "--pool", "p", "--size", "4M"]);

    let created = node.cli_ok(&[
        "host",
        "create",
        "h1",
        "--iqn",
        IQN_A,
        "--chap-user",
        "alice",
        "--chap-secret",
        "alice-secret1",
    ]);
    assert!(
        created.contains("CHAP") && created.contains(IQN_A),
        "{created}"
    );
    assert!(!created.contains("alice-secret1"), "{created}");
    node.cli_ok(&["host", "create", "h2"]);
    refused(
        &node,
        "PORT_ALREADY_BELONGS_TO_HOST",
        &["host", "add-port", "h2", &IQN_A.to_uppercase()],
    );
    node.cli_ok(&["host", "add-port", "h2", IQN_B]);
    // An NBD client's TLS identity is a host port too; a path-hostile one survives.
    node.cli_ok(&["host", "add-port", "h2", "--nbd-identity", NBD_ID]);
    refused(
        &node,
        "INVALID_PORT_ADDRESS",
        &["host", "add-port", "h2", "--nbd-identity", "psk:colon"],
    );
    refused(
        &node,
        "PORT_ALREADY_BELONGS_TO_HOST",
        &["host", "add-port", "h1", "--nbd-identity", NBD_ID],
    );
    let listed = node.cli_ok(&["host", "ls"]);
    assert!(
        listed.contains("NBD IDENTITIES") && listed.contains(NBD_ID),
        "{listed}"
    );
    refused(
        &node,
        "INVALID_CHAP_SETTINGS",
        &[
            "host",
            "chap",
            "h2",
            "--method",
            "chap",
            "--chap-user",
            "bob",
            "--chap-secret",
            "short",
        ],
    );
    let mutual = node.cli_ok(&[
        "host",
        "chap",
        "h1",
        "--method",
        "mutual",
        "--mutual-user",
        "target",
        "--mutual-secret",
        "target-secret1",
    ]);
    assert!(mutual.contains("MUTUAL_CHAP"), "{mutual}");

    let mapped = node.cli_ok(&["host", "map", "h1", "v1"]);
    assert!(mapped.contains("LUN 1"), "{mapped}");
    refused(
        &node,
        "LUN_ALREADY_IN_USE",
        &["host", "map", "h1", "v2", "--lun", "1"],
    );
    refused(&node, "unmap it first", &["vol", "delete", "v1"]);

    node.cli_ok(&["cluster", "create", "c1"]);
    node.cli_ok(&["cluster", "add", "c1", "h2"]);
    let shared = node.cli_ok(&["cluster", "map", "c1", "v2"]);
    assert!(shared.contains("LUN 11"), "{shared}");
    let shown = node.cli_ok(&["host", "show", "h2"]);
    assert!(
        shown.contains("c1") && shown.contains("v2") && shown.contains("cluster"),
        "{shown}"
    );
    let listed = node.cli_ok(&["host", "ls"]);
    assert!(
        listed.contains("h1") && listed.contains("MUTUAL_CHAP"),
        "{listed}"
    );
    assert!(node.cli_ok(&["cluster", "ls"]).contains("c1"));
    assert!(node.cli_ok(&["cluster", "show", "c1"]).contains("h2"));

    // A crash: everything comes back from the journal.
    node.restart();
    let hosts = json(&node, &["host", "ls"]);
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    let h1 = json(&node, &["host", "show", "h1"]);
    assert_eq!(h1["security_method"], "MUTUAL_CHAP");
    assert_eq!(h1["luns"][0]["lun"], 1);
    assert!(!h1.to_string().contains("secret1"));
    let h2 = json(&node, &["host", "show", "h2"]);
    assert_eq!(h2["luns"][0]["lun"], 11);
    assert_eq!(h2["ports"][0]["address"], IQN_B);
    assert_eq!(h2["ports"][1]["type"], "NBD");
    assert_eq!(h2["ports"][1]["address"], NBD_ID);
    let c1 = json(&node, &["cluster", "show", "c1"]);
    assert_eq!(c1["hosts"][0]["name"], "h2");

    node.cli_ok(&["cluster", "unmap", "c1", "v2"]);
    node.cli_ok(&["cluster", "remove", "c1", "h2"]);
    node.cli_ok(&["cluster", "delete", "c1"]);
    node.cli_ok(&["host", "unmap", "h1", "v1"]);
    node.cli_ok(&["vol", "delete", "v1"]);
    node.cli_ok(&["host", "remove-port", "h2", IQN_B]);
    node.cli_ok(&["host", "remove-port", "h2", "--nbd-identity", NBD_ID]);
    assert_eq!(
        json(&node, &["host", "show", "h2"])["ports"],
        Value::Array(Vec::new())
    );
    node.cli_ok(&["host", "delete", "h2"]);
    node.cli_ok(&["host", "delete", "h1"]);
    assert_eq!(json(&node, &["host", "ls"]), Value::Array(Vec::new()));
    refused(&node, "HOST_NOT_FOUND", &["host", "show", "h1"]);
}
