//! Cache: the DRAM write-back cache in 64 KiB sections, the vault flush that makes it
//! durable, and the destage stream that moves it onto the array.
//!
//! Promises:
//! - A write returns once its bytes are in cache (the controllers layer adds the mirror).
//!   Any byte alignment is accepted; partial blocks are merged with the current block.
//! - A read returns the newest acknowledged bytes: from cache, or from the array through a
//!   verified (and if need be repaired) read of the map.
//! - `flush` returns once every write acknowledged before it is durable: dirty blocks not
//!   yet in the vault are appended to the journal and the journal is synced.
//! - Destage writes dirty blocks in whole rows with parity, commits their map entries, and
//!   only then marks them clean; blocks rewritten meanwhile stay dirty.
//! - Memory is the configured budget, allocated once; writers wait (back-pressure) while
//!   dirty data fills it, and reads bypass the cache when no clean slot can be freed.
//!
//! Lock order: flush lock → metadata state lock → shard lock. Nothing takes a lock to the
//! left while holding one to its right.

mod destage;
mod shard;
mod vault;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::io::{AlignedBuf, BufferPool, with_thread_ring};
use crate::meta::{BlockRead, MetaStore, RecoveredBlock, VolumeHandle};
use crate::target::Extent;
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, IoError, SECTION_SIZE};
pub use shard::SectionKey;
use shard::ShardInner;

const SHARDS: usize = 16;

/// Counters an operator watches.
#[derive(Default)]
pub struct CacheCounters {
    pub read_hits: AtomicU64,
    pub read_misses: AtomicU64,
    pub blocks_written: AtomicU64,
    pub blocks_destaged: AtomicU64,
    pub blocks_vaulted: AtomicU64,
    pub blocks_relocated: AtomicU64,
    pub flushes: AtomicU64,
}

struct Shard {
    inner: Mutex<ShardInner>,
}

/// Wakes the destage thread and lets writers wait for space.
struct Signals {
    lock: Mutex<()>,
    destage: Condvar,
    space: Condvar,
}

/// See the module doc.
pub struct Cache {
    meta: Arc<MetaStore>,
    shards: Box<[Shard]>,
    capacity_blocks: u64,
    dirty_blocks: AtomicU64,
    /// Writers wait above this many dirty blocks.
    dirty_limit: u64,
    /// Destage starts above this many dirty blocks...
    destage_high: u64,
    /// ...and, once started, goes on down to this many.
    destage_low: u64,
    flush_lock: Mutex<vault::FlushState>,
    signals: Signals,
    drain_requested: AtomicBool,
    /// A writer found no slot it could take: destage now, whatever the dirty level.
    slot_pressure: AtomicBool,
    shutdown: AtomicBool,
    destager: Mutex<Option<JoinHandle<()>>>,
    /// Section buffers for prefetch (CACHE) requests, allocated once.
    prefetch_buffers: Arc<BufferPool>,
    pub counters: CacheCounters,
}

fn shard_of(key: SectionKey) -> usize {
    let mixed = (u64::from(key.0) << 40 ^ key.1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 59) as usize % SHARDS
}

thread_local! {
    static SCRATCH: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::new(BLOCK_SIZE));
}

impl Cache {
    /// A cache of `capacity_bytes` over `meta`, with the flushed blocks recovered from the
    /// vault installed as dirty; starts the destage thread.
    pub fn start(
        meta: Arc<MetaStore>,
        capacity_bytes: u64,
        recovered: Vec<RecoveredBlock>,
    ) -> Arc<Cache> {
        let slots_per_shard = ((capacity_bytes / SECTION_SIZE as u64) as usize / SHARDS).max(8);
        let capacity_blocks = (slots_per_shard * SHARDS * BLOCKS_PER_SECTION) as u64;
        let cache = Arc::new(Cache {
            meta,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    inner: Mutex::new(ShardInner::new(slots_per_shard)),
                })
                .collect(),
            capacity_blocks,
            dirty_blocks: AtomicU64::new(0),
            dirty_limit: capacity_blocks * 85 / 100,
            destage_high: capacity_blocks * 70 / 100,
            destage_low: capacity_blocks * 55 / 100,
            flush_lock: Mutex::new(vault::FlushState::default()),
            signals: Signals {
                lock: Mutex::new(()),
                destage: Condvar::new(),
                space: Condvar::new(),
            },
            drain_requested: AtomicBool::new(false),
            slot_pressure: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            destager: Mutex::new(None),
            prefetch_buffers: BufferPool::new(4, SECTION_SIZE),
            counters: CacheCounters::default(),
        });
        cache.install_recovered(recovered);
        let worker = cache.clone();
        let handle = std::thread::Builder::new()
            .name("troika-destage".into())
            .spawn(move || worker.destage_loop())
            .expect("spawning the destage thread");
        *cache.destager.lock() = Some(handle);
        cache
    }

    pub fn meta(&self) -> &Arc<MetaStore> {
        &self.meta
    }

    /// Blocks of DRAM the cache holds.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_blocks * BLOCK_SIZE as u64
    }

    /// Bytes written but not destaged.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_blocks.load(Ordering::Acquire) * BLOCK_SIZE as u64
    }

    fn shard(&self, key: SectionKey) -> &Shard {
        &self.shards[shard_of(key)]
    }

    fn check_range(volume: &VolumeHandle, offset: u64, len: u64) -> Result<(), IoError> {
        let size = volume.size();
        if volume.is_deleted() {
            return Err(IoError::VolumeGone {
                volume: volume.name.clone(),
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(IoError::OutOfRange { offset, len, size }),
        }
    }

    /// Hosts may change the volume: it is not write-protected.
    fn check_not_protected(volume: &VolumeHandle) -> Result<(), IoError> {
        if volume.is_write_protected() {
            return Err(IoError::ReadOnly {
                volume: volume.name.clone(),
            });
        }
        Ok(())
    }

    /// Hosts may write the volume: it is not write-protected and its pool is not LOCKED
    /// (full). A locked pool refuses every write, including overwrites, until space is
    /// freed, so no host sees some of its writes land and others not at random.
    fn check_writable(volume: &VolumeHandle) -> Result<(), IoError> {
        Self::check_not_protected(volume)?;
        if volume.home_pool.is_full() {
            return Err(IoError::NoSpace {
                pool: volume.home_pool.name.clone(),
            });
        }
        Ok(())
    }

    fn kick_destage(&self) {
        self.signals.destage.notify_one();
    }

    /// One back-pressure wait: wakes the destage thread and sleeps until it signals space
    /// or `period` passes. The 120 s limit starts at the first wait (`deadline` is `None`
    /// until then), so the fast path reads no clock; past it, `stuck` is the error.
    fn wait_for_space(
        &self,
        deadline: &mut Option<Instant>,
        period: Duration,
        stuck: impl FnOnce() -> IoError,
    ) -> Result<(), IoError> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(IoError::ShuttingDown);
        }
        let limit = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(120));
        if Instant::now() > limit || self.meta.has_failed() {
            return Err(stuck());
        }
        self.kick_destage();
        let mut guard = self.signals.lock.lock();
        self.signals.space.wait_for(&mut guard, period);
        Ok(())
    }

    /// Waits while dirty data fills the cache (back-pressure on writers).
    fn wait_for_dirty_room(&self) -> Result<(), IoError> {
        let mut deadline = None;
        while self.dirty_blocks.load(Ordering::Acquire) >= self.dirty_limit {
            self.wait_for_space(&mut deadline, Duration::from_millis(20), || {
                IoError::Media {
                    volume: String::new(),
                    detail: "destage made no progress for 120 s; check the NL-SAS devices".into(),
                }
            })?;
        }
        Ok(())
    }

    /// Writes `data` at byte `offset` of `volume` into cache.
    pub fn write(&self, volume: &VolumeHandle, offset: u64, data: &[u8]) -> Result<(), IoError> {
        Self::check_range(volume, offset, data.len() as u64)?;
        Self::check_writable(volume)?;
        self.wait_for_dirty_room()?;
        let generation = self.meta.next_generation();
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let section = at / SECTION_SIZE as u64;
            let within = (at % SECTION_SIZE as u64) as usize;
            let take = (SECTION_SIZE - within).min(data.len() - done);
            self.write_section(
                volume,
                section,
                within,
                &data[done..done + take],
                generation,
            )?;
            done += take;
        }
        self.counters
            .blocks_written
            .fetch_add(data.len().div_ceil(BLOCK_SIZE) as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_section(
        &self,
        volume: &VolumeHandle,
        section: u64,
        within: usize,
        data: &[u8],
        generation: u64,
    ) -> Result<(), IoError> {
        let key = (volume.id.0, section);
        let first_block = within / BLOCK_SIZE;
        let last_block = (within + data.len() - 1) / BLOCK_SIZE;
        let base_lba = section * BLOCKS_PER_SECTION as u64;
        let mut looked_up: Option<u16> = None;
        let mut deadline = None;
        loop {
            let mut shard = self.shard(key).inner.lock();
            let Some(slot) = shard.find_or_insert(key) else {
                drop(shard);
                self.slot_pressure.store(true, Ordering::Release);
                self.wait_for_space(&mut deadline, Duration::from_millis(10), || IoError::Media {
                    volume: volume.name.clone(),
                    detail: "no cache slot came free for 120 s; destage is stuck, check the NL-SAS devices".into(),
                })?;
                continue;
            };
            // Partial blocks need their current bytes first.
            let mut missing = None;
            for block in [first_block, last_block] {
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + data.len());
                let partial = end - start < BLOCK_SIZE;
                if partial && shard.slots[slot as usize].valid & (1 << block) == 0 {
                    missing = Some(block);
                    break;
                }
            }
            if let Some(block) = missing {
                drop(shard);
                self.fill_block(volume, key, block)?;
                continue;
            }
            // Space accounting: a block that is neither dirty nor mapped needs a block of
            // its pool. Whether it is mapped is known from earlier fills and destages;
            // otherwise ask the map once (outside the shard lock).
            let range = block_mask(first_block, last_block);
            let entry = &mut shard.slots[slot as usize];
            let candidates = range & !(entry.dirty | entry.reserved);
            if candidates & !entry.known != 0 {
                match looked_up {
                    None => {
                        drop(shard);
                        looked_up =
                            Some(self.mapped_bits(volume.id.0, base_lba, first_block, last_block));
                        continue;
                    }
                    Some(bits) => {
                        entry.mapped = (entry.mapped & entry.known) | (bits & range & !entry.known);
                        entry.known |= range;
                    }
                }
            }
            let need = candidates & !entry.mapped;
            let count = u64::from(need.count_ones());
            for taken in 0..count {
                if !volume.pool.try_reserve() {
                    volume.pool.release(taken);
                    return Err(IoError::NoSpace {
                        pool: volume.pool.name.clone(),
                    });
                }
            }
            if need != 0 {
                entry.reserved |= need;
                entry.pool = Some(volume.pool.clone());
            }
            let mut newly_dirty = 0;
            for block in first_block..=last_block {
                let bit = 1u16 << block;
                let entry = &mut shard.slots[slot as usize];
                if entry.dirty & bit == 0 {
                    newly_dirty += 1;
                }
                entry.valid |= bit;
                entry.dirty |= bit;
                entry.unvaulted |= bit;
                entry.generation[block] = generation;
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + data.len());
                let from = start - within;
                shard.block_mut(slot, block)[start - block * BLOCK_SIZE..end - block * BLOCK_SIZE]
                    .copy_from_slice(&data[from..from + end - start]);
            }
            shard.queue_dirty(slot);
            shard.queue_unvaulted(slot);
            drop(shard);
            if newly_dirty > 0 {
                let dirty =
                    self.dirty_blocks.fetch_add(newly_dirty, Ordering::AcqRel) + newly_dirty;
                if dirty >= self.destage_high {
                    self.kick_destage();
                }
            }
            return Ok(());
        }
    }

    /// Which blocks `first..=last` of the section starting at `base_lba` have map entries.
    fn mapped_bits(&self, volume: u32, base_lba: u64, first: usize, last: usize) -> u16 {
        let state = self.meta.state();
        let Some(map) = state.maps.get(&volume) else {
            return 0;
        };
        let mut bits = 0u16;
        for block in first..=last {
            if map.get(base_lba + block as u64).is_some() {
                bits |= 1 << block;
            }
        }
        bits
    }

    /// Brings one block into its slot from the array (zeroes when unmapped).
    fn fill_block(
        &self,
        volume: &VolumeHandle,
        key: SectionKey,
        block: usize,
    ) -> Result<(), IoError> {
        let lba = key.1 * BLOCKS_PER_SECTION as u64 + block as u64;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let version = self.meta.map_version();
            let outcome =
                with_thread_ring(|ring| self.meta.read_block(ring, volume, lba, &mut scratch))?;
            self.install_clean(key, block, &scratch, version, outcome);
            Ok(())
        })
    }

    /// Installs bytes read from the array, unless the block changed meanwhile.
    fn install_clean(
        &self,
        key: SectionKey,
        block: usize,
        bytes: &[u8],
        version: u64,
        outcome: BlockRead,
    ) {
        let mut shard = self.shard(key).inner.lock();
        if self.meta.map_version() != version {
            return;
        }
        let Some(slot) = shard.find_or_insert(key) else {
            return;
        };
        let bit = 1u16 << block;
        if shard.slots[slot as usize].valid & bit != 0 {
            return;
        }
        shard
            .block_mut(slot, block)
            .copy_from_slice(&bytes[..BLOCK_SIZE]);
        let entry = &mut shard.slots[slot as usize];
        entry.valid |= bit;
        if let BlockRead::Repaired { generation } = outcome {
            // Rewrite the repaired block elsewhere: it goes out with the next destage.
            entry.dirty |= bit;
            entry.unvaulted |= bit;
            entry.generation[block] = generation;
            shard.queue_dirty(slot);
            shard.queue_unvaulted(slot);
            drop(shard);
            self.dirty_blocks.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Reads `buf.len()` bytes at `offset` of `volume`.
    pub fn read(&self, volume: &VolumeHandle, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        Self::check_range(volume, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let section = at / SECTION_SIZE as u64;
            let within = (at % SECTION_SIZE as u64) as usize;
            let take = (SECTION_SIZE - within).min(buf.len() - done);
            self.read_section(volume, section, within, &mut buf[done..done + take])?;
            done += take;
        }
        Ok(())
    }

    fn read_section(
        &self,
        volume: &VolumeHandle,
        section: u64,
        within: usize,
        out: &mut [u8],
    ) -> Result<(), IoError> {
        let key = (volume.id.0, section);
        let first_block = within / BLOCK_SIZE;
        let last_block = (within + out.len() - 1) / BLOCK_SIZE;
        let mut missing = 0u16;
        {
            let mut shard = self.shard(key).inner.lock();
            let slot = shard.find(key);
            for block in first_block..=last_block {
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + out.len());
                let dest = &mut out[start - within..end - within];
                match slot {
                    Some(slot) if shard.slots[slot as usize].valid & (1 << block) != 0 => {
                        dest.copy_from_slice(
                            &shard.block(slot, block)
                                [start - block * BLOCK_SIZE..end - block * BLOCK_SIZE],
                        );
                    }
                    _ => missing |= 1 << block,
                }
            }
        }
        let blocks = (last_block - first_block + 1) as u64;
        let misses = u64::from(missing.count_ones());
        self.counters
            .read_hits
            .fetch_add(blocks - misses, Ordering::Relaxed);
        self.counters
            .read_misses
            .fetch_add(misses, Ordering::Relaxed);
        if missing == 0 {
            return Ok(());
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for block in first_block..=last_block {
                if missing & (1 << block) == 0 {
                    continue;
                }
                let lba = section * BLOCKS_PER_SECTION as u64 + block as u64;
                let version = self.meta.map_version();
                let outcome =
                    with_thread_ring(|ring| self.meta.read_block(ring, volume, lba, &mut scratch))?;
                let start = (block * BLOCK_SIZE).max(within);
                let end = ((block + 1) * BLOCK_SIZE).min(within + out.len());
                // A write may have landed in cache since we looked: it wins.
                if !self.copy_if_cached(
                    key,
                    block,
                    start,
                    end,
                    &mut out[start - within..end - within],
                ) {
                    out[start - within..end - within].copy_from_slice(
                        &scratch[start - block * BLOCK_SIZE..end - block * BLOCK_SIZE],
                    );
                    if outcome != BlockRead::Unmapped {
                        self.install_clean(key, block, &scratch, version, outcome);
                    }
                }
            }
            Ok(())
        })
    }

    fn copy_if_cached(
        &self,
        key: SectionKey,
        block: usize,
        start: usize,
        end: usize,
        dest: &mut [u8],
    ) -> bool {
        let mut shard = self.shard(key).inner.lock();
        match shard.find(key) {
            Some(slot) if shard.slots[slot as usize].valid & (1 << block) != 0 => {
                dest.copy_from_slice(
                    &shard.block(slot, block)[start - block * BLOCK_SIZE..end - block * BLOCK_SIZE],
                );
                true
            }
            _ => false,
        }
    }

    /// Makes `[offset, offset+len)` read as zeroes, releasing whole blocks' space.
    pub fn trim(&self, volume: &VolumeHandle, offset: u64, len: u64) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        Self::check_not_protected(volume)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first_full = offset.div_ceil(BLOCK_SIZE as u64);
        let end_full = end / BLOCK_SIZE as u64;
        if first_full >= end_full {
            return self.write_zero_bytes(volume, offset, len);
        }
        let head = first_full * BLOCK_SIZE as u64 - offset;
        if head > 0 {
            self.write_zero_bytes(volume, offset, head)?;
        }
        let tail_start = end_full * BLOCK_SIZE as u64;
        if tail_start < end {
            self.write_zero_bytes(volume, tail_start, end - tail_start)?;
        }
        self.discard_blocks(volume.id.0, first_full, end_full);
        Ok(())
    }

    /// Drops blocks `[start, end)` of a volume from cache and map (trim, shrink, delete).
    ///
    /// The metadata lock is held throughout, so a reader that looked the map up before
    /// the discard cannot put the old bytes back into cache after it (its map version
    /// check fails), and no destage commit can slip in between.
    pub fn discard_blocks(&self, volume: u32, start: u64, end: u64) {
        let mut state = self.meta.state_mut();
        let generation = self.meta.next_generation();
        let first_section = start / BLOCKS_PER_SECTION as u64;
        let end_section = end.div_ceil(BLOCKS_PER_SECTION as u64);
        let mut released = 0u64;
        for (index, shard) in self.shards.iter().enumerate() {
            let mut shard = shard.inner.lock();
            let slots: Vec<u32> = if end_section - first_section <= shard.slots.len() as u64 {
                (first_section..end_section)
                    .filter(|section| shard_of((volume, *section)) == index)
                    .filter_map(|section| shard.index.get(&(volume, section)).copied())
                    .collect()
            } else {
                shard
                    .index
                    .iter()
                    .filter(|((v, section), _)| {
                        *v == volume && (first_section..end_section).contains(section)
                    })
                    .map(|(_, slot)| *slot)
                    .collect()
            };
            for slot in slots {
                let section = shard.slots[slot as usize]
                    .key
                    .expect("indexed slot has a key")
                    .1;
                let mut mask = 0u16;
                for block in 0..BLOCKS_PER_SECTION {
                    let lba = section * BLOCKS_PER_SECTION as u64 + block as u64;
                    if (start..end).contains(&lba)
                        && shard.slots[slot as usize].generation[block] < generation
                    {
                        mask |= 1 << block;
                    }
                }
                let entry = &mut shard.slots[slot as usize];
                let reserved = (entry.reserved & entry.dirty & mask).count_ones();
                if reserved > 0
                    && let Some(pool) = &entry.pool
                {
                    pool.release(u64::from(reserved));
                }
                released += u64::from((entry.dirty & mask).count_ones());
                entry.valid &= !mask;
                entry.known &= !mask;
                entry.dirty &= !mask;
                entry.unvaulted &= !mask;
                entry.reserved &= !mask;
                if entry.dirty == 0 {
                    entry.vault_lsn = u64::MAX;
                }
                if entry.valid == 0 && entry.dirty == 0 {
                    shard.release(slot);
                }
            }
        }
        self.meta
            .trim_locked(&mut state, volume, start, end, generation);
        drop(state);
        if released > 0 {
            self.dirty_blocks.fetch_sub(released, Ordering::AcqRel);
            self.signals.space.notify_all();
        }
    }

    fn write_zero_bytes(
        &self,
        volume: &VolumeHandle,
        offset: u64,
        len: u64,
    ) -> Result<(), IoError> {
        static ZEROES: [u8; SECTION_SIZE] = [0; SECTION_SIZE];
        let mut done = 0;
        while done < len {
            let take = (len - done).min(SECTION_SIZE as u64);
            self.write(volume, offset + done, &ZEROES[..take as usize])?;
            done += take;
        }
        Ok(())
    }

    /// Zeroes a range: as a trim (no space kept), or with `no_hole` as written zeroes.
    pub fn write_zeroes(
        &self,
        volume: &VolumeHandle,
        offset: u64,
        len: u64,
        no_hole: bool,
        fast_only: bool,
    ) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        if no_hole {
            if fast_only {
                return Err(IoError::NotFast);
            }
            return self.write_zero_bytes(volume, offset, len);
        }
        self.trim(volume, offset, len)
    }

    /// Brings a range into cache (reads and discards it), at most 64 MiB.
    pub fn prefetch(&self, volume: &VolumeHandle, offset: u64, len: u64) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        let mut buf = self.prefetch_buffers.take();
        let len = len.min(64 << 20);
        let mut done = 0;
        while done < len {
            let take =
                (len - done).min(SECTION_SIZE as u64 - (offset + done) % SECTION_SIZE as u64);
            self.read(volume, offset + done, &mut buf[..take as usize])?;
            done += take;
        }
        Ok(())
    }

    /// Allocation of a range, block by block, merged into extents (at most 64 MiB looked at).
    pub fn block_status(
        &self,
        volume: &VolumeHandle,
        offset: u64,
        len: u64,
        out: &mut Vec<Extent>,
    ) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        let end = offset + len.min(64 << 20);
        let mut at = offset;
        while at < end {
            let section = at / SECTION_SIZE as u64;
            let key = (volume.id.0, section);
            let cached = {
                let mut shard = self.shard(key).inner.lock();
                shard
                    .find(key)
                    .map_or(0, |slot| shard.slots[slot as usize].valid)
            };
            let section_end = ((section + 1) * SECTION_SIZE as u64).min(end);
            let state = self.meta.state();
            let map = state.maps.get(&volume.id.0);
            while at < section_end {
                let block = ((at % SECTION_SIZE as u64) / BLOCK_SIZE as u64) as usize;
                let lba = at / BLOCK_SIZE as u64;
                let allocated =
                    cached & (1 << block) != 0 || map.is_some_and(|map| map.get(lba).is_some());
                let next = ((lba + 1) * BLOCK_SIZE as u64).min(end);
                let length = next - at;
                match out.last_mut() {
                    Some(last) if last.hole != allocated => last.length += length,
                    _ => out.push(Extent {
                        length,
                        hole: !allocated,
                        zero: !allocated,
                    }),
                }
                at = next;
            }
        }
        Ok(())
    }

    /// Destages everything, checkpoints and stops the destage thread.
    pub fn shutdown(&self) -> Result<(), IoError> {
        let result = self.drain();
        self.shutdown.store(true, Ordering::Release);
        self.kick_destage();
        if let Some(handle) = self.destager.lock().take() {
            let _ = handle.join();
        }
        result?;
        self.checkpoint().map_err(|err| IoError::Media {
            volume: String::new(),
            detail: err.to_string(),
        })
    }

    /// Asks the destage thread to write out everything dirty and waits until it has.
    pub fn drain(&self) -> Result<(), IoError> {
        let deadline = Instant::now() + Duration::from_secs(600);
        self.drain_requested.store(true, Ordering::Release);
        while self.dirty_blocks.load(Ordering::Acquire) > 0 {
            if self.meta.has_failed() {
                return Err(IoError::Media {
                    volume: String::new(),
                    detail: "the metadata journal failed; restart the node to recover from media"
                        .into(),
                });
            }
            if Instant::now() > deadline {
                return Err(IoError::Media {
                    volume: String::new(),
                    detail: "drain did not finish in 600 s".into(),
                });
            }
            self.kick_destage();
            let mut guard = self.signals.lock.lock();
            self.signals
                .space
                .wait_for(&mut guard, Duration::from_millis(20));
        }
        self.drain_requested.store(false, Ordering::Release);
        Ok(())
    }
}

/// Bits `first..=last` of a section mask.
fn block_mask(first: usize, last: usize) -> u16 {
    let width = last - first + 1;
    let ones = if width >= 16 {
        u16::MAX
    } else {
        (1u16 << width) - 1
    };
    ones << first
}
