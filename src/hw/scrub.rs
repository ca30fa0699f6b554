//! The model's `[scrub]` table: how fast the background scrub reads and how often it runs.
//!
//! ```toml
//! [scrub]
//! rate = "200M"     # bytes per second the scrub reads at most (binary units)
//! interval = "7d"   # a pass starts this long after the last one ended (s, m, h, d, w)
//! ```
//!
//! Both are optional ([`ScrubSettings::DEFAULT`]). `rate` is 1M to 100G per second;
//! `interval` is 1 second to 365 days.

use serde::Deserialize;

use super::{FieldError, RawSize, size_field};

/// Smallest and largest scrub rate, bytes per second.
const MIN_RATE: u64 = 1 << 20;
const MAX_RATE: u64 = 100 << 30;
/// Largest interval, seconds (a year).
const MAX_INTERVAL: u64 = 365 * 86_400;

/// How the background scrub runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubSettings {
    /// Bytes per second the scrub reads at most.
    pub rate: u64,
    /// Seconds from the end of one pass to the start of the next.
    pub interval_seconds: u64,
}

impl ScrubSettings {
    /// 200 MiB/s, once a week.
    pub const DEFAULT: ScrubSettings = ScrubSettings {
        rate: 200 << 20,
        interval_seconds: 7 * 86_400,
    };
}

impl Default for ScrubSettings {
    fn default() -> Self {
        ScrubSettings::DEFAULT
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScrub {
    rate: Option<RawSize>,
    interval: Option<RawInterval>,
}

/// An interval as written: seconds, or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawInterval {
    Seconds(i64),
    Text(String),
}

/// Parses `"90s"`, `"30m"`, `"12h"`, `"7d"`, `"2w"` or plain seconds (`"3600"`).
pub fn parse_interval(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, scale) = match text.chars().last()? {
        's' | 'S' => (&text[..text.len() - 1], 1),
        'm' | 'M' => (&text[..text.len() - 1], 60),
        'h' | 'H' => (&text[..text.len() - 1], 3600),
        'd' | 'D' => (&text[..text.len() - 1], 86_400),
        'w' | 'W' => (&text[..text.len() - 1], 7 * 86_400),
        c if c.is_ascii_digit() => (text, 1),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

impl RawScrub {
    pub(super) fn validate(raw: Option<RawScrub>) -> Result<ScrubSettings, FieldError> {
        let Some(raw) = raw else {
            return Ok(ScrubSettings::DEFAULT);
        };
        let rate = match &raw.rate {
            None => ScrubSettings::DEFAULT.rate,
            Some(size) => {
                let rate = size_field("scrub.rate", size)?;
                if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                    return Err(FieldError::new(
                        "scrub.rate",
                        format!("must be between 1M and 100G bytes per second (got {rate} bytes)"),
                    ));
                }
                rate
            }
        };
        let interval_seconds = match &raw.interval {
            None => ScrubSettings::DEFAULT.interval_seconds,
            Some(interval) => {
                let seconds = match interval {
                    RawInterval::Seconds(seconds) => u64::try_from(*seconds).ok(),
                    RawInterval::Text(text) => parse_interval(text),
                };
                match seconds {
                    Some(seconds) if (1..=MAX_INTERVAL).contains(&seconds) => seconds,
                    _ => {
                        let got = match interval {
                            RawInterval::Seconds(seconds) => seconds.to_string(),
                            RawInterval::Text(text) => format!("{text:?}"),
                        };
                        return Err(FieldError::new(
                            "scrub.interval",
                            format!(
                                "must be from 1 second to 365 days, e.g. \"7d\", \"12h\", \"30m\" or seconds (got {got})"
                            ),
                        ));
                    }
                }
            }
        };
        Ok(ScrubSettings {
            rate,
            interval_seconds,
        })
    }
}
