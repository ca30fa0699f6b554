//! Socket plumbing for one iSCSI connection: a buffered PDU reader that notices stop flags
//! and an optional deadline while it waits, and a whole-buffer writer.
//!
//! Sockets get short timeouts ([`POLL_INTERVAL`]) so a thread blocked on a silent peer
//! wakes, checks the flags and either keeps waiting or gives up: that is how a closing
//! portal drops every connection within ~100 ms, and how a login that stalls times out.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::pdu::{self, Pdu, PduError, PduLimits};

/// How long a blocked read or write waits before rechecking the stop flags.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
const READ_BUFFER: usize = 64 * 1024;

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// End of stream, I/O error, stop flag or deadline.
    Closed,
    /// The PDU is unacceptable (see [`PduError`]); the header is in the PDU passed in.
    Pdu(PduError),
}

pub fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL_INTERVAL))?;
    stream.set_write_timeout(Some(POLL_INTERVAL))
}

/// Reads PDUs from a socket through a buffer.
pub struct PduReader {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// When set, reading gives up at this instant (login phase).
    pub deadline: Option<Instant>,
    scratch: Vec<u8>,
}

impl PduReader {
    pub fn new(stream: TcpStream) -> Self {
        PduReader {
            stream,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            deadline: None,
            scratch: Vec::new(),
        }
    }

    fn fill(&mut self, out: &mut [u8], stop: &[&AtomicBool]) -> Result<(), ReadError> {
        let mut done = 0;
        while done < out.len() {
            if self.start < self.end {
                let n = (self.end - self.start).min(out.len() - done);
                out[done..done + n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                done += n;
                continue;
            }
            if stop.iter().any(|flag| flag.load(Ordering::Acquire)) {
                return Err(ReadError::Closed);
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ReadError::Closed);
            }
            self.start = 0;
            self.end = 0;
            // Large remainders go straight into the caller's buffer.
            let want = out.len() - done;
            let result = if want >= self.buf.len() {
                self.stream.read(&mut out[done..])
            } else {
                self.stream.read(&mut self.buf)
            };
            match result {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) if want >= self.buf.len() => done += n,
                Ok(n) => self.end = n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(ReadError::Closed),
            }
        }
        Ok(())
    }

    /// Reads one PDU into `pdu` (its buffers reused). On `Pdu(DataDigest)` the PDU was
    /// consumed whole and the stream is still in step; on other PDU errors it is not.
    pub fn read_pdu(
        &mut self,
        pdu: &mut Pdu,
        limits: &PduLimits,
        stop: &[&AtomicBool],
    ) -> Result<(), ReadError> {
        self.fill(&mut pdu.bhs, stop)?;
        let lens = pdu::lengths(&pdu.bhs, limits).map_err(ReadError::Pdu)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(lens.header_rest(limits), 0);
        let result = self
            .fill(&mut scratch, stop)
            .and_then(|()| pdu::check_header(&pdu.bhs, &scratch, limits).map_err(ReadError::Pdu));
        if result.is_ok() {
            pdu.ahs.clear();
            pdu.ahs.extend_from_slice(&scratch[..lens.ahs]);
        }
        self.scratch = scratch;
        result?;
        let rest = lens.data_rest(limits);
        pdu.data.clear();
        pdu.data.resize(rest, 0);
        let mut data = std::mem::take(&mut pdu.data);
        let result = self.fill(&mut data, stop);
        let checked = result.and_then(|()| pdu::check_data(&data, limits).map_err(ReadError::Pdu));
        data.truncate(lens.data);
        pdu.data = data;
        checked
    }
}

/// Writes `bytes` whole, retrying through the poll timeouts until `stop` is set.
pub fn write_all(stream: &TcpStream, mut bytes: &[u8], stop: &[&AtomicBool]) -> io::Result<()> {
    let mut writer = stream;
    let mut stalled_since: Option<Instant> = None;
    while !bytes.is_empty() {
        match writer.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                stalled_since = None;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.iter().any(|flag| flag.load(Ordering::Acquire)) {
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                // A peer that reads nothing for a minute is gone.
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn shutdown(stream: &TcpStream) {
    // The peer may already be gone; nothing to do about a failure.
    let _ = stream.shutdown(Shutdown::Both);
}
