//! The drives over the live node: the array's drive states turned into InfiniBox's drive
//! components, failing and replacing drives, and the heal's status and priority.
//!
//! Serial numbers are derived, not stored: `TRK<node serial>D<drive>` for the drive the
//! hardware model put in the slot, with `R<hash of its path>` appended for a replacement.
//! The replacement's path is persisted with the drive table (`DATA/drives.json`), so a
//! replaced drive keeps its serial across restarts and differs from the one it replaced.
//! The heal priority is kept in `DATA/drives.json`, so a restart keeps it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::api::NodeApi;
use crate::layout::{DriveState, HealPhase, HealPriority};
use crate::mgmt::api::{DriveInfo, DriveManagement, MgmtError, RebuildInfo};
use crate::mgmt::drive_api::{drive_not_found, slot_of};

fn drive_state_error(message: String) -> MgmtError {
    MgmtError::new("DRIVE_STATE", 409, message)
}

/// FNV-1a over `text`: a hash that is the same in every build, for serial numbers.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What identifies the file or device at `path`: a block device by its device number, a
/// file by its inode. `None` when nothing is there.
fn identity(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.file_type().is_block_device() {
        Some((u64::MAX, metadata.rdev()))
    } else {
        Some((metadata.dev(), metadata.ino()))
    }
}

impl NodeApi {
    fn drive_index(&self, id: u32) -> Result<usize, MgmtError> {
        let index = usize::try_from(id).map_err(|_| drive_not_found(id))?;
        if index < self.meta.array().drive_count() {
            Ok(index)
        } else {
            Err(drive_not_found(id))
        }
    }

    fn drive_view(&self, node_serial: u64, drive: &crate::layout::DriveInfo) -> DriveInfo {
        // Drive indexes are below 1024 (the model's limit), so they fit a u32.
        let id = u32::try_from(drive.index).unwrap_or(u32::MAX);
        let (enclosure_index, drive_index) = slot_of(id);
        let original = self
            .hw
            .nlsas
            .get(drive.index)
            .is_some_and(|spec| Path::new(&drive.path).ends_with(&spec.path));
        let mut serial_number = format!("TRK{node_serial:08}D{:04}", drive.index);
        if !original {
            serial_number.push_str(&format!("R{:08X}", stable_hash(&drive.path) as u32));
        }
        DriveInfo {
            id,
            drive_index,
            enclosure_index,
            serial_number,
            bytes_capacity: drive.bytes,
            state: drive.state.as_str().to_owned(),
            name: drive.name.clone(),
            path: drive.path.clone(),
            rebuild_progress: drive.progress_percent,
            read_errors: drive.read_errors,
            failure_reason: drive.reason.clone(),
        }
    }

    fn drive_now(&self, index: usize) -> Result<DriveInfo, MgmtError> {
        let infos = self.meta.array().drive_infos();
        let drive = infos.get(index).ok_or_else(|| drive_not_found(index))?;
        Ok(self.drive_view(self.meta.serial(), drive))
    }

    /// Refuses `path` when another drive or the vault SSD uses the same file or device.
    fn check_path_free(&self, index: usize, path: &Path) -> Result<(), MgmtError> {
        let Some(wanted) = identity(path) else {
            return Ok(());
        };
        let array = self.meta.array();
        let in_use = (0..array.drive_count())
            .filter(|other| *other != index)
            .map(|other| {
                let device = array.device(other);
                (
                    format!("drive {other} ({})", device.name()),
                    device.path().to_path_buf(),
                )
            })
            .chain(std::iter::once((
                format!("the vault SSD {}", self.meta.ssd_name()),
                self.meta.ssd_path().to_path_buf(),
            )));
        for (user, used) in in_use {
            if identity(&used) == Some(wanted) {
                return Err(MgmtError::new(
                    "DRIVE_PATH_IN_USE",
                    409,
                    format!(
                        "{} is already in use by {user}; give a path no drive or vault uses",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl DriveManagement for NodeApi {
    fn drives(&self) -> Vec<DriveInfo> {
        let serial = self.meta.serial();
        self.meta
            .array()
            .drive_infos()
            .iter()
            .map(|drive| self.drive_view(serial, drive))
            .collect()
    }

    fn fail_drive(&self, id: u32, reason: &str) -> Result<DriveInfo, MgmtError> {
        let index = self.drive_index(id)?;
        let drive = self.drive_now(index)?;
        if drive.state != DriveState::Active.as_str() {
            return Err(drive_state_error(format!(
                "drive {id} ({}) is {} already; only an ACTIVE drive can be failed",
                drive.name, drive.state
            )));
        }
        self.meta
            .array()
            .fail_drive(index, reason)
            .map_err(MgmtError::internal)?;
        self.drive_now(index)
    }

    fn replace_drive(&self, id: u32, path: &str) -> Result<DriveInfo, MgmtError> {
        let index = self.drive_index(id)?;
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(MgmtError::bad_request(format!(
                "the replacement path {:?} is relative; give an absolute path on the node",
                path.display().to_string()
            )));
        }
        let drive = self.drive_now(index)?;
        match drive.state.as_str() {
            "ACTIVE" => {
                return Err(drive_state_error(format!(
                    "drive {id} ({}) is ACTIVE; only a failed drive can be replaced (fail it first with `troika drive fail {id}`)",
                    drive.name
                )));
            }
            "REPLACING" => {
                return Err(drive_state_error(format!(
                    "drive {id} ({}) is already being replaced by {}; wait for DRIVE_COPYBACK_COMPLETED",
                    drive.name, drive.path
                )));
            }
            _ => {}
        }
        self.check_path_free(index, &path)?;
        let array = self.meta.array();
        let model = &self.hw.nlsas[index];
        let spec = crate::hw::DeviceSpec {
            path: path.clone(),
            size: Some(model.size.unwrap_or_else(|| array.device(index).size())),
            ..model.clone()
        };
        // The path is absolute, so the data directory plays no part in resolving it.
        let device = super::start::open_device(&self.hw, &spec, Path::new("/"), &self.faults)
            .map_err(|error| {
                MgmtError::bad_request(format!(
                    "cannot use {} as drive {id}: {error:#}",
                    path.display()
                ))
            })?;
        array.replace_drive(index, device).map_err(|message| {
            MgmtError::bad_request(format!("cannot replace drive {id}: {message}"))
        })?;
        self.drive_now(index)
    }

    fn rebuild(&self) -> Result<RebuildInfo, MgmtError> {
        let array = self.meta.array();
        let drives_out = array
            .drive_infos()
            .iter()
            .filter(|drive| drive.state != DriveState::Active)
            .count();
        let mut info = RebuildInfo {
            phase: "IDLE".to_owned(),
            drive_id: None,
            progress: 1.0,
            segments_done: 0,
            segments: 0,
            bytes: 0,
            seconds: 0.0,
            bytes_per_second: 0.0,
            eta_seconds: None,
            priority: array.heal_priority().as_str().to_owned(),
            drives_out: u32::try_from(drives_out).unwrap_or(u32::MAX),
        };
        if let Some(status) = array.heal_status() {
            info.phase = match status.job.phase {
                HealPhase::Rebuild => "REBUILD",
                HealPhase::Copyback => "COPYBACK",
            }
            .to_owned();
            info.drive_id = u32::try_from(status.job.drive).ok();
            info.progress = status.segments_done as f64 / status.segments.max(1) as f64;
            info.segments_done = status.segments_done;
            info.segments = status.segments;
            info.bytes = status.bytes;
            info.seconds = status.seconds;
            info.bytes_per_second = status.bytes_per_second;
            info.eta_seconds = status.eta_seconds;
        }
        Ok(info)
    }

    fn set_rebuild_priority(&self, priority: HealPriority) -> Result<RebuildInfo, MgmtError> {
        self.meta.array().set_heal_priority(priority);
        self.rebuild()
    }
}
