//! kill -9 in the middle of snapshot operations. A snapshot, a restore and a group snapshot
//! pause host I/O on every controller, destage the cache and make one journal record, so
//! after a crash each happened whole or not at all; a deletion gives its space back in the
//! background, and a crash while it does must neither lose the snapshot's data nor the
//! space. Each test starts a node with an NBD port per controller, runs verifying writers
//! that flush known data (stamped blocks, see `common/stamp.rs`), starts the operation on
//! the REST API in a thread, kills the node a seeded delay later (0-50 ms, or up to 1.5 times
//! the time the operation last took when that is longer), restarts it on the same
//! data directory and checks:
//!
//! - the operation happened whole or not at all; one the API acknowledged happened;
//! - a snapshot holds exactly its volume's contents at one instant between the last write
//!   acknowledged before the call and the first write sent after its answer (an exact
//!   prefix of the writer's writes), and keeps them through every later crash;
//! - every flushed write reads back exactly (and every write a surviving snapshot caught,
//!   since the snapshot destaged it); an unflushed one reads back as the old or a newer
//!   version of its block, whole;
//! - the pool's allocated space comes to exactly the distinct blocks the surviving datasets
//!   hold, and to the volumes' blocks once every snapshot is deleted;
//! - the node logged its recovery and no error about checkpoints, the journal or replay.
//!
//! `snapshot_create_*`: a writer on the volume while it is snapshotted. `snapshot_delete_*`:
//! the snapshot holds 64 MiB no other dataset refers to; the kill lands while the DELETE
//! runs or just after it answered. `restore_*`: a quiescent volume whose contents differ
//! from its snapshot in half its blocks is restored while a writer runs on another volume;
//! it must read back entirely as the snapshot or entirely as before. `group_snapshot_*`:
//! three volumes in a consistency group, a writer on each through a different controller.
//!
//! TROIKA_SNAPSHOT_CRASH_SEED changes the seed, TROIKA_SNAPSHOT_CRASH_ROUNDS the rounds of
//! each test. The tests in this file run one at a time (a file-wide lock): each is timed.

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;
#[path = "common/stamp.rs"]
mod stamp;
#[path = "common/testdata.rs"]
mod testdata;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::nbd_client::NbdClient;
use common::{TestNode, ci_model};
use serde_json::{Value, json};
use stamp::{BLOCK, read_versions, stamp};
use testdata::XorShift;

const MIB: u64 = 1 << 20;
const POOL_SIZE: u64 = 400 * MIB;
const VOLUME_SIZE: u64 = 64 * MIB;
const VOLUME_BLOCKS: u64 = VOLUME_SIZE / BLOCK as u64;
/// The verifying writers write the first 4 MiB of their volume.
const WRITER_BLOCKS: u64 = 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the pool's space may take to settle after a restart (destage, reclaim).
const SPACE_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines (other than the recovery summary) that mean recovery or the metadata went
/// wrong.
const BAD_LOG_LINES: &[&str] = &[
    "checkpoint",
    "journal record",
    "replay",
    "panicked",
    "error",
    "failed",
    "durability",
    "cannot",
];

static SERIAL: Mutex<()> = Mutex::new(());
/// Versions of blocks, unique in the process: a version names one write of one block.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

fn rounds(default: usize) -> usize {
    std::env::var("TROIKA_SNAPSHOT_CRASH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn seed(salt: u64) -> u64 {
    let seed = std::env::var("TROIKA_SNAPSHOT_CRASH_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x5A95_C4A5);
    eprintln!("seed {seed} (TROIKA_SNAPSHOT_CRASH_SEED)");
    seed ^ salt
}

// ----------------------------------------------------------------------------------------
// What the test knows of a writer's blocks.

/// The blocks `first..first + base.len()` of a volume: the version each held at a known
/// point, then every single-block write sent since, in order (a writer has one request in
/// flight at a time, so the writes are ordered).
struct History {
    first: u64,
    base: Vec<u64>,
    /// `(lba, version)` in the order sent.
    writes: Vec<(u64, u64)>,
    /// `writes[..acked]` were acknowledged.
    acked: usize,
    /// `writes[..flushed]` were acknowledged before a FLUSH that completed.
    flushed: usize,
}

impl History {
    fn new(first: u64, base: Vec<u64>) -> History {
        History {
            first,
            base,
            writes: Vec::new(),
            acked: 0,
            flushed: 0,
        }
    }

    /// The version of every block after the first `cut` writes.
    fn state_at(&self, cut: usize) -> Vec<u64> {
        let mut state = self.base.clone();
        for (lba, version) in &self.writes[..cut] {
            state[(lba - self.first) as usize] = *version;
        }
        state
    }

    /// The number of writes `read` holds, when it is the state after exactly that many.
    fn cut_of(&self, read: &[u64]) -> Result<usize, String> {
        let index: HashMap<u64, usize> = self
            .writes
            .iter()
            .enumerate()
            .map(|(at, (_, version))| (*version, at))
            .collect();
        let mut cut = 0;
        for (offset, version) in read.iter().enumerate() {
            let lba = self.first + offset as u64;
            match index.get(version) {
                Some(&at) if self.writes[at].0 == lba => cut = cut.max(at + 1),
                _ if *version == self.base[offset] => {}
                _ => {
                    return Err(format!(
                        "block {lba} holds version {version}, never written there (it held {} \
                         before these {} writes)",
                        self.base[offset],
                        self.writes.len()
                    ));
                }
            }
        }
        let expected = self.state_at(cut);
        match first_difference(&expected, read) {
            None => Ok(cut),
            Some(offset) => Err(format!(
                "not the contents after any number of writes: it holds write {cut} of {} but \
                 block {} holds version {} where the volume had {} at that point",
                self.writes.len(),
                self.first + offset as u64,
                read[offset],
                expected[offset]
            )),
        }
    }

    /// After a crash: each block holds its version after the first `durable` writes, or
    /// one written after them, whole.
    fn check_crash(&self, read: &[u64], durable: usize) -> Result<(), String> {
        let floor = self.state_at(durable);
        let mut later: HashMap<u64, Vec<u64>> = HashMap::new();
        for (lba, version) in &self.writes[durable..] {
            later.entry(*lba).or_default().push(*version);
        }
        for (offset, version) in read.iter().enumerate() {
            let lba = self.first + offset as u64;
            let newer = later.get(&lba).map_or(&[][..], Vec::as_slice);
            if *version != floor[offset] && !newer.contains(version) {
                return Err(format!(
                    "block {lba} reads as version {version}; it must be {} (durable after {} of \
                     {} writes) or one written later {newer:?}",
                    floor[offset],
                    durable,
                    self.writes.len()
                ));
            }
        }
        Ok(())
    }

    /// Starts over from what the volume holds now.
    fn rebase(&mut self, read: Vec<u64>) {
        self.base = read;
        self.writes.clear();
        self.acked = 0;
        self.flushed = 0;
    }
}

fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

type Shared = Arc<Mutex<History>>;

fn lock(history: &Shared) -> MutexGuard<'_, History> {
    history
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A verifying writer: random single-block writes to its history's blocks through one
/// controller's port, a FLUSH every 1-16 writes, until told to stop or the node dies.
fn start_writer(
    port: u16,
    export: String,
    tag: u32,
    history: Shared,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut client) = NbdClient::connect_tcp(port, &export, IO_TIMEOUT) else {
            return;
        };
        let mut rng = XorShift::new(seed);
        let (first, blocks) = {
            let history = lock(&history);
            (history.first, history.base.len() as u64)
        };
        let mut block = vec![0u8; BLOCK];
        let mut until_flush = 1 + rng.below(16);
        while !stop.load(Ordering::Acquire) {
            let lba = first + rng.below(blocks);
            let version = next_version();
            lock(&history).writes.push((lba, version));
            stamp(tag, lba, version, &mut block);
            if client.write(lba * BLOCK as u64, &block, 0).is_err() {
                return;
            }
            let acked = {
                let mut history = lock(&history);
                history.acked = history.writes.len();
                history.acked
            };
            until_flush -= 1;
            if until_flush == 0 {
                until_flush = 1 + rng.below(16);
                if client.flush().is_err() {
                    return;
                }
                let mut history = lock(&history);
                history.flushed = history.flushed.max(acked);
            }
        }
    })
}

// ----------------------------------------------------------------------------------------
// The node.

/// How one crashed operation went.
struct Crash {
    /// Per history: writes acknowledged before the call was sent.
    acked_before: Vec<usize>,
    /// Per history: writes sent before the call answered (all of them when it did not).
    sent_before_answer: Vec<usize>,
    /// The answer, if one came before the kill.
    answer: Option<(u16, Value)>,
    delay: Duration,
    kill: Kill,
}

/// When the kill comes.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// After the call was sent, whatever it is doing.
    AfterCall,
    /// 0-50 ms after it answered (work it left to the background may still run).
    AfterAnswer,
}

impl Crash {
    /// The API acknowledged the operation.
    fn acknowledged(&self) -> bool {
        self.answer
            .as_ref()
            .is_some_and(|(status, _)| (200..300).contains(status))
    }

    fn describe(&self) -> String {
        format!(
            "killed {:?} {}, {}",
            self.delay,
            match self.kill {
                Kill::AfterCall => "after the call was sent",
                Kill::AfterAnswer => "after the call answered",
            },
            match &self.answer {
                Some((status, _)) => format!("which had answered {status}"),
                None => "before it answered".to_owned(),
            }
        )
    }
}

/// A node for one test: its pool, the seeded choices and the part of its log checked.
struct Rig {
    node: TestNode,
    socket: PathBuf,
    pool: u32,
    rng: XorShift,
    log_checked: usize,
    /// Kills after a call come 0 to this long after it.
    window: Duration,
    /// Rounds whose operation took effect / did not.
    happened: usize,
    not_happened: usize,
}

impl Rig {
    fn start(salt: u64) -> Rig {
        let node = TestNode::start_with_nbd_ports(ci_model(), 3);
        let socket = node.mgmt_socket();
        let system = rest_unix::ok(&socket, "GET", "/api/rest/system", None);
        let capacity = system["physical_capacity"].as_u64().unwrap_or(0);
        assert!(
            capacity >= POOL_SIZE,
            "the CI model offers {capacity} bytes, less than the {POOL_SIZE} the test's pool needs"
        );
        let pool = rest_unix::ok(
            &socket,
            "POST",
            "/api/rest/pools",
            Some(&json!({"name": "crashpool", "physical_capacity": POOL_SIZE}).to_string()),
        );
        Rig {
            pool: rest_unix::id_of(&pool),
            node,
            socket,
            rng: XorShift::new(seed(salt)),
            log_checked: 0,
            window: Duration::from_millis(50),
            happened: 0,
            not_happened: 0,
        }
    }

    fn post(&self, target: &str, body: &Value) -> Value {
        rest_unix::ok(&self.socket, "POST", target, Some(&body.to_string()))
    }

    fn volume(&self, name: &str) -> u32 {
        let body = json!({"name": name, "pool_id": self.pool, "size": VOLUME_SIZE});
        rest_unix::id_of(&self.post("/api/rest/volumes", &body))
    }

    fn snapshot(&self, parent: u32, name: &str) -> u32 {
        let body = json!({"name": name, "parent_id": parent});
        rest_unix::id_of(&self.post("/api/rest/volumes", &body))
    }

    fn delete_volume(&self, id: u32) {
        let target = format!("/api/rest/volumes/{id}?approved=true");
        rest_unix::ok(&self.socket, "DELETE", &target, None);
    }

    /// The volume or snapshot named `name`, if it exists.
    fn find_volume(&self, name: &str) -> Option<Value> {
        let found = rest_unix::list(&self.socket, "volumes", &format!("name=eq:{name}"));
        assert!(found.len() <= 1, "two datasets named {name}: {found:?}");
        found.into_iter().next()
    }

    fn port(&mut self) -> u16 {
        self.node.nbd_ports[self.rng.below(3) as usize]
    }

    /// A delay in 0..=50 ms, or for a kill after the call was sent, in the rig's window.
    fn kill_delay(&mut self, kill: Kill) -> Duration {
        let window = match kill {
            Kill::AfterCall => self.window,
            Kill::AfterAnswer => Duration::from_millis(50),
        };
        Duration::from_micros(self.rng.below(window.as_micros() as u64 + 1))
    }

    /// The window follows the time the operation takes (it destages the cache, so tens of
    /// milliseconds or more under load): 1.5 times its last answer time (at least 50 ms),
    /// and half as long again after a kill that came before the answer, so kills land
    /// before, during and after its commit.
    fn adapt_window(&mut self, answered_after: Option<Duration>) {
        self.window = match answered_after {
            Some(took) => (took * 3 / 2).max(Duration::from_millis(50)),
            None => (self.window * 3 / 2).min(Duration::from_secs(1)),
        };
    }

    /// The versions of `count` blocks from `first` of `export`.
    fn read(&mut self, export: &str, tag: u32, first: u64, count: u64) -> Vec<u64> {
        let port = self.port();
        let read = NbdClient::connect_tcp(port, export, IO_TIMEOUT)
            .and_then(|mut client| read_versions(&mut client, tag, first, count));
        match read {
            Ok(Ok(versions)) => versions,
            Ok(Err(why)) => self.fail(&format!("{export}: {why}")),
            Err(error) => self.fail(&format!("reading {export} through port {port}: {error}")),
        }
    }

    /// Writes a new version of each of `lbas` of `export` in runs of consecutive blocks,
    /// flushes, and returns the versions written.
    fn fill(&mut self, export: &str, tag: u32, lbas: &[u64]) -> Vec<(u64, u64)> {
        let port = self.port();
        let mut client = NbdClient::connect_tcp(port, export, IO_TIMEOUT)
            .unwrap_or_else(|error| self.fail(&format!("{export} through {port}: {error}")));
        let mut written = Vec::with_capacity(lbas.len());
        let mut buf = Vec::new();
        let mut at = 0;
        while at < lbas.len() {
            let mut run = 1;
            while at + run < lbas.len() && run < 256 && lbas[at + run] == lbas[at] + run as u64 {
                run += 1;
            }
            buf.resize(run * BLOCK, 0);
            for (index, lba) in lbas[at..at + run].iter().enumerate() {
                let version = next_version();
                stamp(tag, *lba, version, &mut buf[index * BLOCK..]);
                written.push((*lba, version));
            }
            if let Err(error) = client.write(lbas[at] * BLOCK as u64, &buf, 0) {
                self.fail(&format!("writing {export}: {error}"));
            }
            at += run;
        }
        if let Err(error) = client.flush() {
            self.fail(&format!("flushing {export}: {error}"));
        }
        client.disconnect();
        written
    }

    /// Starts the operation, kills the node a little later and restarts it.
    fn crash_during(
        &mut self,
        histories: &[Shared],
        kill: Kill,
        method: &'static str,
        target: String,
        body: Option<String>,
    ) -> Crash {
        let delay = self.kill_delay(kill);
        let acked_before: Vec<usize> = histories.iter().map(|h| lock(h).acked).collect();
        let socket = self.socket.clone();
        let watched: Vec<Shared> = histories.to_vec();
        let call = std::thread::spawn(move || {
            let sent_at = Instant::now();
            let answer = rest_unix::call(&socket, method, &target, body.as_deref()).ok();
            let took = sent_at.elapsed();
            let sent: Vec<usize> = watched.iter().map(|h| lock(h).writes.len()).collect();
            (answer.map(|answer| (answer, took)), sent)
        });
        let (answer, sent) = match kill {
            Kill::AfterCall => {
                std::thread::sleep(delay);
                self.node.kill9();
                call.join().expect("the REST call's thread")
            }
            Kill::AfterAnswer => {
                let outcome = call.join().expect("the REST call's thread");
                std::thread::sleep(delay);
                self.node.kill9();
                outcome
            }
        };
        let sent_before_answer = if answer.is_some() {
            sent
        } else {
            histories.iter().map(|h| lock(h).writes.len()).collect()
        };
        if let Kill::AfterCall = kill {
            self.adapt_window(answer.as_ref().map(|(_, took)| *took));
        }
        let answer = answer.map(|(answer, _)| answer);
        self.restart();
        Crash {
            acked_before,
            sent_before_answer,
            answer,
            delay,
            kill,
        }
    }

    /// Restarts the node on its data directory and checks what it logged doing so.
    fn restart(&mut self) {
        self.node.restart();
        let log = self.node.log_text();
        let fresh = &log[self.log_checked.min(log.len())..];
        if !fresh.contains("recovered from media") {
            self.fail("the restart did not log \"recovered from media\"");
        }
        let bad: Vec<&str> = fresh
            .lines()
            .filter(|line| !line.contains("recovered from media"))
            .filter(|line| {
                let line = line.to_ascii_lowercase();
                BAD_LOG_LINES.iter().any(|word| line.contains(word))
            })
            .collect();
        if !bad.is_empty() {
            self.fail(&format!("the restart logged trouble:\n{}", bad.join("\n")));
        }
        self.log_checked = log.len();
    }

    /// The pool's allocated space comes to exactly the blocks of `datasets` (each a tag
    /// and the versions of its blocks from 0), counting a block shared by several once.
    fn expect_space(&self, what: &str, datasets: &[(u32, &[u64])]) {
        let distinct: HashSet<(u32, usize, u64)> = datasets
            .iter()
            .flat_map(|(tag, versions)| {
                versions
                    .iter()
                    .enumerate()
                    .filter(|(_, version)| **version != 0)
                    .map(move |(lba, version)| (*tag, lba, *version))
            })
            .collect();
        let expected = distinct.len() as u64 * BLOCK as u64;
        let target = format!("/api/rest/pools/{}", self.pool);
        let deadline = Instant::now() + SPACE_TIMEOUT;
        let mut last = 0;
        while Instant::now() < deadline {
            let pool = rest_unix::ok(&self.socket, "GET", &target, None);
            last = pool["allocated_physical_space"]
                .as_u64()
                .unwrap_or(u64::MAX);
            if last == expected {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!(
            "{what}: the pool's allocated space stays at {last} bytes ({} blocks); the datasets \
             hold {expected} bytes ({} distinct blocks)",
            last / BLOCK as u64,
            distinct.len()
        ));
    }

    fn fail(&self, what: &str) -> ! {
        let log = self.node.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{what}\n--- node log (tail) ---\n{}", tail.join("\n"));
    }

    fn summary(&self, test: &str, started: Instant) {
        eprintln!(
            "{test}: {} crashes, operation happened in {} and not in {}, {:.1} s",
            self.happened + self.not_happened,
            self.happened,
            self.not_happened,
            started.elapsed().as_secs_f64()
        );
    }
}

/// Versions of `count` blocks from 0 with `written` applied to `base`.
fn apply(base: &[u64], written: &[(u64, u64)]) -> Vec<u64> {
    let mut state = base.to_vec();
    for (lba, version) in written {
        state[*lba as usize] = *version;
    }
    state
}

/// Stops the writers and waits for them.
fn stop_writers(stop: &AtomicBool, writers: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.join().expect("a writer thread panicked");
    }
}

// ----------------------------------------------------------------------------------------
// Volumes with writers, and the snapshots that must keep their contents.

/// A volume with a verifying writer on its first `WRITER_BLOCKS` blocks.
struct Member {
    name: String,
    tag: u32,
    id: u32,
    history: Shared,
}

/// A snapshot that took effect, and the contents it must keep.
struct Kept {
    name: String,
    tag: u32,
    versions: Vec<u64>,
}

impl Rig {
    /// A volume whose writer's blocks are all written and flushed.
    fn member(&mut self, name: &str, tag: u32) -> Member {
        let id = self.volume(name);
        let lbas: Vec<u64> = (0..WRITER_BLOCKS).collect();
        let prefill = self.fill(name, tag, &lbas);
        let base = apply(&vec![0; WRITER_BLOCKS as usize], &prefill);
        Member {
            name: name.to_owned(),
            tag,
            id,
            history: Arc::new(Mutex::new(History::new(0, base))),
        }
    }

    /// Starts a writer on each member, the member at index i on controller port i mod 3
    /// shifted by a seeded offset, and lets them run for 30-100 ms.
    fn start_writers(&mut self, members: &[Member]) -> (Arc<AtomicBool>, Vec<JoinHandle<()>>) {
        let stop = Arc::new(AtomicBool::new(false));
        let shift = self.rng.below(3) as usize;
        let writers = members
            .iter()
            .enumerate()
            .map(|(index, member)| {
                start_writer(
                    self.node.nbd_ports[(index + shift) % 3],
                    member.name.clone(),
                    member.tag,
                    member.history.clone(),
                    stop.clone(),
                    self.rng.next_u64(),
                )
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + self.rng.below(70)));
        (stop, writers)
    }

    /// Member `index`'s snapshot `name` holds exactly its volume's contents at one instant
    /// within the call; returns them and the number of writes they hold.
    fn check_taken(
        &mut self,
        context: &str,
        member: &Member,
        index: usize,
        crash: &Crash,
        name: &str,
    ) -> (Kept, usize) {
        let versions = self.read(name, member.tag, 0, WRITER_BLOCKS);
        let cut = lock(&member.history)
            .cut_of(&versions)
            .unwrap_or_else(|why| self.fail(&format!("{context}: snapshot {name}: {why}")));
        let (low, high) = (crash.acked_before[index], crash.sent_before_answer[index]);
        if cut < low || cut > high {
            self.fail(&format!(
                "{context}: snapshot {name} holds the first {cut} writes of {}; it must hold at \
                 least the {low} acknowledged before the call and at most the {high} sent \
                 before its answer",
                member.name
            ));
        }
        let kept = Kept {
            name: name.to_owned(),
            tag: member.tag,
            versions,
        };
        (kept, cut)
    }

    /// After a crash each member holds its writes after the first `durable[i]` or newer
    /// ones; its history starts over from what it holds.
    fn check_members(&mut self, context: &str, members: &[Member], durable: &[usize]) {
        for (member, durable) in members.iter().zip(durable) {
            let read = self.read(&member.name, member.tag, 0, WRITER_BLOCKS);
            let mut history = lock(&member.history);
            if let Err(why) = history.check_crash(&read, *durable) {
                self.fail(&format!("{context}: volume {}: {why}", member.name));
            }
            history.rebase(read);
        }
    }

    /// Every kept snapshot still holds its contents.
    fn check_kept<'a>(&mut self, context: &str, kept: impl IntoIterator<Item = &'a Kept>) {
        for snapshot in kept {
            if self.read(&snapshot.name, snapshot.tag, 0, WRITER_BLOCKS) != snapshot.versions {
                self.fail(&format!(
                    "{context}: snapshot {} changed after a crash",
                    snapshot.name
                ));
            }
        }
    }

    /// The pool holds exactly the members' blocks and the kept snapshots'.
    fn expect_member_space<'a>(
        &self,
        context: &str,
        members: &[Member],
        kept: impl IntoIterator<Item = &'a Kept>,
    ) {
        let bases: Vec<(u32, Vec<u64>)> = members
            .iter()
            .map(|member| (member.tag, lock(&member.history).base.clone()))
            .collect();
        let mut datasets: Vec<(u32, &[u64])> = bases
            .iter()
            .map(|(tag, base)| (*tag, base.as_slice()))
            .collect();
        datasets.extend(kept.into_iter().map(|k| (k.tag, k.versions.as_slice())));
        self.expect_space(context, &datasets);
    }
}

// ----------------------------------------------------------------------------------------
// The tests.

/// The checks themselves: each must refuse what it exists to catch.
#[test]
fn history_checks_refuse_mixes_holes_and_lost_writes() {
    let mut history = History::new(10, vec![1, 2, 0]);
    // Block 10 gets 5, block 12 gets 6, block 10 gets 7.
    history.writes = vec![(10, 5), (12, 6), (10, 7)];
    assert_eq!(history.cut_of(&[1, 2, 0]), Ok(0));
    assert_eq!(history.cut_of(&[5, 2, 6]), Ok(2));
    assert_eq!(history.cut_of(&[7, 2, 6]), Ok(3));
    // The third write without the second: not the contents at any instant.
    assert!(history.cut_of(&[7, 2, 0]).is_err());
    // A version written to another block.
    assert!(history.cut_of(&[1, 6, 0]).is_err());
    // After a crash with the first two writes flushed: block 10 may be 5 or 7, block 12
    // must be 6.
    assert_eq!(history.check_crash(&[7, 2, 6], 2), Ok(()));
    assert_eq!(history.check_crash(&[5, 2, 6], 2), Ok(()));
    assert!(history.check_crash(&[5, 2, 0], 2).is_err());
    assert!(history.check_crash(&[1, 2, 6], 2).is_err());
    assert!(history.check_crash(&[5, 9, 6], 2).is_err());
}

#[test]
fn snapshot_create_happens_whole_or_not_at_all_across_kill_9() {
    let _serial = serial();
    let started = Instant::now();
    let mut rig = Rig::start(0xA);
    let members = [rig.member("snapvol", 1)];
    let volume = &members[0];
    let mut kept: Vec<Kept> = Vec::new();
    for round in 0..rounds(8) {
        let (stop, writers) = rig.start_writers(&members);
        let snapshot = format!("{}-snap-{round}", volume.name);
        let body = json!({"name": snapshot, "parent_id": volume.id}).to_string();
        let crash = rig.crash_during(
            std::slice::from_ref(&volume.history),
            Kill::AfterCall,
            "POST",
            "/api/rest/volumes".into(),
            Some(body),
        );
        stop_writers(&stop, writers);
        let context = format!("round {round}: {}", crash.describe());
        let mut durable = lock(&volume.history).flushed;
        if rig.find_volume(&snapshot).is_some() {
            rig.happened += 1;
            let (taken, cut) = rig.check_taken(&context, volume, 0, &crash, &snapshot);
            eprintln!(
                "  {context}: snapshot holds {cut} writes (acknowledged before: {}, sent \
                 before the answer: {}, sent in all: {})",
                crash.acked_before[0],
                crash.sent_before_answer[0],
                lock(&volume.history).writes.len()
            );
            durable = durable.max(cut);
            kept.push(taken);
        } else {
            rig.not_happened += 1;
            eprintln!("  {context}: no snapshot");
            if crash.acknowledged() {
                rig.fail(&format!(
                    "{context}: snapshot {snapshot} is gone after the crash"
                ));
            }
        }
        rig.check_members(&context, &members, &[durable]);
        rig.check_kept(&context, &kept);
        rig.expect_member_space(&context, &members, &kept);
    }
    // Nothing outside the writer's blocks; then every snapshot goes and only the volume's
    // blocks keep space.
    let whole = rig.read(&volume.name, volume.tag, 0, VOLUME_BLOCKS);
    assert_eq!(
        whole[..WRITER_BLOCKS as usize],
        lock(&volume.history).base[..]
    );
    assert!(whole[WRITER_BLOCKS as usize..].iter().all(|v| *v == 0));
    for snapshot in &kept {
        let found = rig.find_volume(&snapshot.name).expect("a kept snapshot");
        rig.delete_volume(rest_unix::id_of(&found));
    }
    rig.expect_member_space("after deleting every snapshot", &members, []);
    rig.summary("snapshot create", started);
}

#[test]
fn snapshot_delete_during_reclaim_loses_neither_data_nor_space_across_kill_9() {
    let _serial = serial();
    let started = Instant::now();
    let mut rig = Rig::start(0xB);
    let (tag, name) = (2, "delvol");
    let volume = rig.volume(name);
    let all: Vec<u64> = (0..VOLUME_BLOCKS).collect();
    let mut current = vec![0; VOLUME_BLOCKS as usize];
    for round in 0..rounds(4) {
        // The snapshot holds 64 MiB that the volume then overwrites: all of it unique.
        let old = apply(&current, &rig.fill(name, tag, &all));
        let snapshot = format!("{name}-old-{round}");
        let snapshot_id = rig.snapshot(volume, &snapshot);
        current = apply(&old, &rig.fill(name, tag, &all));
        rig.expect_space("before the deletion", &[(tag, &old), (tag, &current)]);
        let history: Shared = Arc::new(Mutex::new(History::new(
            0,
            current[..WRITER_BLOCKS as usize].to_vec(),
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let port = rig.port();
        let writer = start_writer(
            port,
            name.into(),
            tag,
            history.clone(),
            stop.clone(),
            rig.rng.next_u64(),
        );
        std::thread::sleep(Duration::from_millis(30 + rig.rng.below(70)));
        let target = format!("/api/rest/volumes/{snapshot_id}?approved=true");
        let kill = if round % 2 == 0 {
            Kill::AfterCall
        } else {
            Kill::AfterAnswer
        };
        let crash = rig.crash_during(std::slice::from_ref(&history), kill, "DELETE", target, None);
        stop_writers(&stop, vec![writer]);
        let context = format!("round {round}: {}", crash.describe());
        let survived = rig.find_volume(&snapshot).is_some();
        if survived {
            rig.not_happened += 1;
            if crash.acknowledged() {
                rig.fail(&format!("{context}: {snapshot} is back after its deletion"));
            }
            if rig.read(&snapshot, tag, 0, VOLUME_BLOCKS) != old {
                rig.fail(&format!(
                    "{context}: {snapshot} survived with other contents"
                ));
            }
        } else {
            rig.happened += 1;
        }
        eprintln!(
            "  {context}: snapshot {}",
            if survived { "survived" } else { "gone" }
        );
        let read = rig.read(name, tag, 0, VOLUME_BLOCKS);
        let history = lock(&history);
        let writer_blocks = WRITER_BLOCKS as usize;
        if let Err(why) = history.check_crash(&read[..writer_blocks], history.flushed) {
            rig.fail(&format!("{context}: volume {name}: {why}"));
        }
        if read[writer_blocks..] != current[writer_blocks..] {
            rig.fail(&format!(
                "{context}: volume {name} lost blocks nobody wrote"
            ));
        }
        current = read;
        if survived {
            rig.expect_space(&context, &[(tag, &old), (tag, &current)]);
            rig.delete_volume(snapshot_id);
        }
        rig.expect_space(&context, &[(tag, &current)]);
    }
    rig.summary("snapshot delete", started);
}

#[test]
fn restore_happens_whole_or_not_at_all_across_kill_9() {
    let _serial = serial();
    let started = Instant::now();
    let mut rig = Rig::start(0xC);
    let (tag, name) = (3, "restvol");
    let volume = rig.volume(name);
    // The writer runs on another volume while this one is restored.
    let busy = [rig.member("busyvol", 4)];
    const RESTORED_BLOCKS: u64 = 2048;
    let mut current = vec![0; VOLUME_BLOCKS as usize];
    for round in 0..rounds(5) {
        // The snapshot, then half of the blocks change (some were zero in the snapshot).
        let chosen = |rng: &mut XorShift| -> Vec<u64> {
            (0..RESTORED_BLOCKS).filter(|_| rng.chance(2)).collect()
        };
        let lbas = if round == 0 {
            (0..RESTORED_BLOCKS * 3 / 4).collect()
        } else {
            chosen(&mut rig.rng)
        };
        current = apply(&current, &rig.fill(name, tag, &lbas));
        let snapshot_content = current.clone();
        let snapshot = format!("{name}-snap-{round}");
        let snapshot_id = rig.snapshot(volume, &snapshot);
        let lbas = chosen(&mut rig.rng);
        let before = apply(&current, &rig.fill(name, tag, &lbas));
        let (stop, writers) = rig.start_writers(&busy);
        let crash = rig.crash_during(
            std::slice::from_ref(&busy[0].history),
            Kill::AfterCall,
            "POST",
            format!("/api/rest/volumes/{volume}/restore?approved=true"),
            Some(snapshot_id.to_string()),
        );
        stop_writers(&stop, writers);
        let context = format!("round {round}: {}", crash.describe());
        let read = rig.read(name, tag, 0, VOLUME_BLOCKS);
        if read == snapshot_content {
            rig.happened += 1;
            eprintln!("  {context}: restored");
        } else if read == before {
            rig.not_happened += 1;
            eprintln!("  {context}: not restored");
            if crash.acknowledged() {
                rig.fail(&format!("{context}: the acknowledged restore is undone"));
            }
        } else {
            let differ = |other: &[u64]| read.iter().zip(other).filter(|(a, b)| a != b).count();
            rig.fail(&format!(
                "{context}: {name} is a mix: {} blocks differ from the snapshot, {} from its \
                 contents before the restore (which differ from each other in {})",
                differ(&snapshot_content),
                differ(&before),
                before
                    .iter()
                    .zip(&snapshot_content)
                    .filter(|(a, b)| a != b)
                    .count()
            ));
        }
        current = read;
        if rig.read(&snapshot, tag, 0, VOLUME_BLOCKS) != snapshot_content {
            rig.fail(&format!("{context}: snapshot {snapshot} changed"));
        }
        let flushed = lock(&busy[0].history).flushed;
        rig.check_members(&context, &busy, &[flushed]);
        let busy_blocks = lock(&busy[0].history).base.clone();
        let datasets = [
            (tag, current.as_slice()),
            (tag, snapshot_content.as_slice()),
            (busy[0].tag, busy_blocks.as_slice()),
        ];
        rig.expect_space(&context, &datasets);
        rig.delete_volume(snapshot_id);
        rig.expect_space(
            &format!("{context}, snapshot deleted"),
            &[datasets[0], datasets[2]],
        );
    }
    rig.summary("restore", started);
}

#[test]
fn group_snapshot_takes_every_member_or_none_across_kill_9() {
    let _serial = serial();
    let started = Instant::now();
    let mut rig = Rig::start(0xD);
    let body = json!({"name": "crashgroup", "pool_id": rig.pool});
    let cg = rest_unix::id_of(&rig.post("/api/rest/cgs", &body));
    let members: Vec<Member> = (1..=3)
        .map(|index| rig.member(&format!("member{index}"), 10 + index))
        .collect();
    for member in &members {
        let body = json!({"dataset_id": member.id});
        rig.post(&format!("/api/rest/cgs/{cg}/members"), &body);
    }
    let histories: Vec<Shared> = members.iter().map(|m| m.history.clone()).collect();
    // The group snapshots that took effect: name and member snapshots.
    let mut groups: Vec<(String, Vec<Kept>)> = Vec::new();
    for round in 0..rounds(6) {
        let (stop, writers) = rig.start_writers(&members);
        let group = format!("sg{round}");
        let body = json!({"parent_id": cg, "name": group}).to_string();
        let target = "/api/rest/cgs".to_owned();
        let crash = rig.crash_during(&histories, Kill::AfterCall, "POST", target, Some(body));
        stop_writers(&stop, writers);
        let context = format!("round {round}: {}", crash.describe());
        let found = rest_unix::list(&rig.socket, "cgs", &format!("name=eq:{group}"));
        let snapshots: Vec<Option<Value>> = members
            .iter()
            .map(|member| rig.find_volume(&format!("{}-{group}", member.name)))
            .collect();
        let present = snapshots.iter().filter(|s| s.is_some()).count();
        if present != 0 && (present != members.len() || found.len() != 1) {
            rig.fail(&format!(
                "{context}: group snapshot {group} is partial: {} group object(s), {present} of \
                 {} member snapshots",
                found.len(),
                members.len()
            ));
        }
        if present == 0 && (!found.is_empty() || crash.acknowledged()) {
            rig.fail(&format!(
                "{context}: group snapshot {group}: {} group object(s) and no member \
                 snapshots (acknowledged: {})",
                found.len(),
                crash.acknowledged()
            ));
        }
        let mut durable: Vec<usize> = histories.iter().map(|h| lock(h).flushed).collect();
        if present > 0 {
            rig.happened += 1;
            let group_id = rest_unix::id_of(&found[0]);
            let listed = rest_unix::list(&rig.socket, &format!("cgs/{group_id}/members"), "");
            if listed.len() != members.len() {
                rig.fail(&format!("{context}: {group} lists {listed:?}"));
            }
            let mut taken = Vec::new();
            let mut cuts = Vec::new();
            for (index, (member, snapshot)) in members.iter().zip(&snapshots).enumerate() {
                let snapshot = snapshot.as_ref().expect("checked present");
                let name = format!("{}-{group}", member.name);
                let id = rest_unix::id_of(snapshot);
                if snapshot["parent_id"] != json!(member.id)
                    || !listed.iter().any(|m| rest_unix::id_of(m) == id)
                {
                    rig.fail(&format!(
                        "{context}: {name} is not {}'s snapshot in {group}: {snapshot}; \
                         members {listed:?}",
                        member.name
                    ));
                }
                let (kept, cut) = rig.check_taken(&context, member, index, &crash, &name);
                durable[index] = durable[index].max(cut);
                cuts.push(cut);
                taken.push(kept);
            }
            eprintln!(
                "  {context}: group snapshot taken; members hold {cuts:?} writes (acknowledged \
                 before: {:?}, sent before the answer: {:?})",
                crash.acked_before, crash.sent_before_answer
            );
            groups.push((group, taken));
        } else {
            rig.not_happened += 1;
            eprintln!("  {context}: no group snapshot");
        }
        rig.check_members(&context, &members, &durable);
        rig.check_kept(&context, groups.iter().flat_map(|(_, taken)| taken));
        rig.expect_member_space(
            &context,
            &members,
            groups.iter().flat_map(|(_, taken)| taken),
        );
    }
    for (group, _) in &groups {
        let found = rest_unix::list(&rig.socket, "cgs", &format!("name=eq:{group}"));
        let id = rest_unix::id_of(&found[0]);
        let target = format!("/api/rest/cgs/{id}?approved=true");
        rest_unix::ok(&rig.socket, "DELETE", &target, None);
    }
    rig.expect_member_space("after deleting every group snapshot", &members, []);
    rig.summary("group snapshot", started);
}
