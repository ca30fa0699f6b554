//! The SCSI block command set (SPC-5 / SBC-4) over a [`BlockTarget`], shared by every
//! front end that carries CDBs (iSCSI now).
//!
//! A [`LogicalUnit`] promises: every CDB gets a SCSI status and, on CHECK CONDITION, fixed
//! format sense naming what was wrong (never a panic, whatever the bytes); unsupported
//! opcodes get ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (0x20/0x00); writes to a
//! write-protected dataset get DATA PROTECT; SYNCHRONIZE CACHE and FUA have the flush
//! semantics of DESIGN.md invariant 2 (the [`BlockTarget`] calls return once durable).
//! State that belongs to the logical unit rather than the path (persistent reservations,
//! SPC-2 reservations, unit attentions, the COMPARE AND WRITE interlock) lives in one
//! [`LuShared`] per dataset, kept by the node-wide [`LuRegistry`], so every session on every
//! controller sees the same. Persistent reservations survive restarts through [`PrStore`].

use std::sync::Arc;

use crate::target::BlockTarget;

/// Logical block size served to SCSI initiators.
pub const BLOCK_SIZE: u32 = 512;

/// SCSI status codes.
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Who sent a command: one I_T nexus.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// The initiator port's SCSI name: for iSCSI `"<initiator name>,i,0x<ISID in 12 hex>"`.
    pub initiator_port: String,
    /// The initiator's name alone (`iqn....`), for TransportID matching in PR OUT.
    pub initiator_name: String,
    /// The relative target port identifier the command arrived on (controller number:
    /// 1, 2, 3). Also that port's target port group id.
    pub relative_port: u16,
}

/// ALUA asymmetric access states (SPC-5 table "ASYMMETRIC ACCESS STATE").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AluaState {
    ActiveOptimized = 0x0,
    ActiveNonOptimized = 0x1,
    Standby = 0x2,
    Unavailable = 0x3,
    Offline = 0xE,
    Transitioning = 0xF,
}

/// One target port group (one per controller here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroup {
    pub id: u16,
    pub state: AluaState,
    /// Relative target port identifiers in the group.
    pub relative_ports: Vec<u16>,
}

/// The node's view of its target ports, asked at INQUIRY / REPORT TARGET PORT GROUPS time.
pub trait PortGroups: Send + Sync {
    /// Every target port group, in id order.
    fn groups(&self) -> Vec<PortGroup>;
    /// The SCSI name of the target port `relative_port` (iSCSI: `"<target iqn>,t,0x<tpgt 4 hex>"`).
    fn target_port_name(&self, relative_port: u16) -> String;
    /// The target device name (iSCSI: the target IQN), for VPD 0x83 SCSI name strings.
    fn target_name(&self) -> String;
}

/// Where persistent reservations of a dataset are kept across restarts. `save` returns
/// only once the state is durable (PR OUT answers GOOD after it). `load` gives `Ok(None)`
/// only when nothing was ever saved; any failure to read what was saved is an error.
pub trait PrStore: Send + Sync {
    fn load(&self, dataset_id: u32) -> std::io::Result<Option<Vec<u8>>>;
    /// Where `dataset_id`'s state is kept (a file's path), for operator messages.
    fn location(&self, dataset_id: u32) -> String;
    fn save(&self, dataset_id: u32, state: &[u8]) -> std::io::Result<()>;
    fn remove(&self, dataset_id: u32);
}

/// How a logical unit is named to initiators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuIdentity {
    /// The dataset (volume or snapshot) id: the key of its shared state.
    pub dataset_id: u32,
    /// NAA 6h (IEEE registered extended) designator, 16 bytes, unique per dataset, stable
    /// across restarts (VPD 0x83, EXTENDED COPY target descriptors).
    pub naa: [u8; 16],
    /// Unit serial number (VPD 0x80).
    pub serial: String,
    /// The dataset's name (messages only).
    pub name: String,
}

/// Finds another logical unit the same initiator can reach, by its 16-byte NAA designator
/// (EXTENDED COPY source and destination descriptors).
pub trait CopyPeers {
    fn by_naa(&self, naa: &[u8]) -> Option<LogicalUnit>;
}

/// A command's answer. Buffers are reused between commands (clear, then fill).
#[derive(Debug, Default)]
pub struct Response {
    pub status: u8,
    /// Data-In to return (the front end truncates to the allocation / expected length and
    /// reports the residual).
    pub data_in: Vec<u8>,
    /// Fixed-format sense data (18 bytes or more) when `status` is CHECK CONDITION.
    pub sense: Vec<u8>,
}

impl Response {
    pub fn clear(&mut self) {
        self.status = status::GOOD;
        self.data_in.clear();
        self.sense.clear();
    }
}

/// Node-wide logical unit state: one [`LuShared`] per dataset, created on first use.
pub struct LuRegistry {
    pub(crate) inner: registry::Inner,
}

/// What every path to one dataset shares.
pub struct LuShared {
    pub(crate) inner: shared::Inner,
}

/// One dataset as one path (session, controller) serves it.
#[derive(Clone)]
pub struct LogicalUnit {
    pub target: Arc<dyn BlockTarget>,
    pub identity: Arc<LuIdentity>,
    pub shared: Arc<LuShared>,
    pub ports: Arc<dyn PortGroups>,
}

mod atomic;
mod cdb;
mod inquiry;
mod mode;
mod opcodes;
mod pr;
mod provisioning;
mod registry;
mod rw;
mod sense;
mod shared;
mod unit;
mod xcopy;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use pr::DamagedReservations;
pub use registry::ReservationsError;
pub use unit::{lun_not_present, report_luns};
