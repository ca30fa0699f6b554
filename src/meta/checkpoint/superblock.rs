//! The superblock page and the layout of the vault device it records (see the parent
//! module doc for where both sit and how they are ping-ponged).
//!
//! Page: little-endian `u64` fields in this order, zeros, then the xxh3 of everything
//! before the last 8 bytes in those 8 bytes: `magic | version | sequence | serial |
//! data_devices | unit | rows_per_segment | rows | checkpoint_slot_len | log_start |
//! log_len | checkpoint_slot | checkpoint_len | checkpoint_sum | checkpoint_lsn |
//! replay_from | key_id | drives | spare | placement | seed` (`placement` 0 = straight,
//! 1 = declustered from `seed`).
//!
//! Format versions: 1 kept secrets plain and had no `key_id`; 2 sealed them and recorded
//! the key's fingerprint; 3 (written now) also records the placement of rows on the
//! drives. Versions 1 and 2 were written by builds that knew only the straight layout, so
//! they read as straight over `data_devices + 2` drives with no spare.

use std::fmt;
use std::io;

use xxhash_rust::xxh3::xxh3_64;

use super::{ENTRY_LEN, PAGE};
use crate::io::{AlignedBuf, Device, IoRing};
use crate::layout::{Geometry, Placement, PlacementKind};

const SUPER_MAGIC: u64 = 0x5452_4f49_4b41_5342; // "TROIKASB"
/// Written now: the placement recorded.
const FORMAT_VERSION: u64 = 3;
/// Secrets sealed, the key's fingerprint recorded, no placement (straight); still read.
const FORMAT_VERSION_SEALED: u64 = 2;
/// Secrets plain, no key fingerprint, no placement (straight); still read.
pub(super) const FORMAT_VERSION_PLAIN_SECRETS: u64 = 1;
/// Room kept for the catalog in a checkpoint slot.
const CATALOG_RESERVE: u64 = 8 << 20;
/// Largest share of the vault SSD one checkpoint slot may take (two slots: a quarter).
const SLOT_SHARE_OF_SSD: u64 = 8;
const MIB: u64 = 1 << 20;
/// The smallest journal a vault may have.
const MIN_JOURNAL: u64 = 32 << 20;

/// Where things are on the vault device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdLayout {
    pub checkpoint_slot_len: u64,
    pub log_start: u64,
    pub log_len: u64,
}

impl SsdLayout {
    /// Lays out a vault device of `ssd_size` bytes for an array of `data_blocks` blocks.
    ///
    /// A checkpoint slot gets room for the catalog plus 36 bytes per data block (the flat
    /// map of every block, the most a checkpoint of unshared maps can take) when both
    /// slots and a 32 MiB journal fit the SSD that way: the layout earlier builds made.
    /// Otherwise (a petabyte array would want slots of terabytes) a slot is capped at an
    /// eighth of the SSD; it holds the maps of what was written as long as they fit, and a
    /// checkpoint that outgrows it says so (see `build_checkpoint`).
    pub fn plan(ssd_size: u64, data_blocks: u64) -> Result<SsdLayout, String> {
        let wanted = data_blocks
            .saturating_mul(ENTRY_LEN as u64)
            .saturating_add(CATALOG_RESERVE + PAGE)
            .div_ceil(MIB)
            .saturating_mul(MIB);
        let uncapped_fits = wanted
            .checked_mul(2)
            .and_then(|slots| slots.checked_add(2 * PAGE + MIN_JOURNAL))
            .is_some_and(|needed| needed <= ssd_size);
        let share = ssd_size / SLOT_SHARE_OF_SSD / MIB * MIB;
        let slot = if uncapped_fits {
            wanted
        } else {
            wanted.min(share.max(CATALOG_RESERVE + MIB))
        };
        let log_start = 2 * PAGE + 2 * slot;
        let log_len = ssd_size.saturating_sub(log_start) / PAGE * PAGE;
        if log_len < MIN_JOURNAL {
            return Err(format!(
                "the vault SSD of {ssd_size} bytes is too small: checkpoints need 2 x {slot} bytes and the journal at least 32 MiB; give it at least {} bytes",
                log_start + (32 << 20)
            ));
        }
        Ok(SsdLayout {
            checkpoint_slot_len: slot,
            log_start,
            log_len,
        })
    }

    pub(super) fn checkpoint_offset(&self, slot: u32) -> u64 {
        2 * PAGE + u64::from(slot) * self.checkpoint_slot_len
    }
}

/// How rows were laid over the drives when the array was formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedPlacement {
    pub drives: u64,
    pub spare: u64,
    pub kind: PlacementKind,
}

impl RecordedPlacement {
    /// What `placement` would be recorded as.
    pub fn of(placement: &Placement) -> RecordedPlacement {
        RecordedPlacement {
            drives: placement.drives() as u64,
            spare: placement.spare() as u64,
            kind: placement.kind(),
        }
    }

    /// The placement of superblocks older than format 3.
    fn straight(data_devices: u64) -> RecordedPlacement {
        RecordedPlacement {
            drives: data_devices.saturating_add(2),
            spare: 0,
            kind: PlacementKind::Straight,
        }
    }

    fn encode(&self) -> [u64; 4] {
        match self.kind {
            PlacementKind::Straight => [self.drives, self.spare, 0, 0],
            PlacementKind::Declustered { seed } => [self.drives, self.spare, 1, seed],
        }
    }

    fn decode(fields: [u64; 4]) -> Option<RecordedPlacement> {
        let kind = match fields[2] {
            0 => PlacementKind::Straight,
            1 => PlacementKind::Declustered { seed: fields[3] },
            _ => return None,
        };
        Some(RecordedPlacement {
            drives: fields[0],
            spare: fields[1],
            kind,
        })
    }
}

impl fmt::Display for RecordedPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PlacementKind::Straight => write!(f, "the straight layout over {} drives", self.drives),
            PlacementKind::Declustered { seed } => write!(
                f,
                "declustered rows over {} drives with {} drives' worth of spare (seed {seed:#x})",
                self.drives, self.spare
            ),
        }
    }
}

/// The contents of a superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub sequence: u64,
    pub serial: u64,
    pub data_devices: u64,
    pub unit: u64,
    pub rows_per_segment: u64,
    pub rows: u64,
    pub layout: SsdLayout,
    pub checkpoint_slot: u32,
    pub checkpoint_len: u64,
    pub checkpoint_sum: u64,
    /// The journal LSN the checkpoint reflects.
    pub checkpoint_lsn: u64,
    /// Replay starts here (at or before `checkpoint_lsn`: vault records of data still dirty).
    pub replay_from: u64,
    /// The fingerprint ([`crate::secrets::NodeKey::id`]) of the key that seals this node's
    /// secrets; `None` in a superblock of format 1, whose secrets are plain.
    pub key_id: Option<u64>,
    /// How rows lie on the drives (straight in superblocks of formats 1 and 2).
    pub placement: RecordedPlacement,
}

impl Superblock {
    /// The geometry this node was formatted with.
    pub fn matches(&self, geometry: &Geometry) -> bool {
        self.data_devices == geometry.data as u64
            && self.unit == geometry.unit
            && self.rows_per_segment == geometry.rows_per_segment
            && self.rows == geometry.rows
    }

    pub(super) fn encode(&self, page: &mut [u8]) {
        page.fill(0);
        let head = [
            SUPER_MAGIC,
            FORMAT_VERSION,
            self.sequence,
            self.serial,
            self.data_devices,
            self.unit,
            self.rows_per_segment,
            self.rows,
            self.layout.checkpoint_slot_len,
            self.layout.log_start,
            self.layout.log_len,
            u64::from(self.checkpoint_slot),
            self.checkpoint_len,
            self.checkpoint_sum,
            self.checkpoint_lsn,
            self.replay_from,
            self.key_id
                .expect("a superblock is written with the node key's fingerprint"),
        ];
        let placement = self.placement.encode();
        let fields = head.iter().chain(placement.iter());
        for (index, value) in fields.enumerate() {
            page[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        let sum = xxh3_64(&page[..PAGE as usize - 8]);
        page[PAGE as usize - 8..].copy_from_slice(&sum.to_le_bytes());
    }

    /// The superblock in a slot's page, `None` unless `page` is one page holding a valid
    /// superblock.
    pub fn decode(page: &[u8]) -> Option<Superblock> {
        if page.len() != PAGE as usize {
            return None;
        }
        let field = |index: usize| {
            u64::from_le_bytes(page[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
        };
        let sum = u64::from_le_bytes(page[PAGE as usize - 8..].try_into().expect("8 bytes"));
        let version = field(1);
        if field(0) != SUPER_MAGIC
            || !(FORMAT_VERSION_PLAIN_SECRETS..=FORMAT_VERSION).contains(&version)
            || sum != xxh3_64(&page[..PAGE as usize - 8])
        {
            return None;
        }
        let placement = if version == FORMAT_VERSION {
            RecordedPlacement::decode([field(17), field(18), field(19), field(20)])?
        } else {
            RecordedPlacement::straight(field(4))
        };
        Some(Superblock {
            sequence: field(2),
            serial: field(3),
            data_devices: field(4),
            unit: field(5),
            rows_per_segment: field(6),
            rows: field(7),
            layout: SsdLayout {
                checkpoint_slot_len: field(8),
                log_start: field(9),
                log_len: field(10),
            },
            checkpoint_slot: u32::try_from(field(11)).ok().filter(|slot| *slot < 2)?,
            checkpoint_len: field(12),
            checkpoint_sum: field(13),
            checkpoint_lsn: field(14),
            replay_from: field(15),
            key_id: (version >= FORMAT_VERSION_SEALED).then(|| field(16)),
            placement,
        })
    }
}

/// What the vault device's superblock slots hold.
pub enum SuperblockState {
    /// Neither slot has ever been written: a new node.
    Blank,
    /// The newest valid superblock.
    Found(Superblock),
    /// Something is there but no slot is valid.
    Unreadable,
}

/// Reads both superblock slots.
pub fn read_superblock(ring: &mut IoRing, ssd: &Device) -> io::Result<SuperblockState> {
    let mut page = AlignedBuf::new(2 * PAGE as usize);
    ring.read_at(ssd, 0, &mut page)?;
    let slots = [
        Superblock::decode(&page[..PAGE as usize]),
        Superblock::decode(&page[PAGE as usize..]),
    ];
    if let Some(best) = slots.iter().flatten().max_by_key(|sb| sb.sequence) {
        return Ok(SuperblockState::Found(*best));
    }
    if page.iter().all(|&byte| byte == 0) {
        Ok(SuperblockState::Blank)
    } else {
        Ok(SuperblockState::Unreadable)
    }
}

/// Writes `superblock` to the slot its sequence number selects and syncs.
pub fn write_superblock(
    ring: &mut IoRing,
    ssd: &Device,
    superblock: &Superblock,
) -> io::Result<()> {
    let mut page = AlignedBuf::new(PAGE as usize);
    superblock.encode(&mut page);
    ring.write_at(ssd, (superblock.sequence % 2) * PAGE, &page)?;
    ring.sync(ssd)
}

#[cfg(test)]
#[path = "superblock_tests.rs"]
mod tests;
