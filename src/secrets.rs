//! Secrets at rest: the node key and the sealed form of every secret the node keeps (CHAP
//! secrets now, replication credentials later).
//!
//! What it promises: a secret is written to any persistent record only sealed, with
//! XChaCha20-Poly1305 under the node's 32-byte key, a fresh random 24-byte nonce per seal,
//! and the owning object's kind and id as associated data (so a sealed secret moved to
//! another object does not open). Plain secrets live only in memory.
//!
//! Sealed form (text, so it sits in JSON): `xc20p1:` then base64 (standard, padded) of
//! `nonce (24 bytes) | ciphertext | tag (16 bytes)`. The prefix names the format; anything
//! else is refused.
//!
//! The key lives in `<data-dir>/node.key` (mode 0600), made from the OS random source at
//! the first start: one line `troika node key v1: <64 hex digits>`. Whoever holds the
//! file holds the secrets; without it they cannot be opened. [`NodeKey::id`] is a
//! fingerprint the metadata records so that a start with the wrong key is refused with a
//! clear message instead of failing record by record.
//!
//! Serde has no way to hand a key to a `Serialize` impl, so the metadata encoders run
//! inside [`with_key`], which makes the key visible to [`seal_in_scope`] and
//! [`open_in_scope`] on this thread for the duration of the call; outside it those fail,
//! so a record holding a secret can never be written unsealed by accident.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blake2::Blake2b512;
use blake2::digest::Digest;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

use crate::private_files;

/// The node key's file name in the data directory.
pub const KEY_FILE: &str = "node.key";
const KEY_LINE_PREFIX: &str = "troika node key v1: ";
const SEALED_PREFIX: &str = "xc20p1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Why a secret could not be sealed or opened, or the key not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the sealed secret of {context} does not open with this node's key: the key in {KEY_FILE} is not the one it was sealed with, or the record was altered"
    )]
    WrongKeyOrTampered { context: String },
    #[error("the sealed secret of {context} is malformed ({reason})")]
    Malformed { context: String, reason: String },
    #[error(
        "a secret of {context} must be written sealed, but no node key is in scope (a bug: the encoder did not run under secrets::with_key)"
    )]
    NoKeyInScope { context: String },
    #[error("the OS random source failed: {0}")]
    Random(String),
    #[error("the node key {path} {problem}")]
    KeyFile { path: PathBuf, problem: String },
}

/// The node's 32-byte key. Its bytes never leave this module; `Debug` shows only the
/// fingerprint.
pub struct NodeKey {
    cipher: XChaCha20Poly1305,
    id: u64,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey(id {:016x})", self.id)
    }
}

impl NodeKey {
    /// A key from its bytes (tests, and the key file).
    pub fn from_bytes(bytes: [u8; 32]) -> NodeKey {
        let mut hasher = Blake2b512::new();
        hasher.update(b"troika node key fingerprint\0");
        hasher.update(bytes);
        let digest = hasher.finalize();
        NodeKey {
            cipher: XChaCha20Poly1305::new(&bytes.into()),
            id: u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")),
        }
    }

    /// A fingerprint of the key: equal fingerprints mean (beyond chance) equal keys, and
    /// it tells nothing about the key's bytes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reads `<data_dir>/node.key`, or makes a new key there (0600, fsynced) when the file
    /// does not exist. Returns the key and whether it was made now.
    pub fn load_or_create(data_dir: &Path) -> Result<(NodeKey, bool), SecretError> {
        let path = data_dir.join(KEY_FILE);
        let key_error = |problem: String| SecretError::KeyFile {
            path: path.clone(),
            problem,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_key_file(&text).map(|key| (key, false)).map_err(|problem| {
                key_error(format!(
                    "is not a troika node key ({problem}); restore this node's key from a backup"
                ))
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|error| SecretError::Random(error.to_string()))?;
                let line = format!("{KEY_LINE_PREFIX}{}\n", hex(&bytes));
                write_key_file(&path, line.as_bytes())
                    .map_err(|error| key_error(format!("cannot be written: {error}")))?;
                Ok((NodeKey::from_bytes(bytes), true))
            }
            Err(error) => Err(key_error(format!("cannot be read: {error}"))),
        }
    }

    /// Seals `plain` for `context` (the owning object's kind and id, e.g. `host 7 inbound
    /// CHAP secret`).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|error| SecretError::Random(error.to_string()))?;
        let nonce = XNonce::from(nonce);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Malformed {
                context: context.to_owned(),
                reason: "too long to seal".into(),
            })?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(bytes)))
    }

    /// Opens what [`NodeKey::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let malformed = |reason: &str| SecretError::Malformed {
            context: context.to_owned(),
            reason: reason.to_owned(),
        };
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| malformed("unknown format"))?;
        let bytes = STANDARD.decode(body).map_err(|_| malformed("not base64"))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed("too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::WrongKeyOrTampered {
                context: context.to_owned(),
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_key_file(text: &str) -> Result<NodeKey, String> {
    let digits = text
        .trim_end()
        .strip_prefix(KEY_LINE_PREFIX)
        .ok_or("its first words are not \"troika node key v1:\"")?;
    if digits.len() != 64 || !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err("the key is not 64 hex digits".into());
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[index * 2..index * 2 + 2], 16)
            .map_err(|_| "the key is not 64 hex digits")?;
    }
    Ok(NodeKey::from_bytes(bytes))
}

/// Creates the key file (never replacing one) with mode 0600 and makes it durable.
fn write_key_file(path: &Path, line: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    let mut file = private_files::open_or_create(path, &mut options)?;
    if file.metadata()?.len() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "another process made it meanwhile",
        ));
    }
    file.write_all(line)?;
    file.sync_all()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

thread_local! {
    static SCOPE_KEY: RefCell<Option<std::sync::Arc<NodeKey>>> = const { RefCell::new(None) };
}

/// Runs `f` with `key` in scope on this thread for [`seal_in_scope`] and
/// [`open_in_scope`] (the metadata encoders and decoders run inside it).
pub fn with_key<R>(key: &std::sync::Arc<NodeKey>, f: impl FnOnce() -> R) -> R {
    let previous = SCOPE_KEY.with(|scope| scope.replace(Some(key.clone())));
    struct Restore(Option<std::sync::Arc<NodeKey>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPE_KEY.with(|scope| *scope.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

fn scope_key(context: &str) -> Result<std::sync::Arc<NodeKey>, SecretError> {
    SCOPE_KEY
        .with(|scope| scope.borrow().clone())
        .ok_or_else(|| SecretError::NoKeyInScope {
            context: context.to_owned(),
        })
}

/// [`NodeKey::seal`] with the key [`with_key`] put in scope.
pub fn seal_in_scope(context: &str, plain: &[u8]) -> Result<String, SecretError> {
    scope_key(context)?.seal(context, plain)
}

/// [`NodeKey::open`] with the key [`with_key`] put in scope.
pub fn open_in_scope(context: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
    scope_key(context)?.open(context, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    const SECRET: &[u8] = b"Distinctive-16b!";

    #[test]
    fn seal_open_round_trip_with_a_fresh_nonce_each_time() {
        let key = NodeKey::from_bytes([7; 32]);
        let first = key.seal("host 1 inbound CHAP secret", SECRET).unwrap();
        let second = key.seal("host 1 inbound CHAP secret", SECRET).unwrap();
        assert_ne!(first, second, "each seal draws a new nonce");
        assert!(first.starts_with(SEALED_PREFIX));
        assert!(!first.contains("Distinctive"));
        for sealed in [&first, &second] {
            assert_eq!(
                key.open("host 1 inbound CHAP secret", sealed).unwrap(),
                SECRET
            );
        }
    }

    #[test]
    fn a_wrong_key_or_another_object_does_not_open() {
        let key = NodeKey::from_bytes([7; 32]);
        let other = NodeKey::from_bytes([8; 32]);
        assert_ne!(key.id(), other.id());
        let sealed = key.seal("host 1 inbound CHAP secret", SECRET).unwrap();
        assert!(matches!(
            other.open("host 1 inbound CHAP secret", &sealed),
            Err(SecretError::WrongKeyOrTampered { .. })
        ));
        assert!(matches!(
            key.open("host 2 inbound CHAP secret", &sealed),
            Err(SecretError::WrongKeyOrTampered { .. })
        ));
    }

    #[test]
    fn tampered_or_malformed_ciphertext_is_refused() {
        let key = NodeKey::from_bytes([7; 32]);
        let sealed = key.seal("ctx", SECRET).unwrap();
        let mut bytes = STANDARD.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 1;
            let tampered = format!("{SEALED_PREFIX}{}", STANDARD.encode(&bytes));
            assert!(matches!(
                key.open("ctx", &tampered),
                Err(SecretError::WrongKeyOrTampered { .. })
            ));
            bytes[at] ^= 1;
        }
        for bad in ["plain-secret", "xc20p1:!!!", "xc20p1:AAAA"] {
            assert!(matches!(
                key.open("ctx", bad),
                Err(SecretError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn sealing_needs_a_key_in_scope() {
        assert!(matches!(
            seal_in_scope("ctx", SECRET),
            Err(SecretError::NoKeyInScope { .. })
        ));
        let key = Arc::new(NodeKey::from_bytes([9; 32]));
        let sealed = with_key(&key, || seal_in_scope("ctx", SECRET)).unwrap();
        assert_eq!(
            with_key(&key, || open_in_scope("ctx", &sealed)).unwrap(),
            SECRET
        );
        assert!(open_in_scope("ctx", &sealed).is_err(), "the scope ended");
    }

    #[test]
    fn the_key_file_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (made, created) = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(created);
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (loaded, created) = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(made.id(), loaded.id());
        std::fs::write(&path, "garbage\n").unwrap();
        let error = NodeKey::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("node.key") && error.contains("not a troika node key"),
            "{error}"
        );
    }
}
