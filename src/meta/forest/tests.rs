//! Oracle tests: the forest against one `BTreeMap` per dataset, with physical blocks
//! counted by hand, under random writes, trims, snapshots, restores, drops, copies of a
//! block by reference to another address, relocations and reclaims, and through an
//! encode/decode round trip.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Set {
        dataset: u32,
        lba: u64,
    },
    Trim {
        dataset: u32,
        start: u64,
        len: u64,
    },
    Share {
        from: u32,
        to: u32,
    },
    Drop {
        dataset: u32,
    },
    Relocate {
        dataset: u32,
        lba: u64,
    },
    ShareBlock {
        from: u32,
        lba: u64,
        to: u32,
        at: u64,
    },
    Reclaim {
        budget: usize,
    },
    RoundTrip,
}

const DATASETS: u32 = 5;
const BLOCKS: u64 = 70_000; // spans three levels

fn op() -> impl Strategy<Value = Op> {
    let lba = prop_oneof![0u64..200, 4000u64..4200, 0u64..BLOCKS];
    prop_oneof![
        8 => (0..DATASETS, lba.clone()).prop_map(|(dataset, lba)| Op::Set { dataset, lba }),
        2 => (0..DATASETS, lba.clone(), 0u64..300)
            .prop_map(|(dataset, start, len)| Op::Trim { dataset, start, len }),
        2 => (0..DATASETS, 0..DATASETS).prop_map(|(from, to)| Op::Share { from, to }),
        1 => (0..DATASETS).prop_map(|dataset| Op::Drop { dataset }),
        2 => (0..DATASETS, lba.clone()).prop_map(|(dataset, lba)| Op::Relocate { dataset, lba }),
        3 => (0..DATASETS, lba.clone(), 0..DATASETS, lba)
            .prop_map(|(from, lba, to, at)| Op::ShareBlock { from, lba, to, at }),
        1 => (0usize..50).prop_map(|budget| Op::Reclaim { budget }),
        1 => Just(Op::RoundTrip),
    ]
}

struct Oracle {
    forest: Forest,
    model: BTreeMap<u32, BTreeMap<u64, MapEntry>>,
    /// Blocks handed out and not yet freed.
    live: BTreeSet<u64>,
    /// The address each block was written for (what the cleaner reads in a summary).
    home: BTreeMap<u64, u64>,
    next_phys: u64,
}

impl Oracle {
    fn new() -> Self {
        let mut oracle = Oracle {
            forest: Forest::new(),
            model: BTreeMap::new(),
            live: BTreeSet::new(),
            home: BTreeMap::new(),
            next_phys: 0,
        };
        for dataset in 0..DATASETS {
            oracle.forest.create(dataset, 1, BLOCKS);
            oracle.model.insert(dataset, BTreeMap::new());
        }
        oracle
    }

    fn take_freed(&mut self, freed: Vec<Freed>) -> Result<(), TestCaseError> {
        for (phys, family) in freed {
            prop_assert_eq!(family, 1);
            prop_assert!(self.live.remove(&phys), "block {} freed twice", phys);
            prop_assert!(
                self.forest.aliases(phys).is_empty(),
                "block {} freed with aliases",
                phys
            );
            let referenced = self
                .model
                .values()
                .any(|map| map.values().any(|entry| entry.phys == phys));
            prop_assert!(!referenced, "block {} freed while referenced", phys);
        }
        Ok(())
    }

    fn apply(&mut self, step: usize, op: Op) -> Result<(), TestCaseError> {
        let mut freed = Vec::new();
        match op {
            Op::Set { dataset, lba } => {
                let entry = MapEntry {
                    phys: self.next_phys,
                    checksum: lba,
                    generation: step as u64,
                };
                self.next_phys += 1;
                if let Some(map) = self.model.get_mut(&dataset) {
                    self.live.insert(entry.phys);
                    self.home.insert(entry.phys, lba);
                    let old = self.forest.set(dataset, lba, entry, &mut freed);
                    prop_assert_eq!(old, map.insert(lba, entry));
                } else {
                    prop_assert!(!self.forest.contains(dataset));
                }
            }
            Op::Trim {
                dataset,
                start,
                len,
            } => {
                let generation = (step as u64).saturating_sub(20);
                let mut removed = Vec::new();
                self.forest.remove_range(
                    dataset,
                    start,
                    start + len,
                    generation,
                    &mut freed,
                    &mut |lba, entry| removed.push((lba, entry)),
                );
                let expected: Vec<(u64, MapEntry)> = self
                    .model
                    .get(&dataset)
                    .map(|map| {
                        map.range(start..start + len)
                            .filter(|(_, entry)| entry.generation <= generation)
                            .map(|(lba, entry)| (*lba, *entry))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(map) = self.model.get_mut(&dataset) {
                    for (lba, _) in &expected {
                        map.remove(lba);
                    }
                }
                prop_assert_eq!(removed, expected);
            }
            Op::Share { from, to } => {
                let shared = self.forest.share(from, to);
                prop_assert_eq!(shared, self.model.contains_key(&from));
                if let Some(map) = self.model.get(&from).cloned() {
                    self.model.insert(to, map);
                }
            }
            Op::Drop { dataset } => {
                prop_assert_eq!(
                    self.forest.drop_dataset(dataset),
                    self.model.remove(&dataset).is_some()
                );
            }
            Op::Relocate { dataset, lba } => {
                let Some(entry) = self.model.get(&dataset).and_then(|map| map.get(&lba)) else {
                    return Ok(());
                };
                let (old, new) = (entry.phys, self.next_phys);
                self.next_phys += 1;
                // The cleaner knows a block by the address it was written for.
                let home = self.home[&old];
                let datasets: Vec<u32> = self.model.keys().copied().collect();
                prop_assert!(self.forest.relocate(&datasets, home, old, new, &mut freed));
                self.take_freed(std::mem::take(&mut freed))?;
                self.live.remove(&old);
                self.live.insert(new);
                self.home.insert(new, home);
                for map in self.model.values_mut() {
                    for entry in map.values_mut() {
                        if entry.phys == old {
                            entry.phys = new;
                        }
                    }
                }
            }
            Op::ShareBlock { from, lba, to, at } => {
                let source = self.model.get(&from).and_then(|map| map.get(&lba)).copied();
                let (Some(source), true) = (source, self.model.contains_key(&to)) else {
                    return Ok(());
                };
                let entry = MapEntry {
                    phys: source.phys,
                    checksum: at,
                    generation: step as u64,
                };
                let old = self.forest.share_block(to, at, lba, entry, &mut freed);
                let map = self.model.get_mut(&to).expect("checked");
                prop_assert_eq!(old, map.insert(at, entry));
            }
            Op::Reclaim { budget } => {
                self.forest.reclaim(budget, &mut freed);
            }
            Op::RoundTrip => {
                let mut bytes = Vec::new();
                self.forest.reclaim(usize::MAX, &mut freed);
                self.forest.encode(&mut bytes);
                let (decoded, used) = Forest::decode(&bytes, true)
                    .map_err(|err| TestCaseError::fail(format!("decode failed: {err}")))?;
                prop_assert_eq!(used, bytes.len());
                prop_assert_eq!(decoded.shared.clone(), self.forest.shared.clone());
                prop_assert_eq!(decoded.aliases.clone(), self.forest.aliases.clone());
                self.forest = decoded;
            }
        }
        self.take_freed(freed)?;
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for (dataset, map) in &self.model {
            prop_assert_eq!(self.forest.len(*dataset), map.len() as u64);
            let entries: Vec<(u64, MapEntry)> = map.iter().map(|(l, e)| (*l, *e)).collect();
            prop_assert_eq!(self.forest.entries(*dataset), entries);
            for (lba, entry) in map.iter().take(20) {
                prop_assert_eq!(self.forest.get(*dataset, *lba), Some(*entry));
            }
            // Unique blocks: referenced once, from this dataset (exact once nothing waits
            // to be reclaimed). A block copied by reference to another address of the
            // same dataset is referenced twice: it counts as shared.
            if self.forest.pending() > 0 {
                continue;
            }
            let unique = map
                .values()
                .filter(|entry| {
                    self.model
                        .values()
                        .flat_map(|other| other.values())
                        .filter(|e| e.phys == entry.phys)
                        .count()
                        == 1
                })
                .count() as u64;
            prop_assert_eq!(
                self.forest.unique_blocks(*dataset),
                unique,
                "unique of {}",
                dataset
            );
        }
        // Differences between two datasets.
        let keys: Vec<u32> = self.model.keys().copied().collect();
        if keys.len() >= 2 {
            let (a, b) = (keys[0], keys[keys.len() - 1]);
            let mut got = Vec::new();
            self.forest.diff(a, b, &mut |lba| got.push(lba));
            let (ma, mb) = (&self.model[&a], &self.model[&b]);
            let lbas: BTreeSet<u64> = ma.keys().chain(mb.keys()).copied().collect();
            let expected: Vec<u64> = lbas
                .into_iter()
                .filter(|lba| ma.get(lba).map(|e| e.phys) != mb.get(lba).map(|e| e.phys))
                .collect();
            let window: Vec<u64> = expected
                .iter()
                .copied()
                .filter(|lba| (100..4150).contains(lba))
                .collect();
            prop_assert_eq!(got, expected);
            let mut got = Vec::new();
            self.forest
                .diff_range(a, b, 100, 4150, &mut |lba| got.push(lba));
            prop_assert_eq!(got, window);
        }
        Ok(())
    }

    /// After everything is reclaimed, exactly the referenced blocks are live.
    fn check_no_leak(&mut self) -> Result<(), TestCaseError> {
        let mut freed = Vec::new();
        self.forest.reclaim(usize::MAX, &mut freed);
        self.take_freed(freed)?;
        let referenced: BTreeSet<u64> = self
            .model
            .values()
            .flat_map(|map| map.values().map(|entry| entry.phys))
            .collect();
        prop_assert_eq!(&self.live, &referenced);
        let live: BTreeSet<u64> = self.forest.live_blocks().iter().map(|(p, _)| *p).collect();
        prop_assert_eq!(live.len(), self.forest.live_blocks().len());
        prop_assert_eq!(live, referenced);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn forest_matches_oracle(ops in proptest::collection::vec(op(), 1..300)) {
        let mut oracle = Oracle::new();
        for (step, op) in ops.into_iter().enumerate() {
            oracle.apply(step + 1, op)?;
        }
        oracle.check_no_leak()?;
    }
}

#[test]
fn sharing_a_big_tree_is_constant_work() {
    let mut forest = Forest::new();
    let mut freed = Vec::new();
    forest.create(1, 1, 1 << 20);
    for lba in 0..100_000 {
        let entry = MapEntry {
            phys: lba,
            checksum: 0,
            generation: 1,
        };
        forest.set(1, lba, entry, &mut freed);
    }
    let nodes = forest.stats().nodes;
    for snapshot in 2..1002 {
        assert!(forest.share(1, snapshot));
    }
    assert_eq!(forest.stats().nodes, nodes, "snapshots copy no nodes");
    assert_eq!(forest.len(500), 100_000);
    // A write after the snapshots copies only its path.
    let entry = MapEntry {
        phys: 1 << 30,
        checksum: 0,
        generation: 2,
    };
    forest.set(1, 5, entry, &mut freed);
    assert!(forest.stats().nodes <= nodes + 4);
    assert!(freed.is_empty());
    assert_eq!(forest.unique_blocks(1), 1);
    assert_eq!(forest.get(1000, 5).map(|e| e.phys), Some(5));
}

#[test]
fn decode_refuses_damage() {
    let mut forest = Forest::new();
    let mut freed = Vec::new();
    forest.create(1, 1, 4096);
    let entry = MapEntry {
        phys: 7,
        checksum: 1,
        generation: 1,
    };
    forest.set(1, 3000, entry, &mut freed);
    let mut bytes = Vec::new();
    forest.encode(&mut bytes);
    for cut in 0..bytes.len() {
        assert!(Forest::decode(&bytes[..cut], true).is_err(), "cut at {cut}");
    }
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0xFF;
        let _ = Forest::decode(&bad, true); // must not panic
    }
}
