//! Metadata: pools, volumes, the redirect-on-write map and the journal that makes every
//! change to them durable.
//!
//! Promises: a catalog change is durable when its call returns; map changes (destage
//! commits, trims) are durable once the journal is committed past them; after a crash the
//! store comes back as the newest checkpoint plus the journal replayed in order, with the
//! flushed-but-not-destaged blocks handed back to the cache. No metadata is overwritten in
//! place: journal batches go to fresh log space, checkpoints and superblocks ping-pong
//! between two slots. Assumes the layer above (the cache) appends map commits only for
//! blocks written to the array and synced, and holds its flush lock around checkpoints.

mod apply;
pub mod bounds;
pub mod catalog;
pub mod checkpoint;
#[cfg(test)]
pub(crate) mod failpoint;
pub mod forest;
pub mod host_records;
pub mod journal;
pub mod records;
mod replay;
pub mod store;
pub mod usage;

pub use catalog::{
    CapacityLevel, Catalog, CatalogOp, CgRecord, DatasetKind, PolicyRecord, PoolRecord,
    Provisioning, ScheduleRecord, VolumeRecord,
};
pub use forest::{Forest, MapEntry};
pub use host_records::{
    ChapMethod, ChapSettings, ClusterRecord, HostPort, HostRecord, LunOwner, LunRecord, PortKind,
};
pub use journal::{Journal, JournalError};
pub use replay::RecoveredBlock;
pub use store::{BlockRead, MetaError, MetaState, MetaStore, OpenReport};
pub use usage::{PoolUsage, VolumeHandle};
