//! InfiniRAID rebuilds survive crashes, with the real binary on `hw/ci-raid.toml` given a
//! volatile write cache on every device (so a power cut loses what was not synced).
//!
//! A volume is written (pattern 1), a quarter of it overwritten (pattern 2), destaged; before
//! the second crash another quarter is overwritten and only flushed (pattern 3). Twice: a drive fails (EIO on its reads, found by reading the volume
//! with a cold cache), its rebuild into spare space starts, slowed by latency injected on
//! the survivors' writes, and in its middle the node dies: by kill -9 the first time, by
//! the fault plane's power cut the second. After each restart:
//!
//! - the rebuild resumes from the progress persisted in `DATA/drives.json`: the file held
//!   some but not all segments at the crash, the restarted node logs a second
//!   `rebuilding drive` line and one `rebuilt drive` line, REBUILD_COMPLETED is raised, and
//!   the bytes the resumed run moved are at most what the segments holding data and not
//!   persisted as rebuilt need (after kill -9; the rows found on the drive files say which),
//!   or fewer than a rebuild from zero needs (after a power cut, which also drops unsynced
//!   rows the rebuild still visits);
//! - every flushed block reads back as its last flushed version.

mod common;
#[path = "common/raid.rs"]
mod raid;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use base64::Engine;
use common::TestNode;
use raid::{DRIVES, UNIT, WIDTH, drive_name};
use troika::layout::placement::Placement;

const VOLUME: &str = "v";
/// hw/ci-raid.toml's `rows_per_segment`.
const ROWS_PER_SEGMENT: u64 = 4;
/// 32 MiB.
const BLOCKS: u64 = 8192;
const EVENT_WAIT: Duration = Duration::from_secs(90);
/// Latency added to each survivor write while the rebuild runs before the crash.
const SLOW_WRITE_MS: u64 = 60;
/// How long the rebuild runs before the crash.
const RUN_BEFORE_CRASH: Duration = Duration::from_millis(2000);

/// The segments marked rebuilt for `drive` in `DATA/drives.json`, and the segments in all.
fn persisted_progress(node: &TestNode, drive: usize) -> (BTreeSet<u64>, u64) {
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
    // Little-endian 64-bit words: segment s is bit s % 8 of byte s / 8.
    let done = (0..segments)
        .filter(|&s| {
            bits.get((s / 8) as usize)
                .is_some_and(|byte| byte & (1 << (s % 8)) != 0)
        })
        .collect();
    (done, segments)
}

/// Bytes a rebuild of `drive` moves in `segments`: one unit per row of theirs with a unit on
/// the drive (every row of a segment holding data is written: rows are written whole and
/// segments filled in order).
fn rebuild_bytes(placement: &Placement, segments: &BTreeSet<u64>, drive: usize) -> u64 {
    let rows = segments
        .iter()
        .flat_map(|&segment| segment * ROWS_PER_SEGMENT..(segment + 1) * ROWS_PER_SEGMENT)
        .filter(|&row| (0..WIDTH).any(|unit| placement.cell(row, unit).drive == drive))
        .count() as u64;
    rows * UNIT
}

/// Fails `drive` by EIO on its reads (reading the volume with a cold cache), with every
/// other drive's writes slowed; returns once its rebuild has run `RUN_BEFORE_CRASH`.
fn fail_and_start_rebuild(node: &TestNode, drive: usize, expected: &dyn Fn(u64) -> u8) {
    for other in (0..DRIVES).filter(|&d| d != drive) {
        raid::delay(node, other, "write", SLOW_WRITE_MS);
    }
    raid::eio(node, drive, "read");
    // Read the volume (cold) a slice at a time until the drive has failed.
    for first in (0..BLOCKS).step_by(256) {
        let read = raid::read_back_range(node, VOLUME, first..first + 256, expected);
        assert!(
            read.errors.is_empty() && read.wrong.is_empty(),
            "reading while drive {drive} fails: {} EIO, {} wrong",
            read.errors.len(),
            read.wrong.len()
        );
        if raid::first_seq(node, "DRIVE_FAILED", &drive_name(drive)).is_some() {
            break;
        }
    }
    raid::wait_events(node, "DRIVE_FAILED", &drive_name(drive), 1, EVENT_WAIT);
    raid::wait_events(node, "REBUILD_STARTED", &drive_name(drive), 1, EVENT_WAIT);
    std::thread::sleep(RUN_BEFORE_CRASH);
    assert!(
        raid::first_seq(node, "REBUILD_COMPLETED", &drive_name(drive)).is_none(),
        "the rebuild of drive {drive} completed before the crash: slow it more; drive events: {}",
        raid::drive_events(node)
    );
}

/// What the crash left: the segments persisted as rebuilt, and the bytes a rebuild of the
/// segments holding data needs from zero and from there.
struct AtCrash {
    done: BTreeSet<u64>,
    segments: u64,
    from_zero: u64,
    from_progress: u64,
}

/// Reads the crashed node's files: `drives.json` and the rows holding data.
fn at_crash(node: &TestNode, placement: &Placement, drive: usize, crash: &str) -> AtCrash {
    let (done, segments) = persisted_progress(node, drive);
    let holding: BTreeSet<u64> = raid::rows_holding_blocks(node.data(), placement)
        .iter()
        .map(|row| row / ROWS_PER_SEGMENT)
        .collect();
    let left: BTreeSet<u64> = holding.difference(&done).copied().collect();
    assert!(
        !done.is_empty() && (done.len() as u64) < segments,
        "{crash}: drives.json held {} of {segments} segments rebuilt at the crash; the crash was not in the middle of a persisted rebuild",
        done.len()
    );
    assert!(
        left.len() < holding.len(),
        "{crash}: none of the {} segments holding data was persisted as rebuilt at the crash (done: {done:?}); the crash came too early to show a resume",
        holding.len()
    );
    AtCrash {
        from_zero: rebuild_bytes(placement, &holding, drive),
        from_progress: rebuild_bytes(placement, &left, drive),
        done,
        segments,
    }
}

/// After the restart: the rebuild resumed (see the module doc) and every block reads back
/// as `expected` says. Returns the bytes the resumed rebuild moved.
fn check_resumed(
    node: &TestNode,
    drive: usize,
    crashed: &AtCrash,
    expected: &dyn Fn(u64) -> u8,
    crash: &str,
    exact: bool,
) -> u64 {
    raid::wait_events(node, "REBUILD_COMPLETED", &drive_name(drive), 1, EVENT_WAIT);
    let log = node.log_text();
    let starts = log
        .matches(&format!("troika: rebuilding drive {drive} (nlsas{drive})"))
        .count();
    assert_eq!(
        starts,
        2,
        "{crash}: one rebuild start per run:\n{}",
        raid::tail(&log, 40)
    );
    let needle = format!("troika: rebuilt drive {drive} (nlsas{drive}): ");
    let finished: Vec<u64> = log
        .lines()
        .filter_map(|line| line.split(needle.as_str()).nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        finished.len(),
        1,
        "{crash}: one rebuild end:\n{}",
        raid::tail(&log, 40)
    );
    let resumed = finished[0];
    // After kill -9 every row on the drive files is known, so the bytes left are exact. A
    // power cut also drops unsynced rows of segments already allocated, which the rebuild
    // still visits: there the bar is the rebuild from zero.
    let bar = if exact {
        crashed.from_progress
    } else {
        crashed.from_zero - 1
    };
    assert!(
        resumed <= bar,
        "{crash}: the resumed rebuild moved {resumed} bytes; from the {} segments persisted it needs {} (from zero {}): progress was not kept",
        crashed.done.len(),
        crashed.from_progress,
        crashed.from_zero
    );
    assert_eq!(
        persisted_progress(node, drive).0.len() as u64,
        crashed.segments,
        "{crash}: not every segment is rebuilt"
    );
    let read = raid::read_back(node, VOLUME, BLOCKS, expected);
    assert!(
        read.errors.is_empty() && read.wrong.is_empty(),
        "{crash}: after the restart {} block(s) answer EIO and {} read back wrong (first {:?})",
        read.errors.len(),
        read.wrong.len(),
        &read.wrong[..read.wrong.len().min(8)]
    );
    resumed
}

/// Pattern 2 on every 4th block, destaged; pattern 3 on the next ones, only flushed.
fn after_first_overwrite(lba: u64) -> u8 {
    if lba.is_multiple_of(4) { 2 } else { 1 }
}

fn after_second_overwrite(lba: u64) -> u8 {
    match lba % 4 {
        0 => 2,
        1 => 3,
        _ => 1,
    }
}

#[test]
fn rebuild_resumes_after_kill9_and_power_cut_and_flushed_data_survives() {
    let models = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::start_with_model(raid::cached_raid_model(models.path(), "16M"));
    node.pool_and_volume("p", "300M", VOLUME, "32M");
    raid::fill_all(&node, VOLUME, BLOCKS, 1);
    raid::fill(&node, VOLUME, BLOCKS, 2, &|lba| lba % 4 == 0);
    // Destaged, so the rebuild has all of it to move; the restart leaves the cache cold.
    node.stop();
    node.restart();
    let placement = raid::placement();
    let started = Instant::now();

    // kill -9 in the middle of drive 3's rebuild.
    let first = 3;
    fail_and_start_rebuild(&node, first, &after_first_overwrite);
    node.kill9();
    let crashed = at_crash(&node, &placement, first, "kill -9");
    node.restart();
    let resumed = check_resumed(
        &node,
        first,
        &crashed,
        &after_first_overwrite,
        "kill -9",
        true,
    );
    eprintln!(
        "kill -9: {} of {} segments persisted at the crash; the resumed rebuild moved {resumed} bytes (from there {}, from zero {})",
        crashed.done.len(),
        crashed.segments,
        crashed.from_progress,
        crashed.from_zero
    );

    // A power cut in the middle of drive 6's rebuild, with pattern 3 only flushed (after a
    // clean restart: a cold cache, so the reads that fail the drive reach it).
    node.stop();
    node.restart();
    raid::fill(&node, VOLUME, BLOCKS, 3, &|lba| lba % 4 == 1);
    let second = 6;
    fail_and_start_rebuild(&node, second, &after_second_overwrite);
    let _ = rest_unix::call(
        &node.mgmt_socket(),
        "POST",
        "/api/rest/faults/power_cut?approved=true",
        Some(r#"{"seed": 1616}"#),
    );
    let status = node
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the node outlived its power cut\n{}", node.log_text()));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "a power cut ends by SIGKILL: {status}"
    );
    let crashed = at_crash(&node, &placement, second, "power cut");
    node.restart();
    let resumed = check_resumed(
        &node,
        second,
        &crashed,
        &after_second_overwrite,
        "power cut",
        false,
    );
    eprintln!(
        "power cut: {} of {} segments persisted at the cut; the resumed rebuild moved {resumed} bytes (from there {}, from zero {}); {:.1} s in all",
        crashed.done.len(),
        crashed.segments,
        crashed.from_progress,
        crashed.from_zero,
        started.elapsed().as_secs_f64()
    );
    node.stop();
}
