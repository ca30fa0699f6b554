//! What the façade and the writer threads share: the media, the partitions, the failure
//! and stop flags; and the rebuild of a partition at open.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::format::{NONE, Record, RecordKind};
use super::partition::Partition;
use super::persist::{self, IdentityLog, LiveIndex, Media, MediaError};
use super::{OpenReport, SsdRead};
use crate::io::IoRing;

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
