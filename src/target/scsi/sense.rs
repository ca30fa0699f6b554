//! Fixed-format sense data (SPC-5 4.4.3) and the failures a command handler returns.
//!
//! Every handler answers `Result<(), Failure>`; `unit.rs` turns a failure into CHECK
//! CONDITION with 18 bytes of sense (response code 0x70, VALID and INFORMATION when given,
//! a sense-key-specific field pointer when the failure names a field) or into RESERVATION
//! CONFLICT. The mapping of [`IoError`] to sense is written once, here.

use crate::types::IoError;

/// Sense keys (SPC-5 table 27).
pub(crate) mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const COPY_ABORTED: u8 = 0xA;
    pub const MISCOMPARE: u8 = 0xE;
}

/// Length of the fixed-format sense this layer builds.
pub(crate) const SENSE_LEN: usize = 18;

/// Which byte (and optionally bit) of the CDB or parameter list was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldPointer {
    pub in_cdb: bool,
    pub byte: u16,
    pub bit: Option<u8>,
}

/// One sense report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// INFORMATION field (VALID=1); MISCOMPARE offsets and the like.
    pub information: Option<u32>,
    pub field: Option<FieldPointer>,
}

impl Sense {
    pub(crate) const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            information: None,
            field: None,
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at `byte`.
    pub(crate) const fn bad_cdb_field(byte: u16) -> Sense {
        Sense {
            field: Some(FieldPointer {
                in_cdb: true,
                byte,
                bit: None,
            }),
            ..INVALID_FIELD_IN_CDB
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST pointing at `byte`.
    pub(crate) const fn bad_param_field(byte: u16) -> Sense {
        Sense {
            field: Some(FieldPointer {
                in_cdb: false,
                byte,
                bit: None,
            }),
            ..INVALID_FIELD_IN_PARAMETER_LIST
        }
    }

    pub(crate) const fn with_information(mut self, information: u32) -> Sense {
        self.information = Some(information);
        self
    }

    /// Appends the 18-byte fixed-format sense to `out`.
    pub(crate) fn write_fixed(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + SENSE_LEN, 0);
        let sense = &mut out[start..];
        sense[0] = 0x70;
        sense[2] = self.key & 0x0F;
        if let Some(information) = self.information {
            sense[0] |= 0x80;
            sense[3..7].copy_from_slice(&information.to_be_bytes());
        }
        sense[7] = (SENSE_LEN - 8) as u8;
        sense[12] = self.asc;
        sense[13] = self.ascq;
        if let Some(field) = self.field {
            let mut flags = 0x80; // SKSV
            if field.in_cdb {
                flags |= 0x40;
            }
            if let Some(bit) = field.bit {
                flags |= 0x08 | (bit & 0x07);
            }
            sense[15] = flags;
            sense[16..18].copy_from_slice(&field.byte.to_be_bytes());
        }
    }
}

pub(crate) const INVALID_OPCODE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00);
pub(crate) const INVALID_FIELD_IN_CDB: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
pub(crate) const INVALID_FIELD_IN_PARAMETER_LIST: Sense =
    Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x00);
pub(crate) const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x1A, 0x00);
pub(crate) const LBA_OUT_OF_RANGE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00);
pub(crate) const LUN_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00);
pub(crate) const SAVING_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00);
pub(crate) const WRITE_PROTECTED: Sense = Sense::new(key::DATA_PROTECT, 0x27, 0x00);
pub(crate) const SPACE_ALLOCATION_FAILED: Sense = Sense::new(key::DATA_PROTECT, 0x27, 0x07);
pub(crate) const INTERNAL_TARGET_FAILURE: Sense = Sense::new(key::HARDWARE_ERROR, 0x44, 0x00);
pub(crate) const UNRECOVERED_READ_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x11, 0x00);
pub(crate) const WRITE_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x0C, 0x00);
pub(crate) const MISCOMPARE_DURING_VERIFY: Sense = Sense::new(key::MISCOMPARE, 0x1D, 0x00);
pub(crate) const ALUA_TRANSITIONING: Sense = Sense::new(key::NOT_READY, 0x04, 0x0A);
pub(crate) const TOO_MANY_TARGET_DESCRIPTORS: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x06);
pub(crate) const UNSUPPORTED_TARGET_DESCRIPTOR: Sense =
    Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x07);
pub(crate) const TOO_MANY_SEGMENT_DESCRIPTORS: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x08);
pub(crate) const UNSUPPORTED_SEGMENT_DESCRIPTOR: Sense =
    Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x09);
pub(crate) const COPY_TARGET_NOT_REACHABLE: Sense = Sense::new(key::COPY_ABORTED, 0x0D, 0x02);

/// Why a command did not answer GOOD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// CHECK CONDITION with this sense.
    Check(Sense),
    /// RESERVATION CONFLICT status, no sense.
    ReservationConflict,
}

impl From<Sense> for Failure {
    fn from(sense: Sense) -> Failure {
        Failure::Check(sense)
    }
}

/// What every command handler returns.
pub(crate) type CmdResult = Result<(), Failure>;

/// The sense for a failed [`crate::target::BlockTarget`] call; `reading` picks the
/// medium error flavour.
pub(crate) fn io_error_sense(error: &IoError, reading: bool) -> Sense {
    match error {
        IoError::OutOfRange { .. } => LBA_OUT_OF_RANGE,
        IoError::ReadOnly { .. } => WRITE_PROTECTED,
        IoError::NoSpace { .. } => SPACE_ALLOCATION_FAILED,
        IoError::Media { .. } if reading => UNRECOVERED_READ_ERROR,
        IoError::Media { .. } => WRITE_ERROR,
        IoError::VolumeGone { .. } => LUN_NOT_SUPPORTED,
        IoError::ShuttingDown | IoError::Paused => ALUA_TRANSITIONING,
        IoError::NotFast => INTERNAL_TARGET_FAILURE,
    }
}

/// Maps a read-side I/O error to a failure.
pub(crate) fn read_failure(error: IoError) -> Failure {
    Failure::Check(io_error_sense(&error, true))
}

/// Maps a write-side I/O error to a failure.
pub(crate) fn write_failure(error: IoError) -> Failure {
    Failure::Check(io_error_sense(&error, false))
}
