//! The management server: accepts connections on the node's unix socket and serves the
//! REST API, one thread per connection.
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

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::api::{Management, MgmtError};
use super::http::{ReadOutcome, Request, RequestReader, Response};
use super::rest;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long the accept thread waits for a connection before it looks at `shutdown` again.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Read timeout of a connection: how often it looks for `shutdown` while waiting.
const READ_POLL: Duration = Duration::from_millis(50);
/// A client that does not take its response within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the REST API on `listener` until `shutdown` is set, then waits for the open
/// connections to close (they notice `shutdown` within [`READ_POLL`]) and returns.
pub fn spawn_server(
    listener: UnixListener,
    api: Arc<dyn Management>,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("mgmt-accept".into())
        .spawn(move || accept_loop(listener, api, shutdown))
        .expect("the management server needs a thread; the process is out of threads")
}

fn accept_loop(listener: UnixListener, api: Arc<dyn Management>, shutdown: Arc<AtomicBool>) {
    if let Err(error) = listener.set_nonblocking(true) {
        eprintln!("troika: management socket: cannot make it non-blocking: {error}");
        return;
    }
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                connections.retain(|connection| !connection.is_finished());
                if connections.len() >= MAX_CONNECTIONS {
                    refuse(
                        stream,
                        "too many management connections are open; retry shortly",
                    );
                    continue;
                }
                let api = Arc::clone(&api);
                let shutdown = Arc::clone(&shutdown);
                // The closure owns the stream; if the spawn fails, the stream is dropped
                // (closed) with it, which the client sees as a reset connection.
                match thread::Builder::new()
                    .name("mgmt-conn".into())
                    .spawn(move || serve_connection(stream, api.as_ref(), &shutdown))
                {
                    Ok(connection) => connections.push(connection),
                    Err(error) => {
                        eprintln!("troika: management socket: cannot start a thread: {error}")
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                wait_for_connection(&listener, ACCEPT_POLL)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // E.g. out of file descriptors: wait rather than spin.
                eprintln!("troika: management socket: accept failed: {error}");
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
fn wait_for_connection(listener: &UnixListener, timeout: Duration) {
    let mut ready = libc::pollfd {
        fd: listener.as_raw_fd(),
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
fn refuse(mut stream: UnixStream, message: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(ACCEPT_POLL));
    let error = MgmtError::new("SERVICE_UNAVAILABLE", 503, message);
    let _ = rest::error_response(&error).write_to(&mut stream, false);
}

fn serve_connection(mut stream: UnixStream, api: &dyn Management, shutdown: &AtomicBool) {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux, but make sure.
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(READ_POLL)).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut reader = RequestReader::new();
    let stop = || shutdown.load(Ordering::Acquire);
    loop {
        match reader.next_request(&mut stream, &stop) {
            ReadOutcome::Request(request) => {
                let response = answer(api, &request);
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

fn answer(api: &dyn Management, request: &Request) -> Response {
    catch_unwind(AssertUnwindSafe(|| rest::handle(api, request))).unwrap_or_else(|_| {
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
