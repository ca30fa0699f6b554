//! One TLS connection shared by a connection's reader and writers.
//!
//! OpenSSL's `SSL` object must never be used by two threads at once, yet transmission
//! reads requests on one worker while others write replies. So the socket is made
//! non-blocking, the `SslStream` sits behind a mutex that is held for exactly one
//! `SSL_read`, `SSL_write` or handshake step, and a thread that OpenSSL tells to wait
//! (`WANT_READ` / `WANT_WRITE`) waits in poll(2) *outside* the lock, for at most
//! [`POLL_INTERVAL`] so that stop flags are rechecked as on plain sockets.
//!
//! Writes run in partial-write mode (each `SSL_write` returns after a record) with a
//! moving write buffer allowed; a reply made of a small header and its data is coalesced
//! into one record-sized scratch buffer (kept per connection) so that a 4 KiB read reply
//! is one record and one system call, not two. Nothing is allocated per request.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use foreign_types::ForeignTypeRef;
use openssl::ssl::{ErrorCode, SslStream};

// cycle: `Stream` is the plain-or-TLS socket; the TLS half lives here by size and reads
// with the same poll interval.
use super::stream::{POLL_INTERVAL, Stream};
use super::tls::TlsServer;
use crate::poll::Interest;

// libssl 3 has it (since 1.1.0); the openssl-sys crate does not declare it.
unsafe extern "C" {
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> libc::c_int;
}

/// Largest TLS record payload: replies are coalesced up to this size.
const RECORD: usize = 16 * 1024;

/// The plain socket under TLS, as OpenSSL's byte transport.
struct Transport(Stream);

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_some(buf)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_some(&[IoSlice::new(buf)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Inner {
    ssl: SslStream<Transport>,
    /// Where small reply pieces are gathered into one record.
    scratch: Vec<u8>,
}

/// A TLS session over a TCP or unix socket, usable from several threads.
pub(super) struct TlsStream {
    fd: RawFd,
    inner: Mutex<Inner>,
    identity: Option<String>,
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub(super) enum AcceptError {
    /// Shutdown or the deadline came first.
    Stopped,
    /// The peer left or the handshake failed (bad key, untrusted certificate, ...).
    Failed(String),
}

impl TlsStream {
    /// Runs the server side of the TLS handshake on `stream` (the STARTTLS ACK has been
    /// sent). Gives up when a stop flag is set or `deadline` passes.
    pub(super) fn accept(
        stream: Stream,
        server: &TlsServer,
        stop_flags: [&AtomicBool; 2],
        deadline: Instant,
    ) -> Result<TlsStream, AcceptError> {
        let fd = stream.raw_fd();
        stream.set_nonblocking().map_err(|err| {
            AcceptError::Failed(format!("cannot make the socket non-blocking: {err}"))
        })?;
        let ssl = server
            .new_ssl()
            .map_err(|err| AcceptError::Failed(format!("cannot start TLS: {err}")))?;
        let mut tls = SslStream::new(ssl, Transport(stream))
            .map_err(|err| AcceptError::Failed(format!("cannot start TLS: {err}")))?;
        loop {
            let err = match tls.accept() {
                Ok(()) => break,
                Err(err) => err,
            };
            let interest = match err.code() {
                ErrorCode::WANT_READ => Interest::Readable,
                ErrorCode::WANT_WRITE => Interest::Writable,
                _ => return Err(AcceptError::Failed(err.to_string())),
            };
            if stop_flags.iter().any(|f| f.load(Ordering::Acquire)) || Instant::now() >= deadline {
                return Err(AcceptError::Stopped);
            }
            crate::poll::wait(fd, interest, POLL_INTERVAL);
        }
        let identity = TlsServer::identity(tls.ssl());
        Ok(TlsStream {
            fd,
            inner: Mutex::new(Inner {
                ssl: tls,
                scratch: Vec::with_capacity(RECORD),
            }),
            identity,
        })
    }

    /// What the handshake proved about the client.
    pub(super) fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves OpenSSL's state unknown; the connection
        // then ends at its next error, which is all that is needed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes of another record wait inside OpenSSL, decrypted or read ahead (the socket
    /// may be empty). A hint only: a busy session answers false.
    pub(super) fn has_buffered(&self) -> bool {
        match self.inner.try_lock() {
            // SAFETY: the pointer is the live SSL object owned by `inner`, which we hold
            // locked, so no other thread uses it; SSL_has_pending only reads its buffers.
            Ok(inner) => unsafe { SSL_has_pending(inner.ssl.ssl().as_ptr()) == 1 },
            Err(_) => false,
        }
    }

    /// Reads decrypted bytes; `WouldBlock` after [`POLL_INTERVAL`] without any, `Ok(0)`
    /// at the end of the stream.
    pub(super) fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = self.lock().ssl.ssl_read(buf);
            let err = match result {
                Ok(n) => return Ok(n),
                Err(err) => err,
            };
            match err.code() {
                ErrorCode::ZERO_RETURN => return Ok(0),
                // The peer closed the socket without close_notify.
                ErrorCode::SYSCALL if err.io_error().is_none() => return Ok(0),
                code => self.wait_or_fail(code, err)?,
            }
        }
    }

    /// Encrypts and sends a prefix of `bufs`; returns how many bytes of it were sent.
    pub(super) fn write_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let result = {
                let mut guard = self.lock();
                let Inner { ssl, scratch } = &mut *guard;
                match bufs {
                    [] => return Ok(0),
                    [first, _, ..] if first.len() < RECORD => {
                        scratch.clear();
                        for buf in bufs {
                            let room = RECORD - scratch.len();
                            scratch.extend_from_slice(&buf[..buf.len().min(room)]);
                            if scratch.len() == RECORD {
                                break;
                            }
                        }
                        ssl.ssl_write(scratch)
                    }
                    [first, ..] => ssl.ssl_write(&first[..first.len().min(1 << 30)]),
                }
            };
            match result {
                Ok(n) => return Ok(n),
                Err(err) => self.wait_or_fail(err.code(), err)?,
            }
        }
    }

    /// After a failed OpenSSL call: waits (outside the lock) for what it wants, or turns the
    /// failure into an I/O error. A wait that runs out is `WouldBlock`.
    fn wait_or_fail(&self, code: ErrorCode, err: openssl::ssl::Error) -> io::Result<()> {
        let interest = match code {
            ErrorCode::WANT_READ => Interest::Readable,
            ErrorCode::WANT_WRITE => Interest::Writable,
            _ => {
                return Err(match err.into_io_error() {
                    Ok(io) => io,
                    Err(err) => io::Error::other(err.to_string()),
                });
            }
        };
        // An error or hang-up settles the wait too: the next call reports it.
        if crate::poll::wait(self.fd, interest, POLL_INTERVAL).is_settled() {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Sends close_notify if nobody holds the session (best effort, never waits).
    pub(super) fn close_notify(&self) {
        if let Ok(mut inner) = self.inner.try_lock() {
            // The peer may be gone; a failed alert changes nothing.
            let _ = inner.ssl.shutdown();
        }
    }
}
