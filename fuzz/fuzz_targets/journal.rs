//! Journal batches as replay finds them on the vault: a header, a payload of records, and
//! each record decoded by kind. The first input byte is knobs: bit 0 makes the harness
//! repair the magic, the LSN and both checksums (else the fuzzer would never get past
//! them), the other bits pick the LSN the batch is looked for at. The rest is the batch.
//! No input may panic; a decoded MAP_SET, SHARE or catalog record must encode back to
//! what it came from.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use troika::meta::journal;
use troika::meta::records::{self, Record};
use troika::secrets::NodeKey;
use xxhash_rust::xxh3::xxh3_64;

const BATCH_MAGIC: u64 = 0x5452_4f49_4b41_4a4c; // "TROIKAJL"
const HEADER_LEN: usize = 64;
/// Seals and opens the secrets of catalog records (host CHAP secrets).
static KEY: LazyLock<Arc<NodeKey>> = LazyLock::new(|| Arc::new(NodeKey::from_bytes([7; 32])));

/// Makes `batch`'s magic, LSN and checksums those of a batch written at `lsn`.
fn repair(batch: &mut [u8], lsn: u64) {
    if batch.len() < HEADER_LEN {
        return;
    }
    batch[0..8].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    batch[8..16].copy_from_slice(&lsn.to_le_bytes());
    let payload_len = u64::from_le_bytes(batch[16..24].try_into().unwrap());
    let end = usize::try_from(payload_len)
        .unwrap_or(usize::MAX)
        .saturating_add(HEADER_LEN)
        .min(batch.len());
    let payload_sum = xxh3_64(&batch[HEADER_LEN..end]);
    batch[24..32].copy_from_slice(&payload_sum.to_le_bytes());
    let header_sum = xxh3_64(&batch[0..56]);
    batch[56..64].copy_from_slice(&header_sum.to_le_bytes());
}

fn check_record(kind: u8, body: &[u8]) {
    let Some(record) = records::decode(kind, body, &KEY) else {
        return;
    };
    let mut again = Vec::new();
    match record {
        Record::MapSet { volume, entries } => {
            records::encode_map_set(volume, &entries, &mut again);
            assert_eq!(again, body);
        }
        Record::Share { volume, blocks } => {
            records::encode_share(volume, &blocks, &mut again);
            assert_eq!(again, body);
        }
        Record::Catalog(op) => {
            again = records::encode_catalog(&op, &KEY).expect("a decoded operation encodes");
            match records::decode(records::CATALOG, &again, &KEY) {
                Some(Record::Catalog(twice)) => assert_eq!(twice, op),
                _ => panic!("a re-encoded catalog operation does not decode"),
            }
        }
        Record::Vault { blocks, data } => {
            assert_eq!(data.len(), blocks.len() * troika::types::BLOCK_SIZE);
        }
        Record::Trim { .. } | Record::Relocate { .. } => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let lsn = u64::from(knobs >> 1) * 4096;
    let mut batch = bytes.to_vec();
    if knobs & 1 != 0 {
        repair(&mut batch, lsn);
    }
    let mut seen = 0;
    let records = journal::decode_batch(&batch, lsn, |kind, body| {
        seen += 1;
        check_record(kind, body);
    });
    if let Some(records) = records {
        assert_eq!(records, seen);
    }
});
