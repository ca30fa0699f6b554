//! Checkpoints as read from a vault slot once the superblock's checksum matched: the
//! header, the catalog JSON and the forest of maps (every format still loaded). No input
//! may panic or allocate without bound; a loaded forest must answer lookups and walks of
//! every dataset it names.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use troika::meta::checkpoint;
use troika::secrets::NodeKey;

/// Most entries walked per dataset (a forest of shared nodes may name 2^48 blocks).
const WALK: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let key = Arc::new(NodeKey::from_bytes([7; 32]));
    let Ok(loaded) = checkpoint::decode_checkpoint(data, &key) else {
        return;
    };
    let forest = &loaded.forest;
    let stats = forest.stats();
    assert!(stats.leaves <= stats.nodes);
    for volume in loaded.catalog.volumes.values() {
        let _ = forest.get(volume.id, 0);
        let _ = forest.len(volume.id);
        let mut walked = 0;
        forest.visit_range(volume.id, 0, u64::MAX, &mut |_, _| {
            walked += 1;
            walked < WALK
        });
    }
});
