//! NBD over TLS with real libnbd clients against the real binary: TLS is required on TCP,
//! x509 and PSK clients (nbdinfo, nbdcopy, fio) are served and identified, plain clients,
//! untrusted certificates and wrong keys are refused, and a node that must require TLS
//! without credentials does not start.
//!
//! Skips (saying why) when nbdinfo/nbdcopy are not installed; the fio part skips when fio
//! lacks its nbd engine, unless TROIKA_REQUIRE_FIO=1.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{TestNode, ci_model};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a client tool, bounded in time.
fn run(program: &str, args: &[&str], home: Option<&Path>) -> Output {
    let mut command = Command::new("timeout");
    command.arg("60").arg(program).args(args);
    if let Some(home) = home {
        command.env("HOME", home);
    }
    command.output().expect("run a client tool")
}

fn image(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Copies `data` into `uri` and back out with nbdcopy, asserting it round-trips.
fn copy_round_trip(dir: &Path, uri: &str, data: &[u8], label: &str) {
    let input = dir.join(format!("{label}-in.bin"));
    let output = dir.join(format!("{label}-out.bin"));
    std::fs::write(&input, data).unwrap();
    let write = run("nbdcopy", &["--flush", input.to_str().unwrap(), uri], None);
    assert!(
        write.status.success(),
        "{label}: nbdcopy in: {}",
        text(&write)
    );
    let read = run("nbdcopy", &[uri, output.to_str().unwrap()], None);
    assert!(
        read.status.success(),
        "{label}: nbdcopy out: {}",
        text(&read)
    );
    let back = std::fs::read(&output).unwrap();
    assert!(back.len() >= data.len(), "{label}: short copy");
    assert!(
        back[..data.len()] == *data,
        "{label}: the data came back different"
    );
}

/// Creates host `host` with NBD identity `identity` and maps `datasets` to it.
fn add_nbd_host(node: &TestNode, host: &str, identity: &str, datasets: &[&str]) {
    node.cli_ok(&["host", "create", host]);
    node.cli_ok(&["host", "add-port", host, "--nbd-identity", identity]);
    for dataset in datasets {
        node.cli_ok(&["host", "map", host, dataset]);
    }
}

#[test]
fn tls_clients_are_served_and_identified_and_others_refused() {
    if !common::tools::present(&[&common::tools::NBDINFO, &common::tools::NBDCOPY]) {
        return;
    }
    let mut node = TestNode::prepare_with_nbd_ports(ci_model(), 1);
    let clients = tempfile::tempdir().unwrap();
    let good = clients.path().join("good");
    let rogue = clients.path().join("rogue");
    common::tls::write_x509(node.data(), &good, &rogue, "alice");
    let psk = clients.path().join("psk.keys");
    let wrong_psk = clients.path().join("wrong.keys");
    common::tls::write_psk(&psk, "bob");
    common::tls::write_psk(&wrong_psk, "bob");
    // TLS required on TCP is the default: no --nbd-tls flag.
    node.nbd_tls_args = vec!["--nbd-tls-psk".to_owned(), psk.display().to_string()];
    node.launch();
    node.pool_and_volume("p", "64M", "v", "16M");
    // Identified clients reach what is mapped to their host: give both identities `v`.
    add_nbd_host(&node, "ha", "alice", &["v"]);
    add_nbd_host(&node, "hb", "bob", &["v"]);
    let port = node.nbd_ports[0];
    let x509 = |dir: &Path| {
        format!(
            "nbds://127.0.0.1:{port}/v?tls-certificates={}",
            dir.display()
        )
    };
    let with_psk = |file: &Path| {
        format!(
            "nbds://bob@127.0.0.1:{port}/v?tls-psk-file={}",
            file.display()
        )
    };
    let log = node.log_text();
    assert!(
        log.contains("NBD TLS require on the TCP ports") && log.contains("PSK (1 identities)"),
        "{log}"
    );

    let plain = run("nbdinfo", &[&format!("nbd://127.0.0.1:{port}/v")], None);
    assert!(
        !plain.status.success(),
        "a plain client was served: {}",
        text(&plain)
    );
    let info = run("nbdinfo", &[&x509(&good)], None);
    assert!(info.status.success(), "nbdinfo over x509: {}", text(&info));
    assert!(text(&info).contains("with TLS"), "{}", text(&info));
    let info = run("nbdinfo", &[&with_psk(&psk)], None);
    assert!(info.status.success(), "nbdinfo over PSK: {}", text(&info));

    copy_round_trip(clients.path(), &x509(&good), &image(4 << 20, 1), "x509");
    copy_round_trip(clients.path(), &with_psk(&psk), &image(4 << 20, 2), "psk");

    let untrusted = run("nbdinfo", &[&x509(&rogue)], None);
    assert!(
        !untrusted.status.success(),
        "an untrusted certificate was accepted"
    );
    let wrong = run("nbdinfo", &[&with_psk(&wrong_psk)], None);
    assert!(!wrong.status.success(), "a wrong PSK was accepted");

    fio_over_tls(&node, port, &good, clients.path());
    let log = node.log_text();
    assert!(
        log.contains("(TLS as \"alice\")"),
        "no x509 identity logged:\n{log}"
    );
    assert!(
        log.contains("(TLS as \"bob\")"),
        "no PSK identity logged:\n{log}"
    );
    node.stop();
}

/// A short bounded fio verify job over TLS, presenting the client certificate (an
/// anonymous client would see no export). fio's nbd engine does not allow local files in
/// URIs, so libnbd must find the x509 files in its default place: $HOME/.pki/libnbd, but
/// only for a non-root user (root's is /etc/pki/libnbd, which a test must not touch), so
/// as root fio runs as `nobody` through setpriv.
fn fio_over_tls(node: &TestNode, port: u16, certificates: &Path, scratch: &Path) {
    if !common::tools::present(&[&common::tools::FIO_NBD]) {
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root && !common::tools::present(&[&common::tools::SETPRIV]) {
        return;
    }
    let home = scratch.join("home");
    let pki = home.join(".pki/libnbd");
    std::fs::create_dir_all(&pki).unwrap();
    for file in ["ca-cert.pem", "client-cert.pem", "client-key.pem"] {
        std::fs::copy(certificates.join(file), pki.join(file)).unwrap();
    }
    if as_root {
        // nobody must reach and read the copies (test material only).
        let open_up = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for dir in [scratch, &home, &home.join(".pki"), &pki] {
            open_up(dir, 0o755);
        }
        open_up(&pki.join("client-key.pem"), 0o644);
    }
    let identified = |log: String| {
        log.matches("(TLS as \"alice\") closed its session on v")
            .count()
    };
    let sessions_before = identified(node.log_text());
    let uri = format!("--uri=nbds://127.0.0.1:{port}/v");
    let (program, prefix): (&str, &[&str]) = if as_root {
        (
            "setpriv",
            &["--reuid=nobody", "--regid=nogroup", "--clear-groups", "fio"],
        )
    } else {
        ("fio", &[])
    };
    let out = run(
        program,
        &[
            prefix,
            &[
                "--name=tls",
                "--ioengine=nbd",
                &uri,
                "--rw=randwrite",
                "--bs=4k",
                "--size=8M",
                "--iodepth=16",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--output-format=json",
            ],
        ]
        .concat(),
        Some(&home),
    );
    assert!(out.status.success(), "fio over TLS: {}", text(&out));
    // The engine prints a line of its own before the report.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.find('{').map_or("", |at| &stdout[at..]);
    let report: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|err| panic!("fio's JSON: {err}: {}", text(&out)));
    let job = &report["jobs"][0];
    assert_eq!(job["error"], 0, "fio reported an error: {job}");
    // Everything written, then everything read back and verified.
    assert_eq!(job["write"]["io_kbytes"], 8 * 1024, "{job}");
    assert_eq!(job["read"]["io_kbytes"], 8 * 1024, "{job}");
    // fio presented its certificate: its session was alice's (the log line comes when
    // the session closes, which fio's exit does).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while identified(node.log_text()) == sessions_before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        identified(node.log_text()) > sessions_before,
        "fio's session was not alice's:\n{}",
        node.log_text()
    );
}

/// `troika serve` on `data` with NBD on a free TCP port and nothing else, for at most
/// `seconds`.
fn serve_briefly(data: &std::path::Path, seconds: u32) -> std::process::Output {
    let port = common::free_port();
    Command::new("timeout")
        .arg(seconds.to_string())
        .arg(common::troika_bin())
        .args(["serve", "--hw"])
        .arg(ci_model())
        .arg("--data")
        .arg(data)
        .args([
            "--nbd-listen",
            &format!("127.0.0.1:{port}"),
            "--mgmt-listen",
            "none",
            "--iscsi-listen",
            "none",
        ])
        .output()
        .expect("run troika serve")
}

#[test]
fn tls_is_required_from_the_first_start_and_half_installed_credentials_stop_it() {
    // A half-installed certificate (a key without its certificate) stops the start and
    // names the missing file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/server-key.pem"), "not a key\n").unwrap();
    let out = serve_briefly(dir.path(), 60);
    assert!(
        !out.status.success(),
        "started with half a certificate: {}",
        text(&out)
    );
    assert!(text(&out).contains("server-cert.pem"), "{}", text(&out));

    // Without any: the first start makes a self-signed certificate and requires TLS on
    // the TCP ports at once (the run is ended by `timeout`, exit 124).
    std::fs::remove_file(dir.path().join("tls/server-key.pem")).unwrap();
    let out = serve_briefly(dir.path(), 5);
    let message = text(&out);
    assert_eq!(out.status.code(), Some(124), "{message}");
    assert!(message.contains("self-signed, made now"), "{message}");
    assert!(
        message.contains("NBD TLS require on the TCP ports, x509"),
        "{message}"
    );
}

/// The export names `nbdinfo --list` prints for `uri`; `None` when it failed.
fn listed(uri: &str) -> Option<Vec<String>> {
    let out = run("nbdinfo", &["--list", "--json", uri], None);
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("nbdinfo's JSON: {err}: {}", text(&out)));
    let mut names: Vec<String> = json["exports"]
        .as_array()
        .expect("an exports array")
        .iter()
        .map(|export| export["export-name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    Some(names)
}

/// Whether `nbdinfo` can open `uri` (the export exists for this client).
fn opens(uri: &str) -> bool {
    run("nbdinfo", &["--size", uri], None).status.success()
}

#[test]
fn identified_tls_clients_reach_only_their_hosts_mappings() {
    if !common::tools::present(&[&common::tools::NBDINFO, &common::tools::NBDCOPY]) {
        return;
    }
    let mut node = TestNode::prepare_with_nbd_ports(ci_model(), 1);
    let clients = tempfile::tempdir().unwrap();
    let carol = clients.path().join("carol");
    let rogue = clients.path().join("rogue");
    common::tls::write_x509(node.data(), &carol, &rogue, "carol");
    // An x509 client that presents no certificate: it trusts the node, proves nothing.
    let anonymous = clients.path().join("anonymous");
    std::fs::create_dir_all(&anonymous).unwrap();
    std::fs::copy(carol.join("ca-cert.pem"), anonymous.join("ca-cert.pem")).unwrap();
    let psk = clients.path().join("psk.keys");
    common::tls::write_psk(&psk, "alice");
    node.nbd_tls_args = vec!["--nbd-tls-psk".to_owned(), psk.display().to_string()];
    node.launch();
    node.pool_and_volume("p", "64M", "v1", "4M");
    node.cli_ok(&["vol", "create", "v2", "--pool", "p", "--size", "4M"]);
    node.cli_ok(&["vol", "create", "v3", "--pool", "p", "--size", "4M"]);
    node.cli_ok(&["snap", "create", "v1", "--name", "v1.s1"]);
    // alice (PSK) reaches v1 and its snapshot; carol (x509 CN) reaches v2; v3 is nobody's.
    add_nbd_host(&node, "h1", "alice", &["v1", "v1.s1"]);
    add_nbd_host(&node, "h2", "carol", &["v2"]);
    let port = node.nbd_ports[0];
    let alice = |export: &str| {
        format!(
            "nbds://alice@127.0.0.1:{port}/{export}?tls-psk-file={}",
            psk.display()
        )
    };
    let x509 = |dir: &Path, export: &str| {
        format!(
            "nbds://127.0.0.1:{port}/{export}?tls-certificates={}",
            dir.display()
        )
    };

    // Everything exists, as the local administrator sees on the unix socket.
    let admin = format!("nbd+unix://?socket={}", node.nbd_socket().display());
    assert_eq!(
        listed(&admin).expect("the admin lists"),
        ["v1", "v1.s1", "v2", "v3"]
    );

    assert_eq!(
        listed(&alice("")).expect("alice lists over PSK"),
        ["v1", "v1.s1"]
    );
    assert!(opens(&alice("v1")), "alice cannot open her mapped volume");
    for other in ["v2", "v3"] {
        assert!(!opens(&alice(other)), "alice opened unmapped {other}");
    }

    assert_eq!(
        listed(&x509(&carol, "")).expect("carol lists over x509"),
        ["v2"]
    );
    assert!(opens(&x509(&carol, "v2")), "carol cannot open her volume");
    for other in ["v1", "v1.s1", "v3"] {
        assert!(
            !opens(&x509(&carol, other)),
            "carol opened unmapped {other}"
        );
    }

    // A TLS client without a certificate is served TLS but sees and opens nothing.
    assert_eq!(
        listed(&x509(&anonymous, "")).expect("an anonymous TLS client still lists"),
        Vec::<String>::new()
    );
    for export in ["v1", "v2", "v3"] {
        assert!(
            !opens(&x509(&anonymous, export)),
            "an anonymous TLS client opened {export}"
        );
    }

    snapshot_stays_read_only(clients.path(), &alice("v1.s1"), &admin);
    node.stop();
}

/// A snapshot mapped to the host is served read-only over TLS: nbdcopy into it fails,
/// reading it works, and its contents stay what they were.
fn snapshot_stays_read_only(scratch: &Path, uri: &str, admin: &str) {
    let before = scratch.join("snapshot-before.bin");
    let admin_snapshot = admin.replacen("nbd+unix://", "nbd+unix:///v1.s1", 1);
    let read = run(
        "nbdcopy",
        &[&admin_snapshot, before.to_str().unwrap()],
        None,
    );
    assert!(read.status.success(), "admin read: {}", text(&read));
    let info = run("nbdinfo", &["--json", uri], None);
    assert!(
        info.status.success(),
        "nbdinfo of the snapshot: {}",
        text(&info)
    );
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["exports"][0]["is_read_only"], true, "{json}");

    let input = scratch.join("snapshot-write.bin");
    std::fs::write(&input, image(1 << 20, 9)).unwrap();
    let write = run("nbdcopy", &[input.to_str().unwrap(), uri], None);
    assert!(
        !write.status.success(),
        "nbdcopy wrote into a snapshot over TLS"
    );
    let error = text(&write);
    assert!(
        error.contains("read-only") || error.contains("Operation not permitted"),
        "nbdcopy failed for another reason: {error}"
    );

    let after = scratch.join("snapshot-after.bin");
    let read = run("nbdcopy", &[uri, after.to_str().unwrap()], None);
    assert!(read.status.success(), "read over TLS: {}", text(&read));
    assert!(
        std::fs::read(&before).unwrap() == std::fs::read(&after).unwrap(),
        "the snapshot changed"
    );
}
