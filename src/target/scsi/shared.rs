//! State shared by every path to one dataset: reservations, unit attentions, the
//! COMPARE AND WRITE interlock and the results of recent EXTENDED COPY commands.
//!
//! Interlock: the LBA space is cut into 64 Ki-block regions mapped onto 64 stripes. A
//! command that writes takes the read side of every stripe its range touches, in
//! ascending stripe order (so two multi-stripe commands cannot deadlock); COMPARE AND
//! WRITE takes the write side, so its read-compare-write sees no other write in between.
//!
//! EXTENDED COPY results are kept per I_T nexus (list identifiers belong to the nexus
//! that sent the copy, SPC-5) and forgotten with it.
//!
//! Unit attentions: a nexus is registered by its first command, with nothing pending (an
//! initiator that logs in again after a connection loss must not have its re-issued
//! commands fail: libiscsi's reconnect does not clear attentions first, and a node that
//! has been running is not newly powered on for it); later conditions are queued per
//! I_T nexus (initiator port and relative target port: two paths of one initiator port
//! are two nexuses; no duplicates, bounded) and reported oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::pr::{PendingAttention, Reservations};
use super::registry::ReservationsError;
use super::{LuShared, Nexus, PrStore};

/// Stripes of the interlock.
const STRIPES: usize = 64;
/// log2 of the blocks per interlock region.
const REGION_SHIFT: u32 = 16;
/// Unit attentions kept per initiator port; older ones are dropped beyond it.
const MAX_PENDING_ATTENTIONS: usize = 8;
/// Copy results kept per unit for RECEIVE COPY RESULTS.
const MAX_COPY_RESULTS: usize = 16;

/// What a finished EXTENDED COPY left for RECEIVE COPY RESULTS (COPY STATUS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CopyResult {
    pub list_id: u8,
    /// COPY MANAGER STATUS: 0x01 done without errors, 0x02 done with errors.
    pub status: u8,
    pub segments_processed: u16,
    /// Bytes copied.
    pub transferred: u64,
}

pub(crate) struct Inner {
    dataset_id: u32,
    pr_store: Arc<dyn PrStore>,
    reservations: Mutex<Reservations>,
    /// Some reservation (SPC-2 or persistent) is held: commands must ask `reservations`.
    /// Written under the `reservations` lock after every change, read without it.
    reserved: AtomicBool,
    /// Pending unit attentions per initiator port, then per relative target port: looked
    /// up by the port name without building a key (every command looks).
    attentions: Mutex<HashMap<String, PathAttentions>>,
    stripes: [RwLock<()>; STRIPES],
    copies: Mutex<VecDeque<(NexusKey, CopyResult)>>,
}

/// One initiator port's pending unit attentions, per relative target port (oldest first).
type PathAttentions = Vec<(u16, VecDeque<(u8, u8)>)>;

/// The I_T nexus a copy result belongs to: initiator port, relative target port.
type NexusKey = (String, u16);

fn key_of(nexus: &Nexus) -> NexusKey {
    (nexus.initiator_port.clone(), nexus.relative_port)
}

/// Guards of the stripes one command holds; released on drop.
pub(crate) struct StripeGuards<'a> {
    _read: [Option<RwLockReadGuard<'a, ()>>; STRIPES],
    _write: [Option<RwLockWriteGuard<'a, ()>>; STRIPES],
}

/// Which stripes `[lba, lba+blocks)` touches, as a bit mask.
fn stripe_mask(lba: u64, blocks: u64) -> u64 {
    if blocks == 0 {
        return 0;
    }
    let first = lba >> REGION_SHIFT;
    let last = lba.saturating_add(blocks - 1) >> REGION_SHIFT;
    if last - first >= STRIPES as u64 - 1 {
        return u64::MAX;
    }
    let mut mask = 0u64;
    for region in first..=last {
        mask |= 1 << (region % STRIPES as u64);
    }
    mask
}

impl LuShared {
    /// The shared state of `dataset_id`, with its saved reservations; refused when they
    /// cannot be read or decoded (never taken for "none").
    pub(crate) fn new(
        dataset_id: u32,
        pr_store: Arc<dyn PrStore>,
    ) -> Result<LuShared, ReservationsError> {
        let unreadable = |reason: String| ReservationsError {
            dataset_id,
            location: pr_store.location(dataset_id),
            reason,
        };
        let saved = pr_store
            .load(dataset_id)
            .map_err(|err| unreadable(err.to_string()))?;
        let reservations =
            Reservations::load(saved.as_deref()).map_err(|err| unreadable(err.to_string()))?;
        Ok(LuShared {
            inner: Inner {
                dataset_id,
                reserved: AtomicBool::new(!reservations.reserves_nothing()),
                reservations: Mutex::new(reservations),
                pr_store,
                attentions: Mutex::new(HashMap::new()),
                stripes: std::array::from_fn(|_| RwLock::new(())),
                copies: Mutex::new(VecDeque::new()),
            },
        })
    }

    /// Runs `change` on the unit's reservations, locked, and notes whether any is held.
    pub(crate) fn with_reservations<T>(&self, change: impl FnOnce(&mut Reservations) -> T) -> T {
        let mut reservations = self.inner.reservations.lock();
        let outcome = change(&mut reservations);
        self.inner
            .reserved
            .store(!reservations.reserves_nothing(), Ordering::Release);
        outcome
    }

    /// Whether `cdb` from `nexus` may run under the unit's reservations; without any
    /// reservation held, without taking the lock.
    pub(crate) fn reservations_allow(&self, nexus: &Nexus, cdb: &[u8]) -> bool {
        !self.inner.reserved.load(Ordering::Acquire)
            || self.inner.reservations.lock().allows(nexus, cdb)
    }

    /// Saves the persistent part of `reservations` (PR OUT answers GOOD only after it).
    pub(crate) fn persist(&self, reservations: &Reservations) -> std::io::Result<()> {
        self.inner
            .pr_store
            .save(self.inner.dataset_id, &reservations.encode())
    }

    pub(crate) fn remove_persisted(&self) {
        self.inner.pr_store.remove(self.inner.dataset_id);
    }

    /// Takes the read side of the stripes `[lba, lba+blocks)` touches (plain writes).
    pub(crate) fn lock_for_write(&self, lba: u64, blocks: u64) -> StripeGuards<'_> {
        let mask = stripe_mask(lba, blocks);
        let mut read: [Option<RwLockReadGuard<'_, ()>>; STRIPES] = std::array::from_fn(|_| None);
        for (stripe, slot) in read.iter_mut().enumerate() {
            if mask & (1 << stripe) != 0 {
                *slot = Some(self.inner.stripes[stripe].read());
            }
        }
        StripeGuards {
            _read: read,
            _write: std::array::from_fn(|_| None),
        }
    }

    /// Takes the write side of the stripes `[lba, lba+blocks)` touches (COMPARE AND WRITE).
    pub(crate) fn lock_exclusive(&self, lba: u64, blocks: u64) -> StripeGuards<'_> {
        let mask = stripe_mask(lba, blocks);
        let mut write: [Option<RwLockWriteGuard<'_, ()>>; STRIPES] = std::array::from_fn(|_| None);
        for (stripe, slot) in write.iter_mut().enumerate() {
            if mask & (1 << stripe) != 0 {
                *slot = Some(self.inner.stripes[stripe].write());
            }
        }
        StripeGuards {
            _read: std::array::from_fn(|_| None),
            _write: write,
        }
    }

    /// Registers `nexus` (with nothing pending for a newcomer) and, when `consume`, takes
    /// its oldest pending unit attention.
    pub(crate) fn attention(&self, nexus: &Nexus, consume: bool) -> Option<(u8, u8)> {
        let mut attentions = self.inner.attentions.lock();
        let paths = match attentions.get_mut(nexus.initiator_port.as_str()) {
            Some(paths) => paths,
            None => attentions.entry(nexus.initiator_port.clone()).or_default(),
        };
        let queue = match paths
            .iter()
            .position(|(port, _)| *port == nexus.relative_port)
        {
            Some(index) => &mut paths[index].1,
            None => {
                paths.push((nexus.relative_port, VecDeque::new()));
                &mut paths.last_mut().expect("just pushed").1
            }
        };
        if consume { queue.pop_front() } else { None }
    }

    /// Queues `(asc, ascq)` for every known I_T nexus except `except`.
    pub(crate) fn raise_for_all(&self, asc: u8, ascq: u8, except: Option<&Nexus>) {
        let mut attentions = self.inner.attentions.lock();
        for (initiator_port, paths) in attentions.iter_mut() {
            for (relative_port, queue) in paths.iter_mut() {
                let skipped = except.is_some_and(|nexus| {
                    nexus.initiator_port == *initiator_port && nexus.relative_port == *relative_port
                });
                if !skipped {
                    push_attention(queue, asc, ascq);
                }
            }
        }
    }

    /// Queues the unit attentions a PR OUT asked for, on every known nexus of each named
    /// initiator port (a nexus not seen yet has nothing to be told).
    pub(crate) fn raise_pending(&self, pending: &[PendingAttention]) {
        let mut attentions = self.inner.attentions.lock();
        for attention in pending {
            if let Some(paths) = attentions.get_mut(attention.initiator_port.as_str()) {
                for (_, queue) in paths.iter_mut() {
                    push_attention(queue, attention.asc, attention.ascq);
                }
            }
        }
    }

    /// Forgets the unit attentions and copy results of a nexus that is gone.
    pub(crate) fn forget_nexus(&self, nexus: &Nexus) {
        let owner = key_of(nexus);
        let mut attentions = self.inner.attentions.lock();
        if let Some(paths) = attentions.get_mut(nexus.initiator_port.as_str()) {
            paths.retain(|(port, _)| *port != nexus.relative_port);
            if paths.is_empty() {
                attentions.remove(nexus.initiator_port.as_str());
            }
        }
        drop(attentions);
        self.inner.copies.lock().retain(|(who, _)| *who != owner);
    }

    /// Keeps the result of a copy `nexus` finished (newest replaces one of the same
    /// nexus with the same list id).
    pub(crate) fn record_copy(&self, nexus: &Nexus, result: CopyResult) {
        let owner = key_of(nexus);
        let mut copies = self.inner.copies.lock();
        copies.retain(|(who, kept)| !(*who == owner && kept.list_id == result.list_id));
        if copies.len() == MAX_COPY_RESULTS {
            copies.pop_front();
        }
        copies.push_back((owner, result));
    }

    /// The result of `nexus`'s copy with `list_id`, if still kept.
    pub(crate) fn copy_result(&self, nexus: &Nexus, list_id: u8) -> Option<CopyResult> {
        let owner = key_of(nexus);
        self.inner
            .copies
            .lock()
            .iter()
            .find(|(who, kept)| *who == owner && kept.list_id == list_id)
            .map(|(_, kept)| *kept)
    }
}

fn push_attention(queue: &mut VecDeque<(u8, u8)>, asc: u8, ascq: u8) {
    if queue.contains(&(asc, ascq)) {
        return;
    }
    if queue.len() == MAX_PENDING_ATTENTIONS {
        queue.pop_front();
    }
    queue.push_back((asc, ascq));
}

#[cfg(test)]
mod tests {
    use super::stripe_mask;

    #[test]
    fn stripe_mask_covers_touched_regions() {
        assert_eq!(stripe_mask(0, 0), 0);
        assert_eq!(stripe_mask(0, 1), 1);
        assert_eq!(stripe_mask(65535, 2), 0b11);
        assert_eq!(stripe_mask(63 << 16, (1 << 16) + 1), 1 << 63 | 1);
        assert_eq!(stripe_mask(0, u64::MAX), u64::MAX);
        assert_eq!(stripe_mask(u64::MAX, 1), 1 << 63);
    }
}
