//! CDB decoding: operation codes, the 6/10/12/16-byte block forms, allocation lengths.
//!
//! Every decoder checks the CDB is long enough before reading a field and answers the
//! protocol's error (INVALID FIELD IN CDB pointing at the missing byte) when it is not.

use super::sense::{INVALID_FIELD_IN_CDB, LBA_OUT_OF_RANGE, Sense};

/// Operation codes this layer knows.
pub(crate) mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2E;
    pub const VERIFY_10: u8 = 0x2F;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8A;
    pub const ORWRITE_16: u8 = 0x8B;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8E;
    pub const VERIFY_16: u8 = 0x8F;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
    pub const MAINTENANCE_IN: u8 = 0xA3;
    pub const READ_12: u8 = 0xA8;
    pub const WRITE_12: u8 = 0xAA;
    pub const WRITE_AND_VERIFY_12: u8 = 0xAE;
    pub const VERIFY_12: u8 = 0xAF;
}

/// Service actions of SERVICE ACTION IN(16), MAINTENANCE IN and RECEIVE COPY RESULTS.
pub(crate) mod sa {
    pub const READ_CAPACITY_16: u8 = 0x10;
    pub const GET_LBA_STATUS: u8 = 0x12;
    pub const REPORT_TARGET_PORT_GROUPS: u8 = 0x0A;
    pub const REPORT_SUPPORTED_OPCODES: u8 = 0x0C;
    pub const COPY_STATUS: u8 = 0x00;
    pub const OPERATING_PARAMETERS: u8 = 0x03;
}

/// The CDB length the opcode's group code implies (SPC-5 4.2.5.1); `None` for the
/// variable-length and vendor-specific groups.
pub(crate) fn cdb_length(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Fails unless `cdb` holds at least `len` bytes.
pub(crate) fn require(cdb: &[u8], len: usize) -> Result<(), Sense> {
    if cdb.len() < len {
        return Err(Sense::bad_cdb_field(cdb.len() as u16));
    }
    Ok(())
}

pub(crate) fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn be24(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]])
}

pub(crate) fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub(crate) fn be64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(raw)
}

/// A medium-access CDB in any of its forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockCdb {
    pub lba: u64,
    pub blocks: u32,
    /// Byte 1 of the 10/12/16 forms (0 for the 6-byte form): FUA, DPO, BYTCHK, xxPROTECT.
    pub flags: u8,
}

impl BlockCdb {
    pub(crate) fn fua(&self) -> bool {
        self.flags & 0x08 != 0
    }

    /// The BYTCHK field of VERIFY / WRITE AND VERIFY.
    pub(crate) fn bytchk(&self) -> u8 {
        (self.flags >> 1) & 0x03
    }

    /// RDPROTECT / WRPROTECT / VRPROTECT: protection information is not supported.
    pub(crate) fn protect(&self) -> u8 {
        self.flags >> 5
    }

    /// Fails with LBA OUT OF RANGE unless `[lba, lba+blocks)` lies inside `capacity` blocks.
    pub(crate) fn check_range(&self, capacity: u64) -> Result<(), Sense> {
        check_range(self.lba, u64::from(self.blocks), capacity)
    }
}

/// Fails with LBA OUT OF RANGE unless `[lba, lba+blocks)` lies inside `capacity` blocks.
pub(crate) fn check_range(lba: u64, blocks: u64, capacity: u64) -> Result<(), Sense> {
    match lba.checked_add(blocks) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(LBA_OUT_OF_RANGE),
    }
}

/// Decodes LBA, transfer length and flags of a READ/WRITE/VERIFY/PRE-FETCH/SYNCHRONIZE
/// CACHE/WRITE SAME CDB by its group code. The 6-byte form's length 0 means 256.
pub(crate) fn block_cdb(cdb: &[u8]) -> Result<BlockCdb, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(INVALID_FIELD_IN_CDB);
    };
    let Some(len) = cdb_length(opcode) else {
        return Err(INVALID_FIELD_IN_CDB);
    };
    require(cdb, len)?;
    let decoded = match len {
        6 => {
            let blocks = match cdb[4] {
                0 => 256,
                n => u32::from(n),
            };
            BlockCdb {
                lba: u64::from(be24(cdb, 1) & 0x1F_FFFF),
                blocks,
                flags: 0,
            }
        }
        10 => BlockCdb {
            lba: u64::from(be32(cdb, 2)),
            blocks: u32::from(be16(cdb, 7)),
            flags: cdb[1],
        },
        12 => BlockCdb {
            lba: u64::from(be32(cdb, 2)),
            blocks: be32(cdb, 6),
            flags: cdb[1],
        },
        _ => BlockCdb {
            lba: be64(cdb, 2),
            blocks: be32(cdb, 10),
            flags: cdb[1],
        },
    };
    Ok(decoded)
}

/// Copies `data` into `out` (cleared first), truncated to `allocation` bytes.
pub(crate) fn answer(out: &mut Vec<u8>, data: &[u8], allocation: usize) {
    out.clear();
    out.extend_from_slice(&data[..data.len().min(allocation)]);
}
