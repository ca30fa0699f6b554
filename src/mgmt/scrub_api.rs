//! The control-plane object of the background scrub (`GET /api/rest/components/scrub`),
//! in the component shape of the rest of `/api/rest/components`.

use serde::{Deserialize, Serialize};

/// The scrub: whether a pass runs, how far it is, and what it found.
///
/// While a pass runs, `rows` to `unrepairable_rows` are that pass's figures so far; while
/// none runs, the last completed pass's (zero before the first).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScrubInfo {
    /// `RUNNING` or `IDLE`.
    pub state: String,
    /// Bytes per second a pass reads at most (the model's `[scrub] rate`).
    pub rate: u64,
    /// Seconds from the end of a pass to the start of the next (`[scrub] interval`).
    pub interval_seconds: u64,
    /// Segments of the array and the next one the running pass visits.
    pub segment: u64,
    pub segments: u64,
    pub progress_percent: f64,
    /// When the running pass started, milliseconds since the epoch.
    pub started_at: Option<u64>,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub data_repairs: u64,
    pub parity_repairs: u64,
    /// Units where only the summary block or unused slots were damaged.
    pub other_repairs: u64,
    pub unrepairable_rows: u64,
    pub passes_completed: u64,
    pub last_completed_at: Option<u64>,
    /// When the next pass starts by itself (none while one runs).
    pub next_run_at: Option<u64>,
}
