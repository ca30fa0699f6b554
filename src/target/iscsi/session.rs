//! Sessions: the seam between the iSCSI protocol and the SCSI command set, and the
//! per-portal session table used for session reinstatement.
//!
//! The protocol layer talks to a [`Directory`] (names, portals, authentication) and, once a
//! session is up, to its [`CommandSink`] (execute a CDB on a LUN, LUN reset, nexus lost).
//! [`BackendDirectory`] implements both over the node's [`IscsiBackend`]: the LUN list is
//! re-read when the backend's generation changes, logical units are opened lazily and
//! kept for the life of the session. Tests implement the seam with in-memory fakes.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::{Authentication, IscsiBackend, Portal};
use crate::target::scsi::{self, CopyPeers, LogicalUnit, Nexus, Response};

/// What the login and discovery need from the node.
pub trait Directory: Send + Sync {
    fn target_name(&self) -> String;
    fn portals(&self) -> Vec<Portal>;
    fn authentication(&self, initiator: &str) -> Option<Authentication>;
    /// The command sink of a new normal session of `initiator` on portal `tpgt`.
    fn open_session(&self, initiator: &str, tpgt: u16) -> Box<dyn CommandSink>;
}

/// Where a session's SCSI commands go. `lun` is the decoded LUN number.
pub trait CommandSink: Send + Sync {
    fn execute(
        &self,
        nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    );
    /// LOGICAL UNIT RESET; false when the session does not see `lun`.
    fn lun_reset(&self, nexus: &Nexus, lun: u64) -> bool;
    /// The LUNs the session sees now.
    fn luns(&self) -> Vec<u64>;
    /// The session is over.
    fn nexus_lost(&self, nexus: &Nexus);
}

/// Decodes an 8-byte LUN field: single-level peripheral (bus 0) or flat addressing.
pub fn lun_from_wire(field: u64) -> Option<u64> {
    let bytes = field.to_be_bytes();
    if bytes[2..].iter().any(|b| *b != 0) {
        return None;
    }
    match bytes[0] >> 6 {
        0 if bytes[0] == 0 => Some(bytes[1] as u64),
        1 => Some((((bytes[0] & 0x3f) as u64) << 8) | bytes[1] as u64),
        _ => None,
    }
}

/// The [`Directory`] over the node's backend.
pub struct BackendDirectory(pub Arc<dyn IscsiBackend>);

impl Directory for BackendDirectory {
    fn target_name(&self) -> String {
        self.0.target_name()
    }
    fn portals(&self) -> Vec<Portal> {
        self.0.portals()
    }
    fn authentication(&self, initiator: &str) -> Option<Authentication> {
        self.0.authentication(initiator)
    }
    fn open_session(&self, initiator: &str, tpgt: u16) -> Box<dyn CommandSink> {
        Box::new(BackendSink {
            backend: Arc::clone(&self.0),
            initiator: initiator.to_owned(),
            tpgt,
            state: RwLock::new(SinkState {
                generation: u64::MAX,
                luns: Vec::new(),
                units: HashMap::new(),
            }),
        })
    }
}

struct SinkState {
    generation: u64,
    luns: Vec<(u64, u32)>,
    units: HashMap<u32, LogicalUnit>,
}

struct BackendSink {
    backend: Arc<dyn IscsiBackend>,
    initiator: String,
    tpgt: u16,
    state: RwLock<SinkState>,
}

impl BackendSink {
    fn refresh(&self) {
        let generation = self.backend.generation();
        if self.state.read().generation == generation {
            return;
        }
        let luns = self.backend.luns(&self.initiator);
        let mut state = self.state.write();
        state.generation = generation;
        state.luns = luns;
    }

    /// The unit behind `lun`, opened on first use.
    fn unit(&self, lun: u64) -> Option<LogicalUnit> {
        let dataset = {
            let state = self.state.read();
            let (_, dataset) = *state.luns.iter().find(|(l, _)| *l == lun)?;
            if let Some(unit) = state.units.get(&dataset) {
                return Some(unit.clone());
            }
            dataset
        };
        let unit = self.backend.open_unit(dataset, self.tpgt)?;
        self.state.write().units.insert(dataset, unit.clone());
        Some(unit)
    }
}

impl CopyPeers for BackendSink {
    fn by_naa(&self, naa: &[u8]) -> Option<LogicalUnit> {
        let luns: Vec<u64> = self.state.read().luns.iter().map(|(l, _)| *l).collect();
        luns.into_iter()
            .filter_map(|lun| self.unit(lun))
            .find(|unit| unit.identity.naa[..] == *naa)
    }
}

impl CommandSink for BackendSink {
    fn execute(
        &self,
        nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) {
        self.refresh();
        if cdb.first() == Some(&0xa0) {
            let luns: Vec<u64> = self.state.read().luns.iter().map(|(l, _)| *l).collect();
            scsi::report_luns(&luns, cdb, response);
            return;
        }
        match self.unit(lun) {
            Some(unit) => unit.execute(nexus, cdb, data_out, self, response),
            None => scsi::lun_not_present(cdb, response),
        }
    }

    fn lun_reset(&self, nexus: &Nexus, lun: u64) -> bool {
        self.refresh();
        match self.unit(lun) {
            Some(unit) => {
                unit.lun_reset(nexus);
                true
            }
            None => false,
        }
    }

    fn luns(&self) -> Vec<u64> {
        self.refresh();
        self.state.read().luns.iter().map(|(l, _)| *l).collect()
    }

    fn nexus_lost(&self, nexus: &Nexus) {
        let units: Vec<LogicalUnit> = self.state.read().units.values().cloned().collect();
        for unit in units {
            unit.nexus_lost(nexus);
        }
    }
}

/// A running session as the session table sees it.
pub struct SessionControl {
    pub stop: AtomicBool,
    stream: TcpStream,
    done: Mutex<bool>,
    finished: Condvar,
}

impl SessionControl {
    pub fn new(stream: TcpStream) -> Arc<Self> {
        Arc::new(SessionControl {
            stop: AtomicBool::new(false),
            stream,
            done: Mutex::new(false),
            finished: Condvar::new(),
        })
    }

    pub fn mark_done(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.finished.notify_all();
    }

    /// Stops the session and waits (bounded) until its connection has cleaned up.
    fn close_and_wait(&self, limit: Duration) {
        self.stop.store(true, Ordering::Release);
        super::wire::shutdown(&self.stream);
        let deadline = Instant::now() + limit;
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            done = self
                .finished
                .wait_timeout(done, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A session's key for reinstatement: initiator name and ISID.
type SessionKey = (String, [u8; 6]);

/// The sessions of one portal, by (initiator name, ISID).
#[derive(Default)]
pub struct SessionTable {
    sessions: Mutex<HashMap<SessionKey, Arc<SessionControl>>>,
    next_tsih: Mutex<u16>,
}

impl SessionTable {
    pub fn allocate_tsih(&self) -> u16 {
        let mut next = self
            .next_tsih
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *next = next.wrapping_add(1).max(1);
        *next
    }

    /// Registers a new session, closing (reinstating) an older one with the same key first.
    pub fn register(&self, initiator: &str, isid: [u8; 6], control: Arc<SessionControl>) {
        let key = (initiator.to_owned(), isid);
        let old = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, control);
        if let Some(old) = old {
            old.close_and_wait(Duration::from_secs(5));
        }
    }

    /// Forgets the session if it is still the registered one.
    pub fn remove(&self, initiator: &str, isid: [u8; 6], control: &Arc<SessionControl>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (initiator.to_owned(), isid);
        if sessions.get(&key).is_some_and(|c| Arc::ptr_eq(c, control)) {
            sessions.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lun_from_wire;

    #[test]
    fn lun_encodings() {
        assert_eq!(lun_from_wire(0), Some(0));
        assert_eq!(lun_from_wire(0x0005_0000_0000_0000), Some(5));
        assert_eq!(lun_from_wire(0x4123_0000_0000_0000), Some(0x123));
        assert_eq!(lun_from_wire(0x0105_0000_0000_0000), None);
        assert_eq!(lun_from_wire(0x0005_0000_0000_0001), None);
        assert_eq!(lun_from_wire(0x8000_0000_0000_0000), None);
    }
}
