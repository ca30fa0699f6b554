//! The data directory at rest, with the real binary: after a start and a few REST actions
//! (a pool, a volume, a snapshot, a host with CHAP, a persistent reservation) nothing in it
//! is readable or writable by group or other; a directory and files left 0755/0644 (by an
//! older build or an operator) are tightened at the next start, each with a notice; a
//! CHAP secret's bytes appear in no file of the directory, after a clean stop (destaged,
//! checkpointed) and after a restart, and iSCSI CHAP logins still work after the restart
//! (the secret opens with node.key); the secret and the admin password appear in no CLI
//! `--json` output, REST GET body, event or line of the node's output.

mod common;
#[path = "common/iscsi.rs"]
mod iscsi;
#[path = "common/iscsi_client.rs"]
mod iscsi_client;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{TestNode, ci_model};
use iscsi::{api, target_name};
use iscsi_client::{Auth, LoginRefused, Session};
use serde_json::json;

const INITIATOR: &str = "iqn.2026-12.test.example:at-rest";
/// 16 bytes, the longest a CHAP secret may be, and found nowhere by chance.
const SECRET: &str = "Qx7-AtRest-Zk9w!";
const CHAP_USER: &str = "at-rest-user";

/// Every path under `dir` (itself included), but not the test harness's own log, which
/// the harness creates there before the node starts.
fn walk(dir: &Path, harness_log: &Path, into: &mut Vec<PathBuf>) {
    into.push(dir.to_path_buf());
    for entry in fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("list the data directory").path();
        if path == harness_log {
            continue;
        }
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, harness_log, into);
        } else {
            into.push(path);
        }
    }
}

fn paths(node: &TestNode) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(node.data(), &node.log, &mut all);
    all
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).unwrap().file_type().is_socket()
}

/// Asserts that no path is open to group or other and the directory is 0700. Unix
/// sockets are the exception: their modes are their listeners' business (the NBD socket
/// belongs to its front end) and the 0700 directory already keeps others from them.
fn assert_private(node: &TestNode) -> usize {
    let all = paths(node);
    let loose: Vec<String> = all
        .iter()
        .filter(|path| !is_socket(path) && mode(path) & 0o077 != 0)
        .map(|path| format!("{} {:04o}", path.display(), mode(path)))
        .collect();
    assert!(loose.is_empty(), "readable by others: {loose:#?}");
    assert_eq!(mode(node.data()), 0o700);
    all.len()
}

/// Whether any regular file under the data directory holds `needle`'s bytes (read in
/// chunks that overlap by the needle's length).
fn files_holding(node: &TestNode, needle: &str) -> Vec<PathBuf> {
    let needle = needle.as_bytes();
    let mut found = Vec::new();
    for path in paths(node) {
        let metadata = fs::symlink_metadata(&path).unwrap();
        if !metadata.is_file() || metadata.file_type().is_socket() {
            continue;
        }
        let mut file = fs::File::open(&path).unwrap();
        let mut buffer = vec![0u8; 8 << 20];
        let mut kept = 0;
        loop {
            let read = file.read(&mut buffer[kept..]).unwrap();
            if read == 0 {
                break;
            }
            let filled = kept + read;
            let hit = buffer[..filled]
                .windows(needle.len())
                .any(|window| window[0] == needle[0] && window == needle);
            if hit {
                found.push(path.clone());
                break;
            }
            kept = (needle.len() - 1).min(filled);
            buffer.copy_within(filled - kept..filled, 0);
        }
    }
    found
}

fn chap_login(node: &TestNode) -> Result<Session, LoginRefused> {
    Session::login(
        node.iscsi_ports[0],
        INITIATOR,
        Some(&target_name(node)),
        Auth::Chap {
            user: CHAP_USER,
            secret: SECRET,
        },
    )
}

/// PERSISTENT RESERVE OUT REGISTER on LUN 1, replacing `old` (0: none) with `new` (the
/// node saves a reservation file).
fn register_key(session: &mut Session, old: u64, new: u64) {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[8] = 24;
    let mut parameters = [0u8; 24];
    parameters[0..8].copy_from_slice(&old.to_be_bytes());
    parameters[8..16].copy_from_slice(&new.to_be_bytes());
    assert_eq!(
        session.command(1, &cdb, &parameters, 0).status,
        0,
        "REGISTER"
    );
}

/// A node with a pool, a volume and its snapshot, and a CHAP host that sees the volume,
/// logged in once and holding a registration.
fn node_with_a_chap_host() -> TestNode {
    let node = TestNode::start_with_iscsi(ci_model(), 1);
    node.pool_and_volume("p", "64M", "v", "8M");
    node.cli_ok(&["snap", "create", "v", "--name", "s"]);
    node.cli_ok(&[
        "host",
        "create",
        "h",
        "--iqn",
        INITIATOR,
        "--chap-user",
        CHAP_USER,
        "--chap-secret",
        SECRET,
    ]);
    node.cli_ok(&["host", "map", "h", "v"]);
    let mut session = chap_login(&node).expect("CHAP login");
    register_key(&mut session, 0, 0x5ec2e7);
    node
}

#[test]
fn the_data_directory_is_private_and_holds_no_plain_secret() {
    let mut node = node_with_a_chap_host();
    let checked = assert_private(&node);
    assert!(
        checked >= 10,
        "only {checked} paths: the walk saw too little"
    );
    let reservations = node.data().join("reservations");
    assert!(
        fs::read_dir(&reservations).map_or(0, |dir| dir.count()) > 0,
        "the REGISTER left no reservation file to check"
    );
    assert_eq!(mode(&reservations), 0o700);
    for name in [
        "node.key",
        "ssd0.img",
        "nlsas0.img",
        "events.log",
        "users.json",
    ] {
        assert_eq!(mode(&node.data().join(name)), 0o600, "{name}");
    }

    node.stop();
    assert!(
        files_holding(&node, "xc20p1:")
            .iter()
            .any(|path| path.ends_with("ssd0.img")),
        "the sealed secret is not on the vault SSD: the scan would see nothing"
    );
    let holding = files_holding(&node, SECRET);
    assert!(
        holding.is_empty(),
        "the CHAP secret is plain in {holding:?}"
    );

    node.restart();
    let mut session = chap_login(&node).expect("CHAP login after a restart");
    // The registration made before the restart is still there (its file was read back).
    register_key(&mut session, 0x5ec2e7, 0x5ec2e8);
    drop(session);
    let wrong = Session::login(
        node.iscsi_ports[0],
        INITIATOR,
        Some(&target_name(&node)),
        Auth::Chap {
            user: CHAP_USER,
            secret: "not-the-secret!!",
        },
    );
    assert!(wrong.is_err(), "a wrong secret logged in after the restart");
    assert_private(&node);
    node.stop();
    let holding = files_holding(&node, SECRET);
    assert!(
        holding.is_empty(),
        "after the restart the secret is plain in {holding:?}"
    );
}

#[test]
fn neither_the_secret_nor_the_admin_password_is_shown() {
    let node = node_with_a_chap_host();
    node.cli_ok(&[
        "host",
        "chap",
        "h",
        "--method",
        "mutual",
        "--mutual-user",
        "array",
        "--mutual-secret",
        "Mutual-Secret-77",
    ]);
    let password = node.admin_password();
    let secrets = [SECRET, "Mutual-Secret-77", password.as_str()];
    let outputs = [
        ("host ls --json", node.cli_ok(&["--json", "host", "ls"])),
        (
            "host show --json",
            node.cli_ok(&["--json", "host", "show", "h"]),
        ),
        ("events --json", node.cli_ok(&["--json", "events"])),
        (
            "GET /api/rest/hosts",
            api(&node, "GET", "/api/rest/hosts", json!(null)).to_string(),
        ),
        (
            "GET /api/rest/events",
            api(&node, "GET", "/api/rest/events?page_size=1000", json!(null)).to_string(),
        ),
        ("the node's output", node.log_text()),
        (
            "events.log",
            fs::read_to_string(node.data().join("events.log")).unwrap(),
        ),
    ];
    let hosts = &outputs[0].1;
    assert!(hosts.contains(CHAP_USER), "host ls shows no host: {hosts}");
    let events = &outputs[4].1;
    assert!(events.contains("HOST"), "no host event to check: {events}");
    for (what, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
    }
}

#[test]
fn a_loose_data_directory_is_tightened_at_start() {
    let mut node = node_with_a_chap_host();
    node.stop();
    let mut loosened = Vec::new();
    for path in paths(&node) {
        if is_socket(&path) {
            continue;
        }
        let loose = if fs::symlink_metadata(&path).unwrap().is_dir() {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
        loosened.push(path);
    }
    assert!(loosened.len() >= 10, "too little to loosen: {loosened:?}");
    let before = node.log_text().len();
    node.restart();
    assert_private(&node);
    let log = node.log_text()[before..].to_owned();
    for path in &loosened {
        let notice = format!("troika: tightened {} from ", path.display());
        assert!(
            log.lines().filter(|line| line.starts_with(&notice)).count() == 1,
            "no single notice for {}:\n{log}",
            path.display()
        );
    }
    let mut session = chap_login(&node).expect("CHAP login after tightening");
    register_key(&mut session, 0x5ec2e7, 0x5ec2e9);
}

#[test]
fn a_wrong_or_missing_node_key_is_refused_by_name() {
    let mut node = node_with_a_chap_host();
    node.stop();
    let key_path = node.data().join("node.key");
    let right = fs::read(&key_path).unwrap();
    fs::write(
        &key_path,
        format!("troika node key v1: {}\n", "ab".repeat(32)),
    )
    .unwrap();
    let wrong = node.refused_start("with a wrong or missing node key");
    assert!(
        wrong.contains(&key_path.display().to_string()) && wrong.contains("not the key"),
        "{wrong}"
    );
    fs::remove_file(&key_path).unwrap();
    let missing = node.refused_start("with a wrong or missing node key");
    assert!(
        missing.contains(&key_path.display().to_string()) && missing.contains("missing"),
        "{missing}"
    );
    assert!(!key_path.exists(), "a refused start left a new key behind");
    fs::write(&key_path, right).unwrap();
    node.restart();
    chap_login(&node).expect("CHAP login with the key restored");
}
