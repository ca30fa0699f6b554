//! A slow NL-SAS drive does not stall the node (issue "Faults"): with latency spikes and
//! then a long stall injected on one drive through the REST API, hosts' reads and writes of
//! cached data keep completing. The test prints the p50/p99 of 4 KiB reads and writes on
//! cached data without a fault, with 200 ms spikes on every write and read of the drive,
//! and while the drive answers nothing for 3 s.
//!
//! The claim checked is progress, not speed: while the drive is stalled the host completes
//! at least a few hundred operations (a stalled node would complete none).

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;

const BLOCK: usize = 4096;
/// The working set: 8 MiB, far inside the CI model's DRAM cache.
const BLOCKS: u64 = 2048;

/// Alternating 4 KiB writes and reads over the working set for `window` or `max_ops`;
/// returns each operation's latency.
fn cached_io(client: &mut NbdClient, window: Duration, max_ops: usize, seed: u64) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(max_ops);
    let mut buf = vec![0u8; BLOCK];
    let mut state = seed | 1;
    let started = Instant::now();
    while started.elapsed() < window && latencies.len() < max_ops {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state % BLOCKS) * BLOCK as u64;
        let at = Instant::now();
        if latencies.len() % 2 == 0 {
            buf[..8].copy_from_slice(&state.to_le_bytes());
            client.write(offset, &buf, 0).expect("write on cached data");
        } else {
            client.read(offset, &mut buf).expect("read on cached data");
        }
        latencies.push(at.elapsed());
    }
    latencies
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn a_slow_or_stalled_drive_does_not_stall_cached_io() {
    let mut node = TestNode::start();
    node.pool_and_volume("slowpool", "200M", "slowvol", "64M");
    let socket = node.nbd_socket();
    let mut client = NbdClient::connect(&socket, "slowvol").expect("connect");
    // Fill the working set and let the node destage it, so the drive has work queued
    // when it turns slow.
    let mut fill = vec![0xA5u8; 64 * BLOCK];
    for chunk in 0..BLOCKS / 64 {
        fill[..8].copy_from_slice(&chunk.to_le_bytes());
        client
            .write(chunk * 64 * BLOCK as u64, &fill, 0)
            .expect("fill");
    }
    client.flush().expect("flush");

    let healthy = cached_io(&mut client, Duration::from_secs(3), 20_000, 1);

    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas1", "op": "write", "delay_ms": 200}"#,
    );
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas1", "op": "read", "delay_ms": 200}"#,
    );
    let spiky = cached_io(&mut client, Duration::from_secs(3), 20_000, 2);

    rest_unix::ok(
        &node.mgmt_socket(),
        "DELETE",
        "/api/rest/faults?approved=true",
        None,
    );
    rest_unix::inject_fault(
        &node.mgmt_socket(),
        r#"{"device": "nlsas1", "op": "write", "stall_ms": 3000, "nth": 1}"#,
    );
    // Make sure the stall begins: dirty data must go to the drive.
    let mut burst = vec![0x5Au8; 64 * BLOCK];
    for chunk in 0..BLOCKS / 64 {
        burst[..8].copy_from_slice(&(chunk + 1000).to_le_bytes());
        client
            .write(chunk * 64 * BLOCK as u64, &burst, 0)
            .expect("burst");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rest_unix::list(&node.mgmt_socket(), "faults", "")
        .first()
        .is_none_or(|rule| rule["fired"].as_u64() == Some(0))
    {
        assert!(
            Instant::now() < deadline,
            "the node did not write to nlsas1 within 10 s\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stalled = cached_io(&mut client, Duration::from_secs(2), 20_000, 3);

    for (name, latencies) in [
        ("no fault", &healthy),
        ("200 ms spikes on nlsas1", &spiky),
        ("nlsas1 stalled 3 s", &stalled),
    ] {
        eprintln!(
            "{name:24}: {:6} ops, p50 {:?}, p99 {:?}, max {:?}",
            latencies.len(),
            percentile(latencies, 50.0),
            percentile(latencies, 99.0),
            latencies.iter().max().copied().unwrap_or_default()
        );
    }
    assert!(
        stalled.len() >= 200,
        "while one drive stalled, hosts completed only {} operations on cached data in 2 s\n{}",
        stalled.len(),
        node.log_text()
    );
    assert!(
        spiky.len() >= 200,
        "with 200 ms spikes on one drive, hosts completed only {} operations on cached data in 3 s",
        spiky.len()
    );
    client.disconnect();
    node.stop();
}
