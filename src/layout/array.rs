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

mod drive_admin;
mod guard;
mod heal;
mod reconstruct;
mod scrub;
#[cfg(test)]
mod scrub_tests;
mod write;

pub use drive_admin::HealPriority;
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
        if let Some(priority) = store.priority().as_deref().and_then(HealPriority::parse) {
            self.set_priority_in_memory(priority);
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

    /// Sets the heal priority and keeps it in the drive store, so a restart keeps it.
    pub fn set_heal_priority(&self, priority: HealPriority) {
        self.set_priority_in_memory(priority);
        let table = self.table.read();
        if let Some(store) = self.store.lock().as_ref() {
            store.set_priority(priority.as_str());
        }
        self.persist(&table);
    }

    fn set_priority_in_memory(&self, priority: HealPriority) {
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

    pub(super) fn write_cell(&self, row: u64, unit: usize) -> Option<Cell> {
        if !self.is_degraded() {
            return Some(self.placement.cell(row, unit));
        }
        self.table.read().write_cell(&self.placement, row, unit)
    }

    pub(super) fn byte_offset(&self, cell: Cell) -> u64 {
        cell.index * self.geometry.unit
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
