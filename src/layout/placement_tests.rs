use super::*;

#[test]
fn straight_is_the_layout_of_earlier_builds() {
    let placement = Placement::new(PlacementKind::Straight, 6, 6, 2, 0).unwrap();
    for row in [0, 1, 77, 4095] {
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
