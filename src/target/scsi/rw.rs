//! READ, WRITE, WRITE AND VERIFY, VERIFY, PRE-FETCH and SYNCHRONIZE CACHE in all their
//! forms.
//!
//! Reads land in `response.data_in` (resized, its allocation reused between commands);
//! writes go straight from the Data-Out buffer under the read side of the interlock
//! stripes they touch. A Data-Out shorter than the CDB asks (the initiator's expected
//! data transfer length was smaller: the transport reports the overflow residual) writes
//! the whole blocks that arrived, from the starting LBA, and answers GOOD, as SAM-5 and
//! RFC 7143 allow for an overflow; a trailing partial block is not written. Extra Data-Out
//! is ignored (underflow).

use super::cdb::{BlockCdb, block_cdb, check_range};
use super::inquiry::MAX_TRANSFER_BLOCKS;
use super::sense::{
    CmdResult, Failure, INVALID_FIELD_IN_CDB, MISCOMPARE_DURING_VERIFY, Sense, WRITE_PROTECTED,
    key, read_failure, write_failure,
};
use super::{BLOCK_SIZE, LogicalUnit, Response};

/// Data-Out whose length does not fit the command (INVALID FIELD IN COMMAND INFORMATION
/// UNIT): too short for VERIFY, not exactly what COMPARE AND WRITE / WRITE SAME need.
pub(crate) const DATA_OUT_MISMATCH: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x0E, 0x03);

/// Bytes read per step when a command walks a long range (VERIFY).
const CHUNK_BYTES: usize = 1 << 20;

impl LogicalUnit {
    /// Capacity in logical blocks.
    pub(crate) fn capacity_blocks(&self) -> u64 {
        self.target.size() / u64::from(BLOCK_SIZE)
    }

    /// Decodes a medium-access CDB and checks what every such command checks: no
    /// protection information, the range inside the medium, the transfer length cap.
    fn transfer(&self, cdb: &[u8], capped: bool) -> Result<BlockCdb, Sense> {
        let request = block_cdb(cdb)?;
        if request.protect() != 0 {
            return Err(Sense::bad_cdb_field(1));
        }
        request.check_range(self.capacity_blocks())?;
        if capped && request.blocks > MAX_TRANSFER_BLOCKS {
            return Err(INVALID_FIELD_IN_CDB);
        }
        Ok(request)
    }

    /// READ (6/10/12/16).
    pub(crate) fn read(&self, cdb: &[u8], response: &mut Response) -> CmdResult {
        let request = self.transfer(cdb, true)?;
        if request.blocks == 0 {
            return Ok(());
        }
        let bytes = request.blocks as usize * BLOCK_SIZE as usize;
        response.data_in.resize(bytes, 0);
        self.target
            .read(request.lba * u64::from(BLOCK_SIZE), &mut response.data_in)
            .map_err(read_failure)
    }

    /// WRITE (6/10/12/16) and WRITE AND VERIFY (10/12/16, `verify`: written durably).
    pub(crate) fn write(&self, cdb: &[u8], data_out: &[u8], verify: bool) -> CmdResult {
        let request = self.transfer(cdb, true)?;
        if verify && request.bytchk() > 1 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        if self.target.read_only() {
            return Err(WRITE_PROTECTED.into());
        }
        let block = BLOCK_SIZE as usize;
        let blocks = (request.blocks as usize).min(data_out.len() / block);
        if blocks == 0 {
            return Ok(());
        }
        let data = &data_out[..blocks * block];
        let _interlock = self.shared.lock_for_write(request.lba, blocks as u64);
        self.target
            .write(
                request.lba * u64::from(BLOCK_SIZE),
                data,
                request.fua() || verify,
            )
            .map_err(write_failure)
    }

    /// VERIFY (10/12/16): BYTCHK 0 checks the range reads, 1 compares it with the
    /// Data-Out, 3 compares every block with the one Data-Out block.
    pub(crate) fn verify(&self, cdb: &[u8], data_out: &[u8], response: &mut Response) -> CmdResult {
        let request = self.transfer(cdb, false)?;
        let bytchk = request.bytchk();
        if bytchk == 2 || (bytchk == 1 && request.blocks > MAX_TRANSFER_BLOCKS) {
            return Err(Sense::bad_cdb_field(1).into());
        }
        if request.blocks == 0 {
            return Ok(());
        }
        let block = BLOCK_SIZE as usize;
        let total = request.blocks as usize * block;
        let expected = match bytchk {
            0 => None,
            1 => Some(data_out.get(..total).ok_or(DATA_OUT_MISMATCH)?),
            _ => Some(data_out.get(..block).ok_or(DATA_OUT_MISMATCH)?),
        };
        let result = self.verify_range(request.lba, total, expected, bytchk == 3, response);
        response.data_in.clear();
        result
    }

    /// Reads `total` bytes from `lba` in chunks through `response.data_in` (scratch),
    /// comparing with `expected` (the whole range, or one block repeated).
    fn verify_range(
        &self,
        lba: u64,
        total: usize,
        expected: Option<&[u8]>,
        repeated: bool,
        response: &mut Response,
    ) -> CmdResult {
        let block = BLOCK_SIZE as usize;
        let start = lba * u64::from(BLOCK_SIZE);
        let mut done = 0usize;
        while done < total {
            let step = (total - done).min(CHUNK_BYTES);
            let scratch = &mut response.data_in;
            scratch.resize(step, 0);
            self.target
                .read(start + done as u64, scratch)
                .map_err(read_failure)?;
            if let Some(expected) = expected {
                let differs = if repeated {
                    scratch
                        .chunks(block)
                        .enumerate()
                        .find_map(|(index, chunk)| {
                            first_difference(chunk, expected).map(|at| index * block + at)
                        })
                } else {
                    first_difference(scratch, &expected[done..done + step])
                };
                if let Some(at) = differs {
                    let offset = (done + at) as u32;
                    return Err(Failure::Check(
                        MISCOMPARE_DURING_VERIFY.with_information(offset),
                    ));
                }
            }
            done += step;
        }
        Ok(())
    }

    /// PRE-FETCH (10/16): a cache hint; GOOD (the hint is taken, not promised).
    pub(crate) fn pre_fetch(&self, cdb: &[u8]) -> CmdResult {
        let request = block_cdb(cdb)?;
        request.check_range(self.capacity_blocks())?;
        if request.blocks == 0 {
            return Ok(());
        }
        self.target
            .prefetch(
                request.lba * u64::from(BLOCK_SIZE),
                u64::from(request.blocks) * u64::from(BLOCK_SIZE),
            )
            .map_err(read_failure)
    }

    /// SYNCHRONIZE CACHE (10/16): everything acknowledged so far becomes durable (the
    /// range is checked, then the whole unit is flushed; IMMED is honoured by finishing
    /// before answering, which SBC allows).
    pub(crate) fn synchronize_cache(&self, cdb: &[u8]) -> CmdResult {
        let request = block_cdb(cdb)?;
        check_range(
            request.lba,
            u64::from(request.blocks),
            self.capacity_blocks(),
        )?;
        self.target.flush().map_err(write_failure)
    }
}

/// Offset of the first byte where `a` and `b` differ (over the shorter length).
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}
