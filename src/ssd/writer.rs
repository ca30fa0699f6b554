//! The writer thread of one partition: drains its staging ring into the SSD.
//!
//! Each batch (up to [`BATCH`] blocks): the shard policies admit the keys (a key already
//! resident is skipped, a rejection is counted) and mark their slots "being written"; then
//! the commit order of `persist.rs` (Reuse records, data + sync, Admit records); then the
//! marks are cleared. A token bucket keeps data writes to `write_bytes_per_sec`; what the
//! writer cannot take in time piles up in staging, where further offers are dropped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::BlockIdentity;
use super::format::{PAGE, Record, RecordKind};
use super::inner::{Inner, STOP_ABANDON, STOP_RUNNING};
use super::partition::{BATCH, Partition, bump};
use super::persist::MediaError;
use crate::io::{AlignedBuf, IoKind, IoRequest, IoRing};

/// How long an idle writer sleeps before looking at stop flags and timers.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// A log that has records is checkpointed at least this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// Write budget: bytes that may be written now, refilled at `rate` per second.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    burst: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(bytes_per_sec: u64) -> TokenBucket {
        let rate = bytes_per_sec.max(PAGE as u64) as f64;
        let burst = (rate / 10.0).max((BATCH * PAGE) as f64);
        TokenBucket {
            rate,
            tokens: burst,
            burst,
            refilled: Instant::now(),
        }
    }

    /// How long to wait before `bytes` may be written (zero: take them now).
    fn wait_for(&mut self, bytes: usize) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        let need = bytes as f64;
        if self.tokens >= need {
            self.tokens -= need;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.rate)
        }
    }
}

/// A batch in progress: which staged blocks went into which slots.
struct Batch {
    identities: Vec<BlockIdentity>,
    /// (index in the batch, partition slot) of each admitted block.
    admitted: Vec<(usize, u32)>,
    records: Vec<Record>,
}

/// The writer thread's body for partition `index`.
pub(super) fn run(inner: &Inner, index: usize) {
    let partition = &inner.partitions[index];
    let mut ring = match IoRing::new(BATCH as u32 * 2) {
        Ok(ring) => ring,
        Err(e) => {
            inner.fail_with(format!(
                "SSD cache partition {index}: cannot create the writer's io_uring ring: {e}"
            ));
            return;
        }
    };
    let mut bucket = TokenBucket::new(inner.write_bytes_per_sec);
    let mut batch = Batch {
        identities: Vec::with_capacity(BATCH),
        admitted: Vec::with_capacity(BATCH),
        records: Vec::with_capacity(BATCH),
    };
    let mut last_checkpoint = Instant::now();
    loop {
        let stop = inner.stop.load(Ordering::Acquire);
        if inner.is_failed() || stop == STOP_ABANDON {
            return;
        }
        let taken = partition
            .staging
            .take(BATCH, IDLE_WAIT, &mut batch.identities);
        if taken.count > 0 {
            let result = write_batch(inner, partition, &mut ring, &mut bucket, &mut batch, &taken);
            partition.staging.release(&taken);
            if let Err(e) = result {
                inner.fail(e);
                return;
            }
        }
        let log_used = partition.log.lock().head > 0;
        let due = log_used && last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        let half = partition.log.lock().half_full(&inner.media);
        let stopping = stop != STOP_RUNNING && taken.count == 0;
        if due || half || (stopping && log_used) {
            if let Err(e) = checkpoint(inner, partition, &mut ring) {
                inner.fail(e);
                return;
            }
            last_checkpoint = Instant::now();
        }
        if stopping {
            return;
        }
    }
}

/// Checkpoints `partition`'s log now.
pub(super) fn checkpoint(
    inner: &Inner,
    partition: &Partition,
    ring: &mut IoRing,
) -> Result<(), MediaError> {
    partition
        .log
        .lock()
        .checkpoint(&inner.media, ring, partition)
        .map(|_bytes| ())
}

fn write_batch(
    inner: &Inner,
    partition: &Partition,
    ring: &mut IoRing,
    bucket: &mut TokenBucket,
    batch: &mut Batch,
    taken: &super::staging::Taken,
) -> Result<(), MediaError> {
    admit(partition, batch);
    if batch.admitted.is_empty() {
        return Ok(());
    }
    batch.records.clear();
    for &(_, slot) in &batch.admitted {
        batch.records.push(Record::bare(RecordKind::Reuse, slot, 0));
    }
    partition
        .log
        .lock()
        .append(&inner.media, ring, &batch.records, partition)?;
    throttle(inner, bucket, batch.admitted.len() * PAGE);
    write_data(inner, partition, ring, batch, taken)?;
    let mut log = partition.log.lock();
    batch.records.clear();
    for &(at, slot) in &batch.admitted {
        let identity = batch.identities[at];
        if partition.shard_for(identity.phys).slot_of(identity.phys) == Some(slot) {
            batch
                .records
                .push(Record::new(RecordKind::Admit, slot, identity));
        }
    }
    let result = log.append(&inner.media, ring, &batch.records, partition);
    drop(log);
    for &(at, slot) in &batch.admitted {
        let mut shard = partition.shard_for(batch.identities[at].phys);
        let local = slot - shard.first_slot;
        shard.writing.retain(|writing| *writing != local);
    }
    result
}

/// Lets the policies place the batch's keys; marks the chosen slots as being written.
fn admit(partition: &Partition, batch: &mut Batch) {
    batch.admitted.clear();
    for (at, identity) in batch.identities.iter().enumerate() {
        let mut shard = partition.shard_for(identity.phys);
        if shard.policy.get(identity.phys).is_some() {
            // Offered again (evicted from DRAM after use): a use of the copy it holds.
            continue;
        }
        match shard.policy.admit(identity.phys) {
            super::policy::Admission::Into { slot, evicted } => {
                if evicted.is_some() {
                    bump(&partition.counters.evictions);
                }
                shard.note_used(slot);
                shard.writing.push(slot);
                batch.admitted.push((at, shard.first_slot + slot));
            }
            super::policy::Admission::Rejected => bump(&partition.counters.rejected),
        }
    }
}

/// Waits until the budget allows `bytes`, unless the tier is stopping (a shutdown drains
/// staging at full speed) or failed.
fn throttle(inner: &Inner, bucket: &mut TokenBucket, bytes: usize) {
    loop {
        if inner.stop.load(Ordering::Acquire) != STOP_RUNNING || inner.is_failed() {
            return;
        }
        let wait = bucket.wait_for(bytes);
        if wait.is_zero() {
            return;
        }
        std::thread::sleep(wait.min(IDLE_WAIT));
    }
}

fn write_data(
    inner: &Inner,
    partition: &Partition,
    ring: &mut IoRing,
    batch: &Batch,
    taken: &super::staging::Taken,
) -> Result<(), MediaError> {
    let mut pages: Vec<MutexGuard<'_, AlignedBuf>> = Vec::with_capacity(BATCH);
    partition.staging.lock_pages(taken, &mut pages);
    let media = &inner.media;
    let mut requests: Vec<IoRequest<'_>> = Vec::with_capacity(batch.admitted.len() + 1);
    for &(at, slot) in &batch.admitted {
        requests.push(IoRequest {
            device: &media.device,
            offset: media.base + media.geometry.slot_offset(partition.index, slot),
            kind: IoKind::Write(&pages[at][..PAGE]),
        });
    }
    requests.push(IoRequest {
        device: &media.device,
        offset: 0,
        kind: IoKind::Sync,
    });
    let mut results = Vec::with_capacity(requests.len());
    ring.execute(&mut requests, &mut results);
    for (index, result) in results.iter().enumerate() {
        let what = if index + 1 == results.len() {
            "syncing cached blocks"
        } else {
            "writing a cached block"
        };
        match result {
            Ok(done) if *done == PAGE || index + 1 == results.len() => {}
            Ok(done) => {
                return Err(MediaError {
                    what,
                    error: std::io::Error::other(format!("short write of {done} bytes")),
                });
            }
            Err(e) => {
                return Err(MediaError {
                    what,
                    error: std::io::Error::new(e.kind(), e.to_string()),
                });
            }
        }
    }
    let counters = &partition.counters;
    counters
        .admissions
        .fetch_add(batch.admitted.len() as u64, Ordering::Relaxed);
    counters
        .bytes_written
        .fetch_add((batch.admitted.len() * PAGE) as u64, Ordering::Relaxed);
    Ok(())
}
