//! Which controller owns a section and which one mirrors it.
//!
//! A volume is cut into 64 KiB sections. Each live controller gets a weight for a section,
//! a hash of (volume, section, controller); the heaviest is the owner and the next one the
//! mirror (rendezvous hashing). This gives what DESIGN.md asks of ownership:
//!
//! - **Stable:** the choice depends only on the section and the set of live controllers,
//!   never on history, so every thread computes the same answer without a shared table.
//! - **Even:** sections spread evenly over the controllers, with no LUN ownership.
//! - **Minimal movement:** when a controller fails, only the sections it owned or mirrored
//!   change hands, and the new owner of each of its sections is exactly its old mirror,
//!   the controller that already holds the dirty data. When it returns, the same sections
//!   move back.
//!
//! Computing a placement is three small hashes, no lock and no allocation.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::ControllerId;
use crate::types::{MAX_CONTROLLERS, SECTION_SIZE};

/// The controllers that are alive, as a bit set over controller indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LiveSet(u8);

impl LiveSet {
    /// All of `count` controllers alive.
    pub fn all(count: usize) -> LiveSet {
        LiveSet(((1u16 << count.min(MAX_CONTROLLERS)) - 1) as u8)
    }

    pub fn contains(self, controller: ControllerId) -> bool {
        self.0 & (1 << controller.index()) != 0
    }

    pub fn without(self, controller: ControllerId) -> LiveSet {
        LiveSet(self.0 & !(1 << controller.index()))
    }

    pub fn with(self, controller: ControllerId) -> LiveSet {
        LiveSet(self.0 | (1 << controller.index()))
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> LiveSet {
        LiveSet(bits)
    }

    /// The live controllers, in order.
    pub fn ids(self) -> impl Iterator<Item = ControllerId> {
        ControllerId::all(MAX_CONTROLLERS).filter(move |id| self.contains(*id))
    }
}

/// Where a section lives: its owner, and its mirror unless only one controller is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub owner: ControllerId,
    pub mirror: Option<ControllerId>,
}

/// The section that holds byte `offset` of a volume.
pub fn section_of(offset: u64) -> u64 {
    offset / SECTION_SIZE as u64
}

fn weight(volume: u32, section: u64, controller: ControllerId) -> u64 {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&volume.to_le_bytes());
    key[4..].copy_from_slice(&section.to_le_bytes());
    xxh3_64_with_seed(&key, controller.index() as u64)
}

/// The placement of `section` of `volume` over `live`; `None` when no controller lives.
pub fn place(volume: u32, section: u64, live: LiveSet) -> Option<Placement> {
    let mut best: Option<(u64, ControllerId)> = None;
    let mut second: Option<(u64, ControllerId)> = None;
    for id in live.ids() {
        let candidate = (weight(volume, section, id), id);
        if best.is_none_or(|b| candidate > b) {
            second = best;
            best = Some(candidate);
        } else if second.is_none_or(|s| candidate > s) {
            second = Some(candidate);
        }
    }
    best.map(|(_, owner)| Placement {
        owner,
        mirror: second.map(|(_, mirror)| mirror),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn controller(index: usize) -> ControllerId {
        ControllerId::new(index, 3).unwrap()
    }

    #[test]
    fn sections_spread_evenly_over_three_controllers() {
        let live = LiveSet::all(3);
        let mut owned = [0u32; 3];
        let mut mirrored = [0u32; 3];
        let sections = 30_000;
        for section in 0..sections {
            let placement = place(7, section, live).unwrap();
            owned[placement.owner.index()] += 1;
            mirrored[placement.mirror.unwrap().index()] += 1;
        }
        for count in owned.iter().chain(&mirrored) {
            let share = f64::from(*count) / sections as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.02, "{owned:?} {mirrored:?}");
        }
    }

    #[test]
    fn one_controller_left_owns_everything_without_a_mirror() {
        let live = LiveSet::all(3)
            .without(controller(0))
            .without(controller(2));
        for section in 0..100 {
            assert_eq!(
                place(1, section, live),
                Some(Placement {
                    owner: controller(1),
                    mirror: None
                })
            );
        }
        assert_eq!(place(1, 0, LiveSet::default()), None);
    }

    proptest! {
        #[test]
        fn a_failure_moves_only_the_failed_controllers_sections_to_their_mirrors(
            volume in any::<u32>(),
            section in 0u64..(1 << 40),
            failed in 0usize..3,
        ) {
            let all = LiveSet::all(3);
            let before = place(volume, section, all).unwrap();
            prop_assert_ne!(Some(before.owner), before.mirror);
            let survivors = all.without(controller(failed));
            let after = place(volume, section, survivors).unwrap();
            prop_assert!(survivors.contains(after.owner));
            if before.owner.index() == failed {
                // The mirror already holds the dirty data: it is promoted.
                prop_assert_eq!(Some(after.owner), before.mirror);
            } else {
                prop_assert_eq!(after.owner, before.owner);
            }
            if before.owner.index() != failed && before.mirror.map(ControllerId::index) != Some(failed) {
                prop_assert_eq!(after, before);
            }
            // Failback restores the original placement exactly.
            prop_assert_eq!(place(volume, section, survivors.with(controller(failed))), Some(before));
        }
    }
}
