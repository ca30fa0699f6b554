//! Who is on the other end of an NBD connection, and whether a unix-socket peer may talk
//! to us at all.
//!
//! What it promises:
//! - every connection is classified once, before the first NBD byte, as one
//!   [`NbdClient`]; the [`ExportProvider`](crate::target::ExportProvider) decides from it
//!   what the client may list and open (the front end never decides that itself);
//! - a TCP client with no TLS identity is [`NbdClient::Anonymous`] (sees nothing) unless
//!   the node was started with `--nbd-open`, which makes it [`NbdClient::Open`];
//! - a unix-socket peer is the local administrator only when its uid (from SO_PEERCRED,
//!   which the peer cannot forge) is one of [`NbdAccessConfig::allowed_uids`], the node's
//!   own uid or root; any other peer is closed before any NBD byte, and logged at most
//!   once per [`REFUSAL_LOG_INTERVAL`] (with a count of the refusals not logged).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The connected client, as the export provider sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NbdClient {
    /// A permitted peer on the node's unix socket: sees and opens every export.
    LocalAdmin,
    /// A TCP client that proved this TLS identity (PSK identity or certificate subject):
    /// sees only what is mapped to the host that has it as an NBD port.
    Identified(String),
    /// A TCP client without an identity: sees nothing.
    Anonymous,
    /// A TCP client without an identity on a node started with `--nbd-open`: sees
    /// everything (for benchmarking on a trusted machine).
    Open,
}

impl NbdClient {
    /// The client on a TCP connection: `identity` is the TLS identity the connection
    /// proved, if any; `open` is `--nbd-open`.
    pub fn over_tcp(identity: Option<String>, open: bool) -> NbdClient {
        match identity {
            Some(identity) => NbdClient::Identified(identity),
            None if open => NbdClient::Open,
            None => NbdClient::Anonymous,
        }
    }

    /// True for the clients that see every export.
    pub fn sees_everything(&self) -> bool {
        matches!(self, NbdClient::LocalAdmin | NbdClient::Open)
    }
}

/// Who may use the NBD ports, as `troika serve` was told.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NbdAccessConfig {
    /// `--nbd-open`: TCP clients without an identity see every export.
    pub open: bool,
    /// `--nbd-allow-uid`: unix-socket peers admitted besides the node's own uid and root.
    pub allowed_uids: Vec<u32>,
}

impl NbdAccessConfig {
    /// Whether a unix-socket peer running as `uid` is the local administrator.
    pub fn admits_uid(&self, uid: u32) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own = unsafe { libc::geteuid() };
        uid == 0 || uid == own || self.allowed_uids.contains(&uid)
    }
}

/// The peer's process credentials on a unix socket: `(pid, uid)`.
pub fn peer_credentials(stream: &UnixStream) -> std::io::Result<(i32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the descriptor is a live unix socket owned by `stream`; `cred` and `len`
    // live on our stack across the call and `len` holds the size of `cred`, so the kernel
    // writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid))
}

/// Refused unix peers are logged at most this often.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs refused unix-socket peers, at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Default)]
pub(super) struct RefusalLog {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl RefusalLog {
    pub(super) fn refused(&self, what: &str) {
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        let also = if unlogged == 0 {
            String::new()
        } else {
            format!(" ({unlogged} more refused since the last message)")
        };
        crate::say!(
            "nbd: refused a unix-socket connection from {what}: only the node's own user, root \
             and --nbd-allow-uid users may use the NBD socket{also}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_clients_are_classified_by_identity_and_open() {
        assert_eq!(NbdClient::over_tcp(None, false), NbdClient::Anonymous);
        assert_eq!(NbdClient::over_tcp(None, true), NbdClient::Open);
        assert_eq!(
            NbdClient::over_tcp(Some("h1".into()), true),
            NbdClient::Identified("h1".into())
        );
        assert!(NbdClient::Open.sees_everything());
        assert!(NbdClient::LocalAdmin.sees_everything());
        assert!(!NbdClient::Anonymous.sees_everything());
        assert!(!NbdClient::Identified("h1".into()).sees_everything());
    }

    #[test]
    fn own_uid_root_and_allowed_uids_are_admitted() {
        let config = NbdAccessConfig {
            open: false,
            allowed_uids: vec![4242],
        };
        // SAFETY: geteuid has no preconditions.
        let own = unsafe { libc::geteuid() };
        assert!(config.admits_uid(own));
        assert!(config.admits_uid(0));
        assert!(config.admits_uid(4242));
        let stranger = (1..u32::MAX)
            .find(|uid| *uid != own && *uid != 4242)
            .unwrap();
        assert!(!config.admits_uid(stranger));
    }

    #[test]
    fn peer_credentials_name_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let (pid, uid) = peer_credentials(&a).unwrap();
        assert_eq!(pid, std::process::id() as i32);
        // SAFETY: geteuid has no preconditions.
        assert_eq!(uid, unsafe { libc::geteuid() });
    }
}
