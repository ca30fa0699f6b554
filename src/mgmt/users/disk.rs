//! The on-disk part of the user store: reading, checking and atomically replacing
//! `users.json`, and writing `admin-password` on the first start.
//!
//! On disk, in the node's data directory:
//! - `users.json`, mode 0600: `{"version": 1, "next_id": N, "users": [{"id", "name",
//!   "email", "role", "enabled", "created_at", "updated_at", "password_hash"}]}`. Ids are
//!   never reused (`next_id` only grows).
//! - `admin-password`, mode 0600: written once, on the very first start, with the generated
//!   password of the built-in `admin` user. It is not kept up to date; remove it once the
//!   password has been changed.
//!
//! Commit order and crash safety. Saving writes `users.json.tmp` (created fresh with mode
//! 0600), fsyncs it, renames it over `users.json` and fsyncs the directory: a crash leaves
//! either the old or the new file whole, and a stale `.tmp` is ignored and replaced by the
//! next save. The first start writes and fsyncs `admin-password` *before* `users.json`: a
//! crash in between leaves no `users.json`, so the next start generates a new password and
//! overwrites the file; the reverse order could leave an admin whose password nobody knows.
//! A `users.json` that cannot be parsed stops the start with an error naming the file; it
//! is never silently replaced by defaults.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::password::{generate_password, hash_password};
use super::{DEFAULT_ADMIN_NAME, Role};
use crate::clock::now_ms;
use crate::private_files;

pub(super) const USERS_FILE: &str = "users.json";
pub(super) const USERS_TMP_FILE: &str = "users.json.tmp";
pub(super) const ADMIN_PASSWORD_FILE: &str = "admin-password";
const FORMAT_VERSION: u32 = 1;

/// One user as `users.json` stores it.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct UserRecord {
    pub(super) id: u32,
    pub(super) name: String,
    pub(super) email: String,
    pub(super) role: Role,
    pub(super) enabled: bool,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    pub(super) password_hash: String,
}

/// The whole of `users.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersFile {
    pub(super) version: u32,
    pub(super) next_id: u32,
    pub(super) users: Vec<UserRecord>,
}

impl UsersFile {
    pub(super) fn index_of(&self, id: u32) -> Option<usize> {
        self.users.iter().position(|user| user.id == id)
    }

    pub(super) fn by_id(&self, id: u32) -> Option<&UserRecord> {
        self.users.iter().find(|user| user.id == id)
    }

    pub(super) fn by_name(&self, name: &str) -> Option<&UserRecord> {
        self.users.iter().find(|user| user.name == name)
    }

    /// Whether a user other than `except` has `name`, compared without regard to case
    /// as InfiniBox compares names.
    pub(super) fn name_taken(&self, name: &str, except: Option<u32>) -> bool {
        (self.users.iter())
            .any(|user| crate::meta::bounds::same_name(&user.name, name) && Some(user.id) != except)
    }

    pub(super) fn enabled_admins(&self) -> usize {
        self.users
            .iter()
            .filter(|user| user.enabled && user.role == Role::Admin)
            .count()
    }

    /// Rejects a file that parses but cannot be right (duplicate ids or names, ids at or
    /// past `next_id`), so a hand-edited file fails at start, not at the first login.
    fn check(&self) -> Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not the supported version {FORMAT_VERSION}",
                self.version
            ));
        }
        for (index, user) in self.users.iter().enumerate() {
            if user.id >= self.next_id {
                return Err(format!(
                    "user {:?} has id {} but next_id is {}",
                    user.name, user.id, self.next_id
                ));
            }
            let earlier = &self.users[..index];
            if earlier.iter().any(|other| other.id == user.id) {
                return Err(format!("user id {} appears twice", user.id));
            }
            if earlier.iter().any(|other| other.name == user.name) {
                return Err(format!("user name {:?} appears twice", user.name));
            }
        }
        Ok(())
    }
}

pub(super) fn parse_users_file(path: &Path, bytes: &[u8]) -> anyhow::Result<UsersFile> {
    let advice = format!(
        "it holds the management users and their password hashes; restore it from a backup, \
         or move it aside to start over with a new `{DEFAULT_ADMIN_NAME}` user whose password \
         is written to {}",
        path.with_file_name(ADMIN_PASSWORD_FILE).display()
    );
    let file: UsersFile = serde_json::from_slice(bytes).with_context(|| {
        format!(
            "the management users file {} is corrupt; {advice}",
            path.display()
        )
    })?;
    if let Err(problem) = file.check() {
        bail!(
            "the management users file {} is inconsistent ({problem}); {advice}",
            path.display()
        );
    }
    Ok(file)
}

/// Creates the built-in admin: its password file first, then `users.json` (see the module
/// doc for why in this order).
pub(super) fn first_start(data_dir: &Path) -> anyhow::Result<(UsersFile, String)> {
    let password = generate_password()?;
    let now = now_ms();
    let file = UsersFile {
        version: FORMAT_VERSION,
        next_id: 2,
        users: vec![UserRecord {
            id: 1,
            name: DEFAULT_ADMIN_NAME.to_string(),
            email: String::new(),
            role: Role::Admin,
            enabled: true,
            created_at: now,
            updated_at: now,
            password_hash: hash_password(&password)?,
        }],
    };
    let password_path = data_dir.join(ADMIN_PASSWORD_FILE);
    write_private_file(&password_path, format!("{password}\n").as_bytes()).with_context(|| {
        format!(
            "cannot write the initial admin password to {}; check that the data directory \
             exists and is writable",
            password_path.display()
        )
    })?;
    write_users_file(data_dir, &file).with_context(|| {
        format!(
            "cannot write the management users file {}; check that the data directory is \
             writable",
            data_dir.join(USERS_FILE).display()
        )
    })?;
    Ok((file, password))
}

pub(super) fn write_users_file(data_dir: &Path, file: &UsersFile) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(file).context("cannot encode the users")?;
    let tmp_path = data_dir.join(USERS_TMP_FILE);
    write_private_file(&tmp_path, &bytes)?;
    fs::rename(&tmp_path, data_dir.join(USERS_FILE))
        .with_context(|| format!("cannot rename {} into place", tmp_path.display()))?;
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync the directory {}", data_dir.display()))
}

/// Writes `bytes` to a new file at `path` created with mode 0600 (any old file is removed
/// first, since opening an existing file keeps its mode) and fsyncs it.
fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = private_files::create_new(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
