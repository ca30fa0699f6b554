//! Space: a volume can be rewritten many times over its pool's size (segment cleaning
//! reclaims overwritten space and moves live blocks), everything reads back after a kill -9
//! and restart, and a full pool answers ENOSPC without damaging what it holds.

mod common;

use common::TestNode;
use common::nbd_client::NbdClient;

const BLOCK: usize = 4096;

fn fill(lba: u64, version: u32, out: &mut [u8]) {
    let mut state = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(version) ^ 0x1234_5678;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

#[test]
fn rewriting_many_times_the_pool_size_reclaims_space() {
    let mut node = TestNode::start();
    // The CI model's array holds 504 MiB: a nearly full 400 MiB pool forces cleaning.
    node.pool_and_volume("pool", "400M", "vol", "360M");
    let socket = node.nbd_socket();
    let mut client = NbdClient::connect(&socket, "vol").unwrap();
    let blocks = client.size / BLOCK as u64;
    let mut versions = vec![0u32; blocks as usize];
    let mut buf = vec![0u8; 64 * 1024];
    // Fill the whole volume: every segment holds cold, live data.
    for first in (0..blocks).step_by(16) {
        for i in 0..16 {
            fill(
                first + i,
                1,
                &mut buf[i as usize * BLOCK..(i as usize + 1) * BLOCK],
            );
            versions[(first + i) as usize] = 1;
        }
        client.write(first * BLOCK as u64, &buf, 0).unwrap();
    }
    // Rewrite a hot quarter, scattered, until twice the pool size has been written in all.
    let hot = blocks / 4;
    let mut state = 99u64;
    let mut written = blocks * BLOCK as u64;
    let target = 2 * (400u64 << 20);
    while written < target {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let first = (state % (hot / 4)) * 4 * 3 % (blocks - 4);
        let version = versions[first as usize] + 1;
        for i in 0..4 {
            fill(
                first + i,
                version,
                &mut buf[i as usize * BLOCK..(i as usize + 1) * BLOCK],
            );
            versions[(first + i) as usize] = version;
        }
        if let Err(err) = client.write(first * BLOCK as u64, &buf[..4 * BLOCK], 0) {
            panic!(
                "hot write at block {first} failed after {written} bytes: {err}\n{}",
                node.log_text()
            );
        }
        written += 4 * BLOCK as u64;
    }
    client.flush().unwrap();
    let metrics = node.metrics();
    assert!(
        metrics["troika_media_blocks_written_total"] * BLOCK as u64 > 400 << 20,
        "the test did not write more than the pool through to the array: {metrics:?}"
    );
    assert!(
        metrics["troika_cleaner_relocated_blocks_total"] > 0,
        "the cleaner never moved a live block: {metrics:?}"
    );
    node.restart();
    let mut client = NbdClient::connect(&socket, "vol").unwrap();
    let mut expected = vec![0u8; BLOCK];
    for first in (0..blocks).step_by(16) {
        client.read(first * BLOCK as u64, &mut buf).unwrap();
        for i in 0..16u64 {
            fill(first + i, versions[(first + i) as usize], &mut expected);
            assert!(
                buf[i as usize * BLOCK..(i as usize + 1) * BLOCK] == expected[..],
                "block {} differs after cleaning and restart",
                first + i
            );
        }
    }
}

#[test]
fn a_full_pool_answers_enospc_and_keeps_its_data() {
    let node = TestNode::start();
    node.cli_ok(&[
        "pool",
        "create",
        "small",
        "--size",
        "8M",
        "--virtual-size",
        "64M",
    ]);
    node.cli_ok(&["vol", "create", "thin", "--pool", "small", "--size", "64M"]);
    let mut client = NbdClient::connect(&node.nbd_socket(), "thin").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut accepted = 0u64;
    let mut refused = None;
    for mib in 0..64u64 {
        fill(mib, 7, &mut buf);
        match client.write(mib << 20, &buf, 0) {
            Ok(()) => accepted += 1,
            Err(err) => {
                refused = Some(err.raw_os_error());
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(Some(28)),
        "expected ENOSPC once the 8 MiB pool is full"
    );
    assert!(accepted >= 7, "only {accepted} MiB fit in an 8 MiB pool");
    client.flush().unwrap();
    let mut back = vec![0u8; 1 << 20];
    for mib in 0..accepted {
        fill(mib, 7, &mut buf);
        client.read(mib << 20, &mut back).unwrap();
        assert!(back == buf, "MiB {mib} changed after the pool filled up");
    }
    // Trimming gives the space back.
    client.trim(0, 4 << 20).unwrap();
    fill(63, 7, &mut buf);
    client.write(63 << 20, &buf, 0).unwrap();
}
