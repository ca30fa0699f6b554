//! COMPARE AND WRITE (0x89) and ORWRITE(16) (0x8B): read-modify-write commands that run
//! under the write side of the interlock stripes, so no other write from any path lands
//! between their read and their write.

use super::cdb::{be32, be64, check_range, require};
use super::inquiry::{MAX_COMPARE_AND_WRITE_BLOCKS, MAX_TRANSFER_BLOCKS};
use super::rw::{DATA_OUT_MISMATCH, first_difference};
use super::sense::{
    CmdResult, Failure, MISCOMPARE_DURING_VERIFY, Sense, WRITE_PROTECTED, read_failure,
    write_failure,
};
use super::{BLOCK_SIZE, LogicalUnit, Response};

impl LogicalUnit {
    /// COMPARE AND WRITE: Data-Out holds the verify blocks then the write blocks, exactly
    /// (any other length is refused as an invalid NUMBER OF LOGICAL BLOCKS: which half
    /// would be which is unknowable); on a
    /// miscompare nothing is written and INFORMATION is the offset of the first
    /// differing byte.
    pub(crate) fn compare_and_write(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 16)?;
        if cdb[1] >> 5 != 0 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let lba = be64(cdb, 2);
        let blocks = u32::from(cdb[13]);
        if blocks > MAX_COMPARE_AND_WRITE_BLOCKS {
            return Err(Sense::bad_cdb_field(13).into());
        }
        check_range(lba, u64::from(blocks), self.capacity_blocks())?;
        if self.target.read_only() {
            return Err(WRITE_PROTECTED.into());
        }
        let bytes = blocks as usize * BLOCK_SIZE as usize;
        if data_out.len() != 2 * bytes {
            // NUMBER OF LOGICAL BLOCKS does not describe the Data-Out sent.
            return Err(Sense::bad_cdb_field(13).into());
        }
        if blocks == 0 {
            return Ok(());
        }
        let (verify, write) = data_out.split_at(bytes);
        let offset = lba * u64::from(BLOCK_SIZE);
        let fua = cdb[1] & 0x08 != 0;
        let _interlock = self.shared.lock_exclusive(lba, u64::from(blocks));
        let current = &mut response.data_in;
        current.resize(bytes, 0);
        let read = self.target.read(offset, current).map_err(read_failure);
        let differs = read.map(|()| first_difference(current, verify));
        current.clear();
        if let Some(at) = differs? {
            return Err(Failure::Check(
                MISCOMPARE_DURING_VERIFY.with_information(at as u32),
            ));
        }
        self.target.write(offset, write, fua).map_err(write_failure)
    }

    /// ORWRITE(16): each block becomes its old contents OR the Data-Out.
    pub(crate) fn or_write(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 16)?;
        if cdb[1] >> 5 != 0 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let lba = be64(cdb, 2);
        let blocks = be32(cdb, 10);
        check_range(lba, u64::from(blocks), self.capacity_blocks())?;
        if blocks > MAX_TRANSFER_BLOCKS {
            return Err(Sense::bad_cdb_field(10).into());
        }
        if self.target.read_only() {
            return Err(WRITE_PROTECTED.into());
        }
        if blocks == 0 {
            return Ok(());
        }
        let bytes = blocks as usize * BLOCK_SIZE as usize;
        let Some(mask) = data_out.get(..bytes) else {
            return Err(DATA_OUT_MISMATCH.into());
        };
        let offset = lba * u64::from(BLOCK_SIZE);
        let fua = cdb[1] & 0x08 != 0;
        let _interlock = self.shared.lock_exclusive(lba, u64::from(blocks));
        let merged = &mut response.data_in;
        merged.resize(bytes, 0);
        let result = self
            .target
            .read(offset, merged)
            .map_err(read_failure)
            .and_then(|()| {
                for (byte, bits) in merged.iter_mut().zip(mask) {
                    *byte |= bits;
                }
                self.target
                    .write(offset, merged, fua)
                    .map_err(write_failure)
            });
        merged.clear();
        result
    }
}
