//! Local users of the management API: their roles, password hashes, failed-login
//! throttling, the basic-auth credential cache and login sessions.
//!
//! What it promises:
//! - Every create, update and delete is durable when it returns `Ok`: `users.json` has been
//!   replaced and the directory synced. If saving fails, the change is not applied in
//!   memory and the caller gets a 500 `INTERNAL_ERROR` that names the file.
//! - Passwords are kept only as argon2id PHC strings with a random salt. Parameters:
//!   m = 12 MiB, t = 3, p = 1 (one of OWASP's argon2id settings), about 24 ms per verify in
//!   a release build on the development machine (2 cores). Hashes never leave this module.
//! - At least one enabled ADMIN always exists: deleting, demoting or disabling the last one
//!   is refused with 409 `LAST_ADMIN`.
//! - Failed logins are counted per name (also for names that do not exist, so the counter
//!   does not reveal which names do) for `failed_logins`. Nothing here sleeps or limits:
//!   how many guesses are checked at all is the REST layer's login limiter
//!   ([`crate::mgmt::login_limit`]), which refuses before this store is asked.
//!   An unknown name still costs one argon2 verify against a dummy hash, so timing does
//!   not reveal names either. A disabled user is reported as disabled only when the
//!   password was right.
//! - Consecutive failures and `last_login` are runtime state, not saved: a restart zeroes
//!   them. Sessions are in memory only: a restart logs everyone out.
//! - Deleting a user, disabling it, changing its password or its role ends its sessions
//!   and drops its cached basic-auth credentials.
//!
//! The on-disk format (`users.json`, `admin-password`) and the commit order that makes a
//! crash at any step safe are described in the doc of the `disk` submodule
//! (`src/mgmt/users/disk.rs`).

mod basic_cache;
mod disk;
mod password;
mod sessions;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use self::basic_cache::BasicCache;
pub use self::basic_cache::{BASIC_CACHE_CAPACITY, BASIC_CACHE_TTL};
use self::disk::{
    USERS_FILE, UserRecord, UsersFile, first_start, parse_users_file, write_users_file,
};
use self::password::{generate_password, hash_password, verify_password};
pub use self::sessions::MAX_SESSIONS;
use self::sessions::Sessions;
use self::validate::{
    NAME_MAX_CHARS, parse_role, validate_email, validate_name, validate_password,
};
use super::api::MgmtError;
use crate::clock::now_ms;

/// The cookie that carries a session token (InfiniBox uses a Java-style session cookie).
pub const SESSION_COOKIE: &str = "JSESSIONID";

/// A session ends after this long without a request.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The built-in user created on the first start.
pub const DEFAULT_ADMIN_NAME: &str = "admin";

/// Names whose consecutive failures are remembered; past this the stalest is forgotten.
const FAILURE_NAMES_CAPACITY: usize = 4096;

/// What a user may do. The REST layer decides which calls each role may make.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Admin,
    PoolAdmin,
    ReadOnly,
    Technician,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::PoolAdmin,
        Role::ReadOnly,
        Role::Technician,
    ];

    /// Parses a role name, ignoring case: ADMIN, POOL_ADMIN, READ_ONLY or TECHNICIAN.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::PoolAdmin => "POOL_ADMIN",
            Role::ReadOnly => "READ_ONLY",
            Role::Technician => "TECHNICIAN",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user as the API shows it. Never carries the password hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UserInfo {
    pub id: u32,
    pub name: String,
    /// Empty when the user has none.
    pub email: String,
    pub role: Role,
    pub enabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// The last successful password check since this process started.
    pub last_login: Option<u64>,
    /// Consecutive failed logins of this name since the last success (or the start).
    pub failed_logins: u64,
    /// Always "Local": users defined on the array, not in a directory service.
    #[serde(rename = "type")]
    pub user_type: String,
}

/// `POST /api/rest/users` body.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub name: String,
    pub password: String,
    pub role: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Defaults to true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PUT /api/rest/users/{id}` body: the fields to change.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    /// An empty string removes the email.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Why a login failed. The REST layer answers all three with the same 401 so a client
/// cannot tell them apart; the reason is for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailureReason {
    UnknownUser,
    BadPassword,
    /// The password was right but the user is disabled.
    Disabled,
}

/// A failed login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("login failed ({reason:?})")]
pub struct AuthFailure {
    pub reason: AuthFailureReason,
}

/// Consecutive failures of one login name.
struct NameFailures {
    consecutive: u64,
    last_failure: Instant,
}

/// Everything behind the store's lock.
struct State {
    file: UsersFile,
    failures: HashMap<String, NameFailures>,
    last_login: HashMap<u32, u64>,
    sessions: Sessions,
    basic_cache: BasicCache,
}

impl State {
    fn info(&self, user: &UserRecord) -> UserInfo {
        UserInfo {
            id: user.id,
            name: user.name.clone(),
            email: user.email.clone(),
            role: user.role,
            enabled: user.enabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
            last_login: self.last_login.get(&user.id).copied(),
            failed_logins: self
                .failures
                .get(&user.name)
                .map_or(0, |failures| failures.consecutive),
            user_type: "Local".to_string(),
        }
    }

    /// Counts a failure of `name`.
    fn record_failure(&mut self, name: &str, now: Instant) {
        let key: String = name.chars().take(NAME_MAX_CHARS).collect();
        if !self.failures.contains_key(&key) && self.failures.len() >= FAILURE_NAMES_CAPACITY {
            let stalest = self
                .failures
                .iter()
                .min_by_key(|(_, failures)| failures.last_failure)
                .map(|(name, _)| name.clone());
            if let Some(stalest) = stalest {
                self.failures.remove(&stalest);
            }
        }
        let failures = self.failures.entry(key).or_insert(NameFailures {
            consecutive: 0,
            last_failure: now,
        });
        failures.consecutive = failures.consecutive.saturating_add(1);
        failures.last_failure = now;
    }

    /// Ends the sessions and forgets the cached credentials of `user_id`.
    fn forget_credentials(&mut self, user_id: u32) {
        self.sessions.close_user(user_id);
        self.basic_cache.drop_user(user_id);
    }
}

/// See the module doc.
pub struct UserStore {
    data_dir: PathBuf,
    state: Mutex<State>,
    /// Verified when the name is unknown, so such a failure costs as much as a wrong password.
    dummy_hash: String,
    failed_logins_total: AtomicU64,
}

impl UserStore {
    /// Loads `users.json` from `data_dir`, or on the first start creates the `admin` user
    /// with a generated password, writes that password to `admin-password` and returns it
    /// so the caller can show it once.
    pub fn open(data_dir: &Path) -> anyhow::Result<(UserStore, Option<String>)> {
        let users_path = data_dir.join(USERS_FILE);
        let (file, admin_password) = match fs::read(&users_path) {
            Ok(bytes) => (parse_users_file(&users_path, &bytes)?, None),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let (file, password) = first_start(data_dir)?;
                (file, Some(password))
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot read the management users file {}; check its permissions",
                        users_path.display()
                    )
                });
            }
        };
        let dummy_hash = hash_password(&generate_password()?)?;
        let store = UserStore {
            data_dir: data_dir.to_path_buf(),
            state: Mutex::new(State {
                file,
                failures: HashMap::new(),
                last_login: HashMap::new(),
                sessions: Sessions::new(SESSION_IDLE_TIMEOUT, MAX_SESSIONS),
                basic_cache: BasicCache::new().context("the OS random source failed")?,
            }),
            dummy_hash,
            failed_logins_total: AtomicU64::new(0),
        };
        Ok((store, admin_password))
    }

    /// Creates a user; durable when it returns.
    pub fn create(&self, request: UserCreate) -> Result<UserInfo, MgmtError> {
        validate_name(&request.name)?;
        validate_password(&request.password)?;
        let role = parse_role(&request.role)?;
        let email = validate_email(request.email.as_deref().unwrap_or(""))?;
        let password_hash = hash_password(&request.password).map_err(internal_error)?;
        let now = now_ms();

        let mut state = self.state.lock();
        if state.file.name_taken(&request.name, None) {
            return Err(MgmtError::name_conflict("user", &request.name));
        }
        let mut file = state.file.clone();
        let id = file.next_id;
        file.next_id = id.checked_add(1).ok_or_else(|| {
            MgmtError::new(
                "INTERNAL_ERROR",
                500,
                "user ids are exhausted; no more users can be created",
            )
        })?;
        let record = UserRecord {
            id,
            name: request.name,
            email,
            role,
            enabled: request.enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
            password_hash,
        };
        file.users.push(record.clone());
        self.save(&file)?;
        state.file = file;
        state.failures.remove(&record.name);
        Ok(state.info(&record))
    }

    /// Changes the given fields of user `id`; durable when it returns. A new password, a
    /// new role or disabling ends the user's sessions.
    pub fn update(&self, id: u32, request: UserUpdate) -> Result<UserInfo, MgmtError> {
        if let Some(name) = &request.name {
            validate_name(name)?;
        }
        if let Some(password) = &request.password {
            validate_password(password)?;
        }
        let role = request.role.as_deref().map(parse_role).transpose()?;
        let email = request.email.as_deref().map(validate_email).transpose()?;
        let password_hash = match &request.password {
            Some(password) => Some(hash_password(password).map_err(internal_error)?),
            None => None,
        };

        let mut state = self.state.lock();
        let index = state.file.index_of(id).ok_or_else(|| user_not_found(id))?;
        let mut file = state.file.clone();
        let old = file.users[index].clone();
        if let Some(name) = &request.name
            && *name != old.name
            && file.name_taken(name, Some(id))
        {
            return Err(MgmtError::name_conflict("user", name));
        }
        let new_role = role.unwrap_or(old.role);
        let new_enabled = request.enabled.unwrap_or(old.enabled);
        let stays_admin = new_role == Role::Admin && new_enabled;
        if old.enabled && old.role == Role::Admin && !stays_admin && file.enabled_admins() == 1 {
            return Err(last_admin(&old.name, "demoted or disabled"));
        }
        let credentials_changed =
            password_hash.is_some() || new_role != old.role || new_enabled != old.enabled;
        let user = &mut file.users[index];
        if let Some(name) = request.name {
            user.name = name;
        }
        if let Some(email) = email {
            user.email = email;
        }
        if let Some(password_hash) = password_hash {
            user.password_hash = password_hash;
        }
        user.role = new_role;
        user.enabled = new_enabled;
        user.updated_at = now_ms();
        let updated = user.clone();
        self.save(&file)?;
        state.file = file;
        if credentials_changed {
            state.sessions.close_user(id);
        }
        state.basic_cache.drop_user(id);
        Ok(state.info(&updated))
    }

    /// Deletes user `id`, ending its sessions; durable when it returns.
    pub fn delete(&self, id: u32) -> Result<UserInfo, MgmtError> {
        let mut state = self.state.lock();
        let index = state.file.index_of(id).ok_or_else(|| user_not_found(id))?;
        let mut file = state.file.clone();
        let removed = file.users.remove(index);
        if removed.enabled && removed.role == Role::Admin && file.enabled_admins() == 0 {
            return Err(last_admin(&removed.name, "deleted"));
        }
        self.save(&file)?;
        state.file = file;
        state.forget_credentials(id);
        state.last_login.remove(&id);
        Ok(state.info(&removed))
    }

    pub fn get(&self, id: u32) -> Result<UserInfo, MgmtError> {
        let state = self.state.lock();
        let user = state.file.by_id(id).ok_or_else(|| user_not_found(id))?;
        Ok(state.info(user))
    }

    /// Every user, in id order.
    pub fn list(&self) -> Vec<UserInfo> {
        let state = self.state.lock();
        let mut users: Vec<UserInfo> = state.file.users.iter().map(|u| state.info(u)).collect();
        users.sort_by_key(|user| user.id);
        users
    }

    pub fn by_name(&self, name: &str) -> Option<UserInfo> {
        let state = self.state.lock();
        state.file.by_name(name).map(|user| state.info(user))
    }

    /// Checks a name and password with argon2; a failure is counted.
    pub fn authenticate(&self, name: &str, password: &str) -> Result<UserInfo, AuthFailure> {
        self.authenticate_verified(name, password)
            .map(|(user, _password_hash)| user)
    }

    /// Like [`UserStore::authenticate`], but a credential that was verified in the last
    /// [`BASIC_CACHE_TTL`] is accepted without running argon2 again. For HTTP basic auth,
    /// which sends the password with every request.
    pub fn authenticate_basic(&self, name: &str, password: &str) -> Result<UserInfo, AuthFailure> {
        let now = Instant::now();
        {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let key = state.basic_cache.key(name, password);
            let file = &state.file;
            let cached = state.basic_cache.get(&key, now, |id| {
                file.by_id(id)
                    .filter(|user| user.enabled && user.name == name)
                    .map(|user| user.password_hash.clone())
            });
            if let Some(id) = cached
                && let Some(user) = state.file.by_id(id)
            {
                let info = state.info(user);
                state.failures.remove(name);
                return Ok(info);
            }
        }
        let (user, password_hash) = self.authenticate_verified(name, password)?;
        let mut state = self.state.lock();
        let still_current = state
            .file
            .by_id(user.id)
            .is_some_and(|current| current.password_hash == password_hash);
        if still_current {
            let key = state.basic_cache.key(name, password);
            state
                .basic_cache
                .insert(key, user.id, password_hash, Instant::now());
        }
        Ok(user)
    }

    /// Checks a name and password and opens a session; returns the user and the session
    /// token to set in the [`SESSION_COOKIE`].
    pub fn login(&self, name: &str, password: &str) -> Result<(UserInfo, String), AuthFailure> {
        let (user, password_hash) = self.authenticate_verified(name, password)?;
        let mut state = self.state.lock();
        // The password or the user may have changed while argon2 ran without the lock.
        let still_current = state
            .file
            .by_id(user.id)
            .is_some_and(|current| current.password_hash == password_hash && current.enabled);
        if !still_current {
            return Err(AuthFailure {
                reason: AuthFailureReason::BadPassword,
            });
        }
        let token = state
            .sessions
            .open(user.id, Instant::now())
            .map_err(|_| AuthFailure {
                reason: AuthFailureReason::BadPassword,
            })?;
        Ok((user, token))
    }

    /// The user of a live session, restarting its idle timer; `None` for an unknown or
    /// expired token (an expired session is removed).
    pub fn session(&self, token: &str) -> Option<UserInfo> {
        let mut state = self.state.lock();
        let id = state.sessions.touch(token, Instant::now())?;
        match state.file.by_id(id).filter(|user| user.enabled) {
            Some(user) => Some(state.info(user)),
            None => {
                state.sessions.close(token);
                None
            }
        }
    }

    /// Ends a session; false if there was no such session.
    pub fn logout(&self, token: &str) -> bool {
        self.state.lock().sessions.close(token)
    }

    /// Changes the idle timeout of all sessions, current ones included.
    pub fn set_session_timeout(&self, idle_timeout: Duration) {
        self.state.lock().sessions.set_idle_timeout(idle_timeout);
    }

    /// Failed logins since the process started, of all names.
    pub fn failed_logins_total(&self) -> u64 {
        self.failed_logins_total.load(Ordering::Relaxed)
    }

    /// The password check behind every login path. Returns the user and the hash the
    /// password was verified against, so callers can tell whether it changed since.
    fn authenticate_verified(
        &self,
        name: &str,
        password: &str,
    ) -> Result<(UserInfo, String), AuthFailure> {
        let candidate = {
            let state = self.state.lock();
            state
                .file
                .by_name(name)
                .map(|user| (user.id, user.password_hash.clone()))
        };
        // Argon2 runs without the lock: it takes tens of milliseconds.
        let verified = match &candidate {
            Some((_, password_hash)) => verify_password(password, password_hash),
            None => {
                verify_password(password, &self.dummy_hash);
                false
            }
        };

        let reason = {
            let mut state = self.state.lock();
            let reason = match &candidate {
                None => AuthFailureReason::UnknownUser,
                Some((id, password_hash)) => match state.file.by_id(*id) {
                    Some(user) if verified && user.password_hash == *password_hash => {
                        if user.enabled {
                            let info = state.info(user);
                            state.failures.remove(name);
                            let now = now_ms();
                            state.last_login.insert(*id, now);
                            let info = UserInfo {
                                last_login: Some(now),
                                failed_logins: 0,
                                ..info
                            };
                            return Ok((info, password_hash.clone()));
                        }
                        AuthFailureReason::Disabled
                    }
                    _ => AuthFailureReason::BadPassword,
                },
            };
            state.record_failure(name, Instant::now());
            reason
        };
        self.failed_logins_total.fetch_add(1, Ordering::Relaxed);
        Err(AuthFailure { reason })
    }

    /// Replaces `users.json` with `file`: tmp file, fsync, rename, fsync the directory.
    fn save(&self, file: &UsersFile) -> Result<(), MgmtError> {
        write_users_file(&self.data_dir, file).map_err(|error| {
            MgmtError::new(
                "INTERNAL_ERROR",
                500,
                format!(
                    "could not save the users file {}: {error:#}; the change was not applied \
                     (if the file was already replaced it takes effect at the next start); \
                     check the data directory's disk space and permissions",
                    self.data_dir.join(USERS_FILE).display()
                ),
            )
        })
    }
}

fn user_not_found(id: u32) -> MgmtError {
    MgmtError::new("USER_NOT_FOUND", 404, format!("user {id} does not exist"))
}

fn last_admin(name: &str, action: &str) -> MgmtError {
    MgmtError::new(
        "LAST_ADMIN",
        409,
        format!(
            "user {name:?} is the last enabled ADMIN and cannot be {action}; create or \
             enable another ADMIN first"
        ),
    )
}

fn internal_error(error: anyhow::Error) -> MgmtError {
    MgmtError::new("INTERNAL_ERROR", 500, format!("{error:#}"))
}
