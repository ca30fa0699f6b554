//! `--schedule NAME:EVERY:KEEP[:LOCK]`: one schedule of a snapshot policy as an operator
//! writes it, and as the tables show it again.
//!
//! EVERY (how often a snapshot is taken) and LOCK (how long each snapshot stays locked) are
//! durations in the `--lock-until` form (`30s`, `15m`, `1h`, `1d`, `2w`), both longer than
//! zero; KEEP is how many of the newest snapshots of each volume the schedule keeps, at
//! least one. Parsing is pure, so clap refuses a malformed value as a usage error naming
//! the value and the form.

use crate::mgmt::api::ScheduleInfo;

use super::lock_until::parse_duration;

/// The form, with examples, that the parse errors and `--help` show.
const FORM: &str = "NAME:EVERY:KEEP[:LOCK], e.g. hourly:1h:24 or daily:1d:7:30d \
                               (EVERY and LOCK are durations such as 30s, 15m, 1h, 1d; KEEP \
                               is how many snapshots to keep)";

/// Parses `NAME:EVERY:KEEP[:LOCK]`; the error names the value, what is wrong and the form.
pub(super) fn parse(text: &str) -> Result<ScheduleInfo, String> {
    fields(text.trim()).map_err(|why| format!("{text:?} is not a schedule ({why}); use {FORM}"))
}

fn fields(text: &str) -> Result<ScheduleInfo, String> {
    let fields: Vec<&str> = text.split(':').collect();
    let (name, every, keep, lock) = match fields[..] {
        [name, every, keep] => (name, every, keep, None),
        [name, every, keep, lock] => (name, every, keep, Some(lock)),
        _ => return Err(format!("{} fields instead of 3 or 4", fields.len())),
    };
    if name.is_empty() {
        return Err("the NAME is empty".to_owned());
    }
    let interval = seconds(every, "EVERY")?;
    if keep.is_empty() || !keep.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("KEEP {keep:?} is not a count"));
    }
    let retention: u32 = keep
        .parse()
        .map_err(|_| format!("KEEP {keep} is too large"))?;
    if retention == 0 {
        return Err("KEEP must be at least 1".to_owned());
    }
    let lock_duration = lock.map(|lock| seconds(lock, "LOCK")).transpose()?;
    Ok(ScheduleInfo {
        name: name.to_owned(),
        interval,
        retention,
        lock_duration,
    })
}

/// A duration field longer than zero, in seconds.
fn seconds(text: &str, field: &str) -> Result<u64, String> {
    let duration = parse_duration(text).map_err(|why| format!("{field} {text:?}: {why}"))?;
    if duration.is_zero() {
        return Err(format!("{field} must be longer than zero"));
    }
    Ok(duration.as_secs())
}

/// A schedule in the form [`parse`] reads: `hourly:1h:24`, `daily:1d:7:30d`.
pub(super) fn text(schedule: &ScheduleInfo) -> String {
    let mut text = format!(
        "{}:{}:{}",
        schedule.name,
        duration_text(schedule.interval),
        schedule.retention
    );
    if let Some(lock) = schedule.lock_duration {
        text.push(':');
        text.push_str(&duration_text(lock));
    }
    text
}

/// Seconds in the largest unit (d, h, m or s) that counts them whole: `90s`, `15m`, `36h`.
pub(super) fn duration_text(seconds: u64) -> String {
    let (per_unit, unit) = [(86_400, "d"), (3_600, "h"), (60, "m")]
        .into_iter()
        .find(|(per_unit, _)| seconds != 0 && seconds.is_multiple_of(*per_unit))
        .unwrap_or((1, "s"));
    format!("{}{unit}", seconds / per_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(name: &str, interval: u64, retention: u32, lock: Option<u64>) -> ScheduleInfo {
        ScheduleInfo {
            name: name.to_owned(),
            interval,
            retention,
            lock_duration: lock,
        }
    }

    #[test]
    fn schedules_in_every_unit() {
        let cases = [
            ("often:1s:2", schedule("often", 1, 2, None)),
            ("quarter:15m:4", schedule("quarter", 900, 4, None)),
            ("hourly:1h:24", schedule("hourly", 3_600, 24, None)),
            (
                "daily:1d:7:30d",
                schedule("daily", 86_400, 7, Some(30 * 86_400)),
            ),
            (
                "weekly:2w:3:90s",
                schedule("weekly", 14 * 86_400, 3, Some(90)),
            ),
            (" spaced:30s:1 ", schedule("spaced", 30, 1, None)),
        ];
        for (spec, want) in cases {
            assert_eq!(parse(spec), Ok(want), "{spec}");
        }
    }

    #[test]
    fn printed_schedules_read_back() {
        for spec in [
            "often:1s:2",
            "a:90s:1",
            "b:15m:4",
            "c:36h:2:1d",
            "d:7d:7:2h",
        ] {
            let schedule = parse(spec).unwrap();
            assert_eq!(text(&schedule), spec);
            assert_eq!(parse(&text(&schedule)), Ok(schedule));
        }
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(14 * 86_400), "14d");
    }

    #[test]
    fn malformed_schedules_name_the_value_and_the_form() {
        for (bad, why) in [
            ("", "1 fields"),
            ("hourly", "1 fields"),
            ("hourly:1h", "2 fields"),
            ("a:1h:2:1d:x", "5 fields"),
            (":1h:2", "NAME is empty"),
            ("a:1:2", "no unit"),
            ("a:1y:2", "unknown unit"),
            ("a::2", "empty"),
            ("a:0s:2", "EVERY must be longer than zero"),
            ("a:-1h:2", "not a whole number"),
            ("a:1\u{e9}:2", "unknown unit"),
            ("a:99999999999999999999d:2", "too large"),
            ("a:1h:0", "KEEP must be at least 1"),
            ("a:1h:x", "KEEP \"x\" is not a count"),
            ("a:1h:-1", "is not a count"),
            ("a:1h:99999999999", "too large"),
            ("a:1h:2:0d", "LOCK must be longer than zero"),
            ("a:1h:2:soon", "LOCK \"soon\""),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.starts_with(&format!("{bad:?} is not a schedule"))
                    && error.contains(why)
                    && error.contains("NAME:EVERY:KEEP[:LOCK]"),
                "{bad:?}: {error}"
            );
        }
    }
}
