//! The vault flush: copies every dirty block (of every live domain's primaries) whose
//! current generation is not yet in the vault into VAULT records of the journal, syncs the
//! journal, and only then marks those generations vaulted. Also checkpoints (under the same lock, so no vault record can slip
//! between the computed replay floor and the checkpoint) and re-installs recovered blocks.
//!
//! Recovery promises: every block given to `install_recovered` either ends up dirty in
//! its owner's cache (with its mirror copy) or is destaged with its map entry committed,
//! and it reads back with its recovered bytes. Its vault record outlives every checkpoint
//! until then (an installed block pins it through its slot's `vault_lsn`; one not
//! installed yet through the floor passed to the checkpoints taken while making room), so
//! a kill -9 right after start loses nothing either.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Cache;
use super::shard::Role;
use crate::meta::RecoveredBlock;
use crate::meta::records::{self, VAULT_BLOCKS_PER_RECORD};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, IoError};

/// One block copied into a vault record: where it came from and which generation.
#[derive(Clone, Copy)]
struct Vaulted {
    domain: usize,
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
        for domain in self.domains.iter().filter(|domain| domain.is_alive()) {
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
                            domain: domain.index,
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
        } else {
            self.meta.fail();
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
    /// a mirror copy (which may become a primary if its owner fails).
    fn vault_floor(&self) -> u64 {
        let mut floor = u64::MAX;
        for domain in self.domains.iter().filter(|domain| domain.is_alive()) {
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

    /// Puts blocks recovered from the vault back into cache as dirty, vaulted data: in
    /// their owner's domain and, as a mirror copy, in their mirror's.
    ///
    /// Placement at start (all controllers up) need not be the placement the blocks were
    /// written under (e.g. two survivors carried a failed controller's sections), so a
    /// shard can be offered more recovered sections than it has slots. When a block finds
    /// no slot, everything installed so far is destaged to the array first (which leaves
    /// every slot clean or free), and installing goes on. No checkpoint can drop the
    /// vault records of blocks not installed yet meanwhile (see
    /// [`Cache::destage_for_recovery`]). Fails only when the array cannot take the data.
    pub(super) fn install_recovered(&self, blocks: Vec<RecoveredBlock>) -> Result<(), String> {
        let mut destaged_rounds = 0u32;
        for (at, block) in blocks.iter().enumerate() {
            if self.install_one(block) {
                continue;
            }
            // The records of this block and of every later one must outlive any
            // checkpoint taken while destaging.
            let pinned = blocks[at..]
                .iter()
                .map(|block| block.lsn)
                .min()
                .unwrap_or(u64::MAX);
            self.destage_for_recovery(pinned)?;
            destaged_rounds += 1;
            // Nothing is dirty now, so both shards can evict a clean slot.
            if !self.install_one(block) {
                return Err(format!(
                    "no cache slot for block {} of volume {} even with nothing dirty",
                    block.lba, block.volume
                ));
            }
        }
        if destaged_rounds > 0 {
            eprintln!(
                "troika: the data recovered from the vault did not fit the caches under the current section placement; destaged it to the array during start ({destaged_rounds} rounds)"
            );
        }
        Ok(())
    }

    /// Installs one recovered block in its owner's and its mirror's domains, or in
    /// neither (`false`: one of the two shards has no slot it can take).
    fn install_one(&self, block: &RecoveredBlock) -> bool {
        let state = self.meta.state();
        let Some(volume) = state.volumes.get(&block.volume) else {
            return true;
        };
        let entry = state.maps.get(block.volume, block.lba);
        if entry.is_some_and(|entry| entry.generation >= block.generation) {
            // Destaged while making room for recovery.
            return true;
        }
        let mapped = entry.is_some();
        let section = block.lba / BLOCKS_PER_SECTION as u64;
        let index = (block.lba % BLOCKS_PER_SECTION as u64) as usize;
        let key = (block.volume, section);
        let route = self.router.route(key);
        let bit = 1u16 << index;
        let targets = [
            (Some(route.owner), Role::Primary),
            (route.mirror, Role::Mirror),
        ];
        // Take both slots before writing either (nothing else runs during start, so a
        // slot taken stays).
        for (domain_index, role) in targets {
            let Some(domain_index) = domain_index else {
                continue;
            };
            let mut shard = self.domains[domain_index].shard(key).inner.lock();
            if shard.find_or_insert(key, role).is_none() {
                return false;
            }
        }
        for (domain_index, role) in targets {
            let Some(domain_index) = domain_index else {
                continue;
            };
            let domain = &self.domains[domain_index];
            let mut shard = domain.shard(key).inner.lock();
            let slot = shard
                .find(key)
                .expect("the slot taken above is still there");
            shard.block_mut(slot, index).copy_from_slice(&block.data);
            let entry = &mut shard.slots[slot as usize];
            let newly = entry.dirty & bit == 0;
            entry.valid |= bit;
            entry.dirty |= bit;
            entry.generation[index] = block.generation;
            entry.vault_lsn = entry.vault_lsn.min(block.lsn);
            if role == Role::Primary {
                entry.known |= bit;
                if mapped {
                    entry.mapped |= bit;
                } else if entry.reserved & bit == 0 {
                    entry.reserved |= bit;
                    volume.pool.add(1);
                    entry.pool = Some(volume.pool.clone());
                }
                shard.queue_dirty(slot);
            }
            drop(shard);
            if newly {
                let counter = match role {
                    Role::Primary => &domain.primary_dirty,
                    Role::Mirror => &domain.mirror_dirty,
                };
                counter.fetch_add(1, Ordering::AcqRel);
            }
        }
        true
    }

    /// Destages every dirty block of every domain on this thread (during start, before
    /// the destage threads run), cleaning segments when free rows run short. A checkpoint
    /// taken to keep the journal from filling keeps every record from `pinned` on: the
    /// vault copies of recovered blocks not installed yet.
    fn destage_for_recovery(&self, pinned: u64) -> Result<(), String> {
        for index in 0..self.domains.len() {
            let domain = &self.domains[index];
            if !domain.is_alive() {
                continue;
            }
            let mut batch = self.new_batch(index);
            let mut stalled = 0;
            loop {
                let dirty = domain.primary_dirty.load(Ordering::Acquire);
                if dirty == 0 {
                    break;
                }
                let journal = self.meta.journal();
                if journal.used() > journal.region_len() / 2 {
                    self.checkpoint_keeping(pinned)
                        .map_err(|err| err.to_string())?;
                }
                self.clean_if_low(&mut batch)?;
                self.destage_batch(index, &mut batch)?;
                if domain.primary_dirty.load(Ordering::Acquire) < dirty {
                    stalled = 0;
                    continue;
                }
                // No free rows outside the cleaner's reserve: clean one segment, however
                // full, and try again.
                stalled += 1;
                let writer = self.array_writer.lock();
                let cleaned = self.clean_one_segment(&mut batch)?;
                drop(writer);
                if !cleaned || stalled > 64 {
                    return Err(format!(
                        "the NL-SAS drives have no free space left for {dirty} dirty blocks of controller {}",
                        index + 1
                    ));
                }
            }
        }
        Ok(())
    }
}
