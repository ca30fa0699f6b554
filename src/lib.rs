//! troika: a three-controller storage array in one process.
//!
//! Layers, top to bottom (see each module's doc for what it promises): `target` (wire
//! protocols) → `controller` (ownership and routing) → `cache` (DRAM write-back cache,
//! vault, destage) → `meta` (pools, volumes, the redirect-on-write map, the journal) →
//! `layout` (stripes with P+Q parity on the NL-SAS drives, segment cleaning) → `io`
//! (io_uring, aligned buffers, devices) → `hw` (the hardware model). `mgmt` is the
//! control plane beside them; `stats` counts I/O per volume and controller for its
//! `/metrics`; `node` wires them together. `private_files` makes every file the node
//! creates (0600, in a 0700 directory) and `secrets` seals the secrets it keeps (under
//! the node key), for any layer to use.
//! `clock` (wall-clock timestamps) and `poll` (waiting until a descriptor is readable) are
//! leaves too, for any layer to use.

pub mod cache;
pub mod clock;
pub mod console;
pub mod controller;
pub mod fatal;
pub mod hw;
pub mod io;
pub mod layout;
pub mod meta;
pub mod mgmt;
pub mod node;
pub mod poll;
pub mod private_files;
pub mod secrets;
pub mod stats;
pub mod target;
#[cfg(test)]
mod testing;
pub mod types;
