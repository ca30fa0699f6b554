//! Crash test (DESIGN.md invariant 2): cycles of write load with periodic FLUSH, kill -9 at
//! a random moment, restart, and a check that every block reads back as the value it had at
//! the last completed FLUSH or as one written after it — whole, never torn or mixed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;

const BLOCK: usize = 4096;
const MAGIC: u32 = 0x7472_6b61;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The bytes of block `lba` at version `seq` (seq 0: zeroes).
fn pattern(lba: u64, seq: u64, out: &mut [u8]) {
    if seq == 0 {
        out.fill(0);
        return;
    }
    let mut rng = Rng(lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq ^ 0xDEAD_BEEF);
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
    }
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&lba.to_le_bytes());
    out[12..20].copy_from_slice(&seq.to_le_bytes());
}

/// Which version a block holds, if it is a whole, valid one.
fn decode(lba: u64, bytes: &[u8]) -> Option<u64> {
    if bytes.iter().all(|&b| b == 0) {
        return Some(0);
    }
    if u32::from_le_bytes(bytes[0..4].try_into().unwrap()) != MAGIC
        || u64::from_le_bytes(bytes[4..12].try_into().unwrap()) != lba
    {
        return None;
    }
    let seq = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let mut expected = vec![0u8; BLOCK];
    pattern(lba, seq, &mut expected);
    (expected == bytes).then_some(seq)
}

/// Per block: the version at the last completed flush, and every version written since.
#[derive(Default, Clone)]
struct BlockModel {
    flushed: u64,
    since: Vec<u64>,
}

struct Writer {
    first_lba: u64,
    blocks: u64,
    model: Arc<Mutex<HashMap<u64, BlockModel>>>,
}

impl Writer {
    fn run(
        &self,
        node_socket: &std::path::Path,
        seed: u64,
        next_seq: u64,
        stop: &AtomicBool,
    ) -> u64 {
        let Ok(mut client) = NbdClient::connect(node_socket, "crashvol") else {
            return next_seq;
        };
        let mut rng = Rng(seed | 1);
        let mut seq = next_seq;
        let mut buf = vec![0u8; 16 * BLOCK];
        let mut writes = 0;
        while !stop.load(Ordering::Acquire) {
            let count = if rng.below(4) == 0 {
                1 + rng.below(16)
            } else {
                1
            };
            let lba = self.first_lba + rng.below(self.blocks - count + 1);
            let trim = rng.below(40) == 0;
            seq += 1;
            {
                // Record before sending: an in-flight write may or may not survive.
                let mut model = self.model.lock().unwrap();
                for block in lba..lba + count {
                    model
                        .entry(block)
                        .or_default()
                        .since
                        .push(if trim { 0 } else { seq });
                }
            }
            let result = if trim {
                client.trim(lba * BLOCK as u64, (count as usize * BLOCK) as u32)
            } else {
                for i in 0..count {
                    pattern(
                        lba + i,
                        seq,
                        &mut buf[i as usize * BLOCK..(i as usize + 1) * BLOCK],
                    );
                }
                client.write(lba * BLOCK as u64, &buf[..count as usize * BLOCK], 0)
            };
            if result.is_err() {
                break;
            }
            writes += 1;
            if writes % 150 == 0 && rng.below(2) == 0 {
                // Go quiet for a while: the node destages in the background, so kills
                // also land in the middle of destage and map commits.
                std::thread::sleep(std::time::Duration::from_millis(550 + rng.below(300)));
            }
            if writes % 12 == 0 {
                // Everything acknowledged before the flush is sent must survive once it
                // completes: remember the latest acknowledged version of each block.
                let snapshot: HashMap<u64, u64> = self
                    .model
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|(lba, m)| m.since.last().map(|v| (*lba, *v)))
                    .collect();
                if client.flush().is_err() {
                    break;
                }
                let mut model = self.model.lock().unwrap();
                for (lba, version) in snapshot {
                    let entry = model.get_mut(&lba).unwrap();
                    entry.flushed = version;
                    let keep_from = entry
                        .since
                        .iter()
                        .position(|v| *v == version)
                        .map_or(0, |p| p + 1);
                    entry.since.drain(..keep_from);
                }
            }
        }
        seq
    }
}

#[test]
fn flushed_writes_survive_kill_9() {
    let cycles: u64 = std::env::var("TROIKA_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut node = TestNode::start();
    node.pool_and_volume("crashpool", "200M", "crashvol", "64M");
    let socket = node.nbd_socket();
    let writers: Vec<Arc<Writer>> = (0..2)
        .map(|i| {
            Arc::new(Writer {
                first_lba: i * 1024,
                blocks: 1024,
                model: Arc::new(Mutex::new(HashMap::new())),
            })
        })
        .collect();
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
                std::thread::spawn(move || writer.run(&socket, seed, base, &stop))
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
        let mut buf = vec![0u8; BLOCK];
        for writer in &writers {
            let mut model = writer.model.lock().unwrap();
            for (lba, block) in model.iter_mut() {
                client
                    .read(lba * BLOCK as u64, &mut buf)
                    .expect("read after restart");
                let found = decode(*lba, &buf);
                let acceptable = |v: u64| v == block.flushed || block.since.contains(&v);
                match found {
                    Some(version) if acceptable(version) => {
                        block.flushed = version;
                        block.since.clear();
                    }
                    other => panic!(
                        "cycle {cycle}: block {lba} reads as {other:?} (None = torn or foreign bytes); \
                         last flushed version {}, written since {:?}\n{}",
                        block.flushed,
                        block.since,
                        node.log_text()
                    ),
                }
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
