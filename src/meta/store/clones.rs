//! Copies by reference: a dataset's blocks made to refer to blocks its family already
//! holds, so copying inside the node moves no data and takes no space.

use super::{MetaState, MetaStore};
use crate::meta::records::{self, SharedBlock};

impl MetaStore {
    /// Makes each block's `lba` of `volume` refer to its block (already referred to by the
    /// same family at `home`) and journals it (not committed: a later flush commits it).
    /// The caller holds the state lock (from [`MetaStore::state_mut`]) and has checked,
    /// under that lock, that every `entry` is still what the family refers to at `home`.
    pub fn share_locked(&self, state: &mut MetaState, volume: u32, blocks: &[SharedBlock]) {
        if blocks.is_empty() || !state.maps.contains(volume) {
            return;
        }
        let mut freed = Vec::new();
        for block in blocks {
            state
                .maps
                .share_block(volume, block.lba, block.home, block.entry, &mut freed);
        }
        let (ticket, _) = self.journal.append(records::SHARE, |out| {
            records::encode_share(volume, blocks, out)
        });
        state.release_freed(&freed, ticket);
    }
}
