//! The journal: an append-only circular log on the SSD vault device that carries both the
//! metadata changes (catalog operations, map commits, trims) and the vault copies of
//! flushed write-back data.
//!
//! ## On-media format
//!
//! The log region is addressed by a *log sequence number* (LSN): a byte position in an
//! endless log; LSN `x` lives at `region_start + x % region_len`. The log is a sequence of
//! *batches*, each starting on a 4 KiB boundary and written with one write:
//!
//! ```text
//! header (64 bytes): magic u64 | lsn u64 | payload_len u64 | payload xxh3 u64 |
//!                    kind u32 (0 batch, 1 wrap) | records u32 | pad u64 | header xxh3 u64
//! payload: records, each  kind u8 | pad [u8; 3] | len u32 | body
//! padding to the next 4 KiB boundary
//! ```
//!
//! A batch never straddles the end of the region: when it would not fit, a *wrap* header
//! is written (when there is room for one) and the batch starts at the next lap. A batch is
//! valid only when its header names the LSN it is found at and both checksums match, so
//! stale batches of an earlier lap and torn writes end the log.
//!
//! ## Commit order
//!
//! `append` only buffers. `commit` writes every buffered record, then `fdatasync`s the
//! device, and only then reports the records durable (group commit: one writer at a time,
//! followers wait and are covered by the leader's sync). Space before `tail` (set by the
//! checkpoint) is never overwritten, so every record a recovery may need stays readable.
//!
//! ## Failures
//!
//! A write or sync that fails, and a log too full for the batch, stop the node through
//! [`crate::fatal::durability_failure`] naming the device and the operation (`journal
//! write`, `journal fsync`, `journal commit`): nothing is retried (a failed fsync may have
//! dropped data silently), so no caller ever hears that uncommitted records are durable,
//! and a restart replays exactly the whole batches that reached media. The failure is
//! also remembered first, so a group-commit follower woken meanwhile gets
//! [`JournalError::Failed`] instead of writing after it (in unit tests, where the stop is a
//! panic, that is what every later commit gets).

use std::io;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use xxhash_rust::xxh3::xxh3_64;

use crate::io::{AlignedBuf, Device, IoRing};

const BATCH_MAGIC: u64 = 0x5452_4f49_4b41_4a4c; // "TROIKAJL"
const HEADER_LEN: usize = 64;
const PAGE: u64 = 4096;
/// Largest batch written with one write.
pub const MAX_BATCH: usize = 8 << 20;
/// Largest single record body.
pub const MAX_RECORD: usize = MAX_BATCH - HEADER_LEN - 8;
const KIND_BATCH: u32 = 0;
const KIND_WRAP: u32 = 1;

/// Why the journal could not make records durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("{operation} on {device} failed: {reason}; the node must stop and recover from media")]
    Failed {
        device: String,
        operation: &'static str,
        reason: String,
    },
    #[error("journal on {device} is full ({used} of {len} bytes hold records still needed)")]
    Full { device: String, used: u64, len: u64 },
}

struct Inner {
    pending: Vec<u8>,
    spare: Vec<u8>,
    pending_records: u32,
    /// Records appended so far (ticket numbers).
    appended: u64,
    /// Records known durable.
    durable: u64,
    /// Where the next batch starts.
    next_lsn: u64,
    /// Oldest LSN still needed by a recovery.
    tail_lsn: u64,
    committing: bool,
    failed: Option<JournalError>,
    ring: Option<IoRing>,
    batch: Option<AlignedBuf>,
}

/// The log. Thread-safe; see the module doc.
pub struct Journal {
    device: Arc<Device>,
    region_start: u64,
    region_len: u64,
    inner: Mutex<Inner>,
    done: Condvar,
    /// A copy of `Inner::next_lsn`, readable without the lock (it only grows, so a stale
    /// value is still a lower bound for every later record).
    next_lsn_floor: std::sync::atomic::AtomicU64,
}

/// Identifies an appended record for [`Journal::commit`].
pub type Ticket = u64;

impl Journal {
    /// A journal whose next batch goes at `next_lsn` and whose records before `tail_lsn`
    /// are no longer needed.
    pub fn new(
        device: Arc<Device>,
        region_start: u64,
        region_len: u64,
        next_lsn: u64,
        tail_lsn: u64,
    ) -> io::Result<Journal> {
        Ok(Journal {
            device,
            region_start,
            region_len,
            inner: Mutex::new(Inner {
                pending: Vec::with_capacity(1 << 20),
                spare: Vec::with_capacity(1 << 20),
                pending_records: 0,
                appended: 0,
                durable: 0,
                next_lsn,
                tail_lsn,
                committing: false,
                failed: None,
                ring: Some(IoRing::new(64)?),
                batch: Some(AlignedBuf::new(MAX_BATCH)),
            }),
            done: Condvar::new(),
            next_lsn_floor: std::sync::atomic::AtomicU64::new(next_lsn),
        })
    }

    /// Buffers one record whose body `write_body` appends to the given buffer. Returns the
    /// ticket to commit and a lower bound of the LSN the record will be written at.
    pub fn append(&self, kind: u8, write_body: impl FnOnce(&mut Vec<u8>)) -> (Ticket, u64) {
        let mut inner = self.inner.lock();
        let start = inner.pending.len();
        inner
            .pending
            .extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
        write_body(&mut inner.pending);
        let len = inner.pending.len() - start - 8;
        assert!(
            len <= MAX_RECORD,
            "journal record of {len} bytes is larger than a batch"
        );
        inner.pending[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
        inner.pending_records += 1;
        inner.appended += 1;
        (inner.appended, inner.next_lsn)
    }

    /// Whether a commit failed (the journal refuses every later one).
    pub fn has_failed(&self) -> bool {
        self.inner.lock().failed.is_some()
    }

    /// The ticket of the newest record known durable.
    pub fn durable_ticket(&self) -> Ticket {
        self.inner.lock().durable
    }

    /// The ticket of the last appended record.
    pub fn last_ticket(&self) -> Ticket {
        self.inner.lock().appended
    }

    /// Where the next batch will start: every record appended before now is at or after
    /// the returned LSN, or already durable before it.
    pub fn next_lsn(&self) -> u64 {
        self.inner.lock().next_lsn
    }

    /// A lower bound, read without a lock, for the LSN of every record appended from now
    /// on (the cache's write path pins the vault with it).
    pub fn lsn_floor(&self) -> u64 {
        self.next_lsn_floor
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes of the region in use (between the tail and the next batch).
    pub fn used(&self) -> u64 {
        let inner = self.inner.lock();
        inner.next_lsn - inner.tail_lsn
    }

    pub fn region_len(&self) -> u64 {
        self.region_len
    }

    /// Declares records before `lsn` no longer needed (after a checkpoint).
    pub fn set_tail(&self, lsn: u64) {
        let mut inner = self.inner.lock();
        debug_assert!(lsn <= inner.next_lsn);
        inner.tail_lsn = inner.tail_lsn.max(lsn);
    }

    /// Returns once the record with `ticket` (and every earlier one) is durable.
    pub fn commit(&self, ticket: Ticket) -> Result<(), JournalError> {
        let mut inner = self.inner.lock();
        loop {
            if let Some(failed) = &inner.failed {
                return Err(failed.clone());
            }
            if inner.durable >= ticket {
                return Ok(());
            }
            if inner.committing {
                self.done.wait(&mut inner);
                continue;
            }
            inner.committing = true;
            let upto = inner.appended;
            let records = std::mem::take(&mut inner.pending_records);
            let spare = std::mem::take(&mut inner.spare);
            let payload = std::mem::replace(&mut inner.pending, spare);
            let mut ring = inner
                .ring
                .take()
                .expect("ring is present when not committing");
            let mut batch = inner
                .batch
                .take()
                .expect("batch buffer is present when not committing");
            let (mut lsn, tail) = (inner.next_lsn, inner.tail_lsn);
            drop(inner);
            let result =
                self.write_batches(&mut ring, &mut batch, &payload, records, &mut lsn, tail);
            inner = self.inner.lock();
            inner.ring = Some(ring);
            inner.batch = Some(batch);
            let mut payload = payload;
            payload.clear();
            inner.spare = payload;
            inner.committing = false;
            match result {
                Ok(()) => {
                    inner.next_lsn = lsn;
                    self.next_lsn_floor
                        .store(lsn, std::sync::atomic::Ordering::Release);
                    inner.durable = upto;
                }
                Err(err) => {
                    inner.failed = Some(err.clone());
                    self.done.notify_all();
                    drop(inner);
                    self.stop(&err);
                }
            }
            self.done.notify_all();
        }
    }

    /// Stops the node after a commit failed (see the module doc).
    fn stop(&self, err: &JournalError) -> ! {
        match err {
            JournalError::Failed {
                operation, reason, ..
            } => crate::fatal::durability_failure(self.device.name(), operation, reason),
            JournalError::Full { .. } => {
                crate::fatal::durability_failure(self.device.name(), "journal commit", err)
            }
        }
    }

    /// Commits everything appended so far.
    pub fn commit_all(&self) -> Result<(), JournalError> {
        let ticket = self.last_ticket();
        self.commit(ticket)
    }

    fn write_batches(
        &self,
        ring: &mut IoRing,
        batch: &mut AlignedBuf,
        payload: &[u8],
        records: u32,
        lsn: &mut u64,
        tail: u64,
    ) -> Result<(), JournalError> {
        if payload.is_empty() {
            return Ok(());
        }
        let failed = |operation: &'static str, err: io::Error| JournalError::Failed {
            device: self.device.name().to_owned(),
            operation,
            reason: err.to_string(),
        };
        let mut offset = 0;
        let mut first = true;
        while offset < payload.len() {
            let chunk_end = batch_end(payload, offset);
            let chunk = &payload[offset..chunk_end];
            let total = round_up((HEADER_LEN + chunk.len()) as u64);
            // Check for room before writing anything, the wrap header included: with a
            // full region it would land on the oldest records still needed.
            let within = *lsn % self.region_len;
            let wraps = within + total > self.region_len;
            let start = if wraps {
                *lsn + self.region_len - within
            } else {
                *lsn
            };
            if start + total - tail > self.region_len {
                return Err(JournalError::Full {
                    device: self.device.name().to_owned(),
                    used: *lsn - tail,
                    len: self.region_len,
                });
            }
            let mut at = self
                .place(lsn, total, ring, batch)
                .map_err(|err| failed("journal write", err))?;
            debug_assert_eq!(at, start);
            let count = if first { records } else { 0 };
            first = false;
            let buf = &mut batch[..total as usize];
            buf.fill(0);
            write_header(buf, at, chunk, KIND_BATCH, count);
            buf[HEADER_LEN..HEADER_LEN + chunk.len()].copy_from_slice(chunk);
            #[cfg(test)]
            self.injected_write(ring, at, buf)
                .map_err(|err| failed("journal write", err))?;
            ring.write_at(&self.device, self.physical(at), buf)
                .map_err(|err| failed("journal write", err))?;
            at += total;
            *lsn = at;
            offset = chunk_end;
        }
        #[cfg(test)]
        super::failpoint::check(super::failpoint::Failpoint::JournalSync)
            .map_err(|err| failed("journal fsync", err))?;
        ring.sync(&self.device)
            .map_err(|err| failed("journal fsync", err))
    }

    /// Tests: an armed journal write failpoint fails this batch's write, after putting
    /// its first 4 KiB on media for a torn one.
    #[cfg(test)]
    fn injected_write(&self, ring: &mut IoRing, at: u64, buf: &[u8]) -> io::Result<()> {
        use super::failpoint::{Failpoint, check, fires, injected};
        check(Failpoint::JournalWrite)?;
        if fires(Failpoint::JournalTornWrite) {
            ring.write_at(&self.device, self.physical(at), &buf[..PAGE as usize])?;
            return Err(injected());
        }
        Ok(())
    }

    /// Makes room for a batch of `total` bytes at `lsn`, writing a wrap header and moving
    /// to the next lap when it would straddle the end. Returns the LSN to write at.
    fn place(
        &self,
        lsn: &mut u64,
        total: u64,
        ring: &mut IoRing,
        batch: &mut AlignedBuf,
    ) -> io::Result<u64> {
        let within = *lsn % self.region_len;
        if within + total <= self.region_len {
            return Ok(*lsn);
        }
        if self.region_len - within >= PAGE {
            let buf = &mut batch[..PAGE as usize];
            buf.fill(0);
            write_header(buf, *lsn, &[], KIND_WRAP, 0);
            ring.write_at(&self.device, self.physical(*lsn), buf)?;
        }
        *lsn += self.region_len - within;
        Ok(*lsn)
    }

    fn physical(&self, lsn: u64) -> u64 {
        self.region_start + lsn % self.region_len
    }

    /// Reads this log's records from `from` (raised to the tail: what is before it may be
    /// overwritten) to the end of what was written, as [`Journal::replay`] does at start.
    /// Records appended but not committed are not seen: commit first. Returns the LSN
    /// where the scan stopped, which equals [`Journal::next_lsn`] unless the log is
    /// damaged or a commit ran meanwhile.
    pub fn scan(&self, from: u64, visit: impl FnMut(u64, u8, &[u8])) -> io::Result<u64> {
        let from = from.max(self.inner.lock().tail_lsn);
        Self::replay(
            &self.device,
            self.region_start,
            self.region_len,
            from,
            visit,
        )
        .map(|summary| summary.end_lsn)
    }

    /// Reads the log from `from` and calls `visit(batch_lsn, kind, body)` for every record,
    /// in order. Returns the LSN after the last valid batch (where writing resumes).
    pub fn replay(
        device: &Device,
        region_start: u64,
        region_len: u64,
        from: u64,
        mut visit: impl FnMut(u64, u8, &[u8]),
    ) -> io::Result<ReplaySummary> {
        let mut ring = IoRing::new(32)?;
        // Replay reads the log in large windows (one read brings many batches).
        let mut window = ReadWindow {
            buf: AlignedBuf::new(REPLAY_WINDOW),
            start: 0,
            len: 0,
        };
        let mut lsn = from;
        let mut summary = ReplaySummary::default();
        loop {
            let within = lsn % region_len;
            if region_len - within < PAGE {
                lsn += region_len - within;
                continue;
            }
            let read = |window: &mut ReadWindow, ring: &mut IoRing, len: u64| {
                window.ensure(ring, device, region_start, region_len, lsn, len)
            };
            read(&mut window, &mut ring, PAGE)?;
            let Some(header) = read_header(window.bytes(lsn, HEADER_LEN as u64), lsn) else {
                break;
            };
            if header.kind == KIND_WRAP {
                lsn += region_len - within;
                continue;
            }
            let total = round_up(HEADER_LEN as u64 + header.payload_len);
            if header.payload_len as usize > MAX_BATCH - HEADER_LEN || within + total > region_len {
                break;
            }
            read(&mut window, &mut ring, total)?;
            let Some(payload) = checked_payload(window.bytes(lsn, total), &header) else {
                break;
            };
            summary.records += for_each_record(payload, |kind, body| visit(lsn, kind, body));
            summary.batches += 1;
            lsn += total;
        }
        summary.end_lsn = lsn;
        Ok(summary)
    }
}

const REPLAY_WINDOW: usize = 2 * MAX_BATCH;

/// A buffer holding `len` bytes of the log from LSN `start`.
struct ReadWindow {
    buf: AlignedBuf,
    start: u64,
    len: u64,
}

impl ReadWindow {
    /// Makes `[lsn, lsn + len)` available (it never straddles the end of the region).
    fn ensure(
        &mut self,
        ring: &mut IoRing,
        device: &Device,
        region_start: u64,
        region_len: u64,
        lsn: u64,
        len: u64,
    ) -> io::Result<()> {
        if lsn >= self.start && lsn + len <= self.start + self.len {
            return Ok(());
        }
        let within = lsn % region_len;
        let read = (REPLAY_WINDOW as u64).min(region_len - within);
        ring.read_at(
            device,
            region_start + within,
            &mut self.buf[..read as usize],
        )?;
        self.start = lsn;
        self.len = read;
        Ok(())
    }

    fn bytes(&self, lsn: u64, len: u64) -> &[u8] {
        let at = (lsn - self.start) as usize;
        &self.buf[at..at + len as usize]
    }
}

/// What a replay found.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplaySummary {
    pub batches: u64,
    pub records: u64,
    pub end_lsn: u64,
}

struct Header {
    payload_len: u64,
    payload_sum: u64,
    kind: u32,
}

fn write_header(buf: &mut [u8], lsn: u64, payload: &[u8], kind: u32, records: u32) {
    buf[0..8].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    buf[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    buf[24..32].copy_from_slice(&xxh3_64(payload).to_le_bytes());
    buf[32..36].copy_from_slice(&kind.to_le_bytes());
    buf[36..40].copy_from_slice(&records.to_le_bytes());
    let sum = xxh3_64(&buf[0..56]);
    buf[56..64].copy_from_slice(&sum.to_le_bytes());
}

/// The header of the batch at `lsn` when `buf` starts with a valid one.
fn read_header(buf: &[u8], lsn: u64) -> Option<Header> {
    let buf = buf.get(..HEADER_LEN)?;
    let field = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    if field(0) != BATCH_MAGIC || field(8) != lsn || field(56) != xxh3_64(&buf[0..56]) {
        return None;
    }
    Some(Header {
        payload_len: field(16),
        payload_sum: field(24),
        kind: u32::from_le_bytes(buf[32..36].try_into().expect("4 bytes")),
    })
}

/// The payload of the batch `batch` (its bytes from the header on) whose header is
/// `header`: `None` when the bytes end early or the payload fails its checksum.
fn checked_payload<'a>(batch: &'a [u8], header: &Header) -> Option<&'a [u8]> {
    let end = usize::try_from(header.payload_len)
        .ok()?
        .checked_add(HEADER_LEN)?;
    let payload = batch.get(HEADER_LEN..end)?;
    (xxh3_64(payload) == header.payload_sum).then_some(payload)
}

/// Calls `visit(kind, body)` for each whole record of a batch's payload, in order, and
/// returns how many there were (a record that runs past the payload ends it).
fn for_each_record(payload: &[u8], mut visit: impl FnMut(u8, &[u8])) -> u64 {
    let mut records = 0;
    let mut at = 0;
    while at + 8 <= payload.len() {
        let kind = payload[at];
        let len = u32::from_le_bytes(payload[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let Some(body) = payload.get(at + 8..at + 8 + len) else {
            break;
        };
        visit(kind, body);
        records += 1;
        at += 8 + len;
    }
    records
}

/// Decodes one batch held in memory at `lsn` with replay's checks (header, length,
/// payload checksum) and calls `visit(kind, body)` for its records. Returns how many, 0
/// for a wrap header, `None` where replay would end the log. For the fuzz targets.
#[doc(hidden)]
pub fn decode_batch(bytes: &[u8], lsn: u64, visit: impl FnMut(u8, &[u8])) -> Option<u64> {
    let header = read_header(bytes, lsn)?;
    if header.kind == KIND_WRAP {
        return Some(0);
    }
    if header.payload_len as usize > MAX_BATCH - HEADER_LEN {
        return None;
    }
    let payload = checked_payload(bytes, &header)?;
    Some(for_each_record(payload, visit))
}

/// The end of the batch that starts at `offset`: as many whole records as fit.
fn batch_end(payload: &[u8], offset: usize) -> usize {
    let limit = MAX_BATCH - HEADER_LEN;
    let mut at = offset;
    while at + 8 <= payload.len() {
        let len = u32::from_le_bytes(payload[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if at + 8 + len - offset > limit {
            break;
        }
        at += 8 + len;
    }
    at
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE) * PAGE
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn device(dir: &tempfile::TempDir) -> Arc<Device> {
        Arc::new(Device::open(&dir.path().join("ssd0.img"), Some(8 << 20), None).unwrap())
    }

    #[test]
    fn records_survive_in_order_across_laps() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(&dir);
        let region = 1 << 20;
        let journal = Journal::new(dev.clone(), 4096, region, 0, 0).unwrap();
        let mut expected = Vec::new();
        let mut tail_for_replay = 0;
        for round in 0u32..60 {
            let body: Vec<u8> = (0..(round as usize * 997) % 40_000)
                .map(|i| (i as u32 ^ round) as u8)
                .collect();
            let lsn_before = journal.next_lsn();
            let (ticket, _) = journal.append(7, |out| out.extend_from_slice(&body));
            journal.commit(ticket).unwrap();
            if round % 10 == 0 {
                journal.set_tail(lsn_before);
                tail_for_replay = lsn_before;
                expected.clear();
            }
            expected.push(body);
        }
        let mut seen = Vec::new();
        let summary = Journal::replay(&dev, 4096, region, tail_for_replay, |_, kind, body| {
            assert_eq!(kind, 7);
            seen.push(body.to_vec());
        })
        .unwrap();
        assert_eq!(seen, expected);
        assert_eq!(summary.end_lsn, journal.next_lsn());
        assert!(summary.end_lsn > region, "test never wrapped");
    }

    /// The panic message of a durability failure (its unit-test form).
    pub(crate) fn stop_message(outcome: std::thread::Result<impl Sized>) -> String {
        let Err(payload) = outcome else {
            panic!("expected the node to stop on a durability failure");
        };
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn a_full_log_stops_instead_of_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(&dir);
        let journal = Journal::new(dev.clone(), 4096, 64 * 1024, 0, 0).unwrap();
        let mut committed = 0;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..40 {
                let (ticket, _) = journal.append(1, |out| out.extend_from_slice(&[1u8; 3000]));
                journal.commit(ticket).unwrap();
                committed += 1;
            }
        }));
        let message = stop_message(outcome);
        assert!(
            message.contains("journal commit on ssd0 failed") && message.contains("is full"),
            "{message}"
        );
        // Later commits are refused, and what was committed is intact (not overwritten).
        let (ticket, _) = journal.append(1, |out| out.push(0));
        assert!(matches!(
            journal.commit(ticket),
            Err(JournalError::Full { .. })
        ));
        let mut count = 0;
        Journal::replay(&dev, 4096, 64 * 1024, 0, |_, _, _| count += 1).unwrap();
        assert_eq!(count, committed);
    }

    #[test]
    fn a_failed_write_or_fsync_stops_naming_the_device_and_is_sticky() {
        use crate::meta::failpoint::{Failpoint, arm};
        for (point, operation) in [
            (Failpoint::JournalWrite, "journal write on ssd0 failed"),
            (Failpoint::JournalSync, "journal fsync on ssd0 failed"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let journal = Journal::new(device(&dir), 0, 1 << 20, 0, 0).unwrap();
            let (ticket, _) = journal.append(1, |out| out.push(1));
            journal.commit(ticket).unwrap();
            arm(point, 0);
            let (ticket, _) = journal.append(1, |out| out.push(2));
            let message = stop_message(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                || journal.commit(ticket),
            )));
            assert!(message.contains(operation), "{message}");
            assert!(message.contains("Input/output error"), "{message}");
            // Never answered durable afterwards, not even for a later record.
            let (ticket, _) = journal.append(1, |out| out.push(3));
            assert!(matches!(
                journal.commit(ticket),
                Err(JournalError::Failed { .. })
            ));
            assert_eq!(journal.durable_ticket(), 1);
        }
    }

    #[test]
    fn a_torn_batch_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(&dir);
        let journal = Journal::new(dev.clone(), 0, 1 << 20, 0, 0).unwrap();
        for byte in 0..3u8 {
            let (ticket, _) = journal.append(2, |out| out.extend_from_slice(&[byte; 5000]));
            journal.commit(ticket).unwrap();
        }
        // Damage the third batch's payload (each batch is 2 pages).
        let batch = 2 * 4096;
        let mut ring = IoRing::new(4).unwrap();
        let mut page = AlignedBuf::new(4096);
        ring.read_at(&dev, 2 * batch + 4096, &mut page).unwrap();
        page[10] ^= 0xFF;
        ring.write_at(&dev, 2 * batch + 4096, &page).unwrap();
        let mut count = 0;
        let summary = Journal::replay(&dev, 0, 1 << 20, 0, |_, _, _| count += 1).unwrap();
        assert_eq!(count, 2);
        assert_eq!(summary.end_lsn, 2 * batch);
    }
}
