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
mod destage_ssd;
mod discard;
mod domain;
mod extent;
mod failover;
#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod flush_trim_tests;
mod gate;
#[cfg(test)]
mod invariant_tests;
mod mirror;
mod read;
#[cfg(test)]
mod recovery_tests;
mod route;
mod settle;
mod shard;
mod share;
#[cfg(test)]
mod ssd_tests;
mod stream;
#[cfg(test)]
pub mod tests;
mod vault;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::io::BufferPool;
use crate::meta::{MetaStore, RecoveredBlock, VolumeHandle};
use crate::types::{BLOCK_SIZE, ControllerId, IoError, PerController, SECTION_SIZE};
use domain::{Domain, SHARDS, shard_of};
pub use extent::{ChangedExtent, Extent};
pub use failover::{DomainFailure, RemirrorProgress};
pub use gate::Admission;
pub use route::{Route, SectionRouter};
pub use shard::SectionKey;
pub use share::{SHARE_CHUNK_BLOCKS, ShareOutcome};
pub use vault::StrandedReport;

/// The sequential cutoff until the model sets one (`[ssd_cache] sequential_cutoff`).
const DEFAULT_SEQUENTIAL_CUTOFF: u64 = 1 << 20;

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
    /// Where each controller's block reads were served from (by 0-based controller).
    pub reads_by_controller: [crate::types::ReadSources; crate::types::MAX_CONTROLLERS],
    /// Blocks read from the drives as part of a sequential stream past the cutoff, and
    /// so not offered to the SSD read cache.
    pub ssd_bypassed: AtomicU64,
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
    /// The SSD read-cache tier, when the model has one (attached once, at start).
    ssd: std::sync::OnceLock<Arc<crate::ssd::SsdCache>>,
    /// Sequential streams, whose blocks bypass the SSD read cache.
    streams: stream::StreamDetector,
    /// A stream longer than this many bytes bypasses the SSD read cache.
    sequential_cutoff: AtomicU64,
    /// Called (on a new thread) when a domain's destage thread panics.
    panic_hook: Mutex<Option<PanicHook>>,
    #[cfg(test)]
    faults: tests::Faults,
}

/// What the controllers layer does when a domain's own thread panics: fail that domain.
pub type PanicHook = Arc<dyn Fn(ControllerId) + Send + Sync>;

impl Cache {
    /// Puts the SSD read-cache tier under this cache and its metadata store's verified
    /// reads (once; later calls are ignored): controller `i` reads and fills partition `i`.
    pub fn attach_ssd(&self, ssd: Arc<crate::ssd::SsdCache>) {
        if self.ssd.set(ssd.clone()).is_err() {
            return;
        }
        self.meta.attach_read_cache(ssd.clone());
        for (id, domain) in self.domains.iter() {
            for shard in domain.shards.iter() {
                shard.inner.lock().ssd_sink = Some(shard::SsdSink {
                    cache: ssd.clone(),
                    partition: id.index(),
                });
            }
        }
    }

    /// A read continuing a sequential stream beyond `bytes` bypasses the SSD read cache.
    pub fn set_sequential_cutoff(&self, bytes: u64) {
        self.sequential_cutoff.store(bytes, Ordering::Relaxed);
    }

    /// Blocks that bypassed the SSD read cache as part of a sequential stream.
    pub fn ssd_bypassed(&self) -> u64 {
        self.counters.ssd_bypassed.load(Ordering::Relaxed)
    }

    /// The SSD read-cache tier, if the model has one.
    pub fn ssd(&self) -> Option<&Arc<crate::ssd::SsdCache>> {
        self.ssd.get()
    }
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
            ssd: std::sync::OnceLock::new(),
            streams: stream::StreamDetector::default(),
            sequential_cutoff: AtomicU64::new(DEFAULT_SEQUENTIAL_CUTOFF),
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
