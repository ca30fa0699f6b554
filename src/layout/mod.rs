//! Layout: physical space on the NL-SAS drives.
//!
//! Promises: user blocks are written only as whole rows (stripes) with P and Q computed in
//! DRAM, so there is no write hole; a row is never rewritten while anything refers to it
//! (segments are reused only when empty and their release is durable); every row carries a
//! summary of the identity and checksum of each block in it, so media is self-describing
//! and the cleaner can find live blocks; a block that fails its checksum can be rebuilt
//! from the rest of its row. Assumes the caller (the metadata store) serializes allocation
//! and commits, and verifies every block it reads against the map.

pub mod alloc;
pub mod array;
pub mod geometry;
pub mod parity;
pub mod summary;

pub use alloc::SegmentAllocator;
pub use array::Array;
pub use geometry::{Geometry, PhysBlock};
pub use parity::ParityCodec;
pub use summary::{SlotIdentity, block_checksum};
