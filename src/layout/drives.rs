//! Drive states and where a unit can be read or written while drives are failed.
//!
//! A drive is ACTIVE, FAILED (never read or written again; its units are rebuilt into
//! spare cells, or read by reconstruction until they are), REBUILDING (failed, with its
//! units being rebuilt into spare cells now) or REPLACING (a new drive took its place and
//! the units are being copied back onto it). Each failed or replaced drive has a
//! [`Failure`] record: the spare index its units move to and, per segment, whether they
//! have moved (`rebuilt`) and whether they have come back to the new drive (`copied`).
//!
//! [`DriveTable::read_cell`] follows a unit from its home cell through the records of the
//! drives it meets: a drive that holds the unit's segment (healthy, or copied back) ends
//! the walk; a failed drive whose segment is rebuilt sends it to its spare cell; anything
//! else means the unit must be reconstructed from the rest of its row.
//! [`DriveTable::write_cell`] is the same walk as if every rebuild had finished, so new rows
//! land only on drives that will be read for them.

use super::placement::{Cell, Placement};

/// A drive's state as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveState {
    Active,
    Failed,
    Rebuilding,
    Replacing,
}

impl DriveState {
    /// The name in the REST API, the CLI and events.
    pub fn as_str(self) -> &'static str {
        match self {
            DriveState::Active => "ACTIVE",
            DriveState::Failed => "FAILED",
            DriveState::Rebuilding => "REBUILDING",
            DriveState::Replacing => "REPLACING",
        }
    }
}

/// One bit per segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentBits {
    words: Vec<u64>,
    len: u64,
}

impl SegmentBits {
    pub fn new(len: u64) -> SegmentBits {
        SegmentBits {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    pub fn get(&self, segment: u64) -> bool {
        segment < self.len && self.words[(segment / 64) as usize] & (1 << (segment % 64)) != 0
    }

    pub fn set(&mut self, segment: u64) {
        if segment < self.len {
            self.words[(segment / 64) as usize] |= 1 << (segment % 64);
        }
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn all(&self) -> bool {
        self.count() == self.len
    }

    /// The words, for persisting.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Bits from persisted words; `None` when the word count does not fit `len`.
    pub fn from_words(words: Vec<u64>, len: u64) -> Option<SegmentBits> {
        (words.len() as u64 == len.div_ceil(64)).then_some(SegmentBits { words, len })
    }
}

/// A failed (or replaced, and being copied back) drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub drive: usize,
    /// The spare column its units move to; `None` when every spare column is taken.
    pub spare: Option<usize>,
    /// Segments whose units of this drive are in their spare cells.
    pub rebuilt: SegmentBits,
    /// After a replacement: segments whose units are back on the new drive.
    pub copied: Option<SegmentBits>,
    /// Why it failed, for operators.
    pub reason: String,
    /// When it failed (ms since the epoch).
    pub failed_at_ms: u64,
}

impl Failure {
    pub fn state(&self) -> DriveState {
        if self.copied.is_some() {
            DriveState::Replacing
        } else if self.spare.is_some() && !self.rebuilt.all() {
            DriveState::Rebuilding
        } else {
            DriveState::Failed
        }
    }

    /// Segments still to do in the current phase (rebuild, or copy back).
    pub fn remaining(&self) -> u64 {
        match &self.copied {
            Some(copied) => copied.len() - copied.count(),
            None if self.spare.is_some() => self.rebuilt.len() - self.rebuilt.count(),
            None => 0,
        }
    }
}

/// Where each drive stands; what [`super::Array`] consults on every I/O while any drive
/// is not ACTIVE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveTable {
    drives: usize,
    failures: Vec<Failure>,
    segments: u64,
    rows_per_segment: u64,
}

impl DriveTable {
    pub fn new(drives: usize, segments: u64, rows_per_segment: u64) -> DriveTable {
        DriveTable {
            drives,
            failures: Vec::new(),
            segments,
            rows_per_segment,
        }
    }

    /// Replaces the failure records (from the drive store).
    pub fn restore(&mut self, failures: Vec<Failure>) {
        self.failures = failures;
    }

    pub fn drives(&self) -> usize {
        self.drives
    }

    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    pub fn failures_mut(&mut self) -> &mut [Failure] {
        &mut self.failures
    }

    pub fn segments(&self) -> u64 {
        self.segments
    }

    pub fn state(&self, drive: usize) -> DriveState {
        self.failure(drive)
            .map_or(DriveState::Active, Failure::state)
    }

    pub fn failure(&self, drive: usize) -> Option<&Failure> {
        self.failures.iter().find(|failure| failure.drive == drive)
    }

    /// True when `drive` must not be read or written for `segment` (failed, or replaced
    /// but that segment not yet copied back).
    pub fn is_out(&self, drive: usize, segment: u64) -> bool {
        self.failure(drive).is_some_and(|failure| {
            !failure
                .copied
                .as_ref()
                .is_some_and(|copied| copied.get(segment))
        })
    }

    /// Marks `drive` failed, giving it the lowest free spare column of `placement`. Returns
    /// false when it was already failed.
    pub fn fail(&mut self, placement: &Placement, drive: usize, reason: &str, now_ms: u64) -> bool {
        if let Some(existing) = self.failures.iter_mut().find(|f| f.drive == drive) {
            if existing.copied.is_none() {
                return false;
            }
            // The replacement failed too: it starts over as a plain failure.
            existing.copied = None;
            existing.reason = reason.to_string();
            existing.failed_at_ms = now_ms;
            return true;
        }
        let spare = (0..placement.spare())
            .find(|index| !self.failures.iter().any(|f| f.spare == Some(*index)));
        self.failures.push(Failure {
            drive,
            spare,
            rebuilt: SegmentBits::new(self.segments),
            copied: None,
            reason: reason.to_string(),
            failed_at_ms: now_ms,
        });
        true
    }

    /// Starts copying `drive`'s units back onto its replacement. Errors say why not.
    pub fn replace(&mut self, drive: usize) -> Result<(), String> {
        let segments = self.segments;
        let failure = self
            .failures
            .iter_mut()
            .find(|f| f.drive == drive)
            .ok_or_else(|| {
                format!("drive {drive} is ACTIVE; only a failed drive can be replaced")
            })?;
        if failure.copied.is_some() {
            return Err(format!("drive {drive} is already being replaced"));
        }
        failure.copied = Some(SegmentBits::new(segments));
        Ok(())
    }

    /// Drops the records of replaced drives whose every segment is copied back; returns
    /// the drives that became ACTIVE.
    pub fn retire_copied(&mut self) -> Vec<usize> {
        let done: Vec<usize> = self
            .failures
            .iter()
            .filter(|f| f.copied.as_ref().is_some_and(SegmentBits::all))
            .map(|f| f.drive)
            .collect();
        self.failures.retain(|f| !done.contains(&f.drive));
        done
    }

    /// Where unit `unit` of `row` can be read now; `None` when it must be reconstructed.
    pub fn read_cell(&self, placement: &Placement, row: u64, unit: usize) -> Option<Cell> {
        self.walk(placement, row, unit, false, None)
    }

    /// Where unit `unit` of `row` will be read from once the current phase (rebuild or
    /// copy back) of `drive` has done the row's segment.
    pub fn healed_cell(
        &self,
        placement: &Placement,
        row: u64,
        unit: usize,
        drive: usize,
    ) -> Option<Cell> {
        self.walk(placement, row, unit, false, Some(drive))
    }

    /// Where unit `unit` of `row` is to be written now; `None` when no healthy cell can
    /// take it (every spare column that could is failed too).
    pub fn write_cell(&self, placement: &Placement, row: u64, unit: usize) -> Option<Cell> {
        self.walk(placement, row, unit, true, None)
    }

    /// Follows the unit from its home cell (see the module doc); `assume_done` names a drive
    /// whose current phase is taken as done for the row's segment.
    fn walk(
        &self,
        placement: &Placement,
        row: u64,
        unit: usize,
        writing: bool,
        assume_done: Option<usize>,
    ) -> Option<Cell> {
        let segment = row / self.rows_per_segment;
        let mut cell = placement.cell(row, unit);
        for _ in 0..=self.failures.len() {
            let Some(failure) = self.failure(cell.drive) else {
                return Some(cell);
            };
            let assumed = assume_done == Some(failure.drive);
            if let Some(copied) = &failure.copied {
                if copied.get(segment) || assumed {
                    return Some(cell);
                }
                if writing && !failure.rebuilt.get(segment) && failure.spare.is_none() {
                    return Some(cell);
                }
            }
            let rebuilt = failure.rebuilt.get(segment) || (assumed && failure.copied.is_none());
            if !writing && !rebuilt {
                return None;
            }
            cell = placement.spare_for(cell, failure.spare?)?;
        }
        None
    }
}

#[cfg(test)]
#[path = "drives_tests.rs"]
mod tests;
