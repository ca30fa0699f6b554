//! troika: a three-controller storage array in one process.
//!
//! # The layers
//!
//! Data flows down the chain `target` (wire protocols: NBD, iSCSI over SCSI) →
//! `controller` (the controllers: ownership, routing, mirroring, failover, their ports) →
//! `cache` (DRAM write-back cache, vault, destage and segment cleaning in
//! `cache/destage.rs`) → `meta` (pools, volumes, snapshots, the redirect-on-write map, the
//! journal and checkpoints) → `layout` (stripes with P+Q parity on the NL-SAS drives,
//! allocation) → `io` (io_uring, aligned buffers, devices, fault injection) → `hw` (the
//! hardware model). Completions flow back up. Each module's doc says what it promises.
//!
//! # Which module may use which
//!
//! A module uses only modules below it, and no two modules use each other. Below means:
//!
//! - `hw` < `io` < `layout` < `ssd` < `meta` < `cache`: each uses only those to its left
//!   (`ssd` is the SSD read-cache tier, keyed by physical block; it uses only `io` and
//!   `hw`).
//! - `stats` (per-volume and per-controller I/O counters, and the Prometheus text of
//!   what it is given) sits on `cache` and `meta`; the controllers count into it.
//! - `target` sits on `cache` (whose `ShareOutcome`, `Extent` and `ChangedExtent` it
//!   answers with). It defines the interface its front ends call, `BlockTarget` and
//!   `ExportProvider`, and never names a controller: `controller` implements that interface
//!   and opens the NBD ports, so `controller` uses `target` (data still flows from the
//!   ports down into the controllers, through the interface).
//! - `controller` uses `target`, `stats` and everything below them. It returns its own
//!   errors and builds `ControllerInfo`, the shape operators see of a controller.
//! - `mgmt` (the control plane's server: REST, users, events, the wire types in
//!   `mgmt::api`) uses any layer below it; no layer below uses `mgmt`.
//! - `cli` (the management client: the operator's CLI, its HTTP client, `top`) sits beside
//!   `mgmt` and uses only `mgmt`'s wire types and its TLS client settings: it talks to a
//!   node only through the management API's wire format.
//! - `node` wires everything together and may use every module but `cli`; `main.rs` (the
//!   binary) may use all of them.
//!
//! Leaves that any module may use, and that use only each other: `types` (plain shared
//! types: ids, sizes, the data-path error, time formatting), `console` (`say!`), `fatal`
//! (stopping on a durability failure), `private_files` (every file the node creates, 0600
//! in a 0700 directory), `secrets` (sealing kept secrets under the node key), `clock` and
//! `poll`. A type two layers share lives in the lower one or in `types`.
//!
//! Inside a module, files do not import each other in a cycle either, unless a `cycle:`
//! comment at the import says why the cycle is the simpler design. `tests/layering.rs`
//! checks all of this on the source text (its `LAYER_RULE` table mirrors this list).

pub mod cache;
pub mod cli;
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
pub mod ssd;
pub mod stats;
pub mod target;
#[cfg(test)]
mod testing;
pub mod types;
