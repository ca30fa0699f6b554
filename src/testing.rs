//! Pieces the in-crate tests share: a seeded generator and a small real store.

use std::path::Path;

use crate::io::Device;
use crate::layout::Array;
use crate::meta::{MetaStore, OpenReport, RecoveredBlock};

/// A deterministic generator (xorshift64*), so a failing seed replays exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The node key in-crate tests seal secrets with.
pub fn test_key() -> std::sync::Arc<crate::secrets::NodeKey> {
    std::sync::Arc::new(crate::secrets::NodeKey::from_bytes([0x5e; 32]))
}

/// Opens (formatting when new) the metadata store of a small node whose devices are
/// sparse files in `dir`: a 256 MiB vault SSD and six 32 MiB NL-SAS drives in 4+2 rows of
/// 64 KiB units.
pub fn open_small_store(dir: &Path) -> (MetaStore, Vec<RecoveredBlock>) {
    let (meta, recovered, _) = open_small_store_with_report(dir);
    (meta, recovered)
}

/// [`open_small_store`], with what recovery did.
pub fn open_small_store_with_report(dir: &Path) -> (MetaStore, Vec<RecoveredBlock>, OpenReport) {
    let ssd = Device::open(&dir.join("ssd0.img"), Some(256 << 20), None).unwrap();
    let drives = (0..6)
        .map(|index| {
            let path = dir.join(format!("nlsas{index}.img"));
            Device::open(&path, Some(32 << 20), None).unwrap()
        })
        .collect();
    let array = Array::straight(drives, 4, 64 << 10, 4);
    MetaStore::open(ssd, array, test_key()).unwrap()
}
