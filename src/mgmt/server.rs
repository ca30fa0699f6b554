//! The management server: accepts connections on the node's unix socket or a TCP port and
//! serves the REST API. The unix socket's callers are local administrators and speak plain
//! HTTP; TCP callers speak HTTPS (TLS 1.2 or 1.3, rustls with the `ring` provider, the
//! node's certificate from [`crate::node::certs`]) unless the node was started with
//! `--mgmt-tls off` (tests only), and must authenticate (see [`super::rest::auth`]).
//!
//! Thread and connection model: one accept thread per listener, and one thread per open
//! connection, with the number of connections bounded by [`slots`] (at most
//! [`MAX_CONNECTIONS`], so at most that many connection threads, each mostly asleep in a
//! 50 ms read timeout). This keeps the request path plain blocking code (argon2, rustls'
//! blocking stream, the handlers) while idle connections cannot take the server: a new
//! connection over a limit closes the longest-idle connection of its class instead of
//! being refused, connections that proved a user have room of their own, and every
//! connection must send a complete request head within seconds
//! ([`super::http::HEADER_TIMEOUT`], [`super::http::FIRST_REQUEST_TIMEOUT`], which also
//! bounds the TLS handshake). An idle or slowloris flood therefore costs a bounded number
//! of threads and never keeps an authenticated client out. An event loop would make idle
//! connections cheaper still, but would need the TLS layer and the reader rewritten as
//! state machines; with the slot limits the thread cost is small and fixed.
//!
//! On a TLS port the first byte of a connection tells TLS (a handshake record, 0x16) from
//! plain HTTP; plain HTTP is answered `400 Bad Request` with the error code `TLS_REQUIRED`
//! (in plain HTTP, so the client can show it) and closed.
//!
//! The accept thread waits for connections with `poll(2)` for at most [`ACCEPT_POLL`] at a
//! time, so it accepts at once and still notices `shutdown` quickly. Connection threads
//! read with a short timeout, so they too notice `shutdown`. On shutdown the accept thread
//! stops accepting, waits for the connection threads and returns.
//!
//! A panic inside the [`Management`](super::api::Management) implementation is caught and
//! answered with a 500, so one bad call costs one request, not the connection or the
//! server.

mod connection;
pub mod slots;

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use self::connection::{Accepted, serve_connection};
use self::slots::Slots;
use super::rest::{Mgmt, Origin};
pub use slots::MAX_CONNECTIONS;

/// How long the accept thread waits for a connection before it looks at `shutdown` again.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Where the server listens.
pub enum MgmtListener {
    Unix(UnixListener),
    /// TCP; HTTPS with this configuration, or plain HTTP when `None` (`--mgmt-tls off`).
    Tcp(TcpListener, Option<Arc<rustls::ServerConfig>>),
}

impl MgmtListener {
    fn origin(&self) -> Origin {
        match self {
            MgmtListener::Unix(_) => Origin::Local,
            MgmtListener::Tcp(..) => Origin::Network,
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            MgmtListener::Unix(listener) => listener.set_nonblocking(true),
            MgmtListener::Tcp(listener, _) => listener.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Accepted> {
        match self {
            MgmtListener::Unix(listener) => listener.accept().map(|(s, _)| Accepted::Unix(s)),
            MgmtListener::Tcp(listener, tls) => listener.accept().map(|(s, peer)| Accepted::Tcp {
                stream: s,
                peer: peer.ip(),
                tls: tls.clone(),
            }),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            MgmtListener::Unix(listener) => listener.as_raw_fd(),
            MgmtListener::Tcp(listener, _) => listener.as_raw_fd(),
        }
    }
}

/// Serves the REST API on `listener` until `shutdown` is set, then waits for the open
/// connections to close (they notice `shutdown` within [`READ_POLL`]) and returns.
pub fn spawn_server(
    listener: MgmtListener,
    mgmt: Arc<Mgmt>,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("mgmt-accept".into())
        .spawn(move || accept_loop(listener, mgmt, shutdown))
        .expect("the management server needs a thread; the process is out of threads")
}

fn accept_loop(listener: MgmtListener, mgmt: Arc<Mgmt>, shutdown: Arc<AtomicBool>) {
    let origin = listener.origin();
    if let Err(error) = listener.set_nonblocking() {
        crate::say!("troika: management socket: cannot make it non-blocking: {error}");
        return;
    }
    let slots = Slots::new();
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.load(Ordering::Acquire) {
        match listener.accept() {
            Ok(accepted) => {
                connections.retain(|connection| !connection.is_finished());
                let closer = match accepted.closer() {
                    Ok(closer) => closer,
                    Err(error) => {
                        crate::say!("troika: management socket: cannot use a connection: {error}");
                        continue;
                    }
                };
                let authenticated = origin == Origin::Local;
                let Some(slot) = slots.admit(accepted.peer(), authenticated, closer) else {
                    accepted.refuse("too many management connections are busy; retry shortly");
                    continue;
                };
                let mgmt = Arc::clone(&mgmt);
                let shutdown = Arc::clone(&shutdown);
                // The closure owns the stream; if the spawn fails, the stream is dropped
                // (closed) with it, which the client sees as a reset connection.
                match thread::Builder::new()
                    .name("mgmt-conn".into())
                    .spawn(move || serve_connection(accepted, &mgmt, origin, &shutdown, &slot))
                {
                    Ok(connection) => connections.push(connection),
                    Err(error) => {
                        crate::say!("troika: management socket: cannot start a thread: {error}")
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // Errors are left for the following `accept` to report.
                crate::poll::wait_readable(listener.raw_fd(), ACCEPT_POLL);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // E.g. out of file descriptors: wait rather than spin.
                crate::say!("troika: management socket: accept failed: {error}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
    for connection in connections {
        // A connection thread only ends by returning; a panic there was already reported.
        let _ = connection.join();
    }
}
