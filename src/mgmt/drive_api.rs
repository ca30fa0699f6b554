//! The drives of the NL-SAS array as the control plane shows them, in InfiniBox's component
//! shape: enclosures of [`DRIVES_PER_ENCLOSURE`] drives, each drive named by its
//! `enclosure_index` and `drive_index` (both from 1), plus troika's own number for it (`id`,
//! the array's drive index from 0, which `troika drive` and the drive events use), and the
//! state of the heal (rebuild or copy-back) that runs while a drive is out.
//!
//! What it promises: a drive's `id` and its enclosure position name the same slot for the
//! life of the node; `serial_number` is stable for a slot until the drive in it is
//! replaced, and a replacement gets a new one.

use serde::{Deserialize, Serialize};

// cycle: the drive calls answer the control plane's one error type, and `Management` in
// `api` extends `DriveManagement`; the drive surface stays in its own file (api.rs is long
// enough as it is).
use super::api::MgmtError;
use crate::layout::HealPriority;

/// Drive slots per enclosure, as in an InfiniBox drive enclosure.
pub const DRIVES_PER_ENCLOSURE: u32 = 60;

/// `(enclosure_index, drive_index)` of array drive `id` (both from 1).
pub fn slot_of(id: u32) -> (u32, u32) {
    (id / DRIVES_PER_ENCLOSURE + 1, id % DRIVES_PER_ENCLOSURE + 1)
}

/// The array drive at `(enclosure_index, drive_index)`; `None` for a position that names
/// no slot (0, or a drive index past the enclosure's).
pub fn id_of_slot(enclosure: u32, drive: u32) -> Option<u32> {
    if enclosure == 0 || drive == 0 || drive > DRIVES_PER_ENCLOSURE {
        return None;
    }
    (enclosure - 1)
        .checked_mul(DRIVES_PER_ENCLOSURE)?
        .checked_add(drive - 1)
}

/// One drive (schema `Drive`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DriveInfo {
    /// The array's drive number, from 0 (`troika drive fail ID`).
    pub id: u32,
    /// Its position in its enclosure, from 1.
    pub drive_index: u32,
    pub enclosure_index: u32,
    pub serial_number: String,
    pub bytes_capacity: u64,
    /// ACTIVE, FAILED, REBUILDING or REPLACING.
    pub state: String,
    /// The hardware model's name of the slot (`nlsas3`).
    pub name: String,
    /// The file or block device now in the slot.
    pub path: String,
    /// Percent done of the drive's rebuild or copy-back (100 when none runs).
    pub rebuild_progress: f64,
    /// Reads that failed on it since the node started (or since it was replaced).
    pub read_errors: u64,
    /// Why it failed, while it is not ACTIVE.
    pub failure_reason: Option<String>,
}

/// One drive enclosure with its drives (schema `Enclosure`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnclosureInfo {
    /// The enclosure's index, from 1.
    pub id: u32,
    /// OK, or DEGRADED while one of its drives is not ACTIVE.
    pub state: String,
    pub drives: Vec<DriveInfo>,
}

/// The rebuild or copy-back that runs while a drive is out (schema `Rebuild`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RebuildInfo {
    /// IDLE, REBUILD (into distributed spare space) or COPYBACK (onto a replacement).
    pub phase: String,
    /// The drive being healed.
    pub drive_id: Option<u32>,
    /// Share of the job done, 0 to 1 (1 when idle).
    pub progress: f64,
    pub segments_done: u64,
    pub segments: u64,
    /// Bytes the job moved so far, and in how many seconds.
    pub bytes: u64,
    pub seconds: f64,
    pub bytes_per_second: f64,
    /// Seconds to go at the rate so far; null before the first segment and when idle.
    pub eta_seconds: Option<f64>,
    /// LOW, MEDIUM or HIGH: how much the heal yields to host reads.
    pub priority: String,
    /// Drives not ACTIVE.
    pub drives_out: u32,
}

/// `POST .../drives/{d}/replace` body (schema `DriveReplace`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriveReplace {
    /// An absolute path on the node: a block device, or a file (created sparse, at the
    /// model's drive size, when missing).
    pub path: String,
}

/// `PUT /api/rest/components/rebuild` body (schema `RebuildUpdate`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RebuildUpdate {
    /// LOW, MEDIUM or HIGH (any case).
    pub priority: String,
}

/// A drive number that names no drive.
pub fn drive_not_found(what: impl std::fmt::Display) -> MgmtError {
    MgmtError::new(
        "DRIVE_NOT_FOUND",
        404,
        format!("drive {what} does not exist; `troika drive ls` lists the drives"),
    )
}

fn no_drives() -> MgmtError {
    MgmtError::new(
        "NOT_SUPPORTED",
        501,
        "this management back end does not model drives",
    )
}

/// The drives and their heal: the node implements them; the test fake has no drives
/// (lists are empty, changes answer NOT_SUPPORTED).
pub trait DriveManagement: Send + Sync {
    /// Every drive, by id.
    fn drives(&self) -> Vec<DriveInfo> {
        Vec::new()
    }
    /// Fails drive `id` for `reason`: it is never read or written again and its data is
    /// rebuilt into spare space. Refuses `DRIVE_NOT_FOUND` (404) and `DRIVE_STATE` (409)
    /// when it is not ACTIVE.
    fn fail_drive(&self, _id: u32, _reason: &str) -> Result<DriveInfo, MgmtError> {
        Err(no_drives())
    }
    /// Puts the device at `path` in the place of failed drive `id` and starts copying its
    /// data back. Refuses an ACTIVE or already replacing drive (`DRIVE_STATE`, 409), a
    /// path another drive or the vault uses (`DRIVE_PATH_IN_USE`, 409) and a device that
    /// cannot be opened or is too small (`BAD_REQUEST`).
    fn replace_drive(&self, _id: u32, _path: &str) -> Result<DriveInfo, MgmtError> {
        Err(no_drives())
    }
    fn rebuild(&self) -> Result<RebuildInfo, MgmtError> {
        Err(no_drives())
    }
    fn set_rebuild_priority(&self, _priority: HealPriority) -> Result<RebuildInfo, MgmtError> {
        Err(no_drives())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_ids_name_each_other() {
        assert_eq!(slot_of(0), (1, 1));
        assert_eq!(slot_of(59), (1, 60));
        assert_eq!(slot_of(60), (2, 1));
        assert_eq!(slot_of(1023), (18, 4));
        for id in 0..2000 {
            let (enclosure, drive) = slot_of(id);
            assert_eq!(id_of_slot(enclosure, drive), Some(id));
        }
        assert_eq!(id_of_slot(0, 1), None);
        assert_eq!(id_of_slot(1, 0), None);
        assert_eq!(id_of_slot(1, 61), None);
        assert_eq!(id_of_slot(u32::MAX, 60), None);
    }
}
