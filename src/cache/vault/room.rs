//! Making room in the cache when the vault's blocks come back: one loop
//! ([`Cache::destage_until`]) for both callers, a failover reload that needs slots in a
//! shard and start-up recovery that needs a domain destaged. Until the goal is met, it
//! keeps the journal from filling, destages a round, and cleans a segment when a round
//! destaged nothing; it gives up after [`MAX_STALLED_ROUNDS`] such rounds.

use std::sync::atomic::Ordering;

use hashbrown::{HashMap, HashSet};

use super::super::Cache;
use super::super::destage::Batch;
use super::super::domain::shard_of;
use super::super::shard::SectionKey;
use crate::types::ControllerId;

/// Rounds in a row that may destage nothing (each then cleaning one segment) before
/// making room gives up.
const MAX_STALLED_ROUNDS: u32 = 64;

/// What [`Cache::destage_until`] makes room for.
#[derive(Clone, Copy, Debug)]
enum RoomFor {
    /// Slots for `sections` sections not held yet in shard `shard` of controller
    /// `owner`'s domain. The caller holds the array writer and the flush lock.
    Sections {
        owner: ControllerId,
        shard: usize,
        sections: usize,
    },
    /// No dirty block left in `domain` (at start, before the destage threads run); a
    /// checkpoint keeps every journal record from `pinned` on.
    Recovery { domain: ControllerId, pinned: u64 },
}

impl Cache {
    /// Makes sure that each owner in `needs` can take a slot for every section it does not
    /// hold yet: while one of its shards lacks free or clean slots, that shard's sections
    /// are destaged in every live domain (a mirror copy there goes when its owner destages
    /// it). The caller holds the array writer and the flush lock, not the state lock, and
    /// requests are paused, so nothing else takes the slots freed.
    pub(super) fn make_room(&self, needs: &[(ControllerId, SectionKey)]) -> Result<(), String> {
        let mut wanted: HashMap<(ControllerId, usize), HashSet<SectionKey>> = HashMap::new();
        for &(owner, key) in needs {
            let holds = self.domains[owner]
                .shard(key)
                .inner
                .lock()
                .index
                .contains_key(&key);
            if !holds {
                wanted
                    .entry((owner, shard_of(key)))
                    .or_default()
                    .insert(key);
            }
        }
        let mut batch = None;
        for ((owner, shard), keys) in wanted {
            let goal = RoomFor::Sections {
                owner,
                shard,
                sections: keys.len(),
            };
            if self.room_made(goal) {
                continue;
            }
            let batch = batch.get_or_insert_with(|| self.new_batch(owner));
            self.destage_until(goal, batch)?;
        }
        Ok(())
    }

    /// Destages every dirty block of every domain on this thread (during start, before
    /// the destage threads run), cleaning segments when free rows run short. A checkpoint
    /// taken to keep the journal from filling keeps every record from `pinned` on: the
    /// vault copies of recovered blocks not installed yet.
    pub(super) fn destage_for_recovery(&self, pinned: u64) -> Result<(), String> {
        for (domain, state) in self.domains.iter() {
            if !state.is_alive() {
                continue;
            }
            let mut batch = self.new_batch(domain);
            self.destage_until(RoomFor::Recovery { domain, pinned }, &mut batch)?;
        }
        Ok(())
    }

    /// The loop that makes room, for both [`RoomFor`] goals: until the goal is met, keep
    /// the journal from filling (a checkpoint once it is half full), destage one round,
    /// and when that left no fewer dirty blocks, clean one segment however full (no free
    /// rows are left outside the cleaner's reserve) and try again. Gives up when no
    /// segment can be cleaned, or after [`MAX_STALLED_ROUNDS`] rounds in a row that
    /// destaged nothing.
    fn destage_until(&self, goal: RoomFor, batch: &mut Batch) -> Result<(), String> {
        let mut stalled = 0;
        while !self.room_made(goal) {
            let before = self.dirty_left(goal);
            let journal = self.meta.journal();
            if journal.used() > journal.region_len() / 2 {
                match goal {
                    // The flush lock is held (no vault record can slip in) and the floor
                    // includes the pin.
                    RoomFor::Sections { .. } => self.meta.checkpoint(|| self.vault_floor()),
                    RoomFor::Recovery { pinned, .. } => self.checkpoint_keeping(pinned),
                }
                .map_err(|err| err.to_string())?;
            }
            match goal {
                RoomFor::Sections { shard, .. } => {
                    self.clean_if_low_locked(batch)?;
                    for id in self.domains.ids() {
                        self.destage_batch_locked(id, batch, shard)?;
                    }
                }
                RoomFor::Recovery { domain, .. } => {
                    self.clean_if_low(batch)?;
                    self.destage_batch(domain, batch)?;
                }
            }
            if self.dirty_left(goal) < before {
                stalled = 0;
                continue;
            }
            // No free rows outside the cleaner's reserve: clean one segment, however full,
            // and try again.
            stalled += 1;
            let writer = matches!(goal, RoomFor::Recovery { .. }).then(|| self.array_writer.lock());
            let cleaned = self.clean_one_segment(batch)?;
            drop(writer);
            if !cleaned || stalled > MAX_STALLED_ROUNDS {
                return Err(match goal {
                    RoomFor::Sections {
                        owner, sections, ..
                    } => format!(
                        "controller {owner} has no cache slot free for {sections} sections and destage makes no progress; check the NL-SAS devices"
                    ),
                    RoomFor::Recovery { domain, .. } => format!(
                        "the NL-SAS drives have no free space left for {before} dirty blocks of controller {domain}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// True once `goal` is met: the shard has the slots, or the domain holds no dirty block.
    fn room_made(&self, goal: RoomFor) -> bool {
        match goal {
            RoomFor::Sections {
                owner,
                shard,
                sections,
            } => self.domains[owner].shards[shard].inner.lock().available() >= sections,
            RoomFor::Recovery { .. } => self.dirty_left(goal) == 0,
        }
    }

    /// The dirty blocks destage works on for `goal`: those of every live domain (the
    /// sections' shard is destaged in each), or those of the recovering domain.
    fn dirty_left(&self, goal: RoomFor) -> u64 {
        match goal {
            RoomFor::Sections { .. } => self
                .domains
                .values()
                .filter(|domain| domain.is_alive())
                .map(|domain| domain.primary_dirty.load(Ordering::Acquire))
                .sum(),
            RoomFor::Recovery { domain, .. } => {
                self.domains[domain].primary_dirty.load(Ordering::Acquire)
            }
        }
    }
}
