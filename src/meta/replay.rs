//! Journal replay at start-up: applies the records from the checkpoint's LSN on, in order,
//! on top of the loaded checkpoint, exactly as they were applied when written (the
//! checkpoint reflects every record before its LSN and none after). Records before it,
//! from the superblock's `replay_from`, are read only for the vault copies of flushed data
//! and for what superseded them: a copy is kept only when nothing newer (a destaged entry,
//! a trim, a restore, a deletion) replaced it.

use hashbrown::HashMap;

use super::catalog::{Catalog, CatalogOp};
use super::forest::Forest;
use super::records::{self, Record};
use super::store::RecoveredBlock;
use super::store::apply_to_forest;
use crate::types::{BLOCK_SIZE, Lba};

/// A vault copy found during replay: generation, batch LSN, bytes.
type VaultCopy = (u64, u64, Box<[u8]>);

/// State rebuilt while the journal is replayed.
pub(super) struct Replay {
    pub(super) catalog: Catalog,
    pub(super) maps: Forest,
    pub(super) recovered: HashMap<(u32, Lba), VaultCopy>,
    pub(super) max_generation: u64,
    /// Records before this LSN are already in the checkpoint.
    pub(super) checkpoint_lsn: u64,
}

impl Replay {
    pub(super) fn apply(&mut self, lsn: u64, kind: u8, body: &[u8]) {
        let Some(record) = records::decode(kind, body) else {
            eprintln!(
                "troika: recovery skipped an unreadable journal record of kind {kind} at LSN {lsn}"
            );
            return;
        };
        let apply = lsn >= self.checkpoint_lsn;
        match record {
            Record::Catalog(op) => {
                match &op {
                    CatalogOp::DeleteVolume { id } => {
                        // The dataset's cached writes before this point were dropped.
                        self.recovered.retain(|(volume, _), _| volume != id);
                    }
                    CatalogOp::TakeContents(pairs) => {
                        self.recovered
                            .retain(|(volume, _), _| pairs.iter().all(|(id, _)| id != volume));
                    }
                    _ => {}
                }
                if apply {
                    self.catalog.apply(&op);
                    apply_to_forest(&mut self.maps, &self.catalog, &op);
                }
            }
            Record::MapSet { volume, entries } => {
                let mut freed = Vec::new();
                for (lba, entry) in entries {
                    self.max_generation = self.max_generation.max(entry.generation);
                    if apply && self.maps.contains(volume) {
                        self.maps.set(volume, lba, entry, &mut freed);
                    }
                    if let Some((generation, _, _)) = self.recovered.get(&(volume, lba))
                        && *generation <= entry.generation
                    {
                        self.recovered.remove(&(volume, lba));
                    }
                }
            }
            Record::Relocate {
                family,
                lba,
                old,
                new,
            } => {
                if apply {
                    let members: Vec<u32> = self
                        .catalog
                        .family_members(family)
                        .map(|volume| volume.id)
                        .collect();
                    let mut freed = Vec::new();
                    self.maps.relocate(&members, lba, old, new, &mut freed);
                }
            }
            Record::Share { volume, blocks } => {
                let mut freed = Vec::new();
                for block in blocks {
                    self.max_generation = self.max_generation.max(block.entry.generation);
                    if apply && self.maps.contains(volume) {
                        self.maps.share_block(
                            volume,
                            block.lba,
                            block.home,
                            block.entry,
                            &mut freed,
                        );
                    }
                    if let Some((generation, _, _)) = self.recovered.get(&(volume, block.lba))
                        && *generation <= block.entry.generation
                    {
                        self.recovered.remove(&(volume, block.lba));
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
                if apply {
                    let mut freed = Vec::new();
                    self.maps.remove_range(
                        volume,
                        start,
                        end,
                        generation,
                        &mut freed,
                        &mut |_, _| {},
                    );
                }
                self.recovered.retain(|(v, lba), (g, _, _)| {
                    !(*v == volume && (start..end).contains(lba) && *g <= generation)
                });
            }
            Record::Vault { blocks, data } => {
                for (index, (volume, lba, generation)) in blocks.into_iter().enumerate() {
                    self.max_generation = self.max_generation.max(generation);
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
                self.maps
                    .get(*volume, *lba)
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
