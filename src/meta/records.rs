//! Journal record bodies: how each kind of change is laid out in the log (little-endian).
//!
//! | kind | body |
//! |---|---|
//! | `CATALOG` 1 | JSON of a [`CatalogOp`], secrets sealed under the node key (see [`crate::secrets`]) |
//! | `MAP_SET` 2 | volume u32, count u32, then per block: lba u64, phys u64, checksum u64, generation u64 |
//! | `TRIM` 3 | volume u32, pad u32, start lba u64, end lba u64, generation u64 |
//! | `VAULT` 4 | count u32, pad u32, then per block: volume u32, pad u32, lba u64, generation u64; then the blocks' 4 KiB data in the same order |
//! | `RELOCATE` 5 | family u32, pad u32, lba u64, old phys u64, new phys u64: the cleaner moved a block; every map of the family naming `old` at `lba` (or at an address it was shared to) now names `new` |
//! | `SHARE` 6 | volume u32, count u32, then per block: lba u64, home lba u64, phys u64, checksum u64, generation u64: a copy by reference; each `lba` now also refers to `phys`, which the same family already refers to at `home` |

use std::sync::Arc;

use super::catalog::CatalogOp;
use super::forest::MapEntry;
use crate::secrets::{self, NodeKey};
use crate::types::{BLOCK_SIZE, Lba};

pub const CATALOG: u8 = 1;
pub const MAP_SET: u8 = 2;
pub const TRIM: u8 = 3;
pub const VAULT: u8 = 4;
pub const RELOCATE: u8 = 5;
pub const SHARE: u8 = 6;

/// Most blocks in one VAULT record (keeps a record well under a batch).
pub const VAULT_BLOCKS_PER_RECORD: usize = 256;

/// A decoded record.
pub enum Record<'a> {
    Catalog(CatalogOp),
    MapSet {
        volume: u32,
        entries: Vec<(Lba, MapEntry)>,
    },
    Trim {
        volume: u32,
        start: Lba,
        end: Lba,
        generation: u64,
    },
    Vault {
        blocks: Vec<(u32, Lba, u64)>,
        data: &'a [u8],
    },
    Relocate {
        family: u32,
        lba: Lba,
        old: u64,
        new: u64,
    },
    Share {
        volume: u32,
        blocks: Vec<SharedBlock>,
    },
}

/// One block of a copy by reference: `lba` takes `entry`, whose block the family
/// already refers to at `home`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedBlock {
    pub lba: Lba,
    pub home: Lba,
    pub entry: MapEntry,
}

pub fn encode_share(volume: u32, blocks: &[SharedBlock], out: &mut Vec<u8>) {
    out.extend_from_slice(&volume.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for block in blocks {
        out.extend_from_slice(&block.lba.to_le_bytes());
        out.extend_from_slice(&block.home.to_le_bytes());
        push_entry(&block.entry, out);
    }
}

pub fn encode_relocate(family: u32, lba: Lba, old: u64, new: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&family.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&lba.to_le_bytes());
    out.extend_from_slice(&old.to_le_bytes());
    out.extend_from_slice(&new.to_le_bytes());
}

/// The body of a `CATALOG` record: `op` as JSON with its secrets sealed under `key`. Fails
/// only when a secret cannot be sealed (the OS random source failed).
pub fn encode_catalog(op: &CatalogOp, key: &Arc<NodeKey>) -> Result<Vec<u8>, serde_json::Error> {
    secrets::with_key(key, || serde_json::to_vec(op))
}

pub fn encode_map_set(volume: u32, entries: &[(Lba, MapEntry)], out: &mut Vec<u8>) {
    out.extend_from_slice(&volume.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (lba, entry) in entries {
        out.extend_from_slice(&lba.to_le_bytes());
        push_entry(entry, out);
    }
}

/// A map entry as 24 bytes: phys u64, checksum u64, generation u64.
fn push_entry(entry: &MapEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.phys.to_le_bytes());
    out.extend_from_slice(&entry.checksum.to_le_bytes());
    out.extend_from_slice(&entry.generation.to_le_bytes());
}

/// The map entry [`push_entry`] wrote at `at`.
fn entry_at(body: &[u8], at: usize) -> Option<MapEntry> {
    Some(MapEntry {
        phys: u64_at(body, at)?,
        checksum: u64_at(body, at + 8)?,
        generation: u64_at(body, at + 16)?,
    })
}

pub fn encode_trim(volume: u32, start: Lba, end: Lba, generation: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&volume.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&end.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
}

/// Encodes a VAULT record header; the caller appends the data of each block in order.
pub fn encode_vault_header(blocks: &[(u32, Lba, u64)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (volume, lba, generation) in blocks {
        out.extend_from_slice(&volume.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&lba.to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
    }
}

fn u32_at(body: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(body: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes a record; `None` when the body does not fit its kind (a journal batch's
/// checksum already passed, so this means a bug or an unknown kind, and replay stops).
/// `key` opens the secrets a catalog record carries.
pub fn decode<'a>(kind: u8, body: &'a [u8], key: &Arc<NodeKey>) -> Option<Record<'a>> {
    match kind {
        CATALOG => secrets::with_key(key, || serde_json::from_slice(body))
            .ok()
            .map(Record::Catalog),
        MAP_SET => {
            let volume = u32_at(body, 0)?;
            let count = u32_at(body, 4)? as usize;
            if body.len() != 8 + count * 32 {
                return None;
            }
            let entries = (0..count)
                .map(|i| {
                    let at = 8 + i * 32;
                    Some((u64_at(body, at)?, entry_at(body, at + 8)?))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Record::MapSet { volume, entries })
        }
        SHARE => {
            let volume = u32_at(body, 0)?;
            let count = u32_at(body, 4)? as usize;
            if body.len() != 8 + count * 40 {
                return None;
            }
            let blocks = (0..count)
                .map(|i| {
                    let at = 8 + i * 40;
                    Some(SharedBlock {
                        lba: u64_at(body, at)?,
                        home: u64_at(body, at + 8)?,
                        entry: entry_at(body, at + 16)?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Record::Share { volume, blocks })
        }
        RELOCATE if body.len() == 32 => Some(Record::Relocate {
            family: u32_at(body, 0)?,
            lba: u64_at(body, 8)?,
            old: u64_at(body, 16)?,
            new: u64_at(body, 24)?,
        }),
        TRIM => Some(Record::Trim {
            volume: u32_at(body, 0)?,
            start: u64_at(body, 8)?,
            end: u64_at(body, 16)?,
            generation: u64_at(body, 24)?,
        }),
        VAULT => {
            let count = u32_at(body, 0)? as usize;
            let header = 8 + count * 24;
            if body.len() != header + count * BLOCK_SIZE {
                return None;
            }
            let blocks = (0..count)
                .map(|i| {
                    let at = 8 + i * 24;
                    Some((
                        u32_at(body, at)?,
                        u64_at(body, at + 8)?,
                        u64_at(body, at + 16)?,
                    ))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Record::Vault {
                blocks,
                data: &body[header..],
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let key = Arc::new(NodeKey::from_bytes([1; 32]));
        let entries = vec![(
            5,
            MapEntry {
                phys: 9,
                checksum: 3,
                generation: 4,
            },
        )];
        let mut body = Vec::new();
        encode_map_set(2, &entries, &mut body);
        match decode(MAP_SET, &body, &key) {
            Some(Record::MapSet {
                volume: 2,
                entries: got,
            }) => assert_eq!(got, entries),
            _ => panic!("map set did not round-trip"),
        }
        body.clear();
        encode_vault_header(&[(1, 2, 3)], &mut body);
        body.extend_from_slice(&[9u8; BLOCK_SIZE]);
        match decode(VAULT, &body, &key) {
            Some(Record::Vault { blocks, data }) => {
                assert_eq!(blocks, vec![(1, 2, 3)]);
                assert_eq!(data, &[9u8; BLOCK_SIZE][..]);
            }
            _ => panic!("vault did not round-trip"),
        }
        assert!(decode(VAULT, &body[..body.len() - 1], &key).is_none());
        assert!(decode(99, &body, &key).is_none());
    }
}
