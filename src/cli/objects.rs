//! `pool` and `vol`: create, list, update, resize, delete, and pool owners (`vol restore`
//! is with the snapshot verbs).

use serde_json::{Map, Value, json};

use super::session::{POOL, Session, USER, VOLUME};
use super::{CliError, PoolCommand, VolCommand, tables};
use crate::mgmt::api::{PoolInfo, VolumeInfo};
use crate::mgmt::users::UserInfo;

/// A JSON object of the fields that are set (absent ones are left out, not null).
pub(super) fn changes(fields: &[(&str, Option<Value>)]) -> Value {
    let set: Map<String, Value> = fields
        .iter()
        .filter_map(|(name, value)| Some(((*name).to_owned(), value.clone()?)))
        .collect();
    Value::Object(set)
}

impl Session {
    pub(super) fn pool(&self, command: PoolCommand) -> Result<String, CliError> {
        match command {
            PoolCommand::Create {
                name,
                size,
                virtual_size,
            } => {
                let body = json!({
                    "name": name,
                    "physical_capacity": size,
                    "virtual_capacity": virtual_size,
                });
                let pool = self.call("POST", "/api/rest/pools", Some(&body))?;
                self.render(pool, |pool: PoolInfo| tables::pools(&[pool]))
            }
            PoolCommand::Ls => {
                let pools = self.list_all("/api/rest/pools?sort=name")?;
                self.render(pools, |pools: Vec<PoolInfo>| tables::pools(&pools))
            }
            PoolCommand::Update {
                name,
                new_name,
                size,
                virtual_size,
                warning,
                critical,
                ssd,
            } => {
                let id = self.resolve(POOL, &name)?;
                let body = changes(&[
                    ("name", new_name.map(Value::from)),
                    ("physical_capacity", size.map(Value::from)),
                    ("virtual_capacity", virtual_size.map(Value::from)),
                    ("physical_capacity_warning", warning.map(Value::from)),
                    ("physical_capacity_critical", critical.map(Value::from)),
                    ("ssd_enabled", ssd.map(Value::from)),
                ]);
                let path = format!("/api/rest/pools/{id}?approved=true");
                let pool = self.call("PUT", &path, Some(&body))?;
                self.render(pool, |pool: PoolInfo| tables::pools(&[pool]))
            }
            PoolCommand::Owners { name, add, remove } => self.pool_owners(&name, &add, &remove),
            PoolCommand::Delete { name } => {
                let id = self.resolve(POOL, &name)?;
                let path = format!("/api/rest/pools/{id}?approved=true");
                let pool = self.call("DELETE", &path, None)?;
                self.render(pool, |pool: PoolInfo| {
                    format!("deleted pool {:?} (id {})\n", pool.name, pool.id)
                })
            }
        }
    }

    /// Adds and removes owners (one PUT of the whole list), then lists the owners.
    fn pool_owners(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<String, CliError> {
        let id = self.resolve(POOL, name)?;
        if !add.is_empty() || !remove.is_empty() {
            let pool: PoolInfo =
                self.typed(self.call("GET", &format!("/api/rest/pools/{id}"), None)?)?;
            let mut owners = pool.owners;
            for user in add {
                let user_id = self.resolve(USER, user)?;
                if !owners.contains(&user_id) {
                    owners.push(user_id);
                }
            }
            for user in remove {
                let user_id = self.resolve(USER, user)?;
                owners.retain(|&owner| owner != user_id);
            }
            let path = format!("/api/rest/pools/{id}?approved=true");
            self.call("PUT", &path, Some(&json!({ "owners": owners })))?;
        }
        let owners = self.list_all(&format!("/api/rest/pools/{id}/owners?sort=name"))?;
        self.render(owners, |users: Vec<UserInfo>| tables::users(&users))
    }

    pub(super) fn volume(&self, command: VolCommand) -> Result<String, CliError> {
        match command {
            VolCommand::Create {
                name,
                pool,
                size,
                thick,
            } => {
                let pool_id = self.resolve(POOL, &pool)?;
                let body = json!({
                    "name": name,
                    "pool_id": pool_id,
                    "size": size,
                    "provtype": if thick { "THICK" } else { "THIN" },
                });
                let volume = self.call("POST", "/api/rest/volumes", Some(&body))?;
                self.render(volume, |volume: VolumeInfo| tables::volumes(&[volume]))
            }
            VolCommand::Ls { pool } => {
                let mut path = "/api/rest/volumes?sort=name".to_owned();
                if let Some(pool) = pool {
                    let pool_id = self.resolve(POOL, &pool)?;
                    path.push_str(&format!("&pool_id=eq:{pool_id}"));
                }
                let volumes = self.list_all(&path)?;
                self.render(volumes, |volumes: Vec<VolumeInfo>| {
                    tables::volumes(&volumes)
                })
            }
            VolCommand::Update {
                name,
                new_name,
                write_protect,
                ssd,
            } => {
                let id = self.resolve(VOLUME, &name)?;
                let body = changes(&[
                    ("name", new_name.map(Value::from)),
                    ("write_protected", write_protect.map(Value::from)),
                    ("ssd_enabled", ssd.map(Value::from)),
                ]);
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let volume = self.call("PUT", &path, Some(&body))?;
                self.render(volume, |volume: VolumeInfo| tables::volumes(&[volume]))
            }
            VolCommand::Resize { name, size } => {
                let id = self.resolve(VOLUME, &name)?;
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let volume = self.call("PUT", &path, Some(&json!({ "size": size })))?;
                self.render(volume, |volume: VolumeInfo| tables::volumes(&[volume]))
            }
            VolCommand::Restore { name, snapshot } => self.restore_volume(&name, &snapshot),
            VolCommand::Delete { name } => {
                let id = self.resolve(VOLUME, &name)?;
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let volume = self.call("DELETE", &path, None)?;
                self.render(volume, |volume: VolumeInfo| {
                    format!("deleted volume {:?} (id {})\n", volume.name, volume.id)
                })
            }
        }
    }
}
