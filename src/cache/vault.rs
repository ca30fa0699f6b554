//! The vault flush: copies every dirty block (of every live domain's primaries) whose
//! current generation is not yet in the vault into VAULT records of the journal, syncs the
//! journal, and only then marks those generations vaulted. The metadata state lock is
//! held (shared) from the copy until the VAULT records are appended, so the record of a
//! discard (trim, shrink, deletion, new contents), journaled under that lock held
//! exclusively, never lands between a block's copy and its VAULT record: replay applies
//! records in journal order, and a VAULT record after the discard's would bring the
//! discarded bytes back. Also checkpoints (under the
//! same lock, so no vault record can slip between the computed replay floor and the
//! checkpoint) and re-installs blocks from the vault: at start, and after a controller
//! failure for the blocks whose only DRAM copy it held.
//!
//! Per block, a slot tracks what is in the vault with `unvaulted` (its current generation
//! is not) and `vault_lsn` (the oldest journal position of a vault copy of any of its
//! dirty blocks, older generations included; a mirror slot keeps the journal position of
//! its oldest copy, since its owner's vault records come later). The vault floor, the
//! oldest of these over every live slot and the `vault_pin`, is what checkpoints keep.
//!
//! Recovery promises: every block given to `install_recovered` either ends up dirty in
//! its owner's cache (with its mirror copy) or is destaged with its map entry committed,
//! and it reads back with its recovered bytes. Its vault record outlives every checkpoint
//! until then (an installed block pins it through its slot's `vault_lsn`; one not
//! installed yet through the floor passed to the checkpoints taken while making room), so
//! a kill -9 right after start loses nothing either.
//!
//! Failover promise (`reload_stranded`, called by `fail_domain`; see the failover module
//! doc for the steps): every dirty block a failed controller held without a mirror copy
//! that had been flushed is back in cache, at the newest generation the vault holds that
//! the metadata did not supersede (start-up recovery's rules, `MetaStore::vaulted_copies`),
//! dirty in its new owner before requests resume; its vault record is kept by the pin
//! until it is installed and by its new slot's `vault_lsn` after. When the new owner has
//! no slot for it, that shard's sections are destaged first (in every live domain) to
//! make room. If reading the vault or making room fails, the node stops writing (the
//! metadata store is marked failed) and the pin stays, so the records survive and a
//! restart recovers the blocks; nothing is given up.

mod recovery;
mod room;

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Cache;
use super::shard::{Role, SectionKey};
use crate::meta::records::{self, VAULT_BLOCKS_PER_RECORD};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, IoError};

/// What became of a vaulted block offered to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    /// Dirty in its owner (and its mirror, when given one) at the block's generation.
    Installed,
    /// Not needed: its dataset is gone, or the map or the owner's cache holds that
    /// generation or a newer one.
    Covered,
    /// A shard had no slot it could take; nothing was written.
    NoSlot,
}

/// A failed domain's primary slot holding dirty blocks that had no mirror copy.
pub(super) struct Stranded {
    pub key: SectionKey,
    /// Its dirty blocks without a mirror copy.
    pub mask: u16,
    /// Each block's generation in the failed domain (its newest write).
    pub generation: [u64; BLOCKS_PER_SECTION],
    /// The slot's oldest vault journal position (`u64::MAX`: none of its blocks is in
    /// the vault).
    pub vault_lsn: u64,
}

/// What became of a failed controller's dirty blocks that had no mirror copy.
#[derive(Clone, Debug, Default)]
pub struct StrandedReport {
    /// Dirty blocks without a mirror copy the failed controller held.
    pub blocks: u64,
    /// Put back into cache from the vault (dirty, destaged later as usual).
    pub reloaded: u64,
    /// Blocks whose newest write is gone: it was acknowledged but never flushed.
    pub lost: u64,
    /// Of `lost`, those back at an older version held in cache: the last one flushed
    /// (reloaded from the vault) or mirrored (the others read as the array holds them).
    pub lost_to_older: u64,
    /// Names of the volumes with lost writes.
    pub volumes: Vec<String>,
    /// Controllers that took reloaded blocks.
    pub owners: Vec<ControllerId>,
    /// Why the reload failed (the node then stops writing; the vault keeps the blocks,
    /// and a restart recovers them).
    pub error: Option<String>,
}

impl StrandedReport {
    /// The operator's message for the failure of controller `failed`, if it
    /// held such blocks.
    pub fn describe(&self, failed: ControllerId) -> Option<String> {
        if self.blocks == 0 {
            return None;
        }
        let controllers = |list: &[ControllerId]| {
            list.iter()
                .map(ControllerId::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let mut text = format!(
            "controller {} failed holding {} dirty blocks that had no mirror copy yet (re-mirroring after an earlier failure had not reached them)",
            failed, self.blocks
        );
        if let Some(error) = &self.error {
            text.push_str(&format!(
                ": those flushed to the vault could not be reloaded ({error}); the node stops writing and keeps their vault records. Restart it on the same data directory: recovery puts them back"
            ));
            return Some(text);
        }
        if self.reloaded > 0 {
            text.push_str(&format!(
                ": {} flushed blocks were reloaded from the vault into the cache of controller {}",
                self.reloaded,
                controllers(&self.owners)
            ));
        } else {
            text.push_str(": none was in the vault");
        }
        if self.lost == 0 {
            text.push_str("; no acknowledged write is lost");
        } else {
            text.push_str(&format!(
                "; {} blocks lost the writes acknowledged after their last flush (FLUSH / SYNCHRONIZE CACHE): {} read back as an earlier version still in cache (flushed or mirrored), {} as the array holds them. Volumes affected: {}. Hosts must treat writes to them since their last flush as not done: check their file systems or applications (fsck, database recovery) before trusting the data",
                self.lost,
                self.lost_to_older,
                self.lost - self.lost_to_older,
                self.volumes.join(", ")
            ));
        }
        Some(text)
    }
}

/// One block copied into a vault record: where it came from and which generation.
#[derive(Clone, Copy)]
struct Vaulted {
    domain: ControllerId,
    shard: usize,
    slot: u32,
    key: (u32, u64),
    block: usize,
    generation: u64,
}

/// Buffers reused by every flush.
#[derive(Default)]
pub struct FlushState {
    headers: Vec<(u32, u64, u64)>,
    data: Vec<u8>,
    pending: Vec<Vaulted>,
}

impl Cache {
    /// Returns once every write acknowledged before the call is durable. Starts over when
    /// sections changed hands during it (their blocks may have moved to a domain already
    /// passed).
    pub fn flush(&self) -> Result<(), IoError> {
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.wait_for_journal_room()?;
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            self.flush_once()?;
            if self.epoch.load(Ordering::Acquire) == epoch {
                return Ok(());
            }
        }
    }

    fn flush_once(&self) -> Result<(), IoError> {
        let mut state = self.flush_lock.lock();
        let state = &mut *state;
        // A discard drops cached blocks and journals its record (TRIM, a catalog change)
        // under this lock for writing; held from the copy until the vault records are
        // appended, it puts each discard's record either before the copy (its blocks are
        // gone from cache) or after the vault records (replay lets it supersede them),
        // never between (a vault copy after the record would bring the discarded bytes
        // back at recovery).
        let discards_held = self.meta.state();
        for domain in self.domains.values().filter(|domain| domain.is_alive()) {
            for (index, shard) in domain.shards.iter().enumerate() {
                let mut shard = shard.inner.lock();
                let mut slots = std::mem::take(&mut shard.unvaulted);
                for &slot in &slots {
                    let entry = &mut shard.slots[slot as usize];
                    if !entry.in_unvaulted {
                        continue;
                    }
                    entry.in_unvaulted = false;
                    let Some(key) = entry.key else { continue };
                    if entry.role != Role::Primary {
                        continue;
                    }
                    let pending = entry.unvaulted & entry.dirty;
                    for block in 0..BLOCKS_PER_SECTION {
                        if pending & (1 << block) == 0 {
                            continue;
                        }
                        // Copy the data while the shard is locked.
                        let generation = shard.slots[slot as usize].generation[block];
                        let lba = key.1 * BLOCKS_PER_SECTION as u64 + block as u64;
                        state.headers.push((key.0, lba, generation));
                        state.data.extend_from_slice(shard.block(slot, block));
                        state.pending.push(Vaulted {
                            domain: domain.id,
                            shard: index,
                            slot,
                            key,
                            block,
                            generation,
                        });
                    }
                }
                // Give the (now processed) list's capacity back to the shard.
                slots.clear();
                if shard.unvaulted.is_empty() {
                    shard.unvaulted = slots;
                }
            }
        }
        #[cfg(test)]
        self.run_flush_hook(state.pending.len());
        let journal = self.meta.journal();
        let mut floor = u64::MAX;
        for (headers, data) in state
            .headers
            .chunks(VAULT_BLOCKS_PER_RECORD)
            .zip(state.data.chunks(VAULT_BLOCKS_PER_RECORD * BLOCK_SIZE))
        {
            let (_, lsn) = journal.append(records::VAULT, |out| {
                records::encode_vault_header(headers, out);
                out.extend_from_slice(data);
            });
            floor = floor.min(lsn);
        }
        drop(discards_held);
        let result = journal.commit_all();
        let count = state.pending.len() as u64;
        if result.is_ok() {
            for vaulted in &state.pending {
                let mut shard = self.domains[vaulted.domain].shards[vaulted.shard]
                    .inner
                    .lock();
                let entry = &mut shard.slots[vaulted.slot as usize];
                let bit = 1u16 << vaulted.block;
                if entry.role == Role::Primary
                    && entry.holds_dirty(vaulted.key, vaulted.block, vaulted.generation)
                {
                    entry.unvaulted &= !bit;
                    entry.vault_lsn = entry.vault_lsn.min(floor);
                }
            }
            self.counters
                .blocks_vaulted
                .fetch_add(count, Ordering::Relaxed);
        } else if let Err(err) = &result {
            self.meta.fail(self.meta.ssd_name(), "vault write", err);
        }
        state.headers.clear();
        state.data.clear();
        state.pending.clear();
        result.map_err(|err| IoError::Media {
            volume: String::new(),
            detail: err.to_string(),
        })
    }

    /// Waits while the journal is too full to take the vault copy of the dirty data.
    fn wait_for_journal_room(&self) -> Result<(), IoError> {
        let journal = self.meta.journal();
        let mut deadline = None;
        loop {
            let need = self.dirty_bytes() / BLOCK_SIZE as u64 * (BLOCK_SIZE as u64 + 32);
            if journal.used() + need <= journal.region_len() / 10 * 8 {
                return Ok(());
            }
            // Past half the journal the destage thread drains and checkpoints by itself.
            self.wait_for_space(&mut deadline, Duration::from_millis(10), || {
                IoError::Media {
                    volume: String::new(),
                    detail: "the vault journal stayed full; check the SSD and NL-SAS devices"
                        .into(),
                }
            })?;
        }
    }

    /// Writes a checkpoint and lets the journal reuse the space before it.
    pub fn checkpoint(&self) -> Result<(), crate::meta::MetaError> {
        self.checkpoint_keeping(u64::MAX)
    }

    /// A checkpoint that also keeps every journal record from `pinned` on.
    fn checkpoint_keeping(&self, pinned: u64) -> Result<(), crate::meta::MetaError> {
        let _writer = self.array_writer.lock();
        let _flush = self.flush_lock.lock();
        self.meta.checkpoint(|| self.vault_floor().min(pinned))
    }

    /// The oldest journal position holding a vault copy still needed, by a primary or by
    /// a mirror copy (which may become a primary if its owner fails), or pinned while a
    /// failed domain's blocks are reloaded (`vault_pin`).
    fn vault_floor(&self) -> u64 {
        let mut floor = self.vault_pin.load(Ordering::Acquire);
        for domain in self.domains.values().filter(|domain| domain.is_alive()) {
            for shard in domain.shards.iter() {
                let shard = shard.inner.lock();
                for entry in &shard.slots {
                    if entry.dirty != 0 {
                        floor = floor.min(entry.vault_lsn);
                    }
                }
            }
        }
        floor
    }
}
