//! `--lock-until` / `--until`: when a snapshot's lock ends, as an operator writes it: a UTC
//! time (`2030-01-31 12:00:00`, RFC 3339 `2030-01-31T12:00:00Z` or with an offset such as
//! `+02:00`, or a bare date meaning its midnight UTC), or a duration from now (`90s`, `30m`,
//! `12h`, `7d`, `2w`).
//!
//! Parsing is pure, so clap can refuse a malformed value as a usage error; a duration
//! becomes a time only when the command runs ([`LockUntil::epoch_ms`]), which also refuses a
//! time that has already passed. The duration form ([`parse_duration`]) is also the one of
//! snapshot policy schedules.

use std::time::Duration;

use crate::mgmt::snapshot_api::check_lock_end;

/// When a lock ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockUntil {
    /// Milliseconds since the epoch.
    At(u64),
    /// This long after the command runs.
    After(Duration),
}

/// What the parse errors and `--help` show as examples.
const FORMS: &str = "a UTC time such as \"2030-01-31 12:00:00\" or 2030-01-31T12:00:00Z, or a \
                     duration from now such as 30m, 12h, 7d";

impl LockUntil {
    /// Parses a time or a duration; the error says which forms are accepted.
    pub fn parse(text: &str) -> Result<LockUntil, String> {
        let text = text.trim();
        let parsed = if text.starts_with(|c: char| c.is_ascii_digit())
            && text.ends_with(|c: char| c.is_ascii_alphabetic())
            && !text.contains(['-', ':'])
        {
            parse_duration(text).and_then(|duration| {
                if duration.is_zero() {
                    Err("a lock must last longer than zero".to_owned())
                } else {
                    Ok(LockUntil::After(duration))
                }
            })
        } else {
            parse_time(text).map(LockUntil::At)
        };
        parsed.map_err(|why| format!("{text:?} is not a lock end ({why}); use {FORMS}"))
    }

    /// The end as milliseconds since the epoch, given the time now; a time that is not in
    /// the future (a lock that ends at once protects nothing) or more than 100 years away
    /// is refused, by the node's own bound ([`check_lock_end`]).
    pub fn epoch_ms(self, now_ms: u64) -> Result<u64, String> {
        let at = match self {
            LockUntil::At(at) => at,
            LockUntil::After(duration) => u64::try_from(duration.as_millis())
                .ok()
                .and_then(|ms| now_ms.checked_add(ms))
                .ok_or_else(|| format!("a lock of {duration:?} ends too far in the future"))?,
        };
        check_lock_end("the lock", at, now_ms).map_err(|refused| refused.message)?;
        Ok(at)
    }
}

/// `<digits><unit>` with unit s, m, h, d or w (zero is a duration; callers that need a
/// positive one refuse it in their own words).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let Some((split, _)) = text.char_indices().last() else {
        return Err("the duration is empty".to_owned());
    };
    let (digits, unit) = text.split_at(split);
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ if unit.bytes().all(|b| b.is_ascii_digit()) => {
            return Err("no unit: end it with s, m, h, d or w".to_owned());
        }
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h, d or w")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{digits:?} is not a whole number"));
    }
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{digits:?} is too large"))?;
    count
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text} is too long"))
}

/// A calendar time; without a zone it is UTC.
fn parse_time(text: &str) -> Result<u64, String> {
    let split = text.len().min(10);
    if !text.is_char_boundary(split) {
        return Err("the date must be YYYY-MM-DD".to_owned());
    }
    let (date, rest) = text.split_at(split);
    let days = parse_date(date)?;
    let day_ms = if rest.is_empty() {
        0
    } else {
        let clock = rest
            .strip_prefix(['T', 't', ' '])
            .ok_or("the date must be followed by a space or T and the time of day")?;
        parse_clock(clock)?
    };
    // Years are 0..=9999, so this is within ±4e14 and cannot overflow.
    let at = days * 86_400_000 + day_ms;
    u64::try_from(at).map_err(|_| "the time is before 1970".to_owned())
}

/// `YYYY-MM-DD` as days since 1970-01-01.
fn parse_date(date: &str) -> Result<i64, String> {
    let fields: Vec<&str> = date.split('-').collect();
    let [year, month, day] = fields[..] else {
        return Err("the date must be YYYY-MM-DD".to_owned());
    };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return Err("the date must be YYYY-MM-DD".to_owned());
    }
    let year = number(year, 0, 9999, "year")?;
    let month = number(month, 1, 12, "month")?;
    let day = number(day, 1, days_in_month(year, month), "day of the month")?;
    Ok(days_from_civil(year, month, day))
}

/// `HH:MM[:SS[.fraction]]` and an optional zone (`Z` or `±HH:MM`), as milliseconds since
/// that day's midnight UTC (negative or past a day when the zone moves it).
fn parse_clock(clock: &str) -> Result<i64, String> {
    let (time, offset_ms) = split_zone(clock)?;
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let fields: Vec<&str> = time.split(':').collect();
    let (hour, minute, second) = match fields[..] {
        [hour, minute] => (hour, minute, "00"),
        [hour, minute, second] => (hour, minute, second),
        _ => return Err("the time of day must be HH:MM or HH:MM:SS".to_owned()),
    };
    if [hour, minute, second].iter().any(|field| field.len() != 2) {
        return Err("the time of day must be HH:MM or HH:MM:SS".to_owned());
    }
    let hour = number(hour, 0, 23, "hour")?;
    let minute = number(minute, 0, 59, "minute")?;
    let second = number(second, 0, 59, "second")?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (time.len() < 8 && !fraction.is_empty()) {
        return Err(format!("{fraction:?} is not a fraction of a second"));
    }
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().unwrap_or(0);
    Ok(((hour * 60 + minute) * 60 + second) * 1000 + millis - offset_ms)
}

/// Splits a trailing zone off a time of day: `Z` is UTC, `+HH:MM` is ahead of UTC.
fn split_zone(clock: &str) -> Result<(&str, i64), String> {
    if let Some(time) = clock.strip_suffix(['Z', 'z']) {
        return Ok((time, 0));
    }
    let Some(sign_at) = clock.rfind(['+', '-']) else {
        return Ok((clock, 0));
    };
    let (time, zone) = clock.split_at(sign_at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let Some((hours, minutes)) = zone[1..].split_once(':') else {
        return Err(format!("the zone {zone:?} must be Z or ±HH:MM"));
    };
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(format!("the zone {zone:?} must be Z or ±HH:MM"));
    }
    let hours = number(hours, 0, 23, "zone hour")?;
    let minutes = number(minutes, 0, 59, "zone minute")?;
    Ok((time, sign * (hours * 60 + minutes) * 60_000))
}

/// A field of digits within `low..=high`.
fn number(digits: &str, low: i64, high: i64, what: &str) -> Result<i64, String> {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<i64>().ok())
        .flatten()
        .filter(|value| (low..=high).contains(value))
        .ok_or_else(|| format!("{digits:?} is not a {what} ({low} to {high})"))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil,
/// the inverse of the arithmetic in [`crate::types::utc_time`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::utc_time;

    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn durations_count_from_now() {
        let cases = [
            ("90s", 90_000),
            ("30m", 30 * 60_000),
            ("12h", 12 * HOUR_MS),
            ("7d", 7 * 24 * HOUR_MS),
            ("2w", 14 * 24 * HOUR_MS),
        ];
        for (text, ms) in cases {
            let until = LockUntil::parse(text).unwrap();
            assert_eq!(until, LockUntil::After(Duration::from_millis(ms)), "{text}");
            assert_eq!(until.epoch_ms(1_000).unwrap(), 1_000 + ms, "{text}");
        }
    }

    #[test]
    fn utc_times_in_every_accepted_form() {
        let noon = 1_896_177_600_000; // 2030-02-01 12:00:00 UTC
        for text in [
            "2030-02-01 12:00:00",
            "2030-02-01T12:00:00",
            "2030-02-01T12:00:00Z",
            "2030-02-01t12:00z",
            "2030-02-01T14:00:00+02:00",
            "2030-02-01T07:30:00-04:30",
        ] {
            assert_eq!(LockUntil::parse(text), Ok(LockUntil::At(noon)), "{text}");
        }
        assert_eq!(
            LockUntil::parse("2030-02-01 12:00:00.250Z"),
            Ok(LockUntil::At(noon + 250))
        );
        assert_eq!(
            LockUntil::parse("2030-02-01"),
            Ok(LockUntil::At(noon - 12 * HOUR_MS))
        );
        assert_eq!(LockUntil::parse("1970-01-01"), Ok(LockUntil::At(0)));
    }

    #[test]
    fn parsed_times_agree_with_the_tables() {
        for ms in [0, 951_782_400_000, 1_709_251_199_000, 4_102_444_800_000] {
            let text = utc_time(ms);
            assert_eq!(LockUntil::parse(&text), Ok(LockUntil::At(ms)), "{text}");
        }
    }

    #[test]
    fn malformed_values_are_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "soon",
            "7",
            "7y",
            "0d",
            "-3d",
            "1.5h",
            "99999999999999999999d",
            "2030-13-01",
            "2030-02-30",
            "2031-02-29",
            "2030-2-1",
            "2030-02-01 25:00:00",
            "2030-02-01 12:60",
            "2030-02-01 12:00:00+2",
            "2030-02-01 12",
            "2030-02-01X12:00",
            "2030-02-01 12:00.5",
            "1969-12-31 23:59:59",
            "2030-01-0\u{e9}",
            "2030-0\u{e9}-01",
        ] {
            let error = LockUntil::parse(bad).unwrap_err();
            assert!(error.contains("30m, 12h, 7d"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_lock_must_end_in_the_future() {
        let error = LockUntil::At(5_000).epoch_ms(5_000).unwrap_err();
        assert!(error.contains("not in the future"), "{error}");
        assert_eq!(LockUntil::At(5_001).epoch_ms(5_000), Ok(5_001));
    }

    #[test]
    fn a_lock_ends_within_100_years_as_on_the_node() {
        let now = 1_800_000_000_000;
        let latest = now + crate::mgmt::snapshot_api::MAX_LOCK_MS;
        assert_eq!(LockUntil::At(latest).epoch_ms(now), Ok(latest));
        let error = LockUntil::At(latest + 1).epoch_ms(now).unwrap_err();
        assert!(error.contains("100 years"), "{error}");
        let error = LockUntil::At(u64::MAX).epoch_ms(now).unwrap_err();
        assert!(error.contains("100 years"), "{error}");
        let century = Duration::from_secs(crate::mgmt::snapshot_api::MAX_LOCK_SECS + 1);
        assert!(LockUntil::After(century).epoch_ms(now).is_err());
    }
}
