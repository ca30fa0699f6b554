//! iSCSI test helpers: map a volume to libiscsi's test initiators through the REST API, find
//! the node's target name, and read `iscsi-test-cu`'s output.
//!
//! Included with `#[path = "common/iscsi.rs"] mod iscsi;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{TestNode, ci_model};

/// The initiator names `iscsi-test-cu` logs in with.
pub const TEST_INITIATORS: [&str; 2] = [
    "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
    "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
];

/// The node's iSCSI target name, as `troika serve` prints it at start.
pub fn target_name(node: &TestNode) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = node.log_text();
        if let Some(line) = log.lines().find(|line| line.contains("iSCSI target ")) {
            let rest = &line[line.find("iSCSI target ").unwrap() + "iSCSI target ".len()..];
            return rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no iSCSI target line in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Calls the REST API as admin; panics unless the answer is 2xx. Returns `result`.
pub fn api(
    node: &TestNode,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let password = node.admin_password();
    let body = (method != "GET" && method != "DELETE").then_some(body);
    let (status, answer) = node.api_json(method, path, Some(("admin", &password)), body.as_ref());
    assert!(
        (200..300).contains(&status),
        "{method} {path} answered {status}: {answer}"
    );
    answer["result"].clone()
}

/// Creates host `name` with the initiator ports `initiators`; returns its id.
pub fn create_host(node: &TestNode, name: &str, initiators: &[&str]) -> u64 {
    let host = api(node, "POST", "/api/rest/hosts", json!({ "name": name }));
    let id = host["id"].as_u64().expect("host id");
    for initiator in initiators {
        api(
            node,
            "POST",
            &format!("/api/rest/hosts/{id}/ports"),
            json!({ "type": "ISCSI", "address": initiator }),
        );
    }
    id
}

/// Maps volume `volume` (by name) to host `host` at `lun`.
pub fn map_volume(node: &TestNode, host: u64, volume: &str, lun: u32) {
    let volumes = api(
        node,
        "GET",
        &format!("/api/rest/volumes?name=eq:{volume}"),
        json!(null),
    );
    let volume_id = volumes[0]["id"].as_u64().expect("volume id");
    api(
        node,
        "POST",
        &format!("/api/rest/hosts/{host}/luns"),
        json!({ "volume_id": volume_id, "lun": lun }),
    );
}

/// A node with three portals, pool `pool1` and a thin volume `name` of `size` mapped at
/// LUN 1 to a host holding both libiscsi test initiators.
pub fn node_with_lun(name: &str, size: &str) -> TestNode {
    let node = TestNode::start_with_iscsi(ci_model(), 3);
    node.pool_and_volume("pool1", "400M", name, size);
    let host = create_host(&node, "libiscsi", &TEST_INITIATORS);
    map_volume(&node, host, name, 1);
    node
}

/// How one test of `iscsi-test-cu` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Skipped,
    Failed,
}

/// What an `iscsi-test-cu` run printed, per `Suite.Test`.
#[derive(Debug, Default)]
pub struct CuRun {
    pub tests: BTreeMap<String, Outcome>,
    /// CUnit's own count of failed tests (its "Run Summary").
    pub summary_failed: Option<u64>,
    pub output: String,
}

impl CuRun {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.tests.values().filter(|o| **o == outcome).count()
    }

    /// Tests of `suite` that ended as `outcome`.
    pub fn in_suite(&self, suite_prefix: &str, outcome: Outcome) -> Vec<String> {
        self.tests
            .iter()
            .filter(|(name, o)| name.starts_with(suite_prefix) && **o == outcome)
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn summary_line(&self) -> String {
        format!(
            "{} tests: {} real passes, {} skips, {} failures (CUnit summary failed: {:?})",
            self.tests.len(),
            self.count(Outcome::Passed),
            self.count(Outcome::Skipped),
            self.count(Outcome::Failed),
            self.summary_failed
        )
    }
}

/// CUnit's record of a failed assertion, `    1. test_x.c:71  - CU_ASSERT...` (the tests'
/// own `[FAILED]` log lines are not verdicts: libiscsi's helpers print them for commands a
/// test expects to fail).
fn is_failure_record(line: &str) -> bool {
    let line = line.trim_start();
    let Some((number, rest)) = line.split_once(". ") else {
        return false;
    };
    number.chars().all(|c| c.is_ascii_digit())
        && !number.is_empty()
        && rest
            .split_whitespace()
            .next()
            .is_some_and(|file| file.contains(".c:"))
}

/// Reads CUnit's verbose output: `Suite: S` then `  Test: T ...` lines, each followed by
/// what happened until the next test (`[SKIPPED]`, `FAILED`, or `passed`).
pub fn parse_cu(output: &str) -> CuRun {
    let mut run = CuRun {
        output: output.to_owned(),
        ..CuRun::default()
    };
    let mut suite = String::new();
    let mut current: Option<(String, String)> = None;
    let finish = |current: &mut Option<(String, String)>, run: &mut CuRun| {
        if let Some((name, text)) = current.take() {
            let outcome = if text.lines().any(is_failure_record) {
                Outcome::Failed
            } else if text.contains("[SKIPPED]") {
                Outcome::Skipped
            } else {
                Outcome::Passed
            };
            run.tests.insert(name, outcome);
        }
    };
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("Suite: ") {
            finish(&mut current, &mut run);
            suite = name.trim().to_owned();
        } else if let Some(rest) = line.trim_start().strip_prefix("Test: ") {
            finish(&mut current, &mut run);
            let (name, tail) = rest.split_once(" ...").unwrap_or((rest, ""));
            current = Some((format!("{suite}.{}", name.trim()), tail.to_owned()));
        } else if line.starts_with("Run Summary") {
            finish(&mut current, &mut run);
        } else if line.trim_start().starts_with("tests ") {
            let fields: Vec<&str> = line.split_whitespace().collect();
            run.summary_failed = fields.get(4).and_then(|f| f.parse().ok());
        } else if let Some((_, text)) = current.as_mut() {
            text.push('\n');
            text.push_str(line);
        }
    }
    finish(&mut current, &mut run);
    run
}

/// Runs `iscsi-test-cu --dataloss -t TESTS URL...` (bounded by `timeout`).
pub fn run_cu(tests: &str, urls: &[String], timeout: Duration) -> CuRun {
    let output = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .args(["iscsi-test-cu", "--dataloss", "-t", tests])
        .args(urls)
        .output()
        .expect("run iscsi-test-cu");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let run = parse_cu(&text);
    assert!(
        run.summary_failed.is_some(),
        "iscsi-test-cu did not finish ({}):\n{text}",
        output.status
    );
    run
}
