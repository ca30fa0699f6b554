//! What the façade and the writer threads share: the media, the partitions, the failure
//! and stop flags; and the rebuild of a partition at open.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::format::{NONE, PAGE, Record, RecordKind};
use super::partition::{Partition, bump};
use super::persist::{self, IdentityLog, LiveIndex, Media, MediaError};
use super::{BlockIdentity, OpenReport, SsdRead};
use crate::io::{AlignedBuf, IoRing};

pub(super) const STOP_RUNNING: u8 = 0;
/// `shutdown`: drain staging at full speed, checkpoint, stop.
pub(super) const STOP_SHUTDOWN: u8 = 1;
/// Dropped without `shutdown`: stop after the batch in hand (what is durable stays so).
pub(super) const STOP_ABANDON: u8 = 2;

/// What the writer threads share with the façade.
pub(super) struct Inner {
    pub(super) media: Media,
    pub(super) partitions: Box<[Partition]>,
    pub(super) failed: AtomicBool,
    pub(super) stop: AtomicU8,
    pub(super) write_bytes_per_sec: u64,
    pub(super) on_failure: Box<dyn Fn(String) + Send + Sync>,
}

impl Inner {
    pub(super) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Fails the tier after an I/O error on the region.
    pub(super) fn fail(&self, error: MediaError) {
        let device = &self.media.device;
        self.fail_with(format!(
            "SSD read cache on device {} ({}): {} failed: {}; the read cache is off and its copies are dropped (data is safe on the NL-SAS drives): replace the SSD, then restart the node to bring the read cache back",
            device.name(),
            device.path().display(),
            error.what,
            error.error
        ));
    }

    /// Fails the tier: from now on reads miss and offers are refused; told once.
    pub(super) fn fail_with(&self, message: String) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        for partition in self.partitions.iter() {
            partition.staging.wake();
        }
        (self.on_failure)(message);
    }

    /// Appends `records` to `partition`'s log; an I/O error fails the tier.
    pub(super) fn log(&self, partition: &Partition, ring: &mut IoRing, records: &[Record]) {
        if records.is_empty() || self.is_failed() {
            return;
        }
        let result = partition
            .log
            .lock()
            .append(&self.media, ring, records, partition);
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// Offers a block for admission to partition `index`; never blocks. False when it
    /// was dropped (and counted): staging full or busy, tier failed or stopping, partition
    /// offline.
    pub(super) fn offer(&self, index: usize, identity: BlockIdentity, bytes: &[u8]) -> bool {
        let Some(part) = self.partitions.get(index) else {
            return false;
        };
        let open = !self.is_failed()
            && self.stop.load(Ordering::Acquire) == STOP_RUNNING
            && part.online.load(Ordering::Acquire);
        if !open || bytes.len() < PAGE || identity.phys == NONE {
            bump(&part.counters.throttled);
            return false;
        }
        if part.staging.offer(identity, bytes) {
            true
        } else {
            bump(&part.counters.throttled);
            false
        }
    }

    /// A relocation within one index shard: the slot of `old` in partition `index` now
    /// answers for `new`. The record to log, if the partition held `old`.
    pub(super) fn rekey_in_place(&self, index: usize, old: u64, new: u64) -> Option<Record> {
        let mut shard = self.partitions[index].shard_for(old);
        let slot = shard.slot_of(old)?;
        let local = slot - shard.first_slot;
        if !shard.writing.contains(&local) && shard.policy.rekey(old, new) {
            let mut record = Record::bare(RecordKind::Relocate, slot, new);
            record.old = old;
            return Some(record);
        }
        shard.policy.remove(old);
        Some(Record::bare(RecordKind::Clear, slot, old))
    }

    /// A relocation across index shards: reads the slot of `old` in partition `index` and
    /// offers its bytes under `moved`, then forgets `old`. The record to log, if the
    /// partition held `old`. Should the slot change hands during the read (evicted and
    /// rewritten), `old` is no longer held there and nothing is offered; every hit is
    /// verified anyway, so a copy read across such a race could only ever miss.
    pub(super) fn carry_over(
        &self,
        index: usize,
        old: u64,
        moved: BlockIdentity,
    ) -> Option<Record> {
        let partition = &self.partitions[index];
        let slot = {
            let mut shard = partition.shard_for(old);
            let slot = shard.slot_of(old)?;
            if shard.writing.contains(&(slot - shard.first_slot)) {
                // Its bytes are not on the SSD yet: drop the copy.
                shard.policy.remove(old);
                return Some(Record::bare(RecordKind::Clear, slot, old));
            }
            slot
        };
        let mut bytes = AlignedBuf::new(PAGE);
        let offset = self.media.base + self.media.geometry.slot_offset(index, slot);
        let read = crate::io::with_thread_ring(|ring| {
            ring.read_at(&self.media.device, offset, &mut bytes)
        });
        if let Err(error) = read {
            self.fail(MediaError {
                what: "reading a cached block to relocate it",
                error,
            });
            return None;
        }
        let mut shard = partition.shard_for(old);
        if !shard.holds(old, slot) {
            return None;
        }
        shard.policy.remove(old);
        drop(shard);
        self.offer(index, moved, &bytes);
        Some(Record::bare(RecordKind::Clear, slot, old))
    }

    /// Reads partition slot `slot` of `holder` (which maps `phys` to it) and verifies it.
    pub(super) fn read_slot(
        &self,
        ring: &mut IoRing,
        holder: &Partition,
        phys: u64,
        slot: u32,
        buf: &mut [u8],
        verify: &dyn Fn(&[u8]) -> bool,
    ) -> SsdRead {
        let offset = self.media.base + self.media.geometry.slot_offset(holder.index, slot);
        if let Err(error) = ring.read_at(&self.media.device, offset, buf) {
            self.fail(MediaError {
                what: "reading a cached block",
                error,
            });
            return SsdRead::Miss;
        }
        if verify(buf) {
            return SsdRead::Hit;
        }
        let real_mismatch = {
            let mut shard = holder.shard_for(phys);
            let held = shard.holds(phys, slot);
            if held {
                shard.policy.remove(phys);
            }
            held
        };
        if !real_mismatch {
            // Evicted or rewritten while we read: the bytes were someone else's.
            return SsdRead::Miss;
        }
        self.log(holder, ring, &[Record::bare(RecordKind::Clear, slot, phys)]);
        SsdRead::Mismatch
    }
}

/// Rebuilds partition `index` from media.
pub(super) fn rebuild(
    media: &Media,
    index: usize,
    ring: &mut IoRing,
    report: &mut OpenReport,
) -> Result<Partition, MediaError> {
    let mut loaded = persist::load(media, index, ring)?;
    report.dropped += loaded.dropped;
    let mut log = std::mem::replace(&mut loaded.log, IdentityLog::new(index));
    let mut needs_checkpoint = loaded.needs_checkpoint;
    let partition = Partition::new(index, media.geometry, IdentityLog::new(index));
    partition.raise_marks(&loaded.entries.marks());
    loaded.entries.for_each_mut(|slot, entry| {
        if entry.phys == NONE {
            return;
        }
        if partition.restore(entry.phys, slot) {
            report.restored += 1;
        } else {
            report.dropped += 1;
            entry.phys = NONE;
            needs_checkpoint = true;
        }
    });
    if needs_checkpoint {
        let mut source = persist::entries_source(media, &loaded.entries);
        log.write_checkpoint(media, ring, &partition.marks(), &mut source)?;
    }
    *partition.log.lock() = log;
    Ok(partition)
}
