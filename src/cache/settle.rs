//! What snapshots need from the cache: getting dirty blocks onto the array (so a snapshot,
//! which shares the committed map, holds every write acknowledged before it), and the
//! background thread that gives back the space of deleted snapshots and replaced trees.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Cache;

/// Tree nodes reclaimed per step; each step holds the metadata lock briefly, so host I/O
/// goes on between steps.
const RECLAIM_STEP_NODES: usize = 256;

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
                    let done = cache.meta.reclaim_step(RECLAIM_STEP_NODES);
                    drop(cache);
                    if done == 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    } else {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            });
        if let Err(err) = spawned {
            eprintln!(
                "troika: cannot start the space reclaim thread ({err}); deleted snapshots give their space back only at the next start"
            );
        }
    }
}
