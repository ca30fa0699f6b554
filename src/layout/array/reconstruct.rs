//! Reconstruction: a row's units read with the failed ones rebuilt from parity, and one
//! block rebuilt from the 4 KiB slices at its offset in the other units of its row (P and
//! Q are computed element by element, so a slice of parity protects the same slice of the
//! data units).

use std::sync::Arc;

use super::Array;
use crate::io::{AlignedBuf, Device, IoKind, IoRequest, IoRing};
use crate::layout::geometry::PhysBlock;
use crate::layout::parity::ParityCodec;
use crate::types::BLOCK_SIZE;

/// How [`Array::repair_block`] got the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Its drive is out; rebuilt from the rest of the row, as expected while degraded.
    Reconstructed,
    /// Its copy failed the check (or its read failed) and parity rebuilt a copy that passes.
    Repaired,
    /// No combination of the row's units rebuilds a copy that passes: the block is lost.
    Lost,
}

impl Array {
    /// Reads every unit of `row` into `row_buffer` from where it lives now; returns the
    /// units that could not be read (on a failed drive, or the read failed), ascending.
    /// Their bytes are left zeroed.
    pub fn read_row(&self, ring: &mut IoRing, row: u64, row_buffer: &mut [u8]) -> Vec<usize> {
        let unit = self.geometry.unit as usize;
        let devices: Vec<Arc<Device>> = (0..self.drives.len()).map(|d| self.device(d)).collect();
        let mut failed = Vec::new();
        let mut issued = Vec::new();
        let mut requests: Vec<IoRequest<'_>> = Vec::new();
        for (index, chunk) in row_buffer.chunks_mut(unit).enumerate() {
            match self.read_cell(row, index) {
                Some(cell) => {
                    issued.push((index, cell.drive));
                    requests.push(IoRequest {
                        device: &devices[cell.drive],
                        offset: self.byte_offset(cell),
                        kind: IoKind::Read(chunk),
                    });
                }
                None => failed.push(index),
            }
        }
        let mut results = Vec::with_capacity(requests.len());
        ring.execute(&mut requests, &mut results);
        drop(requests);
        for (request, &(_, drive)) in issued.iter().enumerate() {
            self.judge_latency(ring, request, drive);
        }
        for (&(index, drive), result) in issued.iter().zip(&results) {
            match result {
                Ok(n) if *n == unit => {}
                Ok(n) => {
                    self.count_read_error(drive, &format_args!("read {n} of {unit} bytes"));
                    failed.push(index);
                }
                Err(err) => {
                    self.count_read_error(drive, err);
                    failed.push(index);
                }
            }
        }
        failed.sort_unstable();
        for &index in &failed {
            row_buffer[index * unit..(index + 1) * unit].fill(0);
        }
        failed
    }

    /// Rebuilds the block at `phys` from the 4 KiB slices at its offset in the rest of its
    /// row until `verify` accepts it: first taking as lost only its own unit (and units on
    /// failed drives), then also any one other. The block goes to `out`.
    pub fn repair_block(
        &self,
        ring: &mut IoRing,
        phys: PhysBlock,
        verify: &dyn Fn(&[u8]) -> bool,
        out: &mut [u8],
    ) -> RepairOutcome {
        let row = self.geometry.row_of(phys);
        let (target, within) = self.geometry.unit_of(phys);
        let width = self.placement.width();
        let (mut codec, mut slices) = self.take_block_codec();
        let devices: Vec<Arc<Device>> = (0..self.drives.len()).map(|d| self.device(d)).collect();
        let mut out_of_service = Vec::new();
        let mut issued = Vec::new();
        let mut requests: Vec<IoRequest<'_>> = Vec::new();
        for (index, chunk) in slices.chunks_mut(BLOCK_SIZE).enumerate() {
            match self.read_cell(row, index) {
                Some(cell) => {
                    issued.push((index, cell.drive));
                    requests.push(IoRequest {
                        device: &devices[cell.drive],
                        offset: self.byte_offset(cell) + within,
                        kind: IoKind::Read(chunk),
                    });
                }
                None => out_of_service.push(index),
            }
        }
        let mut results = Vec::with_capacity(requests.len());
        ring.execute(&mut requests, &mut results);
        drop(requests);
        let mut unreadable = out_of_service.clone();
        for (&(index, drive), result) in issued.iter().zip(&results) {
            if !matches!(result, Ok(n) if *n == BLOCK_SIZE) {
                self.count_read_error(drive, &"a read for reconstruction failed");
                unreadable.push(index);
            }
        }
        let pristine = slices.to_vec();
        let mut candidates: Vec<Vec<usize>> = vec![vec![target]];
        candidates.extend((0..width).filter(|&o| o != target).map(|o| vec![target, o]));
        let mut outcome = RepairOutcome::Lost;
        for mut lost in candidates {
            for &index in &unreadable {
                if !lost.contains(&index) {
                    lost.push(index);
                }
            }
            if lost.len() > width - self.geometry.data {
                continue;
            }
            slices.copy_from_slice(&pristine);
            let mut units: Vec<&mut [u8]> = slices.chunks_mut(BLOCK_SIZE).collect();
            if codec.rebuild(&mut units, &lost).is_err() {
                continue;
            }
            if verify(units[target]) {
                out[..BLOCK_SIZE].copy_from_slice(units[target]);
                outcome = if out_of_service.contains(&target) && lost.len() == out_of_service.len()
                {
                    RepairOutcome::Reconstructed
                } else {
                    RepairOutcome::Repaired
                };
                break;
            }
        }
        self.block_codecs.lock().push((codec, slices));
        outcome
    }

    /// A codec over 4 KiB slices and a buffer of one slice per unit, from the pool.
    fn take_block_codec(&self) -> (ParityCodec, AlignedBuf) {
        if let Some(pair) = self.block_codecs.lock().pop() {
            return pair;
        }
        let codec = ParityCodec::new(self.geometry.data, BLOCK_SIZE)
            .expect("a codec over 4 KiB slices of a valid geometry");
        (codec, AlignedBuf::new(BLOCK_SIZE * self.placement.width()))
    }
}
