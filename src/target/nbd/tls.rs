//! TLS for NBD (`NBD_OPT_STARTTLS`): the policy of a listener, the server's TLS context
//! built from the node's files, and who the client proved to be.
//!
//! What it promises:
//! - a listener in [`NbdTlsMode::Require`] serves nothing before TLS (options other than
//!   STARTTLS and ABORT get `NBD_REP_ERR_TLS_REQD`); [`NbdTlsMode::On`] offers TLS and also
//!   serves plain clients; [`NbdTlsMode::Off`] answers STARTTLS with "unsupported";
//! - both kinds of credentials that libnbd and nbdkit use are accepted: the node's x509
//!   certificate (clients may present a certificate, verified against a CA file when one
//!   is configured), and pre-shared keys in psktool's `identity:hexkey` format;
//! - the client's TLS identity ([`NbdConnection::tls_identity`]) is the PSK identity, or the
//!   subject CN of a client certificate that verified against the CA file; a client that
//!   presented no certificate (or no CA is configured) has none;
//! - TLS 1.3 is negotiated whenever the client supports it (TLS 1.2 remains for older
//!   clients); no session tickets, no resumption, no renegotiation.
//!
//! Why OpenSSL (through the `openssl` crate, on the system's libssl 3) and not rustls:
//! libnbd's `tls-psk-file` uses TLS 1.3 *external* pre-shared keys (GnuTLS), which rustls
//! does not implement; OpenSSL's PSK server callback serves them (with SHA-256 suites,
//! which is why `TLS_AES_128_GCM_SHA256` comes first in our TLS 1.3 preference).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::nid::Nid;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslOptions, SslRef,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::X509VerifyResult;

/// Whether a listener offers or demands TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NbdTlsMode {
    /// STARTTLS is refused as unsupported.
    #[default]
    Off,
    /// STARTTLS is offered; plain clients are served too.
    On,
    /// Nothing is served before STARTTLS.
    Require,
}

impl FromStr for NbdTlsMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(NbdTlsMode::Off),
            "on" => Ok(NbdTlsMode::On),
            "require" => Ok(NbdTlsMode::Require),
            other => Err(format!("{other:?} is not off, on or require")),
        }
    }
}

impl fmt::Display for NbdTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NbdTlsMode::Off => "off",
            NbdTlsMode::On => "on",
            NbdTlsMode::Require => "require",
        })
    }
}

/// Where a connection came from (before any TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NbdPeer {
    /// A unix-socket client the accept thread admitted; `uid` from `SO_PEERCRED`.
    Unix {
        uid: u32,
    },
    Tcp {
        addr: SocketAddr,
    },
}

/// How a client connected: where from, and what TLS proved (if it used TLS). This
/// describes the connection (for logs, and as the input of the access decision); what the
/// client may reach is the [`NbdClient`](super::NbdClient) derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdConnection {
    pub peer: NbdPeer,
    /// True once STARTTLS completed on this connection.
    pub tls: bool,
    /// The PSK identity, or the verified client certificate's subject CN; `None` without
    /// TLS, or when the client presented no (verifiable) certificate.
    pub tls_identity: Option<String>,
}

impl fmt::Display for NbdConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            NbdPeer::Tcp { addr } => write!(f, "{addr}")?,
            NbdPeer::Unix { uid } => write!(f, "unix peer uid {uid}")?,
        }
        match (&self.tls_identity, self.tls) {
            (Some(identity), _) => write!(f, " (TLS as {identity:?})"),
            (None, true) => f.write_str(" (TLS, anonymous)"),
            (None, false) => Ok(()),
        }
    }
}

/// The TLS files of a node: the defaults under `<data>/tls/`, or what flags named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NbdTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that client certificates are verified against; `ca_explicit`: named by a
    /// flag, so it must exist.
    pub ca: PathBuf,
    pub ca_explicit: bool,
    /// The PSK key file; `psk_explicit`: named by a flag, so it must exist.
    pub psk: PathBuf,
    pub psk_explicit: bool,
}

impl NbdTlsFiles {
    /// The default files under `data_dir/tls/`, with `--nbd-tls-ca` / `--nbd-tls-psk`
    /// overriding the CA and the key file.
    pub fn in_data_dir(data_dir: &Path, ca: Option<PathBuf>, psk: Option<PathBuf>) -> Self {
        let dir = data_dir.join("tls");
        NbdTlsFiles {
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
            ca_explicit: ca.is_some(),
            ca: ca.unwrap_or_else(|| dir.join("nbd-ca.pem")),
            psk_explicit: psk.is_some(),
            psk: psk.unwrap_or_else(|| dir.join("nbd-psk.keys")),
        }
    }
}

/// A listener's TLS: its mode and, unless off, the server context.
#[derive(Clone, Default)]
pub struct NbdTls {
    pub mode: NbdTlsMode,
    pub server: Option<Arc<TlsServer>>,
}

impl PartialEq for NbdTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && match (&self.server, &other.server) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for NbdTls {}

impl fmt::Debug for NbdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NbdTls({}", self.mode)?;
        if let Some(server) = &self.server {
            write!(f, ", {}", server.describe())?;
        }
        f.write_str(")")
    }
}

impl NbdTls {
    /// No TLS.
    pub fn off() -> Self {
        NbdTls::default()
    }

    /// A listener's TLS in `mode`; `server` is what [`TlsServer::load`] found. Fails,
    /// naming the files to create, when TLS is wanted but there are no credentials.
    pub fn new(
        mode: NbdTlsMode,
        server: Option<Arc<TlsServer>>,
        files: &NbdTlsFiles,
    ) -> Result<Self, String> {
        if mode == NbdTlsMode::Off {
            return Ok(NbdTls::off());
        }
        let Some(server) = server else {
            return Err(format!(
                "NBD TLS is {mode} but there is neither a certificate nor a PSK key file: \
                 create {} and {} (PEM), or a key file {} (psktool format, mode 0600) or \
                 pass --nbd-tls-psk FILE; or pass --nbd-tls off",
                files.cert.display(),
                files.key.display(),
                files.psk.display()
            ));
        };
        Ok(NbdTls {
            mode,
            server: Some(server),
        })
    }

    /// The server context when STARTTLS is offered.
    pub(super) fn offered(&self) -> Option<&TlsServer> {
        match self.mode {
            NbdTlsMode::Off => None,
            NbdTlsMode::On | NbdTlsMode::Require => self.server.as_deref(),
        }
    }

    pub(super) fn required(&self) -> bool {
        self.mode == NbdTlsMode::Require
    }
}

/// The server side of TLS: one OpenSSL context for every connection of a node.
pub struct TlsServer {
    context: SslContext,
    x509: bool,
    client_ca: bool,
    psk_identities: usize,
}

/// Pre-shared keys by identity.
type PskKeys = HashMap<String, Vec<u8>>;

/// Where the PSK callback leaves the identity it accepted, for [`TlsServer::identity`].
fn psk_identity_index() -> Result<Index<Ssl, String>, ErrorStack> {
    static INDEX: OnceLock<Result<Index<Ssl, String>, ErrorStack>> = OnceLock::new();
    INDEX.get_or_init(Ssl::new_ex_index::<String>).clone()
}

impl TlsServer {
    /// Builds the context from whichever of the certificate pair and the PSK file exist;
    /// `Ok(None)` when neither does.
    pub fn load(files: &NbdTlsFiles) -> Result<Option<Arc<TlsServer>>, String> {
        let cert = files.cert.exists();
        let key = files.key.exists();
        if cert != key {
            let (have, missing) = if cert {
                (&files.cert, &files.key)
            } else {
                (&files.key, &files.cert)
            };
            return Err(format!(
                "NBD TLS: {} exists but {} does not; create both (PEM) or neither",
                have.display(),
                missing.display()
            ));
        }
        let psk = if files.psk_explicit || files.psk.exists() {
            Some(read_psk_file(&files.psk)?)
        } else {
            None
        };
        if !cert && psk.is_none() {
            return Ok(None);
        }
        if files.ca_explicit && !files.ca.exists() {
            return Err(format!(
                "--nbd-tls-ca {}: no such file; give the CA certificate (PEM) that signs the \
                 clients' certificates",
                files.ca.display()
            ));
        }
        let ca = (cert && files.ca.exists()).then_some(files.ca.as_path());
        let identities = psk.as_ref().map_or(0, HashMap::len);
        let context = build_context(files, cert, ca, psk)?;
        Ok(Some(Arc::new(TlsServer {
            context,
            x509: cert,
            client_ca: ca.is_some(),
            psk_identities: identities,
        })))
    }

    /// One line for the start-up log: which credentials are served.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.x509 {
            parts.push(if self.client_ca {
                "x509, client certificates verified".to_owned()
            } else {
                "x509".to_owned()
            });
        }
        if self.psk_identities > 0 {
            parts.push(format!("PSK ({} identities)", self.psk_identities));
        }
        parts.join(" + ")
    }

    pub(super) fn new_ssl(&self) -> Result<Ssl, ErrorStack> {
        Ssl::new(&self.context)
    }

    /// The identity a finished handshake proved: the PSK identity, else the verified client
    /// certificate's subject CN.
    pub(super) fn identity(ssl: &SslRef) -> Option<String> {
        if let Ok(index) = psk_identity_index()
            && let Some(identity) = ssl.ex_data(index)
        {
            return Some(identity.clone());
        }
        let cert = ssl.peer_certificate()?;
        if ssl.verify_result() != X509VerifyResult::OK {
            return None;
        }
        let cn = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
        cn.data().to_string().ok()
    }
}

fn tls_error(what: &str, path: &Path, err: ErrorStack) -> String {
    format!("NBD TLS: cannot {what} {}: {err}", path.display())
}

fn build_context(
    files: &NbdTlsFiles,
    cert: bool,
    ca: Option<&Path>,
    psk: Option<PskKeys>,
) -> Result<SslContext, String> {
    let general = |err: ErrorStack| format!("NBD TLS: cannot set up OpenSSL: {err}");
    let mut builder = SslContextBuilder::new(SslMethod::tls_server()).map_err(general)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(general)?;
    builder.set_options(
        SslOptions::NO_TICKET | SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_RENEGOTIATION,
    );
    builder.set_num_tickets(0).map_err(general)?;
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    // OpenSSL treats an external PSK as a session to resume, and refuses to resume one when
    // client certificates are verified unless a session id context is set.
    builder
        .set_session_id_context(b"troika-nbd")
        .map_err(general)?;
    builder.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    // Clients send each small request as its own record: without read-ahead OpenSSL reads
    // every record's header and body in two system calls. Records read ahead are seen by
    // `SSL_has_pending` (see `tls_stream`), so pipelined requests still fan out.
    builder.set_read_ahead(true);
    // External PSKs through the server callback need a SHA-256 suite; AES-128-GCM is also
    // the cheapest with AES-NI.
    builder
        .set_ciphersuites(
            "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384",
        )
        .map_err(general)?;
    builder
        .set_cipher_list("HIGH:!aNULL:!kRSA:!SRP:!MD5:!RC4:!3DES")
        .map_err(general)?;
    if cert {
        builder
            .set_certificate_chain_file(&files.cert)
            .map_err(|err| tls_error("load the certificate", &files.cert, err))?;
        builder
            .set_private_key_file(&files.key, SslFiletype::PEM)
            .map_err(|err| tls_error("load the private key", &files.key, err))?;
        builder
            .check_private_key()
            .map_err(|err| tls_error("match the key to the certificate", &files.key, err))?;
    }
    match ca {
        Some(ca) => {
            builder
                .set_ca_file(ca)
                .map_err(|err| tls_error("load the client CA", ca, err))?;
            // No list of acceptable CA names is sent: GnuTLS clients would then quietly
            // withhold a certificate from another CA and connect anonymously, where the
            // operator wants the untrusted certificate refused.
            builder.set_verify(SslVerifyMode::PEER);
        }
        None => builder.set_verify(SslVerifyMode::NONE),
    }
    if let Some(keys) = psk {
        let index = psk_identity_index().map_err(general)?;
        builder.set_psk_server_callback(move |ssl, identity, out| {
            let Some(identity) = identity.and_then(|id| std::str::from_utf8(id).ok()) else {
                return Ok(0);
            };
            match keys.get(identity) {
                Some(key) if key.len() <= out.len() => {
                    out[..key.len()].copy_from_slice(key);
                    ssl.set_ex_data(index, identity.to_owned());
                    Ok(key.len())
                }
                // Unknown identity: 0 makes OpenSSL refuse the handshake.
                _ => Ok(0),
            }
        });
    }
    Ok(builder.build())
}

/// Reads a psktool-format key file (`identity:hexkey` per line). Refuses a file that
/// group or others may read.
pub fn read_psk_file(path: &Path) -> Result<PskKeys, String> {
    let metadata = std::fs::metadata(path).map_err(|err| {
        format!(
            "NBD TLS: cannot read the PSK file {}: {err}",
            path.display()
        )
    })?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "NBD TLS: the PSK file {} is readable by group or others (mode {:o}); \
             run chmod 600 on it",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|err| {
        format!(
            "NBD TLS: cannot read the PSK file {}: {err}",
            path.display()
        )
    })?;
    let keys = parse_psk_keys(&text)
        .map_err(|err| format!("NBD TLS: the PSK file {}: {err}", path.display()))?;
    if keys.is_empty() {
        return Err(format!(
            "NBD TLS: the PSK file {} holds no keys; add lines `identity:hexkey` (psktool -u \
             NAME -p FILE makes one)",
            path.display()
        ));
    }
    Ok(keys)
}

/// Parses `identity:hexkey` lines; blank lines and `#` comments are skipped.
pub(super) fn parse_psk_keys(text: &str) -> Result<PskKeys, String> {
    let mut keys = PskKeys::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", number + 1);
        let (identity, hex) = line
            .rsplit_once(':')
            .ok_or_else(|| bad("not identity:hexkey"))?;
        if identity.is_empty() {
            return Err(bad("empty identity"));
        }
        let key = decode_hex(hex).ok_or_else(|| bad("the key is not an even run of hex digits"))?;
        if key.is_empty() || key.len() > 256 {
            return Err(bad("the key must be 1 to 256 bytes"));
        }
        keys.insert(identity.to_owned(), key);
    }
    Ok(keys)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}
