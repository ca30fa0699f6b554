//! The transmission phase of one connection: several workers share the socket, each
//! reading one request at a time under the read lock, executing it on the export without
//! any lock held, and writing its reply under the write lock. Replies therefore go out in
//! completion order, matched to requests by cookie.
//!
//! Each worker owns its buffers (payload, extents, block-status reply) and keeps them
//! between requests, so steady-state I/O allocates nothing. Payload memory beyond 1 MiB
//! per worker is taken from a process-wide budget for the duration of one request and
//! given back after it, so memory stays bounded however many clients send 32 MiB requests.
//!
//! The connection stops (the `stop` flag) on `NBD_CMD_DISC`, on a stream that cannot be
//! trusted any more (bad magic, truncated frame, oversized payload, I/O error), and at
//! server shutdown once no more requests are buffered. Workers finish the request they
//! hold and exit; the caller closes the socket when all have.

use std::sync::atomic::{AtomicBool, Ordering};

// std's mutex parks on a futex after a short spin; parking_lot's yields the CPU while
// spinning, which under four workers per connection on two cores cost ~15% in
// sched_yield (measured with perf on 4k random reads at queue depth 32).
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::handshake::Session;
use super::proto::{self, Command, Errno, Negotiated, Rejection, Request, RequestError};
use super::stream::{FrameReader, Stream, write_all};
use super::{NbdConfig, nbd_errno};
use crate::target::{ChangedExtent, Extent};

/// Largest write payload above the maximum that we read and drop to keep the stream in
/// sync (fio caps requests here); a larger one closes the connection.
const MAX_DISCARD_PAYLOAD: u32 = 64 * 1024 * 1024;
/// Most descriptors in one block-status reply (the spec's recommended limit).
const MAX_DESCRIPTORS: usize = 1 << 20;
/// Longest error message sent in an error chunk.
const MAX_MESSAGE: usize = proto::MAX_STRING;

/// One connection in transmission phase.
pub(super) struct Connection<'a> {
    stream: &'a Stream,
    session: Session,
    config: &'a NbdConfig,
    shutdown: &'a AtomicBool,
    stop: &'a AtomicBool,
    reader: Mutex<FrameReader<'a>>,
    writer: Mutex<()>,
}

/// What the reader hands a worker.
enum Next {
    Execute(Request),
    Reject {
        cookie: u64,
        rejection: Rejection,
    },
    /// Stop reading: DISC, end of stream, or a stream we cannot trust.
    End,
}

/// Buffers a worker reuses from request to request.
#[derive(Default)]
struct WorkerBuffers {
    payload: Vec<u8>,
    /// Bytes of `payload` beyond [`SMALL_PAYLOAD`], taken from the process-wide budget.
    budget_held: usize,
    extents: Vec<Extent>,
    changed: Vec<ChangedExtent>,
    status: Vec<u8>,
}

impl Drop for WorkerBuffers {
    fn drop(&mut self) {
        self.release_large();
    }
}

/// Largest READ or WRITE a worker serves without handing the reader to another worker
/// when nothing else is waiting. Larger transfers take long enough to send that a request
/// arriving meanwhile should not wait for them (64k mixed I/O at qd16 lost ~20% when all
/// sizes were served this way; 4k writes at qd1 gained 30-50%).
const QUICK_REQUEST_BYTES: u32 = 8 * 1024;

/// Payload bytes every worker may keep between requests.
const SMALL_PAYLOAD: usize = 1 << 20;
/// Payload bytes beyond [`SMALL_PAYLOAD`] that all workers of all connections may hold at
/// once; a worker that needs more waits, so many clients sending maximal requests cannot
/// make the process allocate without bound.
const LARGE_PAYLOAD_BUDGET: usize = 256 << 20;

static LARGE_PAYLOAD_USED: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static LARGE_PAYLOAD_FREED: std::sync::Condvar = std::sync::Condvar::new();

impl WorkerBuffers {
    /// The first `len` bytes of the payload buffer, grown (within the budget) if needed.
    fn payload(&mut self, len: usize) -> &mut [u8] {
        let beyond = len.saturating_sub(SMALL_PAYLOAD);
        if beyond > self.budget_held {
            let more = beyond - self.budget_held;
            let mut used = LARGE_PAYLOAD_USED
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while *used + more > LARGE_PAYLOAD_BUDGET {
                used = LARGE_PAYLOAD_FREED
                    .wait(used)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            *used += more;
            self.budget_held = beyond;
        }
        if self.payload.len() < len {
            self.payload.resize(len, 0);
        }
        &mut self.payload[..len]
    }

    /// Gives large payload memory back after a request (also on drop).
    fn release_large(&mut self) {
        if self.budget_held == 0 {
            return;
        }
        self.payload.truncate(SMALL_PAYLOAD);
        self.payload.shrink_to(SMALL_PAYLOAD);
        let mut used = LARGE_PAYLOAD_USED
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used -= self.budget_held;
        self.budget_held = 0;
        LARGE_PAYLOAD_FREED.notify_all();
    }
}

/// How a request ended, ready to be encoded.
enum Outcome<'b> {
    Done,
    Data { offset: u64, data: &'b [u8] },
    Status(&'b [u8]),
    Failed(Errno, String),
}

impl<'a> Connection<'a> {
    pub(super) fn new(
        stream: &'a Stream,
        session: Session,
        reader: FrameReader<'a>,
        config: &'a NbdConfig,
        shutdown: &'a AtomicBool,
        stop: &'a AtomicBool,
    ) -> Self {
        Connection {
            stream,
            session,
            config,
            shutdown,
            stop,
            reader: Mutex::new(reader),
            writer: Mutex::new(()),
        }
    }

    /// Runs `workers` workers (this thread is one of them) until the connection stops.
    pub(super) fn serve(&self, workers: usize) {
        std::thread::scope(|scope| {
            for _ in 1..workers {
                let spawned = std::thread::Builder::new()
                    .name("nbd-worker".to_owned())
                    .spawn_scoped(scope, || self.worker());
                if spawned.is_err() {
                    // Fewer workers is slower, not wrong.
                    break;
                }
            }
            self.worker();
        });
    }

    fn worker(&self) {
        let mut buffers = WorkerBuffers::default();
        let mut held: Option<MutexGuard<'_, FrameReader<'a>>> = None;
        loop {
            let mut reader = match held.take() {
                Some(reader) => reader,
                None => lock(&self.reader),
            };
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let next = if reader.stop_requested() {
                Next::End
            } else {
                self.next_request(&mut reader, &mut buffers)
            };
            if matches!(next, Next::End) {
                // Set while still holding the reader, so no other worker starts a read.
                self.stop.store(true, Ordering::Release);
                return;
            }
            // A lone, quick request (nothing else has arrived) is served by the worker
            // that read it without letting go of the reader: waking another worker to
            // wait for the next request would cost more than the request itself.
            let quick = matches!(&next, Next::Execute(request)
                if matches!(request.command, Command::Read | Command::Write)
                    && request.length <= QUICK_REQUEST_BYTES
                    && !request.has(proto::CMD_FLAG_FUA));
            if quick && !reader.has_pending() {
                held = Some(reader);
            } else {
                drop(reader);
            }
            let sent = match next {
                Next::End => return,
                Next::Reject { cookie, rejection } => self.send(
                    cookie,
                    Outcome::Failed(rejection.errno, rejection.message.to_owned()),
                ),
                Next::Execute(request) => {
                    let outcome = self.execute(&request, &mut buffers);
                    self.send(request.cookie, outcome)
                }
            };
            buffers.release_large();
            if sent.is_err() {
                self.stop.store(true, Ordering::Release);
                self.stream.shutdown();
                return;
            }
        }
    }

    fn negotiated(&self) -> Negotiated {
        Negotiated {
            size: self.session.target.size(),
            read_only: self.session.target.read_only(),
            structured: self.session.structured,
            base_allocation: self.session.base_allocation,
            changed: self.session.changed.is_some(),
            block_size_negotiated: self.session.block_size_negotiated,
            min_block: self.config.min_block,
            max_payload: self.config.max_payload,
        }
    }

    /// Reads the next request and its payload. Called with the read lock held.
    fn next_request(&self, reader: &mut FrameReader<'_>, buffers: &mut WorkerBuffers) -> Next {
        let mut header = [0u8; proto::REQUEST_HEADER_LEN];
        if reader.read_exact(&mut header).is_err() {
            return Next::End;
        }
        let request = match proto::parse_request(&header) {
            Ok(request) => request,
            Err(RequestError::BadMagic(_)) => return Next::End,
            Err(RequestError::UnknownCommand { payload: true, .. }) => return Next::End,
            Err(RequestError::UnknownCommand { cookie, .. }) => {
                return Next::Reject {
                    cookie,
                    rejection: Rejection {
                        errno: Errno::EINVAL,
                        message: "unknown command",
                    },
                };
            }
        };
        match request.command {
            Command::Disc => return Next::End,
            Command::Write if request.length > self.config.max_payload => {
                if request.length > MAX_DISCARD_PAYLOAD
                    || reader.discard(u64::from(request.length)).is_err()
                {
                    return Next::End;
                }
                return Next::Reject {
                    cookie: request.cookie,
                    rejection: Rejection {
                        errno: Errno::EINVAL,
                        message: "write payload exceeds the maximum payload",
                    },
                };
            }
            Command::Write => {
                let len = request.length as usize;
                if reader.read_exact(buffers.payload(len)).is_err() {
                    return Next::End;
                }
            }
            _ => {}
        }
        match proto::validate_request(&request, &self.negotiated()) {
            Ok(()) => Next::Execute(request),
            Err(rejection) => Next::Reject {
                cookie: request.cookie,
                rejection,
            },
        }
    }

    /// Executes a validated request on the export.
    fn execute<'b>(&self, request: &Request, buffers: &'b mut WorkerBuffers) -> Outcome<'b> {
        let target = &*self.session.target;
        let offset = request.offset;
        let len = request.length as usize;
        let fua = request.has(proto::CMD_FLAG_FUA);
        let result = match request.command {
            Command::Read => {
                let data = buffers.payload(len);
                if len > 0
                    && let Err(err) = target.read(offset, data)
                {
                    return failed(&err, request.command);
                }
                return Outcome::Data {
                    offset,
                    data: &buffers.payload[..len],
                };
            }
            Command::BlockStatus => {
                // One chunk per selected context; the last one carries DONE.
                buffers.status.clear();
                let req_one = request.has(proto::CMD_FLAG_REQ_ONE);
                let changed = self.session.changed;
                if self.session.base_allocation {
                    buffers.extents.clear();
                    if let Err(err) =
                        target.block_status(offset, u64::from(request.length), &mut buffers.extents)
                    {
                        return failed(&err, request.command);
                    }
                    encode_status_chunk(
                        request.cookie,
                        request.length,
                        req_one,
                        (proto::BASE_ALLOCATION_ID, changed.is_none()),
                        buffers.extents.iter().map(|extent| {
                            let flags = (if extent.hole { proto::STATE_HOLE } else { 0 })
                                | (if extent.zero { proto::STATE_ZERO } else { 0 });
                            (extent.length, flags)
                        }),
                        &mut buffers.status,
                    );
                }
                if let Some(base) = changed {
                    buffers.changed.clear();
                    if let Err(err) = target.changed_status(
                        base,
                        offset,
                        u64::from(request.length),
                        &mut buffers.changed,
                    ) {
                        return failed(&err, request.command);
                    }
                    encode_status_chunk(
                        request.cookie,
                        request.length,
                        req_one,
                        (proto::CHANGED_ID, true),
                        buffers.changed.iter().map(|extent| {
                            let flags = if extent.changed {
                                proto::STATE_CHANGED
                            } else {
                                0
                            };
                            (extent.length, flags)
                        }),
                        &mut buffers.status,
                    );
                }
                return Outcome::Status(&buffers.status);
            }
            Command::Flush => target.flush(),
            _ if len == 0 => Ok(()),
            Command::Write => target.write(offset, &buffers.payload[..len], fua),
            Command::Trim => target.trim(offset, len as u64, fua),
            Command::Cache => target.prefetch(offset, len as u64),
            Command::WriteZeroes => target.write_zeroes(
                offset,
                len as u64,
                request.has(proto::CMD_FLAG_NO_HOLE),
                request.has(proto::CMD_FLAG_FAST_ZERO),
                fua,
            ),
            // DISC never reaches a worker.
            Command::Disc => Ok(()),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(err) => failed(&err, request.command),
        }
    }

    /// Encodes and writes the reply to one request.
    fn send(&self, cookie: u64, outcome: Outcome<'_>) -> std::io::Result<()> {
        let structured = self.session.structured;
        let mut header = [0u8; 32];
        match outcome {
            Outcome::Done => {
                simple_header(&mut header, 0, cookie);
                self.write(&[&header[..16]])
            }
            Outcome::Data { data, .. } if !structured => {
                simple_header(&mut header, 0, cookie);
                self.write(&[&header[..16], data])
            }
            Outcome::Data { data: [], .. } => {
                chunk_header(&mut header, proto::REPLY_TYPE_NONE, cookie, 0);
                self.write(&[&header[..20]])
            }
            Outcome::Data { offset, data } => {
                // Reads are capped at the maximum payload (a u32), so the sum fits.
                let len = (data.len() + 8) as u32;
                chunk_header(&mut header, proto::REPLY_TYPE_OFFSET_DATA, cookie, len);
                header[20..28].copy_from_slice(&offset.to_be_bytes());
                self.write(&[&header[..28], data])
            }
            Outcome::Status(encoded) => self.write(&[encoded]),
            Outcome::Failed(errno, _) if !structured => {
                simple_header(&mut header, errno.0, cookie);
                self.write(&[&header[..16]])
            }
            Outcome::Failed(errno, message) => {
                let mut end = message.len().min(MAX_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let message = &message.as_bytes()[..end];
                chunk_header(
                    &mut header,
                    proto::REPLY_TYPE_ERROR,
                    cookie,
                    6 + message.len() as u32,
                );
                header[20..24].copy_from_slice(&errno.0.to_be_bytes());
                header[24..26].copy_from_slice(&(message.len() as u16).to_be_bytes());
                self.write(&[&header[..26], message])
            }
        }
    }

    fn write(&self, pieces: &[&[u8]]) -> std::io::Result<()> {
        let _guard = lock(&self.writer);
        write_all(self.stream, pieces, self.shutdown)
    }
}

/// Locks a mutex; a worker that panicked holding it left nothing half-done that matters
/// (the stream is closed on error), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed<'b>(err: &crate::types::IoError, command: Command) -> Outcome<'b> {
    Outcome::Failed(nbd_errno(err, command), err.to_string())
}

fn simple_header(out: &mut [u8; 32], error: u32, cookie: u64) {
    out[0..4].copy_from_slice(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

fn chunk_header(out: &mut [u8], kind: u16, cookie: u64, len: u32) {
    chunk_header_flags(out, kind, proto::REPLY_FLAG_DONE, cookie, len);
}

fn chunk_header_flags(out: &mut [u8], kind: u16, flags: u16, cookie: u64, len: u32) {
    out[0..4].copy_from_slice(&proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&len.to_be_bytes());
}

/// Encodes a complete `base:allocation` `NBD_REPLY_TYPE_BLOCK_STATUS` chunk (header
/// included, DONE set) into `out`, replacing what it held.
#[cfg(test)]
pub(super) fn encode_block_status(
    cookie: u64,
    len: u32,
    req_one: bool,
    extents: &[Extent],
    out: &mut Vec<u8>,
) {
    out.clear();
    encode_status_chunk(
        cookie,
        len,
        req_one,
        (proto::BASE_ALLOCATION_ID, true),
        extents.iter().map(|extent| {
            let flags = (if extent.hole { proto::STATE_HOLE } else { 0 })
                | (if extent.zero { proto::STATE_ZERO } else { 0 });
            (extent.length, flags)
        }),
        out,
    );
}

/// Appends one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk (header included) for context
/// `context.0`, with DONE when `context.1`, built from `(length, flags)` descriptors.
/// Adjacent descriptors with equal flags merge; zero-length ones are skipped; the total
/// never exceeds `len`; with `req_one` exactly one descriptor is sent. When nothing is
/// described, the whole range is reported with flags 0, which the spec allows.
pub(super) fn encode_status_chunk(
    cookie: u64,
    len: u32,
    req_one: bool,
    context: (u32, bool),
    descriptors: impl Iterator<Item = (u64, u32)>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.resize(start + 24, 0);
    out[start + 20..start + 24].copy_from_slice(&context.0.to_be_bytes());
    let limit = if req_one { 1 } else { MAX_DESCRIPTORS };
    let mut count = 0;
    let mut remaining = u64::from(len);
    let mut current: Option<(u64, u32)> = None;
    for (length, flags) in descriptors {
        let length = length.min(remaining);
        if length == 0 {
            continue;
        }
        remaining -= length;
        match current {
            Some((run, run_flags)) if run_flags == flags => current = Some((run + length, flags)),
            Some((run, run_flags)) => {
                push_descriptor(out, run, run_flags);
                count += 1;
                if count == limit {
                    current = None;
                    break;
                }
                current = Some((length, flags));
            }
            None => current = Some((length, flags)),
        }
    }
    if let Some((run, flags)) = current {
        push_descriptor(out, run, flags);
        count += 1;
    }
    if count == 0 {
        push_descriptor(out, u64::from(len), 0);
    }
    let payload = (out.len() - start - 20) as u32;
    let flags = if context.1 { proto::REPLY_FLAG_DONE } else { 0 };
    chunk_header_flags(
        &mut out[start..],
        proto::REPLY_TYPE_BLOCK_STATUS,
        flags,
        cookie,
        payload,
    );
}

fn push_descriptor(out: &mut Vec<u8>, length: u64, flags: u32) {
    // A run never exceeds the request length, which is a u32.
    let length = u32::try_from(length).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
}
