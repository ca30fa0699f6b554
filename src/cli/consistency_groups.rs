//! `cg`: consistency groups created, listed, shown with their members, changed, snapshotted,
//! restored and deleted by name.
//!
//! A group snapshot (`cg snap`) is a group of type SNAPSHOT whose members are the snapshots
//! of the group's volumes; `cg show` and `cg delete` take either kind, `cg add`, `cg remove`
//! and `cg snap` only a group, and `cg restore` a group and a group snapshot of it.

use serde_json::{Value, json};

use super::objects::changes;
use super::session::{
    ANY_GROUP, CONSISTENCY_GROUP, GROUP_SNAPSHOT, POOL, Session, VOLUME, json_text,
};
use super::snapshots::lock_end;
use super::tables::{self, Names};
use super::{CgCommand, CliError};
use crate::mgmt::api::{CgInfo, VolumeInfo};

/// What a group is called in messages.
fn noun(group: &CgInfo) -> &'static str {
    if group.cg_type == "SNAPSHOT" {
        "group snapshot"
    } else {
        "consistency group"
    }
}

impl Session {
    pub(super) fn consistency_group(&self, command: CgCommand) -> Result<String, CliError> {
        match command {
            CgCommand::Create { name, pool } => {
                let pool_id = self.resolve(POOL, &pool)?;
                let body = json!({ "name": name, "pool_id": pool_id });
                let group = self.call("POST", "/api/rest/cgs", Some(&body))?;
                self.render(group, |group: CgInfo| {
                    tables::consistency_groups(&[group], &Names::new())
                })
            }
            CgCommand::Ls => {
                let groups = self.list_all("/api/rest/cgs?sort=name")?;
                self.render(groups, |groups: Vec<CgInfo>| {
                    let names = groups
                        .iter()
                        .map(|group| (group.id, group.name.clone()))
                        .collect();
                    tables::consistency_groups(&groups, &names)
                })
            }
            CgCommand::Show { name } => self.show_group(&name),
            CgCommand::Add { group, volume } => {
                let id = self.resolve(CONSISTENCY_GROUP, &group)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let path = format!("/api/rest/cgs/{id}/members");
                let body = json!({ "dataset_id": volume_id });
                let member = self.call("POST", &path, Some(&body))?;
                self.render(member, |member: VolumeInfo| {
                    format!(
                        "added volume {:?} to consistency group {group:?}\n",
                        member.name
                    )
                })
            }
            CgCommand::Remove { group, volume } => {
                let id = self.resolve(CONSISTENCY_GROUP, &group)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let path = format!("/api/rest/cgs/{id}/members/{volume_id}");
                let member = self.call("DELETE", &path, None)?;
                self.render(member, |member: VolumeInfo| {
                    format!(
                        "removed volume {:?} from consistency group {group:?}\n",
                        member.name
                    )
                })
            }
            CgCommand::Snap {
                group,
                name,
                lock_until,
            } => {
                let lock_expires_at = lock_until
                    .map(|until| lock_end(until, "lock-until"))
                    .transpose()?;
                let id = self.resolve(CONSISTENCY_GROUP, &group)?;
                let body = changes(&[
                    ("parent_id", Some(Value::from(id))),
                    ("name", name.map(Value::from)),
                    ("lock_expires_at", lock_expires_at.map(Value::from)),
                ]);
                let snapgroup = self.call("POST", "/api/rest/cgs", Some(&body))?;
                if self.settings.json {
                    return Ok(json_text(&snapgroup));
                }
                let snapgroup: CgInfo = self.typed(snapgroup)?;
                let group_names = Names::from([(id, group)]);
                let mut text =
                    tables::consistency_groups(std::slice::from_ref(&snapgroup), &group_names);
                text.push('\n');
                text.push_str(&self.members_table(&snapgroup)?);
                Ok(text)
            }
            CgCommand::Restore { group, snapgroup } => {
                let id = self.resolve(CONSISTENCY_GROUP, &group)?;
                let snapgroup_id = self.resolve(GROUP_SNAPSHOT, &snapgroup)?;
                let path = format!("/api/rest/cgs/{id}/restore?approved=true");
                let body = json!({ "source_id": snapgroup_id });
                let restored = self.call("POST", &path, Some(&body))?;
                self.render(restored, |group: CgInfo| {
                    tables::consistency_groups(&[group], &Names::new())
                })
            }
            CgCommand::Delete {
                name,
                delete_members,
            } => {
                let id = self.resolve(ANY_GROUP, &name)?;
                let mut path = format!("/api/rest/cgs/{id}?approved=true");
                if delete_members {
                    path.push_str("&delete_members=true");
                }
                let deleted = self.call("DELETE", &path, None)?;
                self.render(deleted, |group: CgInfo| {
                    let with = match (group.cg_type.as_str(), delete_members) {
                        ("SNAPSHOT", _) => " with its snapshots",
                        (_, true) => " with its volumes",
                        (_, false) => "",
                    };
                    format!(
                        "deleted {} {:?} (id {}){with}\n",
                        noun(&group),
                        group.name,
                        group.id
                    )
                })
            }
        }
    }

    /// `cg show`: the group's fields, then its members (volumes, or snapshots for a group
    /// snapshot). With `--json`, the group object with its members in `members`.
    fn show_group(&self, name: &str) -> Result<String, CliError> {
        let id = self.resolve(ANY_GROUP, name)?;
        let mut group = self.call("GET", &format!("/api/rest/cgs/{id}"), None)?;
        if self.settings.json {
            group["members"] = self.list_all(&format!("/api/rest/cgs/{id}/members?sort=name"))?;
            return Ok(json_text(&group));
        }
        let group: CgInfo = self.typed(group)?;
        let mut text = tables::consistency_group(&group, &self.group_names()?);
        text.push('\n');
        text.push_str(&self.members_table(&group)?);
        Ok(text)
    }

    /// The members of `group` as a table for humans.
    fn members_table(&self, group: &CgInfo) -> Result<String, CliError> {
        let path = format!("/api/rest/cgs/{}/members?sort=name", group.id);
        let members: Vec<VolumeInfo> = self.typed(self.list_all(&path)?)?;
        if group.cg_type == "SNAPSHOT" {
            Ok(tables::snapshots(&members, &self.dataset_names()?))
        } else {
            Ok(tables::volumes(&members))
        }
    }
}
