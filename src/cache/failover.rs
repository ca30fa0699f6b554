//! Ownership changes: a domain failing (its DRAM dropped, its sections' mirror copies
//! promoted), a domain coming back empty, sections moving between domains (failback), and
//! the re-mirroring that restores a second copy of dirty data after a failure.
//!
//! `fail_domain` and `reassign` run while requests are paused (the caller paused them) and
//! hold the array writer, the flush lock and the metadata state lock, so no destage batch,
//! flush, discard or host request sees a section half moved. Each compares the old and
//! the new placement of every cached section and applies, per slot:
//!
//! | slot here | new owner | action |
//! |-----------|-----------|--------|
//! | primary   | here      | keep; if the mirror changed, copy its dirty blocks to the new mirror (failback) or mark them unmirrored for the re-mirror worker (failover) |
//! | primary   | elsewhere | move the slot (clean and dirty blocks) to the new owner; stay as its mirror if this domain is the new mirror, else drop |
//! | mirror    | here      | promote: the dirty copies become the primary (its owner failed) |
//! | mirror    | elsewhere | keep if this domain is still the mirror, else drop |
//!
//! A failover never needs a free slot for promotion (it is in place); only the reload
//! below may. A failback step checks first that the receiving domain has room for every
//! dirty section it takes, and moves clean sections only while room remains; without
//! room it changes nothing and says so.
//!
//! ## A failure inside the re-mirror window
//!
//! After a failover, the promoted dirty blocks have one DRAM copy (`unmirrored`) until the
//! re-mirror worker copies them. If their new owner fails too in that window (by a fault:
//! the controllers layer refuses an injected failure while blocks are unmirrored), that
//! copy is gone. Promise: each of them that was flushed is back, before requests resume,
//! dirty in its owner under `new` at the newest generation the vault holds and the
//! metadata did not supersede, so reads see it at once and destage writes it later; it
//! is marked unmirrored when `new` gives it a mirror, and the re-mirror worker copies it
//! as every other block of the failed domain's sections (the copy is not made here: the
//! caller publishes `new` only after `fail_domain` returns, and a destage in between,
//! under the old routing, would release a mirror copy made under `new` in the wrong
//! place). Blocks never flushed are lost, as an unflushed write may be: they read back
//! as their last flushed version or as the array holds them. `fail_domain` returns and
//! prints how many blocks were reloaded and how many lost, on which controllers and
//! volumes, and what the operator should do.
//!
//! Steps, all under the array writer and the flush lock, so no flush appends vault records
//! and no checkpoint runs but those of step 3:
//!
//! 1. While the failed domain's slots are cleared, each primary slot's unmirrored dirty
//!    blocks are noted with their generations and the slot's `vault_lsn`.
//! 2. The oldest of those journal positions is pinned (`vault_pin`, part of every vault
//!    floor) until the blocks are installed.
//! 3. Room: where a new owner's shard has no free or clean slot for a section, that
//!    shard's sections are destaged in every live domain (the state lock is released for
//!    this: destage commits take it for writing). Checkpoints taken meanwhile keep the pin.
//!    The old routing is still current, which is right for every mirror copy that exists
//!    then (no copy was made under `new`).
//! 4. Under the state lock (read), the journal is committed and scanned from the pin with
//!    start-up recovery's rules ([`crate::meta::MetaStore::vaulted_copies`]), judged
//!    against the current catalog and maps (a change made while the lock was released is
//!    in the journal by then), and each copy found is installed with its `vault_lsn`.
//! 5. The pin is released. If step 3 or 4 fails, the node stops writing (the metadata
//!    store is marked failed) and the pin stays, so a restart recovers the blocks.
//!
//! The pause grows by the journal scan (from the oldest pinned record) and, when a shard
//! is short of slots, by the destage that makes room.

use std::sync::atomic::{AtomicU64, Ordering};

use super::shard::{Role, SectionKey, Slot};
use super::vault::{Stranded, StrandedReport};
use super::{Cache, Route, SectionRouter};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, PerController, SECTION_SIZE};

/// Re-mirroring after a failover, for `controller ls` and the events.
#[derive(Default)]
pub struct RemirrorProgress {
    /// Blocks without a mirror copy when the last failover finished.
    pub started_with: AtomicU64,
}

/// What a domain failure left behind.
#[derive(Debug)]
pub struct DomainFailure {
    /// Dirty blocks without a mirror copy now (for the re-mirror worker).
    pub unmirrored: u64,
    /// What became of the failed domain's dirty blocks that had no mirror copy.
    pub stranded: StrandedReport,
}

/// A failback step could not run: the receiving domain lacks room for dirty data.
#[derive(Debug)]
pub struct NoRoom {
    pub domain: ControllerId,
    pub needed: usize,
}

/// One cached section whose placement changes.
struct Move {
    domain: ControllerId,
    key: SectionKey,
    role: Role,
    old: Route,
    new: Route,
}

/// A slot's state and bytes, lifted out of one domain to put into another.
struct Lifted {
    slot: Slot,
    data: Vec<u8>,
}

impl Cache {
    /// Drops domain `failed`'s DRAM and hands its sections to their mirrors, which become
    /// their owners under `new`; the flushed ones among its dirty blocks that had no
    /// mirror copy are reloaded from the vault into their new owners (see the module
    /// doc). The caller has paused requests and stopped the domain's ports, and switches
    /// routing to `new` before resuming them.
    pub fn fail_domain(
        &self,
        failed: ControllerId,
        old: &dyn SectionRouter,
        new: &dyn SectionRouter,
    ) -> DomainFailure {
        let _writer = self.array_writer.lock();
        let _flush = self.flush_lock.lock();
        let state = self.meta.state();
        let domain = &self.domains[failed];
        domain.alive.store(false, Ordering::Release);
        domain.gate.accepting.store(false, Ordering::SeqCst);
        if let Some(ssd) = self.ssd.get() {
            // Its SSD partition survives the controller: the others' reads look in it.
            ssd.set_partition_online(failed.index(), false);
        }
        let mut stranded = Vec::new();
        for shard in domain.shards.iter() {
            let mut shard = shard.inner.lock();
            for slot in &shard.slots {
                if slot.role == Role::Primary {
                    let mask = slot.dirty & slot.unmirrored;
                    if mask != 0
                        && let Some(key) = slot.key
                    {
                        stranded.push(Stranded {
                            key,
                            mask,
                            generation: slot.generation,
                            vault_lsn: slot.vault_lsn,
                        });
                    }
                    let reserved = (slot.reserved & slot.dirty).count_ones();
                    if reserved > 0
                        && let Some(pool) = &slot.pool
                    {
                        pool.release(u64::from(reserved));
                    }
                }
            }
            shard.clear();
        }
        domain.primary_dirty.store(0, Ordering::Release);
        domain.mirror_dirty.store(0, Ordering::Release);
        domain.unmirrored.store(0, Ordering::Release);
        let moves = self.changed_sections(old, new);
        for change in &moves {
            self.apply_move(change, &state, false);
        }
        debug_assert_eq!(
            self.recount_domains(),
            Ok(()),
            "the cache's dirty counts disagree with its slots after controller {} failed",
            failed
        );
        // Making room for the reload destages, which takes the state lock for writing.
        drop(state);
        let stranded = self.reload_stranded(&stranded, new);
        if let Some(text) = stranded.describe(failed) {
            crate::say!("troika: {text}");
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.kick_destage(failed);
        self.signals.space.notify_all();
        let unmirrored: u64 = self
            .domains
            .values()
            .map(|domain| domain.unmirrored.load(Ordering::Acquire))
            .sum();
        self.remirror
            .started_with
            .store(unmirrored, Ordering::Release);
        DomainFailure {
            unmirrored,
            stranded,
        }
    }

    /// Brings a failed domain back empty and starts its destage thread. Its gate opens
    /// when the controllers layer opens its ports.
    pub fn recover_domain(self: &std::sync::Arc<Self>, id: ControllerId) {
        let domain = &self.domains[id];
        if let Some(handle) = domain.destager.lock().take() {
            let _ = handle.join();
        }
        domain.alive.store(true, Ordering::Release);
        if let Some(ssd) = self.ssd.get() {
            ssd.set_partition_online(id.index(), true);
        }
        self.start_destager(id);
    }

    /// Opens or closes a domain's gate for requests from its ports.
    pub fn set_accepting(&self, id: ControllerId, accepting: bool) {
        self.domains[id]
            .gate
            .accepting
            .store(accepting, Ordering::SeqCst);
    }

    /// Moves sections from their placement under `old` to `new`, copying dirty blocks
    /// to new mirrors at once. The caller has paused requests.
    pub fn reassign(&self, old: &dyn SectionRouter, new: &dyn SectionRouter) -> Result<(), NoRoom> {
        let _writer = self.array_writer.lock();
        let _flush = self.flush_lock.lock();
        let state = self.meta.state();
        let moves = self.changed_sections(old, new);
        self.check_room(&moves)?;
        // Primaries first, so a mirror slot that its section's new primary lands on is
        // taken over before the mirror rules look at it.
        for change in moves.iter().filter(|change| change.role == Role::Primary) {
            self.apply_move(change, &state, true);
        }
        for change in moves.iter().filter(|change| change.role == Role::Mirror) {
            self.apply_move(change, &state, true);
        }
        debug_assert_eq!(
            self.recount_domains(),
            Ok(()),
            "the cache's dirty counts disagree with its slots after sections moved between controllers"
        );
        drop(state);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.signals.space.notify_all();
        Ok(())
    }

    /// Every cached section, in a live domain, whose owner or mirror differs.
    fn changed_sections(&self, old: &dyn SectionRouter, new: &dyn SectionRouter) -> Vec<Move> {
        let mut moves = Vec::new();
        for domain in self.domains.values().filter(|domain| domain.is_alive()) {
            for shard in domain.shards.iter() {
                let shard = shard.inner.lock();
                for slot in &shard.slots {
                    let Some(key) = slot.key else { continue };
                    let (was, now) = (old.route(key), new.route(key));
                    if was != now {
                        moves.push(Move {
                            domain: domain.id,
                            key,
                            role: slot.role,
                            old: was,
                            new: now,
                        });
                    }
                }
            }
        }
        moves
    }

    /// Counts, per receiving shard, the slots a failback step must find, and fails when a
    /// domain lacks them.
    fn check_room(&self, moves: &[Move]) -> Result<(), NoRoom> {
        let mut needed = PerController::new(self.domains.len(), |_| [0usize; super::SHARDS]);
        for change in moves {
            let dirty = self.slot_dirty(change.domain, change.key);
            if dirty == 0 {
                continue;
            }
            let shard = super::shard_of(change.key);
            if change.role == Role::Primary {
                if change.new.owner != change.domain {
                    needed[change.new.owner][shard] += 1;
                }
                if let Some(mirror) = change.new.mirror
                    && mirror != change.domain
                    && Some(mirror) != change.old.mirror
                {
                    needed[mirror][shard] += 1;
                }
            }
        }
        for (domain, shards) in needed.iter() {
            for (index, &count) in shards.iter().enumerate() {
                if count > 0 && self.domains[domain].shards[index].inner.lock().available() < count
                {
                    return Err(NoRoom {
                        domain,
                        needed: shards.iter().sum(),
                    });
                }
            }
        }
        Ok(())
    }

    fn slot_dirty(&self, domain: ControllerId, key: SectionKey) -> u16 {
        let shard = self.domains[domain].shard(key).inner.lock();
        shard
            .index
            .get(&key)
            .map_or(0, |&slot| shard.slots[slot as usize].dirty)
    }

    /// Applies the table in the module doc to one section. `copy_now`: give a new mirror
    /// its copy at once (failback) instead of leaving it to the re-mirror worker.
    fn apply_move(&self, change: &Move, state: &crate::meta::MetaState, copy_now: bool) {
        let here = change.domain;
        let Some(current) = self.lift_role(here, change.key) else {
            return;
        };
        match current {
            Role::Primary if change.new.owner == here => {
                if change.new.mirror.is_some() && change.new.mirror != change.old.mirror {
                    self.give_new_mirror(here, change.key, change.new.mirror, copy_now);
                }
            }
            Role::Primary => {
                let stays_as_mirror = change.new.mirror == Some(here);
                let Some(lifted) = self.lift(here, change.key, stays_as_mirror) else {
                    return;
                };
                let had_copy = stays_as_mirror || change.new.mirror == change.old.mirror;
                if !self.land_primary(change.new.owner, change.key, lifted) {
                    return;
                }
                if !had_copy {
                    self.give_new_mirror(change.new.owner, change.key, change.new.mirror, copy_now);
                }
            }
            Role::Mirror if change.new.owner == here => {
                self.promote(here, change.key, state);
                self.give_new_mirror(here, change.key, change.new.mirror, copy_now);
            }
            Role::Mirror if change.new.mirror == Some(here) => {}
            Role::Mirror => self.drop_mirror(here, change.key),
        }
    }

    fn lift_role(&self, domain: ControllerId, key: SectionKey) -> Option<Role> {
        let shard = self.domains[domain].shard(key).inner.lock();
        let slot = *shard.index.get(&key)?;
        Some(shard.slots[slot as usize].role)
    }

    /// Takes a primary slot's state and bytes out of `domain`; the slot stays behind as a
    /// mirror of its dirty blocks when `keep_as_mirror`, else it is freed.
    fn lift(
        &self,
        domain_id: ControllerId,
        key: SectionKey,
        keep_as_mirror: bool,
    ) -> Option<Lifted> {
        let domain = &self.domains[domain_id];
        let since = self.meta.journal().lsn_floor();
        let mut shard = domain.shard(key).inner.lock();
        let slot = *shard.index.get(&key)?;
        let mut data = vec![0u8; SECTION_SIZE];
        for block in 0..BLOCKS_PER_SECTION {
            data[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
                .copy_from_slice(shard.block(slot, block));
        }
        let entry = &mut shard.slots[slot as usize];
        let lifted = entry.clone();
        let dirty = u64::from(entry.dirty.count_ones());
        let unmirrored = u64::from((entry.unmirrored & entry.dirty).count_ones());
        domain.release_primary_dirty(dirty);
        domain.release_unmirrored(unmirrored);
        if keep_as_mirror && entry.dirty != 0 {
            entry.role = Role::Mirror;
            entry.valid = entry.dirty;
            entry.ssd.clear(u16::MAX);
            entry.unvaulted = 0;
            entry.reserved = 0;
            entry.unmirrored = 0;
            entry.known = 0;
            entry.mapped = 0;
            entry.pool = None;
            entry.queued = false;
            entry.in_unvaulted = false;
            entry.vault_lsn = entry.vault_lsn.min(since);
            domain.mirror_dirty.fetch_add(dirty, Ordering::AcqRel);
        } else {
            entry.dirty = 0;
            shard.release(slot);
        }
        Some(Lifted { slot: lifted, data })
    }

    /// Puts a lifted primary into `owner`, over any mirror copy it held. Clean sections
    /// land only if a slot is free; `false` when the section was left out.
    fn land_primary(&self, owner: ControllerId, key: SectionKey, lifted: Lifted) -> bool {
        let domain = &self.domains[owner];
        let mut shard = domain.shard(key).inner.lock();
        let Some(slot) = shard.find_or_insert(key, Role::Primary) else {
            if lifted.slot.dirty != 0 {
                crate::say!(
                    "troika: controller {} had no slot for section {:?} during failback although room was checked",
                    owner,
                    key
                );
            }
            return false;
        };
        let entry = &mut shard.slots[slot as usize];
        if entry.role == Role::Mirror {
            domain.release_mirror_dirty(u64::from(entry.dirty.count_ones()));
        }
        *entry = lifted.slot.clone();
        entry.key = Some(key);
        entry.role = Role::Primary;
        entry.queued = false;
        entry.in_unvaulted = false;
        entry.referenced = true;
        let dirty = u64::from(entry.dirty.count_ones());
        let unmirrored = u64::from((entry.unmirrored & entry.dirty).count_ones());
        for block in 0..BLOCKS_PER_SECTION {
            shard
                .block_mut(slot, block)
                .copy_from_slice(&lifted.data[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]);
        }
        shard.queue_dirty(slot);
        shard.queue_unvaulted(slot);
        // Counted before the lock goes (see the domain module doc).
        domain.primary_dirty.fetch_add(dirty, Ordering::AcqRel);
        domain.unmirrored.fetch_add(unmirrored, Ordering::AcqRel);
        true
    }

    /// Turns a mirror slot into the section's primary: its dirty blocks are the newest
    /// acknowledged data. They are vaulted again by the next flush (their vault records,
    /// if any, stay pinned by the slot's journal position meanwhile).
    pub(super) fn promote(
        &self,
        domain_id: ControllerId,
        key: SectionKey,
        state: &crate::meta::MetaState,
    ) {
        let domain = &self.domains[domain_id];
        let handle = state.volumes.get(&key.0).cloned();
        let map = &state.maps;
        let mut shard = domain.shard(key).inner.lock();
        let Some(&slot) = shard.index.get(&key) else {
            return;
        };
        let copy = &shard.slots[slot as usize];
        assert!(
            copy.role == Role::Mirror,
            "controller {}: section {} of volume {} is being promoted from its mirror copy, but this controller holds the owner's copy already",
            domain_id,
            key.1,
            key.0
        );
        assert!(
            copy.dirty & !copy.valid == 0,
            "controller {}: the mirror copy of section {} of volume {} being promoted lacks the bytes of dirty blocks (mask {:#06x}); with the owner's copy gone those writes would be lost",
            domain_id,
            key.1,
            key.0,
            copy.dirty & !copy.valid
        );
        let Some(handle) = handle else {
            // The volume is gone: nothing to keep.
            let dirty = u64::from(shard.slots[slot as usize].dirty.count_ones());
            shard.slots[slot as usize].dirty = 0;
            shard.release(slot);
            domain.release_mirror_dirty(dirty);
            return;
        };
        let entry = &mut shard.slots[slot as usize];
        let dirty = entry.dirty;
        let mut mapped = 0u16;
        for block in 0..BLOCKS_PER_SECTION {
            let lba = key.1 * BLOCKS_PER_SECTION as u64 + block as u64;
            if dirty & (1 << block) != 0 && map.get(key.0, lba).is_some() {
                mapped |= 1 << block;
            }
        }
        let reserved = dirty & !mapped;
        if reserved != 0 {
            handle.pool.add(u64::from(reserved.count_ones()));
        }
        entry.role = Role::Primary;
        entry.valid = dirty;
        entry.ssd.clear(u16::MAX);
        entry.unvaulted = dirty;
        entry.known = dirty;
        entry.mapped = mapped;
        entry.reserved = reserved;
        entry.pool = Some(handle.pool.clone());
        entry.unmirrored = 0;
        entry.queued = false;
        entry.in_unvaulted = false;
        shard.queue_dirty(slot);
        shard.queue_unvaulted(slot);
        // Counted before the lock goes (see the domain module doc).
        let count = u64::from(dirty.count_ones());
        domain.primary_dirty.fetch_add(count, Ordering::AcqRel);
        drop(shard);
        domain.release_mirror_dirty(count);
    }

    fn drop_mirror(&self, domain_id: ControllerId, key: SectionKey) {
        let domain = &self.domains[domain_id];
        let mut shard = domain.shard(key).inner.lock();
        let Some(&slot) = shard.index.get(&key) else {
            return;
        };
        let dirty = u64::from(shard.slots[slot as usize].dirty.count_ones());
        shard.slots[slot as usize].dirty = 0;
        shard.release(slot);
        domain.release_mirror_dirty(dirty);
    }

    /// The owner's dirty blocks of `key` need a copy on `mirror`: made now (`copy_now`, a
    /// slot permitting) or marked for the re-mirror worker.
    fn give_new_mirror(
        &self,
        owner: ControllerId,
        key: SectionKey,
        mirror: Option<ControllerId>,
        copy_now: bool,
    ) {
        let Some(mirror) = mirror else { return };
        let domain = &self.domains[owner];
        let mut data = Vec::new();
        // Vault records of these blocks made from now on come after this position, and
        // those made before, after the owner's `vault_lsn`.
        let since = self.meta.journal().lsn_floor();
        let (dirty, generations, vault_lsn) = {
            let mut shard = domain.shard(key).inner.lock();
            let Some(&slot) = shard.index.get(&key) else {
                return;
            };
            let dirty = shard.slots[slot as usize].dirty;
            if dirty == 0 {
                return;
            }
            if copy_now {
                data.resize(SECTION_SIZE, 0);
                for block in 0..BLOCKS_PER_SECTION {
                    data[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
                        .copy_from_slice(shard.block(slot, block));
                }
            }
            let entry = &mut shard.slots[slot as usize];
            let newly = u64::from((dirty & !entry.unmirrored).count_ones());
            entry.unmirrored |= dirty;
            domain.unmirrored.fetch_add(newly, Ordering::AcqRel);
            (dirty, entry.generation, entry.vault_lsn)
        };
        if !copy_now {
            return;
        }
        let bytes = |block: usize| &data[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE];
        let generation = |block: usize| generations[block];
        if self
            .try_write_mirror(
                mirror,
                key,
                dirty,
                &bytes,
                &generation,
                since.min(vault_lsn),
            )
            .is_some()
        {
            self.settle_mirror(owner, mirror, key, dirty, &generation);
        }
    }

    /// Copies every dirty block that lacks a mirror copy to its section's mirror, then
    /// returns. Runs admitted through `port`'s gate, so ownership changes wait for it.
    /// Returns the blocks copied.
    pub fn remirror_all(&self, port: ControllerId) -> Result<u64, crate::types::IoError> {
        let mut copied = 0u64;
        #[cfg(test)]
        if self.faults.hold_remirror.load(Ordering::Acquire) {
            return Ok(copied);
        }
        let mut data = vec![0u8; SECTION_SIZE];
        for (owner, domain) in self.domains.iter() {
            let keys: Vec<SectionKey> = {
                if !domain.is_alive() {
                    continue;
                }
                domain
                    .shards
                    .iter()
                    .flat_map(|shard| {
                        let shard = shard.inner.lock();
                        shard
                            .slots
                            .iter()
                            .filter(|slot| {
                                slot.role == Role::Primary && slot.unmirrored & slot.dirty != 0
                            })
                            .filter_map(|slot| slot.key)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            for key in keys {
                if self.shutdown.load(Ordering::Acquire) {
                    return Ok(copied);
                }
                copied += self.admitted(port, || self.remirror_section(owner, key, &mut data))?;
            }
        }
        Ok(copied)
    }

    fn remirror_section(
        &self,
        owner: ControllerId,
        key: SectionKey,
        data: &mut [u8],
    ) -> Result<u64, crate::types::IoError> {
        let route = self.router.route(key);
        let Some(mirror) = route.mirror else {
            return Ok(0);
        };
        if route.owner != owner {
            return Ok(0);
        }
        // As in `give_new_mirror`: the copy keeps the vault records of its blocks.
        let since = self.meta.journal().lsn_floor();
        let (mask, generations, vault_lsn) = {
            let shard = self.domains[owner].shard(key).inner.lock();
            let Some(&slot) = shard.index.get(&key) else {
                return Ok(0);
            };
            let entry = &shard.slots[slot as usize];
            let mask = entry.unmirrored & entry.dirty;
            if mask == 0 || entry.role != Role::Primary {
                return Ok(0);
            }
            for block in 0..BLOCKS_PER_SECTION {
                if mask & (1 << block) != 0 {
                    data[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
                        .copy_from_slice(shard.block(slot, block));
                }
            }
            (mask, entry.generation, entry.vault_lsn)
        };
        let bytes = |block: usize| &data[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE];
        let generation = |block: usize| generations[block];
        self.write_mirror(mirror, key, mask, &bytes, &generation, since.min(vault_lsn))?;
        self.settle_mirror(owner, mirror, key, mask, &generation);
        let count = u64::from(mask.count_ones());
        self.counters
            .blocks_remirrored
            .fetch_add(count, Ordering::Relaxed);
        Ok(count)
    }

    /// Dirty blocks without a mirror copy, over all domains.
    pub fn unmirrored_blocks(&self) -> u64 {
        self.domains
            .values()
            .filter(|domain| domain.is_alive())
            .map(|domain| domain.unmirrored.load(Ordering::Acquire))
            .sum()
    }
}
