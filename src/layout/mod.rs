//! Layout: physical space on the NL-SAS drives.
//!
//! Promises: user blocks are written only as whole rows (stripes) with P and Q computed in
//! DRAM, so there is no write hole; a row is never rewritten while anything refers to it
//! (segments are reused only when empty and their release is durable); every row carries a
//! summary of the identity and checksum of each block in it, so media is self-describing
//! and the cleaner can find live blocks; a block that fails its checksum can be rebuilt
//! from the rest of its row.
//!
//! Drives are failure domains: a row's units sit on distinct drives chosen by a declustered
//! map with spare cells spread over every drive (`placement`); a failed drive is never
//! touched again, its units are read by reconstruction and rebuilt into spare cells by
//! all the survivors, then copied back onto a replacement (`drives`, `array`); any two
//! drives can be out with every row readable and writable. A scrub reads allocated rows,
//! verifies every block's checksum and the row's P and Q, and rewrites damaged units from
//! parity (`array::scrub`). Assumes the caller (the
//! metadata store) serializes allocation and commits, verifies every block it reads
//! against the map, and tells the heal which segments may hold referenced rows.

pub mod alloc;
pub mod array;
pub mod drive_store;
pub mod drives;
pub mod geometry;
pub mod parity;
pub mod placement;
pub mod summary;

pub use alloc::SegmentAllocator;
pub use array::{
    Array, DriveEvent, DriveInfo, HealBuffers, HealJob, HealPhase, HealPriority, HealStatus,
    RepairOutcome, RowScrub, ScrubBuffers, ScrubRepairs, ScrubTally,
};
pub use drive_store::DriveStore;
pub use drives::DriveState;
pub use geometry::{Geometry, PhysBlock};
pub use parity::ParityCodec;
pub use placement::{Placement, PlacementKind};
pub use summary::{SlotIdentity, block_checksum};
