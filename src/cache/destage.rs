//! The destage threads, one per domain: each gathers its domain's dirty primary blocks (and
//! blocks the cleaner relocates) into whole rows, computes P and Q, writes and syncs the
//! rows, commits the map entries through the journal, and then marks the cache blocks
//! clean and releases their mirror copies. They also clean segments when free space runs
//! low, and the first live one writes checkpoints when the journal fills. Everything that
//! writes rows holds the array writer lock, so batches of different domains never
//! interleave on the array.
//!
//! Crash safety, step by step: rows are written to space no committed map entry refers to
//! (a crash leaves unreferenced garbage); the map commit is journaled only after the rows
//! are synced (a replayed entry always points at durable data); blocks are marked clean
//! only after the commit is durable (until then a flush still vaults them).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Cache;
use super::shard::{Role, SectionKey};
use crate::io::{AlignedBuf, IoRing};
use crate::layout::summary::{SlotIdentity, decode_summary, encode_summary};
use crate::layout::{Array, ParityCodec, block_checksum};
use crate::meta::journal::Ticket;
use crate::meta::records;
use crate::meta::{MapEntry, MetaState};
use crate::types::{BLOCK_SIZE, BLOCKS_PER_SECTION, ControllerId, VolumeId};

const ROWS_PER_BATCH: usize = 16;
/// Segments only the cleaner may write to, so cleaning can always make progress.
const CLEANER_RESERVE_SEGMENTS: u64 = 4;

/// Where a block in a destage batch came from.
#[derive(Clone, Copy)]
enum Source {
    /// A dirty cache block of this generation.
    Cache {
        shard: usize,
        slot: u32,
        key: (u32, u64),
        block: usize,
    },
    /// A live block the cleaner moves out of `old`.
    Relocation { old: u64 },
}

/// What step 1 of a commit finds of a batch's cache block in its owner's slot.
enum Held {
    /// Still dirty at the generation the batch read: its map entry is committed.
    Dirty,
    /// Its volume was deleted meanwhile: dropped from the slot.
    OfDeletedVolume,
    /// Rewritten, dropped or destaged since: left as it is.
    NoLonger,
}

#[derive(Clone, Copy)]
struct BatchBlock {
    source: Source,
    /// The dataset a cache block belongs to; for a relocation, its family.
    volume: u32,
    /// The family whose identity the block carries.
    family: u32,
    lba: u64,
    generation: u64,
    checksum: u64,
}

/// Buffers of the destage thread, allocated once.
pub(super) struct Batch {
    rows: Vec<AlignedBuf>,
    /// The data units of a row being cleaned.
    victim: AlignedBuf,
    blocks: Vec<BatchBlock>,
    identities: Vec<SlotIdentity>,
    committed: Vec<(BatchBlock, u64)>,
    map_records: Vec<(u64, MapEntry)>,
    ring: IoRing,
    codec: ParityCodec,
    /// The domain whose blocks the batch holds.
    domain: ControllerId,
    /// Blocks marked clean by the last commit, whose mirror copies go next.
    cleaned: Vec<(SectionKey, usize, u64)>,
}

impl Cache {
    /// Starts controller `id`'s domain's destage thread; a panic on it fails the domain
    /// through the panic hook instead of the node.
    pub(super) fn start_destager(self: &std::sync::Arc<Self>, id: ControllerId) {
        let worker = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("troika-destage-{id}"))
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker.destage_loop(id)
                }));
                if outcome.is_err() {
                    worker.domain_panicked(id);
                }
            })
            .expect("spawning a destage thread");
        *self.domains[id].destager.lock() = Some(handle);
    }

    /// Buffers for one destage thread of controller `id`'s domain.
    pub(super) fn new_batch(&self, id: ControllerId) -> Batch {
        let array = self.meta.array();
        let geometry = *array.geometry();
        Batch {
            rows: (0..ROWS_PER_BATCH)
                .map(|_| AlignedBuf::new(array.row_buffer_len()))
                .collect(),
            victim: AlignedBuf::new(array.row_buffer_len()),
            blocks: Vec::with_capacity(ROWS_PER_BATCH * geometry.data_slots_per_row() as usize),
            identities: Vec::with_capacity(geometry.slots_per_row() as usize),
            committed: Vec::new(),
            map_records: Vec::new(),
            ring: IoRing::new(256).expect("io_uring was probed at start"),
            codec: ParityCodec::new(geometry.data, geometry.unit as usize)
                .expect("geometry was validated"),
            domain: id,
            cleaned: Vec::new(),
        }
    }

    fn destage_loop(&self, id: ControllerId) {
        let domain = &self.domains[id];
        let mut batch = self.new_batch(id);
        // Hot data stays in cache: destage starts at the high watermark and goes down to
        // the low one. When hosts stop doing I/O for a while, everything is written out so
        // the vault and the recovery time stay small without competing with host I/O.
        let mut destaging = false;
        let mut host_io = self.host_io();
        let mut quiet_since = Instant::now();
        let mut last_checkpoint = Instant::now();
        loop {
            if self.meta.has_failed() || !domain.is_alive() {
                return;
            }
            let shutdown = self.shutdown.load(Ordering::Acquire);
            let dirty = domain.primary_dirty.load(Ordering::Acquire);
            // Mirror copies fill a domain too, and only their owners can free them: the
            // fullest domain sets the pace for all.
            let fullest = self
                .domains
                .values()
                .filter(|domain| domain.is_alive())
                .map(|domain| domain.dirty_total())
                .max()
                .unwrap_or(0);
            let checkpointer = self
                .domains
                .values()
                .find(|domain| domain.is_alive())
                .map(|domain| domain.id)
                == Some(id);
            let journal = self.meta.journal();
            let journal_used = journal.used();
            // The vault copies of dirty blocks pin the journal: past a quarter of it they
            // are destaged while hosts are quiet, past half of it whatever hosts do.
            let journal_filling = journal_used > journal.region_len() / 4;
            let journal_pressure = journal_used > journal.region_len() / 2;
            // Checkpoints keep the journal (and so the recovery time) short; the vault
            // copies of blocks still dirty hold its tail, so destage goes oldest first.
            let checkpoint_due = (journal_used > journal.region_len() / 8
                && last_checkpoint.elapsed() > Duration::from_secs(2))
                || (journal_used > journal.region_len() / 2
                    && last_checkpoint.elapsed() > Duration::from_millis(200));
            if checkpoint_due && checkpointer {
                if let Err(err) = self.checkpoint() {
                    self.meta.fail(self.meta.ssd_name(), "checkpoint", &err);
                }
                last_checkpoint = Instant::now();
                self.signals.space.notify_all();
            }
            let pressure = domain.slot_pressure.swap(false, Ordering::AcqRel)
                || self
                    .domains
                    .values()
                    .any(|domain| domain.slot_pressure.load(Ordering::Acquire));
            let io = self.host_io();
            if io != host_io {
                host_io = io;
                quiet_since = Instant::now();
            }
            let idle = quiet_since.elapsed() > Duration::from_millis(500);
            if fullest >= self.destage_high {
                destaging = true;
            } else if fullest <= self.destage_low {
                destaging = false;
            }
            let drain = self.drain_requested.load(Ordering::Acquire)
                || journal_pressure
                || pressure
                || idle
                || (journal_filling && quiet_since.elapsed() > Duration::from_millis(100))
                || destaging;
            if let Err(err) = self.clean_if_low(&mut batch) {
                self.meta.fail("the NL-SAS array", "segment cleaning", &err);
            }
            #[cfg(test)]
            let drain = drain
                && !self
                    .faults
                    .manual_destage
                    .load(std::sync::atomic::Ordering::Acquire);
            if dirty > 0 && (drain || shutdown) {
                if let Err(err) = self.destage_batch(id, &mut batch) {
                    self.meta.fail("the NL-SAS array", "destage", &err);
                }
                self.signals.space.notify_all();
                continue;
            }
            if shutdown {
                return;
            }
            let mut guard = self.signals.lock.lock();
            domain
                .destage_wake
                .wait_for(&mut guard, Duration::from_millis(200));
        }
    }

    /// Keeps free segments ahead of destage: cleans up to 16 of the emptiest segments
    /// while free segments are short.
    pub(super) fn clean_if_low(&self, batch: &mut Batch) -> Result<(), String> {
        self.clean_while_low(batch, true)
    }

    /// [`Cache::clean_if_low`] for a caller that holds the array writer.
    pub(super) fn clean_if_low_locked(&self, batch: &mut Batch) -> Result<(), String> {
        self.clean_while_low(batch, false)
    }

    /// Cleans while free segments are short, taking the array writer for each segment
    /// when `take_writer` (else the caller holds it).
    fn clean_while_low(&self, batch: &mut Batch, take_writer: bool) -> Result<(), String> {
        let geometry = *self.meta.array().geometry();
        // Above the destage's reserve, or a small array could stop with exactly the
        // reserve free: too few rows to destage, too many to start cleaning.
        let clean_below = (geometry.segments() / 32).max(CLEANER_RESERVE_SEGMENTS + 4);
        let mut cleaned = 0;
        while cleaned < 16 && self.meta.state().alloc.free_segments() < clean_below {
            let writer = take_writer.then(|| self.array_writer.lock());
            let outcome = self.clean_one_segment(batch);
            drop(writer);
            if !outcome? {
                break;
            }
            cleaned += 1;
        }
        Ok(())
    }

    /// Blocks hosts have read or written so far (to tell when they go quiet).
    fn host_io(&self) -> u64 {
        self.counters.blocks_written.load(Ordering::Relaxed)
            + self.counters.read_hits.load(Ordering::Relaxed)
            + self.counters.read_misses.load(Ordering::Relaxed)
    }

    /// Gathers up to a batch of controller `domain_id`'s dirty blocks and writes them out.
    pub(super) fn destage_batch(
        &self,
        domain_id: ControllerId,
        batch: &mut Batch,
    ) -> Result<(), String> {
        let _writer = self.array_writer.lock();
        self.destage_batch_locked(domain_id, batch, 0)
    }

    /// [`Cache::destage_batch`] for a caller that holds the array writer, gathering from
    /// shard `first_shard` on (the shards after it next, wrapping around).
    pub(super) fn destage_batch_locked(
        &self,
        domain_id: ControllerId,
        batch: &mut Batch,
        first_shard: usize,
    ) -> Result<(), String> {
        let domain = &self.domains[domain_id];
        if !domain.is_alive() {
            return Ok(());
        }
        batch.domain = domain_id;
        let geometry = *self.meta.array().geometry();
        let capacity = ROWS_PER_BATCH * geometry.data_slots_per_row() as usize;
        batch.blocks.clear();
        let shards = domain.shards.len();
        for index in (0..shards).map(|step| (first_shard + step) % shards) {
            if batch.blocks.len() >= capacity {
                break;
            }
            let mut shard = domain.shards[index].inner.lock();
            while batch.blocks.len() < capacity {
                let Some(slot) = shard.dirty_queue.pop_front() else {
                    break;
                };
                let entry = &mut shard.slots[slot as usize];
                if !entry.queued {
                    continue;
                }
                entry.queued = false;
                let Some(key) = entry.key else { continue };
                if entry.role != Role::Primary {
                    continue;
                }
                let dirty = entry.dirty;
                assert!(
                    dirty & !entry.valid == 0,
                    "controller {}: section {} of volume {} holds dirty blocks (mask {:#06x}) whose bytes are not in its cache; destaging them would write garbage to the volume",
                    domain_id,
                    key.1,
                    key.0,
                    dirty & !entry.valid
                );
                let family = self.meta.family_of(key.0);
                let mut taken = 0u16;
                for block in 0..BLOCKS_PER_SECTION {
                    if dirty & (1 << block) == 0 {
                        continue;
                    }
                    if batch.blocks.len() >= capacity {
                        break;
                    }
                    taken |= 1 << block;
                    let lba = key.1 * BLOCKS_PER_SECTION as u64 + block as u64;
                    let generation = shard.slots[slot as usize].generation[block];
                    let row = batch.blocks.len() / geometry.data_slots_per_row() as usize;
                    let within = batch.blocks.len() % geometry.data_slots_per_row() as usize;
                    let at = geometry.offset_in_row(geometry.phys(0, within as u64));
                    let bytes = shard.block(slot, block);
                    batch.rows[row][at..at + BLOCK_SIZE].copy_from_slice(bytes);
                    let checksum = block_checksum(VolumeId(family), lba, bytes);
                    batch.blocks.push(BatchBlock {
                        source: Source::Cache {
                            shard: index,
                            slot,
                            key,
                            block,
                        },
                        volume: key.0,
                        family,
                        lba,
                        generation,
                        checksum,
                    });
                }
                if taken != dirty {
                    // Not all of it fit: keep it at the front for the next batch.
                    shard.slots[slot as usize].queued = true;
                    shard.dirty_queue.push_front(slot);
                }
            }
        }
        if batch.blocks.is_empty() {
            return Ok(());
        }
        let reserve = CLEANER_RESERVE_SEGMENTS * geometry.rows_per_segment;
        if !self.write_and_commit(batch, reserve)? {
            // Not enough free rows outside the cleaner's reserve: requeue and let the
            // loop clean first.
            self.requeue_batch(batch);
        }
        Ok(())
    }

    /// Writes the gathered blocks as rows and commits them. Blocks in `batch.rows` are at
    /// their slot positions already.
    /// Returns `false`, having written nothing, when fewer than `reserve` rows would be left.
    fn write_and_commit(&self, batch: &mut Batch, reserve: u64) -> Result<bool, String> {
        let array: &Array = self.meta.array();
        let geometry = *array.geometry();
        let per_row = geometry.data_slots_per_row() as usize;
        let row_count = batch.blocks.len().div_ceil(per_row);
        let Some(rows) = self.allocate_rows(row_count, reserve)? else {
            return Ok(false);
        };
        for (index, &row) in rows.iter().enumerate() {
            let blocks =
                &batch.blocks[index * per_row..((index + 1) * per_row).min(batch.blocks.len())];
            batch.identities.clear();
            batch.identities.extend(blocks.iter().map(|b| SlotIdentity {
                volume: b.family,
                lba: b.lba,
                generation: b.generation,
                checksum: b.checksum,
            }));
            // Unused slots of a partial row are zero.
            let buffer = &mut batch.rows[index];
            for slot in blocks.len()..per_row {
                let at = geometry.offset_in_row(geometry.phys(0, slot as u64));
                buffer[at..at + BLOCK_SIZE].fill(0);
            }
            let at = geometry.offset_in_row(geometry.phys(0, geometry.summary_slot()));
            encode_summary(row, &batch.identities, &mut buffer[at..at + BLOCK_SIZE]);
            array
                .compute_parity(&mut batch.codec, buffer)
                .map_err(|err| err.to_string())?;
        }
        let writes: Vec<(u64, &[u8])> = rows
            .iter()
            .enumerate()
            .map(|(i, &row)| (row, &batch.rows[i][..]))
            .collect();
        array.write_rows(&mut batch.ring, &writes);
        self.meta
            .counters
            .media_rows_written
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.meta
            .counters
            .media_blocks_written
            .fetch_add(batch.blocks.len() as u64, Ordering::Relaxed);
        #[cfg(test)]
        if self.fault_hit(super::tests::FaultPoint::DestageBeforeCommit) {
            // The controller "lost power" here: the rows are unreferenced garbage.
            self.requeue_batch(batch);
            return Ok(true);
        }
        self.commit(batch, &rows)?;
        Ok(true)
    }

    /// Puts a batch's cache blocks back on their dirty queues.
    fn requeue_batch(&self, batch: &mut Batch) {
        let domain = &self.domains[batch.domain];
        for block in &batch.blocks {
            if let Source::Cache { shard, slot, .. } = block.source {
                domain.shards[shard].inner.lock().queue_dirty(slot);
            }
        }
        batch.blocks.clear();
    }

    /// Takes `count` rows for one batch. Empty segments are released only here, before
    /// any row of the batch is taken, so a segment opened and closed within this batch
    /// cannot be handed out twice.
    /// `None` when fewer than `reserve` free rows would remain.
    fn allocate_rows(&self, count: usize, reserve: u64) -> Result<Option<Vec<u64>>, String> {
        for attempt in 0..2 {
            if attempt > 0 {
                self.meta
                    .journal()
                    .commit_all()
                    .map_err(|err| err.to_string())?;
            }
            let mut state = self.meta.state_mut();
            state
                .alloc
                .release_durable(self.meta.journal().durable_ticket());
            let available = state.alloc.free_segments() * state.alloc.geometry().rows_per_segment;
            if available + state.alloc.rows_left_in_open() >= count as u64 + reserve {
                let rows: Vec<u64> = (0..count)
                    .map(|_| state.alloc.allocate_row().expect("rows were counted"))
                    .collect();
                self.forget_reused_segments(state.alloc.geometry(), &rows);
                return Ok(Some(rows));
            }
        }
        if reserve > 0 {
            return Ok(None);
        }
        Err("the array has no free segment left even for cleaning; pools promise more than the array holds".into())
    }

    /// Commits the map entries of a written batch, then marks its cache blocks clean and
    /// releases their mirror copies. Each step starts once the one before is done:
    ///
    /// 1. [`Cache::commit_map`]: under the metadata lock, keeps the blocks their owner's
    ///    slot still holds dirty at the generation the batch read, points the map at
    ///    their new rows and journals the change;
    /// 2. makes the journal durable up to that change;
    /// 3. [`Cache::mark_destaged_clean`]: marks those blocks clean, unless rewritten
    ///    meanwhile, and [`Cache::requeue_superseded`] queues what stays dirty;
    /// 4. [`Cache::release_destaged_mirrors`]: releases their mirror copies, then gives
    ///    back the rows the change freed once durable.
    fn commit(&self, batch: &mut Batch, rows: &[u64]) -> Result<(), String> {
        let (ticket, orphaned) = self.commit_map(batch, rows);
        self.meta
            .journal()
            .commit(ticket)
            .map_err(|err| err.to_string())?;
        #[cfg(test)]
        if self.fault_hit(super::tests::FaultPoint::DestageAfterCommit) {
            // Committed, but the controller "lost power" before marking anything clean.
            self.requeue_batch(batch);
            return Ok(());
        }
        let (cleaned, relocated) = self.mark_destaged_clean(batch, ticket);
        self.requeue_superseded(batch);
        if cleaned + orphaned > 0 {
            self.domains[batch.domain].release_primary_dirty(cleaned + orphaned);
        }
        self.release_destaged_mirrors(batch.domain, &batch.cleaned, ticket);
        self.counters
            .blocks_destaged
            .fetch_add(cleaned, Ordering::Relaxed);
        self.counters
            .blocks_relocated
            .fetch_add(relocated, Ordering::Relaxed);
        let durable = self.meta.journal().durable_ticket();
        self.meta.state_mut().alloc.release_durable(durable);
        Ok(())
    }

    /// Step 1 of [`Cache::commit`], under the metadata lock: points the map at the new
    /// rows for the cache blocks still wanted and for the relocated blocks still live
    /// where they were, and appends the change to the journal (not durable yet). Fills
    /// `batch.committed`. Returns the journal ticket of the change and how many dirty
    /// blocks of deleted volumes were dropped instead.
    fn commit_map(&self, batch: &mut Batch, rows: &[u64]) -> (Ticket, u64) {
        let geometry = *self.meta.array().geometry();
        let per_row = geometry.data_slots_per_row() as usize;
        batch.committed.clear();
        let mut orphaned = 0u64;
        let mut state = self.meta.state_mut();
        let mut freed = Vec::new();
        let mut relocations = Vec::new();
        let mut moved_blocks = Vec::new();
        for (index, block) in batch.blocks.iter().enumerate() {
            let phys = geometry.phys(rows[index / per_row], (index % per_row) as u64);
            match block.source {
                Source::Cache { .. } => {
                    match self.still_dirty_in_owner(batch.domain, block, &state) {
                        Held::Dirty => {
                            let entry = MapEntry {
                                phys,
                                checksum: block.checksum,
                                generation: block.generation,
                            };
                            state.maps.set(block.volume, block.lba, entry, &mut freed);
                            state.alloc.add_live(phys);
                            batch.committed.push((*block, phys));
                        }
                        Held::OfDeletedVolume => orphaned += 1,
                        Held::NoLonger => {}
                    }
                }
                Source::Relocation { old } => {
                    let members = state.family_member_ids(block.family);
                    let moved = state
                        .maps
                        .relocate(&members, block.lba, old, phys, &mut freed);
                    if moved {
                        state.alloc.add_live(phys);
                        relocations.push((block.family, block.lba, old, phys));
                        let moved = crate::ssd::BlockIdentity {
                            phys,
                            family: block.family,
                            lba: block.lba,
                            generation: block.generation,
                            checksum: block.checksum,
                        };
                        moved_blocks.push((old, moved));
                        batch.committed.push((*block, phys));
                    }
                }
            }
        }
        let ticket = self.journal_map_changes(batch, &relocations);
        for (_, _, old, _) in &relocations {
            state.alloc.remove_live(*old, ticket);
        }
        let ssd = self.meta.read_cache();
        if ssd.is_some() {
            // The clean DRAM copies that noted a moved block's old place now name its new
            // one (offered later, they would name a place about to mean something else).
            self.renote_relocated(&state, &relocations);
        }
        state.release_freed(&freed, ticket);
        drop(state);
        if let Some(ssd) = ssd {
            // The SSD copy of a moved block answers for its new place. Outside the
            // metadata lock (it may read a copy back and write the identity log), but
            // before this batch lets go of the array: the old places cannot be reused,
            // and so forgotten, before it is done.
            ssd.relocate_all(&moved_blocks);
        }
        (ticket, orphaned)
    }

    /// Whether the owner's slot still holds a batch's cache block dirty at the generation
    /// the batch read (not rewritten, dropped or destaged since). A block of a volume
    /// deleted meanwhile is dropped from the slot here. The caller holds the metadata
    /// lock.
    fn still_dirty_in_owner(
        &self,
        domain: ControllerId,
        block: &BatchBlock,
        state: &MetaState,
    ) -> Held {
        let Source::Cache {
            shard,
            slot,
            key,
            block: bit_index,
        } = block.source
        else {
            return Held::NoLonger;
        };
        let domain = &self.domains[domain];
        let mut shard = domain.shards[shard].inner.lock();
        let entry = &mut shard.slots[slot as usize];
        let bit = 1u16 << bit_index;
        let still =
            entry.role == Role::Primary && entry.holds_dirty(key, bit_index, block.generation);
        if !still {
            return Held::NoLonger;
        }
        if !state.maps.contains(block.volume) {
            // The volume was deleted while this write was in flight.
            if entry.unmirrored & bit != 0 {
                entry.unmirrored &= !bit;
                domain.release_unmirrored(1);
            }
            entry.dirty &= !bit;
            entry.unvaulted &= !bit;
            entry.reserved &= !bit;
            entry.valid &= !bit;
            entry.ssd.clear(bit);
            return Held::OfDeletedVolume;
        }
        // The new block is new space (already counted when it was reserved); the block
        // it replaces is given back by the commit if no snapshot still refers to it.
        let reserved = entry.reserved & bit != 0;
        entry.reserved &= !bit;
        entry.known |= bit;
        entry.mapped |= bit;
        if !reserved && let Some(account) = state.family_accounts.get(&block.family) {
            account.add(1);
        }
        Held::Dirty
    }

    /// Appends the journal records of a batch's map change: its relocations, or its cache
    /// blocks' new entries, one record per run of blocks of one volume. Returns the
    /// ticket of the last record.
    fn journal_map_changes(
        &self,
        batch: &mut Batch,
        relocations: &[(u32, u64, u64, u64)],
    ) -> Ticket {
        batch.map_records.clear();
        let journal = self.meta.journal();
        let mut ticket = journal.last_ticket();
        for (family, lba, old, new) in relocations {
            ticket = journal
                .append(records::RELOCATE, |out| {
                    records::encode_relocate(*family, *lba, *old, *new, out)
                })
                .0;
        }
        // A batch holds cache blocks or relocations, never both.
        let mut start = if relocations.is_empty() {
            0
        } else {
            batch.committed.len()
        };
        while start < batch.committed.len() {
            let volume = batch.committed[start].0.volume;
            let mut end = start;
            while end < batch.committed.len() && batch.committed[end].0.volume == volume {
                end += 1;
            }
            batch.map_records.clear();
            batch
                .map_records
                .extend(batch.committed[start..end].iter().map(|(b, phys)| {
                    (
                        b.lba,
                        MapEntry {
                            phys: *phys,
                            checksum: b.checksum,
                            generation: b.generation,
                        },
                    )
                }));
            let records_ref = &batch.map_records;
            ticket = journal
                .append(records::MAP_SET, |out| {
                    records::encode_map_set(volume, records_ref, out)
                })
                .0;
            start = end;
        }
        ticket
    }

    /// Step 3 of [`Cache::commit`]: marks the committed cache blocks clean in their
    /// owner's slot where it still holds them dirty at the destaged generation, and lists
    /// every committed cache block in `batch.cleaned` for the release of its mirror copy.
    /// Returns (blocks marked clean, blocks relocated).
    fn mark_destaged_clean(&self, batch: &mut Batch, ticket: Ticket) -> (u64, u64) {
        let domain = &self.domains[batch.domain];
        let durable = self.meta.journal().durable_ticket();
        assert!(
            durable >= ticket,
            "controller {}: destaged blocks are being marked clean before their map commit is durable (journal ticket {ticket}, durable up to {durable}); a crash now would lose them",
            domain.id
        );
        let mut cleaned = 0u64;
        let mut relocated = 0u64;
        batch.cleaned.clear();
        let admit = self.ssd_admitting_volumes(batch);
        for &(block, phys) in &batch.committed {
            let Source::Cache {
                shard,
                slot,
                key,
                block: bit_index,
            } = block.source
            else {
                relocated += 1;
                continue;
            };
            let mut shard = domain.shards[shard].inner.lock();
            let entry = &mut shard.slots[slot as usize];
            let bit = 1u16 << bit_index;
            batch.cleaned.push((key, bit_index, block.generation));
            if entry.role == Role::Primary && entry.holds_dirty(key, bit_index, block.generation) {
                assert!(
                    entry.unvaulted & bit != 0 || entry.vault_lsn != u64::MAX,
                    "controller {}: block {} of volume {} was flushed to the vault, but until its destage commits nothing kept its vault record from a checkpoint (its slot holds no vault journal position)",
                    domain.id,
                    block.lba,
                    key.0
                );
                if entry.unmirrored & bit != 0 {
                    entry.unmirrored &= !bit;
                    domain.release_unmirrored(1);
                }
                entry.dirty &= !bit;
                entry.unvaulted &= !bit;
                // The clean copy is now the committed block: the SSD cache may have it.
                let admissible = admit.contains(&block.volume);
                let committed = (phys, block.checksum, block.generation);
                entry
                    .ssd
                    .set(bit_index, block.family, committed, admissible);
                cleaned += 1;
                if entry.dirty == 0 {
                    entry.vault_lsn = u64::MAX;
                }
                if admissible {
                    shard.offer_block(slot, bit_index);
                }
            }
            shard.queue_dirty(slot);
        }
        (cleaned, relocated)
    }

    /// The volumes of a batch's committed cache blocks that allow the SSD read cache
    /// (none when there is no SSD cache).
    fn ssd_admitting_volumes(&self, batch: &Batch) -> Vec<u32> {
        if self.ssd.get().is_none() {
            return Vec::new();
        }
        let state = self.meta.state();
        let mut volumes: Vec<u32> = Vec::new();
        for (block, _) in &batch.committed {
            if matches!(block.source, Source::Cache { .. }) && !volumes.contains(&block.volume) {
                let enabled = state
                    .volumes
                    .get(&block.volume)
                    .is_some_and(|handle| handle.ssd_enabled.load(Ordering::Relaxed));
                if enabled {
                    volumes.push(block.volume);
                }
            }
        }
        volumes
    }

    /// Queues again the slots of a batch's cache blocks: those rewritten while the batch
    /// was on its way stay dirty and must be destaged later.
    fn requeue_superseded(&self, batch: &Batch) {
        let domain = &self.domains[batch.domain];
        for block in &batch.blocks {
            if let Source::Cache { shard, slot, .. } = block.source {
                domain.shards[shard].inner.lock().queue_dirty(slot);
            }
        }
    }

    /// Step 4 of [`Cache::commit`]: releases the mirror copies of blocks domain `owner`
    /// destaged, whose generation is now on the array, committed durably by journal
    /// ticket `ticket` (blocks of one section are next to each other in a batch). A copy
    /// rewritten since (newer generation) stays.
    pub(super) fn release_destaged_mirrors(
        &self,
        owner: ControllerId,
        cleaned: &[(SectionKey, usize, u64)],
        ticket: Ticket,
    ) {
        if let Some(&((volume, section), _, _)) = cleaned.first() {
            let durable = self.meta.journal().durable_ticket();
            assert!(
                durable >= ticket,
                "the mirror copies of destaged blocks (volume {volume}, section {section} first) are being released before their owner's map commit is durable (journal ticket {ticket}, durable up to {durable}); a crash now would lose them"
            );
        }
        let mut start = 0;
        while start < cleaned.len() {
            let key = cleaned[start].0;
            let mut end = start;
            let mut mask = 0u16;
            let mut generations = [0u64; BLOCKS_PER_SECTION];
            while end < cleaned.len() && cleaned[end].0 == key {
                let (_, block, generation) = cleaned[end];
                mask |= 1 << block;
                generations[block] = generations[block].max(generation);
                end += 1;
            }
            if let Some(mirror) = self.router.route(key).mirror {
                self.release_mirror(owner, mirror, key, mask, &|block| generations[block]);
            }
            start = end;
        }
    }

    /// Moves the live blocks of the emptiest segment elsewhere so it can be reused.
    /// Returns `false` when no segment is worth cleaning.
    pub(super) fn clean_one_segment(&self, batch: &mut Batch) -> Result<bool, String> {
        let geometry = *self.meta.array().geometry();
        let Some(victim) = self.meta.state().alloc.pick_victim() else {
            return Ok(false);
        };
        let per_row = geometry.data_slots_per_row() as usize;
        let capacity = ROWS_PER_BATCH * per_row;
        let mut identities = Vec::new();
        let mut block_buf = AlignedBuf::new(BLOCK_SIZE);
        let array = self.meta.array();
        batch.blocks.clear();
        for row in victim * geometry.rows_per_segment..(victim + 1) * geometry.rows_per_segment {
            // One read of the row's data units brings the summary and every live block.
            let loaded = array
                .read_data_units(&mut batch.ring, row, &mut batch.victim)
                .is_ok();
            let summary_at = array.offset_in_row(geometry.phys(row, geometry.summary_slot()));
            let valid = loaded
                && decode_summary(
                    row,
                    &batch.victim[summary_at..summary_at + BLOCK_SIZE],
                    &mut identities,
                )
                .is_some();
            // (phys, family, a dataset mapping it, lba, entry) of each live block.
            let live: Vec<(u64, u32, u32, u64, MapEntry)> = {
                let state = self.meta.state();
                if valid {
                    identities
                        .iter()
                        .enumerate()
                        .filter_map(|(slot, id)| {
                            let phys = geometry.phys(row, slot as u64);
                            // Where the block was written for, then every address it
                            // was shared to (a copy by reference).
                            std::iter::once(id.lba)
                                .chain(state.maps.aliases(phys).iter().copied())
                                .find_map(|lba| {
                                    state.catalog.family_members(id.volume).find_map(|member| {
                                        let entry = state.maps.get(member.id, lba)?;
                                        (entry.phys == phys).then_some((member.id, lba, entry))
                                    })
                                })
                                .map(|(dataset, lba, entry)| (phys, id.volume, dataset, lba, entry))
                        })
                        .collect()
                } else {
                    // The summary is unreadable: find the row's live blocks from the maps.
                    let mut found: Vec<(u64, u32, u32, u64, MapEntry)> = Vec::new();
                    let mut seen = std::collections::HashSet::new();
                    for volume in state.catalog.volumes.values() {
                        state
                            .maps
                            .visit_range(volume.id, 0, u64::MAX, &mut |lba, entry| {
                                if geometry.row_of(entry.phys) == row && seen.insert(entry.phys) {
                                    found.push((
                                        entry.phys,
                                        volume.family(),
                                        volume.id,
                                        lba,
                                        entry,
                                    ));
                                }
                                true
                            });
                    }
                    found
                }
            };
            for (phys, family, dataset, lba, entry) in live {
                let at = array.offset_in_row(phys);
                let in_row = &batch.victim[at..at + BLOCK_SIZE];
                if loaded && block_checksum(VolumeId(family), lba, in_row) == entry.checksum {
                    block_buf.copy_from_slice(in_row);
                } else {
                    // Damaged or unreadable: the verified read repairs it from parity.
                    let handle = self.meta.state().volumes.get(&dataset).cloned();
                    let Some(handle) = handle else { continue };
                    if let Err(err) =
                        self.meta
                            .read_block(&mut batch.ring, &handle, lba, &mut block_buf, None)
                    {
                        crate::say!(
                            "troika: cleaner cannot move block {lba} of volume {dataset}: {err}"
                        );
                        continue;
                    }
                }
                let index = batch.blocks.len();
                let at = geometry.offset_in_row(geometry.phys(0, (index % per_row) as u64));
                batch.rows[index / per_row][at..at + BLOCK_SIZE].copy_from_slice(&block_buf);
                batch.blocks.push(BatchBlock {
                    source: Source::Relocation { old: phys },
                    volume: family,
                    family,
                    lba,
                    generation: entry.generation,
                    checksum: entry.checksum,
                });
                if batch.blocks.len() == capacity {
                    self.write_and_commit(batch, 0)?;
                    batch.blocks.clear();
                }
            }
        }
        if !batch.blocks.is_empty() {
            self.write_and_commit(batch, 0)?;
            batch.blocks.clear();
        }
        self.meta
            .journal()
            .commit_all()
            .map_err(|err| err.to_string())?;
        let durable = self.meta.journal().durable_ticket();
        self.meta.state_mut().alloc.release_durable(durable);
        Ok(true)
    }
}
