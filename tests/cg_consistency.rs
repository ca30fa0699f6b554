//! Group snapshots are causally consistent across controllers. Three volumes of one
//! consistency group each get a writer on a different controller's NBD port, chained: the
//! writer of volume 2 writes record n only after volume 1's record n was acknowledged, and
//! volume 3's writer only after volume 2's (volume 1's writer stays at most `WINDOW` records
//! ahead of volume 3's). Record n is a stamped block carrying n, at slot n mod `LOG_BLOCKS`
//! of a log at the start of its volume. Meanwhile the test takes group snapshots at seeded
//! intervals of 20-200 ms, then reads every member snapshot back and checks:
//!
//! - each holds an exact prefix of its writer's records 1..=N (every slot the newest record
//!   up to N, nothing newer: no hole, nothing written after the snapshot's instant);
//! - N is at least the records acknowledged before the call and at most those sent before
//!   its answer;
//! - causality: N(volume 1) >= N(volume 2) >= N(volume 3): a snapshot that holds a record
//!   holds everything the record depended on;
//! - the group lists exactly the three snapshots, named `<volume>-<group snapshot>`;
//! - at least one group snapshot caught the writers mid-flight (its Ns differ), and at
//!   the end each volume holds every acknowledged record.
//!
//! TROIKA_CG_SEED changes the seed, TROIKA_CG_SNAPSHOTS the number of group snapshots.

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;
#[path = "common/stamp.rs"]
mod stamp;
#[path = "common/testdata.rs"]
mod testdata;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::nbd_client::NbdClient;
use common::{TestNode, ci_model};
use serde_json::json;
use stamp::{BLOCK, read_versions, stamp};
use testdata::XorShift;

const MIB: u64 = 1 << 20;
const POOL_SIZE: u64 = 400 * MIB;
const VOLUME_SIZE: u64 = 64 * MIB;
/// The log of records at the start of each volume (4 MiB); it wraps.
const LOG_BLOCKS: u64 = 1024;
/// How far the first writer may run ahead of the last.
const WINDOW: u64 = 64;
const WRITERS: usize = 3;
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// The block of record `n` (from 1) in its volume's log.
fn slot_of(record: u64) -> u64 {
    (record - 1) % LOG_BLOCKS
}

/// The stamp tag of writer `index`'s volume.
fn tag_of(index: usize) -> u32 {
    index as u32 + 1
}

/// The writers' progress, shared by the chain.
#[derive(Default)]
struct Progress {
    /// Records each writer has sent (its write of the last one may be in flight).
    sent: [u64; WRITERS],
    /// Records each writer has had acknowledged.
    acked: [u64; WRITERS],
    /// A writer hit an error (the test fails).
    error: Option<String>,
}

struct Chain {
    progress: Mutex<Progress>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Chain {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writer `index`: record after record, each once its predecessor in the chain has it.
fn start_writer(index: usize, port: u16, export: String, chain: Arc<Chain>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let fail = |why: String| {
            chain.lock().error.get_or_insert(why);
            chain.stop.store(true, Ordering::Release);
            chain.changed.notify_all();
        };
        let mut client = match NbdClient::connect_tcp(port, &export, IO_TIMEOUT) {
            Ok(client) => client,
            Err(error) => return fail(format!("{export} through port {port}: {error}")),
        };
        let mut block = vec![0u8; BLOCK];
        let mut record = 0;
        loop {
            record += 1;
            {
                // Wait for the predecessor's acknowledgement of this record (or, for the
                // first writer, for the last one to be within the window).
                let mut progress = chain.lock();
                loop {
                    if chain.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let ready = match index {
                        0 => progress.acked[WRITERS - 1] + WINDOW >= record,
                        _ => progress.acked[index - 1] >= record,
                    };
                    if ready {
                        break;
                    }
                    progress = chain
                        .changed
                        .wait_timeout(progress, Duration::from_millis(50))
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
                progress.sent[index] = record;
            }
            let slot = slot_of(record);
            stamp(tag_of(index), slot, record, &mut block);
            if let Err(error) = client.write(slot * BLOCK as u64, &block, 0) {
                return fail(format!("{export}: writing record {record}: {error}"));
            }
            chain.lock().acked[index] = record;
            chain.changed.notify_all();
        }
    })
}

/// One group snapshot as the test took it.
struct Taken {
    name: String,
    id: u32,
    /// Per writer: records acknowledged before the call.
    acked_before: [u64; WRITERS],
    /// Per writer: records sent before the answer.
    sent_before_answer: [u64; WRITERS],
}

/// The records a log holds, when it holds exactly records 1..=N for some N.
fn prefix_of(log: &[u64]) -> Result<u64, String> {
    let newest = log.iter().copied().max().unwrap_or(0);
    for (slot, found) in log.iter().enumerate() {
        let slot = slot as u64;
        // The newest record up to `newest` that lands in this slot.
        let expected = if newest > slot {
            newest - (newest - 1 - slot) % LOG_BLOCKS
        } else {
            0
        };
        if *found != expected {
            return Err(format!(
                "slot {slot} holds record {found}, not {expected}: not the records 1..={newest}"
            ));
        }
    }
    Ok(newest)
}

fn read_log(port: u16, export: &str, tag: u32) -> Result<Vec<u64>, String> {
    let mut client = NbdClient::connect_tcp(port, export, IO_TIMEOUT)
        .map_err(|error| format!("{export} through port {port}: {error}"))?;
    let log = read_versions(&mut client, tag, 0, LOG_BLOCKS)
        .map_err(|error| format!("reading {export}: {error}"))??;
    client.disconnect();
    Ok(log)
}

fn post(socket: &Path, target: &str, body: serde_json::Value) -> u32 {
    rest_unix::id_of(&rest_unix::ok(
        socket,
        "POST",
        target,
        Some(&body.to_string()),
    ))
}

#[test]
fn group_snapshots_are_causally_consistent_across_controllers() {
    let started = Instant::now();
    let seed = std::env::var("TROIKA_CG_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0xC6_C0A5);
    let snapshots: usize = std::env::var("TROIKA_CG_SNAPSHOTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(12);
    eprintln!("seed {seed} (TROIKA_CG_SEED)");
    let mut rng = XorShift::new(seed);
    let node = TestNode::start_with_nbd_ports(ci_model(), WRITERS);
    let socket = node.mgmt_socket();
    let fail = |what: String| -> ! {
        let log = node.log_text();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{what}\n--- node log (tail) ---\n{}", tail.join("\n"));
    };

    let system = rest_unix::ok(&socket, "GET", "/api/rest/system", None);
    assert!(
        system["physical_capacity"].as_u64().unwrap_or(0) >= POOL_SIZE,
        "the CI model is smaller than the test's pool: {system}"
    );
    let pool = post(
        &socket,
        "/api/rest/pools",
        json!({"name": "cgpool", "physical_capacity": POOL_SIZE}),
    );
    let cg = post(
        &socket,
        "/api/rest/cgs",
        json!({"name": "chain", "pool_id": pool}),
    );
    let mut volumes = Vec::new();
    for index in 0..WRITERS {
        let name = format!("chain{}", index + 1);
        let id = post(
            &socket,
            "/api/rest/volumes",
            json!({"name": name, "pool_id": pool, "size": VOLUME_SIZE}),
        );
        post(
            &socket,
            &format!("/api/rest/cgs/{cg}/members"),
            json!({"dataset_id": id}),
        );
        volumes.push((name, id));
    }

    let chain = Arc::new(Chain {
        progress: Mutex::new(Progress::default()),
        changed: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let writers: Vec<JoinHandle<()>> = volumes
        .iter()
        .enumerate()
        .map(|(index, (name, _))| {
            start_writer(index, node.nbd_ports[index], name.clone(), chain.clone())
        })
        .collect();
    let mut taken = Vec::new();
    for round in 0..snapshots {
        std::thread::sleep(Duration::from_millis(20 + rng.below(181)));
        if chain.stop.load(Ordering::Acquire) {
            break;
        }
        let name = format!("sg{round}");
        let acked_before = chain.lock().acked;
        let id = post(
            &socket,
            "/api/rest/cgs",
            json!({"parent_id": cg, "name": name}),
        );
        let sent_before_answer = chain.lock().sent;
        taken.push(Taken {
            name,
            id,
            acked_before,
            sent_before_answer,
        });
    }
    chain.stop.store(true, Ordering::Release);
    chain.changed.notify_all();
    for writer in writers {
        writer.join().expect("a writer thread panicked");
    }
    let progress = std::mem::take(&mut *chain.lock());
    if let Some(error) = progress.error {
        fail(format!("a writer failed: {error}"));
    }

    let mut mid_flight = 0;
    for (round, group) in taken.iter().enumerate() {
        let members = rest_unix::list(&socket, &format!("cgs/{}/members", group.id), "");
        if members.len() != WRITERS {
            fail(format!("{}: members {members:?}", group.name));
        }
        let mut records = [0u64; WRITERS];
        for (index, (volume, volume_id)) in volumes.iter().enumerate() {
            let snapshot = format!("{volume}-{}", group.name);
            let listed = members
                .iter()
                .find(|member| member["name"] == json!(snapshot))
                .unwrap_or_else(|| fail(format!("{snapshot} is not in {members:?}")));
            if listed["parent_id"] != json!(volume_id) || listed["type"] != json!("SNAPSHOT") {
                fail(format!(
                    "{snapshot} is not a snapshot of {volume}: {listed}"
                ));
            }
            let port = node.nbd_ports[(index + round) % WRITERS];
            let log = read_log(port, &snapshot, tag_of(index)).unwrap_or_else(|why| fail(why));
            let held = prefix_of(&log).unwrap_or_else(|why| fail(format!("{snapshot}: {why}")));
            let (low, high) = (group.acked_before[index], group.sent_before_answer[index]);
            if held < low || held > high {
                fail(format!(
                    "{snapshot} holds records 1..={held}; it must hold at least the {low} \
                     acknowledged before the group snapshot and at most the {high} sent \
                     before its answer"
                ));
            }
            records[index] = held;
        }
        eprintln!(
            "{}: records {records:?} (acknowledged before {:?}, sent before the answer {:?})",
            group.name, group.acked_before, group.sent_before_answer
        );
        for index in 1..WRITERS {
            if records[index] > records[index - 1] {
                fail(format!(
                    "{}: {} holds record {} but {} only up to {}: the group snapshot holds a \
                     write without the write it depended on",
                    group.name,
                    volumes[index].0,
                    records[index],
                    volumes[index - 1].0,
                    records[index - 1]
                ));
            }
        }
        if records.iter().any(|n| *n != records[0]) {
            mid_flight += 1;
        }
    }
    for (index, (volume, _)) in volumes.iter().enumerate() {
        let log =
            read_log(node.nbd_ports[index], volume, tag_of(index)).unwrap_or_else(|why| fail(why));
        let held = prefix_of(&log).unwrap_or_else(|why| fail(format!("{volume}: {why}")));
        let (acked, sent) = (progress.acked[index], progress.sent[index]);
        if held < acked || held > sent {
            fail(format!(
                "{volume} holds records 1..={held}; {acked} were acknowledged, {sent} sent"
            ));
        }
    }
    assert!(
        taken.len() == snapshots,
        "only {} of {snapshots} group snapshots taken",
        taken.len()
    );
    assert!(
        mid_flight > 0,
        "no group snapshot caught the writers mid-flight (all held equal records): the test \
         proved nothing about causality"
    );
    assert!(
        progress.acked[WRITERS - 1] > LOG_BLOCKS,
        "the writers wrote only {:?} records: the logs never wrapped",
        progress.acked
    );
    eprintln!(
        "{} group snapshots, {mid_flight} caught the writers mid-flight; records written {:?}; \
         {:.1} s",
        taken.len(),
        progress.acked,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn prefix_check_refuses_holes_and_strays() {
    let mut log = vec![0; LOG_BLOCKS as usize];
    assert_eq!(prefix_of(&log), Ok(0));
    for record in 1..=LOG_BLOCKS + 3 {
        log[slot_of(record) as usize] = record;
    }
    assert_eq!(prefix_of(&log), Ok(LOG_BLOCKS + 3));
    // Record LOG_BLOCKS + 2 missing: its slot still holds record 2.
    log[slot_of(LOG_BLOCKS + 2) as usize] = 2;
    assert!(prefix_of(&log).is_err());
    let mut short = vec![0; LOG_BLOCKS as usize];
    short[0] = 1;
    short[2] = 3;
    assert!(prefix_of(&short).is_err());
}
