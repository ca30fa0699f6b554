//! The vault flush: copies every dirty block (of every live domain's primaries) whose
//! current generation is not yet in the vault into VAULT records of the journal, syncs the
//! journal, and only then marks those generations vaulted. Also checkpoints (under the
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

use std::sync::atomic::Ordering;
use std::time::Duration;

use hashbrown::{HashMap, HashSet};

use super::destage::Batch;
use super::domain::shard_of;
use super::shard::{Role, SectionKey};
use super::{Cache, SectionRouter};
use crate::meta::records::{self, VAULT_BLOCKS_PER_RECORD};
use crate::meta::{MetaState, RecoveredBlock};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, IoError};

/// Rounds in a row that may destage nothing (each then cleaning one segment) before
/// making room gives up.
const MAX_STALLED_ROUNDS: u32 = 64;

/// What [`Cache::destage_until`] makes room for.
#[derive(Clone, Copy, Debug)]
enum RoomFor {
    /// Slots for `sections` sections not held yet in shard `shard` of controller
    /// `owner`'s domain. The caller holds the array writer and the flush lock.
    Sections {
        owner: ControllerId,
        shard: usize,
        sections: usize,
    },
    /// No dirty block left in `domain` (at start, before the destage threads run); a
    /// checkpoint keeps every journal record from `pinned` on.
    Recovery { domain: ControllerId, pinned: u64 },
}

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
            crate::say!(
                "troika: the data recovered from the vault did not fit the caches under the current section placement; destaged it to the array during start ({destaged_rounds} rounds)"
            );
        }
        Ok(())
    }

    /// Installs one recovered block in its owner's and its mirror's domains, or in
    /// neither (`false`: one of the two shards has no slot it can take).
    fn install_one(&self, block: &RecoveredBlock) -> bool {
        let state = self.meta.state();
        let route = self
            .router
            .route((block.volume, block.lba / BLOCKS_PER_SECTION as u64));
        self.install_block(&state, block, route.owner, route.mirror, false) != Placed::NoSlot
    }

    /// Puts a vaulted block back into cache as dirty, vaulted data: into `owner` as its
    /// primary and, when given, into `mirror` as its mirror copy. `unmirrored`: mark it
    /// as lacking a mirror copy (for the re-mirror worker) instead. A slot taken for one
    /// of the two stays while the other is looked for: the caller keeps everything else
    /// out of the cache (start, or a paused node under the array writer and flush locks).
    /// The slots keep the block's vault record through their `vault_lsn`.
    fn install_block(
        &self,
        state: &MetaState,
        block: &RecoveredBlock,
        owner: ControllerId,
        mirror: Option<ControllerId>,
        unmirrored: bool,
    ) -> Placed {
        let Some(volume) = state.volumes.get(&block.volume) else {
            return Placed::Covered;
        };
        let entry = state.maps.get(block.volume, block.lba);
        if entry.is_some_and(|entry| entry.generation >= block.generation) {
            // Destaged already (e.g. while making room).
            return Placed::Covered;
        }
        let mapped = entry.is_some();
        let section = block.lba / BLOCKS_PER_SECTION as u64;
        let index = (block.lba % BLOCKS_PER_SECTION as u64) as usize;
        let key = (block.volume, section);
        let bit = 1u16 << index;
        let targets = [(Some(owner), Role::Primary), (mirror, Role::Mirror)];
        // Take both slots before writing either.
        for (domain_id, role) in targets {
            let Some(domain_id) = domain_id else {
                continue;
            };
            let mut shard = self.domains[domain_id].shard(key).inner.lock();
            let Some(slot) = shard.find_or_insert(key, role) else {
                return Placed::NoSlot;
            };
            let entry = &shard.slots[slot as usize];
            if entry.role != role {
                // Never mix a mirror copy and a primary (ownership and cache disagree).
                return Placed::NoSlot;
            }
            if role == Role::Primary
                && entry.dirty & bit != 0
                && entry.generation[index] >= block.generation
            {
                // The owner holds this generation or a newer write already.
                return Placed::Covered;
            }
        }
        for (domain_id, role) in targets {
            let Some(domain_id) = domain_id else {
                continue;
            };
            let domain = &self.domains[domain_id];
            let mut shard = domain.shard(key).inner.lock();
            let slot = shard
                .find(key)
                .expect("the slot taken above is still there");
            let entry = &shard.slots[slot as usize];
            if entry.dirty & bit != 0 && entry.generation[index] > block.generation {
                // A newer mirror copy stays.
                continue;
            }
            let newly = entry.dirty & bit == 0;
            let counted_unmirrored = !newly && entry.unmirrored & bit != 0;
            shard.block_mut(slot, index).copy_from_slice(&block.data);
            let entry = &mut shard.slots[slot as usize];
            entry.valid |= bit;
            entry.dirty |= bit;
            entry.unvaulted &= !bit;
            entry.generation[index] = block.generation;
            entry.vault_lsn = entry.vault_lsn.min(block.lsn);
            let mut mirror_change = 0i64;
            if role == Role::Primary {
                entry.known |= bit;
                if mapped {
                    entry.mapped |= bit;
                } else {
                    entry.mapped &= !bit;
                    if entry.reserved & bit == 0 {
                        entry.reserved |= bit;
                        volume.pool.add(1);
                        entry.pool = Some(volume.pool.clone());
                    }
                }
                if unmirrored {
                    entry.unmirrored |= bit;
                    mirror_change = i64::from(!counted_unmirrored);
                } else {
                    entry.unmirrored &= !bit;
                    mirror_change = -i64::from(counted_unmirrored);
                }
                shard.queue_dirty(slot);
            }
            // Counted before the lock goes (see the domain module doc).
            if newly {
                let counter = match role {
                    Role::Primary => &domain.primary_dirty,
                    Role::Mirror => &domain.mirror_dirty,
                };
                counter.fetch_add(1, Ordering::AcqRel);
            }
            if mirror_change == 1 {
                domain.unmirrored.fetch_add(1, Ordering::AcqRel);
            }
            drop(shard);
            if mirror_change == -1 {
                domain.release_unmirrored(1);
            }
        }
        Placed::Installed
    }

    /// Puts back the flushed ones among a failed domain's dirty blocks that had no mirror
    /// copy (`stranded`), each at the newest generation the vault holds of it, into its
    /// owner under `new` (marked unmirrored when `new` gives it a mirror). The caller,
    /// `fail_domain`, holds the array writer and the flush lock, not the state lock, and
    /// has paused requests. See the module doc for the steps and the promise.
    pub(super) fn reload_stranded(
        &self,
        stranded: &[Stranded],
        new: &dyn SectionRouter,
    ) -> StrandedReport {
        let mut report = StrandedReport {
            blocks: stranded
                .iter()
                .map(|slot| u64::from(slot.mask.count_ones()))
                .sum(),
            ..StrandedReport::default()
        };
        if report.blocks == 0 {
            return report;
        }
        // Only a slot with a vault journal position can have blocks in the vault.
        let pin = stranded
            .iter()
            .map(|slot| slot.vault_lsn)
            .min()
            .unwrap_or(u64::MAX);
        if pin != u64::MAX {
            // Checkpoints taken while room is made (or after a failure to reload) keep
            // the vault records until the blocks are installed; then their slots do.
            self.vault_pin.fetch_min(pin, Ordering::AcqRel);
            match self.reload_vaulted(stranded, new, pin, &mut report) {
                Ok(()) => {
                    // (A pin left by an earlier reload that failed stays.)
                    let _ = self.vault_pin.compare_exchange(
                        pin,
                        u64::MAX,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                Err(err) => self
                    .meta
                    .fail(self.meta.ssd_name(), "vault read-back", &err),
            }
        }
        self.count_stranded(stranded, new, &mut report);
        report
    }

    fn reload_vaulted(
        &self,
        stranded: &[Stranded],
        new: &dyn SectionRouter,
        pin: u64,
        report: &mut StrandedReport,
    ) -> Result<(), String> {
        let candidates: Vec<&Stranded> = stranded
            .iter()
            .filter(|slot| slot.vault_lsn != u64::MAX)
            .collect();
        let needs: Vec<(ControllerId, SectionKey)> = candidates
            .iter()
            .map(|slot| (new.route(slot.key).owner, slot.key))
            .collect();
        self.make_room(&needs)?;
        let state = self.meta.state();
        let wanted: HashSet<(u32, u64)> = candidates
            .iter()
            .flat_map(|slot| {
                (0..BLOCKS_PER_SECTION)
                    .filter(|block| slot.mask & (1 << block) != 0)
                    .map(|block| {
                        (
                            slot.key.0,
                            slot.key.1 * BLOCKS_PER_SECTION as u64 + block as u64,
                        )
                    })
            })
            .collect();
        let copies = self
            .meta
            .vaulted_copies(&state, pin, wanted)
            .map_err(|err| format!("reading the vault failed: {err}"))?;
        for copy in &copies {
            let route = new.route((copy.volume, copy.lba / BLOCKS_PER_SECTION as u64));
            match self.install_block(&state, copy, route.owner, None, route.mirror.is_some()) {
                Placed::Installed => {
                    report.reloaded += 1;
                    if !report.owners.contains(&route.owner) {
                        report.owners.push(route.owner);
                    }
                }
                Placed::Covered => {}
                Placed::NoSlot => {
                    return Err(format!(
                        "controller {} had no cache slot for block {} of volume {} although room was made",
                        route.owner, copy.lba, copy.volume
                    ));
                }
            }
        }
        report.owners.sort_unstable();
        Ok(())
    }

    /// Makes sure that each owner in `needs` can take a slot for every section it does not
    /// hold yet: while one of its shards lacks free or clean slots, that shard's sections
    /// are destaged in every live domain (a mirror copy there goes when its owner destages
    /// it). The caller holds the array writer and the flush lock, not the state lock, and
    /// requests are paused, so nothing else takes the slots freed.
    fn make_room(&self, needs: &[(ControllerId, SectionKey)]) -> Result<(), String> {
        let mut wanted: HashMap<(ControllerId, usize), HashSet<SectionKey>> = HashMap::new();
        for &(owner, key) in needs {
            let holds = self.domains[owner]
                .shard(key)
                .inner
                .lock()
                .index
                .contains_key(&key);
            if !holds {
                wanted
                    .entry((owner, shard_of(key)))
                    .or_default()
                    .insert(key);
            }
        }
        let mut batch = None;
        for ((owner, shard), keys) in wanted {
            let goal = RoomFor::Sections {
                owner,
                shard,
                sections: keys.len(),
            };
            if self.room_made(goal) {
                continue;
            }
            let batch = batch.get_or_insert_with(|| self.new_batch(owner));
            self.destage_until(goal, batch)?;
        }
        Ok(())
    }

    /// Counts what became of the stranded blocks: a block keeps its last write when its
    /// owner under `new` holds it dirty at that generation or newer, or the map does.
    fn count_stranded(
        &self,
        stranded: &[Stranded],
        new: &dyn SectionRouter,
        report: &mut StrandedReport,
    ) {
        let state = self.meta.state();
        for slot in stranded {
            let Some(volume) = state.volumes.get(&slot.key.0) else {
                continue; // deleted: nothing to lose
            };
            let owner = new.route(slot.key).owner;
            let cached = {
                let shard = self.domains[owner].shard(slot.key).inner.lock();
                shard.index.get(&slot.key).map(|&at| {
                    let entry = &shard.slots[at as usize];
                    (entry.role == Role::Primary).then_some((entry.dirty, entry.generation))
                })
            };
            let (dirty, generations) = cached.flatten().unwrap_or((0, [0; BLOCKS_PER_SECTION]));
            let mut lost_here = false;
            let blocks = slot.generation.iter().zip(&generations).enumerate();
            for (block, (&written, &held)) in blocks {
                let bit = 1u16 << block;
                if slot.mask & bit == 0 {
                    continue;
                }
                let lba = slot.key.1 * BLOCKS_PER_SECTION as u64 + block as u64;
                let cached = (dirty & bit != 0).then_some(held);
                let mapped = state
                    .maps
                    .get(slot.key.0, lba)
                    .map(|entry| entry.generation);
                if cached.max(mapped).is_some_and(|have| have >= written) {
                    continue;
                }
                lost_here = true;
                report.lost += 1;
                if cached.is_some() {
                    report.lost_to_older += 1;
                }
            }
            if lost_here && !report.volumes.contains(&volume.name) {
                report.volumes.push(volume.name.clone());
            }
        }
        report.volumes.sort();
    }

    /// Destages every dirty block of every domain on this thread (during start, before
    /// the destage threads run), cleaning segments when free rows run short. A checkpoint
    /// taken to keep the journal from filling keeps every record from `pinned` on: the
    /// vault copies of recovered blocks not installed yet.
    fn destage_for_recovery(&self, pinned: u64) -> Result<(), String> {
        for (domain, state) in self.domains.iter() {
            if !state.is_alive() {
                continue;
            }
            let mut batch = self.new_batch(domain);
            self.destage_until(RoomFor::Recovery { domain, pinned }, &mut batch)?;
        }
        Ok(())
    }

    /// The loop that makes room, for both [`RoomFor`] goals: until the goal is met, keep
    /// the journal from filling (a checkpoint once it is half full), destage one round,
    /// and when that left no fewer dirty blocks, clean one segment however full (no free
    /// rows are left outside the cleaner's reserve) and try again. Gives up when no
    /// segment can be cleaned, or after [`MAX_STALLED_ROUNDS`] rounds in a row that
    /// destaged nothing.
    fn destage_until(&self, goal: RoomFor, batch: &mut Batch) -> Result<(), String> {
        let mut stalled = 0;
        while !self.room_made(goal) {
            let before = self.dirty_left(goal);
            let journal = self.meta.journal();
            if journal.used() > journal.region_len() / 2 {
                match goal {
                    // The flush lock is held (no vault record can slip in) and the floor
                    // includes the pin.
                    RoomFor::Sections { .. } => self.meta.checkpoint(|| self.vault_floor()),
                    RoomFor::Recovery { pinned, .. } => self.checkpoint_keeping(pinned),
                }
                .map_err(|err| err.to_string())?;
            }
            match goal {
                RoomFor::Sections { shard, .. } => {
                    self.clean_if_low_locked(batch)?;
                    for id in self.domains.ids() {
                        self.destage_batch_locked(id, batch, shard)?;
                    }
                }
                RoomFor::Recovery { domain, .. } => {
                    self.clean_if_low(batch)?;
                    self.destage_batch(domain, batch)?;
                }
            }
            if self.dirty_left(goal) < before {
                stalled = 0;
                continue;
            }
            // No free rows outside the cleaner's reserve: clean one segment, however full,
            // and try again.
            stalled += 1;
            let writer = matches!(goal, RoomFor::Recovery { .. }).then(|| self.array_writer.lock());
            let cleaned = self.clean_one_segment(batch)?;
            drop(writer);
            if !cleaned || stalled > MAX_STALLED_ROUNDS {
                return Err(match goal {
                    RoomFor::Sections {
                        owner, sections, ..
                    } => format!(
                        "controller {owner} has no cache slot free for {sections} sections and destage makes no progress; check the NL-SAS devices"
                    ),
                    RoomFor::Recovery { domain, .. } => format!(
                        "the NL-SAS drives have no free space left for {before} dirty blocks of controller {domain}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// True once `goal` is met: the shard has the slots, or the domain holds no dirty block.
    fn room_made(&self, goal: RoomFor) -> bool {
        match goal {
            RoomFor::Sections {
                owner,
                shard,
                sections,
            } => self.domains[owner].shards[shard].inner.lock().available() >= sections,
            RoomFor::Recovery { .. } => self.dirty_left(goal) == 0,
        }
    }

    /// The dirty blocks destage works on for `goal`: those of every live domain (the
    /// sections' shard is destaged in each), or those of the recovering domain.
    fn dirty_left(&self, goal: RoomFor) -> u64 {
        match goal {
            RoomFor::Sections { .. } => self
                .domains
                .values()
                .filter(|domain| domain.is_alive())
                .map(|domain| domain.primary_dirty.load(Ordering::Acquire))
                .sum(),
            RoomFor::Recovery { domain, .. } => {
                self.domains[domain].primary_dirty.load(Ordering::Acquire)
            }
        }
    }
}
