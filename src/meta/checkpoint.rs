//! Superblocks and checkpoints on the SSD vault device.
//!
//! ## Layout of the vault device
//!
//! ```text
//! [0, 4K)        superblock slot 0
//! [4K, 8K)       superblock slot 1
//! [8K, 8K+C)     checkpoint slot 0
//! [8K+C, 8K+2C)  checkpoint slot 1
//! [8K+2C, end)   journal region (see `journal`)
//! ```
//!
//! A superblock names the node, the array geometry it was formatted with, the layout above,
//! the checkpoint slot in use with its length and checksum, the LSN the checkpoint reflects,
//! the LSN replay must start from and the fingerprint of the node key that seals the
//! secrets in the catalog and in catalog journal records ([`crate::secrets`]).
//!
//! Format versions (see `superblock` for the page): 1 kept secrets plain; 2 seals them and
//! records the key's fingerprint; 3 (written now) also records the placement of rows on
//! the drives (drive count, spare, straight or declustered with its seed). Older
//! superblocks still load: their placement is the straight layout, the only one their
//! builds knew; a version-1 vault's plain secrets are read as they are, and the store writes
//! a sealed checkpoint with a current superblock at once. Builds that know only older
//! versions find no valid superblock in a newer vault and refuse to start, rather than
//! misread it. Both slots are ping-ponged: a new checkpoint goes to
//! the slot not in use and is synced, then a superblock with a higher sequence number goes
//! to the superblock slot not in use and is synced. A crash at any point leaves the older
//! pair intact, and start-up takes the valid superblock with the highest sequence number.
//!
//! Checkpoint body: `magic u64 | lsn u64 | generation u64 | catalog_len u64 | maps_len u64 |
//! pad to 64`, then the catalog as JSON, then the forest of maps (see `forest::codec`).
//! Checkpoints of the first format (magic `TROIKACP`: per map entry `volume u32 | lba u64 |
//! phys u64 | checksum u64 | generation u64`, 36 bytes) still load.

use std::io;

use xxhash_rust::xxh3::xxh3_64;

use std::sync::Arc;

use super::catalog::Catalog;
use super::forest::{self, Forest, MapEntry};
#[cfg(test)]
use superblock::FORMAT_VERSION_PLAIN_SECRETS;
pub use superblock::{
    RecordedPlacement, SsdLayout, Superblock, SuperblockState, read_superblock, write_superblock,
};

mod superblock;
use crate::io::{AlignedBuf, Device, IoRing};
use crate::secrets::{self, NodeKey};
use crate::types::BLOCK_SIZE;

/// The first format: a flat list of map entries.
const CHECKPOINT_MAGIC: u64 = 0x5452_4f49_4b41_4350; // "TROIKACP"
/// The second format: the forest of shared maps.
const CHECKPOINT_MAGIC_FOREST: u64 = 0x5452_4f49_4b41_4346; // "TROIKACF"
/// The current format: the forest with the aliases of blocks copied by reference.
const CHECKPOINT_MAGIC_ALIASES: u64 = 0x5452_4f49_4b41_4341; // "TROIKACA"
const PAGE: u64 = 4096;
const ENTRY_LEN: usize = 36;

/// A serialized checkpoint ready to be written.
pub struct CheckpointImage {
    pub buffer: AlignedBuf,
    pub len: u64,
    pub sum: u64,
}

/// Serializes the catalog (its secrets sealed under `key`) and the forest of maps.
pub fn build_checkpoint(
    lsn: u64,
    generation: u64,
    catalog: &Catalog,
    forest: &Forest,
    slot_len: u64,
    key: &Arc<NodeKey>,
) -> io::Result<CheckpointImage> {
    let catalog_json =
        secrets::with_key(key, || serde_json::to_vec(catalog)).map_err(io::Error::other)?;
    let mut maps = Vec::new();
    forest.encode(&mut maps);
    let len = 64 + catalog_json.len() as u64 + maps.len() as u64;
    if len > slot_len {
        return Err(io::Error::other(format!(
            "checkpoint of {len} bytes does not fit its slot of {slot_len} bytes: the maps of {} datasets share too little; delete snapshots or volumes that are no longer needed (a vault SSD too small for the map of every block gets slots of an eighth of its size: a node formatted with a larger vault SSD has more room)",
            catalog.volumes.len()
        )));
    }
    let mut buffer = AlignedBuf::new((len.div_ceil(PAGE) * PAGE) as usize);
    let header = [
        CHECKPOINT_MAGIC_ALIASES,
        lsn,
        generation,
        catalog_json.len() as u64,
        maps.len() as u64,
    ];
    for (index, value) in header.iter().enumerate() {
        buffer[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    let mut at = 64;
    buffer[at..at + catalog_json.len()].copy_from_slice(&catalog_json);
    at += catalog_json.len();
    buffer[at..at + maps.len()].copy_from_slice(&maps);
    let sum = xxh3_64(&buffer[..len as usize]);
    Ok(CheckpointImage { buffer, len, sum })
}

/// Writes a checkpoint image into `slot` and syncs.
pub fn write_checkpoint(
    ring: &mut IoRing,
    ssd: &Device,
    layout: &SsdLayout,
    slot: u32,
    image: &CheckpointImage,
) -> io::Result<()> {
    ring.write_at(ssd, layout.checkpoint_offset(slot), &image.buffer)?;
    ring.sync(ssd)
}

/// Turns the vault's newest checkpoint and superblock into format 1, as builds before
/// sealing wrote them: every host's CHAP secrets plain in the catalog, no key fingerprint.
/// Only for tests of the migration.
#[cfg(test)]
pub(crate) fn rewrite_as_plain_format(ssd: &Device, key: &Arc<NodeKey>) {
    let mut ring = IoRing::new(4).unwrap();
    let SuperblockState::Found(mut superblock) = read_superblock(&mut ring, ssd).unwrap() else {
        panic!("no superblock to rewrite");
    };
    let loaded = read_checkpoint(&mut ring, ssd, &superblock, key).unwrap();
    let mut catalog = secrets::with_key(key, || serde_json::to_value(&loaded.catalog)).unwrap();
    for (id, host) in &loaded.catalog.hosts {
        let chap = &mut catalog["hosts"][id.to_string()]["chap"];
        chap["inbound_secret"] = host.chap.inbound_secret.clone().into();
        chap["outbound_secret"] = host.chap.outbound_secret.clone().into();
    }
    let catalog_json = serde_json::to_vec(&catalog).unwrap();
    let mut maps = Vec::new();
    loaded.forest.encode(&mut maps);
    let len = 64 + catalog_json.len() + maps.len();
    let mut buffer = AlignedBuf::new(len.div_ceil(PAGE as usize) * PAGE as usize);
    let header = [
        CHECKPOINT_MAGIC_ALIASES,
        loaded.lsn,
        loaded.generation,
        catalog_json.len() as u64,
        maps.len() as u64,
    ];
    for (index, value) in header.iter().enumerate() {
        buffer[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    buffer[64..64 + catalog_json.len()].copy_from_slice(&catalog_json);
    buffer[64 + catalog_json.len()..len].copy_from_slice(&maps);
    let image = CheckpointImage {
        sum: xxh3_64(&buffer[..len]),
        len: len as u64,
        buffer,
    };
    let slot = superblock.checkpoint_slot;
    write_checkpoint(&mut ring, ssd, &superblock.layout, slot, &image).unwrap();
    superblock.checkpoint_len = image.len;
    superblock.checkpoint_sum = image.sum;
    superblock.sequence += 2;
    let mut page = AlignedBuf::new(PAGE as usize);
    superblock.key_id = Some(0);
    superblock.encode(&mut page);
    page[8..16].copy_from_slice(&FORMAT_VERSION_PLAIN_SECRETS.to_le_bytes());
    let sum = xxh3_64(&page[..PAGE as usize - 8]);
    page[PAGE as usize - 8..].copy_from_slice(&sum.to_le_bytes());
    ring.write_at(ssd, (superblock.sequence % 2) * PAGE, &page)
        .unwrap();
    ring.sync(ssd).unwrap();
}

/// A checkpoint read back.
pub struct LoadedCheckpoint {
    pub lsn: u64,
    pub generation: u64,
    pub catalog: Catalog,
    pub forest: Forest,
}

/// Reads and verifies the checkpoint a superblock names; `key` opens its secrets.
pub fn read_checkpoint(
    ring: &mut IoRing,
    ssd: &Device,
    superblock: &Superblock,
    key: &Arc<NodeKey>,
) -> io::Result<LoadedCheckpoint> {
    let len = superblock.checkpoint_len;
    // The superblock's checksum only proves it was written whole: a slot past the end of
    // the vault must not become the size of an allocation.
    let read_len = len.div_ceil(PAGE).checked_mul(PAGE);
    let end = u64::from(superblock.checkpoint_slot)
        .checked_mul(superblock.layout.checkpoint_slot_len)
        .and_then(|at| at.checked_add(2 * PAGE)?.checked_add(read_len?));
    if len < 64
        || len > superblock.layout.checkpoint_slot_len
        || end.is_none_or(|end| end > ssd.size())
    {
        return Err(io::Error::other(format!(
            "superblock names a checkpoint of impossible length {len} (slot {} of {} bytes on a vault of {} bytes)",
            superblock.checkpoint_slot,
            superblock.layout.checkpoint_slot_len,
            ssd.size()
        )));
    }
    let mut buffer = AlignedBuf::new((len.div_ceil(PAGE) * PAGE) as usize);
    ring.read_at(
        ssd,
        superblock
            .layout
            .checkpoint_offset(superblock.checkpoint_slot),
        &mut buffer,
    )?;
    let body = &buffer[..len as usize];
    if xxh3_64(body) != superblock.checkpoint_sum {
        return Err(io::Error::other(format!(
            "checkpoint in slot {} fails its checksum",
            superblock.checkpoint_slot
        )));
    }
    decode_checkpoint(body, key)
}

/// Decodes a checkpoint's bytes (whose checksum the superblock already vouched for);
/// `key` opens the catalog's secrets.
pub fn decode_checkpoint(body: &[u8], key: &Arc<NodeKey>) -> io::Result<LoadedCheckpoint> {
    if body.len() < 64 {
        return Err(io::Error::other("checkpoint is shorter than its header"));
    }
    let field = |index: usize| {
        u64::from_le_bytes(body[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
    };
    let catalog_len = field(3) as usize;
    let catalog_end = 64usize
        .checked_add(catalog_len)
        .filter(|end| *end <= body.len())
        .ok_or_else(|| io::Error::other("checkpoint lengths do not add up"))?;
    let catalog: Catalog =
        secrets::with_key(key, || serde_json::from_slice(&body[64..catalog_end]))
            .map_err(io::Error::other)?;
    let forest = match field(0) {
        magic @ (CHECKPOINT_MAGIC_FOREST | CHECKPOINT_MAGIC_ALIASES) => {
            let with_aliases = magic == CHECKPOINT_MAGIC_ALIASES;
            let (forest, used) =
                Forest::decode(&body[catalog_end..], with_aliases).map_err(io::Error::other)?;
            if catalog_end + used != body.len() || used as u64 != field(4) {
                return Err(io::Error::other("checkpoint lengths do not add up"));
            }
            forest
        }
        CHECKPOINT_MAGIC => flat_entries(&catalog, &body[catalog_end..], field(4) as usize)?,
        _ => return Err(io::Error::other("checkpoint has a bad magic number")),
    };
    Ok(LoadedCheckpoint {
        lsn: field(1),
        generation: field(2),
        catalog,
        forest,
    })
}

/// The first format's flat list of map entries (one volume each, no sharing).
fn flat_entries(catalog: &Catalog, body: &[u8], count: usize) -> io::Result<Forest> {
    if count.checked_mul(ENTRY_LEN) != Some(body.len()) {
        return Err(io::Error::other("checkpoint lengths do not add up"));
    }
    let mut forest = Forest::new();
    for volume in catalog.volumes.values() {
        forest.create(volume.id, volume.family(), volume.size / BLOCK_SIZE as u64);
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let mut freed = Vec::new();
    for index in 0..count {
        let at = index * ENTRY_LEN;
        let volume = u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let lba = u64_at(at + 4);
        let entry = MapEntry {
            phys: u64_at(at + 12),
            checksum: u64_at(at + 20),
            generation: u64_at(at + 28),
        };
        // `u64::MAX` marks an empty slot in the forest, and it holds no LBA past MAX_BLOCKS.
        if entry.phys == u64::MAX || lba >= forest::MAX_BLOCKS {
            return Err(io::Error::other(format!(
                "checkpoint map entry {index} is malformed"
            )));
        }
        forest.set(volume, lba, entry, &mut freed);
    }
    Ok(forest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::VolumeRecord;

    fn key() -> Arc<NodeKey> {
        Arc::new(NodeKey::from_bytes([1; 32]))
    }

    /// A checkpoint of the first format: a catalog with volume 1 (64 MiB), then `entries`
    /// as (lba, phys).
    fn flat_checkpoint(entries: &[(u64, u64)]) -> Vec<u8> {
        let mut catalog = Catalog::default();
        let volume: VolumeRecord = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "V", "pool_id": 1, "size": 64 << 20, "created_at": 0,
        }))
        .unwrap();
        catalog.volumes.insert(1, volume);
        let catalog = serde_json::to_vec(&catalog).unwrap();
        let mut body = Vec::new();
        for value in [CHECKPOINT_MAGIC, 7, 1, catalog.len() as u64] {
            body.extend_from_slice(&value.to_le_bytes());
        }
        body.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        body.resize(64, 0);
        body.extend_from_slice(&catalog);
        for (lba, phys) in entries {
            body.extend_from_slice(&1u32.to_le_bytes());
            body.extend_from_slice(&lba.to_le_bytes());
            body.extend_from_slice(&phys.to_le_bytes());
            body.extend_from_slice(&[0; 16]);
        }
        body
    }

    #[test]
    fn flat_checkpoints_load() {
        let loaded = decode_checkpoint(&flat_checkpoint(&[(0, 10), (300, 11)]), &key()).unwrap();
        assert_eq!(loaded.lsn, 7);
        assert_eq!(loaded.forest.get(1, 300).map(|entry| entry.phys), Some(11));
    }

    /// Crashed the `checkpoint` fuzz target (found reading the decoder, not by the fuzzer):
    /// an entry naming the forest's empty-slot marker as its block tripped `Forest::set`'s
    /// assertion.
    #[test]
    fn a_flat_entry_without_a_block_is_refused() {
        assert!(decode_checkpoint(&flat_checkpoint(&[(0, u64::MAX)]), &key()).is_err());
    }

    /// Crashed the `checkpoint` fuzz target (found the same way): LBA `u64::MAX` overflowed
    /// in `Forest::set`, and LBAs past `MAX_BLOCKS` landed silently on lower ones.
    #[test]
    fn a_flat_entry_past_the_last_lba_is_refused() {
        for lba in [u64::MAX, forest::MAX_BLOCKS, forest::MAX_BLOCKS + 5] {
            assert!(
                decode_checkpoint(&flat_checkpoint(&[(lba, 10)]), &key()).is_err(),
                "{lba}"
            );
        }
    }

    /// A superblock whose checkpoint lies past the end of the vault (found reading
    /// `read_checkpoint` for the `superblock` fuzz target): its length became the size of
    /// an allocation, 2^60 bytes here.
    #[test]
    fn a_checkpoint_past_the_vault_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let ssd = Device::open(&dir.path().join("ssd.img"), Some(1 << 20), None).unwrap();
        let mut ring = IoRing::new(4).unwrap();
        let superblock = Superblock {
            sequence: 1,
            serial: 1,
            data_devices: 4,
            unit: 64 << 10,
            rows_per_segment: 4,
            rows: 64,
            layout: SsdLayout {
                checkpoint_slot_len: 1 << 61,
                log_start: 2 * PAGE + (1 << 62),
                log_len: 32 << 20,
            },
            checkpoint_slot: 1,
            checkpoint_len: 1 << 60,
            checkpoint_sum: 0,
            checkpoint_lsn: 0,
            replay_from: 0,
            key_id: Some(key().id()),
            placement: RecordedPlacement {
                drives: 6,
                spare: 0,
                kind: crate::layout::PlacementKind::Straight,
            },
        };
        let err = read_checkpoint(&mut ring, &ssd, &superblock, &key())
            .err()
            .unwrap();
        assert!(err.to_string().contains("impossible length"), "{err}");
    }

    #[test]
    fn short_checkpoints_and_superblocks_are_refused() {
        for len in [0, 39, 63] {
            assert!(decode_checkpoint(&vec![0; len], &key()).is_err());
        }
        assert!(Superblock::decode(&[0; 100]).is_none());
    }
}
