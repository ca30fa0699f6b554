//! The placement's promises, checked for the common row widths over every drive count from
//! one more than the width to 480, each over a whole period:
//!
//! - no two units of a row share a drive, before and after failed drives are remapped into
//!   spare cells;
//! - every drive carries the same share of data, parity and spare cells (within 1% of the
//!   mean; by construction exactly);
//! - a failed drive's rebuild reads spread over the survivors with a coefficient of
//!   variation under 10%.
//!
//! What a column of a slice holds is the same in every slice (only which drive sits in it
//! changes), so the counting tests learn each column's contents from slice 0 through the
//! public map (and check a few other slices agree), then count per slice and column, not
//! per cell; above [`SHARES_BY_SLICE`] drives the shares come from the construction,
//! checked in every slice. The walks of [`DriveTable::read_cell`] (every unit of a row)
//! cover one row through a failed drive per slice of a period (every 7th slice above
//! [`COUNTED_BY_SLICE`] drives), and every row of a period for small arrays.

use super::*;
use crate::layout::drives::DriveTable;

/// Row widths (data + parity) checked: 4+2, 8+2, 14+2, 16+2.
const WIDTHS: [usize; 4] = [6, 10, 16, 18];
const MOST_DRIVES: usize = 480;
const PARITY: usize = 2;
/// Drive counts up to this get their shares counted in every column of every slice of a
/// period; above, per column from the construction, checked in every slice.
const SHARES_BY_SLICE: usize = 64;
/// Drive counts up to this get a read walk in every slice of a period; above, in every
/// 7th slice (7 is prime to `P` and to every slice height here, so the walks still meet
/// every base permutation and cell row).
const COUNTED_BY_SLICE: usize = 160;
/// Bits per count in a packed (data, parity, spare) triple.
const COUNT_BITS: u32 = 21;

/// Each width over every drive count from `width + 1` to 480, with `min(2, N - width)`
/// drives' worth of spare.
fn placements(width: usize) -> impl Iterator<Item = Placement> {
    (width + 1..=MOST_DRIVES).map(move |drives| {
        let spare = (drives - width).min(2);
        Placement::new(
            PlacementKind::Declustered { seed: DEFAULT_SEED },
            drives,
            width,
            PARITY,
            spare,
        )
        .unwrap()
    })
}

/// What each column of a slice holds, learnt from slice 0.
struct SliceShape {
    /// Per column: data, parity and spare cells, packed `COUNT_BITS` bits each.
    packed_uses: Vec<u64>,
    /// Per column: the columns holding the other units of the rows with a unit in it, with
    /// how many such rows.
    neighbours: Vec<Vec<(usize, u64)>>,
}

/// Per column of `slice`: its data, parity and spare cells, packed.
fn packed_uses_in(placement: &Placement, slice: u64) -> Vec<u64> {
    let mut packed_uses = vec![0u64; placement.drives()];
    for (column, packed) in packed_uses.iter_mut().enumerate() {
        let drive = placement.drive_at(slice, column);
        for index in slice * placement.height()..(slice + 1) * placement.height() {
            let shift = match placement.cell_use(drive, index).0 {
                CellUse::Data => 0,
                CellUse::Parity => COUNT_BITS,
                CellUse::Spare => 2 * COUNT_BITS,
            };
            *packed += 1 << shift;
        }
    }
    packed_uses
}

fn slice_shape(placement: &Placement) -> SliceShape {
    let drives = placement.drives();
    let packed_uses = packed_uses_in(placement, 0);
    for slice in [1, placement.period() / 2 + 1, placement.period() - 1] {
        assert_eq!(
            packed_uses_in(placement, slice),
            packed_uses,
            "slice {slice}"
        );
    }
    let mut neighbours: Vec<Vec<(usize, u64)>> = vec![Vec::new(); drives];
    for row in 0..placement.rows_per_slice() {
        let columns: Vec<usize> = (0..placement.width())
            .map(|unit| {
                let cell = placement.cell(row, unit);
                assert!(cell.index < placement.height(), "row {row} leaves slice 0");
                placement.column_of(0, cell.drive)
            })
            .collect();
        let mut distinct = columns.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), columns.len(), "row {row} repeats a column");
        for &column in &columns {
            for &other in columns.iter().filter(|other| **other != column) {
                match neighbours[column].iter_mut().find(|(c, _)| *c == other) {
                    Some((_, count)) => *count += 1,
                    None => neighbours[column].push((other, 1)),
                }
            }
        }
    }
    SliceShape {
        packed_uses,
        neighbours,
    }
}

fn unpack(packed: u64) -> [u64; 3] {
    let mask = (1 << COUNT_BITS) - 1;
    [
        packed & mask,
        packed >> COUNT_BITS & mask,
        packed >> (2 * COUNT_BITS) & mask,
    ]
}

/// Per drive over a whole period: packed (data, parity, spare) cells. Panics when a slice
/// puts two columns on one drive (then two units of a row could share it).
fn shares_over_a_period(placement: &Placement, shape: &SliceShape) -> Vec<u64> {
    assert!(placement.period() * placement.height() < 1 << COUNT_BITS);
    if placement.drives() <= SHARES_BY_SLICE {
        shares_slice_by_slice(placement, shape)
    } else {
        shares_by_rotation(placement, shape)
    }
}

/// Counts every column of every slice of the period.
fn shares_slice_by_slice(placement: &Placement, shape: &SliceShape) -> Vec<u64> {
    let drives = placement.drives();
    let mut shares = vec![0u64; drives];
    let mut seen_in = vec![u64::MAX; drives];
    for slice in 0..placement.period() {
        for column in 0..drives {
            let drive = placement.drive_at(slice, column);
            assert_ne!(
                seen_in[drive], slice,
                "slice {slice} uses drive {drive} twice"
            );
            seen_in[drive] = slice;
            shares[drive] += shape.packed_uses[column];
        }
    }
    shares
}

/// Checks the construction (the module doc) instead of visiting all `P * N * N` slice
/// columns: in every slice of the period, one column (turning with the slice) is on the
/// base slice's drive rotated by `slice / P`, and no base slice uses a drive twice. Then
/// the `N` slices `p + P * r` put column `c` on every drive once, each drive's share is the
/// sum over `(p, c)` of what column `c` holds, and no rotated slice uses a drive twice.
fn shares_by_rotation(placement: &Placement, shape: &SliceShape) -> Vec<u64> {
    let drives = placement.drives();
    let permutations = placement.period() / drives as u64;
    for slice in 0..placement.period() {
        let column = (slice % drives as u64) as usize;
        let base = placement.drive_at(slice % permutations, column);
        let rotation = (slice / permutations) as usize;
        assert_eq!(
            placement.drive_at(slice, column),
            (base + rotation) % drives,
            "slice {slice} column {column}"
        );
    }
    let mut per_drive = 0;
    for p in 0..permutations {
        let mut seen = vec![false; drives];
        for (column, packed) in shape.packed_uses.iter().enumerate() {
            let drive = placement.drive_at(p, column);
            assert!(!seen[drive], "base slice {p} uses drive {drive} twice");
            seen[drive] = true;
            per_drive += packed;
        }
    }
    vec![per_drive; drives]
}

fn within_one_percent(values: &[u64]) -> bool {
    let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
    values
        .iter()
        .all(|value| (*value as f64 - mean).abs() <= 0.01 * mean)
}

fn shares_are_equal(width: usize) {
    for placement in placements(width) {
        let shape = slice_shape(&placement);
        let per_drive: Vec<[u64; 3]> = shares_over_a_period(&placement, &shape)
            .into_iter()
            .map(unpack)
            .collect();
        let cells = placement.period() * placement.height();
        for (kind, name) in ["data", "parity", "spare"].iter().enumerate() {
            let counts: Vec<u64> = per_drive.iter().map(|uses| uses[kind]).collect();
            assert!(
                within_one_percent(&counts),
                "{} drives, width {width}: {name} cells per drive {counts:?}",
                placement.drives()
            );
        }
        assert!(
            per_drive
                .iter()
                .all(|uses| uses.iter().sum::<u64>() == cells)
        );
        assert!(per_drive.iter().all(|uses| uses[1] > 0));
    }
}

/// The failed drives of a test over `drives` drives with `spare` spares: spread out, and
/// different from one drive count to the next.
fn failed_drives(drives: usize, spare: usize) -> Vec<usize> {
    (0..spare)
        .map(|j| (drives / 3 + j * drives / 2) % drives)
        .collect()
}

/// A table with `failed` failed and every segment rebuilt into spare cells.
fn rebuilt_table(placement: &Placement, failed: &[usize]) -> DriveTable {
    let mut table = DriveTable::new(placement.drives(), 1, u64::MAX);
    for &drive in failed {
        assert!(table.fail(placement, drive, "test", 0));
    }
    for failure in table.failures_mut() {
        assert!(failure.spare.is_some());
        failure.rebuilt.set(0);
    }
    table
}

/// Every unit of `row` is found, on a healthy drive, and no two share one.
fn assert_row_on_distinct_healthy_drives(
    placement: &Placement,
    table: &DriveTable,
    failed: &[usize],
    row: u64,
) {
    let mut drives = [usize::MAX; 32];
    for (unit, slot) in drives.iter_mut().enumerate().take(placement.width()) {
        let cell = table
            .read_cell(placement, row, unit)
            .unwrap_or_else(|| panic!("unit {unit} of row {row} not found"));
        assert!(!failed.contains(&cell.drive), "row {row} unit {unit}");
        *slot = cell.drive;
    }
    let drives = &mut drives[..placement.width()];
    drives.sort_unstable();
    assert!(
        drives.windows(2).all(|pair| pair[0] != pair[1]),
        "{} drives, row {row}: {drives:?}",
        placement.drives()
    );
}

fn rows_stay_apart_after_failures(width: usize) {
    for placement in placements(width) {
        let failed = failed_drives(placement.drives(), placement.spare());
        let table = rebuilt_table(&placement, &failed);
        let data_columns = placement.drives() - placement.spare();
        let stride = if placement.drives() <= COUNTED_BY_SLICE {
            1
        } else {
            7
        };
        for slice in (0..placement.period()).step_by(stride) {
            // One row through a failed drive per slice, the drive and cell row turning.
            let drive = failed[(slice / stride as u64) as usize % failed.len()];
            if placement.column_of(slice, drive) >= data_columns {
                continue;
            }
            let index = slice * placement.height() + slice % placement.height();
            let (_, Some((row, _))) = placement.cell_use(drive, index) else {
                panic!("drive {drive} cell {index} is in a data column but holds no unit");
            };
            assert_row_on_distinct_healthy_drives(&placement, &table, &failed, row);
        }
    }
}

/// Per survivor: units read to rebuild `failed` over a whole period.
fn rebuild_reads(placement: &Placement, shape: &SliceShape, failed: usize) -> Vec<u64> {
    let drives = placement.drives();
    let mut reads = vec![0u64; drives];
    for slice in 0..placement.period() {
        let column = placement.column_of(slice, failed);
        let (permutation, rotation) = placement.slice_map(slice);
        for &(other, rows) in &shape.neighbours[column] {
            reads[(permutation[other] as usize + rotation) % drives] += rows;
        }
    }
    assert_eq!(reads[failed], 0);
    reads.remove(failed);
    reads
}

fn coefficient_of_variation(values: &[u64]) -> f64 {
    let count = values.len() as f64;
    let mean = values.iter().sum::<u64>() as f64 / count;
    let variance = values
        .iter()
        .map(|value| (*value as f64 - mean).powi(2))
        .sum::<f64>()
        / count;
    variance.sqrt() / mean
}

fn rebuild_reads_spread_evenly(width: usize) {
    let mut worst = (0.0, 0);
    for placement in placements(width) {
        let shape = slice_shape(&placement);
        let failed = placement.drives() / 3;
        let reads = rebuild_reads(&placement, &shape, failed);
        assert!(reads.iter().sum::<u64>() > 0);
        let cv = coefficient_of_variation(&reads);
        if cv > worst.0 {
            worst = (cv, placement.drives());
        }
        assert!(
            cv < 0.10,
            "width {width} over {} drives: rebuild reads per survivor vary by {:.1}% (CV)",
            placement.drives(),
            cv * 100.0
        );
    }
    println!(
        "width {width}: worst rebuild-read CV {:.2}% at {} drives",
        worst.0 * 100.0,
        worst.1
    );
}

/// Also: no slice puts two columns on one drive, so (each row's columns being distinct)
/// no two units of a row share a drive while none has failed.
#[test]
fn shares_of_data_parity_and_spare_are_equal_for_every_drive_count() {
    for width in WIDTHS {
        shares_are_equal(width);
    }
}

#[test]
fn rows_stay_on_distinct_drives_after_failures_for_every_drive_count() {
    for width in WIDTHS {
        rows_stay_apart_after_failures(width);
    }
}

#[test]
fn rebuild_reads_spread_evenly_for_every_drive_count() {
    for width in WIDTHS {
        rebuild_reads_spread_evenly(width);
    }
}

/// Every unit of every row of a whole period, through the table, for small arrays.
#[test]
fn every_unit_of_a_period_stays_apart_after_failures_on_small_arrays() {
    for width in WIDTHS {
        for placement in placements(width).take(12) {
            let failed = failed_drives(placement.drives(), placement.spare());
            let table = rebuilt_table(&placement, &failed);
            for row in 0..placement.rows_per_slice() * placement.period() {
                assert_row_on_distinct_healthy_drives(&placement, &table, &failed, row);
            }
        }
    }
}

#[test]
fn straight_is_the_layout_of_earlier_builds() {
    let placement = Placement::new(PlacementKind::Straight, 6, 6, 2, 0).unwrap();
    for row in [0, 1, 77, 4095, 1 << 40] {
        for unit in 0..6 {
            assert_eq!(
                placement.cell(row, unit),
                Cell {
                    drive: unit,
                    index: row
                }
            );
        }
    }
}

#[test]
fn a_row_never_shares_a_drive_with_itself_or_its_spares() {
    let placement = Placement::new(
        PlacementKind::Declustered { seed: DEFAULT_SEED },
        12,
        6,
        2,
        2,
    )
    .unwrap();
    for row in 0..placement.rows_per_slice() * placement.period() {
        let mut drives: Vec<usize> = (0..6).map(|unit| placement.cell(row, unit).drive).collect();
        let home = placement.cell(row, 0);
        for spare in 0..2 {
            drives.push(placement.spare_for(home, spare).unwrap().drive);
        }
        drives.sort_unstable();
        drives.dedup();
        assert_eq!(drives.len(), 8, "row {row}");
    }
}

#[test]
fn cell_use_inverts_cell() {
    let placement = Placement::new(PlacementKind::Declustered { seed: 9 }, 11, 6, 2, 1).unwrap();
    for row in 0..500 {
        for unit in 0..6 {
            let cell = placement.cell(row, unit);
            assert_eq!(
                placement.cell_use(cell.drive, cell.index).1,
                Some((row, unit))
            );
        }
    }
}
