//! Row writes onto healthy drives (see the parent module): every unit to the cell the drive
//! table gives, a drive that fails a write or sync failed and its units written again
//! elsewhere, then every drive written to synced.

use std::sync::Arc;

use super::Array;
use std::io;

use crate::io::{Device, IoKind, IoRequest, IoRing};
use crate::layout::placement::Cell;

impl Array {
    /// Writes whole rows (each buffer holds every unit of its row, parity computed) onto
    /// healthy drives and makes them durable before returning.
    ///
    /// A drive that fails a write or a sync is failed, and the units it was to hold are
    /// written again to where the drive table now puts them. The node stops through
    /// [`crate::fatal::durability_failure`] only when a row cannot keep enough units to be
    /// read back (more drives out than parity covers).
    pub fn write_rows(&self, ring: &mut IoRing, rows: &[(u64, &[u8])]) {
        let segments = rows
            .iter()
            .map(|(row, _)| row / self.geometry.rows_per_segment)
            .collect();
        let _writing = self.guard.writing(segments);
        let unit = self.geometry.unit as usize;
        let width = self.placement.width();
        // (row index in `rows`, unit) of every unit still to write.
        let mut pending: Vec<(usize, usize)> = (0..rows.len())
            .flat_map(|r| (0..width).map(move |u| (r, u)))
            .collect();
        let mut written: Vec<(usize, usize, usize)> = Vec::with_capacity(pending.len());
        for _attempt in 0..=self.drives.len() {
            if pending.is_empty() {
                break;
            }
            let mut skipped = vec![0usize; rows.len()];
            let mut targets = Vec::with_capacity(pending.len());
            for &(r, u) in &pending {
                match self.write_cell(rows[r].0, u) {
                    Some(cell) => targets.push((r, u, cell)),
                    None => skipped[r] += 1,
                }
            }
            self.check_redundancy(rows, &skipped);
            let devices: Vec<Arc<Device>> =
                (0..self.drives.len()).map(|d| self.device(d)).collect();
            let mut requests: Vec<IoRequest<'_>> = targets
                .iter()
                .map(|&(r, u, cell)| IoRequest {
                    device: &devices[cell.drive],
                    offset: self.byte_offset(cell),
                    kind: IoKind::Write(&rows[r].1[u * unit..(u + 1) * unit]),
                })
                .collect();
            let mut results = Vec::with_capacity(requests.len());
            ring.execute(&mut requests, &mut results);
            drop(requests);
            pending.clear();
            let mut failed_now = Vec::new();
            for (index, &(_, _, cell)) in targets.iter().enumerate() {
                self.judge_latency(ring, index, cell.drive);
            }
            for (&(r, u, cell), result) in targets.iter().zip(results) {
                match result {
                    Ok(done) if done >= unit => written.push((r, u, cell.drive)),
                    outcome => {
                        pending.push((r, u));
                        if !failed_now.contains(&cell.drive) {
                            failed_now.push(cell.drive);
                            let error = match outcome {
                                Err(err) => err.to_string(),
                                Ok(done) => format!("wrote {done} of {unit} bytes"),
                            };
                            let _ = self.fail_drive(
                                cell.drive,
                                &format!("a row write at cell {} failed: {error}", cell.index),
                            );
                        }
                    }
                }
            }
            self.sync_written(ring, &devices, &mut written, &mut pending);
        }
        if !pending.is_empty() {
            crate::fatal::durability_failure(
                "the NL-SAS array",
                "row write",
                &format_args!("{} units could not be written to any drive", pending.len()),
            );
        }
    }

    /// Syncs every drive in `written` (row index, unit, drive); a drive that fails its sync
    /// is failed and the units it was given go back to `pending`, to be written elsewhere.
    fn sync_written(
        &self,
        ring: &mut IoRing,
        devices: &[Arc<Device>],
        written: &mut Vec<(usize, usize, usize)>,
        pending: &mut Vec<(usize, usize)>,
    ) {
        let mut touched: Vec<usize> = written.iter().map(|&(_, _, d)| d).collect();
        touched.sort_unstable();
        touched.dedup();
        let mut syncs: Vec<IoRequest<'_>> = touched
            .iter()
            .map(|&d| IoRequest {
                device: &devices[d],
                offset: 0,
                kind: IoKind::Sync,
            })
            .collect();
        let mut sync_results = Vec::with_capacity(syncs.len());
        ring.execute(&mut syncs, &mut sync_results);
        drop(syncs);
        for (index, &drive) in touched.iter().enumerate() {
            self.judge_latency(ring, index, drive);
        }
        for (&drive, result) in touched.iter().zip(sync_results) {
            if let Err(err) = result {
                let _ = self.fail_drive(drive, &format!("a sync after row writes failed: {err}"));
                written.retain(|&(r, u, d)| {
                    if d == drive {
                        pending.push((r, u));
                    }
                    d != drive
                });
            }
        }
    }

    /// Stops the node when a row would be written with more units missing than parity
    /// covers: acknowledging it would put flushed data at risk of loss on the next read.
    fn check_redundancy(&self, rows: &[(u64, &[u8])], skipped: &[usize]) {
        let parity = self.placement.width() - self.geometry.data;
        if let Some((index, count)) = skipped.iter().enumerate().find(|(_, n)| **n > parity) {
            crate::fatal::durability_failure(
                "the NL-SAS array",
                "row write",
                &format_args!(
                    "row {} would lose {count} of its units to failed drives with no spare space left; replace failed drives",
                    rows[index].0
                ),
            );
        }
    }
}

impl Array {
    /// Writes unit `u` of `row_buffer` to `cell` for each `(u, cell)` of `cells`, all in
    /// flight together, and adds each drive written to `touched`. A drive that fails its
    /// write is failed (the reason names `purpose` and the cell) and the error returned:
    /// for the passes that rewrite cells of existing rows (heal, scrub), which retry.
    pub(super) fn write_units(
        &self,
        ring: &mut IoRing,
        devices: &[Arc<Device>],
        row_buffer: &[u8],
        cells: &[(usize, Cell)],
        purpose: &str,
        touched: &mut Vec<usize>,
    ) -> io::Result<()> {
        let unit = self.geometry.unit as usize;
        let mut requests: Vec<IoRequest<'_>> = cells
            .iter()
            .map(|&(u, cell)| IoRequest {
                device: &devices[cell.drive],
                offset: self.byte_offset(cell),
                kind: IoKind::Write(&row_buffer[u * unit..(u + 1) * unit]),
            })
            .collect();
        let mut results = Vec::with_capacity(requests.len());
        ring.execute(&mut requests, &mut results);
        drop(requests);
        for (&(_, cell), result) in cells.iter().zip(results) {
            let detail = match result {
                Ok(n) if n == unit => {
                    if !touched.contains(&cell.drive) {
                        touched.push(cell.drive);
                    }
                    continue;
                }
                Ok(n) => format!("wrote {n} of {unit} bytes"),
                Err(err) => err.to_string(),
            };
            let _ = self.fail_drive(
                cell.drive,
                &format!("a {purpose} write at cell {} failed: {detail}", cell.index),
            );
            return Err(io::Error::other(format!(
                "drive {} failed a {purpose} write",
                cell.drive
            )));
        }
        Ok(())
    }

    /// Syncs each drive of `touched`; a drive that fails is failed and the error returned.
    pub(super) fn sync_drives(
        &self,
        ring: &mut IoRing,
        devices: &[Arc<Device>],
        touched: &[usize],
        purpose: &str,
    ) -> io::Result<()> {
        for &drive in touched {
            if let Err(err) = ring.sync(&devices[drive]) {
                let _ = self.fail_drive(
                    drive,
                    &format!("a sync after {purpose} writes failed: {err}"),
                );
                return Err(err);
            }
        }
        Ok(())
    }
}
