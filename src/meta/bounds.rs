//! Bounds on the numbers and names clients send, checked in one place each so that every
//! path (REST, CLI, snapshot policies, infinisdk) refuses the same values with the same
//! error code.
//!
//! - A snapshot lock ends in the future and at most [`MAX_LOCK_SECS`] (100 years) from now,
//!   whether it comes from a snapshot creation, a lock change or a policy's schedule
//!   ([`check_lock_end`]). A lock past that bound is refused with `LOCK_OUT_OF_RANGE` (it
//!   would keep the snapshot, its parent and its pool from ever being deleted); one that
//!   is not in the future, or a lock of no duration, with `BAD_REQUEST` as before.
//! - A byte count (pool capacities, volume sizes) is at most [`MAX_BYTE_COUNT`] = 2^53, the
//!   largest integer a JSON client that reads numbers as doubles still holds exactly, and
//!   far below where block arithmetic could overflow ([`check_byte_count`]); else
//!   `PARAM_OUT_OF_RANGE`.
//! - Names are unique without regard to ASCII case, as InfiniBox treats them ([`same_name`]):
//!   `volA` and `VOLA` are the same name. Names are ASCII (see the name rule of each store),
//!   so ASCII case folding is the whole rule.

use crate::types::format_time;

/// The longest a snapshot lock may last, counted from the time it is set (100 years).
pub const MAX_LOCK_SECS: u64 = 100 * 365 * 86_400;
/// [`MAX_LOCK_SECS`] in milliseconds, the unit of `lock_expires_at`.
pub const MAX_LOCK_MS: u64 = MAX_LOCK_SECS * 1000;
/// The largest byte count the API accepts (2^53 bytes, 8 PiB).
pub const MAX_BYTE_COUNT: u64 = 1 << 53;

/// A value outside its bound: the InfiniBox-style error code and a message for the
/// operator. Answered with HTTP 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OutOfRange {
    pub code: &'static str,
    pub message: String,
}

/// Checks that a lock on `what` ending at `until` (ms since the epoch) ends after `now`
/// and no later than [`MAX_LOCK_SECS`] after it.
pub fn check_lock_end(what: &str, until: u64, now: u64) -> Result<(), OutOfRange> {
    let latest = now.saturating_add(MAX_LOCK_MS);
    if until <= now {
        return Err(OutOfRange {
            code: "BAD_REQUEST",
            message: format!(
                "{what}: the lock end {} is not in the future (now {}); a lock must end in the future",
                format_time(until),
                format_time(now)
            ),
        });
    }
    if until > latest {
        return Err(OutOfRange {
            code: "LOCK_OUT_OF_RANGE",
            message: format!(
                "{what}: lock_expires_at ({until} ms) is more than 100 years ({MAX_LOCK_SECS} s) from now; lock until {latest} ms ({}) at the latest",
                format_time(latest)
            ),
        });
    }
    Ok(())
}

/// Checks a lock given as a duration in seconds, as a policy's schedule holds it: at
/// least a second and at most [`MAX_LOCK_SECS`], the same bound as [`check_lock_end`].
pub fn check_lock_duration(what: &str, secs: u64) -> Result<(), OutOfRange> {
    if secs == 0 {
        return Err(OutOfRange {
            code: "BAD_REQUEST",
            message: format!("{what}: a lock must last at least 1 s"),
        });
    }
    // Measured from a fixed instant, so the bound is exactly the one of a lock end.
    let start = 0;
    check_lock_end(what, start + secs.saturating_mul(1000), start)
}

/// Checks that byte count `field` of `what` is at most [`MAX_BYTE_COUNT`].
pub fn check_byte_count(what: &str, field: &str, bytes: u64) -> Result<(), OutOfRange> {
    if bytes > MAX_BYTE_COUNT {
        return Err(OutOfRange {
            code: "PARAM_OUT_OF_RANGE",
            message: format!(
                "{what}: {field} {bytes} is larger than the {MAX_BYTE_COUNT}-byte (8 PiB, 2^53) limit; ask for less"
            ),
        });
    }
    Ok(())
}

/// Whether two object names are the same name (compared without regard to ASCII case).
pub fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_lock_ends_in_the_future_and_within_100_years() {
        assert!(check_lock_end("s", NOW + 1, NOW).is_ok());
        assert!(check_lock_end("s", NOW + MAX_LOCK_MS, NOW).is_ok());
        for (bad, code) in [
            (0, "BAD_REQUEST"),
            (NOW - 1, "BAD_REQUEST"),
            (NOW, "BAD_REQUEST"),
            (NOW + MAX_LOCK_MS + 1, "LOCK_OUT_OF_RANGE"),
            (u64::MAX, "LOCK_OUT_OF_RANGE"),
        ] {
            let refused = check_lock_end("snapshot \"s\"", bad, NOW).unwrap_err();
            assert_eq!(refused.code, code, "{bad}");
            assert!(refused.message.contains("snapshot \"s\""), "{refused}");
        }
        // Near the end of time the bound saturates instead of overflowing.
        assert!(check_lock_end("s", u64::MAX, u64::MAX - 5).is_ok());
    }

    #[test]
    fn a_lock_duration_has_the_same_bound() {
        assert!(check_lock_duration("p", 1).is_ok());
        assert!(check_lock_duration("p", MAX_LOCK_SECS).is_ok());
        assert_eq!(check_lock_duration("p", 0).unwrap_err().code, "BAD_REQUEST");
        for bad in [MAX_LOCK_SECS + 1, u64::MAX / 1000 + 1, u64::MAX] {
            assert_eq!(
                check_lock_duration("p", bad).unwrap_err().code,
                "LOCK_OUT_OF_RANGE",
                "{bad}"
            );
        }
    }

    #[test]
    fn byte_counts_stop_at_2_pow_53() {
        assert!(check_byte_count("pool \"p\"", "physical_capacity", 0).is_ok());
        assert!(check_byte_count("pool \"p\"", "physical_capacity", MAX_BYTE_COUNT).is_ok());
        for bad in [MAX_BYTE_COUNT + 1, u64::MAX] {
            let refused = check_byte_count("pool \"p\"", "virtual_capacity", bad).unwrap_err();
            assert_eq!(refused.code, "PARAM_OUT_OF_RANGE");
            assert!(refused.message.contains("virtual_capacity"), "{refused}");
        }
    }

    #[test]
    fn names_compare_without_case() {
        assert!(same_name("volA", "VOLA"));
        assert!(same_name("a-b_c.d:1", "A-B_C.D:1"));
        assert!(!same_name("volA", "volB"));
        assert!(!same_name("vol", "vol1"));
    }
}
