//! NBD over TLS with real libnbd clients against the real binary: TLS is required on TCP,
//! x509 and PSK clients (nbdinfo, nbdcopy, fio) are served and identified, plain clients,
//! untrusted certificates and wrong keys are refused, and a node that must require TLS
//! without credentials does not start.
//!
//! Skips (saying why) when nbdinfo/nbdcopy are not installed; the fio part skips when fio
//! lacks its nbd engine, unless TROIKA_REQUIRE_FIO=1.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{TestNode, ci_model, have};

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

fn fio_has_nbd() -> bool {
    Command::new("fio")
        .arg("--enghelp")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "nbd")
        })
        .unwrap_or(false)
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

#[test]
fn tls_clients_are_served_and_identified_and_others_refused() {
    if !have("nbdinfo") || !have("nbdcopy") {
        eprintln!("skipping: nbdinfo/nbdcopy (libnbd-bin) are not installed");
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

    fio_over_tls(port, &good, clients.path());
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

/// A short bounded fio verify job over TLS. fio's nbd engine does not allow local files
/// in URIs, so libnbd finds the x509 files in its default place, $HOME/.pki/libnbd.
fn fio_over_tls(port: u16, certificates: &Path, scratch: &Path) {
    if !have("fio") || !fio_has_nbd() {
        assert!(
            std::env::var("TROIKA_REQUIRE_FIO").as_deref() != Ok("1"),
            "TROIKA_REQUIRE_FIO=1 but fio with its nbd engine is not installed"
        );
        eprintln!("skipping the fio part: fio with the nbd engine is not installed");
        return;
    }
    let home = scratch.join("home");
    let pki = home.join(".pki/libnbd");
    std::fs::create_dir_all(&pki).unwrap();
    for file in ["ca-cert.pem", "client-cert.pem", "client-key.pem"] {
        std::fs::copy(certificates.join(file), pki.join(file)).unwrap();
    }
    let uri = format!("--uri=nbds://127.0.0.1:{port}/v");
    let out = run(
        "fio",
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
}

#[test]
fn requiring_tls_without_credentials_fails_to_start_and_says_what_to_create() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let out = Command::new("timeout")
        .arg("60")
        .arg(common::troika_bin())
        .args(["serve", "--hw"])
        .arg(ci_model())
        .arg("--data")
        .arg(dir.path())
        .args([
            "--nbd-listen",
            &format!("127.0.0.1:{port}"),
            "--mgmt-listen",
            "none",
            "--iscsi-listen",
            "none",
        ])
        .output()
        .expect("run troika serve");
    assert!(
        !out.status.success(),
        "started without credentials: {}",
        text(&out)
    );
    let message = text(&out);
    assert!(message.contains("server-cert.pem"), "{message}");
    assert!(message.contains("--nbd-tls-psk"), "{message}");
    assert!(message.contains("--nbd-tls off"), "{message}");
}
