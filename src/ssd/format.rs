//! The cache region's layout on media and the encodings of its pages.
//!
//! ```text
//! region.offset ─► [ header page ]
//!                  [ partition 0 ][ partition 1 ] ...   (each `partition_stride` bytes)
//! partition p   ─► [ data: slots × 4 KiB ][ identity log: log_pages × 4 KiB ]
//!                  [ checkpoint copy 0: checkpoint_pages ][ checkpoint copy 1 ]
//! ```
//!
//! - **Header** (one page): magic, format version, the geometry (partitions, slots per
//!   partition, shards, log and checkpoint sizes, where the partitions start and their
//!   stride, the region's length), a random instance id and a CRC32C over all of it. A
//!   header whose CRC, magic, version or geometry differs from what this region and
//!   partition count give is not trusted: the region is formatted (a new instance id).
//! - **Identity log record** (64 bytes, 64 per page): kind, slot, phys, aux (lba for an
//!   admission, the old phys for a relocation), generation, checksum, family, the epoch of
//!   the checkpoint it follows, a sequence number, and a CRC32C seeded with the instance
//!   id, so records of an earlier format of the same region never validate.
//! - **Checkpoint copy**: a header page (magic, instance, epoch, slots, CRC of the entry
//!   pages written, each index shard's high-water mark, own CRC) then room for one 40-byte
//!   entry per slot (102 per page): the slot's [`BlockIdentity`], or phys = [`NONE`] for an
//!   empty slot. Only the entry pages covering the slots below the marks are written and
//!   covered by the CRC (see `entries.rs`); the rest of the copy is never read.
//!
//! Format 2 added the marks; a region of format 1 fails the header check and is formatted
//! (its checkpoints, which carried every slot, are never read).

use super::BlockIdentity;

/// The unit of everything: a cached block, a log page, a checkpoint page.
pub(super) const PAGE: usize = 4096;
/// The phys of an empty slot.
pub(super) const NONE: u64 = u64::MAX;
pub(super) const FORMAT_VERSION: u32 = 2;
pub(super) const RECORD_BYTES: usize = 64;
pub(super) const RECORDS_PER_PAGE: usize = PAGE / RECORD_BYTES;
pub(super) const ENTRY_BYTES: usize = 40;
pub(super) const ENTRIES_PER_PAGE: usize = PAGE / ENTRY_BYTES;

const HEADER_MAGIC: &[u8; 16] = b"troika-ssd-cache";
const CHECKPOINT_MAGIC: &[u8; 16] = b"troika-ssd-ckpt2";
const RECORD_MAGIC: u32 = 0x5253_4B54;
pub(super) const MAX_SHARDS: u32 = 16;
const MIN_SLOTS: u32 = 64;

/// Where everything is, in pages and bytes relative to the region's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub partitions: u32,
    /// Data slots per partition.
    pub slots: u32,
    /// Index shards per partition.
    pub shards: u32,
    pub log_pages: u32,
    /// Pages of one checkpoint copy, its header page included.
    pub checkpoint_pages: u32,
    /// Byte offset of partition 0 from the region's start.
    pub first_partition: u64,
    pub partition_stride: u64,
    pub region_len: u64,
}

fn log_pages_for(slots: u32) -> u32 {
    slots.div_ceil(256).clamp(32, 8192)
}

fn checkpoint_pages_for(slots: u32) -> u32 {
    1 + slots.div_ceil(ENTRIES_PER_PAGE as u32)
}

fn pages_needed(slots: u32) -> u64 {
    u64::from(slots) + u64::from(log_pages_for(slots)) + 2 * u64::from(checkpoint_pages_for(slots))
}

impl Geometry {
    /// The layout of a region of `len` bytes split into `partitions` partitions.
    pub fn for_region(len: u64, partitions: usize) -> Result<Geometry, String> {
        let page = PAGE as u64;
        if partitions == 0 || partitions > 64 {
            return Err(format!(
                "SSD cache: {partitions} partitions requested; give between 1 and 64 (one per controller)"
            ));
        }
        let parts = partitions as u64;
        let stride_pages = (len / page).saturating_sub(1) / parts;
        // Each slot costs a data page plus its share of log and checkpoints.
        let mut slots = (stride_pages * page / (page + 2 * ENTRY_BYTES as u64 + 16))
            .min(u64::from(u32::MAX - 1)) as u32;
        while slots > 0 && pages_needed(slots) > stride_pages {
            slots -= 1;
        }
        if slots < MIN_SLOTS {
            return Err(format!(
                "SSD cache: a region of {len} bytes holds too few 4 KiB slots for {partitions} partition(s) (at least {MIN_SLOTS} each plus their log and checkpoints); give the read cache a larger SSD region"
            ));
        }
        Ok(Geometry {
            partitions: partitions as u32,
            slots,
            shards: (slots / MIN_SLOTS).clamp(1, MAX_SHARDS),
            log_pages: log_pages_for(slots),
            checkpoint_pages: checkpoint_pages_for(slots),
            first_partition: page,
            partition_stride: stride_pages * page,
            region_len: len,
        })
    }

    fn partition_start(&self, partition: usize) -> u64 {
        self.first_partition + partition as u64 * self.partition_stride
    }

    /// Byte offset (from the region's start) of a data slot.
    pub fn slot_offset(&self, partition: usize, slot: u32) -> u64 {
        self.partition_start(partition) + u64::from(slot) * PAGE as u64
    }

    /// Byte offset of a page of the identity log.
    pub fn log_offset(&self, partition: usize, page: u32) -> u64 {
        self.slot_offset(partition, self.slots) + u64::from(page) * PAGE as u64
    }

    /// Byte offset of a page of checkpoint copy `copy` (0 or 1); page 0 is its header.
    pub fn checkpoint_offset(&self, partition: usize, copy: u32, page: u32) -> u64 {
        self.log_offset(partition, self.log_pages)
            + (u64::from(copy) * u64::from(self.checkpoint_pages) + u64::from(page)) * PAGE as u64
    }

    /// Slots of each shard (the last one takes the remainder).
    pub fn shard_span(&self) -> u32 {
        self.slots / self.shards
    }

    /// The first slot of shard `shard` and how many it owns.
    pub fn shard_range(&self, shard: u32) -> (u32, u32) {
        let span = self.shard_span();
        let first = shard * span;
        let len = if shard + 1 == self.shards {
            self.slots - first
        } else {
            span
        };
        (first, len)
    }

    /// The shard whose slots the key `phys` lives in.
    pub fn shard_of_key(&self, phys: u64) -> u32 {
        ((phys.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(self.shards)) as u32
    }

    /// The shard that owns `slot`.
    pub fn shard_of_slot(&self, slot: u32) -> u32 {
        (slot / self.shard_span()).min(self.shards - 1)
    }
}

fn put_u32(page: &mut [u8], at: usize, value: u32) {
    page[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(page: &mut [u8], at: usize, value: u64) {
    page[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(page: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&page[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn get_u64(page: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// CRC32C of `bytes` seeded with the instance id.
fn seeded_crc(instance: u64, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&instance.to_le_bytes()), bytes)
}

/// Writes the region header into `page` (one page).
pub(super) fn encode_header(geometry: &Geometry, instance: u64, page: &mut [u8]) {
    page.fill(0);
    page[..16].copy_from_slice(HEADER_MAGIC);
    put_u32(page, 16, FORMAT_VERSION);
    put_u32(page, 20, geometry.partitions);
    put_u32(page, 24, geometry.slots);
    put_u32(page, 28, geometry.shards);
    put_u32(page, 32, geometry.log_pages);
    put_u32(page, 36, geometry.checkpoint_pages);
    put_u64(page, 40, geometry.first_partition);
    put_u64(page, 48, geometry.partition_stride);
    put_u64(page, 56, geometry.region_len);
    put_u64(page, 64, instance);
    let crc = crc32c::crc32c(&page[..PAGE - 4]);
    put_u32(page, PAGE - 4, crc);
}

/// The instance id of a header that is intact and describes exactly `expected`.
pub(super) fn decode_header(page: &[u8], expected: &Geometry) -> Option<u64> {
    if page.len() < PAGE || get_u32(page, PAGE - 4) != crc32c::crc32c(&page[..PAGE - 4]) {
        return None;
    }
    if &page[..16] != HEADER_MAGIC || get_u32(page, 16) != FORMAT_VERSION {
        return None;
    }
    let found = Geometry {
        partitions: get_u32(page, 20),
        slots: get_u32(page, 24),
        shards: get_u32(page, 28),
        log_pages: get_u32(page, 32),
        checkpoint_pages: get_u32(page, 36),
        first_partition: get_u64(page, 40),
        partition_stride: get_u64(page, 48),
        region_len: get_u64(page, 56),
    };
    (found == *expected).then(|| get_u64(page, 64))
}

/// What a log record says about a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecordKind {
    /// The slot now holds `identity` (its data was written and synced first).
    Admit = 1,
    /// The slot no longer holds `identity.phys` (forgotten or failed verification); a
    /// record for a phys the slot no longer holds changes nothing.
    Clear = 2,
    /// The slot's key moved from `old` to `identity.phys`, data unchanged.
    Relocate = 3,
    /// The slot is about to be overwritten: whatever it held is gone.
    Reuse = 4,
}

/// One identity log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub kind: RecordKind,
    pub slot: u32,
    pub identity: BlockIdentity,
    /// For [`RecordKind::Relocate`]: the phys the slot held before.
    pub old: u64,
    pub epoch: u32,
    pub seq: u64,
}

impl Record {
    pub fn new(kind: RecordKind, slot: u32, identity: BlockIdentity) -> Record {
        Record {
            kind,
            slot,
            identity,
            old: NONE,
            epoch: 0,
            seq: 0,
        }
    }

    /// A record that names only a slot and a phys.
    pub fn bare(kind: RecordKind, slot: u32, phys: u64) -> Record {
        Record::new(kind, slot, empty_identity(phys))
    }

    pub fn encode(&self, instance: u64, out: &mut [u8]) {
        out[..RECORD_BYTES].fill(0);
        out[0] = self.kind as u8;
        put_u32(out, 4, self.slot);
        put_u64(out, 8, self.identity.phys);
        let aux = match self.kind {
            RecordKind::Relocate => self.old,
            _ => self.identity.lba,
        };
        put_u64(out, 16, aux);
        put_u64(out, 24, self.identity.generation);
        put_u64(out, 32, self.identity.checksum);
        put_u32(out, 40, self.identity.family);
        put_u32(out, 44, self.epoch);
        put_u64(out, 48, self.seq);
        put_u32(out, 56, RECORD_MAGIC);
        let crc = seeded_crc(instance, &out[..60]);
        put_u32(out, 60, crc);
    }

    /// The record in `bytes`, if it is intact and belongs to this instance.
    pub fn decode(instance: u64, bytes: &[u8]) -> Option<Record> {
        if get_u32(bytes, 56) != RECORD_MAGIC
            || get_u32(bytes, 60) != seeded_crc(instance, &bytes[..60])
        {
            return None;
        }
        let kind = match bytes[0] {
            1 => RecordKind::Admit,
            2 => RecordKind::Clear,
            3 => RecordKind::Relocate,
            4 => RecordKind::Reuse,
            _ => return None,
        };
        let aux = get_u64(bytes, 16);
        let relocate = kind == RecordKind::Relocate;
        Some(Record {
            kind,
            slot: get_u32(bytes, 4),
            identity: BlockIdentity {
                phys: get_u64(bytes, 8),
                family: get_u32(bytes, 40),
                lba: if relocate { 0 } else { aux },
                generation: get_u64(bytes, 24),
                checksum: get_u64(bytes, 32),
            },
            old: if relocate { aux } else { NONE },
            epoch: get_u32(bytes, 44),
            seq: get_u64(bytes, 48),
        })
    }

    /// Applies the record to the slot's entry.
    pub fn apply(&self, entry: &mut BlockIdentity) {
        match self.kind {
            RecordKind::Admit => *entry = self.identity,
            RecordKind::Clear if entry.phys == self.identity.phys => *entry = empty_identity(NONE),
            RecordKind::Clear => {}
            RecordKind::Relocate if entry.phys == self.old && entry.phys != NONE => {
                entry.phys = self.identity.phys
            }
            RecordKind::Relocate => {}
            RecordKind::Reuse => *entry = empty_identity(NONE),
        }
    }
}

/// An identity with only its phys set (an empty slot when `phys` is [`NONE`]).
pub(super) fn empty_identity(phys: u64) -> BlockIdentity {
    BlockIdentity {
        phys,
        family: 0,
        lba: 0,
        generation: 0,
        checksum: 0,
    }
}

pub(super) fn encode_entry(entry: &BlockIdentity, out: &mut [u8]) {
    put_u64(out, 0, entry.phys);
    put_u64(out, 8, entry.lba);
    put_u64(out, 16, entry.generation);
    put_u64(out, 24, entry.checksum);
    put_u32(out, 32, entry.family);
    put_u32(out, 36, 0);
}

pub(super) fn decode_entry(bytes: &[u8]) -> BlockIdentity {
    BlockIdentity {
        phys: get_u64(bytes, 0),
        lba: get_u64(bytes, 8),
        generation: get_u64(bytes, 16),
        checksum: get_u64(bytes, 24),
        family: get_u32(bytes, 32),
    }
}

/// A checkpoint copy's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CheckpointHeader {
    pub epoch: u32,
    pub slots: u32,
    /// CRC32C (seeded with the instance) of the entry pages written, in order.
    pub entries_crc: u32,
    /// Per index shard: slots ever handed out (the entries below them are in the copy).
    pub marks: Vec<u32>,
}

/// Where the marks start in a checkpoint header (their count is the u32 before).
const MARKS_AT: usize = 40;

pub(super) fn encode_checkpoint_header(header: &CheckpointHeader, instance: u64, page: &mut [u8]) {
    page[..PAGE].fill(0);
    page[..16].copy_from_slice(CHECKPOINT_MAGIC);
    put_u64(page, 16, instance);
    put_u32(page, 24, header.epoch);
    put_u32(page, 28, header.slots);
    put_u32(page, 32, header.entries_crc);
    debug_assert!(
        header.marks.len() <= MAX_SHARDS as usize,
        "one mark per shard"
    );
    let marks = &header.marks[..header.marks.len().min(MAX_SHARDS as usize)];
    put_u32(page, MARKS_AT - 4, marks.len() as u32);
    for (index, mark) in marks.iter().enumerate() {
        put_u32(page, MARKS_AT + 4 * index, *mark);
    }
    let crc = seeded_crc(instance, &page[..PAGE - 4]);
    put_u32(page, PAGE - 4, crc);
}

pub(super) fn decode_checkpoint_header(page: &[u8], instance: u64) -> Option<CheckpointHeader> {
    let intact = get_u32(page, PAGE - 4) == seeded_crc(instance, &page[..PAGE - 4])
        && &page[..16] == CHECKPOINT_MAGIC
        && get_u64(page, 16) == instance;
    let count = get_u32(page, MARKS_AT - 4);
    if !intact || count > MAX_SHARDS {
        return None;
    }
    Some(CheckpointHeader {
        epoch: get_u32(page, 24),
        slots: get_u32(page, 28),
        entries_crc: get_u32(page, 32),
        marks: (0..count as usize)
            .map(|index| get_u32(page, MARKS_AT + 4 * index))
            .collect(),
    })
}

/// Starts the running CRC of a checkpoint's entry pages.
pub(super) fn entries_crc_start(instance: u64) -> u32 {
    seeded_crc(instance, &[])
}
