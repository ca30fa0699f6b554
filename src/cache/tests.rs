//! Fault points for the fake-controller harness (`tests/` of the controllers layer): a
//! write or a destage can be made to stop at a chosen step, as if its controller lost
//! power there.

use parking_lot::Mutex;

use super::Cache;
use crate::types::IoError;

/// A step of a write or a destage where a test can cut it short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// The owner's copy is written, the mirror's not yet.
    AfterPrimary,
    /// Both copies are written, the mirror not yet settled.
    AfterMirror,
    /// A destage batch's rows are on the array, their map entries not committed.
    DestageBeforeCommit,
    /// The map entries are committed, the cache blocks not yet marked clean.
    DestageAfterCommit,
}

#[derive(Default)]
pub struct Faults {
    armed: Mutex<Option<FaultPoint>>,
    /// Destage only when a test asks for it.
    pub manual_destage: std::sync::atomic::AtomicBool,
}

impl Cache {
    /// Makes the next pass through `point` stop there.
    pub fn arm_fault(&self, point: FaultPoint) {
        *self.faults.armed.lock() = Some(point);
    }

    /// Whether an armed fault is still waiting for its point.
    pub fn fault_pending(&self) -> bool {
        self.faults.armed.lock().is_some()
    }

    /// Turns the background destage off (the test destages with [`Cache::destage_now`]).
    pub fn set_manual_destage(&self, manual: bool) {
        self.faults
            .manual_destage
            .store(manual, std::sync::atomic::Ordering::Release);
    }

    pub fn fault_point(&self, at: FaultPoint) -> Result<(), IoError> {
        let mut armed = self.faults.armed.lock();
        if *armed == Some(at) {
            *armed = None;
            return Err(IoError::Media {
                volume: String::new(),
                detail: format!("injected failure at {at:?}"),
            });
        }
        Ok(())
    }

    /// Runs one destage batch of domain `index` on this thread.
    pub fn destage_now(&self, index: usize) -> Result<(), String> {
        let mut batch = self.new_batch(index);
        self.destage_batch(index, &mut batch)
    }

    pub(super) fn fault_hit(&self, at: FaultPoint) -> bool {
        self.fault_point(at).is_err()
    }
}
