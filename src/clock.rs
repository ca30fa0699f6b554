//! Wall-clock time since the Unix epoch, the one home for the node's timestamps (records'
//! `created_at`, lock ends, events, metadata serials).
//!
//! Promises: never panics and never fails. A clock set before 1970 reads as 0, and a
//! value too large for a `u64` reads as `u64::MAX`, so a caller compares and stores the
//! result without a case for a broken clock. These are wall-clock readings and can step
//! back or forward with the system clock: measure intervals with `std::time::Instant`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// Nanoseconds since the Unix epoch (for seeds, where only the low bits matter).
pub fn now_nanos() -> u64 {
    u64::try_from(since_epoch().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree_with_each_other() {
        let secs = now_secs();
        let ms = now_ms();
        let nanos = now_nanos();
        assert!(
            secs > 1_600_000_000,
            "the clock reads {secs} s: before 2020"
        );
        assert!(
            ms / 1000 >= secs && ms / 1000 <= secs + 60,
            "{ms} ms vs {secs} s"
        );
        assert!(nanos / 1_000_000 >= ms, "{nanos} ns vs {ms} ms");
    }
}
