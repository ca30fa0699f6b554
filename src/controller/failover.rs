//! Failover and failback, driven by the controller state machine.
//!
//! **Failure** (`fail`, or a panic on a controller's thread): the controller's gate and
//! port close (its connections get ESHUTDOWN and drop within ~100 ms); requests pause; the
//! cache drops the controller's DRAM and promotes its sections' mirror copies on the
//! survivors; routing switches to the survivors; requests resume. The pause lasts as long
//! as the requests already inside the cache take to finish plus one pass over the cached
//! sections. A worker then re-mirrors dirty blocks left with one copy and raises
//! `REDUNDANCY_RESTORED`. With one controller left, writes are vaulted before they are
//! acknowledged (the cache sees no mirror) and the node says it is degraded.
//!
//! **Recovery** (`recover`): the controller comes back with an empty cache and its port
//! opens at once (its requests are carried out on the current owners). A worker then
//! moves ownership back in [`FAILBACK_STEPS`] steps, each a short pause in which the
//! sections of that step move with their clean and dirty data (so its cache is warm for
//! them) and dirty blocks get their new mirror copy before requests resume. After the last
//! step the controller is ACTIVE and `CONTROLLER_RECOVERED` is raised.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ControllerError;
use super::routing::FAILBACK_STEPS;
use super::state::{ControllerEvent, ControllerState};
use super::{ControllerId, ControllerInfo, Controllers};
use crate::clock::now_ms;
use crate::types::BLOCK_SIZE;

/// Where the controllers layer raises events: (code, description).
pub type EventSink = Arc<dyn Fn(&'static str, String) + Send + Sync>;

/// Time between failback steps, so hosts see a few brief pauses, not one long one.
const FAILBACK_STEP_INTERVAL: Duration = Duration::from_millis(50);

/// Why a controller fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// `troika controller fail` or the REST call.
    Injected,
    /// A panic on one of its threads.
    Panic,
}

fn mib(blocks: u64) -> f64 {
    (blocks * BLOCK_SIZE as u64) as f64 / f64::from(1u32 << 20)
}

impl Controllers {
    /// The controller an operator calls `number` (1-based).
    fn id_of(&self, number: u32) -> Result<ControllerId, ControllerError> {
        ControllerId::from_number(number, self.ids.len()).ok_or(ControllerError::NotFound {
            number,
            count: self.ids.len(),
        })
    }

    fn raise(&self, code: &'static str, description: String) {
        crate::say!("troika: {description}");
        let sink = self.events.lock().clone();
        if let Some(sink) = sink {
            sink(code, description);
        }
    }

    /// Fails controller `number` (1-based); see `Management::fail_controller`.
    pub fn fail_by_number(
        self: &Arc<Self>,
        number: u32,
    ) -> Result<ControllerInfo, ControllerError> {
        let id = self.id_of(number)?;
        self.fail(id, FailReason::Injected)?;
        Ok(self.info(id))
    }

    /// Recovers controller `number` (1-based); see `Management::recover_controller`.
    pub fn recover_by_number(
        self: &Arc<Self>,
        number: u32,
    ) -> Result<ControllerInfo, ControllerError> {
        let id = self.id_of(number)?;
        self.recover(id)?;
        Ok(self.info(id))
    }

    /// A thread serving controller `id` panicked: fail it (once), unless it is the last.
    pub(super) fn fail_after_panic(self: &Arc<Self>, id: ControllerId) {
        if !self.ids.contains(&id) {
            return;
        }
        let controllers = self.clone();
        std::thread::spawn(move || {
            if let Err(err) = controllers.fail(id, FailReason::Panic) {
                crate::say!("troika: controller {id} panicked but cannot be failed: {err}");
            }
        });
    }

    /// Fails `id`; returns how long requests were paused.
    pub fn fail(
        self: &Arc<Self>,
        id: ControllerId,
        reason: FailReason,
    ) -> Result<Duration, ControllerError> {
        let _control = self.control.lock();
        let next = self.next_state(id, ControllerEvent::Fail, "fail")?;
        let routing = self.routing.load();
        let survivors = routing.without(id).live;
        if survivors.is_empty() {
            return Err(ControllerError::LastLive { id });
        }
        let unmirrored = self.cache.unmirrored_blocks();
        if reason == FailReason::Injected && unmirrored > 0 {
            return Err(ControllerError::StillRemirroring {
                unmirrored_mib: mib(unmirrored),
            });
        }
        let started = Instant::now();
        // Portals close first: a command that fails because its controller stopped
        // accepting then finds its connection closing and is retried by the initiator
        // on another path instead of getting an error.
        for set in self.portal_sets() {
            set.close(id);
        }
        self.cache.set_accepting(id, false);
        self.ports.close(id);
        self.cache.pause();
        let old = self.routing.load();
        let new = old.without(id);
        let failure = self.cache.fail_domain(id, &old, &new);
        let left_unmirrored = failure.unmirrored;
        self.routing.store(new);
        self.cache.resume();
        let pause = started.elapsed();
        {
            let mut records = self.records.lock();
            let record = &mut records[id];
            record.state = next;
            record.failovers += 1;
            record.state_changed_at = now_ms();
            record.failback_step = 0;
        }
        for set in self.portal_sets() {
            set.states_changed();
        }
        let survivors_text = survivors
            .ids()
            .map(|survivor| survivor.to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        let cause = match reason {
            FailReason::Injected => "an injected failure",
            FailReason::Panic => "a panic on one of its threads",
        };
        let tail = if survivors.len() == 1 {
            "; one controller is left: the node is DEGRADED and every write is vaulted before it is acknowledged; recover a controller with `troika controller recover`".to_string()
        } else {
            format!(
                "; re-mirroring {:.1} MiB of dirty data that lost its second copy",
                mib(left_unmirrored)
            )
        };
        let stranded = &failure.stranded;
        let stranded_text = if stranded.blocks == 0 {
            String::new()
        } else if stranded.error.is_some() {
            format!(
                "; {} of its dirty blocks had no mirror copy and could not be reloaded from the vault: the node stops writing, restart it to recover them",
                stranded.blocks
            )
        } else {
            format!(
                "; {} of its dirty blocks had no mirror copy: {} flushed ones were reloaded from the vault, {} lost the writes made after their last flush{}",
                stranded.blocks,
                stranded.reloaded,
                stranded.lost,
                if stranded.volumes.is_empty() {
                    String::new()
                } else {
                    format!(" (volumes {})", stranded.volumes.join(", "))
                }
            )
        };
        self.raise(
            "CONTROLLER_FAILED",
            format!(
                "controller {id} failed ({cause}): its port closed and its DRAM was discarded; controller(s) {survivors_text} took over its sections with a {:.1} ms pause{stranded_text}{tail}",
                pause.as_secs_f64() * 1000.0
            ),
        );
        if survivors.len() == 1 {
            // Dirty data now has one copy: put it in the vault.
            if let Err(err) = self.cache.flush() {
                crate::say!("troika: vaulting after the failure of controller {id} failed: {err}");
            }
        } else if left_unmirrored > 0 {
            self.start_remirror(left_unmirrored);
        }
        Ok(pause)
    }

    /// Copies dirty blocks that have one copy to their new mirrors, in the background.
    fn start_remirror(self: &Arc<Self>, blocks: u64) {
        let controllers = self.clone();
        let mut slot = self.remirror.lock();
        if let Some(previous) = slot.take()
            && !previous.is_finished()
        {
            // The running worker picks up the new work too.
            *slot = Some(previous);
            return;
        }
        *slot = Some(std::thread::spawn(move || {
            controllers.remirror_loop(blocks)
        }));
    }

    fn remirror_loop(&self, blocks: u64) {
        let started = Instant::now();
        let mut copied = 0u64;
        while self.cache.unmirrored_blocks() > 0 {
            let port = {
                let records = self.records.lock();
                records
                    .iter()
                    .find(|(_, record)| record.state.ports_open())
                    .map(|(id, _)| id)
            };
            let Some(port) = port else { return };
            match self.cache.remirror_all(port) {
                Ok(count) => copied += count,
                Err(crate::types::IoError::ShuttingDown) => {
                    if self.cache.meta().has_failed() {
                        return;
                    }
                }
                Err(err) => {
                    crate::say!("troika: re-mirroring stopped: {err}");
                    return;
                }
            }
            if self.routing.load().live.len() < 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let seconds = started.elapsed().as_secs_f64();
        let per_gib = if copied > 0 {
            seconds / (mib(copied) / 1024.0)
        } else {
            0.0
        };
        self.raise(
            "REDUNDANCY_RESTORED",
            format!(
                "every dirty block has two copies again: re-mirrored {:.1} MiB ({blocks} blocks had one copy at the failure) in {:.0} ms ({per_gib:.2} s per GiB)",
                mib(copied),
                seconds * 1000.0
            ),
        );
    }

    /// The state `id` moves to on `event`, or the refusal of `action` (`fail`, `recover`).
    fn next_state(
        &self,
        id: ControllerId,
        event: ControllerEvent,
        action: &'static str,
    ) -> Result<ControllerState, ControllerError> {
        let from = self.records.lock()[id].state;
        from.on(event)
            .map_err(|refused| ControllerError::Transition {
                id,
                action,
                refused,
            })
    }

    /// Brings `id` back (FAILED → RECOVERING) and starts moving ownership back to it.
    pub fn recover(self: &Arc<Self>, id: ControllerId) -> Result<(), ControllerError> {
        let _control = self.control.lock();
        let next = self.next_state(id, ControllerEvent::Recover, "recover")?;
        if let Some((returning, _)) = self.routing.load().returning {
            // One failback at a time: routing describes a single returning controller.
            return Err(ControllerError::FailbackUnderWay { returning, id });
        }
        self.cache.recover_domain(id);
        // Step 0 places every section as before: no section moves, no pause needed.
        self.routing.store(self.routing.load().returning(id));
        self.cache.set_accepting(id, true);
        if let Err(err) = self
            .ports
            .reopen(id, super::ControllerPort::new(self.clone(), id))
        {
            crate::say!("troika: controller {id} cannot reopen its port: {err}");
        }
        {
            let mut records = self.records.lock();
            let record = &mut records[id];
            record.state = next;
            record.state_changed_at = now_ms();
            record.failback_step = 0;
        }
        for set in self.portal_sets() {
            set.reopen(id);
            set.states_changed();
        }
        let controllers = self.clone();
        std::thread::spawn(move || controllers.failback(id));
        Ok(())
    }

    /// Moves ownership back to `id` step by step; stops if it fails again.
    fn failback(&self, id: ControllerId) {
        let started = Instant::now();
        let mut longest_pause = Duration::ZERO;
        for step in 1..=FAILBACK_STEPS {
            std::thread::sleep(FAILBACK_STEP_INTERVAL);
            let mut waited = 0;
            loop {
                let control = self.control.lock();
                if self.records.lock()[id].state != ControllerState::Recovering {
                    return;
                }
                let paused_at = Instant::now();
                self.cache.pause();
                let old = self.routing.load();
                let new = old.at_step(step);
                let outcome = self.cache.reassign(&old, &new);
                if outcome.is_ok() {
                    self.routing.store(new);
                }
                self.cache.resume();
                longest_pause = longest_pause.max(paused_at.elapsed());
                drop(control);
                match outcome {
                    Ok(()) => {
                        self.records.lock()[id].failback_step = step;
                        break;
                    }
                    Err(no_room) => {
                        waited += 1;
                        if waited % 100 == 1 {
                            crate::say!(
                                "troika: failback of controller {id} waits for destage: controller {} needs {} free cache slots",
                                no_room.domain,
                                no_room.needed
                            );
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        let _control = self.control.lock();
        let mut records = self.records.lock();
        let record = &mut records[id];
        let Ok(next) = record.state.on(ControllerEvent::Warm) else {
            return;
        };
        record.state = next;
        record.state_changed_at = now_ms();
        drop(records);
        for set in self.portal_sets() {
            set.states_changed();
        }
        self.raise(
            "CONTROLLER_RECOVERED",
            format!(
                "controller {id} is ACTIVE again: ownership moved back in {FAILBACK_STEPS} steps over {:.0} ms, the longest pause {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0,
                longest_pause.as_secs_f64() * 1000.0
            ),
        );
    }

    /// Controllers that own sections now.
    pub fn live_count(&self) -> usize {
        self.routing.load().live.len()
    }

    /// Every controller as operators see it.
    pub fn infos(&self) -> Vec<ControllerInfo> {
        self.ids.iter().map(|id| self.info(*id)).collect()
    }

    fn info(&self, id: ControllerId) -> ControllerInfo {
        let (state, failovers, state_changed_at, failback_step) = {
            let records = self.records.lock();
            let record = &records[id];
            (
                record.state,
                record.failovers,
                record.state_changed_at,
                record.failback_step,
            )
        };
        let (dirty_bytes, mirror_bytes, mirror_lag_bytes, owned_sections) =
            if state == ControllerState::Failed {
                (0, 0, 0, 0)
            } else {
                self.cache.domain_figures(id)
            };
        let ports = match self.ports.address(id) {
            Some(address) if state.ports_open() => {
                vec![format!("{}://{address}", self.ports.scheme())]
            }
            _ => Vec::new(),
        };
        let started_with = self
            .cache
            .remirror
            .started_with
            .load(std::sync::atomic::Ordering::Acquire);
        let left = self.cache.unmirrored_blocks();
        let remirror_progress = (left > 0 && started_with > 0)
            .then(|| 1.0 - (left as f64 / started_with as f64).min(1.0));
        ControllerInfo {
            id: id.number(),
            name: format!("controller-{id}"),
            state: state.as_str().to_string(),
            ports,
            ownership_share: self.ownership_share(id),
            owned_sections,
            cache_bytes: self.cache.domain_capacity_bytes(),
            dirty_bytes,
            mirror_bytes,
            mirror_lag_bytes,
            remirror_progress,
            failback_progress: (state == ControllerState::Recovering)
                .then(|| f64::from(failback_step) / f64::from(FAILBACK_STEPS)),
            failovers,
            state_changed_at,
        }
    }

    /// The share of sections `id` owns now, from a sample of placements.
    fn ownership_share(&self, id: ControllerId) -> f64 {
        use crate::cache::SectionRouter;
        const SAMPLE: u64 = 3000;
        let routing = self.routing.load();
        let owned = (0..SAMPLE)
            .filter(|section| routing.route((u32::MAX, *section)).owner == id)
            .count();
        owned as f64 / SAMPLE as f64
    }
}
