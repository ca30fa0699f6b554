//! A catalog change's effect on the redirect-on-write maps, in one place for the two paths
//! that need it: the store when a change is made, and replay when it is read back from the
//! journal.

use super::catalog::{Catalog, CatalogOp};
use super::forest::{Forest, Root};
use crate::types::BLOCK_SIZE;

/// Applies a catalog change's effect on the maps (the same when a change is made and when
/// it is replayed).
pub(super) fn apply_to_forest(forest: &mut Forest, catalog: &Catalog, op: &CatalogOp) {
    let blocks = |id: &u32| {
        catalog
            .volumes
            .get(id)
            .map_or(0, |volume| volume.size / BLOCK_SIZE as u64)
    };
    match op {
        CatalogOp::CreateVolume(volume) => {
            forest.create(volume.id, volume.family(), blocks(&volume.id));
        }
        CatalogOp::ResizeVolume { id, .. } => forest.cover(*id, blocks(id)),
        CatalogOp::DeleteVolume { id } => {
            forest.drop_dataset(*id);
        }
        CatalogOp::CreateSnapshots { snapshots, .. } => {
            for snapshot in snapshots {
                if !forest.contains(snapshot.id) {
                    forest.share(snapshot.parent_id, snapshot.id);
                }
            }
        }
        CatalogOp::TakeContents(pairs) => {
            // Every source is read before any target changes: one instant for all.
            let sources: Vec<(u32, Option<Root>)> = pairs
                .iter()
                .map(|(id, from)| (*id, forest.root(*from)))
                .collect();
            forest.share_all(&sources);
        }
        _ => {}
    }
}
