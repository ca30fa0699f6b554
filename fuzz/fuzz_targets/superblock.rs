//! Superblock slots: one 4 KiB page. The first input byte is knobs: bit 0 makes the
//! harness write the page's checksum (else the fuzzer would never get past it). The rest
//! is the page; anything but 4096 bytes must be refused. No input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troika::meta::checkpoint::Superblock;
use xxhash_rust::xxh3::xxh3_64;

const PAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let mut page = bytes.to_vec();
    if knobs & 1 != 0 && page.len() == PAGE {
        let sum = xxh3_64(&page[..PAGE - 8]);
        page[PAGE - 8..].copy_from_slice(&sum.to_le_bytes());
    }
    let Some(superblock) = Superblock::decode(&page) else {
        return;
    };
    assert_eq!(page.len(), PAGE);
    assert!(superblock.checkpoint_slot < 2);
});
