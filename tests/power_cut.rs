//! Power-cut crash test (DESIGN.md invariant 2, issue "Faults"): the standard crash test.
//!
//! The node runs a model whose SSD and NL-SAS devices have simulated volatile write caches
//! (`write_cache`). Two NBD connections and one iSCSI session write and flush; at a random
//! moment the test cuts the power through the REST API (`POST /api/rest/faults/power_cut`):
//! every device keeps a random subset of the writes it had not made durable, one is torn,
//! the rest vanish, and the process dies by SIGKILL with no clean-up. Cycles also cut the
//! power while a controller fails over, while snapshots are being created, and after long
//! enough runs that destage, cleaning and checkpoints are under way.
//!
//! After each restart every block must read back as the version of its last completed
//! flush or one written after it, whole: never torn, never another block's bytes.
//!
//! `TROIKA_POWER_CUT_CYCLES` sets the number of cycles (30 by default; the rig
//! `test-rigs/power-cut.py` runs 1,000) and `TROIKA_POWER_CUT_SEED` the seed of the
//! moments, scenes and cuts (a failing run prints it, so it can be replayed). Each cycle prints the node's recovery time; the
//! end prints the p50, p99 and max.

mod common;
#[path = "common/flush_oracle.rs"]
mod flush_oracle;
#[path = "common/iscsi.rs"]
mod iscsi;
#[path = "common/iscsi_client.rs"]
mod iscsi_client;
#[path = "common/rest_unix.rs"]
mod rest_unix;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;
use flush_oracle::{IscsiPort, Rng, Writer};
use iscsi::{create_host, map_volume, target_name};
use iscsi_client::{Auth, Session};

const VOLUME: &str = "cutvol";
const INITIATOR: &str = "iqn.2024-01.com.example:power-cut";

/// The CI model with a volatile write cache on every device and a smaller SSD (so the
/// journal checkpoints often under the test's load).
fn cached_model(dir: &Path) -> PathBuf {
    let ci = std::fs::read_to_string(common::ci_model()).expect("read hw/ci.toml");
    let mut model = String::new();
    for (index, line) in ci.lines().enumerate() {
        if index < 5 && line.starts_with("name = ") {
            model.push_str("name = \"troika-ci-power-cut\"\n");
            continue;
        }
        if line.trim() == "size = \"256M\"" {
            model.push_str("size = \"128M\"\n");
        } else {
            model.push_str(line);
            model.push('\n');
        }
        if line.starts_with("path = ") {
            model.push_str("write_cache = \"16M\"\n");
        }
    }
    let path = dir.join("power-cut.toml");
    std::fs::write(&path, model).expect("write the model");
    path
}

/// What else happens when the power goes, by cycle.
#[derive(Clone, Copy, Debug)]
enum Scene {
    /// Only the writers (destage and checkpoints run behind them).
    Load,
    /// A controller is failed shortly before the cut (failover under way or just done).
    Failover,
    /// Snapshots of the volume are being created.
    Snapshots,
    /// A longer run, so cleaning and several checkpoints happen before the cut.
    Long,
}

fn scene(cycle: u64) -> Scene {
    match cycle % 4 {
        0 => Scene::Load,
        1 => Scene::Failover,
        2 => Scene::Snapshots,
        _ => Scene::Long,
    }
}

/// Starts the scene's side action; it ends by itself when the node goes.
fn start_scene(
    scene: Scene,
    socket: PathBuf,
    rng: &mut Rng,
    stop: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    match scene {
        Scene::Load | Scene::Long => None,
        Scene::Failover => {
            let delay = Duration::from_millis(100 + rng.below(500));
            let controller = 1 + rng.below(3);
            Some(std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = rest_unix::call(
                    &socket,
                    "POST",
                    &format!("/api/rest/controllers/{controller}/fail?approved=true"),
                    None,
                );
            }))
        }
        Scene::Snapshots => {
            let base = rng.next() % 1_000_000_000;
            Some(std::thread::spawn(move || {
                let Ok((_, volumes)) = rest_unix::call(
                    &socket,
                    "GET",
                    &format!("/api/rest/volumes?name=eq:{VOLUME}"),
                    None,
                ) else {
                    return;
                };
                let Some(parent) = volumes["result"][0]["id"].as_u64() else {
                    return;
                };
                for i in 0..200 {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let body = format!("{{\"name\": \"cut-{base}-{i}\", \"parent_id\": {parent}}}");
                    if rest_unix::call(&socket, "POST", "/api/rest/volumes", Some(&body)).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }))
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The recovery times (ms) the node logged, in order.
fn recovery_times(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("recovered from media in ").nth(1)?;
            rest.split(" ms").next()?.trim().parse().ok()
        })
        .collect()
}

#[test]
fn flushed_writes_survive_power_cuts() {
    let cycles: u64 = std::env::var("TROIKA_POWER_CUT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let model_dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::start_with_iscsi(cached_model(model_dir.path()), 3);
    node.pool_and_volume("cutpool", "200M", VOLUME, "64M");
    let host = create_host(&node, "cutter", &[INITIATOR]);
    map_volume(&node, host, VOLUME, 1);
    let target = target_name(&node);
    let socket = node.nbd_socket();
    let mgmt = node.mgmt_socket();
    // Blocks 0..2047 by NBD (two writers), 2048..2559 by iSCSI.
    let nbd_writers: Vec<Arc<Writer>> = (0..2).map(|i| Writer::new(i * 1024, 1024)).collect();
    let iscsi_writer = Writer::new(2048, 512);
    let seed: u64 = std::env::var("TROIKA_POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x90E5_0C07);
    eprintln!("power-cut test: {cycles} cycles, seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut seq = 1u64;
    let started = Instant::now();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles: Vec<JoinHandle<u64>> = Vec::new();
        for (i, writer) in nbd_writers.iter().enumerate() {
            let (writer, socket, stop) = (writer.clone(), socket.clone(), stop.clone());
            let seed = rng.next();
            let base = seq + (i as u64 + 1) * 1_000_000_000;
            handles.push(std::thread::spawn(move || {
                match NbdClient::connect(&socket, VOLUME) {
                    Ok(mut client) => writer.run(&mut client, seed, base, &stop),
                    Err(_) => base,
                }
            }));
        }
        {
            let (writer, stop, target) = (iscsi_writer.clone(), stop.clone(), target.clone());
            let port = node.iscsi_ports[(cycle % 3) as usize];
            let seed = rng.next();
            let base = seq + 3_000_000_000;
            handles.push(std::thread::spawn(move || {
                let Ok(session) = Session::login(port, INITIATOR, Some(&target), Auth::None) else {
                    return base;
                };
                let mut port = IscsiPort { session, lun: 1 };
                writer.run(&mut port, seed, base, &stop)
            }));
        }
        let scene = scene(cycle);
        let side = start_scene(scene, mgmt.clone(), &mut rng, stop.clone());
        let run = match scene {
            Scene::Long => 1500 + rng.below(2500),
            _ => 100 + rng.below(1100),
        };
        std::thread::sleep(Duration::from_millis(run));
        let cut_seed = rng.next();
        let _ = rest_unix::call(
            &mgmt,
            "POST",
            "/api/rest/faults/power_cut?approved=true",
            Some(&format!("{{\"seed\": {cut_seed}}}")),
        );
        let status = node.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
            panic!(
                "cycle {cycle}: the node outlived its power cut\n{}",
                node.log_text()
            )
        });
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "cycle {cycle}: a power cut ends the process by SIGKILL, got {status}\n{}",
            node.log_text()
        );
        stop.store(true, Ordering::Release);
        for handle in handles {
            seq = seq.max(handle.join().expect("writer") % 1_000_000_000 + 1);
        }
        if let Some(side) = side {
            let _ = side.join();
        }
        seq += 10_000_000_000;
        node.restart();
        let mut client = NbdClient::connect(&socket, VOLUME).expect("reconnect after restart");
        for writer in nbd_writers.iter().chain([&iscsi_writer]) {
            if let Err(wrong) = writer.verify(&mut client) {
                panic!(
                    "cycle {cycle} ({scene:?}, cut seed {cut_seed}): {wrong}\n{}",
                    node.log_text()
                );
            }
        }
        client.disconnect();
    }
    let log = node.log_text();
    let mut times = recovery_times(&log);
    assert!(
        times.len() as u64 >= cycles,
        "every restart logs its recovery ({} of {cycles}):\n{log}",
        times.len()
    );
    let cuts = log.matches("troika: power cut (seed").count() as u64;
    assert_eq!(cuts, cycles, "every cycle cut the power:\n{log}");
    eprintln!(
        "recovery times (ms): {}",
        times
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    times.sort_unstable();
    eprintln!(
        "{cycles} power-cut cycles in {:?}; recovery p50 {} ms, p99 {} ms, max {} ms",
        started.elapsed(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(0)
    );
}
