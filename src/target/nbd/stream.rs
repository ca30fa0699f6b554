//! Socket plumbing for one NBD connection: a TCP or unix stream (or a TLS session over
//! one, see `tls_stream`), a buffered reader that notices shutdown while it waits, and a
//! vectored write that sends a whole reply.
//!
//! Sockets get short read and write timeouts ([`POLL_INTERVAL`]) so that a thread blocked
//! on a silent or stalled peer wakes up, checks the stop flags and either keeps waiting or
//! gives up; that is how shutdown reaches every connection thread within ~100 ms.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::tls::NbdPeer;
use super::tls_stream::TlsStream;
use crate::poll::Readiness;

/// How long a blocked read or write waits before rechecking the stop flags.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes the reader buffers from the socket, so that small pipelined requests cost one
/// system call for many headers.
const READ_BUFFER: usize = 64 * 1024;

/// A connected client socket.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// After STARTTLS: the session over the (now non-blocking) socket.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Prepares an accepted socket: blocking with poll timeouts, and no Nagle delay.
    pub(super) fn configure(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(POLL_INTERVAL))?;
                s.set_write_timeout(Some(POLL_INTERVAL))
            }
            Stream::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(POLL_INTERVAL))?;
                s.set_write_timeout(Some(POLL_INTERVAL))
            }
            // Configured when it was a plain socket.
            Stream::Tls(_) => Ok(()),
        }
    }

    /// Makes the socket non-blocking (for TLS, which waits in poll(2) itself).
    pub(super) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Tls(_) => Ok(()),
        }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.raw_fd(),
        }
    }

    /// Where a TCP connection came from (the unspecified address if the kernel no longer
    /// knows); `None` for the other kinds of stream.
    pub(super) fn tcp_peer(&self) -> Option<NbdPeer> {
        match self {
            Stream::Tcp(s) => Some(NbdPeer::Tcp {
                addr: s
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            }),
            Stream::Unix(_) | Stream::Tls(_) => None,
        }
    }

    pub(super) fn shutdown(&self) {
        // The peer may already be gone; there is nothing to do about a failure here.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tls(s) => {
                s.close_notify();
                // SAFETY: the descriptor belongs to the socket owned by `s`, which is alive
                // for this call; shutdown(2) neither closes nor frees it.
                match unsafe { libc::shutdown(s.raw_fd(), libc::SHUT_RDWR) } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                }
            }
        };
    }

    /// True when bytes can be read right now without blocking.
    fn readable_now(&self) -> bool {
        if let Stream::Tls(s) = self
            && s.has_buffered()
        {
            return true;
        }
        crate::poll::wait_readable(self.raw_fd(), Duration::ZERO) == Readiness::Ready
    }

    pub(super) fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tls(s) => s.read_some(buf),
        }
    }

    pub(super) fn write_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
            Stream::Tls(s) => s.write_some(bufs),
        }
    }
}

/// Why a read ended without the bytes asked for.
#[derive(Debug)]
pub(super) enum ReadEnd {
    /// The peer closed the connection.
    Closed,
    /// Shutdown, a stop request or the deadline was noticed while waiting.
    Stopped,
    /// The socket failed.
    Failed,
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Buffered reader over a [`Stream`] that gives up when asked to stop.
pub(super) struct FrameReader<'a> {
    stream: &'a Stream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    stop_flags: [&'a AtomicBool; 2],
    deadline: Option<Instant>,
}

impl<'a> FrameReader<'a> {
    /// `stop_flags`: reading stops when either is set (server shutdown, connection stop).
    pub(super) fn new(stream: &'a Stream, stop_flags: [&'a AtomicBool; 2]) -> Self {
        FrameReader {
            stream,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            stop_flags,
            deadline: None,
        }
    }

    /// Reads stop with [`ReadEnd::Stopped`] once `deadline` has passed (`None`: never).
    pub(super) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn should_stop(&self) -> bool {
        self.stop_flags.iter().any(|f| f.load(Ordering::Acquire))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// True when a stop flag is set and nothing is buffered: the point between frames where
    /// a connection may end without cutting a request in half.
    /// True when another request has (at least partly) arrived: buffered or readable.
    pub(super) fn has_pending(&self) -> bool {
        self.start < self.end || self.stream.readable_now()
    }

    /// True when bytes read from the socket wait in the buffer.
    pub(super) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.start == self.end && self.should_stop()
    }

    /// Reads from the socket into `dst`, waiting out poll timeouts until data, EOF or stop.
    fn fill(&self, dst: &mut [u8]) -> Result<usize, ReadEnd> {
        loop {
            match self.stream.read_some(dst) {
                Ok(0) => return Err(ReadEnd::Closed),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if self.should_stop() {
                        return Err(ReadEnd::Stopped);
                    }
                }
                Err(_) => return Err(ReadEnd::Failed),
            }
        }
    }

    /// Fills `out` completely.
    pub(super) fn read_exact(&mut self, out: &mut [u8]) -> Result<(), ReadEnd> {
        let mut done = 0;
        while done < out.len() {
            if self.start < self.end {
                let n = (self.end - self.start).min(out.len() - done);
                out[done..done + n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                done += n;
            } else if out.len() - done >= self.buf.len() {
                // Large payloads go straight into the caller's buffer.
                done += self.fill(&mut out[done..])?;
            } else {
                let mut buf = std::mem::take(&mut self.buf);
                let filled = self.fill(&mut buf);
                self.buf = buf;
                self.start = 0;
                self.end = filled?;
            }
        }
        Ok(())
    }

    /// Reads and drops `len` bytes, using the internal buffer only.
    pub(super) fn discard(&mut self, mut len: u64) -> Result<(), ReadEnd> {
        while len > 0 {
            if self.start == self.end {
                let mut buf = std::mem::take(&mut self.buf);
                let filled = self.fill(&mut buf);
                self.buf = buf;
                self.start = 0;
                self.end = filled?;
            }
            let n = ((self.end - self.start) as u64).min(len);
            self.start += n as usize;
            len -= n;
        }
        Ok(())
    }
}

/// Writes every byte of `bufs`, retrying short writes. A write stalled on a peer that does
/// not read gives up once `stop` is set.
pub(super) fn write_all(stream: &Stream, bufs: &[&[u8]], stop: &AtomicBool) -> io::Result<()> {
    let mut slices: [IoSlice<'_>; 3] = [IoSlice::new(&[]), IoSlice::new(&[]), IoSlice::new(&[])];
    if bufs.len() > slices.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many reply pieces",
        ));
    }
    for (slice, buf) in slices.iter_mut().zip(bufs) {
        *slice = IoSlice::new(buf);
    }
    let mut remaining = &mut slices[..bufs.len()];
    IoSlice::advance_slices(&mut remaining, 0);
    while !remaining.is_empty() {
        match stream.write_some(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut remaining, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::Acquire) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
