//! Healing: rebuilding a failed drive's units into its spare cells, and copying them back
//! onto its replacement, one segment at a time.
//!
//! A step takes the oldest unfinished job (rebuilds before copy-backs), picks its next
//! segment (first those with a row that lost two units, then the rest in order), and for
//! every row of the segment moves each unit whose home will change when the segment is
//! done: read from where it is now (or reconstructed from the row when it is nowhere),
//! written to where it will be, synced, then the segment's bit is set. Segments that hold
//! nothing (free in the allocator) get their bit with no I/O: thin space costs nothing.
//! The heal holds each segment it works on (see `guard`): row writes into it wait, so a
//! heal never overwrites a newer row with an older one nor reads a row half-written.
//!
//! Rebuild bits are persisted at most a second late (a lost bit only means a segment is
//! healed again); copy-back bits are persisted before new rows can rely on them.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Array, DriveEvent, guard};
use crate::io::{AlignedBuf, Device, IoRing};
use crate::layout::parity::ParityCodec;
use crate::layout::placement::Cell;

/// Which phase a heal job is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealPhase {
    /// Reconstructing a failed drive's units into spare cells.
    Rebuild,
    /// Copying them back onto the drive's replacement.
    Copyback,
}

/// A drive being healed and the phase it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealJob {
    pub drive: usize,
    pub phase: HealPhase,
}

/// The running job's figures, for `drive ls`, metrics and events.
#[derive(Default)]
pub(super) struct Progress {
    job: Option<HealJob>,
    started: Option<Instant>,
    bytes: u64,
    /// Where the passes stand: segments before these are visited.
    double_cursor: u64,
    cursor: u64,
    last_persist: Option<Instant>,
    lost_rows: u64,
    first_lost_row: Option<u64>,
}

/// A heal's figures as operators see them.
#[derive(Clone, Debug, PartialEq)]
pub struct HealStatus {
    pub job: HealJob,
    pub segments_done: u64,
    pub segments: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub bytes_per_second: f64,
    /// Seconds to go at the rate so far (`None` before the first segment).
    pub eta_seconds: Option<f64>,
}

/// Segments a heal step visits at most (empty ones cost no I/O).
pub const VISITS_PER_STEP: usize = 4096;

/// Buffers a heal step reuses.
pub struct HealBuffers {
    row: AlignedBuf,
    codec: ParityCodec,
}

impl Array {
    /// Buffers for [`Array::heal_step`].
    pub fn heal_buffers(&self) -> HealBuffers {
        HealBuffers {
            row: AlignedBuf::new(self.row_buffer_len()),
            codec: ParityCodec::new(self.geometry.data, self.geometry.unit as usize)
                .expect("a codec for the array's own geometry"),
        }
    }

    /// The oldest job still to do: rebuilds first, then copy-backs.
    pub fn next_heal_job(&self) -> Option<HealJob> {
        let table = self.table.read();
        let failures = table.failures();
        let rebuild = failures
            .iter()
            .find(|f| f.copied.is_none() && f.spare.is_some() && !f.rebuilt.all())
            .map(|f| HealJob {
                drive: f.drive,
                phase: HealPhase::Rebuild,
            });
        rebuild.or_else(|| {
            failures
                .iter()
                .find(|f| f.copied.as_ref().is_some_and(|c| !c.all()))
                .map(|f| HealJob {
                    drive: f.drive,
                    phase: HealPhase::Copyback,
                })
        })
    }

    /// The running job's figures, if one runs.
    pub fn heal_status(&self) -> Option<HealStatus> {
        let job = self.next_heal_job()?;
        let (segments_done, segments) = {
            let table = self.table.read();
            let failure = table.failure(job.drive)?;
            let bits = match job.phase {
                HealPhase::Rebuild => &failure.rebuilt,
                HealPhase::Copyback => failure.copied.as_ref()?,
            };
            (bits.count(), bits.len())
        };
        let progress = self.heal_progress.lock();
        let seconds = match (progress.job == Some(job), progress.started) {
            (true, Some(started)) => started.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        let bytes = if progress.job == Some(job) {
            progress.bytes
        } else {
            0
        };
        let bytes_per_second = if seconds > 0.0 {
            bytes as f64 / seconds
        } else {
            0.0
        };
        let eta_seconds = (segments_done > 0 && seconds > 0.0).then(|| {
            seconds / segments_done as f64 * segments.saturating_sub(segments_done) as f64
        });
        Some(HealStatus {
            job,
            segments_done,
            segments,
            bytes,
            seconds,
            bytes_per_second,
            eta_seconds,
        })
    }

    /// Heals up to `budget` segments that hold data (and any number of empty ones, up to
    /// [`VISITS_PER_STEP`]) of the oldest job. `in_use(segment)` says whether a segment may
    /// hold referenced rows (the allocator above knows). Returns false when nothing is left
    /// to heal.
    pub fn heal_step(
        &self,
        ring: &mut IoRing,
        buffers: &mut HealBuffers,
        in_use: &dyn Fn(u64) -> bool,
        budget: usize,
    ) -> io::Result<bool> {
        let Some(job) = self.next_heal_job() else {
            return Ok(false);
        };
        self.start_job(job);
        let mut with_data = 0;
        // Empty segments copied back stay held until their bits are durable (below).
        let mut held = Vec::new();
        for _ in 0..VISITS_PER_STEP {
            let Some(segment) = self.next_segment(job, in_use) else {
                break;
            };
            if self.heal_segment(ring, buffers, job, segment, in_use, &mut held)? {
                with_data += 1;
                if with_data == budget {
                    break;
                }
            }
        }
        if !held.is_empty() {
            self.persist(&self.table.read());
            drop(held);
        }
        self.finish_if_done(job, in_use);
        Ok(true)
    }

    fn start_job(&self, job: HealJob) {
        let mut progress = self.heal_progress.lock();
        if progress.job == Some(job) {
            return;
        }
        *progress = Progress {
            job: Some(job),
            started: Some(Instant::now()),
            ..Progress::default()
        };
        drop(progress);
        if job.phase == HealPhase::Rebuild {
            let segments = self.table.read().segments();
            crate::say!(
                "troika: rebuilding drive {} ({}) into distributed spare space",
                job.drive,
                self.device_name(job.drive)
            );
            self.notify(DriveEvent::RebuildStarted {
                drive: job.drive,
                name: self.device_name(job.drive),
                segments,
            });
        }
    }

    /// The job's next segment: first one holding data with a row missing two units, then
    /// the lowest not yet done.
    fn next_segment(&self, job: HealJob, in_use: &dyn Fn(u64) -> bool) -> Option<u64> {
        let table = self.table.read();
        let failure = table.failure(job.drive)?;
        let bits = match job.phase {
            HealPhase::Rebuild => &failure.rebuilt,
            HealPhase::Copyback => failure.copied.as_ref()?,
        };
        let mut progress = self.heal_progress.lock();
        let several_out = table.failures().len() > 1;
        while several_out && progress.double_cursor < bits.len() {
            let segment = progress.double_cursor;
            progress.double_cursor += 1;
            if !bits.get(segment) && in_use(segment) && self.lost_two_units(&table, segment) {
                return Some(segment);
            }
        }
        while progress.cursor < bits.len() {
            let segment = progress.cursor;
            if !bits.get(segment) {
                return Some(segment);
            }
            progress.cursor += 1;
        }
        None
    }

    fn lost_two_units(&self, table: &crate::layout::drives::DriveTable, segment: u64) -> bool {
        let rows = self.geometry.rows_per_segment;
        (segment * rows..(segment + 1) * rows).any(|row| {
            (0..self.placement.width())
                .filter(|&unit| table.read_cell(&self.placement, row, unit).is_none())
                .count()
                >= 2
        })
    }

    /// Heals one segment of `job` (see the module doc); returns whether it held data. An
    /// empty segment of a copy-back is left held in `keep` for the caller to persist.
    fn heal_segment<'a>(
        &'a self,
        ring: &mut IoRing,
        buffers: &mut HealBuffers,
        job: HealJob,
        segment: u64,
        in_use: &dyn Fn(u64) -> bool,
        keep: &mut Vec<guard::Held<'a>>,
    ) -> io::Result<bool> {
        let held = self.guard.hold(segment);
        let holds_data = in_use(segment);
        let moved = if holds_data {
            self.move_units(ring, buffers, job, segment)?
        } else {
            0
        };
        let mut table = self.table.write();
        if let Some(failure) = table
            .failures_mut()
            .iter_mut()
            .find(|f| f.drive == job.drive)
        {
            match (job.phase, failure.copied.as_mut()) {
                (HealPhase::Copyback, Some(copied)) => copied.set(segment),
                _ => failure.rebuilt.set(segment),
            }
        }
        let mut progress = self.heal_progress.lock();
        progress.bytes += moved;
        let due = progress
            .last_persist
            .is_none_or(|at| at.elapsed() > Duration::from_secs(1));
        // New rows rely on copy-back bits at once (they go to the new drive), so those are
        // durable before the segment is let go; rebuild bits may lag (see the module doc).
        if job.phase == HealPhase::Copyback && !holds_data {
            keep.push(held);
        } else if job.phase == HealPhase::Copyback || due {
            progress.last_persist = Some(Instant::now());
            drop(progress);
            self.persist(&table);
        }
        Ok(holds_data)
    }

    /// Moves every unit of the segment's rows whose home changes when the job has done the
    /// segment; returns the bytes written.
    fn move_units(
        &self,
        ring: &mut IoRing,
        buffers: &mut HealBuffers,
        job: HealJob,
        segment: u64,
    ) -> io::Result<u64> {
        let unit = self.geometry.unit as usize;
        let rows = self.geometry.rows_per_segment;
        let parity = self.placement.width() - self.geometry.data;
        let devices: Vec<Arc<Device>> = (0..self.drives.len()).map(|d| self.device(d)).collect();
        let mut moved = 0u64;
        let mut touched: Vec<usize> = Vec::new();
        for row in segment * rows..(segment + 1) * rows {
            let moves: Vec<(usize, Cell)> = {
                let table = self.table.read();
                (0..self.placement.width())
                    .filter_map(|u| {
                        let now = table.read_cell(&self.placement, row, u);
                        let then = table.healed_cell(&self.placement, row, u, job.drive)?;
                        (now != Some(then)).then_some((u, then))
                    })
                    .collect()
            };
            if moves.is_empty() {
                continue;
            }
            let failed = self.read_row(ring, row, &mut buffers.row);
            if failed.len() > parity {
                self.count_lost_row(row);
                continue;
            }
            if !failed.is_empty() {
                let mut units: Vec<&mut [u8]> = buffers.row.chunks_mut(unit).collect();
                if buffers.codec.rebuild(&mut units, &failed).is_err() {
                    self.count_lost_row(row);
                    continue;
                }
            }
            self.write_units(
                ring,
                &devices,
                &buffers.row,
                &moves,
                "rebuild",
                &mut touched,
            )?;
            moved += (moves.len() * unit) as u64;
        }
        self.sync_drives(ring, &devices, &touched, "rebuild")?;
        Ok(moved)
    }

    fn count_lost_row(&self, row: u64) {
        let mut progress = self.heal_progress.lock();
        progress.lost_rows += 1;
        progress.first_lost_row.get_or_insert(row);
    }

    /// Ends a finished job: events, the record of a copied-back drive dropped.
    fn finish_if_done(&self, job: HealJob, in_use: &dyn Fn(u64) -> bool) {
        if self.next_segment(job, in_use).is_some() {
            return;
        }
        let (bytes, seconds, lost, first_lost) = {
            let mut progress = self.heal_progress.lock();
            let seconds = progress
                .started
                .map_or(0.0, |started| started.elapsed().as_secs_f64());
            let figures = (
                progress.bytes,
                seconds,
                progress.lost_rows,
                progress.first_lost_row,
            );
            *progress = Progress::default();
            figures
        };
        let name = self.device_name(job.drive);
        if lost > 0 {
            self.notify(DriveEvent::RowsLost {
                rows: lost,
                first_row: first_lost.unwrap_or(0),
            });
        }
        match job.phase {
            HealPhase::Rebuild => {
                crate::say!(
                    "troika: rebuilt drive {} ({name}): {bytes} bytes in {seconds:.1} s",
                    job.drive
                );
                self.persist(&self.table.read());
                self.notify(DriveEvent::RebuildCompleted {
                    drive: job.drive,
                    name,
                    bytes,
                    seconds,
                });
            }
            HealPhase::Copyback => {
                let mut table = self.table.write();
                let retired = table.retire_copied();
                self.degraded.store(
                    !table.failures().is_empty(),
                    std::sync::atomic::Ordering::Release,
                );
                self.persist(&table);
                drop(table);
                for drive in retired {
                    crate::say!("troika: drive {drive} ({name}) is ACTIVE again");
                    self.notify(DriveEvent::CopybackCompleted {
                        drive,
                        name: name.clone(),
                    });
                }
            }
        }
    }
}
