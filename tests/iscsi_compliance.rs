//! libiscsi's compliance suite (`iscsi-test-cu`, Debian's libiscsi-bin) against the real
//! binary: every test on one portal with `--dataloss`, and the multipath and reservation
//! tests across two portals on different controllers. Zero failures; the VAAI, multipath
//! and reservation suites must run, not skip. The read-only tests run against a
//! write-protected snapshot mapped as a LUN.

mod common;
#[path = "common/iscsi.rs"]
mod iscsi;

use std::time::Duration;

use common::have;
use iscsi::{Outcome, node_with_lun, run_cu, target_name};

/// Suites that must run every test (a skip means a missing feature).
const MUST_RUN: [&str; 7] = [
    "CompareAndWrite.",
    "ExtendedCopy.",
    "ReceiveCopyResults.",
    "GetLBAStatus.",
    "Unmap.",
    "WriteSame10.",
    "WriteSame16.",
];

/// libiscsi 1.19's GetLBAStatus.UnmapSingle asks for the status at LBA i+1 and expects the
/// first descriptor to start at i + (logical blocks per physical block): right only when a
/// physical block is one logical block. SBC-4 says the first descriptor starts at the LBA
/// asked for, which is what troika answers; it reports 4 KiB physical blocks (8 logical
/// blocks), which the suites CompareAndWrite and WriteSame need to run their
/// InvalidDataOutSize tests at all (they skip unless there are at least 2). So this one
/// failure, with exactly that message and no other, is the test's and is allowed.
fn known_test_defect(run: &iscsi::CuRun, name: &str) -> bool {
    if name != "GetLBAStatus.UnmapSingle" {
        return false;
    }
    let section = run
        .output
        .split("Test: UnmapSingle")
        .nth(1)
        .and_then(|rest| rest.split("  Test: ").next())
        .unwrap_or("");
    let failures: Vec<&str> = section
        .lines()
        .filter(|line| line.contains("CU_FAIL") || line.contains("CU_ASSERT"))
        .collect();
    failures.len() == 1 && failures[0].contains("lba offset in first descriptor does not")
}

fn tools_present() -> bool {
    assert!(
        std::env::var_os("CI").is_none() || have("iscsi-test-cu"),
        "iscsi-test-cu is missing (Debian package libiscsi-bin)"
    );
    common::tools::present(&[&common::tools::ISCSI_TEST_CU])
}

fn report(run: &iscsi::CuRun, label: &str) {
    eprintln!("iscsi-test-cu {label}: {}", run.summary_line());
    for name in run.in_suite("", Outcome::Failed) {
        eprintln!("  FAILED {name}");
    }
    for name in run.in_suite("", Outcome::Skipped) {
        eprintln!("  skipped {name}");
    }
}

#[test]
fn every_compliance_test_passes_on_one_portal() {
    if !tools_present() {
        return;
    }
    let node = node_with_lun("cu1", "128M");
    let url = format!(
        "iscsi://127.0.0.1:{}/{}/1",
        node.iscsi_ports[0],
        target_name(&node)
    );
    let run = run_cu("ALL", &[url], Duration::from_secs(900));
    report(&run, "ALL, one portal");
    let failed: Vec<String> = run
        .in_suite("", Outcome::Failed)
        .into_iter()
        .filter(|name| !known_test_defect(&run, name))
        .collect();
    let allowed = run.in_suite("", Outcome::Failed).len() - failed.len();
    assert!(
        failed.is_empty() && run.summary_failed.unwrap_or(u64::MAX) <= allowed as u64,
        "{} tests failed: {failed:?}\n{}",
        failed.len(),
        run.output
    );
    for suite in MUST_RUN {
        let skipped = run.in_suite(suite, Outcome::Skipped);
        assert!(skipped.is_empty(), "{suite} tests skipped: {skipped:?}");
        assert!(
            !run.in_suite(suite, Outcome::Passed).is_empty(),
            "no {suite} test ran"
        );
    }
    assert!(
        node.log_text()
            .lines()
            .all(|line| !line.contains("panicked")),
        "{}",
        node.log_text()
    );
}

#[test]
fn multipath_and_reservation_tests_pass_across_two_controllers() {
    if !tools_present() {
        return;
    }
    let node = node_with_lun("cu2", "64M");
    let target = target_name(&node);
    let urls: Vec<String> = node.iscsi_ports[..2]
        .iter()
        .map(|port| format!("iscsi://127.0.0.1:{port}/{target}/1"))
        .collect();
    let run = run_cu(
        "ALL.MultipathIO,ALL.Prin*,ALL.Prout*,ALL.Reserve6*,ALL.Release6*",
        &urls,
        Duration::from_secs(600),
    );
    report(&run, "multipath and reservations, two portals");
    let failed = run.in_suite("", Outcome::Failed);
    assert!(
        failed.is_empty() && run.summary_failed == Some(0),
        "{} tests failed: {failed:?}\n{}",
        failed.len(),
        run.output
    );
    for suite in ["MultipathIO.", "Prin", "Prout"] {
        let skipped = run.in_suite(suite, Outcome::Skipped);
        assert!(skipped.is_empty(), "{suite} tests skipped: {skipped:?}");
        assert!(
            !run.in_suite(suite, Outcome::Passed).is_empty(),
            "no {suite} test ran"
        );
    }
}

#[test]
fn the_read_only_suite_passes_on_a_write_protected_snapshot() {
    if !tools_present() {
        return;
    }
    let node = common::TestNode::start_with_iscsi(common::ci_model(), 3);
    node.pool_and_volume("pool1", "400M", "base", "64M");
    node.cli_ok(&["snap", "create", "base", "--name", "base.ro"]);
    let host = iscsi::create_host(&node, "libiscsi", &iscsi::TEST_INITIATORS);
    iscsi::map_volume(&node, host, "base.ro", 2);
    let url = format!(
        "iscsi://127.0.0.1:{}/{}/2",
        node.iscsi_ports[0],
        target_name(&node)
    );
    let run = run_cu("ALL.ReadOnly", &[url], Duration::from_secs(300));
    report(&run, "ReadOnly on a snapshot");
    assert!(
        !run.in_suite("ReadOnly.", Outcome::Passed).is_empty()
            && run.in_suite("ReadOnly.", Outcome::Failed).is_empty()
            && run.in_suite("ReadOnly.", Outcome::Skipped).is_empty(),
        "{}",
        run.output
    );
}
