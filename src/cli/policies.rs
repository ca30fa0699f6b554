//! `policy`: snapshot policies created, listed, shown, given and relieved of volumes,
//! enabled, disabled and deleted by name.
//!
//! The node runs the policies; these verbs only change them. Schedules are given as
//! `--schedule NAME:EVERY:KEEP[:LOCK]` (see `schedule_spec`); two with one name are a
//! usage error before anything is sent.

use std::collections::BTreeSet;

use serde_json::json;

use super::session::{POLICY, Session, VOLUME, json_text};
use super::tables;
use super::{CliError, PolicyCommand};
use crate::mgmt::api::{PolicyInfo, ScheduleInfo, VolumeInfo};

/// Refuses two schedules with one name (the node would too, after a round trip).
fn distinct_names(schedules: &[ScheduleInfo]) -> Result<(), CliError> {
    let mut seen = BTreeSet::new();
    match schedules
        .iter()
        .find(|schedule| !seen.insert(schedule.name.as_str()))
    {
        Some(twice) => Err(CliError::Usage(format!(
            "--schedule: two schedules are named {:?}; give each its own NAME",
            twice.name
        ))),
        None => Ok(()),
    }
}

impl Session {
    pub(super) fn policy(&self, command: PolicyCommand) -> Result<String, CliError> {
        match command {
            PolicyCommand::Create { name, schedules } => {
                distinct_names(&schedules)?;
                let body = json!({ "name": name, "schedules": schedules });
                let policy = self.call("POST", "/api/rest/snapshot_policies", Some(&body))?;
                self.render(policy, |policy: PolicyInfo| tables::policies(&[policy]))
            }
            PolicyCommand::Ls => {
                let policies = self.list_all("/api/rest/snapshot_policies?sort=name")?;
                self.render(policies, |policies: Vec<PolicyInfo>| {
                    tables::policies(&policies)
                })
            }
            PolicyCommand::Show { name } => self.show_policy(&name),
            PolicyCommand::Add { policy, volume } => {
                let id = self.resolve(POLICY, &policy)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let path = format!("/api/rest/snapshot_policies/{id}/assets");
                let body = json!({ "entity_id": volume_id });
                let updated = self.call("POST", &path, Some(&body))?;
                self.render(updated, |_: PolicyInfo| {
                    format!("added volume {volume:?} to snapshot policy {policy:?}\n")
                })
            }
            PolicyCommand::Remove { policy, volume } => {
                let id = self.resolve(POLICY, &policy)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let path = format!("/api/rest/snapshot_policies/{id}/assets/{volume_id}");
                let updated = self.call("DELETE", &path, None)?;
                self.render(updated, |_: PolicyInfo| {
                    format!("removed volume {volume:?} from snapshot policy {policy:?}\n")
                })
            }
            PolicyCommand::Enable { name } => self.enable_policy(&name, true),
            PolicyCommand::Disable { name } => self.enable_policy(&name, false),
            PolicyCommand::Delete { name } => {
                let id = self.resolve(POLICY, &name)?;
                let path = format!("/api/rest/snapshot_policies/{id}?approved=true");
                let deleted = self.call("DELETE", &path, None)?;
                self.render(deleted, |policy: PolicyInfo| {
                    format!(
                        "deleted snapshot policy {:?} (id {}); the {} snapshots it took stay\n",
                        policy.name, policy.id, policy.snapshots_count
                    )
                })
            }
        }
    }

    /// `policy enable` and `policy disable`.
    fn enable_policy(&self, name: &str, enabled: bool) -> Result<String, CliError> {
        let id = self.resolve(POLICY, name)?;
        let path = format!("/api/rest/snapshot_policies/{id}");
        let body = json!({ "enabled": enabled });
        let policy = self.call("PUT", &path, Some(&body))?;
        self.render(policy, |policy: PolicyInfo| tables::policies(&[policy]))
    }

    /// `policy show`: the policy's fields, its schedules, then its volumes.
    fn show_policy(&self, name: &str) -> Result<String, CliError> {
        let id = self.resolve(POLICY, name)?;
        let policy = self.call("GET", &format!("/api/rest/snapshot_policies/{id}"), None)?;
        if self.settings.json {
            return Ok(json_text(&policy));
        }
        let policy: PolicyInfo = self.typed(policy)?;
        let mut text = tables::policy(&policy);
        text.push('\n');
        text.push_str(&tables::schedules(&policy.schedules));
        text.push('\n');
        if policy.assets.is_empty() {
            text.push_str(&format!(
                "no volumes yet: `troika policy add {name} VOL` adds one\n"
            ));
            return Ok(text);
        }
        let ids: Vec<String> = policy.assets.iter().map(u32::to_string).collect();
        let path = format!("/api/rest/volumes?id=in:({})&sort=name", ids.join(","));
        let volumes: Vec<VolumeInfo> = self.typed(self.list_all(&path)?)?;
        text.push_str(&tables::volumes(&volumes));
        Ok(text)
    }
}
