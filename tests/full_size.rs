//! The full-size model (`hw/infinibox-f4300.toml`: three controllers, 14+2 rows over 480
//! NL-SAS drives of 6 TB as sparse files, 5% distributed spare) boots here, serves a
//! volume, fails a drive the way hardware does (EIO on every read and write of it, until a
//! row write meets it), rebuilds what was written into spare space, and reads every
//! block back after a restart with a cold cache. Prints the boot time, the RSS and the
//! drive events.
//!
//! The model's DRAM is scaled further down here (`dram_scale = 0.0001`: 39 MiB of cache
//! per controller) so that the data written is destaged to the drives while the test
//! writes it, rather than sitting in a cache of 384 MiB per controller.

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;

const BLOCK: usize = 4096;
/// 256 MiB written before the failure.
const BLOCKS: u64 = 64 * 1024;
/// Blocks per NBD request.
const CHUNK: u64 = 256;
const FAILED_DRIVE: &str = "nlsas137";

fn block(lba: u64, version: u8) -> Vec<u8> {
    let mut data = vec![version; BLOCK];
    data[..8].copy_from_slice(&lba.to_le_bytes());
    data[8..16].copy_from_slice(&(lba ^ 0x5eed).to_le_bytes());
    data
}

/// Writes `version` of blocks `range` and flushes.
fn write(node: &TestNode, range: std::ops::Range<u64>, version: u8) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
    let mut chunk = Vec::with_capacity(CHUNK as usize * BLOCK);
    for first in range.step_by(CHUNK as usize) {
        chunk.clear();
        for lba in first..first + CHUNK {
            chunk.extend_from_slice(&block(lba, version));
        }
        client
            .write(first * BLOCK as u64, &chunk, 0)
            .unwrap_or_else(|e| panic!("write at block {first}: {e}\n{}", node.log_text()));
    }
    client.flush().expect("flush");
    client.disconnect();
}

/// Every block reads back as `version_of(lba)`.
fn read_back(node: &TestNode, version_of: impl Fn(u64) -> u8) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
    let mut buf = vec![0u8; CHUNK as usize * BLOCK];
    for first in (0..BLOCKS).step_by(CHUNK as usize) {
        client
            .read(first * BLOCK as u64, &mut buf)
            .unwrap_or_else(|e| panic!("read at block {first}: {e}\n{}", node.log_text()));
        for (i, got) in buf.chunks(BLOCK).enumerate() {
            let lba = first + i as u64;
            assert!(
                got == block(lba, version_of(lba)),
                "block {lba} reads back wrong"
            );
        }
    }
    client.disconnect();
}

fn events(node: &TestNode, code: &str) -> Vec<String> {
    rest_unix::list(&node.mgmt_socket(), "events", &format!("code=eq:{code}"))
        .iter()
        .map(|event| event["description"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn rss_kib(node: &TestNode) -> u64 {
    let pid = node.pid().expect("the node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The shipped model with its DRAM scaled down further (see the module doc).
fn scaled_model(dir: &Path) -> std::path::PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/infinibox-f4300.toml");
    let text = std::fs::read_to_string(&shipped).expect("the full-size model");
    assert!(text.contains("\ndram_scale = 0.001\n"), "{text}");
    let path = dir.join("f4300-scaled.toml");
    std::fs::write(
        &path,
        text.replace("\ndram_scale = 0.001\n", "\ndram_scale = 0.0001\n"),
    )
    .unwrap();
    path
}

#[test]
fn the_full_size_model_boots_fails_a_drive_rebuilds_and_reads_back() {
    let models = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut node = TestNode::start_with_model(scaled_model(models.path()));
    let boot = started.elapsed();
    let boot_rss = rss_kib(&node);
    println!(
        "full-size model: booted in {:.2} s, RSS {} MiB",
        boot.as_secs_f64(),
        boot_rss / 1024
    );
    node.pool_and_volume("p", "100G", "v", "1G");
    write(&node, 0..BLOCKS, 1);

    // The drive fails every read and write from now on, as a dead drive does; more
    // writes make rows land on it until one meets the error and the node fails it.
    for op in ["read", "write"] {
        rest_unix::inject_fault(
            &node.mgmt_socket(),
            &format!(r#"{{"device": "{FAILED_DRIVE}", "op": "{op}", "error": "EIO"}}"#),
        );
    }
    let half = BLOCKS / 2;
    let mut rounds = 0;
    while events(&node, "DRIVE_FAILED").is_empty() {
        rounds += 1;
        assert!(
            rounds <= 6,
            "no row write met {FAILED_DRIVE} in 6 rounds:\n{}",
            node.log_text()
        );
        write(&node, 0..half, 1 + rounds);
    }
    let version_of = |lba: u64| if lba < half { 1 + rounds } else { 1 };
    let failed = events(&node, "DRIVE_FAILED");
    assert!(failed[0].contains(FAILED_DRIVE), "{failed:?}");

    let deadline = Instant::now() + Duration::from_secs(40);
    let completed = loop {
        let completed = events(&node, "REBUILD_COMPLETED");
        if !completed.is_empty() {
            break completed;
        }
        assert!(
            Instant::now() < deadline,
            "no REBUILD_COMPLETED within 40 s; events: {:?}\n{}",
            events(&node, "REBUILD_STARTED"),
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    read_back(&node, version_of);
    let rss = rss_kib(&node);
    println!("DRIVE_FAILED: {}", failed[0]);
    println!("REBUILD_STARTED: {:?}", events(&node, "REBUILD_STARTED"));
    println!("REBUILD_COMPLETED: {}", completed[0]);
    println!("RSS after writing and rebuilding: {} MiB", rss / 1024);

    // A cold cache: every block now comes from the drives, the failed one's units from
    // their spare cells.
    node.stop();
    node.restart();
    read_back(&node, version_of);
    node.stop();
}
