//! NBD access control on the real binary with the real nbdinfo: `--nbd-open` lists every
//! export on TCP (and says so: a log line and the NBD_OPEN_EXPORTS event); without it an
//! anonymous TCP client lists nothing and cannot open a volume it names; the unix socket
//! serves the local administrator; the unix socket refuses other uids, by its mode
//! (connect fails) and, where the mode lets them connect, by SO_PEERCRED (closed before
//! any NBD byte, logged once); `--nbd-allow-uid` with `--nbd-socket-group` admits one.
//! Identity-based tests over TLS are in tests/nbd_tls.rs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TestNode, ci_model};
use serde_json::Value;

fn skip_without_nbdinfo() -> bool {
    !common::tools::present(&[&common::tools::NBDINFO])
}

/// A node with two volumes, one NBD TCP port, and `args` for `troika serve`.
fn node_with_volumes(args: &[&str]) -> TestNode {
    let node = TestNode::start_with_serve_args(ci_model(), 1, args);
    node.pool_and_volume("p", "64M", "alpha", "4M");
    node.cli_ok(&["vol", "create", "beta", "--pool", "p", "--size", "4M"]);
    node
}

fn nbdinfo(args: &[&str]) -> Output {
    Command::new("nbdinfo")
        .args(args)
        .output()
        .expect("run nbdinfo")
}

/// The export names `nbdinfo --list` prints for `uri`; `None` when it failed.
fn listed(uri: &str) -> Option<Vec<String>> {
    let out = nbdinfo(&["--list", "--json", uri]);
    if !out.status.success() {
        return None;
    }
    let json: Value = serde_json::from_slice(&out.stdout).expect("nbdinfo prints JSON");
    Some(
        json["exports"]
            .as_array()
            .expect("an exports array")
            .iter()
            .map(|export| export["export-name"].as_str().unwrap().to_owned())
            .collect(),
    )
}

fn tcp_uri(node: &TestNode, export: &str) -> String {
    format!("nbd://127.0.0.1:{}/{export}", node.nbd_ports[0])
}

fn unix_server_uri(node: &TestNode) -> String {
    format!("nbd+unix://?socket={}", node.nbd_socket().display())
}

#[test]
fn nbd_open_lists_everything_on_tcp_and_says_so() {
    if skip_without_nbdinfo() {
        return;
    }
    let node = node_with_volumes(&["--nbd-open"]);
    assert_eq!(
        listed(&tcp_uri(&node, "")).expect("nbdinfo --list over TCP"),
        ["alpha", "beta"]
    );
    let out = nbdinfo(&["--size", &tcp_uri(&node, "beta")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4194304");
    assert!(
        node.log_text().contains("--nbd-open"),
        "the node logs --nbd-open at start:\n{}",
        node.log_text()
    );
    let (status, body) = node.http_get("/api/rest/events?code=NBD_OPEN_EXPORTS");
    assert_eq!(status, 200, "{body}");
    let events: Value = serde_json::from_str(&body).unwrap();
    let events = events["result"].as_array().expect("a list of events");
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["level"], "WARNING", "{body}");
}

#[test]
fn anonymous_tcp_clients_see_nothing_and_the_unix_socket_serves_the_admin() {
    if skip_without_nbdinfo() {
        return;
    }
    let node = node_with_volumes(&[]);
    // The same server over the unix socket: the administrator sees both.
    assert_eq!(
        listed(&unix_server_uri(&node)).expect("nbdinfo --list on the unix socket"),
        ["alpha", "beta"]
    );
    // Over TCP an anonymous client lists nothing (an empty list or a refusal)...
    let anonymous = listed(&tcp_uri(&node, "")).unwrap_or_default();
    assert!(anonymous.is_empty(), "anonymous TCP listed {anonymous:?}");
    // ...and cannot open a volume it names, answered exactly as for a missing one.
    let refusal = |export: &str| {
        let out = nbdinfo(&["--size", &tcp_uri(&node, export)]);
        assert!(
            !out.status.success(),
            "opened {export} anonymously: {out:?}"
        );
        String::from_utf8_lossy(&out.stderr).replace(export, "NAME")
    };
    let existing = refusal("alpha");
    assert!(existing.contains("no export named"), "{existing}");
    assert_eq!(existing, refusal("no-such-volume"));
    assert!(!node.log_text().contains("NBD_OPEN"), "{}", node.log_text());
    let (_, body) = node.http_get("/api/rest/events?code=NBD_OPEN_EXPORTS");
    let events: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events["result"].as_array().map(Vec::len), Some(0), "{body}");
}

/// Runs nbdinfo as `nobody:nogroup` with no supplementary groups.
fn nbdinfo_as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "nbdinfo",
        ])
        .args(args)
        .output()
        .expect("run setpriv")
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

const REFUSED: &str = "refused a unix-socket connection from uid 65534";

/// Waits (bounded) until the node's log says `text` at least once; returns how often.
fn wait_for_log(node: &TestNode, text: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = node.log_text().matches(text).count();
        if count > 0 || Instant::now() > deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when this test can run nbdinfo as another uid: nbdinfo and setpriv installed and
/// the suite running as root. Otherwise the test is skipped visibly, `why` naming what
/// needs the other uid.
fn can_run_clients_as_other_uids(why: &str) -> bool {
    if skip_without_nbdinfo() || !common::tools::present(&[&common::tools::SETPRIV]) {
        return false;
    }
    if !running_as_root() {
        common::tools::skipped(why, "run the tests as root");
        return false;
    }
    true
}

#[test]
fn the_unix_socket_refuses_other_uids() {
    if !can_run_clients_as_other_uids("proving SO_PEERCRED needs root, to run a client as nobody") {
        return;
    }
    let node = node_with_volumes(&[]);
    let socket = node.nbd_socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the NBD socket's default mode");
    // Let nobody reach the socket's directory, so only the socket itself decides.
    std::fs::set_permissions(node.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let uri = unix_server_uri(&node);

    // Mode 0600: nobody cannot even connect, so the node sees nothing.
    let out = nbdinfo_as_nobody(&["--list", &uri]);
    assert!(!out.status.success(), "nobody listed exports: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{out:?}"
    );
    assert!(!node.log_text().contains(REFUSED), "{}", node.log_text());

    // A mode that lets anyone connect: SO_PEERCRED refuses nobody before any NBD byte,
    // three times, logged once.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for _ in 0..3 {
        let out = nbdinfo_as_nobody(&["--list", &uri]);
        assert!(!out.status.success(), "nobody listed exports: {out:?}");
    }
    assert_eq!(wait_for_log(&node, REFUSED), 1, "{}", node.log_text());
    // The administrator is still served.
    assert_eq!(listed(&uri).expect("root lists"), ["alpha", "beta"]);
}

#[test]
fn allowed_uids_in_the_socket_group_are_served() {
    if !can_run_clients_as_other_uids("running a client as another uid needs root") {
        return;
    }
    let node = node_with_volumes(&["--nbd-socket-group", "nogroup", "--nbd-allow-uid", "65534"]);
    let socket = node.nbd_socket();
    let metadata = std::fs::metadata(&socket).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&metadata), 65534);
    std::fs::set_permissions(node.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = nbdinfo_as_nobody(&["--list", "--json", &unix_server_uri(&node)]);
    assert!(out.status.success(), "{out:?}\n{}", node.log_text());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["exports"].as_array().map(Vec::len), Some(2), "{json}");
    assert!(!node.log_text().contains("refused a unix-socket"));
}
