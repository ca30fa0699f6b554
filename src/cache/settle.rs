//! What snapshots need from the cache: getting dirty blocks onto the array (so a snapshot,
//! which shares the committed map, holds every write acknowledged before it), and the
//! background thread that gives back the space of deleted snapshots and replaced trees.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Cache;
use super::ChangedExtent;
use crate::meta::VolumeHandle;
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, IoError, SECTION_SIZE};

/// Tree nodes reclaimed per step (64 blocks a leaf); each step holds the metadata lock
/// for about 0.25 ms here (10 GiB: some 650 steps), and host I/O gets three times as long
/// between steps.
const RECLAIM_STEP_NODES: usize = 64;

impl Cache {
    /// Destages until at most `limit_bytes` are dirty or `within` has passed; returns
    /// whether the limit was reached. Hosts keep writing meanwhile.
    pub fn destage_down_to(&self, limit_bytes: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        self.drain_requested.store(true, Ordering::Release);
        let reached = loop {
            if self.dirty_bytes() <= limit_bytes {
                break true;
            }
            if Instant::now() > deadline || self.meta.has_failed() {
                break false;
            }
            self.kick_all_destagers();
            let mut guard = self.signals.lock.lock();
            self.signals
                .space
                .wait_for(&mut guard, Duration::from_millis(5));
        };
        self.drain_requested.store(false, Ordering::Release);
        reached
    }

    /// Which blocks of `[offset, offset+len)` of `volume` differ from dataset `base` (of
    /// the same family): blocks whose committed map entries differ, and blocks written to
    /// either and not destaged yet. At most 64 MiB is looked at per call.
    pub fn changed_status(
        &self,
        volume: &VolumeHandle,
        base: u32,
        offset: u64,
        len: u64,
        out: &mut Vec<ChangedExtent>,
    ) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        let block = BLOCK_SIZE as u64;
        let end = offset + len.min((64 << 20) - offset % block);
        let (first, last) = (offset / block, end.div_ceil(block));
        // Blocks whose map entries differ, as a bitmap over the range (64 MiB at most:
        // 16384 blocks, on the stack).
        let mut differ = [0u64; (64 << 20) / BLOCK_SIZE / 64];
        {
            let state = self.meta.state();
            if !state.maps.contains(base) {
                return Err(IoError::Media {
                    volume: volume.name.clone(),
                    detail: format!(
                        "the base dataset {base} of the changed-blocks context is gone"
                    ),
                });
            }
            state
                .maps
                .diff_range(volume.id.0, base, first, last, &mut |lba| {
                    let bit = lba - first;
                    differ[(bit / 64) as usize] |= 1 << (bit % 64);
                });
        }
        let mut at = offset;
        while at < end {
            let section = at / SECTION_SIZE as u64;
            let dirty = self.dirty_mask((volume.id.0, section)) | self.dirty_mask((base, section));
            let section_end = ((section + 1) * SECTION_SIZE as u64).min(end);
            while at < section_end {
                let lba = at / block;
                let index = (lba % BLOCKS_PER_SECTION as u64) as usize;
                let bit = lba - first;
                let changed = dirty & (1 << index) != 0
                    || differ[(bit / 64) as usize] & (1 << (bit % 64)) != 0;
                let next = ((lba + 1) * block).min(end);
                match out.last_mut() {
                    Some(last) if last.changed == changed => last.length += next - at,
                    _ => out.push(ChangedExtent {
                        length: next - at,
                        changed,
                    }),
                }
                at = next;
            }
        }
        Ok(())
    }

    /// Whether any of `datasets` has blocks written and not destaged yet: for the control
    /// plane.
    ///
    /// With no dirty block in the whole cache (the domains' counters are raised before a
    /// write returns and lowered only after its destage commits), the answer costs three
    /// loads. Otherwise it walks the cache's index, which is bounded by the cache's size,
    /// not by the datasets' sizes.
    pub fn any_dirty(&self, datasets: &[u32]) -> bool {
        if self
            .domains
            .values()
            .all(|domain| domain.dirty_total() == 0)
        {
            return false;
        }
        self.domains.values().any(|domain| {
            domain.shards.iter().any(|shard| {
                let shard = shard.inner.lock();
                shard.index.iter().any(|(key, slot)| {
                    datasets.contains(&key.0) && shard.slots[*slot as usize].dirty != 0
                })
            })
        })
    }

    /// Every block of dataset `volume` written and not destaged yet (their owners' dirty
    /// blocks), in no particular order. Walks the cache's index: for the control plane.
    pub fn dirty_blocks(&self, volume: u32) -> Vec<u64> {
        let mut blocks = Vec::new();
        for domain in self.domains.values() {
            for shard in domain.shards.iter() {
                let shard = shard.inner.lock();
                for (key, slot) in shard.index.iter() {
                    let entry = &shard.slots[*slot as usize];
                    if key.0 != volume || entry.role != super::shard::Role::Primary {
                        continue;
                    }
                    for block in 0..BLOCKS_PER_SECTION {
                        if entry.dirty & (1 << block) != 0 {
                            blocks.push(key.1 * BLOCKS_PER_SECTION as u64 + block as u64);
                        }
                    }
                }
            }
        }
        blocks
    }

    /// The blocks of a section written and not destaged yet.
    pub(super) fn dirty_mask(&self, key: super::shard::SectionKey) -> u16 {
        let owner = self.router.route(key).owner;
        let mut shard = self.domains[owner].shard(key).inner.lock();
        shard
            .find(key)
            .map_or(0, |slot| shard.slots[slot as usize].dirty)
    }

    /// Starts the thread that reclaims the nodes of dropped trees in small steps. It ends
    /// with the cache.
    pub(super) fn start_reclaimer(self: &Arc<Self>) {
        let cache: Weak<Cache> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("troika-reclaim".into())
            .spawn(move || {
                loop {
                    let Some(cache) = cache.upgrade() else { return };
                    if cache.shutdown.load(Ordering::Acquire) || cache.meta.has_failed() {
                        return;
                    }
                    let started = std::time::Instant::now();
                    let done = cache.meta.reclaim_step(RECLAIM_STEP_NODES);
                    drop(cache);
                    if done == 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    } else {
                        // Each step holds the metadata lock, which cache misses need, and a
                        // core: leave host I/O three times as long.
                        let step = started.elapsed();
                        std::thread::sleep((step * 3).max(Duration::from_micros(200)));
                    }
                }
            });
        if let Err(err) = spawned {
            crate::say!(
                "troika: cannot start the space reclaim thread ({err}); deleted snapshots give their space back only at the next start"
            );
        }
    }
}
