//! What the InfiniRAID tests share: the RAID model, drive events read from the event log,
//! fault rules that fail or slow drives, and volumes filled with blocks that name
//! themselves (so a block found anywhere, on a drive file or in a read, says which it is).
//!
//! Included with `#[path = "common/raid.rs"] mod raid;` next to `mod common;` and
//! `mod rest_unix;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use troika::layout::placement::{DEFAULT_SEED, Placement, PlacementKind};

use super::common::TestNode;
use super::common::nbd_client::NbdClient;
use super::rest_unix;

/// The RAID model's shape (hw/ci-raid.toml).
pub const DRIVES: usize = 10;
pub const WIDTH: usize = 6;
pub const DATA: usize = 4;
pub const SPARE: usize = 2;
pub const UNIT: u64 = 64 * 1024;
pub const DRIVE_BYTES: u64 = 96 << 20;

pub const BLOCK: usize = 4096;
/// Blocks per NBD request when filling or reading a volume.
pub const CHUNK_BLOCKS: u64 = 64;
/// The first bytes of every block the tests write.
pub const MAGIC: &[u8; 8] = b"RAIDTEST";

/// `hw/ci-raid.toml`: 4+2 declustered over 10 drives of 96M, two drives' worth of spare.
pub fn raid_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/ci-raid.toml")
}

/// The RAID model with a simulated volatile write cache of `cache` on every device (for
/// power cuts), written into `dir`.
pub fn cached_raid_model(dir: &Path, cache: &str) -> PathBuf {
    let text = std::fs::read_to_string(raid_model()).expect("read hw/ci-raid.toml");
    let mut model = String::new();
    for line in text.lines() {
        if line.starts_with("name = ") && !model.contains("name = ") {
            model.push_str("name = \"troika-ci-raid-cached\"\n");
            continue;
        }
        model.push_str(line);
        model.push('\n');
        if line.starts_with("path = ") {
            model.push_str(&format!("write_cache = \"{cache}\"\n"));
        }
    }
    let path = dir.join("ci-raid-cached.toml");
    std::fs::write(&path, model).expect("write the model");
    path
}

/// Block `lba` of pattern `tag`: the magic, the LBA, the tag, then bytes derived from both.
pub fn block(lba: u64, tag: u8) -> Vec<u8> {
    let mut data = vec![0u8; BLOCK];
    data[..8].copy_from_slice(MAGIC);
    data[8..16].copy_from_slice(&lba.to_le_bytes());
    data[16] = tag;
    let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(tag);
    for chunk in data[24..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// The LBA and tag of a block this module wrote, if `data` is one.
pub fn identify(data: &[u8]) -> Option<(u64, u8)> {
    if data.len() < BLOCK || &data[..8] != MAGIC {
        return None;
    }
    let lba = u64::from_le_bytes(data[8..16].try_into().ok()?);
    let tag = data[16];
    (data[..BLOCK] == block(lba, tag)[..]).then_some((lba, tag))
}

/// Writes blocks `0..blocks` of `volume` with pattern `tag` (those for which `pick` says
/// yes), then flushes.
pub fn fill(node: &TestNode, volume: &str, blocks: u64, tag: u8, pick: &dyn Fn(u64) -> bool) {
    let mut client = NbdClient::connect(&node.nbd_socket(), volume).expect("connect");
    for lba in (0..blocks).filter(|&lba| pick(lba)) {
        client
            .write(lba * BLOCK as u64, &block(lba, tag), 0)
            .unwrap_or_else(|e| panic!("write block {lba} of {volume}: {e}"));
    }
    client.flush().expect("flush");
    client.disconnect();
}

/// Writes blocks `0..blocks` of `volume` with pattern `tag`, 64 blocks per request, then
/// flushes.
pub fn fill_all(node: &TestNode, volume: &str, blocks: u64, tag: u8) {
    let mut client = NbdClient::connect(&node.nbd_socket(), volume).expect("connect");
    let mut chunk = Vec::with_capacity(CHUNK_BLOCKS as usize * BLOCK);
    for first in (0..blocks).step_by(CHUNK_BLOCKS as usize) {
        chunk.clear();
        for lba in first..(first + CHUNK_BLOCKS).min(blocks) {
            chunk.extend_from_slice(&block(lba, tag));
        }
        client
            .write(first * BLOCK as u64, &chunk, 0)
            .unwrap_or_else(|e| panic!("write at block {first} of {volume}: {e}"));
    }
    client.flush().expect("flush");
    client.disconnect();
}

/// What one read of every block found.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// Blocks that answered an I/O error (EIO), ascending.
    pub errors: Vec<u64>,
    /// Blocks that read back as something other than `expected` said, with what they held.
    pub wrong: Vec<(u64, Option<(u64, u8)>)>,
}

/// Reads blocks `0..blocks` of `volume`, 64 at a time; a request that fails is read again
/// block by block, so every block is either compared with `block(lba, expected(lba))` or
/// listed as an error. Other failures (the connection drops) panic with the node's log.
pub fn read_back(
    node: &TestNode,
    volume: &str,
    blocks: u64,
    expected: &dyn Fn(u64) -> u8,
) -> ReadBack {
    read_back_range(node, volume, 0..blocks, expected)
}

/// [`read_back`] of the blocks in `range` only.
pub fn read_back_range(
    node: &TestNode,
    volume: &str,
    range: std::ops::Range<u64>,
    expected: &dyn Fn(u64) -> u8,
) -> ReadBack {
    let blocks = range.end;
    let mut client = NbdClient::connect(&node.nbd_socket(), volume).expect("connect");
    let mut result = ReadBack::default();
    let mut buf = vec![0u8; CHUNK_BLOCKS as usize * BLOCK];
    let check = |lba: u64, got: &[u8], result: &mut ReadBack| {
        if got != block(lba, expected(lba)).as_slice() {
            result.wrong.push((lba, identify(got)));
        }
    };
    for first in range.step_by(CHUNK_BLOCKS as usize) {
        let count = CHUNK_BLOCKS.min(blocks - first);
        let len = count as usize * BLOCK;
        match client.read(first * BLOCK as u64, &mut buf[..len]) {
            Ok(()) => {
                for (i, got) in buf[..len].chunks(BLOCK).enumerate() {
                    check(first + i as u64, got, &mut result);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                for lba in first..first + count {
                    let one = &mut buf[..BLOCK];
                    match client.read(lba * BLOCK as u64, one) {
                        Ok(()) => check(lba, one, &mut result),
                        Err(e) if e.raw_os_error() == Some(libc::EIO) => result.errors.push(lba),
                        Err(e) => panic!("read block {lba} of {volume}: {e}\n{}", node.log_text()),
                    }
                }
            }
            Err(e) => panic!(
                "read at block {first} of {volume}: {e}\n{}",
                node.log_text()
            ),
        }
    }
    client.disconnect();
    result
}

pub fn placement() -> Placement {
    Placement::new(
        PlacementKind::Declustered { seed: DEFAULT_SEED },
        DRIVES,
        WIDTH,
        WIDTH - DATA,
        SPARE,
    )
    .expect("the placement of hw/ci-raid.toml")
}

/// Where each block of the volume sits: LBA to (row, data unit), found by reading every data
/// cell of the drive files (the node stopped, everything destaged). Panics unless each of
/// `0..blocks` is found exactly once, with tag `tag`.
pub fn locate_blocks(
    data: &Path,
    placement: &Placement,
    blocks: u64,
    tag: u8,
) -> BTreeMap<u64, (u64, usize)> {
    let files: Vec<File> = (0..DRIVES)
        .map(|d| File::open(data.join(format!("nlsas{d}.img"))).expect("open a drive file"))
        .collect();
    let cells = DRIVE_BYTES / UNIT;
    let mut found: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    let mut buf = vec![0u8; UNIT as usize];
    for row in 0..placement.rows_for(cells) {
        for unit in 0..DATA {
            let cell = placement.cell(row, unit);
            if cell.index >= cells {
                continue;
            }
            files[cell.drive]
                .read_exact_at(&mut buf, cell.index * UNIT)
                .expect("read a drive file");
            for block in buf.chunks(BLOCK) {
                let Some((lba, got)) = identify(block) else {
                    continue;
                };
                assert_eq!(got, tag, "block {lba} holds tag {got}, not {tag}");
                let before = found.insert(lba, (row, unit));
                assert!(
                    before.is_none(),
                    "block {lba} found twice on the drives ({before:?} and row {row} unit {unit}): stale copies make the prediction ambiguous"
                );
            }
        }
    }
    let missing: Vec<u64> = (0..blocks).filter(|lba| !found.contains_key(lba)).collect();
    assert!(
        missing.is_empty(),
        "{} block(s) not on the NL-SAS drives after a clean stop (first {:?})",
        missing.len(),
        &missing[..missing.len().min(8)]
    );
    found
}

/// The rows whose data units hold any block this module wrote (any LBA, any tag; stale
/// copies included), read from the home cells on the drive files of a stopped node (a drive
/// failed by injected faults keeps its file as it was).
pub fn rows_holding_blocks(data: &Path, placement: &Placement) -> std::collections::BTreeSet<u64> {
    let files: Vec<File> = (0..DRIVES)
        .map(|d| File::open(data.join(format!("nlsas{d}.img"))).expect("open a drive file"))
        .collect();
    let cells = DRIVE_BYTES / UNIT;
    let mut rows = std::collections::BTreeSet::new();
    let mut buf = vec![0u8; UNIT as usize];
    for row in 0..placement.rows_for(cells) {
        for unit in 0..DATA {
            let cell = placement.cell(row, unit);
            if cell.index >= cells {
                continue;
            }
            files[cell.drive]
                .read_exact_at(&mut buf, cell.index * UNIT)
                .expect("read a drive file");
            if buf.chunks(BLOCK).any(|block| identify(block).is_some()) {
                rows.insert(row);
                break;
            }
        }
    }
    rows
}

/// Events with `code`, oldest first.
pub fn events(node: &TestNode, code: &str) -> Vec<Value> {
    rest_unix::list(&node.mgmt_socket(), "events", &format!("code=eq:{code}"))
}

/// Descriptions of the events with `code`, oldest first.
pub fn descriptions(node: &TestNode, code: &str) -> Vec<String> {
    events(node, code)
        .iter()
        .map(|event| event["description"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits up to `timeout` until at least `count` events with `code` whose description
/// contains `needle` (in any case) are logged; returns their descriptions or panics with what was logged.
pub fn wait_events(
    node: &TestNode,
    code: &str,
    needle: &str,
    count: usize,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found: Vec<String> = descriptions(node, code)
            .into_iter()
            .filter(|text| text.to_lowercase().contains(&needle.to_lowercase()))
            .collect();
        if found.len() >= count {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "{count} {code} event(s) naming {needle:?} not logged in {timeout:?} (found {found:?}); drive events: {}\nlog tail:\n{}",
                drive_events(node),
                tail(&node.log_text(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every drive event so far, one line each (for failure messages).
pub fn drive_events(node: &TestNode) -> String {
    let codes = [
        "DRIVE_FAILED",
        "REBUILD_STARTED",
        "REBUILD_COMPLETED",
        "DRIVE_COPYBACK_COMPLETED",
        "ROWS_LOST",
        "DATA_UNRECOVERABLE",
    ];
    let mut all: Vec<(u64, String)> = codes
        .iter()
        .flat_map(|code| {
            events(node, code).into_iter().map(|event| {
                (
                    event["seq_num"].as_u64().unwrap_or(0),
                    format!(
                        "{} {}",
                        event["code"].as_str().unwrap_or(""),
                        event["description"].as_str().unwrap_or("")
                    ),
                )
            })
        })
        .collect();
    all.sort();
    let lines: Vec<String> = all.into_iter().map(|(_, line)| line).collect();
    format!("\n  {}", lines.join("\n  "))
}

/// The sequence number of the first event with `code` whose description contains `needle`
/// (in any case).
pub fn first_seq(node: &TestNode, code: &str, needle: &str) -> Option<u64> {
    events(node, code)
        .iter()
        .filter(|event| {
            let text = event["description"].as_str().unwrap_or("").to_lowercase();
            text.contains(&needle.to_lowercase())
        })
        .filter_map(|event| event["seq_num"].as_u64())
        .min()
}

/// `"Drive 3 (nlsas3)"`: how drive events name drive `index` of the RAID model.
pub fn drive_name(index: usize) -> String {
    format!("drive {index} (nlsas{index})")
}

/// Fails every `op` (`read`, `write`, `fsync`) of NL-SAS drive `index` with EIO.
pub fn eio(node: &TestNode, index: usize, op: &str) {
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        &format!(r#"{{"device": "nlsas{index}", "op": "{op}", "error": "EIO"}}"#),
    );
}

/// Delays every `op` of NL-SAS drive `index` by `ms` milliseconds.
pub fn delay(node: &TestNode, index: usize, op: &str, ms: u64) {
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        &format!(r#"{{"device": "nlsas{index}", "op": "{op}", "delay_ms": {ms}}}"#),
    );
}

/// Removes every fault rule.
pub fn clear_faults(node: &TestNode) {
    rest_unix::ok(
        &node.mgmt_socket(),
        "DELETE",
        "/api/rest/faults?approved=true",
        None,
    );
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
