//! The management server: accepts connections on the node's unix socket or a TCP port and
//! serves the REST API, one thread per connection. The unix socket's callers are local
//! administrators; TCP callers must authenticate (see [`super::rest::auth`]).
//!
//! The accept thread owns the listener and the list of connection threads. It waits for
//! connections with `poll(2)` for at most [`ACCEPT_POLL`] at a time, so it accepts at once
//! and still notices `shutdown` quickly; at most
//! [`MAX_CONNECTIONS`] connections are served at once and any more are answered 503 and
//! closed. Connection threads read with a short timeout, so they too notice `shutdown`,
//! and close idle connections (see [`super::http`] for the limits). On shutdown the accept
//! thread stops accepting, waits for the connection threads and returns.
//!
//! A panic inside the [`Management`] implementation is caught and answered with a 500, so
//! one bad call costs one request, not the connection count or the server.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::api::MgmtError;
use super::http::{ReadOutcome, Request, RequestReader, Response};
use super::rest::{self, Mgmt, Origin};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long the accept thread waits for a connection before it looks at `shutdown` again.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Read timeout of a connection: how often it looks for `shutdown` while waiting.
const READ_POLL: Duration = Duration::from_millis(50);
/// A client that does not take its response within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server listens.
pub enum MgmtListener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl MgmtListener {
    fn origin(&self) -> Origin {
        match self {
            MgmtListener::Unix(_) => Origin::Local,
            MgmtListener::Tcp(_) => Origin::Network,
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            MgmtListener::Unix(listener) => listener.set_nonblocking(true),
            MgmtListener::Tcp(listener) => listener.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            MgmtListener::Unix(listener) => listener.accept().map(|(s, _)| Stream::Unix(s)),
            MgmtListener::Tcp(listener) => listener.accept().map(|(s, _)| Stream::Tcp(s)),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            MgmtListener::Unix(listener) => listener.as_raw_fd(),
            MgmtListener::Tcp(listener) => listener.as_raw_fd(),
        }
    }
}

/// One accepted connection.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn configure(&self) -> io::Result<()> {
        match self {
            Stream::Unix(stream) => {
                // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux, but
                // make sure.
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(READ_POLL))?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))
            }
            Stream::Tcp(stream) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(READ_POLL))?;
                stream.set_write_timeout(Some(WRITE_TIMEOUT))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(stream) => stream.read(buf),
            Stream::Tcp(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(stream) => stream.write(buf),
            Stream::Tcp(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(stream) => stream.flush(),
            Stream::Tcp(stream) => stream.flush(),
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
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.load(Ordering::Acquire) {
        match listener.accept() {
            Ok(stream) => {
                connections.retain(|connection| !connection.is_finished());
                if connections.len() >= MAX_CONNECTIONS {
                    refuse(
                        stream,
                        "too many management connections are open; retry shortly",
                    );
                    continue;
                }
                let mgmt = Arc::clone(&mgmt);
                let shutdown = Arc::clone(&shutdown);
                // The closure owns the stream; if the spawn fails, the stream is dropped
                // (closed) with it, which the client sees as a reset connection.
                match thread::Builder::new()
                    .name("mgmt-conn".into())
                    .spawn(move || serve_connection(stream, &mgmt, origin, &shutdown))
                {
                    Ok(connection) => connections.push(connection),
                    Err(error) => {
                        crate::say!("troika: management socket: cannot start a thread: {error}")
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                wait_for_connection(&listener, ACCEPT_POLL)
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

/// Waits until `listener` has a connection to accept, or `timeout` passes. Errors are left
/// for the following `accept` to report.
fn wait_for_connection(listener: &MgmtListener, timeout: Duration) {
    let mut ready = libc::pollfd {
        fd: listener.raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `ready` is one initialized pollfd that outlives the call, matching the count
    // of 1, and its fd stays open because `listener` is borrowed for the call.
    unsafe {
        libc::poll(&mut ready, 1, timeout_ms);
    }
}

/// Answers 503 and closes; the response is small enough to fit the socket buffer.
fn refuse(mut stream: Stream, message: &str) {
    let _ = stream.configure();
    let error = MgmtError::new("SERVICE_UNAVAILABLE", 503, message);
    let _ = rest::error_response(&error).write_to(&mut stream, false);
}

/// Management threads run only when the CPU would otherwise idle (`SCHED_IDLE`), or at
/// nice 19 where that policy is refused, so a client hammering the API takes CPU the data
/// path does not want. Best effort: a failure leaves the thread at normal priority.
fn yield_to_the_data_path() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: gettid has no arguments and cannot fail. sched_setscheduler and setpriority
    // on our own thread id change only this thread's scheduling; `param` is a valid
    // sched_param that outlives the call.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        if libc::sched_setscheduler(thread, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, 19);
        }
    }
}

fn serve_connection(mut stream: Stream, mgmt: &Mgmt, origin: Origin, shutdown: &AtomicBool) {
    yield_to_the_data_path();
    if stream.configure().is_err() {
        return;
    }
    let mut reader = RequestReader::new();
    let stop = || shutdown.load(Ordering::Acquire);
    loop {
        match reader.next_request(&mut stream, &stop) {
            ReadOutcome::Request(request) => {
                let response = answer(mgmt, &request, origin);
                let keep_alive = request.keep_alive && !stop();
                if response.write_to(&mut stream, keep_alive).is_err() || !keep_alive {
                    return;
                }
            }
            ReadOutcome::Closed => return,
            ReadOutcome::Refused(error) => {
                let _ = rest::http_error_response(&error).write_to(&mut stream, false);
                return;
            }
        }
    }
}

fn answer(mgmt: &Mgmt, request: &Request, origin: Origin) -> Response {
    catch_unwind(AssertUnwindSafe(|| rest::handle(mgmt, request, origin))).unwrap_or_else(|_| {
        rest::error_response(&MgmtError::new(
            "INTERNAL_ERROR",
            500,
            format!(
                "the node failed while answering {} {}; see its log",
                request.method,
                request.path()
            ),
        ))
    })
}
