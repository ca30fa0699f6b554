//! Crash test (DESIGN.md invariant 2): cycles of write load with periodic FLUSH, kill -9 at
//! a random moment, restart, and a check that every block reads back as the value it had at
//! the last completed FLUSH or as one written after it — whole, never torn or mixed.

mod common;
#[path = "common/flush_oracle.rs"]
mod flush_oracle;
#[path = "common/iscsi_client.rs"]
mod iscsi_client;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;
use flush_oracle::{Rng, Writer};

#[test]
fn flushed_writes_survive_kill_9() {
    let cycles: u64 = std::env::var("TROIKA_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut node = TestNode::start();
    node.pool_and_volume("crashpool", "200M", "crashvol", "64M");
    let socket = node.nbd_socket();
    let writers: Vec<Arc<Writer>> = (0..2).map(|i| Writer::new(i * 1024, 1024)).collect();
    let mut rng = Rng(0x5EED_0001);
    let mut seq = 1u64;
    let started = Instant::now();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(i, writer)| {
                let writer = writer.clone();
                let socket = socket.clone();
                let stop = stop.clone();
                let seed = rng.next();
                let base = seq + (i as u64 + 1) * 1_000_000_000;
                std::thread::spawn(move || match NbdClient::connect(&socket, "crashvol") {
                    Ok(mut client) => writer.run(&mut client, seed, base, &stop),
                    Err(_) => base,
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + rng.below(1500)));
        node.kill9();
        stop.store(true, Ordering::Release);
        for handle in handles {
            seq = seq.max(handle.join().unwrap() % 1_000_000_000 + 1);
        }
        seq += 10_000_000_000;
        node.restart();
        let mut client = NbdClient::connect(&socket, "crashvol").expect("reconnect after restart");
        for writer in &writers {
            if let Err(wrong) = writer.verify(&mut client) {
                panic!("cycle {cycle}: {wrong}\n{}", node.log_text());
            }
        }
        client.disconnect();
    }
    let log = node.log_text();
    assert!(
        log.contains("recovered from media"),
        "recovery was not logged:\n{log}"
    );
    for line in log
        .lines()
        .filter(|line| line.contains("recovered from media"))
    {
        eprintln!("{line}");
    }
    eprintln!("{cycles} crash cycles in {:?}", started.elapsed());
}
