//! The policy contract (see the module doc), checked for every policy against a model.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Admission, CachePolicy, Key, SlotId, chosen, every_policy};

/// What a policy must agree with: who holds which slot, and the high-water mark of
/// slots handed out.
#[derive(Default)]
struct Model {
    slot_of: BTreeMap<Key, SlotId>,
    key_in: BTreeMap<SlotId, Key>,
    handed_out: SlotId,
}

#[derive(Clone, Debug)]
enum Op {
    Get(Key),
    Admit(Key),
    Remove(Key),
    Restore(Key, SlotId),
}

fn op(keys: Key, capacity: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..keys).prop_map(Op::Get),
        4 => (0..keys).prop_map(Op::Admit),
        1 => (0..keys).prop_map(Op::Remove),
        1 => (0..keys, 0..capacity + 2).prop_map(|(key, slot)| Op::Restore(key, slot)),
    ]
}

impl Model {
    fn take(&mut self, key: Key, slot: SlotId) {
        assert!(self.slot_of.insert(key, slot).is_none(), "key {key} twice");
        assert!(self.key_in.insert(slot, key).is_none(), "slot {slot} twice");
        self.handed_out = self.handed_out.max(slot + 1);
    }

    fn admit(&mut self, policy: &dyn CachePolicy, key: Key, outcome: Admission) {
        let name = policy.name();
        if self.slot_of.contains_key(&key) {
            assert_eq!(
                outcome,
                Admission::Rejected,
                "{name}: admit of resident {key}"
            );
            return;
        }
        let Admission::Into { slot, evicted } = outcome else {
            panic!("{name}: rejected {key}, which is not resident");
        };
        assert!(slot < policy.capacity(), "{name}: slot {slot} out of range");
        match evicted {
            Some(old) => {
                assert_eq!(
                    self.slot_of.remove(&old),
                    Some(slot),
                    "{name}: evicted {old}"
                );
                self.key_in.remove(&slot);
            }
            None => {
                assert!(
                    !self.key_in.contains_key(&slot),
                    "{name}: slot {slot} is taken"
                );
                assert!(
                    slot <= self.handed_out,
                    "{name}: slot {slot} handed out before {}",
                    self.handed_out
                );
            }
        }
        if evicted.is_some() {
            assert_eq!(
                self.slot_of.len() as u32 + 1,
                policy.capacity(),
                "{name}: evicted while not full"
            );
        }
        self.take(key, slot);
    }

    fn apply(&mut self, policy: &mut dyn CachePolicy, op: &Op) {
        let name = policy.name();
        match *op {
            Op::Get(key) => {
                let expected = self.slot_of.get(&key).copied();
                assert_eq!(policy.get(key), expected, "{name}: get {key}");
            }
            Op::Admit(key) => {
                let outcome = policy.admit(key);
                self.admit(policy, key, outcome);
            }
            Op::Remove(key) => {
                let expected = self.slot_of.remove(&key);
                if let Some(slot) = expected {
                    self.key_in.remove(&slot);
                }
                assert_eq!(policy.remove(key), expected, "{name}: remove {key}");
            }
            Op::Restore(key, slot) => {
                let allowed = slot < policy.capacity()
                    && !self.slot_of.contains_key(&key)
                    && !self.key_in.contains_key(&slot);
                assert_eq!(
                    policy.restore(key, slot),
                    allowed,
                    "{name}: restore {key}@{slot}"
                );
                if allowed {
                    self.take(key, slot);
                }
            }
        }
    }

    fn check(&self, policy: &dyn CachePolicy, keys: Key) {
        let name = policy.name();
        assert_eq!(policy.len() as usize, self.slot_of.len(), "{name}: len");
        for key in 0..keys {
            let expected = self.slot_of.get(&key).copied();
            assert_eq!(policy.peek(key), expected, "{name}: peek {key}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_policy_agrees_with_the_model(
        capacity in 1u32..12,
        ops in prop::collection::vec(op(40, 12), 1..400),
    ) {
        for mut policy in every_policy(capacity) {
            let mut model = Model::default();
            for op in &ops {
                model.apply(policy.as_mut(), op);
                model.check(policy.as_ref(), 40);
            }
        }
    }
}

#[test]
fn slots_are_handed_out_from_zero_and_a_removed_one_is_reused() {
    for mut policy in every_policy(16) {
        let name = policy.name();
        for key in 0..16 {
            let slot = key as SlotId;
            assert_eq!(
                policy.admit(100 + key),
                Admission::Into {
                    slot,
                    evicted: None
                },
                "{name}"
            );
        }
        assert_eq!(policy.admit(105), Admission::Rejected, "{name}: resident");
        assert_eq!(policy.remove(107), Some(7), "{name}");
        assert_eq!(policy.remove(107), None, "{name}: removed twice");
        assert_eq!(
            policy.admit(500),
            Admission::Into {
                slot: 7,
                evicted: None
            },
            "{name}: the freed slot"
        );
        let Admission::Into { evicted, .. } = policy.admit(501) else {
            panic!("{name}: rejected a new key when full");
        };
        assert!(evicted.is_some(), "{name}: full, so something is evicted");
        assert_eq!(policy.len(), 16, "{name}");
    }
}

#[test]
fn restore_refuses_taken_keys_and_slots_and_leaves_gaps_free() {
    for mut policy in every_policy(8) {
        let name = policy.name();
        assert!(policy.restore(10, 5), "{name}");
        assert!(!policy.restore(10, 6), "{name}: key taken");
        assert!(!policy.restore(11, 5), "{name}: slot taken");
        assert!(!policy.restore(12, 8), "{name}: slot out of range");
        assert_eq!(policy.peek(10), Some(5), "{name}");
        let mut slots = BTreeSet::new();
        for key in 20..27 {
            let Admission::Into { slot, evicted } = policy.admit(key) else {
                panic!("{name}: rejected {key}");
            };
            assert_eq!(evicted, None, "{name}: not full yet");
            slots.insert(slot);
        }
        let expected: BTreeSet<SlotId> = [0, 1, 2, 3, 4, 6, 7].into();
        assert_eq!(slots, expected, "{name}: the gaps and the rest");
        assert_eq!(policy.get(10), Some(5), "{name}");
    }
}

#[test]
fn zero_capacity_takes_nothing() {
    for mut policy in every_policy(0) {
        assert_eq!(policy.admit(1), Admission::Rejected, "{}", policy.name());
        assert!(!policy.restore(1, 0), "{}", policy.name());
    }
}

/// Memory follows what is cached: a 20M-slot policy holding 1,000 keys (with as many
/// more evicted through it, so ghosts are in use) allocates little.
#[test]
fn memory_grows_with_resident_keys_not_capacity() {
    for mut policy in every_policy(20_000_000) {
        for key in 0..1_000 {
            policy.admit(key);
        }
        for key in 0..500 {
            policy.remove(key * 2);
        }
        let bytes = policy.index_bytes();
        println!("{}: {bytes} bytes for {} keys", policy.name(), policy.len());
        assert!(bytes < 128 * 1024, "{}: {bytes} bytes", policy.name());
    }
}

/// The DRAM budget: at most 32 bytes per cached block for the chosen policy, full, with
/// its ghost full too. Stays put under more traffic (no growth once grown).
#[test]
fn chosen_policy_index_fits_32_bytes_per_cached_block() {
    const SLOTS: u32 = 1 << 20;
    let mut policy = chosen(SLOTS);
    for key in 0..3 * u64::from(SLOTS) {
        if policy.get(key / 3).is_none() {
            policy.admit(key);
        }
    }
    assert_eq!(policy.len(), SLOTS);
    let bytes = policy.index_bytes();
    let per_block = bytes as f64 / f64::from(policy.len());
    println!("{}: {per_block:.2} B per cached block", policy.name());
    assert!(
        per_block <= 32.0,
        "{}: {per_block:.2} B per block",
        policy.name()
    );
    for key in 0..u64::from(SLOTS) {
        if policy.get(key % 5000).is_none() {
            policy.admit(10 * u64::from(SLOTS) + key);
        }
    }
    assert_eq!(policy.index_bytes(), bytes, "grew in steady state");
}
