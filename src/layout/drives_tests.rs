use super::*;
use crate::layout::placement::{DEFAULT_SEED, PlacementKind};

fn placement() -> Placement {
    Placement::new(
        PlacementKind::Declustered { seed: DEFAULT_SEED },
        10,
        6,
        2,
        2,
    )
    .unwrap()
}

#[test]
fn a_failed_drive_is_read_from_spare_once_its_segment_is_rebuilt() {
    let placement = placement();
    let mut table = DriveTable::new(10, 8, 4);
    let (row, unit) = (5, 3);
    let home = placement.cell(row, unit);
    assert!(table.fail(&placement, home.drive, "test", 0));
    assert_eq!(table.read_cell(&placement, row, unit), None);
    let spare = placement.spare_for(home, 0).unwrap();
    assert_eq!(table.write_cell(&placement, row, unit), Some(spare));
    assert_eq!(
        table.healed_cell(&placement, row, unit, home.drive),
        Some(spare)
    );
    table.failures_mut()[0].rebuilt.set(row / 4);
    assert_eq!(table.read_cell(&placement, row, unit), Some(spare));
}

#[test]
fn copy_back_returns_units_to_the_replacement() {
    let placement = placement();
    let mut table = DriveTable::new(10, 8, 4);
    let home = placement.cell(0, 0);
    table.fail(&placement, home.drive, "test", 0);
    for segment in 0..8 {
        table.failures_mut()[0].rebuilt.set(segment);
    }
    table.replace(home.drive).unwrap();
    assert_eq!(table.state(home.drive), DriveState::Replacing);
    assert_ne!(table.read_cell(&placement, 0, 0), Some(home));
    for segment in 0..8 {
        table.failures_mut()[0]
            .copied
            .as_mut()
            .unwrap()
            .set(segment);
    }
    assert_eq!(table.read_cell(&placement, 0, 0), Some(home));
    assert_eq!(table.retire_copied(), vec![home.drive]);
    assert_eq!(table.state(home.drive), DriveState::Active);
}
