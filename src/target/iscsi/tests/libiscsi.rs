//! libiscsi's own tools against the portal (skipped with a message when not installed).

use std::process::Command;

use super::fake::{self, Portal1};

fn tool(name: &str) -> Option<String> {
    let path = format!("/usr/bin/{name}");
    if std::path::Path::new(&path).exists() {
        Some(path)
    } else {
        eprintln!("skipped: {name} (libiscsi-bin) is not installed");
        None
    }
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn iscsi_ls_and_iscsi_inq() {
    let (Some(ls), Some(inq)) = (tool("iscsi-ls"), tool("iscsi-inq")) else {
        return;
    };
    let portal = Portal1::start();
    let url = format!("iscsi://{}", portal.addr);
    let listing = run(&ls, &["-i", fake::OPEN, &url]);
    assert!(listing.contains(fake::TARGET), "{listing}");
    let lun = format!("{url}/{}/0", fake::TARGET);
    let inquiry = run(&inq, &["-i", fake::OPEN, &lun]);
    assert!(inquiry.contains("TROIKA"), "{inquiry}");
    let digest = format!("{lun}?header_digest=crc32c");
    let inquiry = run(&inq, &["-i", fake::OPEN, &digest]);
    assert!(inquiry.contains("TROIKA"), "{inquiry}");
    // CHAP through the URL's user%password.
    let chap = format!(
        "iscsi://alice%alice-secret-1@{}/{}/0",
        portal.addr,
        fake::TARGET
    );
    let inquiry = run(&inq, &["-i", fake::CHAP, &chap]);
    assert!(inquiry.contains("TROIKA"), "{inquiry}");
}

/// 4k random reads at 32 in flight against the fake backend (a throughput smoke test:
/// `cargo test --release --lib iscsi_perf -- --ignored --nocapture`).
#[test]
#[ignore]
fn iscsi_perf_random_4k_reads() {
    let Some(perf) = tool("iscsi-perf") else {
        return;
    };
    let portal = Portal1::start();
    let lun = format!("iscsi://{}/{}/0", portal.addr, fake::TARGET);
    let out = Command::new(perf)
        .args([
            "-i",
            fake::OPEN,
            "-m",
            "32",
            "-b",
            "8",
            "-t",
            "5",
            "-r",
            &lun,
        ])
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The iSCSI protocol family of libiscsi's compliance suite against the fake backend
/// (`cargo test --release --lib iscsi_test_cu -- --ignored --nocapture`).
#[test]
#[ignore]
fn iscsi_test_cu_protocol_tests() {
    let Some(cu) = tool("iscsi-test-cu") else {
        return;
    };
    let portal = Portal1::start();
    let lun = format!("iscsi://{}/{}/0", portal.addr, fake::TARGET);
    let family = std::env::var("ISCSI_CU_TESTS").unwrap_or_else(|_| "iSCSI".to_owned());
    let out = Command::new(cu)
        .args(["--dataloss", "-t", &family, &lun])
        .output()
        .unwrap();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
