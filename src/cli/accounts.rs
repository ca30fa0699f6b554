//! `user`: create, list, update, delete, whoami. New passwords come from
//! `TROIKA_NEW_PASSWORD` or are asked twice on the terminal; never from the command line,
//! where other local users could read them.

use serde_json::{Value, json};

use super::session::{Session, USER};
use super::{CliError, NEW_PASSWORD_ENV, UserCommand, tables, terminal};
use crate::mgmt::users::UserInfo;

/// The new password of `user`: from the environment, or typed twice with echo off.
fn new_password(user: &str) -> Result<String, CliError> {
    if let Ok(password) = std::env::var(NEW_PASSWORD_ENV) {
        return Ok(password);
    }
    if !terminal::stdin_is_terminal() {
        return Err(CliError::Usage(format!(
            "no new password for user {user:?}: set {NEW_PASSWORD_ENV}, or run on a terminal \
             to be asked for it"
        )));
    }
    let first =
        terminal::read_password(&format!("New password for {user}: ")).map_err(CliError::Usage)?;
    let second = terminal::read_password("Repeat the new password: ").map_err(CliError::Usage)?;
    if first != second {
        return Err(CliError::Usage(
            "the two passwords differ; nothing was changed".into(),
        ));
    }
    Ok(first)
}

impl Session {
    pub(super) fn user(&self, command: UserCommand) -> Result<String, CliError> {
        match command {
            UserCommand::Create { name, role, email } => {
                let password = new_password(&name)?;
                let mut body = json!({ "name": name, "password": password, "role": role });
                if let Some(email) = email {
                    body["email"] = Value::from(email);
                }
                let user = self.call("POST", "/api/rest/users", Some(&body))?;
                self.render(user, |user: UserInfo| tables::users(&[user]))
            }
            UserCommand::Ls => {
                let users = self.list_all("/api/rest/users?sort=name")?;
                self.render(users, |users: Vec<UserInfo>| tables::users(&users))
            }
            UserCommand::Update {
                name,
                role,
                email,
                enable,
                disable,
                password_prompt,
            } => {
                let id = self.resolve(USER, &name)?;
                let mut body = json!({});
                if let Some(role) = role {
                    body["role"] = Value::from(role);
                }
                if let Some(email) = email {
                    body["email"] = Value::from(email);
                }
                if enable || disable {
                    body["enabled"] = Value::from(enable);
                }
                if password_prompt {
                    body["password"] = Value::from(new_password(&name)?);
                }
                let path = format!("/api/rest/users/{id}?approved=true");
                let user = self.call("PUT", &path, Some(&body))?;
                self.render(user, |user: UserInfo| tables::users(&[user]))
            }
            UserCommand::Delete { name } => {
                let id = self.resolve(USER, &name)?;
                let path = format!("/api/rest/users/{id}?approved=true");
                let user = self.call("DELETE", &path, None)?;
                self.render(user, |user: UserInfo| {
                    format!("deleted user {:?} (id {})\n", user.name, user.id)
                })
            }
            UserCommand::Whoami => {
                let user = self.call("GET", "/api/rest/users/current", None)?;
                self.render(user, |user: UserInfo| tables::users(&[user]))
            }
        }
    }
}
