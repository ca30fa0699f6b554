//! TLS on the node's NBD listeners: the modes `serve` was given (or their defaults),
//! the credentials loaded from the data directory, checked and logged at start.
//!
//! What it promises:
//! - the TCP ports default to `require`; with `--nbd-open` (and no explicit `--nbd-tls`)
//!   they default to serving plain clients, because `--nbd-open` exists to serve every
//!   export over TCP without TLS: TLS is then `on` when the node has credentials (so
//!   identified TLS clients still get only their host's mappings) and `off` when it has
//!   none. An explicit `--nbd-tls` always wins;
//! - the unix socket defaults to `off` (its door is SO_PEERCRED);
//! - a listener that wants TLS without credentials stops the start with a message naming
//!   the files to create or the flag to pass.

use std::path::PathBuf;

use crate::target::nbd::{NbdTls, NbdTlsFiles, NbdTlsMode, TlsServer};

/// TLS on the NBD listeners, as `serve` flags give it.
#[derive(Clone, Debug, Default)]
pub struct NbdTlsOptions {
    /// `--nbd-tls` for the TCP ports; `None`: not given (`require`, or see
    /// [`tcp_mode`] under `--nbd-open`).
    pub tcp: Option<NbdTlsMode>,
    /// The unix socket's mode (`--nbd-unix-tls`, default `off`).
    pub unix: NbdTlsMode,
    /// `--nbd-tls-ca`: the CA for client certificates (default DATA/tls/nbd-ca.pem if
    /// present).
    pub ca: Option<PathBuf>,
    /// `--nbd-tls-psk`: the PSK key file (default DATA/tls/nbd-psk.keys if present).
    pub psk: Option<PathBuf>,
}

/// The TCP ports' mode: what `--nbd-tls` said, else `require`, else under `--nbd-open`
/// `on` when `has_credentials` and `off` when not.
pub fn tcp_mode(wanted: Option<NbdTlsMode>, open: bool, has_credentials: bool) -> NbdTlsMode {
    match wanted {
        Some(mode) => mode,
        None if !open => NbdTlsMode::Require,
        None if has_credentials => NbdTlsMode::On,
        None => NbdTlsMode::Off,
    }
}

/// Each NBD listener's TLS: `(unix socket, TCP ports)`. `serves_tcp`: there are TCP
/// ports; `open`: `--nbd-open`.
pub fn listener_tls(
    data_dir: &std::path::Path,
    wanted: &NbdTlsOptions,
    serves_tcp: bool,
    open: bool,
) -> anyhow::Result<(NbdTls, NbdTls)> {
    let files = NbdTlsFiles::in_data_dir(data_dir, wanted.ca.clone(), wanted.psk.clone());
    let tcp_may_want_tls = serves_tcp && wanted.tcp != Some(NbdTlsMode::Off);
    let server = if tcp_may_want_tls || wanted.unix != NbdTlsMode::Off {
        TlsServer::load(&files).map_err(anyhow::Error::msg)?
    } else {
        None
    };
    let tcp_mode = match serves_tcp {
        true => tcp_mode(wanted.tcp, open, server.is_some()),
        false => NbdTlsMode::Off,
    };
    let unix = NbdTls::new(wanted.unix, server.clone(), &files)
        .map_err(|err| anyhow::anyhow!("the NBD unix socket (--nbd-unix-tls): {err}"))?;
    let tcp = NbdTls::new(tcp_mode, server.clone(), &files)
        .map_err(|err| anyhow::anyhow!("the NBD TCP ports (--nbd-tls): {err}"))?;
    let credentials = server
        .map(|server| format!(", {}", server.describe()))
        .unwrap_or_default();
    let with_credentials = |mode: NbdTlsMode| match mode {
        NbdTlsMode::Off => "",
        NbdTlsMode::On | NbdTlsMode::Require => credentials.as_str(),
    };
    crate::say!(
        "troika: NBD TLS {} on nbd.sock{}",
        wanted.unix,
        with_credentials(wanted.unix)
    );
    if serves_tcp {
        let why = match (wanted.tcp, open) {
            (None, true) => " (--nbd-open serves plain clients)",
            _ => "",
        };
        crate::say!(
            "troika: NBD TLS {tcp_mode} on the TCP ports{}{why}",
            with_credentials(tcp_mode)
        );
    }
    Ok((unix, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_open_serves_plain_tcp_unless_tls_was_asked_for() {
        use NbdTlsMode::*;
        assert_eq!(tcp_mode(None, false, true), Require);
        assert_eq!(tcp_mode(None, false, false), Require);
        assert_eq!(tcp_mode(None, true, true), On);
        assert_eq!(tcp_mode(None, true, false), Off);
        assert_eq!(tcp_mode(Some(Require), true, true), Require);
        assert_eq!(tcp_mode(Some(Off), false, true), Off);
    }
}
