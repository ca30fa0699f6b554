//! Fault points for the fake-controller harness (`tests/` of the controllers layer): a
//! write or a destage can be made to stop at a chosen step, as if its controller lost
//! power there.

use parking_lot::Mutex;

use super::Cache;
use crate::types::{ControllerId, IoError, MAX_CONTROLLERS};

/// Controller `index` (0-based), for tests that name controllers by position.
pub const fn id(index: usize) -> ControllerId {
    ControllerId::new(index, MAX_CONTROLLERS).unwrap()
}

/// A step of a write or a destage where a test can cut it short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// The owner's copy is written, the mirror's not yet.
    AfterPrimary,
    /// Both copies are written, the mirror not yet settled.
    AfterMirror,
    /// A destage batch's rows are on the array, their map entries not committed.
    DestageBeforeCommit,
    /// The map entries are committed, the cache blocks not yet marked clean.
    DestageAfterCommit,
}

#[derive(Default)]
pub struct Faults {
    armed: Mutex<Option<FaultPoint>>,
    /// Destage only when a test asks for it.
    pub manual_destage: std::sync::atomic::AtomicBool,
    /// Re-mirroring copies nothing (a test holds the node inside the re-mirror window).
    pub hold_remirror: std::sync::atomic::AtomicBool,
    /// Runs once, inside the next flush that copied dirty blocks, before their vault
    /// records are appended to the journal.
    flush_hook: Mutex<Option<FlushHook>>,
}

/// What a test runs inside a flush (see [`Cache::set_flush_hook`]).
pub type FlushHook = Box<dyn FnOnce(&Cache) + Send>;

impl Cache {
    /// Makes the next pass through `point` stop there.
    pub fn arm_fault(&self, point: FaultPoint) {
        *self.faults.armed.lock() = Some(point);
    }

    /// Whether an armed fault is still waiting for its point.
    pub fn fault_pending(&self) -> bool {
        self.faults.armed.lock().is_some()
    }

    /// Turns the background destage off (the test destages with [`Cache::destage_now`]).
    pub fn set_manual_destage(&self, manual: bool) {
        self.faults
            .manual_destage
            .store(manual, std::sync::atomic::Ordering::Release);
    }

    /// Holds the re-mirror worker (`remirror_all` copies nothing) or lets it go on.
    pub fn set_remirror_held(&self, held: bool) {
        self.faults
            .hold_remirror
            .store(held, std::sync::atomic::Ordering::Release);
    }

    /// Runs `hook` inside the next flush that copies dirty blocks, between the copy and
    /// the append of their vault records.
    pub fn set_flush_hook(&self, hook: FlushHook) {
        *self.faults.flush_hook.lock() = Some(hook);
    }

    /// Whether the flush hook has not run yet.
    pub fn flush_hook_pending(&self) -> bool {
        self.faults.flush_hook.lock().is_some()
    }

    /// Called by the flush between copying dirty blocks and appending their vault records.
    pub(super) fn run_flush_hook(&self, copied: usize) {
        if copied == 0 {
            return;
        }
        let hook = self.faults.flush_hook.lock().take();
        if let Some(hook) = hook {
            hook(self);
        }
    }

    pub fn fault_point(&self, at: FaultPoint) -> Result<(), IoError> {
        let mut armed = self.faults.armed.lock();
        if *armed == Some(at) {
            *armed = None;
            return Err(IoError::Media {
                volume: String::new(),
                detail: format!("injected failure at {at:?}"),
            });
        }
        Ok(())
    }

    /// Runs one destage batch of domain `index` (0-based) on this thread.
    pub fn destage_now(&self, index: usize) -> Result<(), String> {
        let mut batch = self.new_batch(id(index));
        self.destage_batch(id(index), &mut batch)
    }

    /// Cleans the emptiest segment on this thread; `false` when no segment is worth it.
    pub fn clean_now(&self) -> Result<bool, String> {
        let mut batch = self.new_batch(id(0));
        let _writer = self.array_writer.lock();
        self.clean_one_segment(&mut batch)
    }

    /// Destages every domain until nothing is dirty (at most `rounds` batches each).
    pub fn destage_all(&self, rounds: usize) -> Result<(), String> {
        for _ in 0..rounds {
            if self.dirty_bytes() == 0 {
                return Ok(());
            }
            for index in 0..self.domains.len() {
                self.destage_now(index)?;
            }
        }
        Err(format!("{} bytes still dirty", self.dirty_bytes()))
    }

    pub(super) fn fault_hit(&self, at: FaultPoint) -> bool {
        self.fault_point(at).is_err()
    }
}

impl Cache {
    /// Recounts every domain's dirty, mirror and unmirrored blocks from its slots and
    /// compares them with the counters; describes the first difference.
    pub fn check_counters(&self) -> Result<(), String> {
        self.recount_domains()
    }
}

impl Cache {
    /// Every mirror copy sits where routing puts the section's mirror, and matches a dirty
    /// block of the same generation at the section's owner; every dirty primary block
    /// without the unmirrored mark has its copy. Only meaningful while nothing runs.
    pub fn check_mirrors(&self) -> Result<(), String> {
        use super::shard::Role;
        for domain in self.domains.values().filter(|domain| domain.is_alive()) {
            for shard in domain.shards.iter() {
                let shard = shard.inner.lock();
                for slot in shard.slots.iter().filter(|slot| slot.key.is_some()) {
                    let key = slot.key.unwrap();
                    let route = self.router.route(key);
                    for block in 0..crate::types::BLOCKS_PER_SECTION {
                        let bit = 1u16 << block;
                        if slot.dirty & bit == 0 {
                            continue;
                        }
                        let generation = slot.generation[block];
                        let (other, wanted_role) = match slot.role {
                            Role::Mirror if route.mirror != Some(domain.id) => {
                                return Err(format!(
                                    "domain {} holds a mirror copy of {key:?} but routing says {route:?}",
                                    domain.id
                                ));
                            }
                            Role::Mirror => (route.owner, Role::Primary),
                            Role::Primary if route.owner != domain.id => {
                                return Err(format!(
                                    "domain {} holds {key:?} dirty as primary but routing says {route:?}",
                                    domain.id
                                ));
                            }
                            Role::Primary if slot.unmirrored & bit != 0 => continue,
                            Role::Primary => match route.mirror {
                                Some(mirror) => (mirror, Role::Mirror),
                                None => continue,
                            },
                        };
                        let peer = self.domains[other].shard(key).inner.lock();
                        let matches = peer.index.get(&key).is_some_and(|&index| {
                            let entry = &peer.slots[index as usize];
                            entry.role == wanted_role && entry.holds_dirty(key, block, generation)
                        });
                        if !matches {
                            return Err(format!(
                                "{key:?} block {block} generation {generation}: {:?} copy in domain {} has no {:?} twin in domain {}",
                                slot.role, domain.id, wanted_role, other
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
