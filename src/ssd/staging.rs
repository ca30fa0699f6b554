//! A partition's admission staging ring: offered blocks wait here for the writer.
//!
//! Fixed capacity, allocated at open: `pages` 4 KiB aligned buffers and an identity per
//! page. `offer` copies a block in at the tail under a try-lock and never waits; the writer
//! takes a run from the head, writes it straight from the staging pages, then releases
//! it. Positions only grow (`head <= taken <= tail`, `tail - head <= capacity`), so the
//! page an offer fills (`tail`) is never one the writer holds (`head..taken`).

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::BlockIdentity;
use super::format::{PAGE, empty_identity};
use crate::io::AlignedBuf;

/// Staging pages per partition (4 MiB).
pub(super) const STAGING_PAGES: usize = 1024;
/// Attempts an offer makes at the staging lock before it gives up (it never waits).
const TRY_LOCKS: usize = 8;

struct Positions {
    /// Oldest page not yet released by the writer.
    head: u64,
    /// Pages up to here are held by the writer.
    taken: u64,
    /// Next page an offer fills.
    tail: u64,
    identities: Box<[BlockIdentity]>,
}

pub(super) struct Staging {
    positions: Mutex<Positions>,
    /// Signalled when something is staged (the writer waits on it) and when pages are
    /// released (drains wait on it).
    changed: Condvar,
    pages: Box<[Mutex<AlignedBuf>]>,
}

/// A run of staged pages the writer holds.
pub(super) struct Taken {
    pub first: u64,
    pub count: usize,
}

impl Staging {
    pub fn new(pages: usize) -> Staging {
        Staging {
            positions: Mutex::new(Positions {
                head: 0,
                taken: 0,
                tail: 0,
                identities: vec![empty_identity(0); pages].into_boxed_slice(),
            }),
            changed: Condvar::new(),
            pages: (0..pages)
                .map(|_| Mutex::new(AlignedBuf::new(PAGE)))
                .collect(),
        }
    }

    fn capacity(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Copies a block in; false when the ring is full or busy this instant.
    pub fn offer(&self, identity: BlockIdentity, bytes: &[u8]) -> bool {
        // The writer holds this lock only to move positions: a few tries get it.
        let Some(mut positions) = (0..TRY_LOCKS).find_map(|_| {
            let positions = self.positions.try_lock();
            if positions.is_none() {
                std::hint::spin_loop();
            }
            positions
        }) else {
            return false;
        };
        if positions.tail - positions.head >= self.capacity() {
            return false;
        }
        let at = (positions.tail % self.capacity()) as usize;
        // Never contended: the writer holds only pages in head..taken.
        self.pages[at].lock()[..PAGE].copy_from_slice(&bytes[..PAGE]);
        positions.identities[at] = identity;
        positions.tail += 1;
        drop(positions);
        self.changed.notify_all();
        true
    }

    /// Takes up to `max` staged pages (their identities go to `identities`), waiting up
    /// to `wait` for the first one.
    pub fn take(&self, max: usize, wait: Duration, identities: &mut Vec<BlockIdentity>) -> Taken {
        let mut positions = self.positions.lock();
        if positions.tail == positions.taken {
            self.changed.wait_for(&mut positions, wait);
        }
        let count = ((positions.tail - positions.taken) as usize).min(max);
        let first = positions.taken;
        identities.clear();
        for index in 0..count as u64 {
            identities.push(positions.identities[((first + index) % self.capacity()) as usize]);
        }
        positions.taken += count as u64;
        Taken { first, count }
    }

    /// Locks the pages of a taken run (uncontended: offers never touch them).
    pub fn lock_pages<'a>(&'a self, taken: &Taken, out: &mut Vec<MutexGuard<'a, AlignedBuf>>) {
        for index in 0..taken.count as u64 {
            out.push(self.pages[((taken.first + index) % self.capacity()) as usize].lock());
        }
    }

    /// Gives a taken run back to the offers.
    pub fn release(&self, taken: &Taken) {
        let mut positions = self.positions.lock();
        debug_assert_eq!(positions.head, taken.first, "runs are released in order");
        positions.head += taken.count as u64;
        drop(positions);
        self.changed.notify_all();
    }

    /// True when everything offered so far has been written (or dropped by the writer).
    pub fn is_drained(&self) -> bool {
        let positions = self.positions.lock();
        positions.head == positions.tail
    }

    /// Waits up to `wait` for staging to change.
    pub fn wait_change(&self, wait: Duration) {
        let mut positions = self.positions.lock();
        if positions.head != positions.tail {
            self.changed.wait_for(&mut positions, wait);
        }
    }

    /// Wakes a waiting writer (to see a stop or failure).
    pub fn wake(&self) {
        self.changed.notify_all();
    }
}
