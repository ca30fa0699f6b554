//! The accept loop: one thread per listener, one thread (plus workers) per connection.
//!
//! The listener is non-blocking and polled with a short timeout, so shutdown is noticed
//! within [`ACCEPT_POLL`]. On shutdown the loop stops accepting and joins every
//! connection thread; those notice the flag themselves (see `stream`), finish what they
//! hold and close.
//!
//! A unix-socket peer is checked (SO_PEERCRED, see [`super::access`]) on the accept
//! thread, before a connection thread exists or any NBD byte is sent; a refused peer is
//! closed at once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::access::{RefusalLog, peer_credentials};
use super::handshake::{self, Outcome, Phase, Session};
use super::stream::{FrameReader, Stream};
use super::tls::{NbdConnection, NbdPeer};
use super::tls_stream::{AcceptError, TlsStream};
use super::transmission::Connection;
use super::{NbdConfig, NbdListener};
use crate::target::ExportProvider;

/// How long one wait for a new connection lasts before rechecking shutdown.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Connections served at once; more are closed on accept (each costs several threads).
const MAX_CONNECTIONS: usize = 1024;

pub(super) fn spawn(
    listener: NbdListener,
    provider: Arc<dyn ExportProvider>,
    config: NbdConfig,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("nbd-accept".to_owned())
        .spawn(move || accept_loop(listener, provider, Arc::new(config), shutdown))
        .expect("cannot start the NBD accept thread")
}

impl NbdListener {
    fn raw_fd(&self) -> RawFd {
        match self {
            NbdListener::Tcp(l) => l.as_raw_fd(),
            NbdListener::Unix(l) => l.as_raw_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            NbdListener::Tcp(l) => l.set_nonblocking(true),
            NbdListener::Unix(l) => l.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            NbdListener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            NbdListener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

fn accept_loop(
    listener: NbdListener,
    provider: Arc<dyn ExportProvider>,
    config: Arc<NbdConfig>,
    shutdown: Arc<AtomicBool>,
) {
    if let Err(err) = listener.set_nonblocking() {
        crate::say!("nbd: cannot make the listener non-blocking: {err}");
        return;
    }
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let refusals = RefusalLog::default();
    while !shutdown.load(Ordering::Acquire) {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                crate::poll::wait_readable(listener.raw_fd(), ACCEPT_POLL);
                continue;
            }
            Err(_) => {
                // Out of descriptors or a similar transient failure: back off.
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let peer = match admit(&stream, &config) {
            Ok(peer) => peer,
            Err(refused) => {
                refusals.refused(&refused);
                stream.shutdown();
                continue;
            }
        };
        connections.retain(|handle| !handle.is_finished());
        if connections.len() >= MAX_CONNECTIONS {
            stream.shutdown();
            continue;
        }
        let provider = Arc::clone(&provider);
        let config = Arc::clone(&config);
        let shutdown = Arc::clone(&shutdown);
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".to_owned())
            .spawn(move || serve_connection(stream, peer, &*provider, &config, &shutdown));
        if let Ok(handle) = spawned {
            connections.push(handle);
        }
    }
    for handle in connections {
        // A panicking connection thread has already closed its socket; nothing to add.
        let _ = handle.join();
    }
}

/// Where a freshly accepted connection came from. A unix-socket peer is admitted only
/// when the configuration allows its uid (SO_PEERCRED); a refused one is described for
/// the log.
fn admit(stream: &Stream, config: &NbdConfig) -> Result<NbdPeer, String> {
    let Stream::Unix(unix) = stream else {
        return stream
            .tcp_peer()
            .ok_or_else(|| "a connection of an unexpected kind".to_owned());
    };
    match peer_credentials(unix) {
        Ok((_, uid)) if config.access.admits_uid(uid) => Ok(NbdPeer::Unix { uid }),
        Ok((pid, uid)) => Err(format!("uid {uid} (pid {pid})")),
        Err(err) => Err(format!("a peer whose credentials cannot be read ({err})")),
    }
}

fn serve_connection(
    stream: Stream,
    peer: NbdPeer,
    provider: &dyn ExportProvider,
    config: &NbdConfig,
    shutdown: &AtomicBool,
) {
    if stream.configure().is_err() {
        return;
    }
    let stop = AtomicBool::new(false);
    let mut connection = NbdConnection {
        peer,
        tls: false,
        tls_identity: None,
    };
    let started = Instant::now();
    let no_zeroes = haggle_and_serve(
        &stream,
        provider,
        config,
        [shutdown, &stop],
        &connection,
        Phase::Fresh,
    );
    let Some(no_zeroes) = no_zeroes else {
        stream.shutdown();
        return;
    };
    let Some(server) = config.tls.offered() else {
        stream.shutdown();
        return;
    };
    let deadline = started + handshake::HANDSHAKE_DEADLINE;
    let tls = match TlsStream::accept(stream, server, [shutdown, &stop], deadline) {
        Ok(tls) => tls,
        Err(AcceptError::Stopped) => return,
        Err(AcceptError::Failed(reason)) => {
            // Worth a line, unlike a plain failed handshake: a client that got this far
            // meant to connect and its operator needs to know why it could not.
            crate::say!("nbd: TLS handshake with {connection} failed: {reason}");
            return;
        }
    };
    connection.tls = true;
    connection.tls_identity = tls.identity().map(str::to_owned);
    let stream = Stream::Tls(Box::new(tls));
    // A second STARTTLS is refused while haggling, so this never asks for TLS again.
    haggle_and_serve(
        &stream,
        provider,
        config,
        [shutdown, &stop],
        &connection,
        Phase::AfterTls { no_zeroes },
    );
    stream.shutdown();
}

/// Haggles on `stream` in `phase` and serves the session that ends it. Returns the
/// client's no-zeroes flag when haggling ended in STARTTLS with nothing buffered after it
/// (bytes between our ACK and the client's TLS hello are a protocol violation).
fn haggle_and_serve(
    stream: &Stream,
    provider: &dyn ExportProvider,
    config: &NbdConfig,
    [shutdown, stop]: [&AtomicBool; 2],
    connection: &NbdConnection,
    phase: Phase,
) -> Option<bool> {
    let mut reader = FrameReader::new(stream, [shutdown, stop]);
    match handshake::negotiate(
        stream,
        &mut reader,
        provider,
        config,
        shutdown,
        connection,
        phase,
    ) {
        // Failed handshakes are not logged: a port scanner would flood the log.
        Outcome::Closed => None,
        Outcome::Transmission(session) => {
            transmit(stream, session, reader, config, shutdown, stop);
            None
        }
        Outcome::StartTls { no_zeroes } => (!reader.has_buffered()).then_some(no_zeroes),
    }
}

fn transmit<'a>(
    stream: &'a Stream,
    session: Session,
    reader: FrameReader<'a>,
    config: &'a NbdConfig,
    shutdown: &'a AtomicBool,
    stop: &'a AtomicBool,
) {
    let export = session.target.name().to_owned();
    let client = session.connection.clone();
    let connection = Connection::new(stream, session, reader, config, shutdown, stop);
    connection.serve(config.workers_per_connection);
    crate::say!("nbd: {client} closed its session on {export}");
}
