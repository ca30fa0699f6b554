//! `drive`: list the NL-SAS drives with their state and the heal's progress, fail one
//! (after confirmation), replace a failed one, and set the rebuild priority (ADMIN).
//! Drives are named by troika's drive number (the `ID` column of `drive ls`, from 0), which
//! the CLI turns into InfiniBox's enclosure and drive indexes for the REST paths.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::session::Session;
use super::tables::table;
use super::terminal::stdin_is_terminal;
use super::{CliError, DriveCommand};
use crate::mgmt::api::{DriveInfo, RebuildInfo};
use crate::mgmt::drive_api::slot_of;
use crate::types::format_size;

/// The REST path of drive `number`.
fn drive_path(number: u32) -> String {
    let (enclosure, drive) = slot_of(number);
    format!("/api/rest/components/enclosures/{enclosure}/drives/{drive}")
}

impl Session {
    pub(super) fn drive(&self, command: DriveCommand) -> Result<String, CliError> {
        match command {
            DriveCommand::Ls => {
                let drives = self.list_all("/api/rest/components/drives?sort=id")?;
                if self.settings.json {
                    return Ok(super::session::json_text(&drives));
                }
                let drives: Vec<DriveInfo> = self.typed(drives)?;
                let rebuild = self.call("GET", "/api/rest/components/rebuild", None)?;
                let rebuild: RebuildInfo = self.typed(rebuild)?;
                Ok(drives_table(&drives, &rebuild))
            }
            DriveCommand::Fail { number, yes } => {
                let drive: DriveInfo =
                    self.typed(self.call("GET", &drive_path(number), None)?)?;
                if !yes {
                    confirm_fail(&drive)?;
                }
                let path = format!("{}/fail?approved=true", drive_path(number));
                let failed = self.call("POST", &path, None)?;
                self.render(failed, |drive: DriveInfo| {
                    format!(
                        "drive {} ({}) is {}; its data is rebuilt from parity into spare space \
                         (watch it with `troika drive ls`)\n",
                        drive.id, drive.name, drive.state
                    )
                })
            }
            DriveCommand::Replace { number, path } => {
                let path = absolute(&path)?;
                let body = json!({"path": path.display().to_string()});
                let target = format!("{}/replace", drive_path(number));
                let replaced = self.call("POST", &target, Some(&body))?;
                self.render(replaced, |drive: DriveInfo| {
                    format!(
                        "drive {} ({}) is {} on {} (serial {}); its data is copied back onto it\n",
                        drive.id, drive.name, drive.state, drive.path, drive.serial_number
                    )
                })
            }
            DriveCommand::Priority { level } => {
                let body = json!({"priority": level.to_ascii_uppercase()});
                let rebuild = self.call("PUT", "/api/rest/components/rebuild", Some(&body))?;
                self.render(rebuild, |rebuild: RebuildInfo| {
                    format!("rebuild priority is {}\n", rebuild.priority)
                })
            }
        }
    }
}

/// `path` as the node should see it: a relative path is taken from the current directory.
fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let here = std::env::current_dir().map_err(|error| {
        CliError::Usage(format!(
            "cannot make {} absolute ({error}); give an absolute path",
            path.display()
        ))
    })?;
    Ok(here.join(path))
}

/// Asks the operator on the terminal; without one, `--yes` is the only way.
fn confirm_fail(drive: &DriveInfo) -> Result<(), CliError> {
    if !stdin_is_terminal() {
        return Err(CliError::Usage(format!(
            "failing drive {} ({}) needs confirmation and there is no terminal to ask on; add --yes",
            drive.id, drive.name
        )));
    }
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "Fail drive {} ({}, {})? It is never used again; its data is rebuilt from parity and \
         the array has less redundancy until then. Type yes to fail it: ",
        drive.id, drive.name, drive.state
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim().eq_ignore_ascii_case("yes") {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "drive {} was not failed (the answer was not yes)",
            drive.id
        )))
    }
}

fn seconds_text(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

fn drives_table(drives: &[DriveInfo], rebuild: &RebuildInfo) -> String {
    let rows: Vec<Vec<String>> = drives
        .iter()
        .map(|drive| {
            let healing = rebuild.drive_id == Some(drive.id);
            let progress = if drive.state == "ACTIVE" {
                "-".to_owned()
            } else {
                format!("{:.1}%", drive.rebuild_progress)
            };
            let rate = if healing {
                format!("{}/s", format_size(rebuild.bytes_per_second as u64))
            } else {
                "-".to_owned()
            };
            let eta = match rebuild.eta_seconds {
                Some(eta) if healing => seconds_text(eta),
                _ => "-".to_owned(),
            };
            vec![
                drive.id.to_string(),
                drive.name.clone(),
                format!("{}:{}", drive.enclosure_index, drive.drive_index),
                drive.state.clone(),
                progress,
                rate,
                eta,
                format_size(drive.bytes_capacity),
                drive.serial_number.clone(),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ID", "NAME", "SLOT", "STATE", "PROGRESS", "RATE", "ETA", "CAPACITY", "SERIAL",
        ],
        &rows,
    );
    text.push_str(&format!(
        "rebuild: {}, priority {}\n",
        match rebuild.drive_id {
            Some(drive) => format!(
                "{} of drive {drive}, {:.1}% done",
                rebuild.phase,
                rebuild.progress * 100.0
            ),
            None => "idle".to_owned(),
        },
        rebuild.priority
    ));
    text
}
