//! Persistence of the index: a per-partition identity log plus two alternating checkpoints.
//!
//! Commit order of one writer batch (every step waits for the one before):
//! 1. `Reuse` records for every slot about to be written are appended and synced: from now
//!    on a restart treats those slots as empty, whatever they held.
//! 2. The data is written into the slots and synced.
//! 3. `Admit` records (slot + full identity) are appended and synced, for each block whose
//!    key still names that slot (one forgotten meanwhile is not recorded).
//!
//! A crash before 3 leaves the slots empty after restart (never an old identity over new
//! bytes); a torn record fails its CRC and is dropped. `forget_range`, relocations and
//! removals after a failed verification append `Clear` / `Relocate` records and sync them
//! before returning, so a restart never resurrects them.
//!
//! Checkpoints: when the log is half full, on a timer and at shutdown, the live copy (epoch
//! E) is streamed, the log's records of epoch E are applied, every entry the DRAM index no
//! longer holds in that slot is emptied, and the result is written as the other copy with
//! epoch E + 1 (entry pages first, then its header, then a sync). Only then does the log
//! start again from page 0 with records of epoch E + 1. A crash while writing the new copy
//! leaves it failing its CRC, and the old copy with its whole log still rebuilds the index.
//! A copy carries only the entry pages below the index shards' high-water marks, which its
//! header records (`entries.rs`): a checkpoint costs what was ever cached, not the capacity.
//! The marks it records are the DRAM index's at that moment, read under the log lock: every
//! slot a record of the old epoch names was handed out (its mark raised) before the record
//! was appended, so no entry falls above the new marks.
//!
//! Rebuild at open: the copy with the highest epoch whose header and entry pages verify is
//! loaded, then the log's records of that epoch are applied in sequence order; a record for
//! a slot above its shard's recorded mark (handed out after the checkpoint) raises the mark.
//! Records after a gap in the sequence are not trusted: every slot they name is dropped.
//! Whenever open drops anything it writes a fresh checkpoint at once, so the media and the
//! index agree.
//!
//! DRAM: nothing per entry; the log keeps one staging page buffer. A checkpoint or a rebuild
//! needs transient memory for the log's records (64 B each) and, at open, 40 B per slot
//! below the marks of one partition at a time.

use std::io;
use std::sync::Arc;

use super::entries::{Entries, is_marked, marked_pages, marks_fit};
use super::format::{
    CheckpointHeader, ENTRIES_PER_PAGE, ENTRY_BYTES, Geometry, NONE, PAGE, RECORD_BYTES,
    RECORDS_PER_PAGE, Record, decode_checkpoint_header, decode_entry, empty_identity,
    encode_checkpoint_header, encode_entry, entries_crc_start,
};
use crate::io::{AlignedBuf, Device, IoRing};

/// Log pages written by one append at most (more records take several appends).
const LOG_BUF_PAGES: usize = 16;
/// Checkpoint pages read or written at once.
const CHUNK_PAGES: usize = 64;

/// An I/O error on the region, with what the tier was doing.
#[derive(Debug)]
pub(super) struct MediaError {
    pub what: &'static str,
    pub error: io::Error,
}

fn at(what: &'static str) -> impl FnOnce(io::Error) -> MediaError {
    move |error| MediaError { what, error }
}

/// Where the region is and which format instance it holds.
pub(super) struct Media {
    pub device: Arc<Device>,
    /// The region's first byte on the device.
    pub base: u64,
    pub geometry: Geometry,
    pub instance: u64,
}

/// What a checkpoint asks of the DRAM index of its partition.
pub(super) trait LiveIndex {
    /// True when `phys` is in slot `slot` (the checkpoint keeps only such entries).
    fn still_cached(&self, phys: u64, slot: u32) -> bool;
    /// The index shards' high-water marks.
    fn marks(&self) -> Vec<u32>;
}

/// Fills encoded checkpoint entry pages (the buffer's length) from a given entry page on.
pub(super) type EntrySource<'a> =
    dyn FnMut(&mut IoRing, u32, &mut [u8]) -> Result<(), MediaError> + 'a;

/// A partition's identity log: where the next page goes and which epoch it belongs to.
pub(super) struct IdentityLog {
    pub partition: usize,
    /// Epoch of the live checkpoint; records appended now carry it.
    pub epoch: u32,
    /// Whether checkpoint copy `epoch % 2` exists (false until the first checkpoint).
    pub has_checkpoint: bool,
    /// The marks that copy recorded: its entries below them are valid, none above.
    pub live_marks: Vec<u32>,
    /// Next log page to write.
    pub head: u32,
    pub next_seq: u64,
    buf: AlignedBuf,
}

impl IdentityLog {
    pub fn new(partition: usize) -> IdentityLog {
        IdentityLog {
            partition,
            epoch: 0,
            has_checkpoint: false,
            live_marks: Vec::new(),
            head: 0,
            next_seq: 0,
            buf: AlignedBuf::new(LOG_BUF_PAGES * PAGE),
        }
    }

    /// True when half the log is used (time for a checkpoint).
    pub fn half_full(&self, media: &Media) -> bool {
        self.head * 2 >= media.geometry.log_pages
    }

    /// Appends `records` (their epoch and sequence are set here) in whole pages and syncs.
    /// A full log is checkpointed first (from `index`).
    pub fn append(
        &mut self,
        media: &Media,
        ring: &mut IoRing,
        records: &[Record],
        index: &dyn LiveIndex,
    ) -> Result<(), MediaError> {
        let mut rest = records;
        while !rest.is_empty() {
            let count = rest.len().min(LOG_BUF_PAGES * RECORDS_PER_PAGE);
            let pages = count.div_ceil(RECORDS_PER_PAGE);
            if self.head as usize + pages > media.geometry.log_pages as usize {
                self.checkpoint(media, ring, index)?;
            }
            let bytes = &mut self.buf[..pages * PAGE];
            bytes.fill(0);
            for (index, record) in rest[..count].iter().enumerate() {
                let mut record = *record;
                record.epoch = self.epoch;
                record.seq = self.next_seq;
                self.next_seq += 1;
                record.encode(media.instance, &mut bytes[index * RECORD_BYTES..]);
            }
            let offset = media.base + media.geometry.log_offset(self.partition, self.head);
            ring.write_at(&media.device, offset, bytes)
                .map_err(at("writing the identity log"))?;
            ring.sync(&media.device)
                .map_err(at("syncing the identity log"))?;
            self.head += pages as u32;
            rest = &rest[count..];
        }
        Ok(())
    }

    /// Writes the next checkpoint from the live one and the log, keeping only entries
    /// `index` still holds in their slot, then restarts the log. Returns the bytes written.
    pub fn checkpoint(
        &mut self,
        media: &Media,
        ring: &mut IoRing,
        index: &dyn LiveIndex,
    ) -> Result<u64, MediaError> {
        let mut records = read_records(media, self.partition, ring, self.epoch, self.head)?;
        records.sort_by_key(|record| (record.slot, record.seq));
        let live_marks = self.live_marks.clone();
        let mut marks = index.marks();
        for (mark, live) in marks.iter_mut().zip(&live_marks) {
            *mark = (*mark).max(*live);
        }
        let geometry = &media.geometry;
        let live = self
            .has_checkpoint
            .then_some((self.partition, self.epoch % 2));
        let mut input = AlignedBuf::new(CHUNK_PAGES * PAGE);
        let mut next_record = 0;
        let mut source = |ring: &mut IoRing, first_page: u32, out: &mut [u8]| {
            let pages = out.len() / PAGE;
            let input = &mut input[..pages * PAGE];
            if let Some((partition, copy)) = live {
                let offset = geometry.checkpoint_offset(partition, copy, 1 + first_page);
                ring.read_at(&media.device, media.base + offset, input)
                    .map_err(at("reading the live checkpoint"))?;
            }
            for_each_slot(geometry, first_page, pages, |slot, page, at_in_page| {
                let at = page * PAGE + at_in_page * ENTRY_BYTES;
                let mut entry = if live.is_some() && is_marked(geometry, &live_marks, slot) {
                    decode_entry(&input[at..])
                } else {
                    empty_identity(NONE)
                };
                while next_record < records.len() && records[next_record].slot < slot {
                    next_record += 1;
                }
                while next_record < records.len() && records[next_record].slot == slot {
                    records[next_record].apply(&mut entry);
                    next_record += 1;
                }
                let kept = entry.phys != NONE
                    && is_marked(geometry, &marks, slot)
                    && index.still_cached(entry.phys, slot);
                if !kept {
                    entry = empty_identity(NONE);
                }
                encode_entry(&entry, &mut out[at..]);
            });
            Ok(())
        };
        self.write_checkpoint(media, ring, &marks, &mut source)
    }

    /// Writes checkpoint copy `(epoch + 1) % 2` recording `marks`, its entry pages below
    /// them from `source` (which fills encoded entry pages starting at a given entry page),
    /// syncs, and restarts the log in the new epoch. Returns the bytes written.
    pub fn write_checkpoint(
        &mut self,
        media: &Media,
        ring: &mut IoRing,
        marks: &[u32],
        source: &mut EntrySource<'_>,
    ) -> Result<u64, MediaError> {
        let epoch = self.epoch + 1;
        let copy = epoch % 2;
        let mut out = AlignedBuf::new(CHUNK_PAGES * PAGE);
        let mut crc = entries_crc_start(media.instance);
        let mut written = 0u64;
        for range in marked_pages(&media.geometry, marks) {
            let mut first_page = range.start;
            while first_page < range.end {
                let pages = (range.end - first_page).min(CHUNK_PAGES as u32);
                let out = &mut out[..pages as usize * PAGE];
                out.fill(0);
                source(ring, first_page, out)?;
                crc = crc32c::crc32c_append(crc, out);
                let offset = media
                    .geometry
                    .checkpoint_offset(self.partition, copy, 1 + first_page);
                ring.write_at(&media.device, media.base + offset, out)
                    .map_err(at("writing a checkpoint"))?;
                written += out.len() as u64;
                first_page += pages;
            }
        }
        let header = CheckpointHeader {
            epoch,
            slots: media.geometry.slots,
            entries_crc: crc,
            marks: marks.to_vec(),
        };
        let page = &mut out[..PAGE];
        encode_checkpoint_header(&header, media.instance, page);
        let offset = media.geometry.checkpoint_offset(self.partition, copy, 0);
        ring.write_at(&media.device, media.base + offset, page)
            .map_err(at("writing a checkpoint header"))?;
        ring.sync(&media.device)
            .map_err(at("syncing a checkpoint"))?;
        self.epoch = epoch;
        self.has_checkpoint = true;
        self.live_marks = header.marks;
        self.head = 0;
        self.next_seq = 0;
        Ok(written + PAGE as u64)
    }
}

/// Calls `f(slot, page_in_chunk, index_in_page)` for every slot of `pages` entry pages
/// from entry page `first_page`.
fn for_each_slot(
    geometry: &Geometry,
    first_page: u32,
    pages: usize,
    mut f: impl FnMut(u32, usize, usize),
) {
    for page in 0..pages {
        let first_slot = (first_page as usize + page) * ENTRIES_PER_PAGE;
        for index in 0..ENTRIES_PER_PAGE {
            let slot = first_slot + index;
            if slot >= geometry.slots as usize {
                return;
            }
            f(slot as u32, page, index);
        }
    }
}

/// The intact records of `epoch` in the first `pages` log pages, with the index of the
/// page each was found in.
fn read_log(
    media: &Media,
    partition: usize,
    ring: &mut IoRing,
    epoch: u32,
    pages: u32,
) -> Result<Vec<(Record, u32)>, MediaError> {
    let mut found = Vec::new();
    let mut buf = AlignedBuf::new(LOG_BUF_PAGES * PAGE);
    let mut first = 0;
    while first < pages {
        let count = (pages - first).min(LOG_BUF_PAGES as u32);
        let bytes = &mut buf[..count as usize * PAGE];
        let offset = media.base + media.geometry.log_offset(partition, first);
        ring.read_at(&media.device, offset, bytes)
            .map_err(at("reading the identity log"))?;
        for (index, raw) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            if let Some(record) = Record::decode(media.instance, raw)
                && record.epoch == epoch
            {
                found.push((record, first + (index / RECORDS_PER_PAGE) as u32));
            }
        }
        first += count;
    }
    Ok(found)
}

fn read_records(
    media: &Media,
    partition: usize,
    ring: &mut IoRing,
    epoch: u32,
    pages: u32,
) -> Result<Vec<Record>, MediaError> {
    Ok(read_log(media, partition, ring, epoch, pages)?
        .into_iter()
        .map(|(record, _)| record)
        .collect())
}

/// What a partition's media said at open.
pub(super) struct Loaded {
    /// The entries below the marks (phys = NONE for empty).
    pub entries: Entries,
    pub log: IdentityLog,
    /// Entries dropped as uncertain.
    pub dropped: u64,
    /// The media must be rewritten (a fresh checkpoint) before new records go on.
    pub needs_checkpoint: bool,
}

/// Loads the live checkpoint of `partition` and replays its log.
pub(super) fn load(
    media: &Media,
    partition: usize,
    ring: &mut IoRing,
) -> Result<Loaded, MediaError> {
    let geometry = &media.geometry;
    let mut log = IdentityLog::new(partition);
    let mut candidates = Vec::with_capacity(2);
    let mut page = AlignedBuf::new(PAGE);
    for copy in 0..2 {
        let offset = geometry.checkpoint_offset(partition, copy, 0);
        ring.read_at(&media.device, media.base + offset, &mut page)
            .map_err(at("reading a checkpoint header"))?;
        if let Some(header) = decode_checkpoint_header(&page, media.instance)
            && header.slots == geometry.slots
            && header.epoch % 2 == copy
            && marks_fit(geometry, &header.marks)
        {
            candidates.push(header);
        }
    }
    candidates.sort_by_key(|header| std::cmp::Reverse(header.epoch));
    let mut live = None;
    for header in &candidates {
        if let Some(entries) = load_copy(media, partition, ring, header)? {
            live = Some((header, entries));
            break;
        }
    }
    let mut entries = match (live, candidates.first()) {
        (None, Some(newest)) => {
            // Every copy is damaged: nothing on this partition can be trusted.
            log.epoch = newest.epoch;
            log.has_checkpoint = true;
            return Ok(Loaded {
                entries: Entries::with_marks(*geometry, &[]),
                log,
                dropped: 0,
                needs_checkpoint: true,
            });
        }
        (Some((header, entries)), _) => {
            log.epoch = header.epoch;
            log.has_checkpoint = true;
            log.live_marks = header.marks.clone();
            entries
        }
        (None, None) => Entries::with_marks(*geometry, &[]),
    };
    let (dropped, needs_checkpoint) = replay(media, ring, &mut log, &mut entries)?;
    Ok(Loaded {
        entries,
        log,
        dropped,
        needs_checkpoint,
    })
}

/// Applies the log's records of `log.epoch` to `entries` in sequence order, raising the
/// marks for slots handed out after the checkpoint. Returns the entries dropped and
/// whether the media needs a fresh checkpoint (records out of sequence).
fn replay(
    media: &Media,
    ring: &mut IoRing,
    log: &mut IdentityLog,
    entries: &mut Entries,
) -> Result<(u64, bool), MediaError> {
    let pages = media.geometry.log_pages;
    let mut records = read_log(media, log.partition, ring, log.epoch, pages)?;
    records.sort_by_key(|(record, _)| record.seq);
    let mut dropped = 0;
    let mut needs_checkpoint = false;
    for (record, page) in &records {
        if record.seq != log.next_seq {
            // Out of sequence: everything from here on is uncertain.
            needs_checkpoint = true;
            if let Some(entry) = entries.get_mut(record.slot) {
                if entry.phys != NONE {
                    dropped += 1;
                }
                *entry = empty_identity(NONE);
            }
            continue;
        }
        let Some(entry) = entries.get_mut_raising(record.slot) else {
            // A slot past the partition's end: uncertain like a gap.
            needs_checkpoint = true;
            continue;
        };
        record.apply(entry);
        log.next_seq += 1;
        log.head = log.head.max(page + 1);
    }
    Ok((dropped, needs_checkpoint))
}

/// Reads checkpoint copy `header`: its entries below its marks, or `None` when its entry
/// pages fail the CRC.
fn load_copy(
    media: &Media,
    partition: usize,
    ring: &mut IoRing,
    header: &CheckpointHeader,
) -> Result<Option<Entries>, MediaError> {
    let geometry = &media.geometry;
    let mut entries = Entries::with_marks(*geometry, &header.marks);
    let mut buf = AlignedBuf::new(CHUNK_PAGES * PAGE);
    let mut crc = entries_crc_start(media.instance);
    let copy = header.epoch % 2;
    for range in marked_pages(geometry, &header.marks) {
        let mut first_page = range.start;
        while first_page < range.end {
            let pages = (range.end - first_page).min(CHUNK_PAGES as u32);
            let bytes = &mut buf[..pages as usize * PAGE];
            let offset = geometry.checkpoint_offset(partition, copy, 1 + first_page);
            ring.read_at(&media.device, media.base + offset, bytes)
                .map_err(at("reading a checkpoint"))?;
            crc = crc32c::crc32c_append(crc, bytes);
            for_each_slot(geometry, first_page, pages as usize, |slot, page, index| {
                if let Some(entry) = entries.get_mut(slot) {
                    *entry = decode_entry(&bytes[page * PAGE + index * ENTRY_BYTES..]);
                }
            });
            first_page += pages;
        }
    }
    Ok((crc == header.entries_crc).then_some(entries))
}

/// Fills encoded entry pages from `entries` (a checkpoint written at open).
pub(super) fn entries_source<'a>(
    media: &'a Media,
    entries: &'a Entries,
) -> impl FnMut(&mut IoRing, u32, &mut [u8]) -> Result<(), MediaError> + 'a {
    move |_ring, first_page, out| {
        let pages = out.len() / PAGE;
        for_each_slot(&media.geometry, first_page, pages, |slot, page, index| {
            encode_entry(
                &entries.get(slot),
                &mut out[page * PAGE + index * ENTRY_BYTES..],
            );
        });
        Ok(())
    }
}
