//! Target ports: the wire protocols hosts speak (NBD, iSCSI over the SCSI command set).
//!
//! A front end promises to turn every well-formed request into calls on a [`BlockTarget`],
//! to answer malformed input with the protocol's own error, and to confine a broken stream
//! to its own connection. It assumes the layer below ([`ExportProvider`], implemented by the
//! controllers) is safe to call from many connection threads at once and that every call
//! returns once the operation has the durability its flags ask for.

pub mod iscsi;
pub mod nbd;
pub mod scsi;

use std::sync::Arc;

pub use self::nbd::NbdClient;
pub use crate::cache::{ChangedExtent, Extent, ShareOutcome};
use crate::types::IoError;

/// What a front end may list and open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub size: u64,
    pub read_only: bool,
}

/// The set of datasets hosts may reach, resolved by name at connection time, and filtered
/// by who asks: an implementation lists and opens for `client` only what it may reach,
/// and answers a name it may not reach exactly as a name that does not exist.
pub trait ExportProvider: Send + Sync {
    /// Every export `client` may reach, in a stable order (for NBD_OPT_LIST).
    fn list_exports(&self, client: &NbdClient) -> Vec<ExportInfo>;
    /// Opens a handle on the named dataset for `client`; `None` when there is no such
    /// export or `client` may not reach it.
    fn open_export(&self, client: &NbdClient, name: &str) -> Option<Arc<dyn BlockTarget>>;
}

/// A handle on one dataset, as the controllers serve it. Offsets and lengths are in
/// bytes; the caller has already checked them against `size()` but implementations check
/// again (a resize may race). All methods block the calling thread until done.
pub trait BlockTarget: Send + Sync {
    /// Name of the dataset (for messages).
    fn name(&self) -> &str;
    /// Current size in bytes (may change with a resize).
    fn size(&self) -> u64;
    /// True when writes must be refused with [`IoError::ReadOnly`].
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`. Unwritten ranges read as zeroes.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `data` at `offset`; with `fua` the call returns only once the data is durable.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoError>;
    /// Returns once every write acknowledged before this call (on any connection) is durable.
    fn flush(&self) -> Result<(), IoError>;
    /// Releases the range; later reads return zeroes.
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoError>;
    /// Makes the range read as zeroes. `no_hole`: keep it allocated. `fast_only`: fail with
    /// [`IoError::NotFast`] instead of doing slow work.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), IoError>;
    /// Hint: bring the range into cache.
    fn prefetch(&self, offset: u64, len: u64) -> Result<(), IoError>;
    /// Describes allocation of `[offset, offset+len)` by appending extents to `out`, which
    /// cover the range from `offset` contiguously (they may stop early, never go past it).
    fn block_status(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), IoError>;
    /// The dataset named `base` when this one can be compared with it (the same family):
    /// a token for [`BlockTarget::changed_status`]. `None` when it cannot.
    fn compare_with(&self, _base: &str) -> Option<u64> {
        None
    }
    /// Tells which blocks of `[offset, offset+len)` differ from the dataset `base` (a
    /// [`BlockTarget::compare_with`] token) by appending extents to `out`, contiguous from
    /// `offset` (they may stop early, never go past the range).
    fn changed_status(
        &self,
        _base: u64,
        _offset: u64,
        _len: u64,
        _out: &mut Vec<ChangedExtent>,
    ) -> Result<(), IoError> {
        Ok(())
    }
    /// Makes `[to, to+len)` of this dataset read what `[from, from+len)` of `source`
    /// reads by sharing the source's blocks on the array (a copy by reference: no data
    /// written, no space taken) where both are datasets of one family on this node.
    /// `Ok(None)` when it cannot be done that way (another kind of dataset, another
    /// family, a range not in whole blocks): the caller copies bytes.
    fn copy_by_reference(
        &self,
        _source: &dyn BlockTarget,
        _from: u64,
        _to: u64,
        _len: u64,
    ) -> Result<Option<ShareOutcome>, IoError> {
        Ok(None)
    }
    /// The concrete dataset behind this handle, for [`BlockTarget::copy_by_reference`];
    /// `None` for handles that cannot share blocks.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}
