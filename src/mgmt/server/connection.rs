//! One management connection: its socket options, the TLS layer on an HTTPS port (or the
//! refusal of plain HTTP there), and the request loop.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::slots::{Closer, SlotGuard};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::{
    FIRST_REQUEST_TIMEOUT, IDLE_TIMEOUT, ReadOutcome, Request, RequestReader, Response,
};
use crate::mgmt::rest::{self, Handled, Mgmt, Origin};

/// Read timeout of a connection: how often it looks for `shutdown` while waiting.
const READ_POLL: Duration = Duration::from_millis(50);
/// A client that does not take its response within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection as accepted, before anything was read from it.
pub enum Accepted {
    Unix(UnixStream),
    Tcp {
        stream: TcpStream,
        peer: IpAddr,
        /// HTTPS with this configuration; plain HTTP when `None`.
        tls: Option<Arc<rustls::ServerConfig>>,
    },
}

impl Accepted {
    pub fn peer(&self) -> Option<IpAddr> {
        match self {
            Accepted::Unix(_) => None,
            Accepted::Tcp { peer, .. } => Some(*peer),
        }
    }

    /// A second handle on the socket, so the slot table can close it.
    pub fn closer(&self) -> io::Result<Closer> {
        Ok(match self {
            Accepted::Unix(stream) => Closer::Unix(stream.try_clone()?),
            Accepted::Tcp { stream, .. } => Closer::Tcp(stream.try_clone()?),
        })
    }

    /// Answers 503 and closes (a TLS port is just closed: the client expects a handshake).
    /// The response is small enough to fit the socket buffer.
    pub fn refuse(self, message: &str) {
        let error = MgmtError::new("SERVICE_UNAVAILABLE", 503, message);
        let response = rest::error_response(&error);
        match self {
            Accepted::Unix(mut stream) => {
                let _ = configure_unix(&stream);
                let _ = response.write_to(&mut stream, false);
            }
            Accepted::Tcp {
                mut stream,
                tls: None,
                ..
            } => {
                let _ = configure_tcp(&stream);
                let _ = response.write_to(&mut stream, false);
            }
            Accepted::Tcp { tls: Some(_), .. } => {}
        }
    }
}

fn configure_unix(stream: &UnixStream) -> io::Result<()> {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux, but make sure.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))
}

fn configure_tcp(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))
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

/// What a connection needs besides its stream.
struct Context<'a> {
    mgmt: &'a Mgmt,
    origin: Origin,
    shutdown: &'a AtomicBool,
    slot: &'a SlotGuard,
    peer: Option<IpAddr>,
}

impl Context<'_> {
    fn stop(&self) -> bool {
        self.shutdown.load(Ordering::Acquire) || self.slot.closing()
    }
}

pub fn serve_connection(
    accepted: Accepted,
    mgmt: &Mgmt,
    origin: Origin,
    shutdown: &AtomicBool,
    slot: &SlotGuard,
) {
    yield_to_the_data_path();
    let context = Context {
        mgmt,
        origin,
        shutdown,
        slot,
        peer: accepted.peer(),
    };
    match accepted {
        Accepted::Unix(mut stream) => {
            slot.spoke();
            if configure_unix(&stream).is_ok() {
                serve_requests(&mut stream, &context);
            }
        }
        Accepted::Tcp {
            mut stream,
            tls: None,
            ..
        } => {
            if configure_tcp(&stream).is_ok()
                && !matches!(first_byte(&stream, &context), FirstByte::Nothing)
            {
                serve_requests(&mut stream, &context);
            }
        }
        Accepted::Tcp {
            stream,
            tls: Some(config),
            ..
        } => {
            if configure_tcp(&stream).is_ok() {
                serve_tls(stream, config, &context);
            }
        }
    }
}

/// What the first byte of a TCP connection says (it is left unread).
enum FirstByte {
    Tls,
    PlainHttp,
    Nothing,
}

fn first_byte(stream: &TcpStream, context: &Context) -> FirstByte {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    while started.elapsed() < FIRST_REQUEST_TIMEOUT && !context.stop() {
        match stream.peek(&mut byte) {
            Ok(0) => return FirstByte::Nothing,
            Ok(_) => {
                context.slot.spoke();
                return if byte[0] == TLS_HANDSHAKE_RECORD {
                    FirstByte::Tls
                } else {
                    FirstByte::PlainHttp
                };
            }
            Err(error) if crate::mgmt::http::only_waited(&error) => {}
            Err(_) => return FirstByte::Nothing,
        }
    }
    FirstByte::Nothing
}

fn serve_tls(mut stream: TcpStream, config: Arc<rustls::ServerConfig>, context: &Context) {
    match first_byte(&stream, context) {
        FirstByte::Tls => {}
        FirstByte::PlainHttp => return refuse_plain_http(&mut stream),
        FirstByte::Nothing => return,
    }
    let Ok(tls) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(tls, stream);
    serve_requests(&mut tls, context);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Plain HTTP on the TLS port: a 400 the client can read, then close.
fn refuse_plain_http(stream: &mut TcpStream) {
    // Take what the client sent so far, so closing does not reset the connection before
    // it read the answer.
    let mut sink = [0u8; 16 * 1024];
    let _ = stream.read(&mut sink);
    let error = MgmtError::new(
        "TLS_REQUIRED",
        400,
        "this port serves the management API over HTTPS only; connect with https://",
    );
    let _ = rest::error_response(&error).write_to(stream, false);
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

fn serve_requests<S: Read + Write>(stream: &mut S, context: &Context) {
    let mut reader = RequestReader::new();
    let stop = || context.stop();
    // The Authorization value this connection proved, if any.
    let mut proven_authorization: Option<String> = None;
    let mut idle_timeout = FIRST_REQUEST_TIMEOUT;
    loop {
        match reader.next_request(stream, &stop, idle_timeout) {
            ReadOutcome::Request(mut request) => {
                context.slot.set_busy(true);
                request.peer = context.peer;
                request.verified_authorization = request.authorization.is_some()
                    && request.authorization == proven_authorization;
                let handled = answer(context.mgmt, &request, context.origin);
                if handled.authenticated {
                    context.slot.promote();
                }
                context
                    .slot
                    .set_refused(matches!(handled.response.status, 401 | 429));
                if handled.basic_verified {
                    proven_authorization.clone_from(&request.authorization);
                }
                let keep_alive = request.keep_alive && !stop();
                let written = handled.response.write_to(stream, keep_alive);
                context.slot.set_busy(false);
                if written.is_err() || !keep_alive {
                    return;
                }
                idle_timeout = IDLE_TIMEOUT;
            }
            ReadOutcome::Closed => return,
            ReadOutcome::Refused(error) => {
                let _ = rest::http_error_response(&error).write_to(stream, false);
                return;
            }
        }
    }
}

fn answer(mgmt: &Mgmt, request: &Request, origin: Origin) -> Handled {
    catch_unwind(AssertUnwindSafe(|| {
        rest::handle_request(mgmt, request, origin)
    }))
    .unwrap_or_else(|_| Handled {
        response: internal_error(request),
        authenticated: false,
        basic_verified: false,
    })
}

fn internal_error(request: &Request) -> Response {
    rest::error_response(&MgmtError::new(
        "INTERNAL_ERROR",
        500,
        format!(
            "the node failed while answering {} {}; see its log",
            request.method,
            request.path()
        ),
    ))
}
