//! The NL-SAS drives as one array of rows (see `geometry` for the rows, `placement` for
//! where their units live, `drives` for failed drives): whole-row writes with parity onto
//! healthy drives only, single-block reads, and reconstruction of what a failed or
//! damaged drive holds from the rest of its row.
//!
//! A drive that fails a write or a sync is failed (never touched again) and the units it
//! was to hold are written to their spare cells instead; the node stops only when a new
//! row would be left with fewer units than its data needs. Reads that fail count against
//! the drive, which fails after [`READ_ERRORS_TO_FAIL`] of them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::drive_store::DriveStore;
use super::drives::{DriveState, DriveTable};
use super::geometry::{Geometry, PhysBlock};
use super::parity::ParityCodec;
use super::placement::{Cell, Placement};
use crate::io::{Device, IoKind, IoRequest, IoRing};
use crate::types::BLOCK_SIZE;

mod guard;
mod heal;
mod reconstruct;
mod scrub;
#[cfg(test)]
mod scrub_tests;

pub use heal::{HealBuffers, HealJob, HealPhase, HealStatus};
pub use reconstruct::RepairOutcome;
pub use scrub::{RowScrub, ScrubBuffers, ScrubRepairs, ScrubTally};

/// Read errors after which a drive is failed (a drive that fails one read is usually
/// repaired by rewriting; one that keeps failing is dying).
pub const READ_ERRORS_TO_FAIL: u64 = 8;

/// Something that happened to a drive, for the node's event log.
#[derive(Clone, Debug, PartialEq)]
pub enum DriveEvent {
    Failed {
        drive: usize,
        name: String,
        reason: String,
    },
    RebuildStarted {
        drive: usize,
        name: String,
        segments: u64,
    },
    RebuildCompleted {
        drive: usize,
        name: String,
        bytes: u64,
        seconds: f64,
    },
    CopybackCompleted {
        drive: usize,
        name: String,
    },
    /// Rows that lost more units than parity can rebuild.
    RowsLost {
        rows: u64,
        first_row: u64,
    },
}

type Listener = Box<dyn Fn(DriveEvent) + Send + Sync>;

/// One drive as operators see it.
#[derive(Clone, Debug, PartialEq)]
pub struct DriveInfo {
    pub index: usize,
    pub name: String,
    pub path: String,
    pub bytes: u64,
    pub state: DriveState,
    /// Percent of the current rebuild or copy-back done (100 when none runs).
    pub progress_percent: f64,
    pub read_errors: u64,
    pub reason: Option<String>,
}

/// The drives, the map of rows onto them and the state of each.
pub struct Array {
    drives: Vec<RwLock<Arc<Device>>>,
    geometry: Geometry,
    placement: Placement,
    table: RwLock<DriveTable>,
    /// True while any drive is not ACTIVE: the fast path skips the table when false.
    degraded: AtomicBool,
    store: Mutex<Option<DriveStore>>,
    listener: RwLock<Option<Listener>>,
    read_errors: Vec<AtomicU64>,
    /// Keeps row writes and passes that rewrite cells (heal, scrub) out of each other's
    /// segments.
    guard: guard::SegmentGuard,
    /// Codecs over 4 KiB slices of a row, for block reconstruction.
    block_codecs: Mutex<Vec<(ParityCodec, crate::io::AlignedBuf)>>,
    heal_progress: Mutex<heal::Progress>,
    /// Block reads served, so a heal can tell when hosts are busy.
    reads_served: AtomicU64,
    priority: std::sync::atomic::AtomicU8,
    /// An I/O slower than this fails its drive (ms; 0: no limit).
    timeout_ms: AtomicU64,
}

/// How hard a heal pushes against host I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealPriority {
    /// Rests four times as long as it works while hosts are reading.
    Low,
    /// Rests as long as it works while hosts are reading.
    Medium,
    /// Rests a quarter of its working time while hosts are reading.
    High,
}

impl HealPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            HealPriority::Low => "LOW",
            HealPriority::Medium => "MEDIUM",
            HealPriority::High => "HIGH",
        }
    }

    /// Parses `low`, `medium` or `high` (any case).
    pub fn parse(text: &str) -> Option<HealPriority> {
        match text.to_ascii_lowercase().as_str() {
            "low" => Some(HealPriority::Low),
            "medium" => Some(HealPriority::Medium),
            "high" => Some(HealPriority::High),
            _ => None,
        }
    }

    /// Rest per unit of work while hosts are busy.
    pub fn rest_factor(self) -> f64 {
        match self {
            HealPriority::Low => 4.0,
            HealPriority::Medium => 1.0,
            HealPriority::High => 0.25,
        }
    }
}

impl Array {
    /// Lays rows `data + 2` units wide over `devices` with `placement`; the rows are those
    /// that fit the smallest device, in whole segments.
    pub fn new(
        devices: Vec<Device>,
        data: usize,
        unit: u64,
        rows_per_segment: u64,
        placement: Placement,
    ) -> Array {
        let smallest = devices.iter().map(Device::size).min().unwrap_or(0);
        let rows = placement.rows_for(smallest / unit);
        let rows = rows - rows % rows_per_segment;
        let geometry = Geometry {
            data,
            parity: placement.width() - data,
            unit,
            rows,
            rows_per_segment,
        };
        let segments = geometry.segments();
        let drive_count = devices.len();
        Array {
            read_errors: devices.iter().map(|_| AtomicU64::new(0)).collect(),
            drives: devices
                .into_iter()
                .map(|device| RwLock::new(Arc::new(device)))
                .collect(),
            geometry,
            placement,
            table: RwLock::new(DriveTable::new(drive_count, segments, rows_per_segment)),
            degraded: AtomicBool::new(false),
            store: Mutex::new(None),
            listener: RwLock::new(None),
            guard: guard::SegmentGuard::default(),
            block_codecs: Mutex::new(Vec::new()),
            heal_progress: Mutex::new(heal::Progress::default()),
            reads_served: AtomicU64::new(0),
            priority: std::sync::atomic::AtomicU8::new(1),
            timeout_ms: AtomicU64::new(0),
        }
    }

    /// A straight array (the layout before declustering) over exactly `data + 2` devices.
    pub fn straight(devices: Vec<Device>, data: usize, unit: u64, rows_per_segment: u64) -> Array {
        let placement = Placement::new(
            super::placement::PlacementKind::Straight,
            devices.len(),
            devices.len(),
            devices.len() - data,
            0,
        )
        .expect("a straight placement over data + parity devices");
        Array::new(devices, data, unit, rows_per_segment, placement)
    }

    /// Keeps drive states in `store`, loading what it holds first. Errors name the file.
    pub fn attach_store(&self, store: DriveStore) -> Result<(), String> {
        if let Some(table) = store.load(&self.placement, &self.geometry)? {
            self.degraded
                .store(!table.failures().is_empty(), Ordering::Release);
            *self.table.write() = table;
        }
        *self.store.lock() = Some(store);
        Ok(())
    }

    /// Where drive events go (the node's event log).
    pub fn set_listener(&self, listener: impl Fn(DriveEvent) + Send + Sync + 'static) {
        *self.listener.write() = Some(Box::new(listener));
    }

    fn notify(&self, event: DriveEvent) {
        if let Some(listener) = self.listener.read().as_ref() {
            listener(event);
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn drive_count(&self) -> usize {
        self.drives.len()
    }

    /// The device now in slot `index`.
    pub fn device(&self, index: usize) -> Arc<Device> {
        self.drives[index].read().clone()
    }

    /// The hardware model's name of drive `index`.
    pub fn device_name(&self, index: usize) -> String {
        self.drives[index].read().name().to_string()
    }

    /// Block reads served so far (host reads and the cleaner's).
    pub fn reads_served(&self) -> u64 {
        self.reads_served.load(Ordering::Relaxed)
    }

    pub fn heal_priority(&self) -> HealPriority {
        match self.priority.load(Ordering::Relaxed) {
            0 => HealPriority::Low,
            2 => HealPriority::High,
            _ => HealPriority::Medium,
        }
    }

    pub fn set_heal_priority(&self, priority: HealPriority) {
        let value = match priority {
            HealPriority::Low => 0,
            HealPriority::Medium => 1,
            HealPriority::High => 2,
        };
        self.priority.store(value, Ordering::Relaxed);
    }

    /// A copy of the drive table.
    pub fn drive_table(&self) -> DriveTable {
        self.table.read().clone()
    }

    /// True while any drive is FAILED, REBUILDING or REPLACING.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Bytes of one row buffer: every unit of the row, data then P then Q.
    pub fn row_buffer_len(&self) -> usize {
        self.geometry.unit as usize * self.placement.width()
    }

    /// Computes P and Q into the parity units of `row_buffer` from its data units.
    pub fn compute_parity(&self, codec: &mut ParityCodec, row_buffer: &mut [u8]) -> io::Result<()> {
        let unit = self.geometry.unit as usize;
        let (data, parity) = row_buffer.split_at_mut(unit * self.geometry.data);
        let units: Vec<&[u8]> = data.chunks(unit).collect();
        let (p, q) = parity.split_at_mut(unit);
        codec
            .encode(&units, p, q)
            .map_err(|err| io::Error::other(err.to_string()))
    }

    /// Where unit `unit` of `row` is read from; `None` when its drive is out and it must be
    /// reconstructed.
    pub(crate) fn read_cell(&self, row: u64, unit: usize) -> Option<Cell> {
        if !self.is_degraded() {
            return Some(self.placement.cell(row, unit));
        }
        self.table.read().read_cell(&self.placement, row, unit)
    }

    fn write_cell(&self, row: u64, unit: usize) -> Option<Cell> {
        if !self.is_degraded() {
            return Some(self.placement.cell(row, unit));
        }
        self.table.read().write_cell(&self.placement, row, unit)
    }

    fn byte_offset(&self, cell: Cell) -> u64 {
        cell.index * self.geometry.unit
    }

    /// Fails drive `index` for `reason`: it is never read or written again, and its units
    /// move to spare cells as the rebuild reaches them. Persists the new state before
    /// returning. Returns false when the drive was already failed.
    pub fn fail_drive(&self, index: usize, reason: &str) -> Result<bool, String> {
        if index >= self.drives.len() {
            return Err(format!(
                "there is no drive {index}; the array has drives 0 to {}",
                self.drives.len() - 1
            ));
        }
        let changed = {
            let mut table = self.table.write();
            let changed = table.fail(&self.placement, index, reason, crate::clock::now_ms());
            self.degraded.store(true, Ordering::Release);
            if changed {
                self.persist(&table);
            }
            changed
        };
        if changed {
            crate::say!(
                "troika: drive {index} ({}) failed: {reason}; it will not be used again until it is replaced",
                self.device_name(index)
            );
            self.notify(DriveEvent::Failed {
                drive: index,
                name: self.device_name(index),
                reason: reason.to_string(),
            });
        }
        Ok(changed)
    }

    /// Puts `device` in the place of failed drive `index` and starts copying its units
    /// back onto it.
    pub fn replace_drive(&self, index: usize, device: Device) -> Result<(), String> {
        if index >= self.drives.len() {
            return Err(format!("there is no drive {index}"));
        }
        let needed = self.drives[index].read().size();
        if device.size() < needed {
            return Err(format!(
                "the replacement {} holds {} bytes; drive {index} needs at least {needed}",
                device.path().display(),
                device.size()
            ));
        }
        let mut table = self.table.write();
        if table.state(index) == DriveState::Replacing {
            return Err(format!("drive {index} is already being replaced"));
        }
        if table.failure(index).is_none() {
            return Err(format!(
                "drive {index} is ACTIVE; fail it first (drive fail {index}) to replace it"
            ));
        }
        if let Some(store) = self.store.lock().as_ref() {
            store.set_replacement(index, device.path());
        }
        *self.drives[index].write() = Arc::new(device);
        self.read_errors[index].store(0, Ordering::Relaxed);
        table.replace(index)?;
        self.persist(&table);
        Ok(())
    }

    /// Every drive with its state and progress.
    pub fn drive_infos(&self) -> Vec<DriveInfo> {
        let table = self.table.read();
        (0..self.drives.len())
            .map(|index| {
                let device = self.device(index);
                let failure = table.failure(index);
                let progress_percent = failure.map_or(100.0, |failure| {
                    let total = failure.rebuilt.len().max(1) as f64;
                    100.0 * (total - failure.remaining() as f64) / total
                });
                DriveInfo {
                    index,
                    name: device.name().to_string(),
                    path: device.path().display().to_string(),
                    bytes: device.size(),
                    state: table.state(index),
                    progress_percent,
                    read_errors: self.read_errors[index].load(Ordering::Relaxed),
                    reason: failure.map(|f| f.reason.clone()),
                }
            })
            .collect()
    }

    fn persist(&self, table: &DriveTable) {
        if let Some(store) = self.store.lock().as_ref()
            && let Err(err) = store.save(table)
        {
            crate::fatal::durability_failure(
                &store.path().display().to_string(),
                "drive state write",
                &err,
            );
        }
    }

    /// Fails drives whose I/O takes longer than `limit` (from the hardware model).
    pub fn set_drive_timeout(&self, limit: std::time::Duration) {
        self.timeout_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Fails `drive` when request `index` of the ring's last batch took longer than the
    /// drive timeout.
    pub(crate) fn judge_latency(&self, ring: &IoRing, index: usize, drive: usize) {
        let limit = self.timeout_ms.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        let took = ring.took(index);
        if took.as_millis() as u64 > limit {
            let _ = self.fail_drive(
                drive,
                &format!(
                    "an I/O took {} ms, past the model's drive timeout of {limit} ms",
                    took.as_millis()
                ),
            );
        }
    }

    /// Counts a failed read on `drive`; fails the drive after [`READ_ERRORS_TO_FAIL`].
    fn count_read_error(&self, drive: usize, error: &dyn std::fmt::Display) {
        let errors = self.read_errors[drive].fetch_add(1, Ordering::Relaxed) + 1;
        if errors >= READ_ERRORS_TO_FAIL {
            let reason = format!("{errors} read errors, the last: {error}");
            let _ = self.fail_drive(drive, &reason);
        }
    }

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
            // Sync every drive written to in this pass; a drive that fails its sync is
            // failed and what it was given is written again elsewhere.
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
                    let _ =
                        self.fail_drive(drive, &format!("a sync after row writes failed: {err}"));
                    written.retain(|&(r, u, d)| {
                        if d == drive {
                            pending.push((r, u));
                        }
                        d != drive
                    });
                }
            }
        }
        if !pending.is_empty() {
            crate::fatal::durability_failure(
                "the NL-SAS array",
                "row write",
                &format_args!("{} units could not be written to any drive", pending.len()),
            );
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

    /// Reads one 4 KiB block from where it lives now. Fails when its drive is out (then
    /// [`Array::repair_block`] reconstructs it) or the read fails.
    pub fn read_block(&self, ring: &mut IoRing, phys: PhysBlock, buf: &mut [u8]) -> io::Result<()> {
        self.reads_served.fetch_add(1, Ordering::Relaxed);
        let row = self.geometry.row_of(phys);
        let (unit, within) = self.geometry.unit_of(phys);
        let cell = self.read_cell(row, unit).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("physical block {phys} is on a failed drive"),
            )
        })?;
        let device = self.device(cell.drive);
        let result = ring.read_at(
            &device,
            self.byte_offset(cell) + within,
            &mut buf[..BLOCK_SIZE],
        );
        self.judge_latency(ring, 0, cell.drive);
        if let Err(err) = &result {
            self.count_read_error(cell.drive, err);
        }
        result
    }

    /// Reads 4 KiB blocks `phys[i]` into `buf[i * 4 KiB..]`, all in flight together;
    /// `failed` gets the indexes of blocks that could not be read (on a failed drive, or
    /// the read failed), in ascending order.
    pub fn read_blocks(
        &self,
        ring: &mut IoRing,
        phys: &[PhysBlock],
        buf: &mut [u8],
        failed: &mut Vec<usize>,
    ) {
        failed.clear();
        self.reads_served
            .fetch_add(phys.len() as u64, Ordering::Relaxed);
        let devices: Vec<Arc<Device>> = (0..self.drives.len()).map(|d| self.device(d)).collect();
        let mut indexes = Vec::with_capacity(phys.len());
        let mut requests: Vec<IoRequest<'_>> = Vec::with_capacity(phys.len());
        for (index, (phys, chunk)) in phys.iter().zip(buf.chunks_mut(BLOCK_SIZE)).enumerate() {
            let (unit, within) = self.geometry.unit_of(*phys);
            match self.read_cell(self.geometry.row_of(*phys), unit) {
                Some(cell) => {
                    indexes.push((index, cell.drive));
                    requests.push(IoRequest {
                        device: &devices[cell.drive],
                        offset: self.byte_offset(cell) + within,
                        kind: IoKind::Read(chunk),
                    });
                }
                None => failed.push(index),
            }
        }
        let mut results = Vec::with_capacity(requests.len());
        ring.execute(&mut requests, &mut results);
        drop(requests);
        for (request, &(_, drive)) in indexes.iter().enumerate() {
            self.judge_latency(ring, request, drive);
        }
        for (&(index, drive), result) in indexes.iter().zip(results) {
            match result {
                Ok(done) if done == BLOCK_SIZE => {}
                Ok(done) => {
                    self.count_read_error(drive, &format_args!("read {done} of 4096 bytes"));
                    failed.push(index);
                }
                Err(err) => {
                    self.count_read_error(drive, &err);
                    failed.push(index);
                }
            }
        }
        failed.sort_unstable();
    }

    /// Where a block of a row sits inside a buffer of the row's units.
    pub fn offset_in_row(&self, phys: PhysBlock) -> usize {
        self.geometry.offset_in_row(phys)
    }

    /// Reads the data units of `row` (summary included) into the start of `buffer`,
    /// reconstructing those on failed drives. Fails when a unit cannot be read or rebuilt.
    pub fn read_data_units(
        &self,
        ring: &mut IoRing,
        row: u64,
        buffer: &mut [u8],
    ) -> io::Result<()> {
        let unit = self.geometry.unit as usize;
        let mut full = crate::io::AlignedBuf::new(self.row_buffer_len());
        let failed = self.read_row(ring, row, &mut full);
        let data_failed = failed.iter().any(|&u| u < self.geometry.data);
        if data_failed {
            let mut codec = ParityCodec::new(self.geometry.data, unit)
                .map_err(|err| io::Error::other(err.to_string()))?;
            let mut units: Vec<&mut [u8]> = full.chunks_mut(unit).collect();
            codec
                .rebuild(&mut units, &failed)
                .map_err(|err| io::Error::other(format!("row {row} cannot be rebuilt: {err}")))?;
        }
        let len = unit * self.geometry.data;
        buffer[..len].copy_from_slice(&full[..len]);
        Ok(())
    }
}
