//! Medium access: READ/WRITE forms, VERIFY, COMPARE AND WRITE (with its atomicity),
//! ORWRITE, WRITE SAME, UNMAP, GET LBA STATUS, SYNCHRONIZE CACHE, PRE-FETCH.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::inquiry::MAX_WRITE_SAME_BLOCKS;
use super::super::status;
use super::super::test_support::*;

fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_then_read_in_every_form() {
    let rig = Rig::new();
    let data = pattern(4, 1);
    assert_eq!(rig.run(&cdb10(0x2A, 0, 10, 4), &data).status, status::GOOD);
    assert_eq!(rig.run(&cdb10(0x28, 0, 10, 4), &[]).data_in, data);
    assert_eq!(rig.run(&cdb16(0x88, 0, 10, 4), &[]).data_in, data);
    let read12 = [0xA8, 0, 0, 0, 0, 10, 0, 0, 0, 4, 0, 0];
    assert_eq!(rig.run(&read12, &[]).data_in, data);
    let read6 = [0x08, 0, 0, 10, 4, 0];
    assert_eq!(rig.run(&read6, &[]).data_in, data);
    // READ(6) length 0 means 256 blocks.
    assert_eq!(
        rig.run(&[0x08, 0, 0, 0, 0, 0], &[]).data_in.len(),
        256 * 512
    );
    let other = pattern(2, 9);
    assert_eq!(
        rig.run(&[0x0A, 0, 0, 20, 2, 0], &other).status,
        status::GOOD
    );
    let write12 = [0xAA, 0x08, 0, 0, 0, 30, 0, 0, 0, 2, 0, 0];
    assert_eq!(rig.run(&write12, &other).status, status::GOOD);
    assert_eq!(
        rig.run(&cdb16(0x8A, 0x08, 40, 2), &other).status,
        status::GOOD
    );
    for lba in [20u64, 30, 40] {
        assert_eq!(rig.target.bytes(lba * 512, 1024), other);
    }
    // WRITE AND VERIFY.
    assert_eq!(
        rig.run(&cdb16(0x8E, 0x02, 50, 2), &other).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(50 * 512, 1024), other);
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x8E, 0x04, 50, 2), &other)),
        (5, 0x24, 0)
    );
}

#[test]
fn transfer_length_and_range_checks() {
    let rig = Rig::new();
    let end = RIG_BLOCKS;
    // Length 0 is a no-op, even at the end of the medium; beyond it is out of range.
    assert_eq!(
        rig.run(&cdb10(0x28, 0, end as u32, 0), &[]).status,
        status::GOOD
    );
    assert!(
        rig.run(&cdb10(0x28, 0, end as u32, 0), &[])
            .data_in
            .is_empty()
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x28, 0, end as u32 + 1, 0), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x28, 0, end as u32 - 1, 2), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x88, 0, u64::MAX, 1), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x8A, 0, u64::MAX - 1, 2), &[0; 1024])),
        (5, 0x21, 0)
    );
    // Protection information is not supported.
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x28, 0x20, 0, 1), &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x2A, 0x20, 0, 1), &[0; 512])),
        (5, 0x24, 0)
    );
    // Short Data-Out (overflow): the whole blocks that arrived are written, GOOD.
    rig.run(&cdb10(0x2A, 0, 0, 2), &[7; 1024]);
    assert_eq!(
        rig.run(&cdb10(0x2A, 0, 0, 2), &[1; 600]).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(0, 512), vec![1; 512]);
    assert_eq!(rig.target.bytes(512, 512), vec![7; 512]);
    assert_eq!(rig.run(&cdb10(0x2A, 0, 0, 1), &[]).status, status::GOOD);
    assert_eq!(
        rig.run(&cdb10(0x2A, 0, 0, 1), &[2; 200]).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(0, 512), vec![1; 512]);
    // The same for WRITE AND VERIFY.
    assert_eq!(
        rig.run(&cdb10(0x2E, 0, 0, 2), &[4; 512]).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(0, 1024), [[4; 512], [7; 512]].concat());
    // Longer Data-Out (underflow): only the transfer length is written.
    rig.run(&cdb10(0x2A, 0, 0, 1), &[3; 1024]);
    assert_eq!(rig.target.bytes(0, 1024), [[3; 512], [7; 512]].concat());
}

#[test]
fn big_target_caps_transfer_length() {
    let rig = Rig::with(64 << 20, false);
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x88, 0, 0, 16_385), &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        rig.run(&cdb16(0x88, 0, 0, 16_384), &[]).data_in.len(),
        8 << 20
    );
}

#[test]
fn write_protected_target() {
    let rig = Rig::with(1 << 20, true);
    let block = [1u8; 512];
    for cdb in [
        cdb16(0x8A, 0, 0, 1),
        cdb16(0x93, 0, 0, 1),
        cdb16(0x89, 0, 0, 0x100),
        cdb16(0x8B, 0, 0, 1),
        cdb16(0x8E, 0, 0, 1),
    ] {
        let mut cdb = cdb;
        if cdb[0] == 0x89 {
            cdb[13] = 1;
        }
        assert_eq!(
            sense_of(&rig.run(&cdb, &[block, block].concat())),
            (7, 0x27, 0)
        );
    }
    let unmap = [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
    assert_eq!(sense_of(&rig.run(&unmap, &[0; 24])), (7, 0x27, 0));
    assert_eq!(rig.run(&cdb10(0x28, 0, 0, 1), &[]).status, status::GOOD);
}

#[test]
fn verify_checks_and_compares() {
    let rig = Rig::new();
    let data = pattern(3, 4);
    rig.run(&cdb10(0x2A, 0, 100, 3), &data);
    assert_eq!(rig.run(&cdb10(0x2F, 0, 100, 3), &[]).status, status::GOOD);
    assert_eq!(
        rig.run(&cdb10(0x2F, 0x02, 100, 3), &data).status,
        status::GOOD
    );
    let mut wrong = data.clone();
    wrong[700] ^= 1;
    let response = rig.run(&cdb16(0x8F, 0x02, 100, 3), &wrong);
    assert_eq!(sense_of(&response), (0x0E, 0x1D, 0));
    assert_eq!(response.sense[0] & 0x80, 0x80);
    assert_eq!(
        u32::from_be_bytes(response.sense[3..7].try_into().unwrap()),
        700
    );
    assert!(response.data_in.is_empty());
    // BYTCHK 3: one block against every block.
    rig.run(&cdb10(0x2A, 0, 200, 2), &[[5u8; 512], [5u8; 512]].concat());
    assert_eq!(
        rig.run(&cdb10(0x2F, 0x06, 200, 2), &[5; 512]).status,
        status::GOOD
    );
    let response = rig.run(&cdb10(0x2F, 0x06, 200, 3), &[5; 512]);
    assert_eq!(
        u32::from_be_bytes(response.sense[3..7].try_into().unwrap()),
        1024
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x2F, 0x04, 100, 1), &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x2F, 0x02, 100, 2), &[0; 10])),
        (5, 0x0E, 3)
    );
    assert_eq!(
        rig.run(&cdb10(0x2F, 0x02, 100, 0), &[]).status,
        status::GOOD
    );
}

#[test]
fn compare_and_write() {
    let rig = Rig::new();
    let old = pattern(1, 1);
    let new = pattern(1, 2);
    rig.run(&cdb10(0x2A, 0, 5, 1), &old);
    let mut cdb = cdb16(0x89, 0, 5, 0);
    cdb[13] = 1;
    assert_eq!(
        rig.run(&cdb, &[old.clone(), new.clone()].concat()).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(5 * 512, 512), new);
    // Miscompare: nothing written, INFORMATION is the first differing offset.
    let mut stale = old.clone();
    stale[..37].copy_from_slice(&new[..37]);
    let response = rig.run(&cdb, &[stale, old.clone()].concat());
    assert_eq!(sense_of(&response), (0x0E, 0x1D, 0));
    let first = new
        .iter()
        .zip(&old)
        .position(|(a, b)| a != b)
        .unwrap()
        .max(37);
    assert_eq!(
        u32::from_be_bytes(response.sense[3..7].try_into().unwrap()),
        first as u32
    );
    assert_eq!(rig.target.bytes(5 * 512, 512), new);
    // Zero blocks is a no-op; more than the maximum is refused; Data-Out other than
    // twice the blocks too (short, long, or blocks 0 with data).
    cdb[13] = 0;
    assert_eq!(rig.run(&cdb, &[]).status, status::GOOD);
    assert_eq!(sense_of(&rig.run(&cdb, &[0; 1024])), (5, 0x24, 0));
    cdb[13] = 65;
    assert_eq!(sense_of(&rig.run(&cdb, &[0; 65 * 1024])), (5, 0x24, 0));
    cdb[13] = 1;
    assert_eq!(sense_of(&rig.run(&cdb, &[0; 600])), (5, 0x24, 0));
    assert_eq!(sense_of(&rig.run(&cdb, &[0; 2048])), (5, 0x24, 0));
    assert_eq!(rig.target.bytes(5 * 512, 512), new);
    // Several blocks at once.
    rig.run(&cdb10(0x2A, 0, 20, 3), &[1; 1536]);
    cdb = cdb16(0x89, 0, 20, 0);
    cdb[13] = 3;
    let both = [vec![1u8; 1536], vec![2u8; 1536]].concat();
    assert_eq!(rig.run(&cdb, &both).status, status::GOOD);
    assert_eq!(rig.target.bytes(20 * 512, 1536), vec![2; 1536]);
    assert_eq!(sense_of(&rig.run(&cdb, &both)), (0x0E, 0x1D, 0));
    let mut beyond = cdb16(0x89, 0, RIG_BLOCKS, 0);
    beyond[13] = 1;
    assert_eq!(sense_of(&rig.run(&beyond, &[0; 1024])), (5, 0x21, 0));
}

/// Two threads increment a counter block with COMPARE AND WRITE while a third writes
/// next to it in the same stripe: no increment may be lost.
#[test]
fn compare_and_write_is_atomic_against_writes() {
    const INCREMENTS: u32 = 150;
    let rig = Arc::new(Rig::new());
    rig.target.slow_reads.store(true, Ordering::Relaxed);
    let lba = 3u64;
    let counter_block = |value: u32| {
        let mut block = vec![0u8; 512];
        block[..4].copy_from_slice(&value.to_be_bytes());
        block
    };
    let incrementer = |id: u32| {
        let rig = rig.clone();
        std::thread::spawn(move || {
            let who = nexus(10 + id);
            rig.unit.shared.attention(&who, true);
            let mut cdb = cdb16(0x89, 0, lba, 0);
            cdb[13] = 1;
            let mut done = 0;
            while done < INCREMENTS {
                let current = rig.run_as(&who, &cdb16(0x88, 0, lba, 1), &[]).data_in;
                let value = u32::from_be_bytes(current[..4].try_into().unwrap());
                let mut next = vec![0u8; 512];
                next[..4].copy_from_slice(&(value + 1).to_be_bytes());
                let response = rig.run_as(&who, &cdb, &[current, next].concat());
                match response.status {
                    status::GOOD => done += 1,
                    _ => assert_eq!(sense_of(&response).0, 0x0E),
                }
            }
        })
    };
    rig.run(&cdb16(0x8A, 0, lba, 1), &counter_block(0));
    let writer = {
        let rig = rig.clone();
        std::thread::spawn(move || {
            let who = nexus(30);
            rig.unit.shared.attention(&who, true);
            for round in 0..300u32 {
                let response = rig.run_as(&who, &cdb16(0x8A, 0, lba + 1, 1), &counter_block(round));
                assert_eq!(response.status, status::GOOD);
            }
        })
    };
    let threads = [incrementer(1), incrementer(2)];
    for thread in threads {
        thread.join().unwrap();
    }
    writer.join().unwrap();
    assert_eq!(
        rig.target.bytes(lba * 512, 512),
        counter_block(2 * INCREMENTS)
    );
}

#[test]
fn or_write() {
    let rig = Rig::new();
    rig.run(&cdb10(0x2A, 0, 8, 1), &[0x0F; 512]);
    assert_eq!(
        rig.run(&cdb16(0x8B, 0, 8, 1), &[0xF0; 512]).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(8 * 512, 512), vec![0xFF; 512]);
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x8B, 0, RIG_BLOCKS, 1), &[0; 512])),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x8B, 0x20, 8, 1), &[0; 512])),
        (5, 0x24, 0)
    );
}

#[test]
fn write_same_round_trips() {
    let rig = Rig::new();
    let block = pattern(1, 3);
    assert_eq!(
        rig.run(&cdb16(0x93, 0, 16, 24), &block).status,
        status::GOOD
    );
    for lba in 16..40 {
        assert_eq!(rig.target.bytes(lba * 512, 512), block);
    }
    let ten = cdb10(0x41, 0, 40, 8);
    assert_eq!(rig.run(&ten, &block).status, status::GOOD);
    assert_eq!(rig.target.bytes(47 * 512, 512), block);
    // UNMAP with zeroes releases whole 4 KiB blocks and reads back zero.
    assert_eq!(
        rig.run(&cdb16(0x93, 0x08, 16, 32), &[0; 512]).status,
        status::GOOD
    );
    assert_eq!(rig.target.trims.load(Ordering::Relaxed), 1);
    assert_eq!(rig.target.bytes(16 * 512, 32 * 512), vec![0; 32 * 512]);
    let status_of = rig.run(&cdb16(0x9E, 0x12, 16, 1024), &[]);
    assert_eq!(status_of.data_in[8 + 12], 1, "deallocated");
    // NDOB: zeroes without Data-Out.
    rig.run(&cdb16(0x93, 0, 0, 8), &block);
    assert_eq!(rig.run(&cdb16(0x93, 0x09, 0, 8), &[]).status, status::GOOD);
    assert_eq!(rig.target.bytes(0, 4096), vec![0; 4096]);
    // Zero without UNMAP keeps the range allocated.
    assert_eq!(
        rig.run(&cdb16(0x93, 0, 64, 8), &[0; 512]).status,
        status::GOOD
    );
    let mapped = rig.run(&cdb16(0x9E, 0x12, 64, 1024), &[]);
    assert_eq!(mapped.data_in[8 + 12], 0);
    // UNMAP releases the range whatever the Data-Out block holds.
    rig.run(&cdb16(0x93, 0, 80, 8), &block);
    assert_eq!(
        rig.run(&cdb16(0x93, 0x08, 80, 8), &block).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes(80 * 512, 4096), vec![0; 4096]);
    // 0 blocks (WSNZ 0): to the end of the medium.
    rig.run(&cdb16(0x93, 0, RIG_BLOCKS - 3, 3), &[6; 512]);
    assert_eq!(
        rig.run(&cdb16(0x93, 0, RIG_BLOCKS - 2, 0), &block).status,
        status::GOOD
    );
    assert_eq!(rig.target.bytes((RIG_BLOCKS - 3) * 512, 512), vec![6; 512]);
    assert_eq!(rig.target.bytes((RIG_BLOCKS - 2) * 512, 512), block);
    assert_eq!(rig.target.bytes((RIG_BLOCKS - 1) * 512, 512), block);
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x93, 0, RIG_BLOCKS, 0), &block)),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x93, 0, u64::MAX, 0), &block)),
        (5, 0x21, 0)
    );
    // Errors: beyond the maximum (given or implied by 0), out of range, ANCHOR without
    // UNMAP, Data-Out other than one block.
    let big = Rig::with((MAX_WRITE_SAME_BLOCKS + 8) * 512, false);
    assert_eq!(
        sense_of(&big.run(&cdb16(0x93, 0, 0, 0), &block)),
        (5, 0x24, 0)
    );
    assert_eq!(big.run(&cdb16(0x93, 0, 8, 0), &block).status, status::GOOD);
    assert_eq!(
        sense_of(&big.run(&cdb16(0x93, 0, 0, MAX_WRITE_SAME_BLOCKS as u32 + 1), &block)),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x41, 0, 0, 1), &[0; 256])),
        (5, 0x0E, 3)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x41, 0, 0, 1), &[0; 1024])),
        (5, 0x0E, 3)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x93, 0, RIG_BLOCKS - 1, 2), &block)),
        (5, 0x21, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x93, 0x10, 0, 1), &block)),
        (5, 0x24, 0)
    );
    assert_eq!(sense_of(&rig.run(&cdb16(0x93, 0, 0, 1), &[])), (5, 0x0E, 3));
}

fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut list = vec![0u8; 8];
    for (lba, blocks) in ranges {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&blocks.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
    }
    let data_length = (list.len() - 2) as u16;
    list[..2].copy_from_slice(&data_length.to_be_bytes());
    let descriptors = (list.len() - 8) as u16;
    list[2..4].copy_from_slice(&descriptors.to_be_bytes());
    list
}

fn unmap_cdb(length: usize) -> [u8; 10] {
    let mut cdb = [0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[7..9].copy_from_slice(&(length as u16).to_be_bytes());
    cdb
}

#[test]
fn unmap_and_lba_status() {
    let rig = Rig::new();
    rig.run(&cdb16(0x93, 0, 0, 64), &[9; 512]);
    let list = unmap_list(&[(8, 8), (32, 16)]);
    assert_eq!(rig.run(&unmap_cdb(list.len()), &list).status, status::GOOD);
    let lba_status = rig.run(&cdb16(0x9E, 0x12, 0, 1024), &[]);
    let data = &lba_status.data_in;
    let descriptors: Vec<(u64, u32, u8)> = data[8..]
        .chunks(16)
        .map(|d| {
            (
                u64::from_be_bytes(d[..8].try_into().unwrap()),
                u32::from_be_bytes(d[8..12].try_into().unwrap()),
                d[12],
            )
        })
        .collect();
    assert_eq!(
        descriptors,
        vec![
            (0, 8, 0),
            (8, 8, 1),
            (16, 16, 0),
            (32, 16, 1),
            (48, 16, 0),
            (64, 1984, 1)
        ]
    );
    assert_eq!(
        u32::from_be_bytes(data[..4].try_into().unwrap()) as usize + 4,
        data.len()
    );
    // Allocation length limits the descriptors; reporting starts at the given LBA.
    let short = rig.run(&cdb16(0x9E, 0x12, 10, 24), &[]);
    assert_eq!(short.data_in.len(), 24);
    assert_eq!(&short.data_in[8..16], &10u64.to_be_bytes());
    assert_eq!(&short.data_in[16..20], &6u32.to_be_bytes());
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x9E, 0x12, RIG_BLOCKS, 24), &[])),
        (5, 0x21, 0)
    );
    // Parameter list checks.
    assert_eq!(rig.run(&unmap_cdb(0), &[]).status, status::GOOD);
    assert_eq!(sense_of(&rig.run(&unmap_cdb(4), &list)), (5, 0x1A, 0));
    let beyond = unmap_list(&[(RIG_BLOCKS - 1, 2)]);
    assert_eq!(
        sense_of(&rig.run(&unmap_cdb(beyond.len()), &beyond)),
        (5, 0x21, 0)
    );
    let many = unmap_list(&vec![(0, 1); 257]);
    assert_eq!(sense_of(&rig.run(&unmap_cdb(many.len()), &many)).1, 0x26);
    let huge = unmap_list(&[(0, (1 << 22) + 1)]);
    assert_eq!(sense_of(&rig.run(&unmap_cdb(huge.len()), &huge)).1, 0x26);
}

#[test]
fn synchronize_cache_and_prefetch() {
    let rig = Rig::new();
    assert_eq!(rig.run(&cdb10(0x35, 0, 0, 0), &[]).status, status::GOOD);
    assert_eq!(rig.run(&cdb16(0x91, 0x02, 0, 10), &[]).status, status::GOOD);
    assert_eq!(rig.target.flushes.load(Ordering::Relaxed), 2);
    assert_eq!(
        sense_of(&rig.run(&cdb10(0x35, 0, RIG_BLOCKS as u32, 1), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(rig.run(&cdb10(0x34, 0, 0, 10), &[]).status, status::GOOD);
    assert_eq!(
        sense_of(&rig.run(&cdb16(0x90, 0, RIG_BLOCKS, 1), &[])),
        (5, 0x21, 0)
    );
    assert_eq!(rig.run(&[0x1B, 0, 0, 0, 0x03, 0], &[]).status, status::GOOD);
}
