//! The node's persistent event log, shown at `/api/rest/events` (and the registry of event
//! types at `/api/rest/events/types`).
//!
//! ## On-disk format
//!
//! `DATA/events.log` holds one event per line, each the JSON of [`Event`] followed by
//! `\n`, ids strictly increasing. [`EventLog::raise`] appends a line with one `write` of
//! the whole line (the file is opened `O_APPEND`), without an fsync, so:
//!
//! - an event survives a crash of the process as soon as `raise` returns;
//! - it survives power loss once [`EventLog::sync`] has run after it (the node calls it
//!   periodically and at shutdown). A power loss may lose the events after that point.
//!
//! On open, the file is read back. A line is good when it ends in `\n`, parses, and its id
//! is above the previous good one. Bad lines after the last good one (a write torn by a
//! kill, or garbage) are cut off by truncating the file to its last good line; bad lines
//! between good ones are skipped and counted. One stderr warning reports either. Ids
//! continue after the last good id, so a restart never reuses one that reached the file.
//!
//! ## Retention
//!
//! The newest `keep` events ([`EVENTS_KEPT`] by default) are kept in memory, compactly
//! (see `memory`). When the file holds more than `keep + keep / 2` lines, a background
//! thread rewrites it with the retained events: `events.log.tmp` is written and synced,
//! renamed over `events.log`, and the directory synced, so a crash at any step leaves
//! either the whole old file or the whole new one. Each rewrite costs O(keep) and happens
//! once per `keep / 2` events: amortized O(1) per event, and never on the raiser's thread.
//! Events raised while a rewrite copies also land in the new file, so after a burst it
//! can hold more than `keep`; the next raise or [`EventLog::sync`] rewrites it again, and
//! open only ever loads the newest `keep`.
//! Open rewrites the file at once if it holds corrupt lines or more than `keep` events.
//!
//! ## Failures
//!
//! Raising never fails and never panics: an I/O error on the log is counted
//! ([`EventLog::write_failures`]), the first one is reported on stderr, and the event is
//! still kept in memory. A write that fails half way is cut off again (`ftruncate` to the
//! last good length) so that it does not corrupt the next line.

mod file;
mod memory;
#[cfg(test)]
mod tests;
mod types;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use anyhow::Context;
use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

pub use types::{EVENT_TYPES, EventType, Level, event_type};

use file::{LOG_NAME, Rewritten};
use memory::Retained;

/// Events kept in memory and on disk by [`EventLog::open`].
pub const EVENTS_KEPT: usize = 500_000;

/// Most events [`EventLog::wait_newer`] returns at once.
pub const MAX_WAIT_BATCH: usize = 1000;

/// Visibility of every event the node raises.
pub const VISIBILITY_CUSTOMER: &str = "CUSTOMER";

/// One event, with InfiniBox's field names; this is also its line in `events.log`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub id: u64,
    pub code: String,
    pub level: Level,
    pub description: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub reporter: String,
    pub affected_entity_id: Option<u64>,
    pub username: Option<String>,
    pub visibility: String,
    /// Always equal to `id`.
    pub seq_num: u64,
}

/// The event log: the newest events in memory and in `events.log`. Shared as
/// `Arc<EventLog>` by everything that raises or reads events.
pub struct EventLog {
    shared: Arc<Shared>,
    /// The background rewrite, if one was started; joined by `sync` and on drop.
    rewriter: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    dir: PathBuf,
    keep: usize,
    state: RwLock<State>,
    /// Id of the newest event, for `wait_newer`.
    newest: Mutex<u64>,
    newer: Condvar,
    write_failures: AtomicU64,
    failure_reported: AtomicBool,
}

struct State {
    retained: Retained,
    next_id: u64,
    /// `events.log`, opened for appending.
    file: File,
    /// Length of the file after its last complete line.
    file_len: u64,
    file_lines: usize,
    /// Rewrite the file when it holds more lines than this.
    rewrite_above: usize,
    rewriting: bool,
}

impl State {
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        match self.file.write_all(line) {
            Ok(()) => {
                self.file_len += line.len() as u64;
                self.file_lines += 1;
                Ok(())
            }
            Err(error) => {
                // Cut a partial line off so the next one starts clean.
                let _ = self.file.set_len(self.file_len);
                Err(error)
            }
        }
    }

    /// Appends to `rewritten` from now on; a later rewrite is due after `keep / 2` more
    /// lines. Called under the same lock as the rewrite's last copy, so that no event
    /// appended in between escapes the count.
    fn install(&mut self, rewritten: Rewritten, keep: usize) {
        self.file = rewritten.file;
        self.file_lines = rewritten.lines;
        self.file_len = rewritten.len;
        self.rewrite_above = rewrite_threshold(keep);
        self.rewriting = false;
    }
}

fn rewrite_threshold(keep: usize) -> usize {
    keep + keep / 2
}

/// The next event of the log, numbered from `state`, with the level and reporter its
/// code is registered with (an unregistered code: INFO from SYSTEM).
fn next_event(
    state: &mut State,
    code: &str,
    description: String,
    affected_entity_id: Option<u64>,
    username: Option<&str>,
) -> Event {
    let (level, reporter) =
        event_type(code).map_or((Level::Info, "SYSTEM"), |kind| (kind.level, kind.reporter));
    let id = state.next_id;
    state.next_id += 1;
    Event {
        id,
        code: code.to_string(),
        level,
        description,
        timestamp: now_ms(),
        reporter: reporter.to_string(),
        affected_entity_id,
        username: username.map(str::to_string),
        visibility: VISIBILITY_CUSTOMER.to_string(),
        seq_num: id,
    }
}

impl EventLog {
    /// Opens (or creates) `data_dir/events.log`, keeping the newest [`EVENTS_KEPT`] events.
    pub fn open(data_dir: &Path) -> anyhow::Result<Arc<EventLog>> {
        EventLog::open_with_capacity(data_dir, EVENTS_KEPT)
    }

    /// Opens (or creates) `data_dir/events.log`, keeping the newest `keep` events (at
    /// least one).
    pub fn open_with_capacity(data_dir: &Path, keep: usize) -> anyhow::Result<Arc<EventLog>> {
        let keep = keep.max(1);
        let path = data_dir.join(LOG_NAME);
        let mut retained = Retained::new(keep);
        let loaded = file::load(&path, |event| retained.push(event))
            .with_context(|| format!("cannot read the event log {}", path.display()))?;
        if let Some(warning) = loaded.warning(&path) {
            crate::say!("{warning}");
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the event log {}", path.display()))?;
        let shared = Arc::new(Shared {
            dir: data_dir.to_path_buf(),
            keep,
            state: RwLock::new(State {
                retained,
                next_id: loaded.last_id + 1,
                file,
                file_len: loaded.len,
                file_lines: loaded.lines,
                rewrite_above: rewrite_threshold(keep),
                rewriting: false,
            }),
            newest: Mutex::new(loaded.last_id),
            newer: Condvar::new(),
            write_failures: AtomicU64::new(0),
            failure_reported: AtomicBool::new(false),
        });
        if loaded.corrupt > 0 || loaded.lines > keep {
            shared
                .rewrite()
                .with_context(|| format!("cannot rewrite the event log {}", path.display()))?;
        }
        Ok(Arc::new(EventLog {
            shared,
            rewriter: Mutex::new(None),
        }))
    }

    /// Records an event of the registered type `code` and returns it. Level and reporter
    /// come from the registry. Never fails: see the module doc for what an I/O error does
    /// and for how durable the event is when this returns.
    pub fn raise(
        &self,
        code: &str,
        description: impl Into<String>,
        affected_entity_id: Option<u64>,
        username: Option<&str>,
    ) -> Event {
        debug_assert!(
            event_type(code).is_some(),
            "event code {code} is not registered"
        );
        let shared = &self.shared;
        let mut state = shared.state.write();
        let event = next_event(
            &mut state,
            code,
            description.into(),
            affected_entity_id,
            username,
        );
        let mut line = serde_json::to_vec(&event).map_err(io::Error::from);
        if let Ok(line) = &mut line {
            line.push(b'\n');
        }
        if let Err(error) = line.and_then(|line| state.append(&line)) {
            shared.record_failure("appending an event", &error);
        }
        state.retained.push(event.clone());
        let start_rewrite = !state.rewriting && state.file_lines > state.rewrite_above;
        state.rewriting |= start_rewrite;
        drop(state);

        *shared.newest.lock() = event.id;
        shared.newer.notify_all();
        if start_rewrite {
            self.start_rewrite();
        }
        event
    }

    /// For a process about to end ([`crate::fatal::durability_failure`]): raises the event
    /// and fsyncs the log, but waits at most `patience` for the log's lock (the failure may
    /// have struck while this very thread held it); when the lock stays busy the event is
    /// not written, and the caller's stderr message is all that remains. Starts no rewrite.
    pub fn raise_final(&self, code: &str, description: &str, patience: Duration) -> bool {
        let shared = &self.shared;
        let Some(mut state) = shared.state.try_write_for(patience) else {
            return false;
        };
        let event = next_event(&mut state, code, description.to_string(), None, None);
        let Ok(mut line) = serde_json::to_vec(&event) else {
            return false;
        };
        line.push(b'\n');
        state.append(&line).is_ok() && state.file.sync_data().is_ok()
    }

    fn start_rewrite(&self) {
        let mut rewriter = self.rewriter.lock();
        if let Some(finished) = rewriter.take() {
            // It cleared `rewriting` as its last step, so it has ended or is about to.
            let _ = finished.join();
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("events-rewrite".to_string())
            .spawn(move || shared.rewrite_flagged());
        match spawned {
            Ok(handle) => *rewriter = Some(handle),
            Err(error) => self.shared.rewrite_failed(&error),
        }
    }

    /// Makes every event raised so far durable against power loss: waits for a running
    /// rewrite, runs one now if the file has grown past the threshold meanwhile (events
    /// raised during a rewrite can leave it there), then fsyncs the log. A failure is
    /// counted like a failed write.
    pub fn sync(&self) {
        let mut rewriter = self.rewriter.lock();
        if let Some(running) = rewriter.take() {
            let _ = running.join();
        }
        let mut state = self.shared.state.write();
        let rewrite_now = !state.rewriting && state.file_lines > state.rewrite_above;
        state.rewriting |= rewrite_now;
        drop(state);
        if rewrite_now {
            self.shared.rewrite_flagged();
        }
        drop(rewriter);
        let state = self.shared.state.read();
        if let Err(error) = state.file.sync_data() {
            self.shared.record_failure("syncing", &error);
        }
    }

    /// How many writes, syncs or rewrites of the log have failed since open.
    pub fn write_failures(&self) -> u64 {
        self.shared.write_failures.load(Ordering::Relaxed)
    }

    /// Number of retained events.
    pub fn len(&self) -> usize {
        self.shared.state.read().retained.len()
    }

    /// Whether no event is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Id of the newest event ever raised (also across restarts), 0 if none.
    pub fn last_id(&self) -> u64 {
        self.shared.state.read().next_id - 1
    }

    /// Walks the retained events once, newest or oldest first, and returns how many
    /// `filter` accepts and those of them at positions `skip..skip + take` in that order.
    /// `filter` sees a scratch `Event` refilled in place, so events it rejects cost no
    /// allocation; holds the read lock for the walk (40 to 90 ms at 500,000 events on
    /// the build machine).
    pub fn query(
        &self,
        filter: &dyn Fn(&Event) -> bool,
        newest_first: bool,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<Event>) {
        self.shared
            .state
            .read()
            .retained
            .query(filter, newest_first, skip, take)
    }

    /// The retained events with ids above `after_id`, oldest first, at most
    /// [`MAX_WAIT_BATCH`]; waits up to `timeout` for one if there is none yet.
    pub fn wait_newer(&self, after_id: u64, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now().checked_add(timeout);
        let mut newest = self.shared.newest.lock();
        while *newest <= after_id {
            let timed_out = match deadline {
                Some(deadline) => self.shared.newer.wait_until(&mut newest, deadline),
                None => {
                    self.shared.newer.wait(&mut newest);
                    continue;
                }
            };
            if timed_out.timed_out() {
                break;
            }
        }
        drop(newest);
        self.shared
            .state
            .read()
            .retained
            .after(after_id, MAX_WAIT_BATCH)
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if let Some(rewriter) = self.rewriter.get_mut().take() {
            let _ = rewriter.join();
        }
    }
}

impl Shared {
    fn record_failure(&self, what: &str, error: &io::Error) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        if !self.failure_reported.swap(true, Ordering::Relaxed) {
            crate::say!(
                "troika: event log in {}: {what} failed: {error}; events stay in memory \
                 (later failures are only counted)",
                self.dir.display()
            );
        }
    }

    /// Runs a rewrite whose `rewriting` flag the caller has set.
    fn rewrite_flagged(&self) {
        if let Err(error) = self.rewrite() {
            self.rewrite_failed(&error);
        }
    }

    /// Counts a failed rewrite and retries only after another `keep / 2` lines.
    fn rewrite_failed(&self, error: &io::Error) {
        self.record_failure("rewriting", error);
        let mut state = self.state.write();
        state.rewrite_above = state.file_lines + self.keep / 2;
        state.rewriting = false;
    }
}
