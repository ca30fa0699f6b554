//! Segment guards: the heal and the scrub each work on one segment at a time, reading its
//! rows and rewriting some of their units in place. Neither may race a row write into the
//! same segment (a segment freed and reused gets new rows): a holder could read a
//! half-written row, or put an older unit over a newer row.
//!
//! What the guard promises: while a holder holds segment `s`, no [`Array::write_rows`]
//! call that writes a row of `s` is in flight; a row write waits while its segments are
//! held, and taking a segment waits for the row writes already in flight into it. The heal
//! and the scrub never hold the same segment at once.
//!
//! It costs a row write two atomic operations while nothing is held: writers announce
//! themselves in `fast_writers` and then look at `holders`; a holder raises `holders` and
//! then waits for `fast_writers` to drain. Both steps are sequentially consistent, so of a
//! writer and a holder arriving together at least one sees the other (Dekker's pattern):
//! either the writer takes the slow path under the lock, or the holder waits for it.
//! Writers that see a holder register their segments under the lock instead.
//!
//! [`Array::write_rows`]: super::Array::write_rows

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use parking_lot::{Condvar, Mutex};

/// Who holds a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    Heal = 0,
    Scrub = 1,
}

#[derive(Default)]
struct GuardState {
    /// The segment each holder holds, indexed by [`Holder`].
    held: [Option<u64>; 2],
    /// Segments of the row writes in flight that registered under the lock (one entry
    /// per write and segment).
    writing: Vec<u64>,
}

/// The guards of one array (see the module doc).
#[derive(Default)]
pub(super) struct SegmentGuards {
    holders: AtomicUsize,
    fast_writers: AtomicUsize,
    state: Mutex<GuardState>,
    changed: Condvar,
}

/// A row write in flight; dropping it ends the write.
pub(super) struct WriteTicket<'a> {
    guards: &'a SegmentGuards,
    /// Empty for a write that saw no holder.
    segments: Vec<u64>,
    fast: bool,
}

/// A held segment; dropping it lets row writes into the segment go on.
pub(super) struct HoldTicket<'a> {
    guards: &'a SegmentGuards,
    holder: Holder,
}

impl SegmentGuards {
    /// Enters a row write into `segments`, waiting while any of them is held.
    pub(super) fn enter_write(&self, segments: impl FnOnce() -> Vec<u64>) -> WriteTicket<'_> {
        self.fast_writers.fetch_add(1, SeqCst);
        if self.holders.load(SeqCst) == 0 {
            return WriteTicket {
                guards: self,
                segments: Vec::new(),
                fast: true,
            };
        }
        self.fast_writers.fetch_sub(1, SeqCst);
        let segments = segments();
        let mut state = self.state.lock();
        // A holder may be waiting for the fast writers to drain.
        self.changed.notify_all();
        while state
            .held
            .iter()
            .flatten()
            .any(|held| segments.contains(held))
        {
            self.changed.wait(&mut state);
        }
        state.writing.extend_from_slice(&segments);
        WriteTicket {
            guards: self,
            segments,
            fast: false,
        }
    }

    /// Holds `segment` for `holder`: waits until no other holder holds it and every row
    /// write in flight into it has ended.
    pub(super) fn hold(&self, holder: Holder, segment: u64) -> HoldTicket<'_> {
        let mut state = self.state.lock();
        while state.held[holder as usize].is_some()
            || state.held.iter().flatten().any(|&held| held == segment)
        {
            self.changed.wait(&mut state);
        }
        state.held[holder as usize] = Some(segment);
        self.holders.fetch_add(1, SeqCst);
        while self.fast_writers.load(SeqCst) > 0 || state.writing.contains(&segment) {
            self.changed.wait(&mut state);
        }
        HoldTicket {
            guards: self,
            holder,
        }
    }

    /// The segment `holder` holds, if any.
    #[cfg(test)]
    pub(super) fn held_by(&self, holder: Holder) -> Option<u64> {
        self.state.lock().held[holder as usize]
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        let guards = self.guards;
        if self.fast {
            guards.fast_writers.fetch_sub(1, SeqCst);
            if guards.holders.load(SeqCst) > 0 {
                // Under the lock, so a holder about to wait cannot miss the wake-up.
                let _state = guards.state.lock();
                guards.changed.notify_all();
            }
            return;
        }
        let mut state = guards.state.lock();
        for segment in &self.segments {
            if let Some(at) = state.writing.iter().position(|s| s == segment) {
                state.writing.swap_remove(at);
            }
        }
        guards.changed.notify_all();
    }
}

impl Drop for HoldTicket<'_> {
    fn drop(&mut self) {
        let mut state = self.guards.state.lock();
        state.held[self.holder as usize] = None;
        self.guards.holders.fetch_sub(1, SeqCst);
        self.guards.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn a_held_segment_keeps_its_writers_out_and_others_go_on() {
        let guards = Arc::new(SegmentGuards::default());
        let held = guards.hold(Holder::Scrub, 3);
        // A write elsewhere goes on at once.
        drop(guards.enter_write(|| vec![4, 5]));
        let entered = Arc::new(AtomicBool::new(false));
        let writer = {
            let (guards, entered) = (guards.clone(), entered.clone());
            std::thread::spawn(move || {
                let _ticket = guards.enter_write(|| vec![2, 3]);
                entered.store(true, SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!entered.load(SeqCst), "a write into a held segment went on");
        drop(held);
        writer.join().unwrap();
        assert!(entered.load(SeqCst));
        assert_eq!(guards.held_by(Holder::Scrub), None);
    }

    #[test]
    fn a_holder_waits_for_writes_in_flight_and_for_the_other_holder() {
        let guards = Arc::new(SegmentGuards::default());
        let write = guards.enter_write(|| vec![9]);
        let held = Arc::new(AtomicBool::new(false));
        let hold_in_thread = |holder: Holder, segment: u64| {
            let (guards, held) = (guards.clone(), held.clone());
            held.store(false, SeqCst);
            std::thread::spawn(move || {
                let _ticket = guards.hold(holder, segment);
                held.store(true, SeqCst);
            })
        };
        let scrub = hold_in_thread(Holder::Scrub, 9);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !held.load(SeqCst),
            "the scrub took a segment before a write ended"
        );
        drop(write);
        scrub.join().unwrap();
        assert!(held.load(SeqCst));

        let heal = guards.hold(Holder::Heal, 5);
        let scrub = hold_in_thread(Holder::Scrub, 5);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !held.load(SeqCst),
            "the scrub took the segment the heal holds"
        );
        drop(heal);
        scrub.join().unwrap();
        assert!(held.load(SeqCst));
    }
}
