//! The table of live API sessions: random tokens mapped to user ids, with an idle expiry
//! and a cap on how many can exist. In memory only; the owner ([`super::UserStore`]) holds
//! it under its lock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most sessions kept at once; a login past this evicts the least recently used one.
pub const MAX_SESSIONS: usize = 10_000;

/// Bytes of OS randomness in a session token (128 bits), shown as 32 hex digits.
const TOKEN_BYTES: usize = 16;

struct Session {
    user_id: u32,
    last_used: Instant,
}

pub(super) struct Sessions {
    by_token: HashMap<String, Session>,
    idle_timeout: Duration,
    cap: usize,
}

impl Sessions {
    pub(super) fn new(idle_timeout: Duration, cap: usize) -> Self {
        Sessions {
            by_token: HashMap::new(),
            idle_timeout,
            cap,
        }
    }

    pub(super) fn set_idle_timeout(&mut self, idle_timeout: Duration) {
        self.idle_timeout = idle_timeout;
    }

    /// Opens a session for `user_id` and returns its token. Expired sessions are dropped
    /// first; if the table is still full, the least recently used session is evicted.
    pub(super) fn open(&mut self, user_id: u32, now: Instant) -> Result<String, getrandom::Error> {
        let token = new_token()?;
        let idle_timeout = self.idle_timeout;
        self.by_token
            .retain(|_, session| now.duration_since(session.last_used) <= idle_timeout);
        if self.by_token.len() >= self.cap {
            let oldest = self
                .by_token
                .iter()
                .min_by_key(|(_, session)| session.last_used)
                .map(|(token, _)| token.clone());
            if let Some(oldest) = oldest {
                self.by_token.remove(&oldest);
            }
        }
        self.by_token.insert(
            token.clone(),
            Session {
                user_id,
                last_used: now,
            },
        );
        Ok(token)
    }

    /// The user id of a live session, touching it so its idle timer restarts. An expired
    /// session is removed and reads as absent.
    pub(super) fn touch(&mut self, token: &str, now: Instant) -> Option<u32> {
        let session = self.by_token.get_mut(token)?;
        if now.duration_since(session.last_used) > self.idle_timeout {
            self.by_token.remove(token);
            return None;
        }
        session.last_used = now;
        Some(session.user_id)
    }

    pub(super) fn close(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    /// Ends every session of `user_id`.
    pub(super) fn close_user(&mut self, user_id: u32) {
        self.by_token
            .retain(|_, session| session.user_id != user_id);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_token.len()
    }
}

fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
