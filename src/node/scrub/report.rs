//! What the scrub tells operators: its API object, its events' text and its metrics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Counters, Pass, Progress};
use crate::hw::ScrubSettings;
use crate::layout::ScrubTally;
use crate::mgmt::api::ScrubInfo;

/// The API object: the running pass's figures, else the last completed pass's.
pub(super) fn info(progress: &Progress, settings: &ScrubSettings, now_ms: u64) -> ScrubInfo {
    let shown = progress.running.or(progress.last).unwrap_or_default();
    let running = progress.running.is_some();
    let progress_percent = match (running, progress.last) {
        (true, _) => 100.0 * shown.next_segment as f64 / shown.segments.max(1) as f64,
        (false, Some(_)) => 100.0,
        (false, None) => 0.0,
    };
    let next_run_at = (!running).then(|| {
        progress
            .schedule_from_ms
            .saturating_add(settings.interval_seconds.saturating_mul(1000))
            .max(now_ms)
    });
    ScrubInfo {
        state: if running { "RUNNING" } else { "IDLE" }.to_string(),
        rate: settings.rate,
        interval_seconds: settings.interval_seconds,
        segment: shown.next_segment,
        segments: shown.segments,
        progress_percent,
        started_at: running.then_some(shown.started_ms),
        rows: shown.rows,
        bytes: shown.bytes,
        seconds: shown.seconds,
        data_repairs: shown.data_repairs,
        parity_repairs: shown.parity_repairs,
        other_repairs: shown.other_repairs,
        unrepairable_rows: shown.unrepairable_rows,
        passes_completed: progress.passes_completed,
        last_completed_at: progress.last.and_then(|pass| pass.completed_ms),
        next_run_at,
    }
}

fn repairs_text(data: u64, parity: u64, other: u64) -> String {
    format!("{data} data, {parity} parity, {other} summary or unused")
}

pub(super) fn completed_text(pass: &Pass) -> String {
    let rate = if pass.seconds > 0.0 {
        pass.bytes as f64 / 1e6 / pass.seconds
    } else {
        0.0
    };
    let mut text = format!(
        "The scrub pass completed: {} rows, {} bytes in {:.1} s ({rate:.1} MB/s); units repaired: {}",
        pass.rows,
        pass.bytes,
        pass.seconds,
        repairs_text(pass.data_repairs, pass.parity_repairs, pass.other_repairs),
    );
    if pass.unrepairable_rows > 0 {
        let _ = write!(
            text,
            "; {} row(s) could not be repaired (see SCRUB_UNREPAIRABLE)",
            pass.unrepairable_rows
        );
    }
    text
}

pub(super) fn stopped_text(pass: &Pass, settings: &ScrubSettings) -> String {
    format!(
        "The scrub pass was stopped at segment {} of {} after {} rows (units repaired: {}); the next pass starts by itself in {} s or with `troika scrub start`",
        pass.next_segment,
        pass.segments,
        pass.rows,
        repairs_text(pass.data_repairs, pass.parity_repairs, pass.other_repairs),
        settings.interval_seconds
    )
}

pub(super) fn repaired_text(segment: u64, tally: &ScrubTally) -> String {
    let repairs = &tally.repairs;
    format!(
        "The scrub repaired {} damaged unit(s) in segment {segment} ({}), rebuilt from parity and rewritten in place; check the NL-SAS drives' health",
        repairs.total(),
        repairs_text(repairs.data, repairs.parity, repairs.other)
    )
}

pub(super) fn unrepairable_text(segment: u64, tally: &ScrubTally) -> String {
    format!(
        "The scrub found {} row(s) in segment {segment}, the first row {}, with more damage than parity can locate and rebuild; reads of their damaged blocks answer a media error. Restore the affected volumes from a copy",
        tally.unrepairable_rows,
        tally.first_unrepairable.unwrap_or(0)
    )
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The `troika_scrub_*` families.
pub(super) fn metrics(out: &mut String, counters: &Counters, running: u64, ratio: f64) {
    for (name, help, value) in [
        (
            "troika_scrub_rows_total",
            "Rows the scrub read and verified since the node started.",
            load(&counters.rows),
        ),
        (
            "troika_scrub_bytes_total",
            "Bytes the scrub read since the node started.",
            load(&counters.bytes),
        ),
        (
            "troika_scrub_unrepairable_rows_total",
            "Rows the scrub found beyond repair since the node started.",
            load(&counters.unrepairable_rows),
        ),
        (
            "troika_scrub_passes_total",
            "Scrub passes completed since the node started.",
            load(&counters.passes),
        ),
    ] {
        family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        out,
        "troika_scrub_repairs_total",
        "Units the scrub repaired since the node started, by what they held (data, parity, other: summary or unused slots).",
        "counter",
    );
    for (kind, counter) in [
        ("data", &counters.data_repairs),
        ("parity", &counters.parity_repairs),
        ("other", &counters.other_repairs),
    ] {
        let _ = writeln!(
            out,
            "troika_scrub_repairs_total{{kind=\"{kind}\"}} {}",
            load(counter)
        );
    }
    family(
        out,
        "troika_scrub_running",
        "1 while a scrub pass runs.",
        "gauge",
    );
    let _ = writeln!(out, "troika_scrub_running {running}");
    family(
        out,
        "troika_scrub_progress_ratio",
        "Share of the array's segments the running scrub pass has passed (0 when none runs).",
        "gauge",
    );
    let _ = writeln!(out, "troika_scrub_progress_ratio {ratio}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_counts_from_the_last_end_and_figures_follow_the_pass() {
        let settings = ScrubSettings {
            rate: 1 << 20,
            interval_seconds: 60,
        };
        let mut progress = Progress {
            schedule_from_ms: 1_000,
            ..Progress::default()
        };
        let idle = info(&progress, &settings, 2_000);
        assert_eq!(idle.state, "IDLE");
        assert_eq!(idle.next_run_at, Some(61_000));
        assert_eq!(idle.progress_percent, 0.0);
        progress.running = Some(Pass {
            id: 1,
            started_ms: 70_000,
            next_segment: 25,
            segments: 100,
            rows: 40,
            data_repairs: 2,
            ..Pass::default()
        });
        let running = info(&progress, &settings, 71_000);
        assert_eq!(running.state, "RUNNING");
        assert_eq!(running.next_run_at, None);
        assert_eq!(running.started_at, Some(70_000));
        assert_eq!((running.progress_percent, running.rows), (25.0, 40));
        assert_eq!(running.data_repairs, 2);
        let mut pass = progress.running.take().unwrap();
        pass.completed_ms = Some(90_000);
        progress.last = Some(pass);
        progress.schedule_from_ms = 90_000;
        progress.passes_completed = 1;
        let done = info(&progress, &settings, 200_000);
        assert_eq!(done.state, "IDLE");
        assert_eq!(done.last_completed_at, Some(90_000));
        // Overdue: the next pass is due now.
        assert_eq!(done.next_run_at, Some(200_000));
        assert_eq!((done.progress_percent, done.data_repairs), (100.0, 2));
    }
}
