//! Capacity and thin provisioning: READ CAPACITY (10/16), WRITE SAME (10/16), UNMAP and
//! GET LBA STATUS. Unmapped blocks read as zeroes (LBPRZ=1); a WRITE SAME with UNMAP set
//! releases the range.

use super::cdb::{be16, be32, be64, block_cdb, check_range, require};
use super::inquiry::{
    GRANULARITY_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BLOCKS,
};
use super::rw::DATA_OUT_MISMATCH;
use super::sense::{
    CmdResult, LBA_OUT_OF_RANGE, PARAMETER_LIST_LENGTH_ERROR, Sense, WRITE_PROTECTED, read_failure,
    write_failure,
};
use super::{BLOCK_SIZE, LogicalUnit, Response};
use crate::target::Extent;

/// Bytes written per step when WRITE SAME repeats a block.
const WRITE_SAME_CHUNK: usize = 1 << 20;
/// Bytes GET LBA STATUS describes per command at most.
const LBA_STATUS_SPAN: u64 = 1 << 30;

impl LogicalUnit {
    /// READ CAPACITY (10): 0xFFFFFFFF when the last LBA does not fit 32 bits.
    pub(crate) fn read_capacity_10(&self, cdb: &[u8], response: &mut Response) -> CmdResult {
        require(cdb, 10)?;
        if cdb[8] & 0x01 == 0 && be32(cdb, 2) != 0 {
            return Err(Sense::bad_cdb_field(2).into());
        }
        let last = self.capacity_blocks().saturating_sub(1);
        let last = u32::try_from(last).unwrap_or(u32::MAX);
        let out = &mut response.data_in;
        out.clear();
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
        Ok(())
    }

    /// READ CAPACITY (16): LBPME and LBPRZ set, 4 KiB physical blocks.
    pub(crate) fn read_capacity_16(&self, cdb: &[u8], response: &mut Response) -> CmdResult {
        require(cdb, 16)?;
        let allocation = be32(cdb, 10) as usize;
        let mut data = [0u8; 32];
        let last = self.capacity_blocks().saturating_sub(1);
        data[0..8].copy_from_slice(&last.to_be_bytes());
        data[8..12].copy_from_slice(&BLOCK_SIZE.to_be_bytes());
        data[13] = GRANULARITY_BLOCKS.trailing_zeros() as u8;
        data[14] = 0xC0;
        super::cdb::answer(&mut response.data_in, &data, allocation);
        Ok(())
    }

    /// WRITE SAME (10/16): UNMAP releases the range (unmap requested: the blocks then
    /// read as zeroes, LBPRZ=1, whatever the Data-Out block held, as the usual targets
    /// do), a zero block without it zeroes the range (kept allocated), anything else is
    /// written repeated.
    /// NUMBER OF LOGICAL BLOCKS 0 (WSNZ is 0) means up to the end of the medium; the
    /// count, given or implied, is bounded by MAXIMUM WRITE SAME LENGTH. The Data-Out is
    /// exactly one block (none with NDOB).
    pub(crate) fn write_same(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        let request = block_cdb(cdb)?;
        let sixteen = cdb[0] == super::cdb::op::WRITE_SAME_16;
        let unmap = request.flags & 0x08 != 0;
        let anchor = request.flags & 0x10 != 0;
        let no_data_out = sixteen && request.flags & 0x01 != 0;
        if request.protect() != 0 || (anchor && !unmap) {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let length_byte = if sixteen { 10 } else { 7 };
        let capacity = self.capacity_blocks();
        let blocks = if request.blocks == 0 {
            // To the end of the medium, from an LBA inside it.
            if request.lba >= capacity {
                return Err(LBA_OUT_OF_RANGE.into());
            }
            capacity - request.lba
        } else {
            request.check_range(capacity)?;
            u64::from(request.blocks)
        };
        if blocks > MAX_WRITE_SAME_BLOCKS {
            return Err(Sense::bad_cdb_field(length_byte).into());
        }
        if self.target.read_only() {
            return Err(WRITE_PROTECTED.into());
        }
        let block = BLOCK_SIZE as usize;
        let expected_data_out = if no_data_out { 0 } else { block };
        if data_out.len() != expected_data_out {
            return Err(DATA_OUT_MISMATCH.into());
        }
        let pattern = data_out;
        let zero = pattern.iter().all(|&byte| byte == 0);
        let offset = request.lba * u64::from(BLOCK_SIZE);
        let total = blocks * u64::from(BLOCK_SIZE);
        let _interlock = self.shared.lock_for_write(request.lba, blocks);
        if unmap {
            return self
                .target
                .trim(offset, total, false)
                .map_err(write_failure);
        }
        if zero {
            return self
                .target
                .write_zeroes(offset, total, true, false, false)
                .map_err(write_failure);
        }
        let scratch = &mut response.data_in;
        let chunk = (total as usize).min(WRITE_SAME_CHUNK);
        scratch.clear();
        while scratch.len() < chunk {
            scratch.extend_from_slice(pattern);
        }
        let mut done = 0u64;
        let mut result = Ok(());
        while done < total && result.is_ok() {
            let step = (total - done).min(chunk as u64) as usize;
            result = self
                .target
                .write(offset + done, &scratch[..step], false)
                .map_err(write_failure);
            done += step as u64;
        }
        scratch.clear();
        result
    }

    /// UNMAP: validates every block descriptor, then releases each range.
    pub(crate) fn unmap(&self, cdb: &[u8], data_out: &[u8]) -> CmdResult {
        require(cdb, 10)?;
        if self.target.read_only() {
            return Err(WRITE_PROTECTED.into());
        }
        let list_length = usize::from(be16(cdb, 7));
        if list_length == 0 {
            return Ok(());
        }
        let list = &data_out[..data_out.len().min(list_length)];
        if list_length < 8 || list.len() < 8 {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let described = usize::from(be16(list, 2));
        let descriptors = described.min(list.len() - 8) / 16;
        if descriptors > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::bad_param_field(2).into());
        }
        let capacity = self.capacity_blocks();
        let ranges = list[8..8 + descriptors * 16].chunks_exact(16);
        for (index, descriptor) in ranges.clone().enumerate() {
            let blocks = be32(descriptor, 8);
            if blocks > MAX_UNMAP_BLOCKS {
                return Err(Sense::bad_param_field((8 + index * 16 + 8) as u16).into());
            }
            check_range(be64(descriptor, 0), u64::from(blocks), capacity)?;
        }
        for descriptor in ranges {
            let lba = be64(descriptor, 0);
            let blocks = u64::from(be32(descriptor, 8));
            if blocks == 0 {
                continue;
            }
            let _interlock = self.shared.lock_for_write(lba, blocks);
            self.target
                .trim(
                    lba * u64::from(BLOCK_SIZE),
                    blocks * u64::from(BLOCK_SIZE),
                    false,
                )
                .map_err(write_failure)?;
        }
        Ok(())
    }

    /// GET LBA STATUS: mapped (0) / deallocated (1) extents from the starting LBA, as many
    /// as the allocation length holds.
    pub(crate) fn get_lba_status(&self, cdb: &[u8], response: &mut Response) -> CmdResult {
        require(cdb, 16)?;
        let lba = be64(cdb, 2);
        let allocation = be32(cdb, 10) as usize;
        let capacity = self.capacity_blocks();
        if lba >= capacity {
            return Err(LBA_OUT_OF_RANGE.into());
        }
        let block = u64::from(BLOCK_SIZE);
        let start = lba * block;
        let span = (capacity * block - start).min(LBA_STATUS_SPAN);
        let mut extents: Vec<Extent> = Vec::new();
        self.target
            .block_status(start, span, &mut extents)
            .map_err(read_failure)?;
        let room = (allocation.saturating_sub(8) / 16).max(1);
        let out = &mut response.data_in;
        out.clear();
        out.extend_from_slice(&[0; 8]);
        let mut next = lba;
        let mut pending: Option<(u64, u64, bool)> = None;
        let mut emitted = 0usize;
        for extent in &extents {
            let blocks = extent.length / block;
            if blocks == 0 {
                continue;
            }
            pending = match pending {
                Some((first, count, hole)) if hole == extent.hole => {
                    Some((first, count + blocks, hole))
                }
                Some(done) => {
                    emit(out, done);
                    emitted += 1;
                    Some((next, blocks, extent.hole))
                }
                None => Some((next, blocks, extent.hole)),
            };
            next += blocks;
            if emitted == room {
                pending = None;
                break;
            }
        }
        match pending {
            Some(last) => emit(out, last),
            None if emitted == 0 => emit(out, (lba, span / block, false)),
            None => {}
        }
        let length = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&length.to_be_bytes());
        out.truncate(allocation);
        Ok(())
    }
}

/// Appends one LBA status descriptor: first LBA, block count, mapped (0) or
/// deallocated (1).
fn emit(out: &mut Vec<u8>, (first, blocks, hole): (u64, u64, bool)) {
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&(blocks.min(u64::from(u32::MAX)) as u32).to_be_bytes());
    out.extend_from_slice(&[u8::from(hole), 0, 0, 0]);
}
