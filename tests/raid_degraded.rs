//! InfiniRAID degraded operation with the real binary on `hw/ci-raid.toml` (4+2 rows
//! declustered over 10 drives, two drives' worth of distributed spare), drives failed the
//! way hardware fails them: EIO injected through the fault plane.
//!
//! - `two_drive_failures_under_fio_verify_load`: fio (`--verify=crc32c`, nbd engine) writes
//!   and verifies while one drive fails on a write and a second fails during the first's
//!   rebuild; both rebuilds complete, fio reports no verify error, and after a restart
//!   (cold cache) a verify-only pass reads every block back. Then both drives are replaced
//!   (REST for one, CLI for the other) and copied back; skipped with a SKIPPED line while the
//!   drive REST route does not exist.
//! - `three_failures_lose_exactly_the_blocks_of_rows_that_lost_three_units`: a volume of
//!   self-naming blocks is destaged, the test finds each block's row and unit on the drive
//!   files and, from `troika::layout::Placement`, which rows three failed drives leave beyond
//!   repair; then every read and write of those three drives fails. Exactly the blocks
//!   predicted answer EIO, every other block reads back intact, events name the loss, and
//!   the node still creates, writes, reads and destages a new volume.

mod common;
#[path = "common/raid.rs"]
mod raid;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestNode;
use common::tools;
use raid::{DATA, DRIVE_BYTES, DRIVES, WIDTH, drive_name, locate_blocks, placement};
use troika::layout::placement::Placement;

/// How long drive events and rebuilds may take before the test calls it a hang.
const EVENT_WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// Two failures under fio.

const FIO_VOLUME: &str = "fv";
const FIO_SIZE: &str = "48M";
const FIO_SEED: u64 = 0x5EED_0016;
/// Write-and-verify passes of the loaded run, so fio still runs while both drives fail.
const FIO_LOOPS: u32 = 4;

fn fio_command(node: &TestNode, verify_only: bool) -> Command {
    let mut command = Command::new("fio");
    command
        .arg("--name=raid-degraded")
        .arg("--ioengine=nbd")
        .arg(format!("--uri={}", node.uri(FIO_VOLUME)))
        .arg(format!("--directory={}", node.data().display()))
        .arg("--verify_state_save=0")
        .arg("--rw=randwrite")
        .arg("--bs=4k")
        .arg("--iodepth=8")
        .arg(format!("--size={FIO_SIZE}"))
        .arg("--verify=crc32c")
        .arg("--verify_fatal=1")
        .arg(format!("--randseed={FIO_SEED}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if verify_only {
        command.arg("--verify_only");
    } else {
        command.arg(format!("--loops={FIO_LOOPS}"));
    }
    command
}

/// Waits at most `timeout` for fio; panics unless it exits 0 with no verify error.
fn finish_fio(node: &TestNode, mut child: Child, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait for fio").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fio ({what}) did not finish in {timeout:?}; drive events: {}",
                raid::drive_events(node)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("fio output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fio ({what}) failed ({}):\n{text}\ndrive events: {}\nlog tail:\n{}",
        out.status,
        raid::drive_events(node),
        raid::tail(&node.log_text(), 40)
    );
    let lower = text.to_lowercase();
    assert!(
        !lower.contains("verify:") && !lower.contains("bad magic") && !lower.contains("crc32c"),
        "fio ({what}) reported verify errors:\n{text}"
    );
    for line in lower.lines().filter(|line| line.contains("err=")) {
        assert!(
            line.contains("err= 0"),
            "fio ({what}) reported an error:\n{text}"
        );
    }
}

#[test]
fn two_drive_failures_under_fio_verify_load() {
    if !tools::present(&[&tools::FIO_NBD]) {
        return;
    }
    let (first, second) = (2usize, 5usize);
    let mut node = TestNode::start_with_model(raid::raid_model());
    node.pool_and_volume("p", "300M", FIO_VOLUME, "64M");
    let started = Instant::now();
    let mut fio = fio_command(&node, false).spawn().expect("run fio");
    // Spare-cell writes of the survivors are slowed so the first rebuild is still running
    // when the second drive fails (the rebuild visits only what fio wrote: a few MiB).
    for drive in (0..DRIVES).filter(|&d| d != first && d != second) {
        raid::delay(&node, drive, "write", 15);
    }
    raid::eio(&node, first, "write");
    raid::wait_events(&node, "DRIVE_FAILED", &drive_name(first), 1, EVENT_WAIT);
    raid::wait_events(&node, "REBUILD_STARTED", &drive_name(first), 1, EVENT_WAIT);
    raid::eio(&node, second, "write");
    raid::wait_events(&node, "DRIVE_FAILED", &drive_name(second), 1, EVENT_WAIT);
    let failed_at = started.elapsed();
    assert!(
        fio.try_wait().expect("fio").is_none(),
        "fio ended before the second drive failed ({failed_at:?}): the failures were not under load"
    );
    let second_failed = raid::first_seq(&node, "DRIVE_FAILED", &drive_name(second));
    let first_rebuilt = raid::first_seq(&node, "REBUILD_COMPLETED", &drive_name(first));
    assert!(
        first_rebuilt.is_none() || first_rebuilt > second_failed,
        "the second drive failed only after the first rebuild completed: the test proves nothing; drive events: {}",
        raid::drive_events(&node)
    );
    raid::clear_faults(&node);
    finish_fio(&node, fio, Duration::from_secs(240), "write and verify");
    raid::wait_events(
        &node,
        "REBUILD_COMPLETED",
        &drive_name(first),
        1,
        EVENT_WAIT,
    );
    raid::wait_events(
        &node,
        "REBUILD_COMPLETED",
        &drive_name(second),
        1,
        EVENT_WAIT,
    );
    eprintln!(
        "fio wrote and verified {FIO_SIZE} {FIO_LOOPS} times while drives {first} and {second} failed (both by {:.1} s) and were rebuilt, in {:.1} s",
        failed_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // Every block from media: a clean stop destages, the restart starts with a cold cache.
    node.stop();
    node.restart();
    let verify = fio_command(&node, true).spawn().expect("run fio");
    finish_fio(
        &node,
        verify,
        Duration::from_secs(120),
        "verify after rebuild",
    );
    replace_both(&mut node, first, second);
    node.stop();
}

/// Replaces both failed drives (REST for `first`, CLI for `second`), waits for both
/// copy-backs and verifies every block again. Skipped, with a SKIPPED line, on a build
/// without the drive REST routes.
fn replace_both(node: &mut TestNode, first: usize, second: usize) {
    let new_drive = |index: usize| {
        let path = node.data().join(format!("replacement{index}.img"));
        File::create(&path)
            .and_then(|file| file.set_len(DRIVE_BYTES))
            .expect("create a replacement drive file");
        path
    };
    let path = new_drive(first);
    let body = serde_json::json!({ "path": path.display().to_string() }).to_string();
    let target = format!(
        "/api/rest/components/enclosures/1/drives/{}/replace?approved=true",
        first + 1
    );
    let (status, answer) = rest_unix::call(&node.mgmt_socket(), "POST", &target, Some(&body))
        .unwrap_or_else(|e| panic!("POST {target}: {e}"));
    if status == 404 {
        tools::skipped(
            "drive replacement (POST .../drives/{index}/replace answers 404 on this build)",
            "merge the drive REST/CLI branch",
        );
        return;
    }
    assert!(
        (200..300).contains(&status),
        "POST {target}: {status} {answer}"
    );
    let path = new_drive(second);
    node.cli_ok(&[
        "drive",
        "replace",
        &second.to_string(),
        "--path",
        &path.display().to_string(),
    ]);
    for drive in [first, second] {
        raid::wait_events(
            node,
            "DRIVE_COPYBACK_COMPLETED",
            &format!("Drive {drive} (nlsas{drive})"),
            1,
            EVENT_WAIT,
        );
    }
    node.stop();
    node.restart();
    let verify = fio_command(node, true).spawn().expect("run fio");
    finish_fio(
        node,
        verify,
        Duration::from_secs(120),
        "verify after replacement",
    );
}

// ---------------------------------------------------------------------------------------
// Three failures.

const VOLUME: &str = "v";
/// 32 MiB of blocks: about 130 rows, of which about one in six touches three given drives.
const BLOCKS: u64 = 8192;

/// The rows that have a unit on every drive of `failed`, and the blocks of the volume held
/// in units of those rows on failed drives: exactly what parity cannot rebuild.
fn predict_lost(
    placement: &Placement,
    located: &BTreeMap<u64, (u64, usize)>,
    failed: &[usize],
) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let lost_row = |row: u64| {
        (0..WIDTH)
            .filter(|&unit| failed.contains(&placement.cell(row, unit).drive))
            .count()
            > WIDTH - DATA
    };
    let rows: BTreeSet<u64> = located
        .values()
        .map(|&(row, _)| row)
        .filter(|&row| lost_row(row))
        .collect();
    let blocks = located
        .iter()
        .filter(|(_, (row, unit))| {
            rows.contains(row) && failed.contains(&placement.cell(*row, *unit).drive)
        })
        .map(|(&lba, _)| lba)
        .collect();
    (rows, blocks)
}

/// Checks one full read of the volume against the prediction.
fn assert_read_back(node: &TestNode, predicted: &BTreeSet<u64>, pass: &str) {
    let read = raid::read_back(node, VOLUME, BLOCKS, &|_| 1);
    assert!(
        read.wrong.is_empty(),
        "{pass}: {} block(s) read back wrong (first {:?}): wrong data must never be returned",
        read.wrong.len(),
        &read.wrong[..read.wrong.len().min(8)]
    );
    let errors: BTreeSet<u64> = read.errors.iter().copied().collect();
    let unexpected: Vec<&u64> = errors.difference(predicted).take(8).collect();
    let readable: Vec<&u64> = predicted.difference(&errors).take(8).collect();
    // No block outside the lost rows' failed units may answer EIO. A predicted block may
    // read back (exactly: checked above) when the node holds another copy of it that the
    // media scan did not see: blocks the vault gave back to the DRAM cache at the restart.
    // That is seen in about one run in three for the same 13 blocks of one row; more than
    // a few such blocks would mean the prediction, or the array, is wrong.
    let spared = predicted.len() - errors.intersection(predicted).count();
    assert!(
        unexpected.is_empty() && spared * 20 <= predicted.len(),
        "{pass}: {} block(s) answered EIO, {} predicted lost; EIO but not predicted (first): {unexpected:?}; predicted but read back (first): {readable:?}; drive events: {}",
        errors.len(),
        predicted.len(),
        raid::drive_events(node)
    );
    if spared > 0 {
        eprintln!(
            "{pass}: {spared} predicted block(s) read back exactly from another copy (first {readable:?})"
        );
    }
}

#[test]
fn three_failures_lose_exactly_the_blocks_of_rows_that_lost_three_units() {
    let mut node = TestNode::start_with_model(raid::raid_model());
    node.pool_and_volume("p", "300M", VOLUME, "32M");
    // The loss is counted on the NL-SAS drives: keep the volume out of the SSD read cache,
    // whose verified copies would otherwise answer for blocks of lost rows.
    node.cli_ok(&["pool", "update", "p", "--ssd", "off"]);
    raid::fill_all(&node, VOLUME, BLOCKS, 1);
    node.stop();
    let placement = placement();
    let located = locate_blocks(node.data(), &placement, BLOCKS, 1);
    // The first three drives (lowest indexes first) whose loss costs some written block.
    let (failed, rows, predicted) = (0..DRIVES)
        .flat_map(|a| (a + 1..DRIVES).flat_map(move |b| (b + 1..DRIVES).map(move |c| [a, b, c])))
        .map(|failed| {
            let (rows, blocks) = predict_lost(&placement, &located, &failed);
            (failed, rows, blocks)
        })
        .find(|(_, _, blocks)| !blocks.is_empty())
        .expect("some three drives share a row of the volume");
    eprintln!(
        "failing drives {failed:?}: {} of the volume's rows lose three units, {} of {BLOCKS} blocks predicted lost",
        rows.len(),
        predicted.len()
    );
    node.restart();
    for &drive in &failed {
        raid::eio(&node, drive, "read");
        raid::eio(&node, drive, "write");
    }
    // Fail the three by command too, at once, rather than leave it to the read errors the
    // reads below would meet one drive after another (see the closing note of issue 16).
    for &drive in &failed {
        rest_unix::ok(
            &node.mgmt_socket(),
            "POST",
            &format!(
                "/api/rest/components/enclosures/1/drives/{}/fail?approved=true",
                drive + 1
            ),
            None,
        );
    }
    assert_read_back(&node, &predicted, "first read (drives failed)");
    for &drive in &failed {
        raid::wait_events(&node, "DRIVE_FAILED", &drive_name(drive), 1, EVENT_WAIT);
    }
    let rows_lost = raid::wait_events(&node, "ROWS_LOST", "row", 1, EVENT_WAIT);
    let reported: u64 = rows_lost
        .iter()
        .filter_map(|text| text.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(
        reported >= rows.len() as u64,
        "ROWS_LOST reports {reported} rows, the volume alone lost {}: {rows_lost:?}",
        rows.len()
    );
    assert_read_back(&node, &predicted, "second read (three drives failed)");
    let unrecoverable =
        raid::wait_events(&node, "DATA_UNRECOVERABLE", "volume v block", 1, EVENT_WAIT);
    let named: Vec<u64> = unrecoverable
        .iter()
        .flat_map(|text| text.split("volume v block ").skip(1))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        !named.is_empty(),
        "DATA_UNRECOVERABLE names no block: {unrecoverable:?}"
    );
    for lba in &named {
        assert!(
            predicted.contains(lba),
            "DATA_UNRECOVERABLE names block {lba}, which reads back"
        );
    }
    // The node still serves: a new volume is written, read and destaged.
    node.cli_ok(&["vol", "create", "fresh", "--pool", "p", "--size", "8M"]);
    raid::fill_all(&node, "fresh", 2048, 7);
    let fresh = raid::read_back(&node, "fresh", 2048, &|_| 7);
    assert!(
        fresh.errors.is_empty() && fresh.wrong.is_empty(),
        "the new volume does not read back: {fresh:?}"
    );
    node.stop();
    node.restart();
    let fresh = raid::read_back(&node, "fresh", 2048, &|_| 7);
    assert!(
        fresh.errors.is_empty() && fresh.wrong.is_empty(),
        "the new volume does not read back from media: {fresh:?}"
    );
    node.stop();
}
