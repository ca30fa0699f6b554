//! Drive administration: failing a drive (by command, I/O errors or timeouts), putting a
//! replacement in its place, what operators see of each drive, and how hard heals push.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Array, DriveEvent, DriveInfo, READ_ERRORS_TO_FAIL};
use crate::io::{Device, IoRing};
use crate::layout::drives::{DriveState, DriveTable};

/// How hard a heal pushes against host I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealPriority {
    /// Rests four times as long as it works while hosts are reading.
    Low,
    /// Rests as long as it works while hosts are reading.
    Medium,
    /// Rests a quarter of its working time while hosts are reading.
    High,
}

impl HealPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            HealPriority::Low => "LOW",
            HealPriority::Medium => "MEDIUM",
            HealPriority::High => "HIGH",
        }
    }

    /// Parses `low`, `medium` or `high` (any case).
    pub fn parse(text: &str) -> Option<HealPriority> {
        match text.to_ascii_lowercase().as_str() {
            "low" => Some(HealPriority::Low),
            "medium" => Some(HealPriority::Medium),
            "high" => Some(HealPriority::High),
            _ => None,
        }
    }

    /// Rest per unit of work while hosts are busy.
    pub fn rest_factor(self) -> f64 {
        match self {
            HealPriority::Low => 4.0,
            HealPriority::Medium => 1.0,
            HealPriority::High => 0.25,
        }
    }
}

impl Array {
    /// Fails drive `index` for `reason`: it is never read or written again, and its units
    /// move to spare cells as the rebuild reaches them. Persists the new state before
    /// returning. Returns false when the drive was already failed.
    pub fn fail_drive(&self, index: usize, reason: &str) -> Result<bool, String> {
        if index >= self.drives.len() {
            return Err(format!(
                "there is no drive {index}; the array has drives 0 to {}",
                self.drives.len() - 1
            ));
        }
        let changed = {
            let mut table = self.table.write();
            let changed = table.fail(&self.placement, index, reason, crate::clock::now_ms());
            self.degraded.store(true, Ordering::Release);
            if changed {
                self.persist(&table);
            }
            changed
        };
        if changed {
            crate::say!(
                "troika: drive {index} ({}) failed: {reason}; it will not be used again until it is replaced",
                self.device_name(index)
            );
            self.notify(DriveEvent::Failed {
                drive: index,
                name: self.device_name(index),
                reason: reason.to_string(),
            });
        }
        Ok(changed)
    }

    /// Puts `device` in the place of failed drive `index` and starts copying its units
    /// back onto it.
    pub fn replace_drive(&self, index: usize, device: Device) -> Result<(), String> {
        if index >= self.drives.len() {
            return Err(format!("there is no drive {index}"));
        }
        let needed = self.drives[index].read().size();
        if device.size() < needed {
            return Err(format!(
                "the replacement {} holds {} bytes; drive {index} needs at least {needed}",
                device.path().display(),
                device.size()
            ));
        }
        let mut table = self.table.write();
        if table.state(index) == DriveState::Replacing {
            return Err(format!("drive {index} is already being replaced"));
        }
        if table.failure(index).is_none() {
            return Err(format!(
                "drive {index} is ACTIVE; fail it first (drive fail {index}) to replace it"
            ));
        }
        if let Some(store) = self.store.lock().as_ref() {
            store.set_replacement(index, device.path());
        }
        *self.drives[index].write() = Arc::new(device);
        self.read_errors[index].store(0, Ordering::Relaxed);
        table.replace(index)?;
        self.persist(&table);
        Ok(())
    }

    /// Every drive with its state and progress.
    pub fn drive_infos(&self) -> Vec<DriveInfo> {
        let table = self.table.read();
        (0..self.drives.len())
            .map(|index| {
                let device = self.device(index);
                let failure = table.failure(index);
                let progress_percent = failure.map_or(100.0, |failure| {
                    let total = failure.rebuilt.len().max(1) as f64;
                    100.0 * (total - failure.remaining() as f64) / total
                });
                DriveInfo {
                    index,
                    name: device.name().to_string(),
                    path: device.path().display().to_string(),
                    bytes: device.size(),
                    state: table.state(index),
                    progress_percent,
                    read_errors: self.read_errors[index].load(Ordering::Relaxed),
                    reason: failure.map(|f| f.reason.clone()),
                }
            })
            .collect()
    }

    pub(super) fn persist(&self, table: &DriveTable) {
        if let Some(store) = self.store.lock().as_ref()
            && let Err(err) = store.save(table)
        {
            crate::fatal::durability_failure(
                &store.path().display().to_string(),
                "drive state write",
                &err,
            );
        }
    }

    /// Fails drives whose I/O takes longer than `limit` (from the hardware model).
    pub fn set_drive_timeout(&self, limit: std::time::Duration) {
        self.timeout_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Fails `drive` when request `index` of the ring's last batch took longer than the
    /// drive timeout.
    pub(crate) fn judge_latency(&self, ring: &IoRing, index: usize, drive: usize) {
        let limit = self.timeout_ms.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        let took = ring.took(index);
        if took.as_millis() as u64 > limit {
            let _ = self.fail_drive(
                drive,
                &format!(
                    "an I/O took {} ms, past the model's drive timeout of {limit} ms",
                    took.as_millis()
                ),
            );
        }
    }

    /// Counts a failed read on `drive`; fails the drive after [`READ_ERRORS_TO_FAIL`].
    pub(super) fn count_read_error(&self, drive: usize, error: &dyn std::fmt::Display) {
        let errors = self.read_errors[drive].fetch_add(1, Ordering::Relaxed) + 1;
        if errors >= READ_ERRORS_TO_FAIL {
            let reason = format!("{errors} read errors, the last: {error}");
            let _ = self.fail_drive(drive, &reason);
        }
    }
}
