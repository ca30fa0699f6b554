//! rustls configurations of the management API: the server's (HTTPS on the TCP port) and
//! the CLI client's. Both use the `ring` crypto provider and allow TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The `ring` provider: pure Rust and C, no cmake or Go at build time (unlike aws-lc-rs).
/// rustls 0.23.48 deprecates it only because it lacks post-quantum key exchange, which
/// browsers and Python's ssl do not need for a management API.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The server configuration for a certificate chain (leaf first) and its key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("the TLS library refuses TLS 1.2/1.3 with the ring provider")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not form a usable pair")?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the certificates in the PEM file `ca_file` (the
/// node's own self-signed certificate, or the CA that signed the installed one).
pub fn client_config(ca_file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot read the CA file {}: {error}; give a PEM file such as the node's \
                 <data-dir>/tls/server-cert.pem",
                ca_file.display()
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        anyhow::bail!(
            "the CA file {} holds no usable certificate; give a PEM file such as the node's \
             <data-dir>/tls/server-cert.pem",
            ca_file.display()
        );
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("the TLS library refuses TLS 1.2/1.3 with the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
