//! EXTENDED COPY inside the node, through the real binary: a host's copy of 8 MiB within
//! its LUN (what VMware sends to clone a virtual disk) shares the source's blocks instead
//! of writing new ones, so the pool's allocated space does not grow; the copy reads back
//! over NBD, is independent of later writes to the source, and survives kill -9 once
//! SYNCHRONIZE CACHE has answered. A copy to a volume of another family moves the bytes
//! (and takes their space); both copies' times are printed side by side.

mod common;
#[path = "common/iscsi.rs"]
mod iscsi;
#[path = "common/iscsi_client.rs"]
mod iscsi_client;

use std::time::{Duration, Instant};

use common::nbd_client::NbdClient;
use common::{TestNode, ci_model};
use iscsi::{api, create_host, map_volume, target_name};
use iscsi_client::{Auth, Session};
use serde_json::json;

const HOST: &str = "iqn.2026-11.test.example:cloner";
const COPY_BYTES: u64 = 8 << 20;
/// Where the copy goes: 16 MiB into the LUN.
const DESTINATION: u64 = 16 << 20;

fn pattern(offset: u64, out: &mut [u8]) {
    for (index, chunk) in out.chunks_mut(8).enumerate() {
        let word = (offset + index as u64 * 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed;
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

fn allocated(node: &TestNode) -> u64 {
    let pools = api(node, "GET", "/api/rest/pools?name=eq:pool1", json!(null));
    pools[0]["allocated_physical_space"]
        .as_u64()
        .expect("allocated_physical_space")
}

/// Waits until the pool's allocated space stops changing (idle destage has run).
fn settled_allocation(node: &TestNode) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = allocated(node);
    let mut stable = 0;
    while stable < 4 {
        assert!(Instant::now() < deadline, "destage did not settle");
        std::thread::sleep(Duration::from_millis(500));
        let now = allocated(node);
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    last
}

/// The LU's NAA designator from VPD page 0x83.
fn naa(session: &mut Session, lun: u64) -> Vec<u8> {
    let inquiry = [0x12, 0x01, 0x83, 0x01, 0x00, 0x00];
    let page = session.command(lun, &inquiry, &[], 256);
    assert_eq!(page.status, 0, "{page:?}");
    let mut at = 4;
    while at + 4 <= page.data.len() {
        let length = usize::from(page.data[at + 3]);
        if page.data[at + 1] & 0x0F == 0x03 && page.data[at + 1] & 0x30 == 0 {
            return page.data[at + 4..at + 4 + length].to_vec();
        }
        at += 4 + length;
    }
    panic!("no NAA designator in VPD 0x83: {page:?}");
}

/// One LID1 EXTENDED COPY of `blocks` 512-byte blocks from `from` of the LU named by
/// `source` to `to` of the LU named by `destination` (the same LU when they are equal).
fn extended_copy(
    session: &mut Session,
    source: &[u8],
    destination: &[u8],
    from: u64,
    to: u64,
    blocks: u16,
) -> Duration {
    let units: Vec<&[u8]> = if source == destination {
        vec![source]
    } else {
        vec![source, destination]
    };
    let mut list = vec![0u8; 16];
    list[1] = 0x18; // LIST ID USAGE 11b: no list identifier
    list[2..4].copy_from_slice(&(32 * units.len() as u16).to_be_bytes());
    list[8..12].copy_from_slice(&28u32.to_be_bytes());
    for naa in &units {
        let mut target = [0u8; 32];
        target[0] = 0xE4;
        target[4] = 0x01; // binary
        target[5] = 0x03; // NAA, associated with the LU
        target[7] = naa.len() as u8;
        target[8..8 + naa.len()].copy_from_slice(naa);
        target[29..32].copy_from_slice(&512u32.to_be_bytes()[1..]);
        list.extend_from_slice(&target);
    }
    let mut segment = [0u8; 28];
    segment[0] = 0x02; // block to block
    segment[2..4].copy_from_slice(&24u16.to_be_bytes());
    segment[6..8].copy_from_slice(&(units.len() as u16 - 1).to_be_bytes());
    segment[10..12].copy_from_slice(&blocks.to_be_bytes());
    segment[12..20].copy_from_slice(&from.to_be_bytes());
    segment[20..28].copy_from_slice(&to.to_be_bytes());
    list.extend_from_slice(&segment);
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    let started = Instant::now();
    let result = session.command(1, &cdb, &list, 0);
    let took = started.elapsed();
    assert!(result.status == 0, "EXTENDED COPY: {result:?}");
    took
}

fn read_nbd(node: &TestNode, offset: u64, len: usize) -> Vec<u8> {
    read_export(node, "clones", offset, len)
}

fn read_export(node: &TestNode, export: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut client = NbdClient::connect(&node.nbd_socket(), export).unwrap();
    let mut buf = vec![0u8; len];
    client.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn extended_copy_shares_blocks_and_survives_kill_9() {
    let mut node = TestNode::start_with_iscsi(ci_model(), 3);
    node.pool_and_volume("pool1", "400M", "clones", "64M");
    node.cli_ok(&[
        "vol",
        "create",
        "elsewhere",
        "--pool",
        "pool1",
        "--size",
        "64M",
    ]);
    let host = create_host(&node, "cloner", &[HOST]);
    map_volume(&node, host, "clones", 1);
    map_volume(&node, host, "elsewhere", 2);
    let mut source = vec![0u8; COPY_BYTES as usize];
    pattern(0, &mut source);
    {
        let mut client = NbdClient::connect(&node.nbd_socket(), "clones").unwrap();
        for (index, chunk) in source.chunks(1 << 20).enumerate() {
            client.write(index as u64 * (1 << 20), chunk, 0).unwrap();
        }
        client.flush().unwrap();
    }
    let before = settled_allocation(&node);
    assert!(before >= COPY_BYTES, "the source is on the array: {before}");

    let target = target_name(&node);
    let mut session = Session::login(node.iscsi_ports[1], HOST, Some(&target), Auth::None)
        .unwrap_or_else(|refused| panic!("login refused: {refused:?}"));
    for _ in 0..8 {
        if session.command(1, &[0u8; 6], &[], 0).status == 0 {
            break;
        }
    }
    let clones = naa(&mut session, 1);
    let blocks = (COPY_BYTES / 512) as u16;
    let by_reference = extended_copy(&mut session, &clones, &clones, 0, DESTINATION / 512, blocks);
    let sync = session.command(1, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(sync.status, 0, "SYNCHRONIZE CACHE: {sync:?}");

    assert!(
        read_nbd(&node, DESTINATION, COPY_BYTES as usize) == source,
        "the copy reads back over NBD"
    );
    let after = settled_allocation(&node);
    assert!(
        after < before + (1 << 20),
        "an 8 MiB copy by reference allocated {} bytes",
        after - before
    );
    // To a volume of another family the bytes move, and take their space.
    for _ in 0..8 {
        if session.command(2, &[0u8; 6], &[], 0).status == 0 {
            break;
        }
    }
    let elsewhere = naa(&mut session, 2);
    let by_bytes = extended_copy(&mut session, &clones, &elsewhere, 0, 0, blocks);
    assert!(read_export(&node, "elsewhere", 0, COPY_BYTES as usize) == source);
    let moved = settled_allocation(&node);
    assert!(
        moved >= after + COPY_BYTES - (1 << 20),
        "a copy between families moves bytes: {after} -> {moved}"
    );
    eprintln!(
        "EXTENDED COPY of 8 MiB: by reference {:.1} ms (allocated {} KiB), by bytes to another family {:.1} ms (allocated {} KiB)",
        by_reference.as_secs_f64() * 1000.0,
        (after - before) / 1024,
        by_bytes.as_secs_f64() * 1000.0,
        (moved - after) / 1024
    );

    drop(session);
    node.restart();
    assert!(
        read_nbd(&node, DESTINATION, COPY_BYTES as usize) == source,
        "the copy survives kill -9"
    );
    // Writing the source afterwards leaves the copy as it was.
    {
        let mut client = NbdClient::connect(&node.nbd_socket(), "clones").unwrap();
        client.write(0, &vec![0xEE; 1 << 20], 0).unwrap();
        client.flush().unwrap();
    }
    assert!(read_nbd(&node, DESTINATION, COPY_BYTES as usize) == source);
    assert!(read_nbd(&node, 0, 4096).iter().all(|byte| *byte == 0xEE));
}
