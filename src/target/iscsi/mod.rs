//! The iSCSI target (RFC 7143): one target per node, a portal per controller.
//!
//! The layer promises: logins negotiate every key per RFC 7143 (unknown keys answered
//! NotUnderstood) with CHAP (MD5) one-way or mutual as the host record asks; a session sees
//! exactly the LUNs its initiator's host is mapped to; malformed PDUs get a Reject or close
//! only their own connection; SCSI commands go to [`crate::target::scsi`] and complete in
//! CmdSN order of admission, with R2T/Data-Out sequencing, digests and burst limits as
//! negotiated. It assumes the [`IscsiBackend`] is safe to call from many threads.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::target::scsi::LogicalUnit;

/// One network portal: where a controller listens, and its target portal group tag (the
/// controller number: 1, 2, 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    pub address: SocketAddr,
    pub tpgt: u16,
}

/// CHAP credentials: the initiator proves it knows `secret` for `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: String,
}

/// How one initiator must authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// No authentication (AuthMethod=None).
    None,
    /// CHAP: the initiator answers the target's challenge with `inbound`; with `outbound`
    /// (mutual CHAP) the target answers the initiator's challenge with it.
    Chap {
        inbound: ChapCredentials,
        outbound: Option<ChapCredentials>,
    },
}

/// What the node tells the iSCSI layer about initiators and LUNs. Called from connection
/// threads; must be cheap for [`IscsiBackend::generation`] (one atomic load).
pub trait IscsiBackend: Send + Sync {
    /// The node's target name (`iqn.2025-01.io.troika:<serial>`).
    fn target_name(&self) -> String;
    /// Every portal of the node (for SendTargets), controllers whose ports are closed left out.
    fn portals(&self) -> Vec<Portal>;
    /// How `initiator` must log in; `None` when no host has this initiator port (a normal
    /// session is then refused with Authorization Failure 0x0202; discovery is allowed).
    fn authentication(&self, initiator: &str) -> Option<Authentication>;
    /// The LUNs `initiator` sees, sorted, each with its dataset id.
    fn luns(&self, initiator: &str) -> Vec<(u64, u32)>;
    /// Opens `dataset_id` as logical unit for a session on controller `tpgt`'s portal;
    /// `None` when it is gone.
    fn open_unit(&self, dataset_id: u32, tpgt: u16) -> Option<LogicalUnit>;
    /// Changes whenever mappings, hosts or datasets change: sessions re-read their LUNs.
    fn generation(&self) -> u64;
}

/// Tunables of the target (defaults per RFC 7143 where it has one).
#[derive(Clone, Debug)]
pub struct IscsiConfig {
    /// Commands the target admits ahead (MaxCmdSN - ExpCmdSN + 1).
    pub queue_depth: u32,
    /// Worker threads per connection that execute SCSI commands.
    pub workers_per_connection: usize,
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            queue_depth: 128,
            workers_per_connection: 4,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
        }
    }
}

/// Starts serving iSCSI on `listener` as portal `tpgt` until `shutdown` is set; closes every
/// connection of the portal then (the controller failed or the node stops).
pub fn spawn_portal(
    listener: std::net::TcpListener,
    tpgt: u16,
    backend: Arc<dyn IscsiBackend>,
    config: IscsiConfig,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let directory: Arc<dyn session::Directory> = Arc::new(session::BackendDirectory(backend));
    server::spawn(listener, tpgt, directory, config, shutdown)
}

mod chap;
mod connection;
mod dataout;
mod keys;
mod login;
pub mod pdu;
mod respond;
mod server;
mod session;
mod text;
mod tmf;
mod wire;

#[cfg(test)]
mod tests;
