//! Cache: the controllers' DRAM write-back caches in 64 KiB sections, mirrored between
//! controllers, the vault flush that makes them durable, and the destage stream that moves
//! them onto the array.
//!
//! Each controller has a [`Domain`](domain::Domain): its own slots, dirty counts and
//! destage thread. A [`SectionRouter`] (the controllers layer) names each section's owner
//! and mirror; the cache keeps every section's data in its owner's domain and a copy of its
//! dirty blocks in its mirror's.
//!
//! Promises:
//! - A write returns once its bytes are in the owner's cache and, when a mirror exists, in
//!   the mirror's (a memcpy under one shard lock each). With no mirror (one controller
//!   left) a write is vaulted before it returns. Any byte alignment is accepted; partial
//!   blocks are merged with the current block. Of two overlapping writes in flight, both
//!   copies keep the one that started last.
//! - A read returns the newest acknowledged bytes: from the owner's cache, or from the
//!   array through a verified (and if need be repaired) read of the map.
//! - `flush` returns once every write acknowledged before it is durable: dirty blocks not
//!   yet in the vault are appended to the journal and the journal is synced. A flush that
//!   overlaps an ownership change starts over, so blocks that changed hands are covered.
//! - Destage writes a domain's dirty blocks in whole rows with parity, commits their map
//!   entries, and only then marks them clean and releases their mirror copies; blocks
//!   rewritten meanwhile stay dirty.
//! - Ownership changes (`fail_domain`, `reassign`) happen while requests are paused (see
//!   `gate`): a failed domain's DRAM is dropped and its sections' mirror copies become
//!   primaries; moved sections take their data, clean and dirty, to their new owner.
//!   Its dirty blocks that had no mirror copy yet (a second failure inside the re-mirror
//!   window) are reloaded from the vault into their new owner when they were flushed, so
//!   a flushed write is never lost; the others are reported lost (see `failover`).
//! - At start, every block recovered from the vault is back in cache, dirty in its owner
//!   and mirrored, or already destaged with its map entry committed: when the blocks do
//!   not fit the shards under the start-up placement (it may differ from the one they
//!   were written under), what is installed is destaged first to make room. Their vault
//!   records stay until each block is destaged, so a crash right after start recovers
//!   them again. Start fails (with the reason) only when the array cannot take the data.
//! - Memory is the configured budget per domain, allocated once; writers wait
//!   (back-pressure) while dirty data fills it, and reads bypass the cache when no clean
//!   slot can be freed.
//!
//! Where the code relies on these promises it asserts them, so a bug stops the node (the
//! panic of a destage thread fails its controller) instead of losing a write quietly:
//! `assert!` for checks of a few bits or counters, `debug_assert!` for walks and extra
//! locks. At destage (`destage`): the blocks gathered hold their bytes; blocks are marked
//! clean only once their map commit is durable, and a flushed block still pins its vault
//! record until then; mirror copies are released only once their owner's map commit is
//! durable, and (debug) never while the owner holds the same generation dirty
//! (`mirror::release_mirror`). At promotion (`failover`): what becomes the owner's copy
//! is a mirror copy holding the bytes of all its dirty blocks. Dirty counts never go
//! below zero (`Domain::release_*`), and (debug) equal what the slots hold once an
//! ownership change has moved its sections.
//!
//! Lock order: array writer → flush lock → metadata state lock → shard lock (one at a
//! time). Nothing takes a lock to the left while holding one to its right.

mod destage;
mod domain;
mod failover;
#[cfg(test)]
mod failover_tests;
mod gate;
#[cfg(test)]
mod invariant_tests;
mod mirror;
#[cfg(test)]
mod recovery_tests;
mod settle;
mod shard;
mod share;
#[cfg(test)]
pub mod tests;
mod vault;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::io::{AlignedBuf, BufferPool, with_thread_ring};
use crate::meta::{BlockRead, MetaStore, RecoveredBlock, VolumeHandle};
use crate::target::Extent;
use crate::types::{
    BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, IoError, PerController, SECTION_SIZE,
};
use domain::{Domain, SHARDS, shard_of};
pub use failover::{DomainFailure, RemirrorProgress};
pub use gate::Admission;
use shard::Role;
pub use shard::SectionKey;
pub use share::{SHARE_CHUNK_BLOCKS, ShareOutcome};
pub use vault::StrandedReport;

/// Where a section lives: the controller whose domain owns it and the one whose domain
/// mirrors it, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub owner: ControllerId,
    pub mirror: Option<ControllerId>,
}

/// Names each section's owner and mirror (the controllers layer implements it).
pub trait SectionRouter: Send + Sync {
    fn route(&self, key: SectionKey) -> Route;
}

/// Counters an operator watches.
#[derive(Default)]
pub struct CacheCounters {
    pub read_hits: AtomicU64,
    pub read_misses: AtomicU64,
    pub blocks_written: AtomicU64,
    pub blocks_destaged: AtomicU64,
    pub blocks_vaulted: AtomicU64,
    pub blocks_relocated: AtomicU64,
    pub blocks_mirrored: AtomicU64,
    pub blocks_remirrored: AtomicU64,
    pub flushes: AtomicU64,
}

/// Lets writers wait for space; the destage threads wake on their domain's condvar.
struct Signals {
    lock: Mutex<()>,
    space: Condvar,
}

/// See the module doc.
pub struct Cache {
    meta: Arc<MetaStore>,
    domains: PerController<Domain>,
    router: Arc<dyn SectionRouter>,
    /// Writers wait above this many dirty blocks in a domain...
    dirty_limit: u64,
    /// ...destage starts when a domain holds this many...
    destage_high: u64,
    /// ...and, once started, goes on until every domain is down to this many.
    destage_low: u64,
    flush_lock: Mutex<vault::FlushState>,
    /// Serializes what writes rows to the array: destage batches, cleaning, checkpoints
    /// and ownership changes.
    array_writer: Mutex<()>,
    /// Counts ownership changes, so a flush can tell that blocks changed hands under it.
    epoch: AtomicU64,
    /// Journal records from here on are kept by every checkpoint (`u64::MAX`: none):
    /// the vault copies of a failed domain's blocks while they are being reloaded.
    vault_pin: AtomicU64,
    pause: gate::Pause,
    signals: Signals,
    drain_requested: AtomicBool,
    shutdown: AtomicBool,
    /// Section buffers for prefetch (CACHE) requests, allocated once.
    prefetch_buffers: Arc<BufferPool>,
    pub remirror: RemirrorProgress,
    pub counters: CacheCounters,
    /// Called (on a new thread) when a domain's destage thread panics.
    panic_hook: Mutex<Option<PanicHook>>,
    #[cfg(test)]
    faults: tests::Faults,
}

/// What the controllers layer does when a domain's own thread panics: fail that domain.
pub type PanicHook = Arc<dyn Fn(ControllerId) + Send + Sync>;

thread_local! {
    static SCRATCH: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::new(BLOCK_SIZE));
}

impl Cache {
    /// A cache of `domains` controllers with `bytes_per_domain` of DRAM each, over `meta`,
    /// with the flushed blocks recovered from the vault installed as dirty in their owner
    /// and mirror; starts one destage thread per domain.
    pub fn start(
        meta: Arc<MetaStore>,
        domains: usize,
        bytes_per_domain: u64,
        recovered: Vec<RecoveredBlock>,
        router: Arc<dyn SectionRouter>,
    ) -> Arc<Cache> {
        let slots_per_shard = ((bytes_per_domain / SECTION_SIZE as u64) as usize / SHARDS).max(8);
        let domains = PerController::new(domains.max(1), |id| Domain::new(id, slots_per_shard));
        let capacity_blocks = domains
            .values()
            .next()
            .map_or(0, |domain| domain.capacity_blocks);
        let cache = Arc::new(Cache {
            meta,
            domains,
            router,
            dirty_limit: capacity_blocks * 85 / 100,
            destage_high: capacity_blocks * 70 / 100,
            destage_low: capacity_blocks * 55 / 100,
            flush_lock: Mutex::new(vault::FlushState::default()),
            array_writer: Mutex::new(()),
            epoch: AtomicU64::new(0),
            vault_pin: AtomicU64::new(u64::MAX),
            pause: gate::Pause::default(),
            signals: Signals {
                lock: Mutex::new(()),
                space: Condvar::new(),
            },
            drain_requested: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            prefetch_buffers: BufferPool::new(4, SECTION_SIZE),
            remirror: RemirrorProgress::default(),
            counters: CacheCounters::default(),
            panic_hook: Mutex::new(None),
            #[cfg(test)]
            faults: tests::Faults::default(),
        });
        if let Err(err) = cache.install_recovered(recovered) {
            crate::say!(
                "troika: cannot start: the data recovered from the vault could not be put back into cache or written to the array ({err}); the vault still holds it, so check the NL-SAS devices (or add capacity) and start again"
            );
            std::process::exit(1);
        }
        for id in cache.domains.ids() {
            cache.start_destager(id);
        }
        cache.start_reclaimer();
        cache
    }

    pub fn meta(&self) -> &Arc<MetaStore> {
        &self.meta
    }

    /// Sets what happens when a domain's destage thread panics.
    pub fn set_panic_hook(&self, hook: PanicHook) {
        *self.panic_hook.lock() = Some(hook);
    }

    fn domain_panicked(&self, id: ControllerId) {
        crate::say!("troika: a thread of controller {id} panicked; failing that controller");
        let hook = self.panic_hook.lock().clone();
        if let Some(hook) = hook {
            std::thread::spawn(move || hook(id));
        }
    }

    /// How many controller domains the cache has.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// Bytes of DRAM all domains hold.
    pub fn capacity_bytes(&self) -> u64 {
        self.domains
            .values()
            .map(|domain| domain.capacity_blocks * BLOCK_SIZE as u64)
            .sum()
    }

    /// Every domain's dirty counts recounted from its slots (a walk of every slot): only
    /// exact while nothing changes them, e.g. during an ownership change.
    fn recount_domains(&self) -> Result<(), String> {
        self.domains.values().try_for_each(Domain::recount)
    }

    /// One domain's DRAM budget.
    pub fn domain_capacity_bytes(&self) -> u64 {
        self.domains
            .values()
            .next()
            .map_or(0, |domain| domain.capacity_blocks)
            * BLOCK_SIZE as u64
    }

    /// Bytes written but not destaged (each counted once, at its owner).
    pub fn dirty_bytes(&self) -> u64 {
        self.domains.values().map(Domain::dirty_bytes).sum()
    }

    /// Per domain: (dirty bytes it owns, mirror bytes it holds, dirty bytes without a
    /// mirror copy, sections it holds as owner).
    pub fn domain_figures(&self, id: ControllerId) -> (u64, u64, u64, u64) {
        let domain = &self.domains[id];
        (
            domain.dirty_bytes(),
            domain.mirror_bytes(),
            domain.unmirrored_bytes(),
            domain.owned_sections(),
        )
    }

    pub(super) fn check_range(volume: &VolumeHandle, offset: u64, len: u64) -> Result<(), IoError> {
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

    fn kick_destage(&self, id: ControllerId) {
        self.domains[id].destage_wake.notify_one();
    }

    fn kick_all_destagers(&self) {
        for domain in self.domains.values() {
            domain.destage_wake.notify_one();
        }
    }

    /// One back-pressure wait: wakes the destage threads and sleeps until one signals space
    /// or `period` passes. The 120 s limit starts at the first wait (`deadline` is `None`
    /// until then), so the fast path reads no clock; past it, `stuck` is the error. A
    /// pause (ownership change) ends the wait with [`IoError::Paused`].
    fn wait_for_space(
        &self,
        deadline: &mut Option<Instant>,
        period: Duration,
        stuck: impl FnOnce() -> IoError,
    ) -> Result<(), IoError> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(IoError::ShuttingDown);
        }
        if self.pausing() {
            return Err(IoError::Paused);
        }
        let limit = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(120));
        if Instant::now() > limit || self.meta.has_failed() {
            return Err(stuck());
        }
        self.kick_all_destagers();
        let mut guard = self.signals.lock.lock();
        self.signals.space.wait_for(&mut guard, period);
        Ok(())
    }

    /// Waits while dirty data fills the owner's or the mirror's DRAM (back-pressure).
    fn wait_for_dirty_room(&self, route: Route) -> Result<(), IoError> {
        let full = |id: ControllerId| self.domains[id].dirty_total() >= self.dirty_limit;
        let mut deadline = None;
        while full(route.owner) || route.mirror.is_some_and(full) {
            self.wait_for_space(&mut deadline, Duration::from_millis(20), || {
                IoError::Media {
                    volume: String::new(),
                    detail: "destage made no progress for 120 s; check the NL-SAS devices".into(),
                }
            })?;
        }
        Ok(())
    }

    /// Writes `data` at byte `offset` of `volume` into its sections' owners' caches and
    /// mirrors.
    pub fn write(&self, volume: &VolumeHandle, offset: u64, data: &[u8]) -> Result<(), IoError> {
        Self::check_range(volume, offset, data.len() as u64)?;
        Self::check_writable(volume)?;
        let generation = self.meta.next_generation();
        let mut write_through = false;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let section = at / SECTION_SIZE as u64;
            let within = (at % SECTION_SIZE as u64) as usize;
            let take = (SECTION_SIZE - within).min(data.len() - done);
            let route = self.router.route((volume.id.0, section));
            self.wait_for_dirty_room(route)?;
            self.write_section(
                route,
                volume,
                section,
                within,
                &data[done..done + take],
                generation,
            )?;
            write_through |= route.mirror.is_none();
            done += take;
        }
        self.counters
            .blocks_written
            .fetch_add(data.len().div_ceil(BLOCK_SIZE) as u64, Ordering::Relaxed);
        if write_through {
            // One controller left: the vault is the second copy.
            self.flush()?;
        }
        Ok(())
    }

    /// Which blocks `first..=last` of the section starting at `base_lba` have map entries.
    fn mapped_bits(&self, volume: u32, base_lba: u64, first: usize, last: usize) -> u16 {
        let state = self.meta.state();
        if !state.maps.contains(volume) {
            return 0;
        }
        let mut bits = 0u16;
        for block in first..=last {
            if state.maps.get(volume, base_lba + block as u64).is_some() {
                bits |= 1 << block;
            }
        }
        bits
    }

    /// Brings one block into its owner's slot from the array (zeroes when unmapped).
    fn fill_block(
        &self,
        owner: ControllerId,
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
            self.install_clean(owner, key, block, &scratch, version, outcome);
            Ok(())
        })
    }

    /// Installs bytes read from the array, unless the block changed meanwhile.
    fn install_clean(
        &self,
        owner: ControllerId,
        key: SectionKey,
        block: usize,
        bytes: &[u8],
        version: u64,
        outcome: BlockRead,
    ) {
        let domain = &self.domains[owner];
        let mut shard = domain.shard(key).inner.lock();
        if self.meta.map_version() != version {
            return;
        }
        let Some(slot) = shard.find_or_insert(key, Role::Primary) else {
            return;
        };
        let bit = 1u16 << block;
        if shard.slots[slot as usize].valid & bit != 0
            || shard.slots[slot as usize].role != Role::Primary
        {
            return;
        }
        shard
            .block_mut(slot, block)
            .copy_from_slice(&bytes[..BLOCK_SIZE]);
        let entry = &mut shard.slots[slot as usize];
        entry.valid |= bit;
        if let BlockRead::Repaired { generation } = outcome {
            // Rewrite the repaired block elsewhere: it goes out with the next destage.
            // (It is the committed content, so it needs no mirror copy.)
            entry.dirty |= bit;
            entry.unvaulted |= bit;
            entry.generation[block] = generation;
            shard.queue_dirty(slot);
            shard.queue_unvaulted(slot);
            // Counted before the lock goes (see the domain module doc).
            domain.primary_dirty.fetch_add(1, Ordering::AcqRel);
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
            let owner = self.router.route((volume.id.0, section)).owner;
            self.read_section(owner, volume, section, within, &mut buf[done..done + take])?;
            done += take;
        }
        Ok(())
    }

    fn read_section(
        &self,
        owner: ControllerId,
        volume: &VolumeHandle,
        section: u64,
        within: usize,
        out: &mut [u8],
    ) -> Result<(), IoError> {
        let key = (volume.id.0, section);
        let domain = &self.domains[owner];
        let first_block = within / BLOCK_SIZE;
        let last_block = (within + out.len() - 1) / BLOCK_SIZE;
        let mut missing = 0u16;
        {
            let mut shard = domain.shard(key).inner.lock();
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
                    owner,
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
                        self.install_clean(owner, key, block, &scratch, version, outcome);
                    }
                }
            }
            Ok(())
        })
    }

    fn copy_if_cached(
        &self,
        owner: ControllerId,
        key: SectionKey,
        block: usize,
        start: usize,
        end: usize,
        dest: &mut [u8],
    ) -> bool {
        let mut shard = self.domains[owner].shard(key).inner.lock();
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

    /// Drops blocks `[start, end)` of a volume from every domain (primaries and mirror
    /// copies) and from the map (trim, shrink, delete).
    ///
    /// The metadata lock is held throughout, so a reader that looked the map up before
    /// the discard cannot put the old bytes back into cache after it (its map version
    /// check fails), and no destage commit can slip in between.
    pub fn discard_blocks(&self, volume: u32, start: u64, end: u64) {
        let mut state = self.meta.state_mut();
        let generation = self.meta.next_generation();
        let released_any = self.discard_locked(&mut state, volume, start, end, generation);
        drop(state);
        if released_any {
            self.signals.space.notify_all();
        }
    }

    /// Drops every cached block of `volume` (dirty ones too, giving back their space
    /// reservations) and leaves its map alone: for a dataset about to be deleted or to
    /// take other contents, whose map the catalog change then drops or replaces whole.
    /// Trimming that map first would cost a walk of every mapped block (and a copy of
    /// every tree node a snapshot shares); recovery drops the vault copies of a deleted
    /// or replaced dataset's blocks by the catalog record itself.
    ///
    /// Holds the metadata lock as [`Cache::discard_blocks`] does, for the same reasons.
    pub fn forget_volume(&self, volume: u32) {
        let state = self.meta.state_mut();
        let generation = self.meta.next_generation();
        let released_any = self.drop_cached(volume, 0, u64::MAX, generation);
        drop(state);
        if released_any {
            self.signals.space.notify_all();
        }
    }

    /// [`Cache::discard_blocks`] for a caller holding the metadata lock: drops cached
    /// blocks written before `generation` and trims the map. Returns whether dirty blocks
    /// were dropped (writers waiting for room should be woken once the lock is released).
    fn discard_locked(
        &self,
        state: &mut crate::meta::MetaState,
        volume: u32,
        start: u64,
        end: u64,
        generation: u64,
    ) -> bool {
        let released_any = self.drop_cached(volume, start, end, generation);
        self.meta.trim_locked(state, volume, start, end, generation);
        released_any
    }

    /// The cache's part of a discard: drops blocks `[start, end)` of `volume` written
    /// before `generation` from every domain. The caller holds the metadata lock.
    fn drop_cached(&self, volume: u32, start: u64, end: u64, generation: u64) -> bool {
        let first_section = start / BLOCKS_PER_SECTION as u64;
        let end_section = end.div_ceil(BLOCKS_PER_SECTION as u64);
        let mut released_any = false;
        for domain in self.domains.values() {
            for (index, shard) in domain.shards.iter().enumerate() {
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
                    let dropped = u64::from((entry.dirty & mask).count_ones());
                    let unmirrored =
                        u64::from((entry.unmirrored & entry.dirty & mask).count_ones());
                    match entry.role {
                        Role::Primary => {
                            domain.release_primary_dirty(dropped);
                            domain.release_unmirrored(unmirrored);
                        }
                        Role::Mirror => domain.release_mirror_dirty(dropped),
                    }
                    released_any |= dropped > 0;
                    entry.valid &= !mask;
                    entry.known &= !mask;
                    entry.dirty &= !mask;
                    entry.unvaulted &= !mask;
                    entry.reserved &= !mask;
                    entry.unmirrored &= !mask;
                    if entry.dirty == 0 {
                        entry.vault_lsn = u64::MAX;
                    }
                    if entry.valid == 0 && entry.dirty == 0 {
                        shard.release(slot);
                    }
                }
            }
        }
        released_any
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

    /// Brings a range into its owners' caches (reads and discards it), at most 64 MiB.
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
            let owner = self.router.route(key).owner;
            let cached = {
                let mut shard = self.domains[owner].shard(key).inner.lock();
                shard
                    .find(key)
                    .map_or(0, |slot| shard.slots[slot as usize].valid)
            };
            let section_end = ((section + 1) * SECTION_SIZE as u64).min(end);
            let state = self.meta.state();
            let map = &state.maps;
            while at < section_end {
                let block = ((at % SECTION_SIZE as u64) / BLOCK_SIZE as u64) as usize;
                let lba = at / BLOCK_SIZE as u64;
                let allocated = cached & (1 << block) != 0 || map.get(volume.id.0, lba).is_some();
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

    /// Destages everything, checkpoints and stops the destage threads.
    pub fn shutdown(&self) -> Result<(), IoError> {
        let result = self.drain();
        self.shutdown.store(true, Ordering::Release);
        self.kick_all_destagers();
        for domain in self.domains.values() {
            if let Some(handle) = domain.destager.lock().take() {
                let _ = handle.join();
            }
        }
        result?;
        self.checkpoint().map_err(|err| IoError::Media {
            volume: String::new(),
            detail: err.to_string(),
        })
    }

    /// Asks the destage threads to write out everything dirty and waits until they have.
    pub fn drain(&self) -> Result<(), IoError> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        let mut reported = false;
        self.drain_requested.store(true, Ordering::Release);
        while self.dirty_bytes() > 0 {
            if !reported && started.elapsed() > Duration::from_secs(10) {
                reported = true;
                let figures: Vec<String> = self
                    .domains
                    .values()
                    .map(|domain| {
                        format!(
                            "controller {}: {} dirty blocks, {} mirror blocks{}",
                            domain.id,
                            domain.primary_dirty.load(Ordering::Acquire),
                            domain.mirror_dirty.load(Ordering::Acquire),
                            if domain.is_alive() { "" } else { " (failed)" }
                        )
                    })
                    .collect();
                crate::say!(
                    "troika: destaging everything is taking long ({} free segments): {}",
                    self.meta.state().alloc.free_segments(),
                    figures.join("; ")
                );
            }
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
            self.kick_all_destagers();
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
