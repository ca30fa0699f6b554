//! The background scrub on the real binary: bits flipped in the drive files behind a
//! stopped node (in user blocks, the row summaries, P and Q) are all found and rewritten
//! from parity by `troika scrub start`, counted by kind in the scrub's status, events and
//! metrics, and the data reads back exactly.
//!
//! The CI model lays rows straight: drive u holds unit u of row r at byte r * 64 KiB, P on
//! nlsas4 and Q on nlsas5, the summary in the last 4 KiB of unit 3. Written blocks are
//! found by searching the data drives for their (random, so unique) content; one flip goes
//! into each of a set of distinct rows, so every flip is one damaged unit to repair.

mod common;
#[path = "common/testdata.rs"]
mod testdata;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;
use serde_json::Value;
use testdata::XorShift;

const BLOCK: usize = 4096;
const MIB: usize = 1 << 20;
const WRITTEN: usize = 8 * MIB;
const UNIT: u64 = 64 * 1024;
const DATA_DRIVES: usize = 4;
/// Flips per kind: user blocks, summaries, P, Q.
const PER_KIND: usize = 6;

fn drive_path(node: &TestNode, drive: usize) -> PathBuf {
    node.data().join(format!("nlsas{drive}.img"))
}

/// The row and drive byte offset of every written block found exactly once on the data
/// drives, by row.
fn written_rows(node: &TestNode, data: &[u8]) -> BTreeMap<u64, Vec<(usize, u64)>> {
    let index: HashMap<&[u8], usize> = data
        .chunks(BLOCK)
        .enumerate()
        .map(|(lba, block)| (&block[..16], lba))
        .collect();
    let mut found: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
    let mut buf = vec![0u8; MIB];
    for drive in 0..DATA_DRIVES {
        let file = File::open(drive_path(node, drive)).expect("open drive file");
        let size = file.metadata().unwrap().len();
        let mut base = 0u64;
        while base < size {
            let n = file.read_at(&mut buf, base).expect("read drive file");
            for (i, block) in buf[..n].chunks_exact(BLOCK).enumerate() {
                if let Some(&lba) = index.get(&block[..16])
                    && block == &data[lba * BLOCK..(lba + 1) * BLOCK]
                {
                    found
                        .entry(lba)
                        .or_default()
                        .push((drive, base + (i * BLOCK) as u64));
                }
            }
            base += n as u64;
        }
    }
    let mut rows: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    for places in found.values().filter(|places| places.len() == 1) {
        let (drive, offset) = places[0];
        rows.entry(offset / UNIT).or_default().push((drive, offset));
    }
    rows
}

/// Flips one bit at `offset` of drive `drive`; returns the byte as it was.
fn flip_bit(node: &TestNode, drive: usize, offset: u64, bit: u32) -> u8 {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(drive_path(node, drive))
        .expect("open drive file for damage");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    let original = byte[0];
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset).unwrap();
    file.sync_all().unwrap();
    original
}

fn read_byte(node: &TestNode, drive: usize, offset: u64) -> u8 {
    let mut byte = [0u8];
    File::open(drive_path(node, drive))
        .unwrap()
        .read_exact_at(&mut byte, offset)
        .unwrap();
    byte[0]
}

fn events(node: &TestNode, code: &str) -> Vec<Value> {
    let (status, body) = node.http_get(&format!("/api/rest/events?code=eq:{code}"));
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    value["result"].as_array().cloned().unwrap_or_default()
}

fn status(node: &TestNode) -> Value {
    serde_json::from_str(&node.cli_ok(&["--json", "scrub", "status"])).expect("scrub status JSON")
}

/// Waits (at most a minute) for the `count`-th SCRUB_COMPLETED event.
fn wait_for_completion(node: &TestNode, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = events(node, "SCRUB_COMPLETED");
        if done.len() >= count {
            return done[count - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no SCRUB_COMPLETED within a minute; status: {}",
            status(node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scrub_repairs_every_flipped_bit_and_counts_it_by_kind() {
    let mut node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let data = XorShift::new(42).bytes(WRITTEN);
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    for (i, chunk) in data.chunks(MIB).enumerate() {
        client.write((i * MIB) as u64, chunk, 0).expect("write");
    }
    client.flush().expect("flush");
    client.disconnect();
    node.stop();

    let rows = written_rows(&node, &data);
    assert!(
        rows.len() >= 4 * PER_KIND,
        "only {} rows hold found blocks",
        rows.len()
    );
    let mut rng = XorShift::new(7);
    // (drive, offset, original byte) of each flip, one per row.
    let mut flips: Vec<(usize, u64, u8)> = Vec::new();
    for (n, (&row, blocks)) in rows.iter().take(4 * PER_KIND).enumerate() {
        let within = rng.below(BLOCK as u64);
        let (drive, offset) = match n % 4 {
            0 => {
                let (drive, at) = blocks[rng.below(blocks.len() as u64) as usize];
                (drive, at + within)
            }
            // The summary's header and entries: its first 1 KiB.
            1 => (
                DATA_DRIVES - 1,
                row * UNIT + UNIT - BLOCK as u64 + within % 1024,
            ),
            2 => (DATA_DRIVES, row * UNIT + rng.below(UNIT)),
            _ => (DATA_DRIVES + 1, row * UNIT + rng.below(UNIT)),
        };
        let original = flip_bit(&node, drive, offset, rng.below(8) as u32);
        flips.push((drive, offset, original));
    }

    node.restart();
    let idle = status(&node);
    assert_eq!(idle["state"], "IDLE", "{idle}");
    assert_eq!(idle["passes_completed"], 0);
    let started = node.cli_ok(&["scrub", "start"]);
    assert!(started.contains("state"), "{started}");
    let completed = wait_for_completion(&node, 1);

    let after = status(&node);
    assert_eq!(after["state"], "IDLE", "{after}");
    assert_eq!(after["passes_completed"], 1, "{after}");
    assert_eq!(after["unrepairable_rows"], 0, "{after}");
    let figures = [
        ("data_repairs", PER_KIND),
        ("other_repairs", PER_KIND),
        ("parity_repairs", 2 * PER_KIND),
    ];
    for (field, expected) in figures {
        assert_eq!(after[field], expected as u64, "{field}: {after}");
    }
    assert!(
        after["rows"].as_u64().unwrap() >= rows.len() as u64,
        "{after}"
    );
    let description = completed["description"].as_str().unwrap();
    assert!(
        description.contains(&format!(
            "units repaired: {PER_KIND} data, {} parity, {PER_KIND} summary or unused",
            2 * PER_KIND
        )),
        "{description}"
    );
    let repaired_events: usize = events(&node, "SCRUB_REPAIRED").len();
    assert!(repaired_events >= 1);
    assert!(events(&node, "SCRUB_STARTED").len() == 1);
    let metrics = node.metrics();
    let metric = |name: &str| {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(
        metric("troika_scrub_repairs_total{kind=\"data\"}"),
        PER_KIND as u64
    );
    assert_eq!(
        metric("troika_scrub_repairs_total{kind=\"parity\"}"),
        2 * PER_KIND as u64
    );
    assert_eq!(
        metric("troika_scrub_repairs_total{kind=\"other\"}"),
        PER_KIND as u64
    );
    assert_eq!(metric("troika_scrub_passes_total"), 1);
    assert_eq!(metric("troika_scrub_running"), 0);

    // Repaired in place: every flipped byte is back on the drive.
    for &(drive, offset, original) in &flips {
        assert_eq!(
            read_byte(&node, drive, offset),
            original,
            "drive {drive} offset {offset} was not repaired"
        );
    }
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let mut back = vec![0u8; MIB];
    for (i, expected) in data.chunks(MIB).enumerate() {
        client.read((i * MIB) as u64, &mut back).expect("read back");
        assert!(back == expected, "MiB {i} reads back wrong after the scrub");
    }
    client.disconnect();

    // A second pass finds nothing; the human status says so.
    node.cli_ok(&["scrub", "start"]);
    wait_for_completion(&node, 2);
    let again = status(&node);
    for field in [
        "data_repairs",
        "parity_repairs",
        "other_repairs",
        "unrepairable_rows",
    ] {
        assert_eq!(again[field], 0, "{field}: {again}");
    }
    let human = node.cli_ok(&["scrub", "status"]);
    assert!(
        human.contains("IDLE") && human.contains("passes completed"),
        "{human}"
    );
}

#[test]
fn scrub_stop_ends_a_pass_and_the_progress_survives_a_restart() {
    // A slow scrub (1 MiB/s) over a few MiB of data runs for seconds: long enough to stop.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("slow-scrub.toml");
    let text = std::fs::read_to_string(common::ci_model()).unwrap();
    std::fs::write(&model, format!("{text}\n[scrub]\nrate = \"1M\"\n")).unwrap();
    let mut node = TestNode::start_with_model(model);
    node.pool_and_volume("P", "200M", "V", "64M");
    let data = XorShift::new(3).bytes(4 * MIB);
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    client.write(0, &data, 0).expect("write");
    client.flush().expect("flush");
    client.disconnect();
    node.stop();
    node.restart();

    let running = node.cli_ok(&["--json", "scrub", "start"]);
    let running: Value = serde_json::from_str(&running).unwrap();
    assert_eq!(running["state"], "RUNNING", "{running}");
    assert_eq!(running["rate"], 1 << 20);
    // Wait (bounded) until it has finished two segments (the second is recorded over a
    // second after the start at this rate, so its progress is in the file), then kill
    // the node mid-pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    let segment = |node: &TestNode| status(node)["segment"].as_u64().unwrap();
    let mut first = 0;
    loop {
        let now = segment(&node);
        if first == 0 {
            first = now;
        } else if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scrub did not get through two segments"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node.restart();
    let resumed = status(&node);
    assert_eq!(resumed["state"], "RUNNING", "{resumed}");
    assert_eq!(resumed["started_at"], running["started_at"], "{resumed}");
    assert!(
        resumed["segment"].as_u64().unwrap() > first,
        "the pass did not resume where it was (past segment {first}): {resumed}"
    );

    let stopped: Value = serde_json::from_str(&node.cli_ok(&["--json", "scrub", "stop"])).unwrap();
    assert_eq!(stopped["state"], "IDLE", "{stopped}");
    assert!(stopped["next_run_at"].as_u64().is_some());
    assert_eq!(events(&node, "SCRUB_STOPPED").len(), 1);
    assert_eq!(events(&node, "SCRUB_COMPLETED").len(), 0);
}
