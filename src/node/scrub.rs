//! The background scrub: a thread that reads every allocated row of the NL-SAS array,
//! verifies each block's checksum and the row's P and Q, and repairs what it finds
//! (`layout::array::scrub`), one segment at a time.
//!
//! What it promises:
//!
//! - **Only allocated space.** A pass visits the segments the allocator says may hold
//!   data (`may_hold_data`), in order; free segments cost nothing.
//! - **Rate-limited.** A pass reads at most the model's `[scrub] rate` bytes per second,
//!   resting after each segment until its bytes are paid for; while hosts read meanwhile,
//!   it also rests as long again as the segment took, so it yields to them.
//! - **Periodic.** A pass starts by itself `[scrub] interval` after the last one ended (or
//!   was stopped, or after the node's first start with this data directory); `start`
//!   begins one at once, `stop` ends the running one.
//! - **Resumable.** Progress (the running pass's next segment and figures, the last pass,
//!   when the schedule counts from) lives in `DATA/scrub.json` (0600, replaced atomically),
//!   written at least every [`PERSIST_EVERY`] and at every start, stop and end; after a
//!   restart the pass goes on from there. Losing the file loses only the scrub's place.
//! - **Reported.** `SCRUB_STARTED`, `SCRUB_STOPPED`, `SCRUB_COMPLETED` (rows, bytes,
//!   seconds, repairs by kind), `SCRUB_REPAIRED` for each segment with repairs,
//!   `SCRUB_UNREPAIRABLE` for each with rows beyond repair; `troika_scrub_*` on /metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::hw::ScrubSettings;
use crate::io::IoRing;
use crate::layout::ScrubTally;
use crate::meta::MetaStore;
use crate::mgmt::api::ScrubInfo;
use crate::mgmt::events::EventLog;

mod report;

/// The progress file in the data directory.
pub const PROGRESS_FILE: &str = "scrub.json";
/// Longest a running pass's progress stays unwritten.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Longest the thread sleeps before looking at the schedule and the shutdown flag again.
const NAP: Duration = Duration::from_millis(200);

/// One pass, running or done.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Pass {
    id: u64,
    started_ms: u64,
    completed_ms: Option<u64>,
    next_segment: u64,
    segments: u64,
    rows: u64,
    bytes: u64,
    data_repairs: u64,
    parity_repairs: u64,
    other_repairs: u64,
    unrepairable_rows: u64,
    /// Seconds spent scrubbing (resting and time the node was down not counted).
    seconds: f64,
}

impl Pass {
    fn add(&mut self, tally: &ScrubTally, seconds: f64) {
        self.rows += tally.rows;
        self.bytes += tally.bytes;
        self.data_repairs += tally.repairs.data;
        self.parity_repairs += tally.repairs.parity;
        self.other_repairs += tally.repairs.other;
        self.unrepairable_rows += tally.unrepairable_rows;
        self.seconds += seconds;
    }
}

/// What `DATA/scrub.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Progress {
    running: Option<Pass>,
    last: Option<Pass>,
    passes_completed: u64,
    /// Passes started so far (names the next one).
    passes_started: u64,
    /// The schedule's next pass starts `interval` after this.
    schedule_from_ms: u64,
}

/// Figures since the node started, for /metrics.
#[derive(Default)]
struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
    data_repairs: AtomicU64,
    parity_repairs: AtomicU64,
    other_repairs: AtomicU64,
    unrepairable_rows: AtomicU64,
    passes: AtomicU64,
}

/// The scrub of one node: its settings, progress and thread's wake-up.
pub struct Scrubber {
    meta: Arc<MetaStore>,
    events: Arc<EventLog>,
    settings: ScrubSettings,
    path: PathBuf,
    progress: Mutex<Progress>,
    /// Signalled on start, stop and shutdown so the thread stops resting.
    wake: Condvar,
    counters: Counters,
    last_persist: Mutex<Option<Instant>>,
}

/// What the thread does next.
enum Next {
    Segment { pass: u64, segment: u64 },
    Rest(Duration),
}

impl Scrubber {
    /// Loads the progress in `data_dir` (a missing file starts the schedule now; an
    /// unreadable one is reported and started afresh).
    pub fn open(
        meta: Arc<MetaStore>,
        settings: ScrubSettings,
        data_dir: &Path,
        events: Arc<EventLog>,
    ) -> Arc<Scrubber> {
        let path = data_dir.join(PROGRESS_FILE);
        let (progress, fresh) = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Progress>(&bytes) {
                Ok(progress) => (progress, false),
                Err(err) => {
                    crate::say!(
                        "troika: {} is not a scrub progress file ({err}); the scrub starts its schedule afresh",
                        path.display()
                    );
                    (Progress::default(), true)
                }
            },
            Err(_) => (Progress::default(), true),
        };
        let scrubber = Arc::new(Scrubber {
            meta,
            events,
            settings,
            path,
            progress: Mutex::new(progress),
            wake: Condvar::new(),
            counters: Counters::default(),
            last_persist: Mutex::new(None),
        });
        if fresh {
            let mut progress = scrubber.progress.lock();
            progress.schedule_from_ms = now_ms();
            scrubber.persist(&progress);
        }
        scrubber
    }

    /// The scrub as the API shows it.
    pub fn info(&self) -> ScrubInfo {
        report::info(&self.progress.lock(), &self.settings, now_ms())
    }

    /// Starts a pass now unless one runs.
    pub fn start(&self) -> ScrubInfo {
        let mut progress = self.progress.lock();
        if progress.running.is_none() {
            self.begin_pass(&mut progress, "by an operator");
        }
        self.wake.notify_all();
        report::info(&progress, &self.settings, now_ms())
    }

    /// Stops the running pass, if any; the schedule counts from now.
    pub fn stop(&self) -> ScrubInfo {
        let mut progress = self.progress.lock();
        if let Some(pass) = progress.running.take() {
            progress.schedule_from_ms = now_ms();
            self.persist(&progress);
            self.events.raise(
                "SCRUB_STOPPED",
                report::stopped_text(&pass, &self.settings),
                None,
                None,
            );
        }
        self.wake.notify_all();
        report::info(&progress, &self.settings, now_ms())
    }

    /// Appends the `troika_scrub_*` families to a /metrics text.
    pub fn render_metrics(&self, out: &mut String) {
        let (running, ratio) = {
            let progress = self.progress.lock();
            match &progress.running {
                Some(pass) => (1, pass.next_segment as f64 / pass.segments.max(1) as f64),
                None => (0, 0.0),
            }
        };
        report::metrics(out, &self.counters, running, ratio);
    }

    fn begin_pass(&self, progress: &mut Progress, cause: &str) {
        progress.passes_started += 1;
        let segments = self.meta.array().geometry().segments();
        progress.running = Some(Pass {
            id: progress.passes_started,
            started_ms: now_ms(),
            segments,
            ..Pass::default()
        });
        self.persist(progress);
        self.events.raise(
            "SCRUB_STARTED",
            format!(
                "A scrub pass over the NL-SAS array started {cause}: every allocated row of {segments} segments is read and verified, at most {} per second",
                crate::types::format_size(self.settings.rate)
            ),
            None,
            None,
        );
    }

    fn persist(&self, progress: &Progress) {
        *self.last_persist.lock() = Some(Instant::now());
        let written = serde_json::to_vec_pretty(progress)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::private_files::write_atomically(&self.path, &bytes));
        if let Err(err) = written {
            crate::say!(
                "troika: cannot write the scrub progress to {} ({err}); after a restart the scrub starts its pass again",
                self.path.display()
            );
        }
    }

    /// The next segment of the running pass (starting one when the schedule says so), or
    /// how long to rest. Ends the pass when no segment is left.
    fn next(&self) -> Next {
        let interval_ms = self.settings.interval_seconds.saturating_mul(1000);
        let (pass, from) = {
            let mut progress = self.progress.lock();
            if progress.running.is_none() {
                let due = progress.schedule_from_ms.saturating_add(interval_ms);
                let now = now_ms();
                if now < due {
                    return Next::Rest(Duration::from_millis(due - now).min(NAP));
                }
                self.begin_pass(&mut progress, "by its schedule");
            }
            let pass = progress.running.expect("a pass runs");
            (pass.id, pass.next_segment.min(pass.segments))
        };
        let segments = self.meta.array().geometry().segments();
        let found = {
            let state = self.meta.state();
            (from..segments).find(|&segment| state.alloc.may_hold_data(segment))
        };
        match found {
            Some(segment) => Next::Segment { pass, segment },
            None => {
                self.complete(pass);
                Next::Rest(Duration::ZERO)
            }
        }
    }

    /// Ends pass `id` when it is still the running one.
    fn complete(&self, id: u64) {
        let mut progress = self.progress.lock();
        let Some(mut pass) = progress.running.filter(|pass| pass.id == id) else {
            return;
        };
        pass.completed_ms = Some(now_ms());
        pass.next_segment = pass.segments;
        progress.running = None;
        progress.last = Some(pass);
        progress.passes_completed += 1;
        progress.schedule_from_ms = now_ms();
        self.persist(&progress);
        drop(progress);
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        crate::say!("troika: {}", report::completed_text(&pass));
        self.events
            .raise("SCRUB_COMPLETED", report::completed_text(&pass), None, None);
    }

    /// Adds one segment's figures to pass `id` (when it still runs) and to the counters,
    /// and reports its repairs.
    fn record(&self, id: u64, segment: u64, tally: &ScrubTally, seconds: f64) {
        let counters = &self.counters;
        counters.rows.fetch_add(tally.rows, Ordering::Relaxed);
        counters.bytes.fetch_add(tally.bytes, Ordering::Relaxed);
        let repairs = &tally.repairs;
        counters
            .data_repairs
            .fetch_add(repairs.data, Ordering::Relaxed);
        counters
            .parity_repairs
            .fetch_add(repairs.parity, Ordering::Relaxed);
        counters
            .other_repairs
            .fetch_add(repairs.other, Ordering::Relaxed);
        counters
            .unrepairable_rows
            .fetch_add(tally.unrepairable_rows, Ordering::Relaxed);
        {
            let mut progress = self.progress.lock();
            if let Some(pass) = progress.running.as_mut().filter(|pass| pass.id == id) {
                pass.add(tally, seconds);
                pass.next_segment = segment + 1;
                let due = self
                    .last_persist
                    .lock()
                    .is_none_or(|at| at.elapsed() >= PERSIST_EVERY);
                if due || repairs.total() > 0 || tally.unrepairable_rows > 0 {
                    self.persist(&progress);
                }
            }
        }
        if repairs.total() > 0 {
            self.events.raise(
                "SCRUB_REPAIRED",
                report::repaired_text(segment, tally),
                None,
                None,
            );
        }
        if tally.unrepairable_rows > 0 {
            self.events.raise(
                "SCRUB_UNREPAIRABLE",
                report::unrepairable_text(segment, tally),
                None,
                None,
            );
        }
    }

    /// Rests up to `time`, waking early on start, stop or shutdown.
    fn rest(&self, time: Duration) {
        if time.is_zero() {
            return;
        }
        let mut progress = self.progress.lock();
        self.wake.wait_for(&mut progress, time);
    }
}

/// A scrubber with the default settings over `meta`, its progress and events under `dir`,
/// for tests that build a `NodeApi` by hand (no thread runs it).
#[cfg(test)]
pub(crate) fn test_scrubber(meta: &Arc<MetaStore>, dir: &Path) -> Arc<Scrubber> {
    // Its own directory, apart from the event log the test may open in `dir`.
    let dir = dir.join("scrub-test");
    std::fs::create_dir_all(&dir).expect("a directory for the scrub's test files");
    let events = EventLog::open(&dir).expect("an event log in the test directory");
    Scrubber::open(meta.clone(), ScrubSettings::DEFAULT, &dir, events)
}

/// Starts the scrub thread.
pub(super) fn spawn(scrubber: Arc<Scrubber>, shutdown: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("scrub".into())
        .spawn(move || run(&scrubber, &shutdown))
        .expect("the node needs a scrub thread; the process is out of threads")
}

fn run(scrubber: &Scrubber, shutdown: &AtomicBool) {
    let mut ring = match IoRing::new(64) {
        Ok(ring) => ring,
        Err(err) => {
            crate::say!(
                "troika: the scrub thread cannot make an io_uring ({err}); the array will not be scrubbed"
            );
            return;
        }
    };
    let array = scrubber.meta.array();
    let mut buffers = array.scrub_buffers();
    while !shutdown.load(Ordering::Acquire) {
        let (pass, segment) = match scrubber.next() {
            Next::Segment { pass, segment } => (pass, segment),
            Next::Rest(time) => {
                scrubber.rest(time);
                continue;
            }
        };
        let started = Instant::now();
        let host_reads = array.reads_served();
        match array.scrub_segment(&mut ring, &mut buffers, segment) {
            Ok(tally) => {
                let spent = started.elapsed();
                scrubber.record(pass, segment, &tally, spent.as_secs_f64());
                // Pay for the bytes read at the model's rate, and rest as long again as the
                // segment took while hosts were reading, looking at the shutdown flag now
                // and then. (The scrub's own reads are not counted in `reads_served`.)
                let owed =
                    Duration::from_secs_f64(tally.bytes as f64 / scrubber.settings.rate as f64);
                let yielded = if array.reads_served() > host_reads {
                    spent.min(Duration::from_secs(1))
                } else {
                    Duration::ZERO
                };
                let until = started + owed.max(spent + yielded);
                while !shutdown.load(Ordering::Acquire) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    scrubber.rest(left.min(NAP));
                }
            }
            Err(err) => {
                crate::say!(
                    "troika: the scrub of segment {segment} failed ({err}); trying it again"
                );
                scrubber.rest(NAP);
            }
        }
    }
}
