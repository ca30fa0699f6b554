//! The vault flush: copies every dirty block (of every live domain's primaries) whose
//! current generation is not yet in the vault into VAULT records of the journal, syncs the
//! journal, and only then marks those generations vaulted. Also checkpoints (under the same lock, so no vault record can slip
//! between the computed replay floor and the checkpoint) and re-installs recovered blocks.

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
        let _writer = self.array_writer.lock();
        let _flush = self.flush_lock.lock();
        self.meta.checkpoint(|| self.vault_floor())
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
    pub(super) fn install_recovered(&self, blocks: Vec<RecoveredBlock>) {
        let state = self.meta.state();
        for block in blocks {
            let Some(volume) = state.volumes.get(&block.volume) else {
                continue;
            };
            let section = block.lba / BLOCKS_PER_SECTION as u64;
            let index = (block.lba % BLOCKS_PER_SECTION as u64) as usize;
            let key = (block.volume, section);
            let route = self.router.route(key);
            let mapped = state.maps.get(block.volume, block.lba).is_some();
            let bit = 1u16 << index;
            for (domain_index, role) in [
                (Some(route.owner), Role::Primary),
                (route.mirror, Role::Mirror),
            ] {
                let Some(domain_index) = domain_index else {
                    continue;
                };
                let domain = &self.domains[domain_index];
                let mut shard = domain.shard(key).inner.lock();
                let Some(slot) = shard.find_or_insert(key, role) else {
                    eprintln!(
                        "troika: the cache is too small to hold the data recovered from the vault; start with the hardware model this node was created with"
                    );
                    std::process::exit(1);
                };
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
        }
    }
}
