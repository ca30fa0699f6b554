//! Journal replay at start-up: applies every record from the superblock's `replay_from`
//! in order on top of the loaded checkpoint. Map entries and trims are guarded by
//! generation, catalog operations are idempotent, and vault copies of flushed data are
//! kept only when nothing newer (a destaged entry or a trim) supersedes them.

use hashbrown::HashMap;

use super::catalog::{Catalog, CatalogOp};
use super::map::BlockMap;
use super::records::{self, Record};
use super::store::RecoveredBlock;
use crate::types::{BLOCK_SIZE, Lba};

/// A vault copy found during replay: generation, batch LSN, bytes.
type VaultCopy = (u64, u64, Box<[u8]>);

/// State rebuilt while the journal is replayed.
pub(super) struct Replay {
    pub(super) catalog: Catalog,
    pub(super) maps: HashMap<u32, BlockMap>,
    pub(super) recovered: HashMap<(u32, Lba), VaultCopy>,
    pub(super) max_generation: u64,
}

impl Replay {
    pub(super) fn apply(&mut self, lsn: u64, kind: u8, body: &[u8]) {
        let Some(record) = records::decode(kind, body) else {
            eprintln!(
                "troika: recovery skipped an unreadable journal record of kind {kind} at LSN {lsn}"
            );
            return;
        };
        match record {
            Record::Catalog(op) => {
                self.catalog.apply(&op);
                match op {
                    CatalogOp::CreateVolume(volume) => {
                        self.maps.entry(volume.id).or_default();
                    }
                    CatalogOp::DeleteVolume { id } => {
                        self.maps.remove(&id);
                        self.recovered.retain(|(volume, _), _| *volume != id);
                    }
                    _ => {}
                }
            }
            Record::MapSet { volume, entries } => {
                let Some(map) = self.maps.get_mut(&volume) else {
                    return;
                };
                for (lba, entry) in entries {
                    self.max_generation = self.max_generation.max(entry.generation);
                    if map
                        .get(lba)
                        .is_none_or(|current| entry.generation >= current.generation)
                    {
                        map.set(lba, entry);
                    }
                    if let Some((generation, _, _)) = self.recovered.get(&(volume, lba))
                        && *generation <= entry.generation
                    {
                        self.recovered.remove(&(volume, lba));
                    }
                }
            }
            Record::Trim {
                volume,
                start,
                end,
                generation,
            } => {
                self.max_generation = self.max_generation.max(generation);
                if let Some(map) = self.maps.get_mut(&volume) {
                    map.remove_range(start, end, generation, |_, _| {});
                }
                self.recovered.retain(|(v, lba), (g, _, _)| {
                    !(*v == volume && (start..end).contains(lba) && *g <= generation)
                });
            }
            Record::Vault { blocks, data } => {
                for (index, (volume, lba, generation)) in blocks.into_iter().enumerate() {
                    self.max_generation = self.max_generation.max(generation);
                    if !self.maps.contains_key(&volume) {
                        continue;
                    }
                    let newer = self
                        .recovered
                        .get(&(volume, lba))
                        .is_none_or(|(g, _, _)| generation >= *g);
                    if newer {
                        let bytes = data[index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE]
                            .to_vec()
                            .into_boxed_slice();
                        self.recovered
                            .insert((volume, lba), (generation, lsn, bytes));
                    }
                }
            }
        }
    }

    pub(super) fn finish(&mut self) -> Vec<RecoveredBlock> {
        let recovered = std::mem::take(&mut self.recovered);
        let mut blocks: Vec<RecoveredBlock> = recovered
            .into_iter()
            .filter(|((volume, lba), (generation, _, _))| {
                let Some(record) = self.catalog.volumes.get(volume) else {
                    return false;
                };
                if *lba >= record.size / BLOCK_SIZE as u64 {
                    return false;
                }
                self.maps[volume]
                    .get(*lba)
                    .is_none_or(|entry| entry.generation < *generation)
            })
            .map(|((volume, lba), (generation, lsn, data))| RecoveredBlock {
                volume,
                lba,
                generation,
                lsn,
                data,
            })
            .collect();
        blocks.sort_by_key(|block| (block.volume, block.lba));
        blocks
    }
}
