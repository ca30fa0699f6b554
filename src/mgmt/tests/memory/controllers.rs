//! Three controllers in memory: the states and refusals of the node's controller state
//! machine, and the ownership, cache and progress figures `GET /api/rest/controllers`
//! shows, with the background work (re-mirroring, failback) advanced by the test.
//!
//! ```text
//!   ACTIVE --fail--> FAILED --recover--> RECOVERING --failback done--> ACTIVE
//!                      ^                     |
//!                      +-------fail----------+
//! ```
//!
//! Failing is refused for a FAILED controller and for the last live (ACTIVE or RECOVERING)
//! one; recovering is refused unless the controller is FAILED. Every controller has a home
//! third of the sections. A live controller owns its home, less what a failback has not
//! moved back yet; a home's other part is split evenly among the other live controllers.
//! A failure makes every survivor re-mirror the dirty data it now owns (its mirror lag),
//! which needs a second live controller to progress.

use super::EPOCH_MS;
use crate::mgmt::api::{ControllerInfo, MgmtError};

const COUNT: usize = 3;
/// Sections whose home is one controller.
const HOME_SECTIONS: u64 = 1024;
/// Dirty bytes held per owned section, so that ownership moves dirty data with it.
const DIRTY_BYTES_PER_SECTION: u64 = 4096;
const CACHE_BYTES: u64 = 32 << 20;
/// Controller 1's NBD port; the others follow.
const FIRST_PORT: u64 = 10809;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Active,
    Failed,
    /// Ports open, `failback` (0.0 to 1.0) of its home owned again.
    Recovering {
        failback: f64,
    },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Active => "ACTIVE",
            State::Failed => "FAILED",
            State::Recovering { .. } => "RECOVERING",
        }
    }

    fn is_live(self) -> bool {
        self != State::Failed
    }

    /// The part of its home a controller in this state owns.
    fn home_owned(self) -> f64 {
        match self {
            State::Active => 1.0,
            State::Failed => 0.0,
            State::Recovering { failback } => failback,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Controller {
    state: State,
    /// Re-mirroring after a failure, 0.0 to 1.0.
    remirror: Option<f64>,
    failovers: u64,
    state_changed_at: u64,
}

/// An index into the controllers, checked once from the 1-based number operators use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Number(usize);

impl Number {
    fn new(id: u32) -> Result<Number, MgmtError> {
        usize::try_from(id)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .filter(|index| *index < COUNT)
            .map(Number)
            .ok_or_else(|| MgmtError::controller_not_found(id))
    }

    fn all() -> impl Iterator<Item = Number> {
        (0..COUNT).map(Number)
    }

    fn id(self) -> u32 {
        self.0 as u32 + 1
    }
}

fn state_error(message: String) -> MgmtError {
    MgmtError::new("CONTROLLER_STATE", 409, message)
}

pub(crate) struct Controllers([Controller; COUNT]);

impl Default for Controllers {
    fn default() -> Self {
        Controllers(
            [Controller {
                state: State::Active,
                remirror: None,
                failovers: 0,
                state_changed_at: EPOCH_MS,
            }; COUNT],
        )
    }
}

impl Controllers {
    fn get(&self, number: Number) -> &Controller {
        &self.0[number.0]
    }

    fn get_mut(&mut self, number: Number) -> &mut Controller {
        &mut self.0[number.0]
    }

    fn live(&self) -> impl Iterator<Item = Number> + '_ {
        Number::all().filter(|number| self.get(*number).state.is_live())
    }

    /// Sections each controller owns now.
    fn owned_sections(&self) -> [u64; COUNT] {
        let mut owned = [0; COUNT];
        for home in Number::all() {
            let others: Vec<Number> = self.live().filter(|other| *other != home).collect();
            let state = self.get(home).state;
            let kept = if others.is_empty() {
                HOME_SECTIONS
            } else {
                (state.home_owned() * HOME_SECTIONS as f64).round() as u64
            };
            owned[home.0] += kept;
            let moved = HOME_SECTIONS - kept;
            for (rank, other) in others.iter().enumerate() {
                let extra = u64::from((rank as u64) < moved % others.len() as u64);
                owned[other.0] += moved / others.len() as u64 + extra;
            }
        }
        owned
    }

    /// The next live controller after `number`, in the ring 1, 2, 3: where its dirty
    /// data has its second copy.
    fn mirror_of(&self, number: Number) -> Option<Number> {
        (1..COUNT)
            .map(|step| Number((number.0 + step) % COUNT))
            .find(|other| self.get(*other).state.is_live())
    }

    pub(crate) fn infos(&self) -> Vec<ControllerInfo> {
        let owned = self.owned_sections();
        let dirty = owned.map(|sections| sections * DIRTY_BYTES_PER_SECTION);
        let lag: Vec<u64> = Number::all()
            .map(|number| match self.get(number).remirror {
                Some(progress) => (dirty[number.0] as f64 * (1.0 - progress)).round() as u64,
                None => 0,
            })
            .collect();
        let mut mirror = [0; COUNT];
        for number in self.live() {
            if let Some(holder) = self.mirror_of(number) {
                mirror[holder.0] += dirty[number.0] - lag[number.0];
            }
        }
        let all_sections = HOME_SECTIONS * COUNT as u64;
        Number::all()
            .map(|number| {
                let controller = self.get(number);
                let ports = if controller.state.is_live() {
                    vec![format!("nbd://127.0.0.1:{}", FIRST_PORT + number.0 as u64)]
                } else {
                    Vec::new()
                };
                ControllerInfo {
                    id: number.id(),
                    name: format!("controller-{}", number.id()),
                    state: controller.state.name().into(),
                    ports,
                    ownership_share: owned[number.0] as f64 / all_sections as f64,
                    owned_sections: owned[number.0],
                    cache_bytes: CACHE_BYTES,
                    dirty_bytes: dirty[number.0],
                    mirror_bytes: mirror[number.0],
                    mirror_lag_bytes: lag[number.0],
                    remirror_progress: controller.remirror,
                    failback_progress: match controller.state {
                        State::Recovering { failback } => Some(failback),
                        _ => None,
                    },
                    failovers: controller.failovers,
                    state_changed_at: controller.state_changed_at,
                }
            })
            .collect()
    }

    fn info(&self, number: Number) -> ControllerInfo {
        self.infos().swap_remove(number.0)
    }

    pub(crate) fn fail(&mut self, id: u32, now: u64) -> Result<ControllerInfo, MgmtError> {
        let number = Number::new(id)?;
        let state = self.get(number).state;
        if !state.is_live() {
            return Err(state_error(format!(
                "controller {id} is {}; only an ACTIVE or RECOVERING controller can fail",
                state.name()
            )));
        }
        if self.live().all(|other| other == number) {
            return Err(state_error(format!(
                "controller {id} is the last live controller; recover another one first"
            )));
        }
        let failed = self.get_mut(number);
        failed.state = State::Failed;
        failed.remirror = None;
        failed.failovers += 1;
        failed.state_changed_at = now;
        let survivors: Vec<Number> = self.live().collect();
        for survivor in survivors {
            self.get_mut(survivor).remirror = Some(0.0);
        }
        Ok(self.info(number))
    }

    pub(crate) fn recover(&mut self, id: u32, now: u64) -> Result<ControllerInfo, MgmtError> {
        let number = Number::new(id)?;
        let controller = self.get_mut(number);
        if controller.state != State::Failed {
            return Err(state_error(format!(
                "controller {id} is {}; only a FAILED controller can be recovered",
                controller.state.name()
            )));
        }
        controller.state = State::Recovering { failback: 0.0 };
        controller.state_changed_at = now;
        Ok(self.info(number))
    }

    /// Moves every failback and (with a second live controller) every re-mirroring on by
    /// `step`; the finished ones end (a failback makes its controller ACTIVE).
    pub(crate) fn advance(&mut self, step: f64, now: u64) {
        let can_remirror = self.live().count() > 1;
        for controller in &mut self.0 {
            if let State::Recovering { failback } = controller.state {
                let failback = failback + step;
                if failback >= 1.0 {
                    controller.state = State::Active;
                    controller.state_changed_at = now;
                } else {
                    controller.state = State::Recovering { failback };
                }
            }
            if can_remirror && let Some(progress) = controller.remirror {
                let progress = progress + step;
                controller.remirror = (progress < 1.0).then_some(progress);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(controllers: &Controllers) -> Vec<String> {
        controllers
            .infos()
            .into_iter()
            .map(|info| info.state)
            .collect()
    }

    #[test]
    fn ownership_moves_to_the_survivors_and_back() {
        let mut controllers = Controllers::default();
        let owned = |c: &Controllers| c.owned_sections();
        assert_eq!(owned(&controllers), [1024; 3]);
        controllers.fail(2, 1).unwrap();
        assert_eq!(owned(&controllers), [1536, 0, 1536]);
        controllers.recover(2, 2).unwrap();
        controllers.advance(0.5, 3);
        assert_eq!(owned(&controllers), [1280, 512, 1280]);
        controllers.advance(0.5, 4);
        assert_eq!(owned(&controllers), [1024; 3]);
        assert_eq!(states(&controllers), ["ACTIVE"; 3]);
        for info in controllers.infos() {
            assert_eq!(info.remirror_progress, None);
            assert_eq!(info.mirror_lag_bytes, 0);
            assert_eq!(info.mirror_bytes, info.dirty_bytes);
        }
    }

    #[test]
    fn the_last_live_controller_cannot_fail() {
        let mut controllers = Controllers::default();
        controllers.fail(1, 1).unwrap();
        let refused = controllers.fail(1, 2).unwrap_err();
        assert_eq!((refused.code, refused.status), ("CONTROLLER_STATE", 409));
        controllers.fail(3, 3).unwrap();
        let refused = controllers.fail(2, 4).unwrap_err();
        assert_eq!((refused.code, refused.status), ("CONTROLLER_STATE", 409));
        assert_eq!(states(&controllers), ["FAILED", "ACTIVE", "FAILED"]);
        assert_eq!(controllers.owned_sections(), [0, 3072, 0]);
        // A sole survivor has nowhere to re-mirror to.
        controllers.advance(1.0, 5);
        assert_eq!(controllers.infos()[1].remirror_progress, Some(0.0));
        assert_eq!(
            controllers.recover(2, 6).unwrap_err().code,
            "CONTROLLER_STATE"
        );
        for id in [0, 4, u32::MAX] {
            let refused = controllers.fail(id, 7).unwrap_err();
            assert_eq!(
                (refused.code, refused.status),
                ("CONTROLLER_NOT_FOUND", 404)
            );
        }
    }
}
