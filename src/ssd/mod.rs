//! The SSD read-cache tier between the DRAM cache and the NL-SAS drives.
//!
//! What it promises:
//! - **Keyed by physical block.** A cached block is a copy of one 4 KiB physical block of
//!   the array. The array is redirect-on-write, so a physical block that a map entry names
//!   never changes while it is named: overwrite, trim, restore, delete and copy by
//!   reference change the maps, never the bytes of a named block.
//! - **Never an answer without proof.** [`SsdCache::read`] hands bytes out only when the
//!   caller's `verify` (the map entry's checksum over identity and bytes) accepts them. A
//!   failed verification is a miss, is counted, and drops the entry.
//! - **What changes a physical block's meaning tells the tier**: a segment about to be
//!   reused is forgotten ([`SsdCache::forget_range`]), a block the cleaner moved is carried
//!   over to its new place ([`SsdCache::relocate`]), also when that place is indexed by
//!   another shard.
//! - **Per controller.** The region is split into one partition per controller; each caches
//!   what its controller owns. A failed controller's partition is adopted: reads of any
//!   partition look in it too until the controller is back (safe because every hit is
//!   verified).
//! - **Persistent.** Each slot's identity is written beside the data; at start the index is
//!   rebuilt from it. Anything uncertain is dropped.
//! - **Losing the SSD loses only cache.** An I/O error on the region fails the tier: every
//!   read goes to the drives, nothing is admitted, and `on_failure` is told once.
//! - **Cheap.** Admission never blocks a caller: offered blocks are copied into a bounded
//!   staging area and written by a background writer at a bounded rate; an offer that
//!   does not fit is dropped and counted.

//!
//! How it is built: `format.rs` (the on-media layout), `partition.rs` (index shards and
//! counters), `staging.rs` (the admission staging ring), `writer.rs` (the writer thread and
//! its throttle), `persist.rs` (identity log, checkpoints, rebuild; its module doc states
//! the commit order and why each crash point is safe), `entries.rs` (the shards'
//! high-water marks, which bound what a checkpoint writes and a rebuild allocates).

mod entries;
mod format;
mod inner;
mod partition;
mod persist;
pub mod policy;
mod staging;
mod writer;

#[cfg(test)]
mod measure_tests;
#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::format::{NONE, PAGE, Record, RecordKind};
use self::inner::{Inner, STOP_ABANDON, STOP_RUNNING, STOP_SHUTDOWN, rebuild};
use self::partition::{Partition, bump};
use self::persist::{IdentityLog, Media};
use crate::io::{ALIGN, AlignedBuf, Device, IoRing};

/// Where the cache lives: a byte range of an SSD device.
pub struct CacheRegion {
    pub device: Arc<Device>,
    /// First byte of the region (4 KiB aligned).
    pub offset: u64,
    /// Bytes in the region (a multiple of 4 KiB).
    pub len: u64,
}

/// How the tier runs.
pub struct SsdCacheSettings {
    /// One partition per controller.
    pub partitions: usize,
    /// The writer's budget: bytes written to the SSD per second, at most.
    pub write_bytes_per_sec: u64,
    /// Called once, from whichever thread saw it, when an I/O error fails the tier.
    pub on_failure: Box<dyn Fn(String) + Send + Sync>,
}

/// What a cached block is, persisted beside it on the SSD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIdentity {
    /// Physical block number on the array (the key).
    pub phys: u64,
    /// Volume family (the checksum's identity) and block address the copy was made for.
    pub family: u32,
    pub lba: u64,
    /// The map entry's generation and checksum when the copy was made.
    pub generation: u64,
    pub checksum: u64,
}

/// The outcome of [`SsdCache::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsdRead {
    /// The buffer holds the block, verified.
    Hit,
    /// Not cached (or the tier is off or failed).
    Miss,
    /// A copy was found but failed verification: counted, dropped, and a miss.
    Mismatch,
}

/// What opening found.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// The region was new (or unreadable as a cache) and was formatted.
    pub formatted: bool,
    /// Entries put back into the index from media.
    pub restored: u64,
    /// Entries found on media but dropped as uncertain.
    pub dropped: u64,
    pub elapsed: std::time::Duration,
}

/// Counters and sizes, for `/metrics`, `troika top` and `troika system show`.
#[derive(Clone, Debug, Default)]
pub struct SsdCacheStats {
    pub capacity_bytes: u64,
    pub cached_bytes: u64,
    pub cached_blocks: u64,
    pub index_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub mismatches: u64,
    pub admissions: u64,
    pub evictions: u64,
    /// Offers dropped: staging full or over the write budget.
    pub throttled: u64,
    /// Offers the policy did not take.
    pub rejected: u64,
    pub bytes_written: u64,
    pub failed: bool,
}

/// See the module doc.
pub struct SsdCache {
    inner: Arc<Inner>,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl SsdCache {
    /// Opens the cache on `region`, formatting it when it holds no cache of this layout,
    /// and starts the writer thread(s).
    pub fn open(
        region: CacheRegion,
        settings: SsdCacheSettings,
    ) -> Result<(Arc<SsdCache>, OpenReport), String> {
        let started = Instant::now();
        let device = region.device.clone();
        let name = format!(
            "SSD cache device {} ({})",
            device.name(),
            device.path().display()
        );
        let aligned =
            region.offset.is_multiple_of(PAGE as u64) && region.len.is_multiple_of(PAGE as u64);
        let fits = region
            .offset
            .checked_add(region.len)
            .is_some_and(|end| end <= device.size());
        if !aligned || !fits {
            return Err(format!(
                "{name}: the cache region at offset {} of {} bytes is not 4 KiB aligned or does not fit the device ({} bytes); fix the read cache's size in the hardware model",
                region.offset,
                region.len,
                device.size()
            ));
        }
        let geometry = format::Geometry::for_region(region.len, settings.partitions)
            .map_err(|e| format!("{name}: {e}"))?;
        let mut ring =
            IoRing::new(64).map_err(|e| format!("{name}: cannot create an io_uring ring: {e}"))?;
        let io_error = |what: &str, e: &dyn std::fmt::Display| {
            format!(
                "{name}: {what} failed at open: {e}; check or replace the SSD (the node can run without its read cache)"
            )
        };
        let mut page = AlignedBuf::new(PAGE);
        ring.read_at(&device, region.offset, &mut page)
            .map_err(|e| io_error("reading the cache header", &e))?;
        let mut report = OpenReport::default();
        let instance = match format::decode_header(&page, &geometry) {
            Some(instance) => instance,
            None => {
                let instance = crate::io::faults::random_seed();
                format::encode_header(&geometry, instance, &mut page);
                ring.write_at(&device, region.offset, &page)
                    .and_then(|()| ring.sync(&device))
                    .map_err(|e| io_error("writing the cache header", &e))?;
                report.formatted = true;
                instance
            }
        };
        let media = Media {
            device,
            base: region.offset,
            geometry,
            instance,
        };
        let mut partitions = Vec::with_capacity(settings.partitions);
        for index in 0..settings.partitions {
            let partition = if report.formatted {
                Partition::new(index, geometry, IdentityLog::new(index))
            } else {
                rebuild(&media, index, &mut ring, &mut report)
                    .map_err(|e| io_error(e.what, &e.error))?
            };
            partitions.push(partition);
        }
        let inner = Arc::new(Inner {
            media,
            partitions: partitions.into_boxed_slice(),
            failed: AtomicBool::new(false),
            stop: AtomicU8::new(STOP_RUNNING),
            write_bytes_per_sec: settings.write_bytes_per_sec,
            on_failure: settings.on_failure,
        });
        let mut writers = Vec::with_capacity(settings.partitions);
        for index in 0..settings.partitions {
            let inner = inner.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ssd-writer-{index}"))
                .spawn(move || writer::run(&inner, index))
                .map_err(|e| format!("{name}: cannot start the writer thread: {e}"))?;
            writers.push(handle);
        }
        report.elapsed = started.elapsed();
        let cache = SsdCache {
            inner,
            writers: Mutex::new(writers),
        };
        Ok((Arc::new(cache), report))
    }

    /// Reads the block at `phys` into `buf` (4 KiB) when partition `partition`, or an
    /// adopted partition, holds it and `verify` accepts the bytes.
    pub fn read(
        &self,
        ring: &mut IoRing,
        partition: usize,
        phys: u64,
        buf: &mut [u8],
        verify: &dyn Fn(&[u8]) -> bool,
    ) -> SsdRead {
        let inner = &*self.inner;
        let Some(own) = inner.partitions.get(partition) else {
            return SsdRead::Miss;
        };
        let usable = buf.len() >= PAGE && (buf.as_ptr() as usize).is_multiple_of(ALIGN);
        if inner.is_failed() || !usable || phys == NONE {
            bump(&own.counters.misses);
            return SsdRead::Miss;
        }
        let buf = &mut buf[..PAGE];
        let adopted = (0..inner.partitions.len()).filter(|&other| {
            other != partition && !inner.partitions[other].online.load(Ordering::Acquire)
        });
        for candidate in std::iter::once(partition).chain(adopted) {
            let holder = &inner.partitions[candidate];
            let Some(slot) = holder.shard_for(phys).slot_for_read(phys) else {
                continue;
            };
            let outcome = inner.read_slot(ring, holder, phys, slot, buf, verify);
            let counter = match outcome {
                SsdRead::Hit => &own.counters.hits,
                SsdRead::Miss => &own.counters.misses,
                SsdRead::Mismatch => &own.counters.mismatches,
            };
            bump(counter);
            return outcome;
        }
        bump(&own.counters.misses);
        SsdRead::Miss
    }

    /// Offers a block for admission to `partition`; never blocks. Returns false when it was
    /// dropped (staging full, over budget, tier failed).
    pub fn offer(&self, partition: usize, identity: BlockIdentity, bytes: &[u8]) -> bool {
        self.inner.offer(partition, identity, bytes)
    }

    /// Forgets every cached block with `first <= phys < end` (a segment about to be
    /// written again). Returns when the forgetting is durable.
    pub fn forget_range(&self, first: u64, end: u64) {
        let inner = &*self.inner;
        if end <= first || inner.is_failed() {
            return;
        }
        let mut records = Vec::new();
        let mut keys = Vec::new();
        for partition in inner.partitions.iter() {
            let cached = partition.cached_blocks();
            if cached == 0 {
                continue;
            }
            records.clear();
            if end - first < cached {
                // A range smaller than the cache: probe each of its keys.
                for phys in first..end {
                    let mut shard = partition.shard_for(phys);
                    if let Some(slot) = shard.slot_of(phys) {
                        shard.policy.remove(phys);
                        records.push(Record::bare(RecordKind::Clear, slot, phys));
                    }
                }
            } else {
                // A range larger than the cache: scan what each shard holds.
                for shard in partition.shards.iter() {
                    let mut shard = shard.lock();
                    keys.clear();
                    shard.policy.for_each_resident(&mut |key, _| {
                        if (first..end).contains(&key) {
                            keys.push(key);
                        }
                    });
                    for &phys in &keys {
                        if let Some(slot) = shard.slot_of(phys) {
                            shard.policy.remove(phys);
                            records.push(Record::bare(RecordKind::Clear, slot, phys));
                        }
                    }
                }
            }
            crate::io::with_thread_ring(|ring| inner.log(partition, ring, &records));
        }
    }

    /// The cleaner moved a block from `old` to `moved.phys` (`moved` is its identity
    /// there): the copy now answers for the new place. It stays in its slot when the new
    /// key falls in the same index shard as `old`; otherwise its 4 KiB are read back (one
    /// SSD read, on the caller's thread) and offered under the new key, and `old` is
    /// forgotten. A copy being written right now, or one the staging area has no room
    /// for, is dropped. Never waits on the writer; returns when the log says so.
    pub fn relocate(&self, old: u64, moved: BlockIdentity) {
        self.relocate_all(&[(old, moved)]);
    }

    /// [`SsdCache::relocate`] for every move of a cleaning batch, with one identity-log
    /// write per partition for all of them (not one write and sync per block).
    pub fn relocate_all(&self, moves: &[(u64, BlockIdentity)]) {
        let inner = &*self.inner;
        if inner.is_failed() {
            return;
        }
        let geometry = &inner.media.geometry;
        for index in 0..inner.partitions.len() {
            let mut records = Vec::new();
            for &(old, moved) in moves {
                let new = moved.phys;
                if old == new || new == NONE {
                    continue;
                }
                let record = if geometry.shard_of_key(old) == geometry.shard_of_key(new) {
                    inner.rekey_in_place(index, old, new)
                } else {
                    inner.carry_over(index, old, moved)
                };
                records.extend(record);
            }
            if !records.is_empty() {
                let partition = &inner.partitions[index];
                crate::io::with_thread_ring(|ring| inner.log(partition, ring, &records));
            }
        }
    }

    /// A controller failed (`online == false`: its partition is adopted by every other
    /// partition's reads and takes no admissions) or came back.
    pub fn set_partition_online(&self, partition: usize, online: bool) {
        if let Some(part) = self.inner.partitions.get(partition) {
            part.online.store(online, Ordering::Release);
        }
    }

    /// The tier's counters, whole and per partition.
    pub fn stats(&self) -> (SsdCacheStats, Vec<SsdCacheStats>) {
        let failed = self.inner.is_failed();
        let parts: Vec<SsdCacheStats> = self
            .inner
            .partitions
            .iter()
            .map(|partition| partition.stats(failed))
            .collect();
        let mut total = SsdCacheStats {
            failed,
            ..SsdCacheStats::default()
        };
        for part in &parts {
            total.capacity_bytes += part.capacity_bytes;
            total.cached_bytes += part.cached_bytes;
            total.cached_blocks += part.cached_blocks;
            total.index_bytes += part.index_bytes;
            total.hits += part.hits;
            total.misses += part.misses;
            total.mismatches += part.mismatches;
            total.admissions += part.admissions;
            total.evictions += part.evictions;
            total.throttled += part.throttled;
            total.rejected += part.rejected;
            total.bytes_written += part.bytes_written;
        }
        (total, parts)
    }

    /// Waits (at most `limit`) until every block offered so far has been written or
    /// dropped by the writers. Returns false when it timed out.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        for partition in self.inner.partitions.iter() {
            while !partition.staging.is_drained() {
                let now = Instant::now();
                if self.inner.is_failed() || now >= deadline {
                    return self.inner.is_failed();
                }
                partition
                    .staging
                    .wait_change((deadline - now).min(Duration::from_millis(20)));
            }
        }
        true
    }

    /// Writes what is staged and persists the index (a clean stop). Idempotent.
    pub fn shutdown(&self) {
        self.stop(STOP_SHUTDOWN);
    }

    fn stop(&self, how: u8) {
        let _ = self.inner.stop.compare_exchange(
            STOP_RUNNING,
            how,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        for partition in self.inner.partitions.iter() {
            partition.staging.wake();
        }
        let writers = std::mem::take(&mut *self.writers.lock());
        for writer in writers {
            if writer.join().is_err() {
                crate::say!("troika: an SSD cache writer thread panicked; the read cache stops");
            }
        }
    }
}

impl Drop for SsdCache {
    fn drop(&mut self) {
        self.stop(STOP_ABANDON);
    }
}
