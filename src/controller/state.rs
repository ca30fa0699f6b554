//! The life of one controller, as a state machine with one checked transition function.
//!
//! ```text
//!             Ready              Fail
//!  Starting ────────► Active ─────────► Failed ◄──────────┐
//!     │                  ▲                 │              │ Fail
//!     │ Fail             │ Warm            │ Recover      │
//!     └──────► Failed    └──── Recovering ◄┘──────────────┘
//!
//!  Stop: from any state but Stopped ──► Stopped (terminal)
//! ```
//!
//! What each state promises the rest of the node:
//!
//! | state        | ports open | owns sections | holds mirror copies |
//! |--------------|------------|---------------|---------------------|
//! | `Starting`   | no         | no            | no                  |
//! | `Active`     | yes        | yes           | yes                 |
//! | `Failed`     | no         | no            | no (its DRAM is gone) |
//! | `Recovering` | yes        | a growing share, one failback step at a time | yes |
//! | `Stopped`    | no         | no            | no                  |
//!
//! A `Failed` controller lost its DRAM: it comes back only through `Recovering`, where its
//! port serves hosts at once (their requests are carried out on the current owners) and its
//! sections move back to it in steps, each with its clean and dirty data, so its cache is
//! warm for what it owns; after the last step (`Warm`) it is `Active` again. Every other pair of (state, event) is refused with an
//! [`InvalidTransition`] that names both, so a caller bug cannot move a controller into a
//! state whose promises do not hold.

use std::fmt;

/// Where a controller is in its life (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerState {
    Starting,
    Active,
    Failed,
    Recovering,
    Stopped,
}

/// What happens to a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerEvent {
    /// Its threads and cache are up.
    Ready,
    /// A hard failure: injected by an operator, or a panic on one of its threads.
    Fail,
    /// An operator brings a failed controller back.
    Recover,
    /// Its cache holds the mirror copies it needs; ownership may move back.
    Warm,
    /// The node shuts down.
    Stop,
}

/// A (state, event) pair the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a controller in state {from} cannot take event {event:?}")]
pub struct InvalidTransition {
    pub from: ControllerState,
    pub event: ControllerEvent,
}

impl ControllerState {
    pub const ALL: [ControllerState; 5] = [
        ControllerState::Starting,
        ControllerState::Active,
        ControllerState::Failed,
        ControllerState::Recovering,
        ControllerState::Stopped,
    ];

    /// The one transition function: the state after `event`, or why not.
    pub fn on(self, event: ControllerEvent) -> Result<ControllerState, InvalidTransition> {
        use ControllerEvent::*;
        use ControllerState::*;
        match (self, event) {
            (Starting, Ready) => Ok(Active),
            (Starting | Active | Recovering, Fail) => Ok(Failed),
            (Failed, Recover) => Ok(Recovering),
            (Recovering, Warm) => Ok(Active),
            (Starting | Active | Failed | Recovering, Stop) => Ok(Stopped),
            (from, event) => Err(InvalidTransition { from, event }),
        }
    }

    /// Whether its target ports accept host connections.
    pub fn ports_open(self) -> bool {
        matches!(self, ControllerState::Active | ControllerState::Recovering)
    }

    /// Whether it owns its whole share of sections (a recovering one owns a growing part).
    pub fn owns_sections(self) -> bool {
        self == ControllerState::Active
    }

    /// Whether it may hold mirror copies of other controllers' dirty data.
    pub fn holds_mirrors(self) -> bool {
        matches!(self, ControllerState::Active | ControllerState::Recovering)
    }

    /// The name operators see (`troika controller ls`, events).
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerState::Starting => "STARTING",
            ControllerState::Active => "ACTIVE",
            ControllerState::Failed => "FAILED",
            ControllerState::Recovering => "RECOVERING",
            ControllerState::Stopped => "STOPPED",
        }
    }
}

impl fmt::Display for ControllerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ControllerEvent::*;
    use super::ControllerState::*;
    use super::*;

    const EVENTS: [ControllerEvent; 5] = [Ready, Fail, Recover, Warm, Stop];

    /// The allowed transitions, written out independently of `on`.
    const ALLOWED: &[(ControllerState, ControllerEvent, ControllerState)] = &[
        (Starting, Ready, Active),
        (Starting, Fail, Failed),
        (Starting, Stop, Stopped),
        (Active, Fail, Failed),
        (Active, Stop, Stopped),
        (Failed, Recover, Recovering),
        (Failed, Stop, Stopped),
        (Recovering, Warm, Active),
        (Recovering, Fail, Failed),
        (Recovering, Stop, Stopped),
    ];

    #[test]
    fn every_pair_is_allowed_exactly_as_the_table_says() {
        for from in ControllerState::ALL {
            for event in EVENTS {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (from.on(event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} + {event:?}"),
                    (Err(refused), None) => {
                        assert_eq!(refused, InvalidTransition { from, event });
                        assert!(refused.to_string().contains(from.as_str()));
                    }
                    (got, want) => panic!("{from} + {event:?}: got {got:?}, table says {want:?}"),
                }
            }
        }
    }

    #[test]
    fn a_failed_controller_owns_nothing_until_it_is_warm_again() {
        let mut state = Active;
        for event in [Fail, Recover] {
            state = state.on(event).unwrap();
            assert!(!state.owns_sections(), "{state}");
        }
        assert!(state.holds_mirrors() && state.ports_open());
        assert!(state.on(Ready).is_err(), "recovery must go through Warm");
        assert_eq!(state.on(Warm), Ok(Active));
        assert!(Stopped.on(Recover).is_err() && Stopped.on(Stop).is_err());
    }
}
