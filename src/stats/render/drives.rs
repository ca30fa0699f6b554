//! The drive and heal families of `/metrics`: each drive's state (one sample per state,
//! 1 for the one it is in), its read errors, the rebuild or copy-back under way (progress,
//! rate, ETA) and the reads served by reconstruction.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::escape_label_value;
use crate::layout::{DriveState, HealPhase};
use crate::meta::MetaStore;

const STATES: [DriveState; 4] = [
    DriveState::Active,
    DriveState::Failed,
    DriveState::Rebuilding,
    DriveState::Replacing,
];

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends the drive families for the array under `meta`.
pub fn render_drive_metrics(out: &mut String, meta: &MetaStore) {
    let array = meta.array();
    let drives = array.drive_infos();
    family(
        out,
        "troika_drive_state",
        "1 for the state each NL-SAS drive is in (ACTIVE, FAILED, REBUILDING, REPLACING), 0 for the others.",
        "gauge",
    );
    for drive in &drives {
        let name = escape_label_value(&drive.name);
        for state in STATES {
            let _ = writeln!(
                out,
                "troika_drive_state{{drive=\"{}\",name=\"{name}\",state=\"{}\"}} {}",
                drive.index,
                state.as_str(),
                u8::from(drive.state == state)
            );
        }
    }
    family(
        out,
        "troika_drive_read_errors_total",
        "Reads that failed on each drive since the node started or the drive was replaced.",
        "counter",
    );
    for drive in &drives {
        let _ = writeln!(
            out,
            "troika_drive_read_errors_total{{drive=\"{}\",name=\"{}\"}} {}",
            drive.index,
            escape_label_value(&drive.name),
            drive.read_errors
        );
    }
    let status = array.heal_status();
    let (active, progress, rate, eta) = match &status {
        Some(status) => (
            1,
            status.segments_done as f64 / status.segments.max(1) as f64,
            status.bytes_per_second,
            status.eta_seconds.unwrap_or(0.0),
        ),
        None => (0, 1.0, 0.0, 0.0),
    };
    let phase = match status.as_ref().map(|status| status.job.phase) {
        Some(HealPhase::Rebuild) => "rebuild",
        Some(HealPhase::Copyback) => "copyback",
        None => "idle",
    };
    let drive = status
        .as_ref()
        .map_or(String::new(), |status| status.job.drive.to_string());
    let singles: [(&str, &str, &str, String); 5] = [
        (
            "troika_rebuild_active",
            "1 while a rebuild or copy-back runs; its labels name the drive and the phase.",
            "gauge",
            format!("troika_rebuild_active{{drive=\"{drive}\",phase=\"{phase}\"}} {active}"),
        ),
        (
            "troika_rebuild_progress_ratio",
            "Share of the running rebuild or copy-back done, 0 to 1 (1 when none runs).",
            "gauge",
            format!("troika_rebuild_progress_ratio {progress}"),
        ),
        (
            "troika_rebuild_bytes_per_second",
            "Bytes per second the running rebuild or copy-back moves (0 when none runs).",
            "gauge",
            format!("troika_rebuild_bytes_per_second {rate}"),
        ),
        (
            "troika_rebuild_eta_seconds",
            "Seconds the running rebuild or copy-back needs at its rate so far (0 when none runs or before its first segment).",
            "gauge",
            format!("troika_rebuild_eta_seconds {eta}"),
        ),
        (
            "troika_degraded_reads_total",
            "Blocks read by reconstructing them from their row because their drive is out.",
            "counter",
            format!(
                "troika_degraded_reads_total {}",
                meta.counters.degraded_reads.load(Ordering::Relaxed)
            ),
        ),
    ];
    for (name, help, kind, sample) in singles {
        family(out, name, help, kind);
        let _ = writeln!(out, "{sample}");
    }
}
