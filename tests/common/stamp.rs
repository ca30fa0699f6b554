//! Stamped 4 KiB blocks: each block names the volume it was written to (a tag), its block
//! number and a version, fills the rest from them, and ends with a checksum, so a read
//! tells which write a block holds, or that it is torn, misplaced or foreign.
//!
//! Included with `#[path = "common/stamp.rs"] mod stamp;` so `common/mod.rs` stays as is.
#![allow(dead_code)]

use std::io;

use super::common::nbd_client::NbdClient;

pub const BLOCK: usize = 4096;
const MAGIC: u32 = 0x534e_4150; // "SNAP"
const SUM_AT: usize = BLOCK - 8;

/// A checksum of whole 8-byte words (cheap enough to check every block of a volume).
fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .fold(0x9E37_79B9_7F4A_7C15, |hash, word| {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            (hash ^ word).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
        })
}

/// The bytes of block `lba` of the volume tagged `tag` at `version` (never 0: version 0
/// is a block never written, all zeroes).
pub fn stamp(tag: u32, lba: u64, version: u64, out: &mut [u8]) {
    let out = &mut out[..BLOCK];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&tag.to_le_bytes());
    out[8..16].copy_from_slice(&lba.to_le_bytes());
    out[16..24].copy_from_slice(&version.to_le_bytes());
    let mut state = (lba.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ version ^ u64::from(tag) << 40) | 1;
    for word in out[24..SUM_AT].chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
    let sum = checksum(&out[..SUM_AT]);
    out[SUM_AT..].copy_from_slice(&sum.to_le_bytes());
}

/// The version block `lba` of the volume tagged `tag` holds (0: all zeroes), or why the
/// bytes are not one of its versions.
pub fn version_of(tag: u32, lba: u64, bytes: &[u8]) -> Result<u64, String> {
    let bytes = &bytes[..BLOCK];
    if bytes.iter().all(|&byte| byte == 0) {
        return Ok(0);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != MAGIC || checksum(&bytes[..SUM_AT]) != word(SUM_AT) {
        let prefix: String = bytes[..24].iter().map(|b| format!("{b:02x}")).collect();
        return Err(format!("torn or foreign bytes (starting {prefix})"));
    }
    let found_tag = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let (found_lba, version) = (word(8), word(16));
    if found_tag != tag || found_lba != lba {
        return Err(format!(
            "block {found_lba} of volume tag {found_tag} (version {version}) where block {lba} \
             of tag {tag} belongs"
        ));
    }
    Ok(version)
}

/// Reads `count` blocks from `first` and returns the version of each, in order; the first
/// block that is not a version of its own is an error.
pub fn read_versions(
    client: &mut NbdClient,
    tag: u32,
    first: u64,
    count: u64,
) -> io::Result<Result<Vec<u64>, String>> {
    const CHUNK_BLOCKS: u64 = 256;
    let mut versions = Vec::with_capacity(count as usize);
    let mut buf = vec![0u8; CHUNK_BLOCKS as usize * BLOCK];
    let mut lba = first;
    while lba < first + count {
        let blocks = CHUNK_BLOCKS.min(first + count - lba);
        let bytes = &mut buf[..blocks as usize * BLOCK];
        client.read(lba * BLOCK as u64, bytes)?;
        for (index, block) in bytes.chunks_exact(BLOCK).enumerate() {
            let block_lba = lba + index as u64;
            match version_of(tag, block_lba, block) {
                Ok(version) => versions.push(version),
                Err(why) => return Ok(Err(format!("block {block_lba}: {why}"))),
            }
        }
        lba += blocks;
    }
    Ok(Ok(versions))
}
