//! The redirect-on-write map of one volume: logical block → where its current copy lives on
//! the array, the checksum that copy must match and the generation of the write that
//! produced it.
//!
//! Entries are kept in fixed chunks of 64 consecutive blocks in a hash table, so a lookup is
//! one hash probe and memory grows with the blocks actually written (about 24 bytes per
//! block plus a little per chunk), not with the volume size.

use hashbrown::HashMap;

use crate::layout::PhysBlock;
use crate::types::Lba;

const CHUNK_BLOCKS: u64 = 64;

/// Where a block lives and how to prove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub phys: PhysBlock,
    pub checksum: u64,
    pub generation: u64,
}

const VACANT: MapEntry = MapEntry {
    phys: u64::MAX,
    checksum: 0,
    generation: 0,
};

struct Chunk {
    entries: [MapEntry; CHUNK_BLOCKS as usize],
    used: u32,
}

/// One volume's map.
#[derive(Default)]
pub struct BlockMap {
    chunks: HashMap<u64, Box<Chunk>>,
    len: u64,
}

impl BlockMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mapped blocks.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, lba: Lba) -> Option<MapEntry> {
        let chunk = self.chunks.get(&(lba / CHUNK_BLOCKS))?;
        let entry = chunk.entries[(lba % CHUNK_BLOCKS) as usize];
        (entry.phys != VACANT.phys).then_some(entry)
    }

    /// Sets the entry of `lba`, returning the one it replaces.
    pub fn set(&mut self, lba: Lba, entry: MapEntry) -> Option<MapEntry> {
        debug_assert_ne!(entry.phys, VACANT.phys);
        let chunk = self.chunks.entry(lba / CHUNK_BLOCKS).or_insert_with(|| {
            Box::new(Chunk {
                entries: [VACANT; CHUNK_BLOCKS as usize],
                used: 0,
            })
        });
        let slot = &mut chunk.entries[(lba % CHUNK_BLOCKS) as usize];
        let old = *slot;
        *slot = entry;
        if old.phys == VACANT.phys {
            chunk.used += 1;
            self.len += 1;
            None
        } else {
            Some(old)
        }
    }

    /// Removes the entry of `lba`.
    pub fn remove(&mut self, lba: Lba) -> Option<MapEntry> {
        let key = lba / CHUNK_BLOCKS;
        let chunk = self.chunks.get_mut(&key)?;
        let slot = &mut chunk.entries[(lba % CHUNK_BLOCKS) as usize];
        if slot.phys == VACANT.phys {
            return None;
        }
        let old = std::mem::replace(slot, VACANT);
        chunk.used -= 1;
        self.len -= 1;
        if chunk.used == 0 {
            self.chunks.remove(&key);
        }
        Some(old)
    }

    /// Removes every entry in `[start, end)` whose generation is at most `generation`,
    /// calling `removed` for each.
    pub fn remove_range(
        &mut self,
        start: Lba,
        end: Lba,
        generation: u64,
        mut removed: impl FnMut(Lba, MapEntry),
    ) {
        if start >= end {
            return;
        }
        let first = start / CHUNK_BLOCKS;
        let last = (end - 1) / CHUNK_BLOCKS;
        let keys: Vec<u64> = if last - first < self.chunks.len() as u64 {
            (first..=last)
                .filter(|key| self.chunks.contains_key(key))
                .collect()
        } else {
            self.chunks
                .keys()
                .copied()
                .filter(|key| (first..=last).contains(key))
                .collect()
        };
        for key in keys {
            let Some(chunk) = self.chunks.get_mut(&key) else {
                continue;
            };
            for index in 0..CHUNK_BLOCKS {
                let lba = key * CHUNK_BLOCKS + index;
                let slot = &mut chunk.entries[index as usize];
                if lba < start
                    || lba >= end
                    || slot.phys == VACANT.phys
                    || slot.generation > generation
                {
                    continue;
                }
                let old = std::mem::replace(slot, VACANT);
                chunk.used -= 1;
                self.len -= 1;
                removed(lba, old);
            }
            if chunk.used == 0 {
                self.chunks.remove(&key);
            }
        }
    }

    /// True when any block in `[start, end)` is mapped; `end - start` is at most one chunk
    /// worth of work per chunk touched.
    pub fn any_mapped(&self, start: Lba, end: Lba) -> bool {
        let mut lba = start;
        while lba < end {
            let key = lba / CHUNK_BLOCKS;
            let chunk_end = ((key + 1) * CHUNK_BLOCKS).min(end);
            if let Some(chunk) = self.chunks.get(&key)
                && (lba..chunk_end)
                    .any(|l| chunk.entries[(l % CHUNK_BLOCKS) as usize].phys != VACANT.phys)
            {
                return true;
            }
            lba = chunk_end;
        }
        false
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Lba, MapEntry)> + '_ {
        self.chunks.iter().flat_map(|(key, chunk)| {
            chunk
                .entries
                .iter()
                .enumerate()
                .filter(|(_, entry)| entry.phys != VACANT.phys)
                .map(move |(index, entry)| (key * CHUNK_BLOCKS + index as u64, *entry))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u64, u64),
        Remove(u64),
        RemoveRange(u64, u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..2000, 0u64..100).prop_map(|(lba, generation)| Op::Set(lba, generation)),
            (0u64..2000).prop_map(Op::Remove),
            (0u64..2000, 0u64..300, 0u64..100).prop_map(|(s, n, g)| Op::RemoveRange(s, s + n, g)),
        ]
    }

    proptest! {
        /// Oracle: the map behaves like a BTreeMap under any sequence of operations.
        #[test]
        fn map_matches_oracle(ops in proptest::collection::vec(op(), 1..400)) {
            let mut map = BlockMap::new();
            let mut oracle: BTreeMap<u64, MapEntry> = BTreeMap::new();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Set(lba, generation) => {
                        let entry = MapEntry { phys: step as u64, checksum: lba ^ 7, generation };
                        prop_assert_eq!(map.set(lba, entry), oracle.insert(lba, entry));
                    }
                    Op::Remove(lba) => prop_assert_eq!(map.remove(lba), oracle.remove(&lba)),
                    Op::RemoveRange(start, end, generation) => {
                        let mut removed = Vec::new();
                        map.remove_range(start, end, generation, |lba, entry| removed.push((lba, entry)));
                        removed.sort_by_key(|(lba, _)| *lba);
                        let expected: Vec<(u64, MapEntry)> = oracle
                            .range(start..end)
                            .filter(|(_, e)| e.generation <= generation)
                            .map(|(l, e)| (*l, *e))
                            .collect();
                        for (lba, _) in &expected {
                            oracle.remove(lba);
                        }
                        prop_assert_eq!(removed, expected);
                    }
                }
                prop_assert_eq!(map.len(), oracle.len() as u64);
            }
            let mut all: Vec<(u64, MapEntry)> = map.iter().collect();
            all.sort_by_key(|(lba, _)| *lba);
            prop_assert_eq!(all, oracle.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn any_mapped_sees_single_blocks() {
        let mut map = BlockMap::new();
        map.set(
            1000,
            MapEntry {
                phys: 1,
                checksum: 0,
                generation: 1,
            },
        );
        assert!(map.any_mapped(0, 2000));
        assert!(map.any_mapped(1000, 1001));
        assert!(!map.any_mapped(1001, 5000));
        assert!(!map.any_mapped(0, 1000));
    }
}
