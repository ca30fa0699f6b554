//! Block identity and checksums, and the row summary block that records them on media.
//!
//! Every user block is checksummed with xxh3 seeded by its identity (volume and logical
//! block), so a block that is bit-rotten, stale (a lost write) or misdirected (written
//! where another block belongs) fails verification against the map entry that expects it.
//!
//! Summary block layout (4 KiB, the last slot of each row, little-endian):
//! `magic u64 | row u64 | entries u32 | pad u32 | xxh3 of the rest u64 |` then per slot
//! `volume u32 | pad u32 | lba u64 | generation u64 | checksum u64` (32 bytes). An empty
//! slot has volume `u32::MAX`.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::types::{BLOCK_SIZE, Lba, VolumeId};

const SUMMARY_MAGIC: u64 = 0x5452_4f49_4b41_5355; // "TROIKASU"
const HEADER_LEN: usize = 32;
const ENTRY_LEN: usize = 32;
/// Volume number marking an unused slot.
pub const EMPTY_SLOT: u32 = u32::MAX;

/// The checksum a block must match: xxh3 of its bytes seeded with its identity.
pub fn block_checksum(volume: VolumeId, lba: Lba, data: &[u8]) -> u64 {
    xxh3_64_with_seed(data, identity_seed(volume, lba))
}

fn identity_seed(volume: VolumeId, lba: Lba) -> u64 {
    (u64::from(volume.0) << 44) ^ lba ^ 0x9E37_79B9_7F4A_7C15
}

/// What the summary says about one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotIdentity {
    pub volume: u32,
    pub lba: Lba,
    pub generation: u64,
    pub checksum: u64,
}

impl SlotIdentity {
    pub const EMPTY: SlotIdentity = SlotIdentity {
        volume: EMPTY_SLOT,
        lba: 0,
        generation: 0,
        checksum: 0,
    };
}

/// Largest number of slots a summary can describe (the row limit the hardware model checks,
/// [`crate::types::MAX_ROW_DATA_BLOCKS`]).
pub const MAX_SUMMARY_ENTRIES: usize = crate::types::MAX_ROW_DATA_BLOCKS;
const _: () = assert!(MAX_SUMMARY_ENTRIES <= (BLOCK_SIZE - HEADER_LEN) / ENTRY_LEN);

/// Writes the summary of `row` into `block` (one 4 KiB block).
pub fn encode_summary(row: u64, entries: &[SlotIdentity], block: &mut [u8]) {
    assert!(
        entries.len() <= MAX_SUMMARY_ENTRIES,
        "row has more slots than a summary holds"
    );
    block.fill(0);
    block[0..8].copy_from_slice(&SUMMARY_MAGIC.to_le_bytes());
    block[8..16].copy_from_slice(&row.to_le_bytes());
    block[16..20].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (index, entry) in entries.iter().enumerate() {
        let at = HEADER_LEN + index * ENTRY_LEN;
        block[at..at + 4].copy_from_slice(&entry.volume.to_le_bytes());
        block[at + 8..at + 16].copy_from_slice(&entry.lba.to_le_bytes());
        block[at + 16..at + 24].copy_from_slice(&entry.generation.to_le_bytes());
        block[at + 24..at + 32].copy_from_slice(&entry.checksum.to_le_bytes());
    }
    let sum = xxh3_64(&block[HEADER_LEN..]);
    block[24..32].copy_from_slice(&sum.to_le_bytes());
}

/// Reads a summary block; `None` when it is not a valid summary of `row`.
pub fn decode_summary(row: u64, block: &[u8], out: &mut Vec<SlotIdentity>) -> Option<()> {
    out.clear();
    if block.len() != BLOCK_SIZE || read_u64(block, 0) != SUMMARY_MAGIC || read_u64(block, 8) != row
    {
        return None;
    }
    if read_u64(block, 24) != xxh3_64(&block[HEADER_LEN..]) {
        return None;
    }
    let count = u32::from_le_bytes(block[16..20].try_into().ok()?) as usize;
    if count > MAX_SUMMARY_ENTRIES {
        return None;
    }
    for index in 0..count {
        let at = HEADER_LEN + index * ENTRY_LEN;
        out.push(SlotIdentity {
            volume: u32::from_le_bytes(block[at..at + 4].try_into().ok()?),
            lba: read_u64(block, at + 8),
            generation: read_u64(block, at + 16),
            checksum: read_u64(block, at + 24),
        });
    }
    Some(())
}

fn read_u64(block: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(block[at..at + 8].try_into().expect("8-byte field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_round_trip_and_reject_damage() {
        let entries: Vec<SlotIdentity> = (0..63)
            .map(|i| SlotIdentity {
                volume: i as u32 % 3,
                lba: i * 17,
                generation: i + 100,
                checksum: i * 31,
            })
            .collect();
        let mut block = vec![0u8; BLOCK_SIZE];
        encode_summary(9, &entries, &mut block);
        let mut out = Vec::new();
        decode_summary(9, &block, &mut out).unwrap();
        assert_eq!(out, entries);
        assert!(
            decode_summary(10, &block, &mut out).is_none(),
            "wrong row accepted"
        );
        block[100] ^= 1;
        assert!(
            decode_summary(9, &block, &mut out).is_none(),
            "bit flip accepted"
        );
    }

    #[test]
    fn checksums_bind_identity() {
        let data = vec![7u8; BLOCK_SIZE];
        let here = block_checksum(VolumeId(1), 5, &data);
        assert_ne!(here, block_checksum(VolumeId(1), 6, &data));
        assert_ne!(here, block_checksum(VolumeId(2), 5, &data));
        let mut flipped = data.clone();
        flipped[0] ^= 0x80;
        assert_ne!(here, block_checksum(VolumeId(1), 5, &flipped));
    }
}
