//! Recently verified basic-auth credentials, so that a client sending the same correct
//! name and password on every request pays for argon2 once per [`BASIC_CACHE_TTL`], not
//! per request.
//!
//! An entry is keyed by a keyed BLAKE2s MAC of (name, password) under a per-process random
//! key: the table never holds a password, and without the key its keys cannot be matched
//! against guesses. An entry also remembers the password hash it was verified against, so
//! it is worthless once that user's password changes even if nobody dropped it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};

/// How long a verified credential is trusted without running argon2 again.
pub const BASIC_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// Most credentials remembered at once; inserting past this evicts the oldest.
pub const BASIC_CACHE_CAPACITY: usize = 1024;

pub(super) type CredentialKey = [u8; 32];

struct Entry {
    user_id: u32,
    password_hash: String,
    verified_at: Instant,
}

pub(super) struct BasicCache {
    mac_key: [u8; 32],
    entries: HashMap<CredentialKey, Entry>,
}

impl BasicCache {
    pub(super) fn new() -> Result<Self, getrandom::Error> {
        let mut mac_key = [0u8; 32];
        getrandom::fill(&mut mac_key)?;
        Ok(BasicCache {
            mac_key,
            entries: HashMap::new(),
        })
    }

    /// The MAC of a credential. The name is length-prefixed so ("ab", "c") and ("a", "bc")
    /// differ.
    pub(super) fn key(&self, name: &str, password: &str) -> CredentialKey {
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(&self.mac_key)
            .expect("a 32-byte key is valid for BLAKE2s");
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The user id a fresh entry vouches for, if its password hash is still
    /// `current_hash(user_id)`. Stale entries are removed.
    pub(super) fn get(
        &mut self,
        key: &CredentialKey,
        now: Instant,
        current_hash: impl Fn(u32) -> Option<String>,
    ) -> Option<u32> {
        let entry = self.entries.get(key)?;
        let fresh = now.duration_since(entry.verified_at) <= BASIC_CACHE_TTL
            && current_hash(entry.user_id).as_deref() == Some(entry.password_hash.as_str());
        if fresh {
            Some(entry.user_id)
        } else {
            self.entries.remove(key);
            None
        }
    }

    pub(super) fn insert(
        &mut self,
        key: CredentialKey,
        user_id: u32,
        password_hash: String,
        now: Instant,
    ) {
        if self.entries.len() >= BASIC_CACHE_CAPACITY && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, entry| now.duration_since(entry.verified_at) <= BASIC_CACHE_TTL);
        }
        if self.entries.len() >= BASIC_CACHE_CAPACITY && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.verified_at)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                user_id,
                password_hash,
                verified_at: now,
            },
        );
    }

    /// Forgets every credential of `user_id`.
    pub(super) fn drop_user(&mut self, user_id: u32) {
        self.entries.retain(|_, entry| entry.user_id != user_id);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
