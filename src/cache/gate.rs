//! Admission: how host requests (and the re-mirror worker) enter the cache, and how a
//! change of section ownership stops them for a moment.
//!
//! Every request enters through the gate of the controller whose port it arrived on:
//! one atomic increment of that controller's in-flight count and one load of the node's
//! `paused` flag, both sequentially consistent, so a pause either sees the request counted
//! or the request sees the pause (no lock on the data path). A pause sets the flag, then
//! waits until every gate's count is zero; requests that were waiting inside the cache for
//! space give up with [`IoError::Paused`] and are retried by [`Cache::admitted`] once the
//! pause ends, so nothing waits on a request that waits on the pause.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Cache;
use crate::types::{ControllerId, IoError};

/// One controller's admission count, on its own cache line.
#[repr(align(64))]
#[derive(Default)]
pub struct Gate {
    inflight: AtomicU64,
    /// Its ports take requests (false once the controller failed).
    pub accepting: AtomicBool,
}

/// The node-wide pause: set while ownership changes.
#[derive(Default)]
pub struct Pause {
    pub paused: AtomicBool,
    lock: Mutex<()>,
    resumed: Condvar,
}

/// A request inside the cache; leaving decrements its gate.
pub struct Admission<'a> {
    gate: &'a Gate,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.gate.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Cache {
    /// Enters through controller `port`'s gate, waiting out a pause. Fails with
    /// `ShuttingDown` when that controller's ports no longer take requests.
    pub fn admit(&self, port: ControllerId) -> Result<Admission<'_>, IoError> {
        let gate = &self.domains[port].gate;
        loop {
            gate.inflight.fetch_add(1, Ordering::SeqCst);
            let admission = Admission { gate };
            if !gate.accepting.load(Ordering::SeqCst) {
                return Err(IoError::ShuttingDown);
            }
            if !self.pause.paused.load(Ordering::SeqCst) {
                return Ok(admission);
            }
            drop(admission);
            self.wait_until_resumed();
        }
    }

    /// Runs `operation` admitted through `port`'s gate, again after every pause that
    /// interrupted it.
    pub fn admitted<T>(
        &self,
        port: ControllerId,
        mut operation: impl FnMut() -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        loop {
            let admission = self.admit(port)?;
            match operation() {
                Err(IoError::Paused) => {
                    drop(admission);
                    self.wait_until_resumed();
                }
                other => return other,
            }
        }
    }

    fn wait_until_resumed(&self) {
        let mut guard = self.pause.lock.lock();
        while self.pause.paused.load(Ordering::SeqCst) {
            self.pause
                .resumed
                .wait_for(&mut guard, Duration::from_millis(50));
        }
    }

    /// Stops new requests and waits until none is inside the cache. Requests waiting for
    /// space inside give up and retry after [`Cache::resume`].
    pub fn pause(&self) {
        self.pause.paused.store(true, Ordering::SeqCst);
        // Wake writers waiting for space so they notice the pause.
        self.signals.space.notify_all();
        let started = Instant::now();
        let mut warned = false;
        for domain in self.domains.values() {
            while domain.gate.inflight.load(Ordering::SeqCst) > 0 {
                if !warned && started.elapsed() > Duration::from_secs(30) {
                    warned = true;
                    crate::say!(
                        "troika: requests on controller {} have not left the cache for 30 s during an ownership change; still waiting",
                        domain.id
                    );
                }
                self.signals.space.notify_all();
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Lets requests in again.
    pub fn resume(&self) {
        let _guard = self.pause.lock.lock();
        self.pause.paused.store(false, Ordering::SeqCst);
        self.pause.resumed.notify_all();
    }

    /// Whether a pause asks waiters to give up.
    pub(super) fn pausing(&self) -> bool {
        self.pause.paused.load(Ordering::SeqCst)
    }
}
