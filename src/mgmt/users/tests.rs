use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::disk::{ADMIN_PASSWORD_FILE, USERS_TMP_FILE};
use super::*;

fn open(dir: &Path) -> (UserStore, Option<String>) {
    let (store, password) = UserStore::open(dir).expect("open the user store");
    store.set_failure_delay_unit(Duration::from_millis(1));
    (store, password)
}

fn create(name: &str, password: &str, role: &str) -> UserCreate {
    UserCreate {
        name: name.to_string(),
        password: password.to_string(),
        role: role.to_string(),
        email: None,
        enabled: None,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn stored_hash(dir: &Path, name: &str) -> String {
    let file: UsersFile =
        serde_json::from_slice(&fs::read(dir.join(USERS_FILE)).expect("read")).expect("parse");
    file.by_name(name)
        .expect("stored user")
        .password_hash
        .clone()
}

#[test]
fn role_parses_case_insensitively_and_round_trips() {
    assert_eq!(Role::parse("pool_admin"), Some(Role::PoolAdmin));
    assert_eq!(Role::parse("Read_Only"), Some(Role::ReadOnly));
    assert_eq!(Role::parse("POOLADMIN"), None);
    for role in Role::ALL {
        assert_eq!(Role::parse(role.as_str()), Some(role));
        let json = serde_json::to_string(&role).expect("serialize");
        assert_eq!(json, format!("\"{}\"", role.as_str()));
    }
}

#[test]
fn first_open_creates_admin_and_private_password_file_once() {
    let dir = TempDir::new().expect("tempdir");
    let (store, password) = open(dir.path());
    let password = password.expect("first start returns the admin password");
    assert!(password.len() >= 20);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    let password_path = dir.path().join(ADMIN_PASSWORD_FILE);
    assert_eq!(
        fs::read_to_string(&password_path).expect("read"),
        format!("{password}\n")
    );
    assert_eq!(mode(&password_path), 0o600);
    assert_eq!(mode(&dir.path().join(USERS_FILE)), 0o600);

    let admin = store.get(1).expect("admin exists");
    assert_eq!(admin.name, "admin");
    assert_eq!(admin.role, Role::Admin);
    assert!(admin.enabled);
    assert_eq!(admin.user_type, "Local");
    let json = serde_json::to_string(&admin).expect("serialize");
    assert!(json.contains("\"type\":\"Local\""));
    assert!(!json.contains("argon2"));
    assert_eq!(store.authenticate("admin", &password).expect("login").id, 1);

    let hash = stored_hash(dir.path(), "admin");
    drop(store);
    let (store, again) = open(dir.path());
    assert_eq!(again, None);
    assert_eq!(stored_hash(dir.path(), "admin"), hash);
    assert_eq!(store.authenticate("admin", &password).expect("login").id, 1);
}

#[test]
fn create_update_delete_persist_across_reopen() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    let alice = store
        .create(UserCreate {
            email: Some("alice@example.com".to_string()),
            ..create("alice", "alice-password", "read_only")
        })
        .expect("create alice");
    assert_eq!(alice.id, 2);
    assert_eq!(alice.role, Role::ReadOnly);
    let bob = store
        .create(create("bob", "bob-password", "POOL_ADMIN"))
        .expect("create bob");
    let alice = store
        .update(
            alice.id,
            UserUpdate {
                name: Some("alice.b".to_string()),
                role: Some("technician".to_string()),
                enabled: Some(false),
                ..UserUpdate::default()
            },
        )
        .expect("update alice");
    store.delete(bob.id).expect("delete bob");
    drop(store);

    let (store, _) = open(dir.path());
    let listed = store.list();
    assert_eq!(listed.len(), 2);
    let reopened = store.get(alice.id).expect("alice persisted");
    assert_eq!(reopened.name, "alice.b");
    assert_eq!(reopened.email, "alice@example.com");
    assert_eq!(reopened.role, Role::Technician);
    assert!(!reopened.enabled);
    assert_eq!(
        store.get(bob.id).expect_err("bob deleted").code,
        "USER_NOT_FOUND"
    );
    assert!(store.by_name("bob").is_none());
    // Ids are not reused.
    let carol = store
        .create(create("carol", "carol-password", "ADMIN"))
        .expect("create carol");
    assert_eq!(carol.id, 4);
}

#[test]
fn invalid_requests_are_rejected_with_their_codes() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    store
        .create(create("alice", "alice-password", "ADMIN"))
        .expect("create");
    let conflict = store
        .create(create("alice", "other-password", "ADMIN"))
        .expect_err("same name");
    assert_eq!((conflict.code, conflict.status), ("NAME_CONFLICT", 409));
    // Names are unique without regard to case, as InfiniBox treats them.
    let conflict = store
        .create(create("Alice", "other-password", "ADMIN"))
        .expect_err("a name differing only in case is the same name");
    assert_eq!((conflict.code, conflict.status), ("NAME_CONFLICT", 409));
    let bob = store
        .create(create("bob", "bob-password", "ADMIN"))
        .expect("create bob");
    let rename = |name: &str| UserUpdate {
        name: Some(name.into()),
        ..UserUpdate::default()
    };
    let clash = store
        .update(bob.id, rename("ALICE"))
        .expect_err("rename onto alice");
    assert_eq!(clash.code, "NAME_CONFLICT");
    let recased = store
        .update(bob.id, rename("Bob"))
        .expect("a user may change its own case");
    assert_eq!(recased.name, "Bob");
    store.delete(recased.id).expect("delete bob");

    let role = store
        .create(create("bob", "bob-password", "superuser"))
        .expect_err("bad role");
    assert_eq!((role.code, role.status), ("INVALID_ROLE", 400));
    assert!(role.message.contains("POOL_ADMIN"), "{}", role.message);

    let short = store
        .create(create("bob", "short", "ADMIN"))
        .expect_err("short password");
    assert_eq!((short.code, short.status), ("PASSWORD_TOO_SHORT", 400));
    assert!(!short.message.contains("short\""));
    for name in ["", "has space", "slash/", &"x".repeat(65)] {
        let error = store
            .create(create(name, "bob-password", "ADMIN"))
            .expect_err("bad name");
        assert_eq!(error.status, 400, "{name:?}");
    }
    let email = store
        .create(UserCreate {
            email: Some("not-an-address".to_string()),
            ..create("bob", "bob-password", "ADMIN")
        })
        .expect_err("bad email");
    assert_eq!(email.status, 400);

    let rename = store
        .update(
            2,
            UserUpdate {
                name: Some(DEFAULT_ADMIN_NAME.to_uppercase()),
                ..UserUpdate::default()
            },
        )
        .expect_err("rename onto another user");
    assert_eq!(rename.code, "NAME_CONFLICT");
    assert_eq!(
        store
            .update(99, UserUpdate::default())
            .expect_err("missing")
            .status,
        404
    );
    let unknown_field = serde_json::from_str::<UserUpdate>(r#"{"nmae": "x"}"#);
    assert!(unknown_field.is_err());
}

#[test]
fn names_made_only_of_dots_are_refused_like_other_invalid_names() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    let invalid = store
        .create(create("has space", "bob-password", "ADMIN"))
        .expect_err("bad name");
    for name in [".", "..", "..."] {
        let created = store
            .create(create(name, "bob-password", "ADMIN"))
            .expect_err("dots only");
        assert_eq!(
            (created.code, created.status),
            (invalid.code, invalid.status),
            "{name:?}"
        );
        let renamed = store
            .update(
                1,
                UserUpdate {
                    name: Some(name.to_string()),
                    ..UserUpdate::default()
                },
            )
            .expect_err("rename to dots only");
        assert_eq!(
            (renamed.code, renamed.status),
            (invalid.code, invalid.status),
            "{name:?}"
        );
    }
    assert_eq!(store.list().len(), 1);
    for name in [".alice", "bob.", "c.d"] {
        store
            .create(create(name, "bob-password", "ADMIN"))
            .expect("dots beside other characters are fine");
    }
}

#[test]
fn last_enabled_admin_cannot_be_deleted_demoted_or_disabled() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    assert_eq!(store.delete(1).expect_err("last admin").code, "LAST_ADMIN");
    let demote = UserUpdate {
        role: Some("READ_ONLY".to_string()),
        ..UserUpdate::default()
    };
    let disable = UserUpdate {
        enabled: Some(false),
        ..UserUpdate::default()
    };
    assert_eq!(
        store.update(1, demote.clone()).expect_err("demote").status,
        409
    );
    assert_eq!(
        store.update(1, disable.clone()).expect_err("disable").code,
        "LAST_ADMIN"
    );
    // A disabled second admin does not count.
    let second = store
        .create(UserCreate {
            enabled: Some(false),
            ..create("second", "second-password", "ADMIN")
        })
        .expect("create");
    assert_eq!(store.delete(1).expect_err("still last").code, "LAST_ADMIN");
    store
        .update(
            second.id,
            UserUpdate {
                enabled: Some(true),
                ..UserUpdate::default()
            },
        )
        .expect("enable second admin");
    store.update(1, demote).expect("no longer the last admin");
    assert_eq!(
        store
            .delete(second.id)
            .expect_err("now second is last")
            .code,
        "LAST_ADMIN"
    );
    assert_eq!(store.get(1).expect("admin").role, Role::ReadOnly);
}

#[test]
fn authenticate_counts_failures_and_grows_the_delay() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    let alice = store
        .create(create("alice", "alice-password", "ADMIN"))
        .expect("create");

    let unit = Duration::from_millis(1);
    let expected = [0, 0, 0, 1, 2, 4, 8, 16, 16].map(|units| unit * units);
    for (attempt, delay) in expected.into_iter().enumerate() {
        let failure = store
            .authenticate("alice", "wrong-password")
            .expect_err("wrong password");
        assert_eq!(failure.reason, AuthFailureReason::BadPassword);
        assert_eq!(failure.delay, delay, "attempt {attempt}");
    }
    assert_eq!(store.get(alice.id).expect("get").failed_logins, 9);
    assert_eq!(store.failed_logins_total(), 9);

    let user = store
        .authenticate("alice", "alice-password")
        .expect("right password");
    assert!(user.last_login.is_some());
    assert_eq!(user.failed_logins, 0);
    assert_eq!(
        store.get(alice.id).expect("get").last_login,
        user.last_login
    );
    let failure = store
        .authenticate("alice", "wrong-password")
        .expect_err("counter was reset");
    assert_eq!(failure.delay, Duration::ZERO);

    let unknown = store
        .authenticate("nobody", "some-password")
        .expect_err("unknown");
    assert_eq!(unknown.reason, AuthFailureReason::UnknownUser);
    assert_eq!(store.failed_logins_total(), 11);

    store
        .update(
            alice.id,
            UserUpdate {
                enabled: Some(false),
                ..UserUpdate::default()
            },
        )
        .expect("disable");
    let disabled = store
        .authenticate("alice", "alice-password")
        .expect_err("disabled");
    assert_eq!(disabled.reason, AuthFailureReason::Disabled);
    // A disabled account is not revealed to someone without its password.
    let guess = store
        .authenticate("alice", "wrong-password")
        .expect_err("disabled and wrong");
    assert_eq!(guess.reason, AuthFailureReason::BadPassword);
}

#[test]
fn failure_delay_is_capped_at_sixteen_units() {
    let unit = FAILURE_DELAY_UNIT;
    assert_eq!(failure_delay(3, unit), Duration::ZERO);
    assert_eq!(failure_delay(4, unit), Duration::from_millis(250));
    assert_eq!(failure_delay(8, unit), Duration::from_secs(4));
    assert_eq!(failure_delay(u64::MAX, unit), Duration::from_secs(4));
}

#[test]
fn basic_auth_cache_hits_and_is_dropped_on_password_change() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    let alice = store
        .create(create("alice", "alice-password", "ADMIN"))
        .expect("create");
    store
        .authenticate_basic("alice", "alice-password")
        .expect("first check runs argon2");
    assert_eq!(store.state.lock().basic_cache.len(), 1);
    let login = store.get(alice.id).expect("get").last_login;

    // A hit runs no argon2, so it does not record a new login either.
    let start = Instant::now();
    for _ in 0..100 {
        store
            .authenticate_basic("alice", "alice-password")
            .expect("cached");
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(store.get(alice.id).expect("get").last_login, login);
    assert_eq!(
        store
            .authenticate_basic("alice", "wrong-password")
            .expect_err("a wrong password misses the cache")
            .reason,
        AuthFailureReason::BadPassword
    );

    store
        .update(
            alice.id,
            UserUpdate {
                password: Some("new-alice-password".to_string()),
                ..UserUpdate::default()
            },
        )
        .expect("change password");
    assert_eq!(store.state.lock().basic_cache.len(), 0);
    assert_eq!(
        store
            .authenticate_basic("alice", "alice-password")
            .expect_err("old password")
            .reason,
        AuthFailureReason::BadPassword
    );
    store
        .authenticate_basic("alice", "new-alice-password")
        .expect("new password");
    store.delete(alice.id).expect("delete");
    assert_eq!(store.state.lock().basic_cache.len(), 0);
    assert_eq!(
        store
            .authenticate_basic("alice", "new-alice-password")
            .expect_err("deleted")
            .reason,
        AuthFailureReason::UnknownUser
    );
}

#[test]
fn sessions_expire_and_end_with_their_user() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    let alice = store
        .create(create("alice", "alice-password", "ADMIN"))
        .expect("create");
    let (user, token) = store.login("alice", "alice-password").expect("login");
    assert_eq!(user.id, alice.id);
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(store.session(&token).expect("live").id, alice.id);
    assert!(store.session("0123456789abcdef0123456789abcdef").is_none());

    assert!(store.logout(&token));
    assert!(!store.logout(&token));
    assert!(store.session(&token).is_none());

    store.set_session_timeout(Duration::from_millis(400));
    let (_, token) = store.login("alice", "alice-password").expect("login");
    std::thread::sleep(Duration::from_millis(250));
    assert!(
        store.session(&token).is_some(),
        "touching restarts the timer"
    );
    std::thread::sleep(Duration::from_millis(250));
    assert!(store.session(&token).is_some());
    std::thread::sleep(Duration::from_millis(500));
    assert!(store.session(&token).is_none(), "idle past the timeout");
    assert_eq!(store.state.lock().sessions.len(), 0);

    store.set_session_timeout(SESSION_IDLE_TIMEOUT);
    let (_, token) = store.login("alice", "alice-password").expect("login");
    store
        .update(
            alice.id,
            UserUpdate {
                email: Some("alice@example.com".to_string()),
                ..UserUpdate::default()
            },
        )
        .expect("email change keeps sessions");
    assert!(store.session(&token).is_some());
    store
        .update(
            alice.id,
            UserUpdate {
                role: Some("READ_ONLY".to_string()),
                ..UserUpdate::default()
            },
        )
        .expect("role change ends sessions");
    assert!(store.session(&token).is_none());
    let (_, token) = store.login("alice", "alice-password").expect("login");
    store.delete(alice.id).expect("delete");
    assert!(store.session(&token).is_none());
    assert!(store.login("alice", "alice-password").is_err());
}

#[test]
fn session_table_evicts_the_least_recently_used() {
    let mut sessions = Sessions::new(SESSION_IDLE_TIMEOUT, 3);
    let start = Instant::now();
    let tokens: Vec<String> = (0..3u64)
        .map(|i| {
            sessions
                .open(1, start + Duration::from_millis(i))
                .expect("token")
        })
        .collect();
    assert!(
        sessions
            .touch(&tokens[0], start + Duration::from_millis(10))
            .is_some()
    );
    let newest = sessions
        .open(2, start + Duration::from_millis(11))
        .expect("token");
    assert_eq!(sessions.len(), 3);
    assert!(
        sessions
            .touch(&tokens[1], start + Duration::from_millis(12))
            .is_none()
    );
    assert!(
        sessions
            .touch(&tokens[0], start + Duration::from_millis(12))
            .is_some()
    );
    assert_eq!(
        sessions.touch(&newest, start + Duration::from_millis(12)),
        Some(2)
    );
}

#[test]
fn corrupt_users_file_is_an_error_naming_the_file() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    drop(store);
    let path = dir.path().join(USERS_FILE);
    fs::write(&path, b"{\"version\": 1, \"next_id\": ").expect("corrupt");
    let error = format!("{:#}", UserStore::open(dir.path()).err().expect("corrupt"));
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("restore it from a backup"), "{error}");
    // The corrupt file is left as it was, not replaced by defaults.
    assert_eq!(
        fs::read(&path).expect("read"),
        b"{\"version\": 1, \"next_id\": "
    );

    fs::write(
        &path,
        br#"{"version": 1, "next_id": 2, "users": [
            {"id": 1, "name": "a", "email": "", "role": "ADMIN", "enabled": true,
             "created_at": 0, "updated_at": 0, "password_hash": "x"},
            {"id": 1, "name": "b", "email": "", "role": "ADMIN", "enabled": true,
             "created_at": 0, "updated_at": 0, "password_hash": "x"}]}"#,
    )
    .expect("write");
    let error = format!(
        "{:#}",
        UserStore::open(dir.path()).err().expect("duplicate")
    );
    assert!(error.contains("inconsistent"), "{error}");
}

#[test]
fn a_failed_save_leaves_the_store_unchanged() {
    let dir = TempDir::new().expect("tempdir");
    let (store, _) = open(dir.path());
    // A directory where the tmp file goes makes the save fail.
    fs::create_dir(dir.path().join(USERS_TMP_FILE)).expect("mkdir");
    let error = store
        .create(create("alice", "alice-password", "ADMIN"))
        .expect_err("save fails");
    assert_eq!((error.code, error.status), ("INTERNAL_ERROR", 500));
    assert!(error.message.contains(USERS_FILE), "{}", error.message);
    assert!(store.by_name("alice").is_none());
    fs::remove_dir(dir.path().join(USERS_TMP_FILE)).expect("rmdir");
    let alice = store
        .create(create("alice", "alice-password", "ADMIN"))
        .expect("create");
    assert_eq!(alice.id, 2);
}
