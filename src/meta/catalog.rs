//! The catalog: pools and volumes, their names, sizes and identities. Changed only through
//! [`CatalogOp`]s, which are journaled and idempotent, so replaying one twice (a checkpoint
//! taken while it was in flight, then the journal) leaves the same catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A pool.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRecord {
    pub id: u32,
    pub name: String,
    pub physical_capacity: u64,
    pub virtual_capacity: u64,
    pub created_at: u64,
}

/// A volume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: u32,
    pub name: String,
    pub pool_id: u32,
    pub size: u64,
    pub created_at: u64,
}

/// One journaled change to the catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CatalogOp {
    CreatePool(PoolRecord),
    DeletePool { id: u32 },
    CreateVolume(VolumeRecord),
    ResizeVolume { id: u32, size: u64 },
    DeleteVolume { id: u32 },
}

/// Every pool and volume, and the next identifiers to hand out.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Catalog {
    pub serial: u64,
    pub pools: BTreeMap<u32, PoolRecord>,
    pub volumes: BTreeMap<u32, VolumeRecord>,
    pub next_pool_id: u32,
    pub next_volume_id: u32,
}

impl Catalog {
    pub fn new(serial: u64) -> Self {
        Catalog {
            serial,
            next_pool_id: 1,
            next_volume_id: 1,
            ..Default::default()
        }
    }

    /// Applies a change; applying the same change twice is harmless.
    pub fn apply(&mut self, op: &CatalogOp) {
        match op {
            CatalogOp::CreatePool(pool) => {
                self.next_pool_id = self.next_pool_id.max(pool.id + 1);
                self.pools.entry(pool.id).or_insert_with(|| pool.clone());
            }
            CatalogOp::DeletePool { id } => {
                self.pools.remove(id);
            }
            CatalogOp::CreateVolume(volume) => {
                self.next_volume_id = self.next_volume_id.max(volume.id + 1);
                self.volumes
                    .entry(volume.id)
                    .or_insert_with(|| volume.clone());
            }
            CatalogOp::ResizeVolume { id, size } => {
                if let Some(volume) = self.volumes.get_mut(id) {
                    volume.size = *size;
                }
            }
            CatalogOp::DeleteVolume { id } => {
                self.volumes.remove(id);
            }
        }
    }

    pub fn pool_by_name(&self, name: &str) -> Option<&PoolRecord> {
        self.pools.values().find(|pool| pool.name == name)
    }

    pub fn volume_by_name(&self, name: &str) -> Option<&VolumeRecord> {
        self.volumes.values().find(|volume| volume.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_twice_changes_nothing() {
        let ops = [
            CatalogOp::CreatePool(PoolRecord {
                id: 1,
                name: "p".into(),
                physical_capacity: 1 << 30,
                virtual_capacity: 1 << 30,
                created_at: 0,
            }),
            CatalogOp::CreateVolume(VolumeRecord {
                id: 1,
                name: "v".into(),
                pool_id: 1,
                size: 1 << 20,
                created_at: 0,
            }),
            CatalogOp::ResizeVolume {
                id: 1,
                size: 2 << 20,
            },
            CatalogOp::CreateVolume(VolumeRecord {
                id: 2,
                name: "w".into(),
                pool_id: 1,
                size: 1 << 20,
                created_at: 0,
            }),
            CatalogOp::DeleteVolume { id: 2 },
        ];
        let mut once = Catalog::new(5);
        ops.iter().for_each(|op| once.apply(op));
        let mut twice = once.clone();
        ops.iter().for_each(|op| twice.apply(op));
        assert_eq!(once, twice);
        assert_eq!(once.volumes[&1].size, 2 << 20);
        assert_eq!(once.next_volume_id, 3);
    }
}
