//! The scrub over a real declustered array of files: rows written with valid summaries,
//! bits flipped in the drive files under the array, every flip found and repaired.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::io::AlignedBuf;
use crate::layout::placement::{DEFAULT_SEED, PlacementKind};
use crate::layout::summary::{SlotIdentity, block_checksum, encode_summary};
use crate::testing::Rng;
use crate::types::VolumeId;

const DRIVES: usize = 10;
const UNIT: u64 = 16 << 10;
const DRIVE_BYTES: u64 = 4 << 20;
/// Used slots per row (of 15): the rest are unused (zero).
const USED_SLOTS: u64 = 11;

fn drive_path(dir: &Path, drive: usize) -> PathBuf {
    dir.join(format!("nlsas{drive}.img"))
}

fn declustered_array(dir: &Path) -> Array {
    let devices = (0..DRIVES)
        .map(|d| Device::open(&drive_path(dir, d), Some(DRIVE_BYTES), None).unwrap())
        .collect();
    let placement = Placement::new(
        PlacementKind::Declustered { seed: DEFAULT_SEED },
        DRIVES,
        6,
        2,
        2,
    )
    .unwrap();
    Array::new(devices, 4, UNIT, 4, placement)
}

/// A row of random used slots, zero unused slots, its summary and parity.
fn make_row(array: &Array, codec: &mut ParityCodec, rng: &mut Rng, row: u64) -> AlignedBuf {
    let geometry = *array.geometry();
    // O_DIRECT writes want aligned memory.
    let mut buffer = AlignedBuf::new(array.row_buffer_len());
    let mut identities = Vec::new();
    for slot in 0..USED_SLOTS {
        let at = geometry.offset_in_row(geometry.phys(0, slot));
        let block = &mut buffer[at..at + BLOCK_SIZE];
        block.iter_mut().for_each(|byte| *byte = rng.next() as u8);
        let lba = row * 100 + slot;
        identities.push(SlotIdentity {
            volume: 1,
            lba,
            generation: 1,
            checksum: block_checksum(VolumeId(1), lba, block),
        });
    }
    let at = geometry.offset_in_row(geometry.phys(0, geometry.summary_slot()));
    encode_summary(row, &identities, &mut buffer[at..at + BLOCK_SIZE]);
    array.compute_parity(codec, &mut buffer).unwrap();
    buffer
}

/// Where a flip goes, and the kind of repair it asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    UsedSlot,
    UnusedSlot,
    Summary,
    P,
    Q,
}

/// The unit and byte offset inside it of a flip of kind `target`.
fn place(geometry: &Geometry, rng: &mut Rng, target: Target) -> (usize, u64) {
    let slot_unit = |slot: u64| geometry.unit_of(geometry.phys(0, slot));
    let (unit, within) = match target {
        Target::UsedSlot => slot_unit(rng.below(USED_SLOTS)),
        Target::UnusedSlot => {
            slot_unit(USED_SLOTS + rng.below(geometry.summary_slot() - USED_SLOTS))
        }
        Target::Summary => slot_unit(geometry.summary_slot()),
        Target::P => (
            geometry.data,
            rng.below(geometry.unit / BLOCK_SIZE as u64) * 4096,
        ),
        Target::Q => (
            geometry.data + 1,
            rng.below(geometry.unit / BLOCK_SIZE as u64) * 4096,
        ),
    };
    // The summary's header and first entries sit in its first bytes: flip anywhere in
    // the first 1 KiB so the damage lands on something the decoder reads.
    let byte = if target == Target::Summary {
        rng.below(1024)
    } else {
        rng.below(BLOCK_SIZE as u64)
    };
    (unit, within + byte)
}

fn flip_bit(dir: &Path, array: &Array, row: u64, unit: usize, offset: u64, bit: u8) {
    let cell = array.placement().cell(row, unit);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(drive_path(dir, cell.drive))
        .unwrap();
    let at = cell.index * UNIT + offset;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, at).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn scrub_finds_and_repairs_every_one_of_200_bit_flips() {
    let dir = tempfile::tempdir().unwrap();
    let array = declustered_array(dir.path());
    let geometry = *array.geometry();
    let mut ring = IoRing::new(64).unwrap();
    let mut codec = ParityCodec::new(4, UNIT as usize).unwrap();
    let mut rng = Rng(0x5c2b_0bad_f1a5);
    let rows: u64 = 190;
    assert!(geometry.rows >= rows + geometry.rows_per_segment);
    let originals: Vec<AlignedBuf> = (0..rows)
        .map(|row| make_row(&array, &mut codec, &mut rng, row))
        .collect();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(8) {
        let writes: Vec<(u64, &[u8])> = chunk
            .iter()
            .map(|&row| (row, &originals[row as usize][..]))
            .collect();
        array.write_rows(&mut ring, &writes);
    }
    // One damaged unit in each row, the kinds in turn; in every 19th row a used slot and
    // a parity unit both (the checksums place one, parity the other): 200 flips.
    let kinds = [
        Target::UsedSlot,
        Target::P,
        Target::Q,
        Target::UsedSlot,
        Target::Summary,
        Target::UnusedSlot,
    ];
    let mut expected = ScrubRepairs::default();
    let mut flips = 0;
    for row in 0..rows {
        let mut targets = vec![kinds[row as usize % kinds.len()]];
        if row % 19 == 0 {
            targets = vec![
                Target::UsedSlot,
                [Target::P, Target::Q][row as usize / 19 % 2],
            ];
        }
        for target in targets {
            let (unit, offset) = place(&geometry, &mut rng, target);
            flip_bit(dir.path(), &array, row, unit, offset, rng.below(8) as u8);
            flips += 1;
            match target {
                Target::UsedSlot => expected.data += 1,
                Target::P | Target::Q => expected.parity += 1,
                Target::Summary | Target::UnusedSlot => expected.other += 1,
            }
        }
    }
    assert_eq!(flips, 200);
    assert!(expected.data > 0 && expected.parity > 0 && expected.other > 0);

    let mut buffers = array.scrub_buffers();
    let mut tally = ScrubTally::default();
    for segment in 0..rows.div_ceil(geometry.rows_per_segment) {
        tally.add(
            &array
                .scrub_segment(&mut ring, &mut buffers, segment)
                .unwrap(),
        );
    }
    assert_eq!(tally.unrepairable_rows, 0, "{tally:?}");
    assert_eq!(tally.repairs, expected, "every flip found, by kind");
    assert_eq!(tally.repairs.total(), 200);

    let mut read = AlignedBuf::new(array.row_buffer_len());
    for row in 0..rows {
        assert!(array.read_row(&mut ring, row, &mut read).is_empty());
        assert!(
            read[..] == originals[row as usize][..],
            "row {row} differs from what was written after the scrub"
        );
    }
    // A second pass finds nothing.
    let mut again = ScrubTally::default();
    for segment in 0..rows.div_ceil(geometry.rows_per_segment) {
        again.add(
            &array
                .scrub_segment(&mut ring, &mut buffers, segment)
                .unwrap(),
        );
    }
    assert_eq!(again.repairs.total(), 0);
    assert_eq!(again.unrepairable_rows, 0);
}

#[test]
fn rows_never_written_are_clean_and_three_bad_units_are_unrepairable() {
    let dir = tempfile::tempdir().unwrap();
    let array = declustered_array(dir.path());
    let mut ring = IoRing::new(64).unwrap();
    let mut codec = ParityCodec::new(4, UNIT as usize).unwrap();
    let mut rng = Rng(77);
    let mut buffers = array.scrub_buffers();
    // A segment nothing was written to reads as zeros: consistent.
    let tally = array.scrub_segment(&mut ring, &mut buffers, 5).unwrap();
    assert_eq!(
        (tally.rows, tally.repairs.total(), tally.unrepairable_rows),
        (4, 0, 0)
    );

    let row = 2;
    let original = make_row(&array, &mut codec, &mut rng, row);
    array.write_rows(&mut ring, &[(row, &original[..])]);
    for unit in [0, 1, 4] {
        flip_bit(dir.path(), &array, row, unit, 100, 3);
    }
    assert_eq!(
        array.scrub_row(&mut ring, &mut buffers, row).unwrap(),
        RowScrub::Unrepairable
    );
    // Nothing was written: the three flips are still there.
    let mut read = AlignedBuf::new(array.row_buffer_len());
    array.read_row(&mut ring, row, &mut read);
    let unit = UNIT as usize;
    for damaged in [0, 1, 4] {
        assert_ne!(read[damaged * unit + 100], original[damaged * unit + 100]);
    }
}

#[test]
fn a_scrub_with_a_failed_drive_verifies_the_rest_and_repairs_a_flip() {
    let dir = tempfile::tempdir().unwrap();
    let array = declustered_array(dir.path());
    let mut ring = IoRing::new(64).unwrap();
    let mut codec = ParityCodec::new(4, UNIT as usize).unwrap();
    let mut rng = Rng(99);
    let row = 9;
    let original = make_row(&array, &mut codec, &mut rng, row);
    array.write_rows(&mut ring, &[(row, &original[..])]);
    // Drive of unit 1 out; a used slot of unit 0 flipped: the checksums place it and the
    // survivors rebuild it.
    array
        .fail_drive(array.placement().cell(row, 1).drive, "test")
        .unwrap();
    let geometry = *array.geometry();
    let (unit, within) = geometry.unit_of(geometry.phys(0, 0));
    assert_eq!(unit, 0);
    flip_bit(dir.path(), &array, row, 0, within + 17, 5);
    let mut buffers = array.scrub_buffers();
    let outcome = array.scrub_row(&mut ring, &mut buffers, row).unwrap();
    assert_eq!(
        outcome,
        RowScrub::Repaired(ScrubRepairs {
            data: 1,
            parity: 0,
            other: 0
        })
    );
    let mut read = AlignedBuf::new(array.row_buffer_len());
    assert_eq!(array.read_row(&mut ring, row, &mut read), vec![1]);
    let u = UNIT as usize;
    assert!(read[..u] == original[..u]);
}
