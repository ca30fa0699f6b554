//! Exclusion between row writes and the background passes that rewrite cells of existing
//! rows (heal, scrub): a pass *holds* a segment, a row write *registers* the segments of its
//! rows, and neither starts while the other is in the same segment. A pass therefore never
//! reads a row half-written, nor writes a cell of a row that a newer write just placed.
//! Costs one short mutex section per batch of rows.

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct Claims {
    /// Segments held by passes.
    held: Vec<u64>,
    /// Segments with rows being written (one entry per writer and segment).
    writing: Vec<u64>,
}

/// The claims on segments (see the module doc).
#[derive(Default)]
pub struct SegmentGuard {
    claims: Mutex<Claims>,
    released: Condvar,
}

/// A pass's hold on one segment, released on drop.
pub struct Held<'a> {
    guard: &'a SegmentGuard,
    segment: u64,
}

/// A row write's claim on its segments, released on drop.
pub struct Writing<'a> {
    guard: &'a SegmentGuard,
    segments: Vec<u64>,
}

impl SegmentGuard {
    /// Holds `segment` for a pass, once no write or other pass is in it.
    pub fn hold(&self, segment: u64) -> Held<'_> {
        let mut claims = self.claims.lock();
        while claims.held.contains(&segment) || claims.writing.contains(&segment) {
            self.released.wait(&mut claims);
        }
        claims.held.push(segment);
        Held {
            guard: self,
            segment,
        }
    }

    /// Registers a row write into `segments`, once no pass holds any of them.
    pub fn writing(&self, mut segments: Vec<u64>) -> Writing<'_> {
        segments.sort_unstable();
        segments.dedup();
        let mut claims = self.claims.lock();
        while segments.iter().any(|segment| claims.held.contains(segment)) {
            self.released.wait(&mut claims);
        }
        claims.writing.extend_from_slice(&segments);
        Writing {
            guard: self,
            segments,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut claims = self.guard.claims.lock();
        if let Some(at) = claims.held.iter().position(|s| *s == self.segment) {
            claims.held.swap_remove(at);
        }
        drop(claims);
        self.guard.released.notify_all();
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut claims = self.guard.claims.lock();
        for segment in &self.segments {
            if let Some(at) = claims.writing.iter().position(|s| s == segment) {
                claims.writing.swap_remove(at);
            }
        }
        drop(claims);
        self.guard.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_write_waits_for_a_pass_in_its_segment_and_not_for_others() {
        let guard = Arc::new(SegmentGuard::default());
        let held = guard.hold(3);
        drop(guard.writing(vec![1, 2]));
        let done = Arc::new(AtomicBool::new(false));
        let (guard2, done2) = (guard.clone(), done.clone());
        let writer = std::thread::spawn(move || {
            let _writing = guard2.writing(vec![2, 3]);
            done2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "the write ran into a held segment"
        );
        drop(held);
        writer.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
    }
}
