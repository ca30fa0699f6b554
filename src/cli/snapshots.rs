//! `snap` and `vol restore`: snapshots taken, listed, locked, refreshed, compared and
//! deleted by name, and a volume given a snapshot's contents.
//!
//! Verbs that change or delete a snapshot resolve its name among snapshots only, so a
//! master volume's name is refused rather than acted on.

use serde_json::{Value, json};

use super::lock_until::LockUntil;
use super::objects::changes;
use super::session::{SNAPSHOT, Session, VOLUME};
use super::tables::{self, Names};
use super::{CliError, SnapCommand};
use crate::clock::now_ms;
use crate::mgmt::api::{ChangedBlocks, VolumeInfo};

/// A lock end given as `--FLAG` in milliseconds since the epoch; one that cannot be a lock
/// end now is a usage error.
pub(super) fn lock_end(until: LockUntil, flag: &str) -> Result<u64, CliError> {
    until
        .epoch_ms(now_ms())
        .map_err(|why| CliError::Usage(format!("--{flag}: {why}")))
}

impl Session {
    pub(super) fn snapshot(&self, command: SnapCommand) -> Result<String, CliError> {
        match command {
            SnapCommand::Create {
                volume,
                name,
                lock_until,
                writable,
            } => {
                let lock_expires_at = lock_until
                    .map(|until| lock_end(until, "lock-until"))
                    .transpose()?;
                let parent_id = self.resolve(VOLUME, &volume)?;
                let body = changes(&[
                    ("name", name.map(Value::from)),
                    ("parent_id", Some(Value::from(parent_id))),
                    ("write_protected", Some(Value::from(!writable))),
                    ("lock_expires_at", lock_expires_at.map(Value::from)),
                ]);
                let snapshot = self.call("POST", "/api/rest/volumes", Some(&body))?;
                let names = Names::from([(parent_id, volume)]);
                self.render(snapshot, |snapshot: VolumeInfo| {
                    tables::snapshots(&[snapshot], &names)
                })
            }
            SnapCommand::Ls { volume } => {
                let mut path = "/api/rest/volumes?type=eq:SNAPSHOT&sort=name".to_owned();
                if let Some(volume) = volume {
                    let parent_id = self.resolve(VOLUME, &volume)?;
                    path.push_str(&format!("&parent_id=eq:{parent_id}"));
                }
                let snapshots = self.list_all(&path)?;
                let names = self.dataset_names()?;
                self.render(snapshots, |snapshots: Vec<VolumeInfo>| {
                    tables::snapshots(&snapshots, &names)
                })
            }
            SnapCommand::Delete { name } => {
                let id = self.resolve(SNAPSHOT, &name)?;
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let snapshot = self.call("DELETE", &path, None)?;
                self.render(snapshot, |snapshot: VolumeInfo| {
                    format!(
                        "deleted snapshot {:?} (id {})\n",
                        snapshot.name, snapshot.id
                    )
                })
            }
            SnapCommand::Refresh { name } => {
                let id = self.resolve(SNAPSHOT, &name)?;
                let path = format!("/api/rest/volumes/{id}/refresh?approved=true");
                let snapshot = self.call("POST", &path, None)?;
                self.render_snapshot(snapshot)
            }
            SnapCommand::Lock { name, until } => {
                let lock_expires_at = lock_end(until, "until")?;
                let id = self.resolve(SNAPSHOT, &name)?;
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let body = json!({ "lock_expires_at": lock_expires_at });
                let snapshot = self.call("PUT", &path, Some(&body))?;
                self.render_snapshot(snapshot)
            }
            SnapCommand::Diff { name, base } => {
                let id = self.resolve(VOLUME, &name)?;
                let base_id = self.resolve(VOLUME, &base)?;
                let path = format!("/api/rest/volumes/{id}/changed_blocks?base_id={base_id}");
                let diff = self.call("GET", &path, None)?;
                self.render(diff, |diff: ChangedBlocks| {
                    tables::changed_blocks(&diff, &name, &base)
                })
            }
        }
    }

    /// `vol restore`: the volume takes the contents of `snapshot`, of its family.
    pub(super) fn restore_volume(&self, name: &str, snapshot: &str) -> Result<String, CliError> {
        let id = self.resolve(VOLUME, name)?;
        let snapshot_id = self.resolve(SNAPSHOT, snapshot)?;
        let path = format!("/api/rest/volumes/{id}/restore?approved=true");
        let body = json!({ "source_id": snapshot_id });
        let volume = self.call("POST", &path, Some(&body))?;
        self.render(volume, |volume: VolumeInfo| tables::volumes(&[volume]))
    }

    /// One snapshot as a table row, its parent by name.
    fn render_snapshot(&self, snapshot: Value) -> Result<String, CliError> {
        let names = self.dataset_names()?;
        self.render(snapshot, |snapshot: VolumeInfo| {
            tables::snapshots(&[snapshot], &names)
        })
    }
}
