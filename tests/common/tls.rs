//! TLS material for NBD tests, made with OpenSSL: a CA, a server certificate for
//! 127.0.0.1/localhost signed by it, client certificates (one from the CA, one from a
//! CA the server does not trust), and PSK key files, laid out the way troika and
//! libnbd (GnuTLS) look for them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `cn` with `key`, signed by `issuer` (self-signed when `None`).
fn certificate(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    role: Role,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder
        .set_issuer_name(issuer.map_or(&name, |(cert, _)| cert.subject_name()))
        .unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    match role {
        Role::Ca => {
            builder
                .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            builder
                .append_extension(
                    KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .crl_sign()
                        .build()
                        .unwrap(),
                )
                .unwrap();
        }
        Role::Server | Role::Client => {
            builder
                .append_extension(BasicConstraints::new().build().unwrap())
                .unwrap();
            builder
                .append_extension(
                    KeyUsage::new()
                        .critical()
                        .digital_signature()
                        .build()
                        .unwrap(),
                )
                .unwrap();
            let mut usage = ExtendedKeyUsage::new();
            if role == Role::Server {
                usage.server_auth();
            } else {
                usage.client_auth();
            }
            builder.append_extension(usage.build().unwrap()).unwrap();
        }
    }
    if role == Role::Server {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&builder.x509v3_context(issuer.map(|(cert, _)| &**cert), None))
            .unwrap();
        builder.append_extension(san).unwrap();
    }
    let signer = issuer.map_or(key, |(_, key)| key);
    builder.sign(signer, MessageDigest::sha256()).unwrap();
    builder.build()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ca,
    Server,
    Client,
}

fn write_pem(path: &Path, pem: Vec<u8>, mode: u32) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes a node's x509 files into `data/tls/` (server-cert.pem, server-key.pem, and
/// nbd-ca.pem so client certificates are verified), and two client directories for
/// libnbd's `tls-certificates=`: `good` (ca-cert.pem, client-cert.pem for CN
/// `client_cn`, client-key.pem) and `rogue` (the same, but the client certificate comes
/// from a CA the node does not trust).
pub fn write_x509(data: &Path, good: &Path, rogue: &Path, client_cn: &str) {
    let ca_key = new_key();
    let ca = certificate("troika test CA", &ca_key, None, Role::Ca);
    let server_key = new_key();
    let server = certificate("localhost", &server_key, Some((&ca, &ca_key)), Role::Server);
    let tls = data.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    write_pem(
        &tls.join("server-cert.pem"),
        server.to_pem().unwrap(),
        0o644,
    );
    write_pem(
        &tls.join("server-key.pem"),
        server_key.private_key_to_pem_pkcs8().unwrap(),
        0o600,
    );
    write_pem(&tls.join("nbd-ca.pem"), ca.to_pem().unwrap(), 0o644);

    let rogue_ca_key = new_key();
    let rogue_ca = certificate("rogue CA", &rogue_ca_key, None, Role::Ca);
    for (dir, issuer) in [(good, (&ca, &ca_key)), (rogue, (&rogue_ca, &rogue_ca_key))] {
        std::fs::create_dir_all(dir).unwrap();
        let key = new_key();
        let cert = certificate(client_cn, &key, Some(issuer), Role::Client);
        // The client trusts the node's CA in both cases: only its own certificate differs.
        write_pem(&dir.join("ca-cert.pem"), ca.to_pem().unwrap(), 0o644);
        write_pem(&dir.join("client-cert.pem"), cert.to_pem().unwrap(), 0o644);
        write_pem(
            &dir.join("client-key.pem"),
            key.private_key_to_pem_pkcs8().unwrap(),
            0o600,
        );
    }
}

/// Writes a psktool-format key file (mode 0600) holding `identity` with a random key.
pub fn write_psk(path: &Path, identity: &str) {
    let mut key = [0u8; 32];
    openssl::rand::rand_bytes(&mut key).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, format!("{identity}:{hex}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
