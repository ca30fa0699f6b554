//! The NL-SAS devices as one array of rows (see `geometry`): whole-row writes with parity,
//! single-block reads, and repair of a block from the rest of its row.

use std::io;

use super::geometry::{Geometry, PhysBlock};
use super::parity::ParityCodec;
use crate::io::{Device, IoKind, IoRequest, IoRing};
use crate::types::BLOCK_SIZE;

/// The data devices followed by P and Q, and the geometry over them.
pub struct Array {
    devices: Vec<Device>,
    geometry: Geometry,
}

impl Array {
    /// `devices` are the `data` data devices then P then Q.
    pub fn new(devices: Vec<Device>, data: usize, unit: u64, rows_per_segment: u64) -> Array {
        let smallest = devices.iter().map(Device::size).min().unwrap_or(0);
        let geometry = Geometry::new(data, devices.len() - data, unit, rows_per_segment, smallest);
        Array { devices, geometry }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Bytes of one row buffer: every unit of the row, data then P then Q.
    pub fn row_buffer_len(&self) -> usize {
        self.geometry.unit as usize * self.devices.len()
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

    /// The hardware model's name of device `index` (data devices, then P, then Q).
    pub fn device_name(&self, index: usize) -> &str {
        self.devices[index].name()
    }

    /// Writes whole rows (each buffer holds every unit of its row, parity computed) and
    /// makes them durable on every device before returning.
    ///
    /// A write or sync that fails (or writes short) on any drive stops the node through
    /// [`crate::fatal::durability_failure`], naming the drive: until drive states exist,
    /// nothing can mark that drive failed and go on with a row below its redundancy.
    pub fn write_rows(&self, ring: &mut IoRing, rows: &[(u64, &[u8])]) {
        let unit = self.geometry.unit as usize;
        let mut requests = Vec::with_capacity(rows.len() * self.devices.len());
        for (row, buffer) in rows {
            let offset = self.geometry.row_offset(*row);
            for (index, device) in self.devices.iter().enumerate() {
                requests.push(IoRequest {
                    device,
                    offset,
                    kind: IoKind::Write(&buffer[index * unit..(index + 1) * unit]),
                });
            }
        }
        self.run_or_stop(ring, &mut requests, "row write", unit);
        let mut syncs: Vec<IoRequest<'_>> = self
            .devices
            .iter()
            .map(|device| IoRequest {
                device,
                offset: 0,
                kind: IoKind::Sync,
            })
            .collect();
        self.run_or_stop(ring, &mut syncs, "row sync", 0);
    }

    /// Runs `requests` (each on the device at its index modulo the device count); the
    /// first that fails, or transfers fewer than `expected` bytes, stops the node.
    fn run_or_stop(
        &self,
        ring: &mut IoRing,
        requests: &mut [IoRequest<'_>],
        operation: &str,
        expected: usize,
    ) {
        let mut results = Vec::with_capacity(requests.len());
        ring.execute(requests, &mut results);
        for (index, result) in results.into_iter().enumerate() {
            let device = index % self.devices.len();
            let offset = requests[index].offset;
            let error = match result {
                Ok(done) if done >= expected => continue,
                Ok(done) => io::Error::other(format!("wrote {done} of {expected} bytes")),
                Err(err) => err,
            };
            crate::fatal::durability_failure(
                self.devices[device].name(),
                operation,
                &format_args!("at offset {offset}: {error}"),
            );
        }
    }

    /// Reads one 4 KiB block.
    pub fn read_block(&self, ring: &mut IoRing, phys: PhysBlock, buf: &mut [u8]) -> io::Result<()> {
        let (device, offset) = self.geometry.locate(phys);
        ring.read_at(&self.devices[device], offset, &mut buf[..BLOCK_SIZE])
    }

    /// Reads 4 KiB blocks `phys[i]` into `buf[i * 4 KiB..]`, all in flight together;
    /// `failed` gets the indexes of blocks that could not be read, in ascending order.
    pub fn read_blocks(
        &self,
        ring: &mut IoRing,
        phys: &[PhysBlock],
        buf: &mut [u8],
        failed: &mut Vec<usize>,
    ) {
        failed.clear();
        let mut requests: Vec<IoRequest<'_>> = phys
            .iter()
            .zip(buf.chunks_mut(BLOCK_SIZE))
            .map(|(phys, chunk)| {
                let (device, offset) = self.geometry.locate(*phys);
                IoRequest {
                    device: &self.devices[device],
                    offset,
                    kind: IoKind::Read(chunk),
                }
            })
            .collect();
        let mut results = Vec::with_capacity(requests.len());
        ring.execute(&mut requests, &mut results);
        for (index, result) in results.iter().enumerate() {
            if !matches!(result, Ok(done) if *done == BLOCK_SIZE) {
                failed.push(index);
            }
        }
    }

    /// Reads the summary block of `row`.
    pub fn read_summary(&self, ring: &mut IoRing, row: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_block(
            ring,
            self.geometry.phys(row, self.geometry.summary_slot()),
            buf,
        )
    }

    /// Reads the data units of `row` (summary included) into the start of `buffer`.
    pub fn read_data_units(
        &self,
        ring: &mut IoRing,
        row: u64,
        buffer: &mut [u8],
    ) -> io::Result<()> {
        let unit = self.geometry.unit as usize;
        let offset = self.geometry.row_offset(row);
        let mut requests: Vec<IoRequest<'_>> = self.devices[..self.geometry.data]
            .iter()
            .zip(buffer.chunks_mut(unit))
            .map(|(device, chunk)| IoRequest {
                device,
                offset,
                kind: IoKind::Read(chunk),
            })
            .collect();
        run_all(ring, &mut requests)
    }

    /// Where a block of a row sits inside a buffer of the row's units.
    pub fn offset_in_row(&self, phys: PhysBlock) -> usize {
        let (device, offset) = self.geometry.locate(phys);
        device * self.geometry.unit as usize
            + (offset - self.geometry.row_offset(self.geometry.row_of(phys))) as usize
    }

    /// Reads every unit of `row` into `row_buffer`; returns the indexes of units that
    /// could not be read (their bytes are left zeroed).
    pub fn read_row(&self, ring: &mut IoRing, row: u64, row_buffer: &mut [u8]) -> Vec<usize> {
        let unit = self.geometry.unit as usize;
        let offset = self.geometry.row_offset(row);
        let mut requests: Vec<IoRequest<'_>> = self
            .devices
            .iter()
            .zip(row_buffer.chunks_mut(unit))
            .map(|(device, chunk)| IoRequest {
                device,
                offset,
                kind: IoKind::Read(chunk),
            })
            .collect();
        let mut results = Vec::new();
        ring.execute(&mut requests, &mut results);
        drop(requests);
        let failed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, result)| !matches!(result, Ok(n) if *n == unit))
            .map(|(index, _)| index)
            .collect();
        for &index in &failed {
            row_buffer[index * unit..(index + 1) * unit].fill(0);
        }
        failed
    }

    /// Rebuilds the block at `phys` from the rest of its row until `verify` accepts it:
    /// first assuming only its own unit is bad, then its unit and any one other. Returns
    /// the repaired block in `out`; `false` when no combination verifies.
    pub fn repair_block(
        &self,
        ring: &mut IoRing,
        codec: &mut ParityCodec,
        phys: PhysBlock,
        verify: &dyn Fn(&[u8]) -> bool,
        row_buffer: &mut [u8],
        out: &mut [u8],
    ) -> bool {
        let row = self.geometry.row_of(phys);
        let (device, offset) = self.geometry.locate(phys);
        let within = (offset - self.geometry.row_offset(row)) as usize;
        let unit = self.geometry.unit as usize;
        let failed = self.read_row(ring, row, row_buffer);
        let pristine = row_buffer.to_vec();
        let mut candidates: Vec<Vec<usize>> = vec![vec![device]];
        for other in 0..self.devices.len() {
            if other != device {
                candidates.push(vec![device, other]);
            }
        }
        for mut lost in candidates {
            for &index in &failed {
                if !lost.contains(&index) {
                    lost.push(index);
                }
            }
            if lost.len() > 2 {
                continue;
            }
            row_buffer.copy_from_slice(&pristine);
            let mut units: Vec<&mut [u8]> = row_buffer.chunks_mut(unit).collect();
            if codec.rebuild(&mut units, &lost).is_err() {
                continue;
            }
            let block = &units[device][within..within + BLOCK_SIZE];
            if verify(block) {
                out[..BLOCK_SIZE].copy_from_slice(block);
                return true;
            }
        }
        false
    }
}

fn run_all(ring: &mut IoRing, requests: &mut [IoRequest<'_>]) -> io::Result<()> {
    let mut results = Vec::with_capacity(requests.len());
    ring.execute(requests, &mut results);
    for (request, result) in requests.iter().zip(results) {
        match result {
            Ok(_) => {}
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "{} at offset {}: {err}",
                        request.device.path().display(),
                        request.offset
                    ),
                ));
            }
        }
    }
    Ok(())
}
