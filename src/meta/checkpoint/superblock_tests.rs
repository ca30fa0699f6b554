use super::*;

fn superblock(placement: RecordedPlacement) -> Superblock {
    Superblock {
        sequence: 9,
        serial: 77,
        data_devices: 14,
        unit: 1 << 20,
        rows_per_segment: 64,
        rows: 1 << 30,
        layout: SsdLayout::plan(1 << 40, 1 << 40).unwrap(),
        checkpoint_slot: 1,
        checkpoint_len: 4096,
        checkpoint_sum: 5,
        checkpoint_lsn: 11,
        replay_from: 10,
        key_id: Some(0xfeed),
        placement,
    }
}

fn encoded(superblock: &Superblock) -> Vec<u8> {
    let mut page = vec![0; PAGE as usize];
    superblock.encode(&mut page);
    page
}

/// Rewrites an encoded page as format `version` (as an older build wrote it: nothing past
/// the fields that version had).
fn as_version(mut page: Vec<u8>, version: u64, fields: usize) -> Vec<u8> {
    page[8..16].copy_from_slice(&version.to_le_bytes());
    page[fields * 8..PAGE as usize - 8].fill(0);
    let sum = xxh3_64(&page[..PAGE as usize - 8]);
    page[PAGE as usize - 8..].copy_from_slice(&sum.to_le_bytes());
    page
}

#[test]
fn the_placement_round_trips() {
    for placement in [
        RecordedPlacement {
            drives: 480,
            spare: 24,
            kind: PlacementKind::Declustered { seed: u64::MAX - 3 },
        },
        RecordedPlacement {
            drives: 6,
            spare: 0,
            kind: PlacementKind::Straight,
        },
    ] {
        let written = superblock(placement);
        assert_eq!(Superblock::decode(&encoded(&written)), Some(written));
    }
}

#[test]
fn superblocks_of_formats_1_and_2_mean_the_straight_layout() {
    let declustered = superblock(RecordedPlacement {
        drives: 480,
        spare: 2,
        kind: PlacementKind::Declustered { seed: 1 },
    });
    let straight = RecordedPlacement {
        drives: 16,
        spare: 0,
        kind: PlacementKind::Straight,
    };
    let v2 = Superblock::decode(&as_version(encoded(&declustered), 2, 17)).unwrap();
    assert_eq!(v2.placement, straight);
    assert_eq!(v2.key_id, Some(0xfeed));
    let v1 = Superblock::decode(&as_version(encoded(&declustered), 1, 16)).unwrap();
    assert_eq!(v1.placement, straight);
    assert_eq!(v1.key_id, None);
}

#[test]
fn unknown_placements_and_versions_are_refused() {
    let written = superblock(RecordedPlacement {
        drives: 10,
        spare: 2,
        kind: PlacementKind::Declustered { seed: 1 },
    });
    let mut page = encoded(&written);
    page[19 * 8..20 * 8].copy_from_slice(&2u64.to_le_bytes());
    assert!(Superblock::decode(&as_version(page, 3, 21)).is_none());
    assert!(Superblock::decode(&as_version(encoded(&written), 4, 21)).is_none());
    assert!(Superblock::decode(&as_version(encoded(&written), 0, 21)).is_none());
}

#[test]
fn small_vaults_keep_their_layout_and_huge_arrays_get_a_capped_slot() {
    // Before the cap: catalog reserve + 36 bytes per block + a page, in whole MiB.
    let small = SsdLayout::plan(256 << 20, 130_000).unwrap();
    assert_eq!(small.checkpoint_slot_len, 13 << 20);
    assert_eq!(small.log_start, 2 * PAGE + 2 * (13 << 20));
    // hw/api.toml's: slots of more than an eighth of the SSD, as earlier builds made them.
    let mid = SsdLayout::plan(8 << 30, 66_100_000).unwrap();
    assert_eq!(mid.checkpoint_slot_len, 2278 << 20);
    // 2.5 PB of 4 KiB blocks would want 22 TB slots; an 8 TiB vault gives each 1 TiB.
    let huge = SsdLayout::plan(8 << 40, 600_000_000_000).unwrap();
    assert_eq!(huge.checkpoint_slot_len, 1 << 40);
    assert_eq!(huge.log_len, (8 << 40) - (2 << 40) - 2 * PAGE);
    let overflow = SsdLayout::plan(u64::MAX / 2, u64::MAX).unwrap();
    assert_eq!(overflow.checkpoint_slot_len, u64::MAX / 2 / 8 / MIB * MIB);
    let err = SsdLayout::plan(40 << 20, u64::MAX).unwrap_err();
    assert!(
        err.contains("too small") && err.contains("give it at least"),
        "{err}"
    );
}
