//! Segment allocation and the bookkeeping the cleaner needs.
//!
//! Segments are filled row by row, in order, one open segment at a time; a row is written
//! once, whole, and never rewritten while anything refers to it. Each segment counts the
//! live blocks the committed map points at. A closed segment whose count falls to zero is
//! not reusable at once: the journal records that dropped its last references must be
//! durable first (otherwise a crash could replay a map that still points into it after new
//! data overwrote it), so each segment remembers the journal position of the last record
//! that released a reference into it, and [`SegmentAllocator::release_durable`] frees it
//! only once the journal is durable past that position.

use super::geometry::{Geometry, PhysBlock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegmentState {
    Free,
    Open,
    Closed,
}

/// The segment table. Not thread-safe: the metadata store owns it under its lock.
pub struct SegmentAllocator {
    geometry: Geometry,
    state: Vec<SegmentState>,
    live: Vec<u32>,
    /// Journal position of the last record that dropped a reference into the segment.
    released_at: Vec<u64>,
    free: Vec<u64>,
    open: Option<(u64, u64)>,
}

impl SegmentAllocator {
    /// A table with every segment free.
    pub fn new(geometry: Geometry) -> Self {
        let segments = geometry.segments();
        SegmentAllocator {
            geometry,
            state: vec![SegmentState::Free; segments as usize],
            live: vec![0; segments as usize],
            released_at: vec![0; segments as usize],
            free: (0..segments).rev().collect(),
            open: None,
        }
    }

    /// Rebuilds the table from the live blocks of a recovered map: segments holding live
    /// blocks are closed, the others free.
    pub fn rebuild(geometry: Geometry, live_blocks: impl Iterator<Item = PhysBlock>) -> Self {
        let mut table = Self::new(geometry);
        for phys in live_blocks {
            let segment = geometry.segment_of(phys) as usize;
            if segment < table.live.len() {
                table.live[segment] += 1;
            }
        }
        table.free.clear();
        for segment in (0..geometry.segments()).rev() {
            if table.live[segment as usize] > 0 {
                table.state[segment as usize] = SegmentState::Closed;
            } else {
                table.free.push(segment);
            }
        }
        table
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Takes the next row to write, opening a free segment when needed.
    pub fn allocate_row(&mut self) -> Option<u64> {
        if let Some((segment, next)) = self.open {
            if next < self.geometry.rows_per_segment {
                self.open = Some((segment, next + 1));
                return Some(segment * self.geometry.rows_per_segment + next);
            }
            self.close(segment);
        }
        let segment = self.free.pop()?;
        self.state[segment as usize] = SegmentState::Open;
        self.open = Some((segment, 1));
        Some(segment * self.geometry.rows_per_segment)
    }

    fn close(&mut self, segment: u64) {
        self.open = None;
        // Even when empty it stays closed: rows of it may still be on their way to a
        // commit. `release_durable`, called between batches, frees it.
        self.state[segment as usize] = SegmentState::Closed;
    }

    /// Counts a newly committed reference.
    pub fn add_live(&mut self, phys: PhysBlock) {
        let segment = self.geometry.segment_of(phys) as usize;
        self.live[segment] += 1;
    }

    /// Drops a committed reference; the record doing so ends at journal position `ticket`.
    pub fn remove_live(&mut self, phys: PhysBlock, ticket: u64) {
        let segment = self.geometry.segment_of(phys) as usize;
        debug_assert!(
            self.live[segment] > 0,
            "segment {segment} live count underflow"
        );
        self.live[segment] = self.live[segment].saturating_sub(1);
        self.released_at[segment] = self.released_at[segment].max(ticket);
    }

    /// Frees the empty segments whose releasing records are durable (journal durable up to
    /// `durable_ticket`), and closed segments nothing was ever committed to. Call it only
    /// between write batches, when no allocated row is waiting for its commit.
    pub fn release_durable(&mut self, durable_ticket: u64) {
        for segment in 0..self.state.len() {
            let reusable = self.state[segment] == SegmentState::Closed
                && self.live[segment] == 0
                && self.released_at[segment] <= durable_ticket;
            if reusable {
                self.state[segment] = SegmentState::Free;
                self.free.push(segment as u64);
            }
        }
    }

    /// Rows still free in the open segment.
    pub fn rows_left_in_open(&self) -> u64 {
        self.open
            .map_or(0, |(_, next)| self.geometry.rows_per_segment - next)
    }

    /// Segments ready for writing (the rest of the open one not counted).
    /// True when `segment` may hold rows something refers to (not free).
    pub fn may_hold_data(&self, segment: u64) -> bool {
        self.state
            .get(segment as usize)
            .is_some_and(|state| *state != SegmentState::Free)
    }

    pub fn free_segments(&self) -> u64 {
        self.free.len() as u64
    }

    /// Closed segments with no live block (free once their release is durable).
    pub fn pending_segments(&self) -> u64 {
        (0..self.state.len())
            .filter(|&s| self.state[s] == SegmentState::Closed && self.live[s] == 0)
            .count() as u64
    }

    /// Live blocks in a segment.
    pub fn live_in(&self, segment: u64) -> u32 {
        self.live[segment as usize]
    }

    /// Total live blocks.
    pub fn live_blocks(&self) -> u64 {
        self.live.iter().map(|&count| u64::from(count)).sum()
    }

    /// The closed segment with the fewest live blocks, if cleaning it gains space.
    pub fn pick_victim(&self) -> Option<u64> {
        let full = self.geometry.data_blocks_per_segment() as u32;
        (0..self.state.len())
            .filter(|&segment| self.state[segment] == SegmentState::Closed)
            .filter(|&segment| self.live[segment] > 0 && self.live[segment] < full)
            .min_by_key(|&segment| self.live[segment])
            .map(|segment| segment as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn geometry() -> Geometry {
        Geometry::new(4, 2, 64 * 1024, 2, (64 << 10) * 16)
    }

    #[test]
    fn rows_are_handed_out_once_until_freed() {
        let g = geometry();
        let mut table = SegmentAllocator::new(g);
        let mut rows = Vec::new();
        while let Some(row) = table.allocate_row() {
            rows.push(row);
            table.add_live(g.phys(row, 0));
        }
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len() as u64, g.rows);
        assert_eq!(table.free_segments(), 0);
    }

    /// Oracle test: random commits and overwrites against a model of which block each
    /// physical slot holds; a segment is only reused when nothing refers to it and the
    /// releasing record is durable.
    #[test]
    fn segments_are_reused_only_when_dead_and_durable() {
        let g = geometry();
        let mut table = SegmentAllocator::new(g);
        let mut owner: HashMap<PhysBlock, u64> = HashMap::new();
        let mut where_is: HashMap<u64, PhysBlock> = HashMap::new();
        let mut state = 12345u64;
        let mut ticket = 0u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let lba = (state >> 33) % 40;
            let Some(row) = table.allocate_row() else {
                table.release_durable(ticket);
                continue;
            };
            for (used_row, _) in owner.iter() {
                assert_ne!(g.row_of(*used_row), row, "row {row} reused while live");
            }
            ticket += 1;
            let phys = g.phys(row, 0);
            table.add_live(phys);
            if let Some(old) = where_is.insert(lba, phys) {
                owner.remove(&old);
                table.remove_live(old, ticket);
            }
            owner.insert(phys, lba);
            if state.is_multiple_of(3) {
                table.release_durable(ticket);
            }
        }
        assert_eq!(table.live_blocks(), owner.len() as u64);
    }

    #[test]
    fn rebuild_counts_live_blocks() {
        let g = geometry();
        let live = [g.phys(0, 1), g.phys(1, 2), g.phys(5, 0)];
        let table = SegmentAllocator::rebuild(g, live.iter().copied());
        assert_eq!(table.live_in(0), 2);
        assert_eq!(table.live_in(2), 1);
        assert_eq!(table.free_segments(), g.segments() - 2);
        assert_eq!(table.pick_victim(), Some(2));
    }
}
