//! The node's current placement rule, readable by every request with one atomic load.
//!
//! A [`RoutingState`] is the set of live controllers plus, during a failback, the
//! controller coming back and how many of [`FAILBACK_STEPS`] steps of its sections have
//! moved to it: a section whose step bucket is below that count is placed as if the
//! returning controller were live, every other section as if it were not. Step 0 places
//! everything as before the failback and the last step as after it, so a failback is a
//! sequence of small ownership changes, each moving about 1/`FAILBACK_STEPS` of the
//! returning controller's sections.

use std::sync::atomic::{AtomicU32, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::ControllerId;
use super::placement::{LiveSet, place};
use crate::cache::{Route, SectionKey, SectionRouter};

/// Steps of a failback.
pub const FAILBACK_STEPS: u8 = 8;

/// See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingState {
    pub live: LiveSet,
    /// The controller being failed back and the steps done.
    pub returning: Option<(ControllerId, u8)>,
}

impl RoutingState {
    fn pack(self) -> u32 {
        let (returning, step) = match self.returning {
            Some((controller, step)) => (controller.index() as u32 + 1, u32::from(step)),
            None => (0, 0),
        };
        u32::from(self.live.bits()) | returning << 8 | step << 16
    }

    fn unpack(bits: u32) -> RoutingState {
        let returning = (bits >> 8) & 0xFF;
        RoutingState {
            live: LiveSet::from_bits(bits as u8),
            returning: (returning > 0).then(|| {
                (
                    ControllerId::try_from(returning as usize - 1).expect("packed from an id"),
                    (bits >> 16) as u8,
                )
            }),
        }
    }

    /// Without `controller` (it failed); a failback of it stops.
    pub fn without(self, controller: ControllerId) -> RoutingState {
        RoutingState {
            live: self.live.without(controller),
            returning: self
                .returning
                .filter(|(returning, _)| *returning != controller),
        }
    }

    /// `controller` starts coming back, owning nothing yet.
    pub fn returning(self, controller: ControllerId) -> RoutingState {
        RoutingState {
            live: self.live,
            returning: Some((controller, 0)),
        }
    }

    /// `step` steps of the failback done; at the last step the controller is live.
    pub fn at_step(self, step: u8) -> RoutingState {
        match self.returning {
            Some((controller, _)) if step >= FAILBACK_STEPS => RoutingState {
                live: self.live.with(controller),
                returning: None,
            },
            Some((controller, _)) => RoutingState {
                live: self.live,
                returning: Some((controller, step)),
            },
            None => self,
        }
    }

    /// Which step moves `key` during a failback.
    fn bucket(key: SectionKey) -> u8 {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&key.0.to_le_bytes());
        bytes[4..].copy_from_slice(&key.1.to_le_bytes());
        (xxh3_64_with_seed(&bytes, 0xFA11_BAC4) % u64::from(FAILBACK_STEPS)) as u8
    }

    /// The live set that places `key`.
    fn live_for(self, key: SectionKey) -> LiveSet {
        match self.returning {
            Some((controller, step)) if Self::bucket(key) < step => self.live.with(controller),
            _ => self.live,
        }
    }
}

impl SectionRouter for RoutingState {
    fn route(&self, key: SectionKey) -> Route {
        let placement = place(key.0, key.1, self.live_for(key))
            .expect("the node never runs with no live controller");
        Route {
            owner: placement.owner,
            mirror: placement.mirror,
        }
    }
}

/// The current [`RoutingState`], shared by every request.
pub struct Routing {
    state: AtomicU32,
}

impl Routing {
    pub fn new(count: usize) -> Routing {
        Routing {
            state: AtomicU32::new(
                RoutingState {
                    live: LiveSet::all(count),
                    returning: None,
                }
                .pack(),
            ),
        }
    }

    pub fn load(&self) -> RoutingState {
        RoutingState::unpack(self.state.load(Ordering::Acquire))
    }

    /// Only while requests are paused (or when the change moves no section).
    pub fn store(&self, state: RoutingState) {
        self.state.store(state.pack(), Ordering::Release);
    }
}

impl SectionRouter for Routing {
    fn route(&self, key: SectionKey) -> Route {
        self.load().route(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: usize) -> ControllerId {
        ControllerId::new(index, 3).unwrap()
    }

    #[test]
    fn states_survive_packing() {
        let full = RoutingState {
            live: LiveSet::all(3),
            returning: None,
        };
        for state in [
            full,
            full.without(id(1)),
            full.without(id(1)).returning(id(1)).at_step(3),
        ] {
            assert_eq!(RoutingState::unpack(state.pack()), state);
        }
    }

    #[test]
    fn failback_moves_sections_in_steps_and_ends_where_it_started() {
        let full = RoutingState {
            live: LiveSet::all(3),
            returning: None,
        };
        let degraded = full.without(id(2));
        let start = degraded.returning(id(2));
        let keys: Vec<SectionKey> = (0..4000).map(|section| (5, section)).collect();
        for key in &keys {
            assert_eq!(start.route(*key), degraded.route(*key));
        }
        let mut previous = start;
        let mut moved_per_step = Vec::new();
        for step in 1..=FAILBACK_STEPS {
            let next = previous.at_step(step);
            let moved = keys
                .iter()
                .filter(|key| previous.route(**key) != next.route(**key))
                .count();
            moved_per_step.push(moved);
            previous = next;
        }
        assert_eq!(previous, full);
        // Each step moves a share of the returning controller's sections, never all.
        let total: usize = moved_per_step.iter().sum();
        for moved in &moved_per_step {
            assert!(*moved < total / 3, "{moved_per_step:?}");
        }
    }
}
