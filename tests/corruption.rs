//! Bit rot on the NL-SAS drives: blocks damaged behind the node's back are detected by their
//! checksums and rebuilt from parity (one or two per row), and a block that cannot be
//! rebuilt is an I/O error, never wrong bytes.
//!
//! Each case writes 16 MiB of seeded random data, flushes, stops the node cleanly (which
//! destages everything onto `nlsas0.img`..`nlsas5.img`), finds where each 4 KiB block landed
//! by searching the data devices for its content, damages chosen copies in the files, and
//! restarts the node. A block's content is unique (random data), and only blocks found
//! exactly once are damaged, so every damaged block is the live copy a read must use.

mod common;
#[path = "common/testdata.rs"]
mod testdata;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;

use common::TestNode;
use common::nbd_client::{CMD_READ, NbdClient};
use testdata::XorShift;

const BLOCK: usize = 4096;
const MIB: usize = 1 << 20;
const WRITTEN: usize = 16 * MIB;
const BLOCKS: usize = WRITTEN / BLOCK;
/// The CI model: 4 data devices, P on nlsas4, Q on nlsas5, 64 KiB units.
const DATA_DEVICES: usize = 4;
const UNIT: u64 = 64 * 1024;
const P_DEVICE: usize = 4;
const Q_DEVICE: usize = 5;

/// Where one logical block lives on the array.
#[derive(Clone, Copy, Debug)]
struct Location {
    lba: usize,
    device: usize,
    offset: u64,
}

impl Location {
    fn row(&self) -> u64 {
        self.offset / UNIT
    }
}

/// A node with 16 MiB of known data written, flushed and destaged, stopped.
struct Damaged {
    node: TestNode,
    data: Vec<u8>,
    /// Live locations of the written blocks, found exactly once on the data devices.
    locations: Vec<Location>,
}

fn device_path(node: &TestNode, device: usize) -> std::path::PathBuf {
    node.data().join(format!("nlsas{device}.img"))
}

fn prepare(seed: u64) -> Damaged {
    let mut node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    // These tests are about the NL-SAS copies and their repair: keep the volume out of
    // the SSD read cache, which would otherwise answer (verified) before the drives.
    node.cli_ok(&["pool", "update", "P", "--ssd", "off"]);
    let data = XorShift::new(seed).bytes(WRITTEN);
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    for (i, chunk) in data.chunks(MIB).enumerate() {
        client.write((i * MIB) as u64, chunk, 0).expect("write");
    }
    client.flush().expect("flush");
    client.disconnect();
    node.stop();

    // Index the written blocks by their first 16 bytes (random, so unique).
    let index: HashMap<[u8; 16], usize> = data
        .chunks(BLOCK)
        .enumerate()
        .map(|(lba, block)| (block[..16].try_into().unwrap(), lba))
        .collect();
    let mut found: Vec<Vec<Location>> = vec![Vec::new(); BLOCKS];
    let mut buf = vec![0u8; MIB];
    for device in 0..DATA_DEVICES {
        let mut file = File::open(device_path(&node, device)).expect("open device file");
        let mut base = 0u64;
        loop {
            let n = read_full(&mut file, &mut buf);
            if n == 0 {
                break;
            }
            for (i, block) in buf[..n].chunks_exact(BLOCK).enumerate() {
                let key: [u8; 16] = block[..16].try_into().unwrap();
                if let Some(&lba) = index.get(&key)
                    && block == &data[lba * BLOCK..(lba + 1) * BLOCK]
                {
                    found[lba].push(Location {
                        lba,
                        device,
                        offset: base + (i * BLOCK) as u64,
                    });
                }
            }
            base += n as u64;
        }
    }
    let missing = found.iter().filter(|f| f.is_empty()).count();
    assert_eq!(
        missing, 0,
        "{missing} of {BLOCKS} written blocks are not on the data devices after a clean stop"
    );
    let locations = found
        .into_iter()
        .filter(|f| f.len() == 1)
        .map(|f| f[0])
        .collect::<Vec<_>>();
    assert!(
        locations.len() > BLOCKS / 2,
        "too few blocks found exactly once: {}",
        locations.len()
    );
    Damaged {
        node,
        data,
        locations,
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).expect("read device file") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Flips a few bits spread over `len` bytes at `offset` of a device file.
fn flip_bits(node: &TestNode, device: usize, offset: u64, len: usize, seed: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device_path(node, device))
        .expect("open device file for damage");
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .expect("read block to damage");
    let before = buf.clone();
    let mut rng = XorShift::new(seed);
    for _ in 0..(1 + len / 1024) {
        let at = rng.below(len as u64) as usize;
        buf[at] ^= 1 << rng.below(8);
    }
    assert_ne!(buf, before);
    file.write_all_at(&buf, offset)
        .expect("write damaged block");
    file.sync_all().expect("sync device file");
}

/// Reads the whole 16 MiB back and returns the lbas whose 4 KiB block differs.
fn wrong_blocks(client: &mut NbdClient, data: &[u8]) -> Vec<usize> {
    let mut back = vec![0u8; MIB];
    let mut wrong = Vec::new();
    for (i, expected) in data.chunks(MIB).enumerate() {
        client.read((i * MIB) as u64, &mut back).expect("read back");
        for (j, (a, b)) in back.chunks(BLOCK).zip(expected.chunks(BLOCK)).enumerate() {
            if a != b {
                wrong.push(i * MIB / BLOCK + j);
            }
        }
    }
    wrong
}

fn metric(node: &TestNode, name: &str) -> u64 {
    *node
        .metrics()
        .get(name)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[test]
fn single_damaged_blocks_are_repaired_from_parity() {
    let Damaged {
        mut node,
        data,
        locations,
    } = prepare(1);

    // ~50 blocks on distinct rows, round-robin over the four data devices.
    let mut by_device: Vec<Vec<Location>> = vec![Vec::new(); DATA_DEVICES];
    for location in &locations {
        by_device[location.device].push(*location);
    }
    let mut used_rows = std::collections::HashSet::new();
    let mut chosen = Vec::new();
    let mut rng = XorShift::new(11);
    'pick: for round in 0..2000 {
        if chosen.len() == 50 {
            break;
        }
        let candidates = &by_device[round % DATA_DEVICES];
        if candidates.is_empty() {
            continue;
        }
        for _ in 0..20 {
            let candidate = candidates[rng.below(candidates.len() as u64) as usize];
            if used_rows.insert(candidate.row()) {
                chosen.push(candidate);
                continue 'pick;
            }
        }
    }
    assert!(
        chosen.len() >= 40,
        "found only {} rows to damage",
        chosen.len()
    );
    for device in 0..DATA_DEVICES {
        assert!(
            chosen.iter().any(|c| c.device == device),
            "no damage on nlsas{device}"
        );
    }
    for (i, location) in chosen.iter().enumerate() {
        flip_bits(
            &node,
            location.device,
            location.offset,
            BLOCK,
            1000 + i as u64,
        );
    }

    node.restart();
    let repairs_before = metric(&node, "troika_checksum_repairs_total");
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let wrong = wrong_blocks(&mut client, &data);
    assert!(
        wrong.is_empty(),
        "{} blocks read back wrong after single-block damage (first lbas {:?}); damaged {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)],
        chosen.iter().map(|c| c.lba).collect::<Vec<_>>()
    );
    let repairs = metric(&node, "troika_checksum_repairs_total") - repairs_before;
    assert!(
        repairs >= chosen.len() as u64,
        "troika_checksum_repairs_total grew by {repairs}, {} blocks were damaged",
        chosen.len()
    );
    // A second pass is right too (a repaired block is not served damaged from a cache).
    let wrong = wrong_blocks(&mut client, &data);
    assert!(
        wrong.is_empty(),
        "second read pass: {} blocks wrong",
        wrong.len()
    );
    assert_eq!(metric(&node, "troika_unrecoverable_reads_total"), 0);
    client.disconnect();
    // The operator is told: the monitor raises DATA_REPAIRED within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = node.http_get("/api/rest/events?code=eq:DATA_REPAIRED");
        assert_eq!(status, 200, "{body}");
        if body.contains("\"DATA_REPAIRED\"") {
            assert!(body.contains("\"level\":\"WARNING\""), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DATA_REPAIRED event within 10 s: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn two_damaged_blocks_in_a_row_are_repaired_with_p_and_q() {
    let Damaged {
        mut node,
        data,
        locations,
    } = prepare(2);

    // Rows where live blocks sit on at least two different data devices.
    let mut rows: BTreeMap<u64, Vec<Location>> = BTreeMap::new();
    for location in &locations {
        rows.entry(location.row()).or_default().push(*location);
    }
    let mut damaged = Vec::new();
    for (row, blocks) in &rows {
        let first = blocks[0];
        let Some(second) = blocks.iter().find(|b| b.device != first.device) else {
            continue;
        };
        // Same offset inside the unit when possible: the hardest case for the decoder.
        let second = blocks
            .iter()
            .find(|b| b.device != first.device && b.offset == first.offset)
            .unwrap_or(second);
        flip_bits(&node, first.device, first.offset, BLOCK, 2000 + row);
        flip_bits(&node, second.device, second.offset, BLOCK, 3000 + row);
        damaged.push((first.lba, second.lba));
        if damaged.len() == 8 {
            break;
        }
    }
    assert!(
        !damaged.is_empty(),
        "no row with live blocks on two data devices"
    );

    node.restart();
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let wrong = wrong_blocks(&mut client, &data);
    assert!(
        wrong.is_empty(),
        "{} blocks read back wrong after two-per-row damage (first lbas {:?}); damaged pairs {damaged:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let repairs = metric(&node, "troika_checksum_repairs_total");
    assert!(
        repairs >= 2 * damaged.len() as u64,
        "troika_checksum_repairs_total is {repairs}, {} blocks were damaged",
        2 * damaged.len()
    );
    client.disconnect();
}

#[test]
fn an_unrepairable_block_is_an_io_error_not_wrong_data() {
    let Damaged {
        mut node,
        data,
        locations,
    } = prepare(3);

    let victim = locations[locations.len() / 2];
    let row_offset = victim.row() * UNIT;
    flip_bits(&node, victim.device, victim.offset, BLOCK, 4000);
    // P and Q of the row damaged over the whole unit.
    flip_bits(&node, P_DEVICE, row_offset, UNIT as usize, 4001);
    flip_bits(&node, Q_DEVICE, row_offset, UNIT as usize, 4002);
    // Flip every byte of P and Q at the victim's position too, so no decoder can luck out.
    for device in [P_DEVICE, Q_DEVICE] {
        let within = victim.offset - row_offset;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(device_path(&node, device))
            .expect("open parity device");
        let mut buf = vec![0u8; BLOCK];
        file.read_exact_at(&mut buf, row_offset + within)
            .expect("read parity");
        buf.iter_mut().for_each(|b| *b = !*b);
        file.write_all_at(&buf, row_offset + within)
            .expect("write parity");
        file.sync_all().expect("sync parity");
    }

    node.restart();
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let offset = (victim.lba * BLOCK) as u64;
    for attempt in 0..2 {
        let errno = client
            .raw(CMD_READ, 0, offset, BLOCK as u32, &[])
            .expect("read reply");
        assert_eq!(
            errno, 5,
            "attempt {attempt}: read of the unrepairable block at lba {} returned errno {errno}, not EIO",
            victim.lba
        );
    }
    // A bigger read that covers the block fails as a whole.
    let chunk = (offset / MIB as u64) * MIB as u64;
    let errno = client
        .raw(CMD_READ, 0, chunk, MIB as u32, &[])
        .expect("read reply");
    assert_eq!(
        errno, 5,
        "1 MiB read over the unrepairable block returned errno {errno}"
    );

    // Every other block reads right, on this connection and a fresh one.
    let mut back = vec![0u8; BLOCK];
    let mut wrong = Vec::new();
    for lba in (0..BLOCKS).filter(|&l| l != victim.lba) {
        client
            .read((lba * BLOCK) as u64, &mut back)
            .unwrap_or_else(|e| panic!("read lba {lba}: {e}"));
        if back[..] != data[lba * BLOCK..(lba + 1) * BLOCK] {
            wrong.push(lba);
        }
    }
    assert!(
        wrong.is_empty(),
        "blocks read wrong next to an unrepairable one: {wrong:?}"
    );
    assert!(
        testdata::node_alive(node.data()),
        "node died:\n{}",
        node.log_text()
    );
    assert!(metric(&node, "troika_unrecoverable_reads_total") >= 1);
    let mut fresh = NbdClient::connect(&node.nbd_socket(), "V").expect("connect after EIO");
    let errno = fresh
        .raw(CMD_READ, 0, offset, BLOCK as u32, &[])
        .expect("read reply");
    assert_eq!(errno, 5, "fresh connection: errno {errno}");
    fresh.read(0, &mut back).expect("read lba 0");
    assert_eq!(back[..], data[..BLOCK]);
    fresh.disconnect();
    client.disconnect();
}
