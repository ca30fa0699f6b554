//! InfiniRAID rebuilds survive crashes, with the real binary on `hw/ci-raid.toml` given a
//! volatile write cache on every device (so a power cut loses what was not synced).
//!
//! A volume is written and destaged (pattern 1), a quarter of it overwritten and flushed
//! (pattern 2). Then, twice: a drive fails (EIO on its reads, found by reading the volume
//! with a cold cache), its rebuild into spare space starts, slowed by latency injected on
//! the survivors' writes, and in its middle the node dies: by kill -9 the first time, by
//! the fault plane's power cut the second. After each restart:
//!
//! - the rebuild resumes from the progress persisted in `DATA/drives.json`: the file held
//!   some but not all segments at the crash, the restarted node logs a second
//!   `rebuilding drive` line and one `rebuilt drive` line, REBUILD_COMPLETED is raised, and
//!   the bytes the resumed run moved are fewer than the drive's rows holding the volume
//!   alone would need from zero;
//! - every flushed block reads back as its last flushed version.

mod common;
#[path = "common/raid.rs"]
mod raid;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use base64::Engine;
use common::TestNode;
use raid::{DRIVES, UNIT, WIDTH, drive_name};
use troika::layout::placement::Placement;

const VOLUME: &str = "v";
/// 32 MiB.
const BLOCKS: u64 = 8192;
const EVENT_WAIT: Duration = Duration::from_secs(90);
/// Latency added to each survivor write while the rebuild runs before the crash.
const SLOW_WRITE_MS: u64 = 30;
/// How long the rebuild runs before the crash.
const RUN_BEFORE_CRASH: Duration = Duration::from_millis(1200);

/// The pattern each block's last flushed write has: every 4th block was overwritten.
fn expected(lba: u64) -> u8 {
    if lba % 4 == 0 { 2 } else { 1 }
}

/// Segments marked rebuilt for `drive` in `DATA/drives.json`, and the segments in all.
fn persisted_progress(node: &TestNode, drive: usize) -> (u64, u64) {
    let text = std::fs::read_to_string(node.data().join("drives.json")).expect("drives.json");
    let table: serde_json::Value = serde_json::from_str(&text).expect("drives.json is JSON");
    let segments = table["segments"].as_u64().expect("segments in drives.json");
    let failure = table["failures"]
        .as_array()
        .and_then(|failures| {
            failures
                .iter()
                .find(|f| f["drive"].as_u64() == Some(drive as u64))
        })
        .unwrap_or_else(|| panic!("drive {drive} is not failed in drives.json: {text}"));
    let bits = base64::engine::general_purpose::STANDARD
        .decode(failure["rebuilt"].as_str().expect("rebuilt bits"))
        .expect("rebuilt bits are base64");
    let done = bits.iter().map(|byte| u64::from(byte.count_ones())).sum();
    (done, segments)
}

/// Bytes a rebuild of `drive` from zero must move at least: one unit for every row that
/// holds blocks of the volume and has a unit on the drive.
fn full_rebuild_floor(
    placement: &Placement,
    located: &BTreeMap<u64, (u64, usize)>,
    drive: usize,
) -> u64 {
    let mut rows: Vec<u64> = located.values().map(|&(row, _)| row).collect();
    rows.dedup();
    rows.sort_unstable();
    rows.dedup();
    let touched = rows
        .iter()
        .filter(|&&row| (0..WIDTH).any(|unit| placement.cell(row, unit).drive == drive))
        .count() as u64;
    touched * UNIT
}

/// Fails `drive` by EIO on its reads (reading the volume with a cold cache), with every
/// other drive's writes slowed; returns once its rebuild has run `RUN_BEFORE_CRASH`.
fn fail_and_start_rebuild(node: &TestNode, drive: usize) {
    for other in (0..DRIVES).filter(|&d| d != drive) {
        raid::delay(node, other, "write", SLOW_WRITE_MS);
    }
    raid::eio(node, drive, "read");
    let read = raid::read_back(node, VOLUME, BLOCKS, &expected);
    assert!(
        read.errors.is_empty() && read.wrong.is_empty(),
        "reading while drive {drive} fails: {} EIO, {} wrong",
        read.errors.len(),
        read.wrong.len()
    );
    raid::wait_events(node, "DRIVE_FAILED", &drive_name(drive), 1, EVENT_WAIT);
    raid::wait_events(node, "REBUILD_STARTED", &drive_name(drive), 1, EVENT_WAIT);
    std::thread::sleep(RUN_BEFORE_CRASH);
    assert!(
        raid::first_seq(node, "REBUILD_COMPLETED", &drive_name(drive)).is_none(),
        "the rebuild of drive {drive} completed before the crash: slow it more; drive events: {}",
        raid::drive_events(node)
    );
}

/// After the restart: the rebuild resumed (see the module doc) and every block reads back.
fn check_resumed(
    node: &TestNode,
    drive: usize,
    at_crash: (u64, u64),
    floor: u64,
    crash: &str,
) -> u64 {
    let (done, segments) = at_crash;
    assert!(
        done > 0 && done < segments,
        "{crash}: drives.json held {done} of {segments} segments rebuilt at the crash; the crash was not in the middle of a persisted rebuild"
    );
    raid::wait_events(node, "REBUILD_COMPLETED", &drive_name(drive), 1, EVENT_WAIT);
    let log = node.log_text();
    let starts = log
        .matches(&format!("troika: rebuilding drive {drive} (nlsas{drive})"))
        .count();
    assert_eq!(starts, 2, "{crash}: one rebuild start per run:\n{}", raid::tail(&log, 40));
    let needle = format!("troika: rebuilt drive {drive} (nlsas{drive}): ");
    let finished: Vec<u64> = log
        .lines()
        .filter_map(|line| line.split(needle.as_str()).nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(finished.len(), 1, "{crash}: one rebuild end:\n{}", raid::tail(&log, 40));
    let resumed = finished[0];
    assert!(
        resumed < floor,
        "{crash}: the resumed rebuild moved {resumed} bytes, a rebuild from zero needs at least {floor}: progress was not kept"
    );
    assert_eq!(persisted_progress(node, drive).0, segments, "{crash}: not every segment is rebuilt");
    let read = raid::read_back(node, VOLUME, BLOCKS, &expected);
    assert!(
        read.errors.is_empty() && read.wrong.is_empty(),
        "{crash}: after the restart {} block(s) answer EIO and {} read back wrong (first {:?})",
        read.errors.len(),
        read.wrong.len(),
        &read.wrong[..read.wrong.len().min(8)]
    );
    resumed
}

#[test]
fn rebuild_resumes_after_kill9_and_power_cut_and_flushed_data_survives() {
    let models = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::start_with_model(raid::cached_raid_model(models.path(), "16M"));
    node.pool_and_volume("p", "300M", VOLUME, "32M");
    raid::fill_all(&node, VOLUME, BLOCKS, 1);
    node.stop();
    let placement = raid::placement();
    let located = raid::locate_blocks(node.data(), &placement, BLOCKS, 1);
    node.restart();
    raid::fill(&node, VOLUME, BLOCKS, 2, &|lba| expected(lba) == 2);
    let started = Instant::now();

    // kill -9 in the middle of drive 3's rebuild.
    let first = 3;
    fail_and_start_rebuild(&node, first);
    node.kill9();
    let at_crash = persisted_progress(&node, first);
    node.restart();
    let floor = full_rebuild_floor(&placement, &located, first);
    let resumed = check_resumed(&node, first, at_crash, floor, "kill -9");
    eprintln!(
        "kill -9: {} of {} segments persisted at the crash; the resumed rebuild moved {resumed} bytes (from zero: at least {floor})",
        at_crash.0, at_crash.1
    );

    // A power cut in the middle of drive 6's rebuild (after a clean restart: a cold cache,
    // so the reads that fail the drive reach it).
    node.stop();
    node.restart();
    let second = 6;
    fail_and_start_rebuild(&node, second);
    let _ = rest_unix::call(
        &node.mgmt_socket(),
        "POST",
        "/api/rest/faults/power_cut?approved=true",
        Some(r#"{"seed": 1616}"#),
    );
    let status = node
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the node outlived its power cut\n{}", node.log_text()));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "a power cut ends by SIGKILL: {status}");
    let at_crash = persisted_progress(&node, second);
    node.restart();
    let floor = full_rebuild_floor(&placement, &located, second);
    let resumed = check_resumed(&node, second, at_crash, floor, "power cut");
    eprintln!(
        "power cut: {} of {} segments persisted at the cut; the resumed rebuild moved {resumed} bytes (from zero: at least {floor}); {:.1} s in all",
        at_crash.0,
        at_crash.1,
        started.elapsed().as_secs_f64()
    );
    node.stop();
}
