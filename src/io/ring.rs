//! The io_uring ring: batched submission of a slice of requests, with back-pressure.
//!
//! How [`IoRing::execute`] keeps buffers safe: each request borrows its buffer for the
//! lifetime of the request slice, and `execute` does not return (nor unwind: see
//! [`InFlight`]) until every operation it handed the kernel has completed. A failure of
//! `io_uring_enter` that would leave operations in the kernel with no way to wait for them
//! aborts the process rather than let the kernel write into memory that has been given back.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};

use super::ALIGN;
use super::device::{Device, SimOp};
use super::faults::{FaultOp, Verdict};

/// Largest single transfer handed to the kernel in one SQE; longer requests are continued.
const MAX_CHUNK: usize = 1 << 30;

/// What a request does.
#[derive(Debug)]
pub enum IoKind<'a> {
    /// Fill the buffer from the device.
    Read(&'a mut [u8]),
    /// Write the buffer to the device.
    Write(&'a [u8]),
    /// fdatasync: make every write completed before it durable.
    Sync,
}

/// One operation on one device.
#[derive(Debug)]
pub struct IoRequest<'a> {
    pub device: &'a Device,
    /// Byte offset on the device (ignored for `Sync`).
    pub offset: u64,
    pub kind: IoKind<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting to be pushed (first time, or continued after a short transfer or EAGAIN).
    Queued,
    InFlight,
    Finished,
}

#[derive(Clone, Copy, Debug)]
struct OpState {
    phase: Phase,
    /// Bytes transferred so far.
    done: usize,
    /// Set when first pushed, for requests on a device with a latency model or an
    /// injected delay.
    not_before: Option<Instant>,
    /// Whether the device's faults have judged it (once, before its first push).
    judged: bool,
    /// A write's entry in its device's simulated write cache.
    cache_seq: Option<u64>,
    /// A sync's mark in its device's simulated write cache.
    sync_mark: Option<u64>,
    /// When it was first pushed, and when it finished (for [`IoRing::took`]).
    pushed_at: Option<Instant>,
    finished_at: Option<Instant>,
}

/// An io_uring instance owned by one thread (it is `Send`, not `Sync`).
pub struct IoRing {
    ring: IoUring,
    /// Operations in the kernel at once: at most the completion queue's size, so the
    /// completion queue can never overflow.
    max_in_flight: usize,
    /// Per-request state of the current batch (kept to reuse its allocation).
    ops: Vec<OpState>,
    /// Requests to push again before new ones (kept to reuse its allocation).
    retry: Vec<usize>,
    /// Results of the single-request helpers (kept to reuse its allocation).
    single: Vec<io::Result<usize>>,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for IoRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoRing")
            .field("sq_entries", &self.ring.params().sq_entries())
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl IoRing {
    /// Creates a ring with `entries` submission slots (the kernel rounds up to a power of two).
    pub fn new(entries: u32) -> io::Result<IoRing> {
        let ring = IoUring::new(entries)?;
        let max_in_flight = ring.params().cq_entries() as usize;
        Ok(IoRing {
            ring,
            max_in_flight,
            ops: Vec::new(),
            retry: Vec::new(),
            single: Vec::with_capacity(1),
            _not_sync: PhantomData,
        })
    }

    /// Runs every request and writes one result per request, in request order, to
    /// `results` (cleared first): `Ok(bytes transferred)` or the error.
    ///
    /// - Submission is batched: as many SQEs as fit are pushed and submitted with one
    ///   `io_uring_enter`. When the ring or the in-flight cap (the completion queue size) is
    ///   full, it waits for completions before pushing more; nothing is dropped.
    /// - Short reads and writes are continued for the remainder; EINTR and EAGAIN are
    ///   retried. A read that reaches the end of the device returns the bytes read.
    /// - Read and write buffers, lengths and offsets must be multiples of [`ALIGN`];
    ///   otherwise that request's result is `EINVAL` and it is not submitted.
    /// - `Sync` is submitted only after every request before it in the slice has completed,
    ///   so it covers their writes; requests after it may run concurrently with it.
    /// - For a device with a latency model, `execute` does not return before each request's
    ///   modelled completion time (see [`Device`]).
    pub fn execute(
        &mut self,
        requests: &mut [IoRequest<'_>],
        results: &mut Vec<io::Result<usize>>,
    ) {
        let IoRing {
            ring,
            max_in_flight,
            ops,
            retry,
            ..
        } = self;
        let max_in_flight = *max_in_flight;
        results.clear();
        ops.clear();
        retry.clear();
        for request in requests.iter() {
            let (phase, result) = match check_alignment(request) {
                Err(e) => (Phase::Finished, Err(e)),
                Ok(0) if !matches!(request.kind, IoKind::Sync) => (Phase::Finished, Ok(0)),
                Ok(_) => (Phase::Queued, Ok(0)),
            };
            ops.push(OpState {
                phase,
                done: 0,
                not_before: None,
                judged: false,
                cache_seq: None,
                sync_mark: None,
                pushed_at: None,
                finished_at: None,
            });
            results.push(result);
        }

        let mut flight = InFlight { ring, count: 0 };
        let mut next = 0;
        let mut latest: Option<Instant> = None;
        loop {
            // Push as much as the ring and the in-flight cap allow.
            while flight.count < max_in_flight {
                let index = match retry.pop() {
                    Some(index) => index,
                    None => {
                        while next < ops.len() && ops[next].phase != Phase::Queued {
                            next += 1;
                        }
                        if next == ops.len() {
                            break;
                        }
                        if matches!(requests[next].kind, IoKind::Sync) && flight.count > 0 {
                            break;
                        }
                        next += 1;
                        next - 1
                    }
                };
                let request = &mut requests[index];
                let op = &mut ops[index];
                if !op.judged {
                    op.judged = true;
                    op.pushed_at = Some(Instant::now());
                    op.not_before = simulated_completion(request);
                    // The one branch injection costs while it is off.
                    if request.device.faults().active() && !judge(request, op) {
                        results[index] = Err(io::Error::from_raw_os_error(libc::EIO));
                        continue;
                    }
                    if let Some(at) = op.not_before {
                        latest = Some(latest.map_or(at, |l| l.max(at)));
                    }
                }
                let entry = build_entry(request, op.done).user_data(index as u64);
                if !flight.push(&entry) {
                    retry.push(index);
                    break;
                }
                op.phase = Phase::InFlight;
            }
            if flight.count == 0 {
                if retry.is_empty() {
                    break;
                }
                continue;
            }
            flight.submit_and_wait_one();
            for cqe in flight.ring.completion() {
                flight.count -= 1;
                let index = cqe.user_data() as usize;
                complete(
                    &requests[index],
                    &mut ops[index],
                    &mut results[index],
                    retry,
                    index,
                    cqe.result(),
                );
                let op = &mut ops[index];
                if op.phase == Phase::Finished {
                    op.finished_at = Some(Instant::now());
                }
                let op = &ops[index];
                if op.phase == Phase::Finished && (op.cache_seq.is_some() || op.sync_mark.is_some())
                {
                    settle_cache(&requests[index], op, results[index].is_ok());
                }
            }
        }
        if let Some(latest) = latest {
            let now = Instant::now();
            if latest > now {
                std::thread::sleep(latest - now);
            }
        }
    }

    /// How long request `index` of the last [`IoRing::execute`] took, from its first
    /// submission to its completion (its modelled completion, when that is later); zero
    /// for a request that was never submitted.
    pub fn took(&self, index: usize) -> Duration {
        let Some(op) = self.ops.get(index) else {
            return Duration::ZERO;
        };
        let (Some(pushed), Some(finished)) = (op.pushed_at, op.finished_at) else {
            return Duration::ZERO;
        };
        let end = op
            .not_before
            .map_or(finished, |modelled| modelled.max(finished));
        end.saturating_duration_since(pushed)
    }

    /// Reads the whole buffer from `offset`, or fails.
    pub fn read_at(&mut self, device: &Device, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len();
        let done = self.execute_one(IoRequest {
            device,
            offset,
            kind: IoKind::Read(buf),
        })?;
        whole(device, offset, done, len, "read")
    }

    /// Writes the whole buffer at `offset`, or fails.
    pub fn write_at(&mut self, device: &Device, offset: u64, buf: &[u8]) -> io::Result<()> {
        let done = self.execute_one(IoRequest {
            device,
            offset,
            kind: IoKind::Write(buf),
        })?;
        whole(device, offset, done, buf.len(), "write")
    }

    /// fdatasync of the device.
    pub fn sync(&mut self, device: &Device) -> io::Result<()> {
        self.execute_one(IoRequest {
            device,
            offset: 0,
            kind: IoKind::Sync,
        })
        .map(|_| ())
    }

    fn execute_one(&mut self, request: IoRequest<'_>) -> io::Result<usize> {
        let mut results = std::mem::take(&mut self.single);
        self.execute(&mut [request], &mut results);
        let result = results
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("io_uring produced no result")));
        self.single = results;
        result
    }
}

fn whole(device: &Device, offset: u64, done: usize, len: usize, what: &str) -> io::Result<()> {
    if done == len {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "short {what} on {}: {done} of {len} bytes at offset {offset} (device size {})",
                device.path().display(),
                device.size()
            ),
        ))
    }
}

/// Returns the request's length (0 for `Sync`), or EINVAL if its buffer, length or offset is not aligned.
fn check_alignment(request: &IoRequest<'_>) -> io::Result<usize> {
    let (address, len) = match &request.kind {
        IoKind::Read(buf) => (buf.as_ptr() as usize, buf.len()),
        IoKind::Write(buf) => (buf.as_ptr() as usize, buf.len()),
        IoKind::Sync => return Ok(0),
    };
    if len == 0 {
        return Ok(0);
    }
    let aligned = address.is_multiple_of(ALIGN)
        && len.is_multiple_of(ALIGN)
        && request.offset.is_multiple_of(ALIGN as u64);
    if aligned {
        Ok(len)
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// Asks the device's faults about `request` before its first push. Returns false when it
/// fails without being submitted (its op is then finished).
#[cold]
fn judge(request: &IoRequest<'_>, op: &mut OpState) -> bool {
    let (kind, len, data) = match &request.kind {
        IoKind::Read(buf) => (FaultOp::Read, buf.len(), None),
        IoKind::Write(buf) => (FaultOp::Write, buf.len(), Some(&buf[..])),
        IoKind::Sync => (FaultOp::Fsync, 0, None),
    };
    let faults = request.device.faults();
    match faults.verdict(kind, request.offset, len as u64, data) {
        Verdict::Fail => {
            op.phase = Phase::Finished;
            false
        }
        Verdict::Proceed {
            not_before,
            cache_seq,
            sync_mark,
        } => {
            if let Some(at) = not_before {
                op.not_before = Some(op.not_before.map_or(at, |b| b.max(at)));
            }
            op.cache_seq = cache_seq;
            op.sync_mark = sync_mark;
            true
        }
    }
}

/// Tells the device's simulated write cache that `op` finished.
#[cold]
fn settle_cache(request: &IoRequest<'_>, op: &OpState, ok: bool) {
    let faults = request.device.faults();
    if let Some(seq) = op.cache_seq {
        faults.write_finished(seq);
    }
    if let (Some(mark), true) = (op.sync_mark, ok) {
        faults.sync_succeeded(mark);
    }
}

fn simulated_completion(request: &IoRequest<'_>) -> Option<Instant> {
    let (op, len) = match &request.kind {
        IoKind::Read(buf) => (SimOp::Read, buf.len()),
        IoKind::Write(buf) => (SimOp::Write, buf.len()),
        IoKind::Sync => (SimOp::Sync, 0),
    };
    request
        .device
        .simulated_completion(Instant::now(), request.offset, len as u64, op)
}

/// The SQE for the rest of `request`, `done` bytes in.
fn build_entry(request: &mut IoRequest<'_>, done: usize) -> squeue::Entry {
    let fd = types::Fd(request.device.raw_fd());
    let offset = request.offset + done as u64;
    match &mut request.kind {
        IoKind::Read(buf) => {
            let rest = &mut buf[done..];
            let len = rest.len().min(MAX_CHUNK) as u32;
            opcode::Read::new(fd, rest.as_mut_ptr(), len)
                .offset(offset)
                .build()
        }
        IoKind::Write(buf) => {
            let rest = &buf[done..];
            let len = rest.len().min(MAX_CHUNK) as u32;
            opcode::Write::new(fd, rest.as_ptr(), len)
                .offset(offset)
                .build()
        }
        IoKind::Sync => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
    }
}

/// Applies one completion (`res` as the kernel reported it) to its request.
fn complete(
    request: &IoRequest<'_>,
    op: &mut OpState,
    result: &mut io::Result<usize>,
    retry: &mut Vec<usize>,
    index: usize,
    res: i32,
) {
    if res < 0 {
        let errno = -res;
        if errno == libc::EINTR || errno == libc::EAGAIN {
            op.phase = Phase::Queued;
            retry.push(index);
        } else {
            op.phase = Phase::Finished;
            *result = Err(io::Error::from_raw_os_error(errno));
        }
        return;
    }
    let len = match &request.kind {
        IoKind::Read(buf) => buf.len(),
        IoKind::Write(buf) => buf.len(),
        IoKind::Sync => {
            op.phase = Phase::Finished;
            *result = Ok(0);
            return;
        }
    };
    op.done += res as usize;
    let is_read = matches!(request.kind, IoKind::Read(_));
    // A transfer that stops short of an aligned boundary cannot be continued under O_DIRECT:
    // it is the end of the file.
    let at_end = res == 0 || !op.done.is_multiple_of(ALIGN);
    if op.done >= len || (at_end && is_read) {
        op.phase = Phase::Finished;
        *result = Ok(op.done);
    } else if at_end {
        op.phase = Phase::Finished;
        *result = Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "write stopped after {} of {len} bytes at offset {} on {}",
                op.done,
                request.offset,
                request.device.path().display()
            ),
        ));
    } else {
        op.phase = Phase::Queued;
        retry.push(index);
    }
}

/// The ring together with the number of operations the kernel holds. Dropping it waits for
/// all of them, so even an unwinding `execute` never releases a buffer the kernel may still
/// use.
struct InFlight<'r> {
    ring: &'r mut IoUring,
    count: usize,
}

impl InFlight<'_> {
    /// Pushes an SQE, submitting first if the submission queue is full. Returns false if it
    /// still did not fit (the kernel is short of resources); the caller waits and retries.
    fn push(&mut self, entry: &squeue::Entry) -> bool {
        if self.ring.submission().is_full() {
            self.enter(0);
        }
        // SAFETY: the entry's buffer (if any) is borrowed from the caller's request slice,
        // which outlives this InFlight; the entry is counted in `count` below, and neither
        // `execute` returning nor this guard dropping happens before `count` completions
        // have been reaped, so the buffer and the device's descriptor stay valid and
        // unaliased for as long as the kernel may use them.
        let pushed = unsafe { self.ring.submission().push(entry) }.is_ok();
        if pushed {
            self.count += 1;
        }
        pushed
    }

    /// Submits what is queued and waits until at least one completion is available.
    fn submit_and_wait_one(&mut self) {
        self.enter(1);
    }

    /// One io_uring_enter. EINTR, EAGAIN and EBUSY are transient (the caller reaps and comes
    /// back). Any other failure means operations may sit in the kernel with no way to wait
    /// for them, so the process stops rather than free their buffers.
    fn enter(&mut self, want: usize) {
        match self.ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) => {}
            Err(e) => {
                crate::say!(
                    "troika: io_uring_enter failed with {} operations in flight: {e}; aborting so their buffers are not reused",
                    self.count
                );
                std::process::abort();
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        while self.count > 0 {
            self.enter(1);
            let reaped = self.ring.completion().count();
            self.count = self.count.saturating_sub(reaped);
        }
    }
}
