//! The failed-login limiter: how many password guesses the management API evaluates, per
//! login name and per client address, however many requests arrive in parallel.
//!
//! What it promises:
//! - Before a password is checked (argon2), the attempt must be admitted here. An admitted
//!   attempt is counted as a failure *in advance* (it is "pending") until it is reported as
//!   a success; so N parallel requests cannot all slip past the check before the first
//!   failure is recorded.
//! - A name may have [`NAME_FAILURES`] failures (pending included) within
//!   [`FAILURE_WINDOW`]; an address [`ADDRESS_FAILURES`]. The failure that reaches the
//!   limit locks the name (or address) out for the lockout time (default
//!   [`DEFAULT_LOCKOUT`], `troika serve --mgmt-login-lockout SECS`). While locked out, or
//!   while pending attempts fill the allowance, attempts are refused at once with the time
//!   to wait: the REST layer answers `429 Too Many Requests` with `Retry-After`. Nothing
//!   here sleeps, so a refused request holds no connection slot and no thread for long.
//! - When a lockout ends the count starts from zero. A success clears its name's count
//!   (not its address's, so a valid account cannot be used to reset an address's count).
//! - Names that do not exist are counted like those that do, so the limiter does not
//!   reveal which names exist.
//! - Memory is bounded: at most [`MAX_TRACKED`] names and as many addresses are
//!   remembered; past that the entry whose last failure is oldest and that is not locked
//!   out is forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures of one name (pending attempts included) that lock it out.
pub const NAME_FAILURES: u32 = 5;
/// Failures from one client address that lock it out.
pub const ADDRESS_FAILURES: u32 = 20;
/// Failures older than this no longer count (unless they caused a lockout).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// How long a lockout lasts unless the node is started with another.
pub const DEFAULT_LOCKOUT: Duration = Duration::from_secs(60);
/// Most names (and most addresses) tracked at once.
pub const MAX_TRACKED: usize = 4096;
/// How long to wait when only pending attempts fill the allowance.
const PENDING_RETRY: Duration = Duration::from_secs(1);

/// The count of one name or address.
#[derive(Clone, Debug)]
struct Tally {
    failures: u32,
    pending: u32,
    /// When the first failure of the current window happened.
    window_start: Instant,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

impl Tally {
    fn new(now: Instant) -> Tally {
        Tally {
            failures: 0,
            pending: 0,
            window_start: now,
            last_failure: now,
            locked_until: None,
        }
    }

    /// Forgets failures whose window or lockout has passed.
    fn refresh(&mut self, now: Instant) {
        match self.locked_until {
            Some(until) if now >= until => {
                self.locked_until = None;
                self.failures = 0;
                self.window_start = now;
            }
            Some(_) => {}
            None if now.duration_since(self.window_start) > FAILURE_WINDOW => {
                self.failures = 0;
                self.window_start = now;
            }
            None => {}
        }
    }

    /// How long the caller must wait before trying, or `None` if it may try now.
    fn wait(&self, limit: u32, now: Instant) -> Option<Duration> {
        if let Some(until) = self.locked_until {
            return Some(until.saturating_duration_since(now));
        }
        (self.failures + self.pending >= limit).then_some(PENDING_RETRY)
    }
}

/// Tallies keyed by name or address, bounded in number.
struct Tallies<K> {
    map: HashMap<K, Tally>,
    limit: u32,
}

impl<K: Hash + Eq + Clone> Tallies<K> {
    fn new(limit: u32) -> Self {
        Tallies {
            map: HashMap::new(),
            limit,
        }
    }

    fn wait(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let tally = self.map.get_mut(key)?;
        tally.refresh(now);
        tally.wait(self.limit, now)
    }

    fn entry(&mut self, key: &K, now: Instant) -> &mut Tally {
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED {
            let stalest = self
                .map
                .iter()
                .filter(|(_, tally)| tally.locked_until.is_none() && tally.pending == 0)
                .min_by_key(|(_, tally)| tally.last_failure)
                .map(|(key, _)| key.clone());
            if let Some(stalest) = stalest {
                self.map.remove(&stalest);
            }
        }
        self.map
            .entry(key.clone())
            .or_insert_with(|| Tally::new(now))
    }

    /// Turns one pending attempt into a failure; true if that started a lockout.
    fn fail(&mut self, key: &K, lockout: Duration, now: Instant) -> bool {
        let limit = self.limit;
        let tally = self.entry(key, now);
        tally.pending = tally.pending.saturating_sub(1);
        tally.refresh(now);
        if tally.failures == 0 {
            tally.window_start = now;
        }
        tally.failures = tally.failures.saturating_add(1);
        tally.last_failure = now;
        if tally.locked_until.is_none() && tally.failures >= limit {
            tally.locked_until = Some(now + lockout);
            return true;
        }
        false
    }

    fn settle(&mut self, key: &K, clear: bool) {
        if let Some(tally) = self.map.get_mut(key) {
            tally.pending = tally.pending.saturating_sub(1);
            if clear && tally.locked_until.is_none() {
                tally.failures = 0;
            }
            if tally.failures == 0 && tally.pending == 0 && tally.locked_until.is_none() {
                self.map.remove(key);
            }
        }
    }
}

struct State {
    names: Tallies<String>,
    addresses: Tallies<IpAddr>,
}

/// Why an attempt was refused, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after: Duration,
    /// What is limited, in words: `user "admin"` or `address 10.0.0.5`.
    pub what: String,
}

impl Refusal {
    /// The `Retry-After` value in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// A lockout that a failure just started, for the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lockout {
    Name(String),
    Address(IpAddr),
}

/// An admitted attempt; report its outcome with [`LoginLimiter::succeeded`] or
/// [`LoginLimiter::failed`]. Until then it counts as a failure (pending).
#[derive(Debug)]
#[must_use = "report the outcome of the password check"]
pub struct Attempt {
    name: String,
    address: Option<IpAddr>,
}

/// See the module doc.
pub struct LoginLimiter {
    state: Mutex<State>,
    lockout: Duration,
    checks: AtomicU64,
    refused: AtomicU64,
    lockouts: AtomicU64,
}

impl LoginLimiter {
    pub fn new(lockout: Duration) -> LoginLimiter {
        LoginLimiter {
            state: Mutex::new(State {
                names: Tallies::new(NAME_FAILURES),
                addresses: Tallies::new(ADDRESS_FAILURES),
            }),
            lockout,
            checks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
        }
    }

    /// Admits a password check for `name` from `address` (`None`: no address, e.g. tests),
    /// or says how long to wait.
    pub fn admit(&self, name: &str, address: Option<IpAddr>) -> Result<Attempt, Refusal> {
        self.admit_at(name, address, Instant::now())
    }

    fn admit_at(
        &self,
        name: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, Refusal> {
        let name: String = name.chars().take(256).collect();
        let mut state = self.state.lock();
        let name_wait = state.names.wait(&name, now);
        let address_wait = address.and_then(|address| state.addresses.wait(&address, now));
        let refusal = match (name_wait, address_wait) {
            (Some(wait), other) if other.is_none_or(|other| other <= wait) => Some(Refusal {
                retry_after: wait,
                what: format!("user {name:?}"),
            }),
            (_, Some(wait)) | (Some(wait), None) => Some(Refusal {
                retry_after: wait,
                what: format!(
                    "address {}",
                    address.map_or(String::new(), |a| a.to_string())
                ),
            }),
            (None, None) => None,
        };
        if let Some(refusal) = refusal {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        state.names.entry(&name, now).pending += 1;
        if let Some(address) = address {
            state.addresses.entry(&address, now).pending += 1;
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
        Ok(Attempt { name, address })
    }

    /// The password was right: the name's count is cleared.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut state = self.state.lock();
        state.names.settle(&attempt.name, true);
        if let Some(address) = attempt.address {
            state.addresses.settle(&address, false);
        }
    }

    /// The password was wrong (or the name unknown, or the user disabled); returns the
    /// lockouts this failure started.
    pub fn failed(&self, attempt: Attempt) -> Vec<Lockout> {
        self.failed_at(attempt, Instant::now())
    }

    fn failed_at(&self, attempt: Attempt, now: Instant) -> Vec<Lockout> {
        let mut state = self.state.lock();
        let mut started = Vec::new();
        if state.names.fail(&attempt.name, self.lockout, now) {
            started.push(Lockout::Name(attempt.name.clone()));
        }
        if let Some(address) = attempt.address
            && state.addresses.fail(&address, self.lockout, now)
        {
            started.push(Lockout::Address(address));
        }
        self.lockouts
            .fetch_add(started.len() as u64, Ordering::Relaxed);
        started
    }

    /// How long a lockout lasts.
    pub fn lockout(&self) -> Duration {
        self.lockout
    }

    /// Prometheus lines for the limiter's counters.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        for (name, help, value) in [
            (
                "troika_mgmt_login_checks_total",
                "Password checks the login limiter admitted (each ran argon2 once).",
                &self.checks,
            ),
            (
                "troika_mgmt_login_refused_total",
                "Logins refused with 429 by the login limiter, without a password check.",
                &self.refused,
            ),
            (
                "troika_mgmt_login_lockouts_total",
                "Lockouts of a user name or client address started by failed logins.",
                &self.lockouts,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKOUT: Duration = Duration::from_secs(10);

    fn local() -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, 1]))
    }

    #[test]
    fn pending_attempts_count_so_parallel_guesses_cannot_exceed_the_limit() {
        let limiter = LoginLimiter::new(LOCKOUT);
        let now = Instant::now();
        let admitted: Vec<Attempt> = (0..32)
            .filter_map(|_| limiter.admit_at("admin", local(), now).ok())
            .collect();
        assert_eq!(admitted.len(), NAME_FAILURES as usize);
        let mut lockouts = Vec::new();
        for attempt in admitted {
            lockouts.extend(limiter.failed_at(attempt, now));
        }
        assert_eq!(lockouts, [Lockout::Name("admin".into())]);
        let refusal = limiter.admit_at("admin", local(), now).unwrap_err();
        assert_eq!(refusal.retry_after, LOCKOUT);
        assert_eq!(refusal.retry_after_secs(), 10);
        // Another name from the same address still gets its own allowance.
        assert!(limiter.admit_at("other", local(), now).is_ok());
    }

    #[test]
    fn the_lockout_ends_and_a_success_clears_the_name() {
        let limiter = LoginLimiter::new(LOCKOUT);
        let start = Instant::now();
        for _ in 0..NAME_FAILURES {
            let attempt = limiter.admit_at("admin", None, start).unwrap();
            let _ = limiter.failed_at(attempt, start);
        }
        assert!(
            limiter
                .admit_at("admin", None, start + LOCKOUT / 2)
                .is_err()
        );
        let later = start + LOCKOUT;
        let attempt = limiter.admit_at("admin", None, later).unwrap();
        limiter.succeeded(attempt);
        // Cleared: a full allowance again.
        for _ in 0..NAME_FAILURES - 1 {
            let attempt = limiter.admit_at("admin", None, later).unwrap();
            assert!(limiter.failed_at(attempt, later).is_empty());
        }
    }

    #[test]
    fn an_address_is_locked_out_across_names() {
        let limiter = LoginLimiter::new(LOCKOUT);
        let now = Instant::now();
        let mut lockouts = Vec::new();
        for index in 0..ADDRESS_FAILURES {
            let attempt = limiter
                .admit_at(&format!("user{index}"), local(), now)
                .unwrap();
            lockouts.extend(limiter.failed_at(attempt, now));
        }
        assert_eq!(lockouts, [Lockout::Address(local().unwrap())]);
        let refusal = limiter.admit_at("fresh", local(), now).unwrap_err();
        assert!(refusal.what.starts_with("address"), "{refusal:?}");
        assert!(limiter.admit_at("fresh", None, now).is_ok());
    }

    #[test]
    fn old_failures_leave_the_window() {
        let limiter = LoginLimiter::new(LOCKOUT);
        let start = Instant::now();
        for _ in 0..NAME_FAILURES - 1 {
            let attempt = limiter.admit_at("admin", None, start).unwrap();
            let _ = limiter.failed_at(attempt, start);
        }
        let later = start + FAILURE_WINDOW + Duration::from_secs(1);
        for _ in 0..NAME_FAILURES - 1 {
            let attempt = limiter.admit_at("admin", None, later).unwrap();
            assert!(limiter.failed_at(attempt, later).is_empty());
        }
    }
}
