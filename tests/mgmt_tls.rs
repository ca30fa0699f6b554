//! The management API's TCP port speaks HTTPS: a real client verifies the node's
//! self-signed certificate, the fingerprint the node prints is the certificate's, and a
//! plain HTTP request on the port is refused with a readable 400.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{TestNode, ci_model};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use troika::cli::client::{Client, Endpoint};

fn https_client(node: &TestNode, user: &str, password: &str) -> Client {
    let url = format!("https://127.0.0.1:{}", node.api_port.expect("api port"));
    Client::with_endpoint(Endpoint::parse_url(&url).unwrap(), Some((user, password)))
        .with_ca_file(&node.tls_cert_path())
        .expect("the node's certificate is a usable CA file")
}

#[test]
fn the_api_is_served_over_verified_https_with_the_printed_fingerprint() {
    let node = TestNode::start_with_https_api(ci_model(), &[]);
    let password = node.admin_password();
    let client = https_client(&node, "admin", &password);
    let (status, system) = client.request("GET", "/api/rest/system", None).unwrap();
    assert_eq!(status, 200, "{system}");
    let served = system["result"]["tls_certificate_sha256"]
        .as_str()
        .expect("the system shows the certificate's fingerprint")
        .to_owned();

    // The certificate's own SHA-256, computed here from the PEM file.
    let der = CertificateDer::pem_file_iter(node.tls_cert_path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let computed = troika::node::certs::sha256_fingerprint(&der);
    assert_eq!(served, computed);
    let kept = std::fs::read_to_string(node.data().join("tls/server-cert.sha256")).unwrap();
    assert_eq!(kept.trim(), computed);
    let printed = node.log_text();
    assert!(
        printed.contains(&format!("SHA-256 fingerprint {computed}")),
        "the node prints the fingerprint at start:\n{printed}"
    );

    // A wrong password over HTTPS is an ordinary 401.
    let wrong = https_client(&node, "admin", "not-the-password");
    let (status, _) = wrong.request("GET", "/api/rest/system", None).unwrap();
    assert_eq!(status, 401);

    // A client that trusts another certificate refuses the node.
    let other = tempfile::tempdir().unwrap();
    troika::node::certs::NodeCertificate::load_or_create(other.path()).unwrap();
    let url = format!("https://127.0.0.1:{}", node.api_port.unwrap());
    let stranger = Client::with_endpoint(
        Endpoint::parse_url(&url).unwrap(),
        Some(("admin", &password)),
    )
    .with_ca_file(&other.path().join("tls/server-cert.pem"))
    .unwrap();
    let refused = stranger.request("GET", "/api/rest/system", None);
    assert!(
        refused.is_err(),
        "an unknown certificate was trusted: {refused:?}"
    );
}

#[test]
fn plain_http_on_the_https_port_is_refused_with_a_400() {
    let node = TestNode::start_with_https_api(ci_model(), &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", node.api_port.unwrap())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /api/rest/system HTTP/1.1\r\nHost: troika\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("TLS_REQUIRED"), "{answer}");
    assert!(answer.contains("https://"), "{answer}");
}

#[test]
fn the_cli_speaks_https_to_a_tcp_url_with_the_node_certificate() {
    let node = TestNode::start_with_https_api(ci_model(), &[]);
    let url = format!("https://127.0.0.1:{}", node.api_port.unwrap());
    let output = std::process::Command::new(common::troika_bin())
        .arg("--data")
        .arg(node.data())
        .args(["--url", &url, "--user", "admin", "--json", "pool", "ls"])
        .env("TROIKA_PASSWORD", node.admin_password())
        .env_remove("TROIKA_URL")
        .env_remove("TROIKA_CA")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // With a CA file that is not the node's, the CLI refuses the node.
    let other = tempfile::tempdir().unwrap();
    troika::node::certs::NodeCertificate::load_or_create(other.path()).unwrap();
    let output = std::process::Command::new(common::troika_bin())
        .arg("--data")
        .arg(node.data())
        .args(["--url", &url, "--user", "admin", "--ca"])
        .arg(other.path().join("tls/server-cert.pem"))
        .args(["pool", "ls"])
        .env("TROIKA_PASSWORD", node.admin_password())
        .output()
        .unwrap();
    assert!(!output.status.success());
}
