//! The node's TLS certificate: one certificate and key, shared by every TLS listener of the
//! node (the management API's HTTPS port and NBD over x509).
//!
//! What it promises:
//! - The files are standard PEM: `<data-dir>/tls/server-cert.pem` holds the certificate
//!   chain (leaf first), `<data-dir>/tls/server-key.pem` the private key (PKCS#8, SEC1 or
//!   PKCS#1). Any TLS library can load them.
//! - On the first start (neither file exists) a self-signed ECDSA P-256 certificate is
//!   made, with subject alternative names `localhost`, `127.0.0.1`, `::1` and the host's
//!   name. The directory is created 0700 and both files 0600 before anything is written
//!   (see [`crate::private_files`]), so the key is never readable by others.
//! - An operator installs their own certificate by replacing both files while the node is
//!   stopped; whatever is installed is used as is (never overwritten). Only one of the two
//!   files present is an error that says which is missing.
//! - The SHA-256 fingerprint of the leaf certificate is computed at every start, in the
//!   form `openssl x509 -noout -fingerprint -sha256` prints (`AB:CD:...`), and written to
//!   `<data-dir>/tls/server-cert.sha256` so clients can pin or compare it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::private_files;

/// The folder under the data directory that holds the certificate files.
pub const TLS_DIR: &str = "tls";
pub const CERT_FILE: &str = "server-cert.pem";
pub const KEY_FILE: &str = "server-key.pem";
pub const FINGERPRINT_FILE: &str = "server-cert.sha256";

/// The node's certificate chain and key, loaded from the data directory.
pub struct NodeCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The chain, leaf first, as DER.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf's DER, as `AB:CD:...` (95 characters).
    pub fingerprint: String,
    /// Whether this start made the certificate (rather than loading an existing one).
    pub created: bool,
}

impl NodeCertificate {
    /// Loads `<data_dir>/tls/server-{cert,key}.pem`, making a self-signed pair first if
    /// neither exists, and writes the fingerprint file.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<NodeCertificate> {
        let dir = data_dir.join(TLS_DIR);
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let created = match (cert_path.exists(), key_path.exists()) {
            (true, true) => false,
            (false, false) => {
                create_self_signed(&dir, &cert_path, &key_path)?;
                true
            }
            (cert, _) => bail!(
                "the TLS {} {} is missing while {} exists; install both files (PEM) or remove \
                 the other so the node makes a self-signed pair",
                if cert { "key" } else { "certificate" },
                if cert { &key_path } else { &cert_path }.display(),
                if cert { &cert_path } else { &key_path }.display(),
            ),
        };
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot read the TLS certificate {}: {error}; it must be PEM \
                     (-----BEGIN CERTIFICATE-----)",
                    cert_path.display()
                )
            })?;
        let Some(leaf) = chain.first() else {
            bail!(
                "the TLS certificate file {} holds no certificate; it must be PEM \
                 (-----BEGIN CERTIFICATE-----)",
                cert_path.display()
            );
        };
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|error| {
            anyhow::anyhow!(
                "cannot read the TLS private key {}: {error}; it must be an unencrypted PEM key \
                 (PKCS#8, SEC1 or PKCS#1)",
                key_path.display()
            )
        })?;
        let fingerprint = sha256_fingerprint(leaf);
        let fingerprint_path = dir.join(FINGERPRINT_FILE);
        private_files::write_atomically(&fingerprint_path, format!("{fingerprint}\n").as_bytes())
            .with_context(|| {
            format!(
                "cannot write the certificate fingerprint to {}; check the directory's permissions",
                fingerprint_path.display()
            )
        })?;
        Ok(NodeCertificate {
            cert_path,
            key_path,
            chain,
            key,
            fingerprint,
            created,
        })
    }
}

/// SHA-256 of `der` as upper-case hex pairs joined by `:`.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The host's name, or `None` if the OS does not say.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its full length, which is what we pass; gethostname
    // writes at most that many bytes.
    let status = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if status != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty() && name != "localhost").then(|| name.to_owned())
}

fn create_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    private_files::create_dir(dir)
        .with_context(|| format!("cannot create the TLS directory {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = host_name();
    names.extend(host.clone());
    let mut params = rcgen::CertificateParams::new(names)
        .context("cannot describe the self-signed TLS certificate")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("troika {}", host.as_deref().unwrap_or("localhost")),
    );
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "troika self-signed".to_owned(),
    );
    let key_pair = rcgen::KeyPair::generate().context("cannot generate a TLS key")?;
    let cert = params
        .self_signed(&key_pair)
        .context("cannot sign the self-signed TLS certificate")?;
    // Like everything in the data directory, both files are 0600: the certificate is
    // public, but clients get it from the operator, not from other local users.
    for (path, pem) in [
        (key_path, key_pair.serialize_pem()),
        (cert_path, cert.pem()),
    ] {
        private_files::write_atomically(path, pem.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn first_start_makes_a_private_pair_and_later_starts_load_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeCertificate::load_or_create(dir.path()).unwrap();
        assert!(first.created);
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(TLS_DIR)), 0o700);
        assert_eq!(mode(&first.key_path), 0o600);
        assert_eq!(mode(&first.cert_path), 0o600);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let written = fs::read_to_string(dir.path().join(TLS_DIR).join(FINGERPRINT_FILE)).unwrap();
        assert_eq!(written.trim(), first.fingerprint);

        let second = NodeCertificate::load_or_create(dir.path()).unwrap();
        assert!(!second.created);
        assert_eq!(second.fingerprint, first.fingerprint);
        assert_eq!(second.chain, first.chain);
    }

    #[test]
    fn a_lone_certificate_is_refused_with_the_missing_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeCertificate::load_or_create(dir.path()).unwrap();
        fs::remove_file(&first.key_path).unwrap();
        let error = NodeCertificate::load_or_create(dir.path())
            .err()
            .expect("a missing key is refused");
        assert!(format!("{error:#}").contains("server-key.pem"), "{error:#}");
    }
}
