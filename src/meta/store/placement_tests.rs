//! The placement of rows on the drives is recorded at format and a model that lays them
//! out otherwise is refused at start, naming what was recorded and what to use.

use std::path::Path;

use super::{MetaError, MetaStore};
use crate::io::Device;
use crate::layout::placement::DEFAULT_SEED;
use crate::layout::{Array, Placement, PlacementKind};
use crate::testing::{open_small_store, test_key};

/// 32 MiB drives of 64 KiB units in 4+2 rows: six of them straight, or `drives`
/// declustered with `spare` drives' worth of spare (seven with one spare give the straight
/// layout's 512 rows, so only the placement differs).
fn open_declustered(dir: &Path, drives: usize, spare: usize) -> Result<MetaStore, MetaError> {
    let ssd = Device::open(&dir.join("ssd0.img"), Some(256 << 20), None).unwrap();
    let devices = (0..drives)
        .map(|index| {
            let path = dir.join(format!("nlsas{index}.img"));
            Device::open(&path, Some(32 << 20), None).unwrap()
        })
        .collect();
    let kind = PlacementKind::Declustered { seed: DEFAULT_SEED };
    let placement = Placement::new(kind, drives, 6, 2, spare).unwrap();
    let array = Array::new(devices, 4, 64 << 10, 4, placement);
    MetaStore::open(ssd, array, test_key()).map(|(store, _, _)| store)
}

fn refusal(outcome: Result<MetaStore, MetaError>) -> String {
    match outcome {
        Ok(_) => panic!("a model with another placement was accepted"),
        Err(MetaError::Invalid(message)) => message,
        Err(other) => panic!("refused for another reason: {other}"),
    }
}

#[test]
fn a_straight_vault_refuses_a_declustered_model_and_says_which_to_use() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_small_store(dir.path()));
    let message = refusal(open_declustered(dir.path(), 7, 1));
    for part in [
        "was laid out as the straight layout over 6 drives",
        "the hardware model describes declustered rows over 7 drives with 1 drives' worth of spare",
        "exactly 6 [[nlsas]] drives and no spare",
        "Upgrading",
    ] {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
    // The refusal changed nothing: the recorded model still opens.
    drop(open_small_store(dir.path()));
}

#[test]
fn a_declustered_vault_opens_with_its_model_only() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_declustered(dir.path(), 8, 2).unwrap());
    drop(open_declustered(dir.path(), 8, 2).unwrap());
    let message = refusal(open_declustered(dir.path(), 8, 1));
    assert!(
        message.contains("declustered rows over 8 drives with 2 drives' worth of spare")
            && message.contains("8 [[nlsas]] drives and spare_drives = 2"),
        "{message}"
    );
}
