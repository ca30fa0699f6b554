//! Journal replay at start-up: applies the records from the checkpoint's LSN on, in order,
//! on top of the loaded checkpoint, exactly as they were applied when written (the
//! checkpoint reflects every record before its LSN and none after). Records before it,
//! from the superblock's `replay_from`, are read only for the vault copies of flushed data
//! and for what superseded them: a copy is kept only when nothing newer (a destaged entry,
//! a trim, a restore, a deletion) replaced it.
//!
//! Those rules live in [`VaultCopies`], which a running node also uses
//! ([`super::MetaStore::vaulted_copies`]) to get back flushed blocks whose only DRAM copy
//! was lost with a controller.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use super::apply::apply_to_forest;
use super::catalog::{Catalog, CatalogOp};
use super::forest::Forest;
use super::records::{self, Record};
use crate::secrets::NodeKey;
use crate::types::{BLOCK_SIZE, Lba};

/// A flushed write found in the vault at start that was not yet destaged.
pub struct RecoveredBlock {
    pub volume: u32,
    pub lba: Lba,
    pub generation: u64,
    pub lsn: u64,
    pub data: Box<[u8]>,
}

/// A vault copy found during replay: generation, batch LSN, bytes.
type VaultCopy = (u64, u64, Box<[u8]>);

/// The newest vault copy of each block seen in the journal so far that no later record
/// superseded (a destaged map entry, a copy by reference, a trim, a restore or a deletion
/// of its dataset at or after its generation).
pub(super) struct VaultCopies {
    copies: HashMap<(u32, Lba), VaultCopy>,
    /// Only these blocks are kept (`None`: all).
    wanted: Option<HashSet<(u32, Lba)>>,
}

impl VaultCopies {
    /// Keeps every block's copy (start-up recovery).
    pub(super) fn all() -> VaultCopies {
        VaultCopies {
            copies: HashMap::new(),
            wanted: None,
        }
    }

    /// Keeps only the copies of `wanted`.
    pub(super) fn only(wanted: HashSet<(u32, Lba)>) -> VaultCopies {
        VaultCopies {
            copies: HashMap::new(),
            wanted: Some(wanted),
        }
    }

    /// Decodes and looks at one record (a record that does not decode is reported and
    /// skipped, as start-up replay does).
    pub(super) fn apply(&mut self, lsn: u64, kind: u8, body: &[u8], key: &Arc<NodeKey>) {
        match records::decode(kind, body, key) {
            Some(record) => self.observe(lsn, &record),
            None => crate::say!(
                "troika: a vault scan skipped an unreadable journal record of kind {kind} at LSN {lsn}"
            ),
        }
    }

    /// Looks at one decoded record, found in the batch at `lsn`.
    pub(super) fn observe(&mut self, lsn: u64, record: &Record) {
        match record {
            Record::Catalog(CatalogOp::DeleteVolume { id }) => {
                // The dataset's cached writes before this point were dropped.
                self.copies.retain(|(volume, _), _| volume != id);
            }
            Record::Catalog(CatalogOp::TakeContents(pairs)) => {
                self.copies
                    .retain(|(volume, _), _| pairs.iter().all(|(id, _)| id != volume));
            }
            Record::Catalog(_) | Record::Relocate { .. } => {}
            Record::MapSet { volume, entries } => {
                for (lba, entry) in entries {
                    self.superseded(*volume, *lba, entry.generation);
                }
            }
            Record::Share { volume, blocks } => {
                for block in blocks {
                    self.superseded(*volume, block.lba, block.entry.generation);
                }
            }
            Record::Trim {
                volume,
                start,
                end,
                generation,
            } => {
                self.copies.retain(|(v, lba), (g, _, _)| {
                    !(v == volume && (start..end).contains(&lba) && *g <= *generation)
                });
            }
            Record::Vault { blocks, data } => {
                for (index, &(volume, lba, generation)) in blocks.iter().enumerate() {
                    if self
                        .wanted
                        .as_ref()
                        .is_some_and(|wanted| !wanted.contains(&(volume, lba)))
                    {
                        continue;
                    }
                    let newer = self
                        .copies
                        .get(&(volume, lba))
                        .is_none_or(|(g, _, _)| generation >= *g);
                    if newer {
                        let bytes = data[index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE]
                            .to_vec()
                            .into_boxed_slice();
                        self.copies.insert((volume, lba), (generation, lsn, bytes));
                    }
                }
            }
        }
    }

    /// A map entry of `generation` now stands at (volume, lba): older copies are moot.
    fn superseded(&mut self, volume: u32, lba: Lba, generation: u64) {
        if let Some((copy, _, _)) = self.copies.get(&(volume, lba))
            && *copy <= generation
        {
            self.copies.remove(&(volume, lba));
        }
    }

    /// The copies still needed under `catalog` and `maps` (the state the journal led
    /// to): of a dataset that exists, inside its size, newer than its map entry. Sorted
    /// by (volume, lba).
    pub(super) fn finish(&mut self, catalog: &Catalog, maps: &Forest) -> Vec<RecoveredBlock> {
        let copies = std::mem::take(&mut self.copies);
        let mut blocks: Vec<RecoveredBlock> = copies
            .into_iter()
            .filter(|((volume, lba), (generation, _, _))| {
                let Some(record) = catalog.volumes.get(volume) else {
                    return false;
                };
                if *lba >= record.size / BLOCK_SIZE as u64 {
                    return false;
                }
                maps.get(*volume, *lba)
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

/// State rebuilt while the journal is replayed.
pub(super) struct Replay {
    pub(super) catalog: Catalog,
    pub(super) maps: Forest,
    pub(super) vault: VaultCopies,
    pub(super) max_generation: u64,
    /// Records before this LSN are already in the checkpoint.
    pub(super) checkpoint_lsn: u64,
    /// Opens the secrets of catalog records.
    pub(super) key: Arc<NodeKey>,
}

impl Replay {
    pub(super) fn apply(&mut self, lsn: u64, kind: u8, body: &[u8]) {
        let Some(record) = records::decode(kind, body, &self.key) else {
            crate::say!(
                "troika: recovery skipped an unreadable journal record of kind {kind} at LSN {lsn}"
            );
            return;
        };
        self.vault.observe(lsn, &record);
        let apply = lsn >= self.checkpoint_lsn;
        match record {
            Record::Catalog(op) => {
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
            }
            Record::Vault { blocks, .. } => {
                for (_, _, generation) in blocks {
                    self.max_generation = self.max_generation.max(generation);
                }
            }
        }
    }

    pub(super) fn finish(&mut self) -> Vec<RecoveredBlock> {
        self.vault.finish(&self.catalog, &self.maps)
    }
}
