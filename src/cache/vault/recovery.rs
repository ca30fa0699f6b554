//! Re-installing vaulted blocks: at start (`install_recovered`, every block the journal's
//! replay recovered) and after a controller failure (`reload_stranded`, the blocks whose
//! only DRAM copy the failed controller held). The promises are the vault module's.

use std::sync::atomic::Ordering;

use hashbrown::HashSet;

use super::super::shard::{Role, SectionKey};
use super::super::{Cache, SectionRouter};
use super::{Placed, Stranded, StrandedReport};
use crate::meta::{MetaState, RecoveredBlock};
use crate::types::{BLOCKS_PER_SECTION, ControllerId};

impl Cache {
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
    pub(in crate::cache) fn install_recovered(
        &self,
        blocks: Vec<RecoveredBlock>,
    ) -> Result<(), String> {
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
    pub(in crate::cache) fn reload_stranded(
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
}
