//! Command dispatch for one logical unit: the order every CDB goes through.
//!
//! 1. An opcode not in the command table: INVALID COMMAND OPERATION CODE (0x20/0x00).
//! 2. Unit attentions (SAM-5 5.14): INQUIRY and REPORT LUNS neither see nor clear them;
//!    REQUEST SENSE returns the oldest as its sense data and clears it; any other command
//!    gets CHECK CONDITION / UNIT ATTENTION with it, and it is cleared.
//! 3. A CDB shorter than its opcode's group length: INVALID FIELD IN CDB.
//! 4. Reservations (`pr.rs` decides per CDB): RESERVATION CONFLICT.
//! 5. The command itself.

use super::cdb::{be32, cdb_length, op, require, sa};
use super::opcodes::opcode_supported;
use super::sense::{
    CmdResult, Failure, INTERNAL_TARGET_FAILURE, INVALID_FIELD_IN_CDB, INVALID_OPCODE,
    LUN_NOT_SUPPORTED, Sense, key,
};
use super::{CopyPeers, LogicalUnit, Nexus, Response, status};

/// Commands `pr.rs` answers itself (they never meet the reservation check here).
fn reservation_command(opcode: u8) -> bool {
    matches!(
        opcode,
        op::PERSISTENT_RESERVE_IN
            | op::PERSISTENT_RESERVE_OUT
            | op::RESERVE_6
            | op::RESERVE_10
            | op::RELEASE_6
            | op::RELEASE_10
    )
}

/// Turns a handler's failure into the response's status and sense.
fn fail(failure: Failure, response: &mut Response) {
    response.data_in.clear();
    response.sense.clear();
    match failure {
        Failure::Check(sense) => {
            response.status = status::CHECK_CONDITION;
            sense.write_fixed(&mut response.sense);
        }
        Failure::ReservationConflict => response.status = status::RESERVATION_CONFLICT,
    }
}

impl LogicalUnit {
    /// Executes one CDB from `nexus`. `data_out` is the Data-Out the initiator sent (all
    /// of it, possibly shorter or longer than the CDB asks: answer as SPC says).
    pub fn execute(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: &[u8],
        peers: &dyn CopyPeers,
        response: &mut Response,
    ) {
        response.clear();
        if let Err(failure) = self.dispatch(nexus, cdb, data_out, peers, response) {
            fail(failure, response);
        }
    }

    fn dispatch(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: &[u8],
        peers: &dyn CopyPeers,
        response: &mut Response,
    ) -> CmdResult {
        let Some(&opcode) = cdb.first() else {
            return Err(INVALID_FIELD_IN_CDB.into());
        };
        if !opcode_supported(opcode) {
            return Err(INVALID_OPCODE.into());
        }
        match opcode {
            op::INQUIRY | op::REPORT_LUNS => {
                self.shared.attention(nexus, false);
            }
            op::REQUEST_SENSE => {}
            _ => {
                if let Some((asc, ascq)) = self.shared.attention(nexus, true) {
                    return Err(Sense::new(key::UNIT_ATTENTION, asc, ascq).into());
                }
            }
        }
        if let Some(length) = cdb_length(opcode) {
            require(cdb, length)?;
        }
        if reservation_command(opcode) {
            return self.reservation(nexus, cdb, data_out, response);
        }
        if !self.shared.reservations_allow(nexus, cdb) {
            return Err(Failure::ReservationConflict);
        }
        match opcode {
            op::TEST_UNIT_READY | op::START_STOP_UNIT => Ok(()),
            op::REQUEST_SENSE => self.request_sense(nexus, cdb, response),
            op::INQUIRY => self.inquiry(nexus.relative_port, cdb, response),
            op::REPORT_LUNS => {
                // The front end answers REPORT LUNS with the session's LUN list; a unit
                // asked directly knows only itself.
                report_luns(&[0], cdb, response);
                Ok(())
            }
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => self.read(cdb, response),
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
                self.write(cdb, data_out, false)
            }
            op::WRITE_AND_VERIFY_10 | op::WRITE_AND_VERIFY_12 | op::WRITE_AND_VERIFY_16 => {
                self.write(cdb, data_out, true)
            }
            op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => self.verify(cdb, data_out, response),
            op::PRE_FETCH_10 | op::PRE_FETCH_16 => self.pre_fetch(cdb),
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => self.synchronize_cache(cdb),
            op::COMPARE_AND_WRITE => self.compare_and_write(cdb, data_out, response),
            op::ORWRITE_16 => self.or_write(cdb, data_out, response),
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => self.write_same(cdb, data_out, response),
            op::UNMAP => self.unmap(cdb, data_out),
            op::READ_CAPACITY_10 => self.read_capacity_10(cdb, response),
            op::SERVICE_ACTION_IN_16 => match cdb[1] & 0x1F {
                sa::READ_CAPACITY_16 => self.read_capacity_16(cdb, response),
                sa::GET_LBA_STATUS => self.get_lba_status(cdb, response),
                _ => Err(Sense::bad_cdb_field(1).into()),
            },
            op::MAINTENANCE_IN => match cdb[1] & 0x1F {
                sa::REPORT_TARGET_PORT_GROUPS => self.report_target_port_groups(cdb, response),
                sa::REPORT_SUPPORTED_OPCODES => self.report_supported_opcodes(cdb, response),
                _ => Err(Sense::bad_cdb_field(1).into()),
            },
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => self.mode_sense(cdb, response),
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => self.mode_select(cdb, data_out, response),
            op::EXTENDED_COPY => self.extended_copy(nexus, cdb, data_out, peers, response),
            op::RECEIVE_COPY_RESULTS => self.receive_copy_results(nexus, cdb, response),
            _ => Err(INVALID_OPCODE.into()),
        }
    }

    /// PR IN/OUT and RESERVE/RELEASE through `pr.rs`; a changed persistent state is saved
    /// before GOOD, and the unit attentions it asks for are queued.
    fn reservation(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        self.shared.with_reservations(|reservations| {
            match cdb[0] {
                op::PERSISTENT_RESERVE_IN => reservations.reserve_in(nexus, cdb, response),
                op::PERSISTENT_RESERVE_OUT => {
                    let outcome = reservations.reserve_out(
                        nexus,
                        cdb,
                        data_out,
                        self.ports.as_ref(),
                        response,
                    );
                    if outcome.persist
                        && response.status == status::GOOD
                        && self.shared.persist(reservations).is_err()
                    {
                        return Err(INTERNAL_TARGET_FAILURE.into());
                    }
                    self.shared.raise_pending(&outcome.attentions);
                }
                _ => reservations.reserve_release(nexus, cdb, response),
            }
            Ok(())
        })
    }

    /// REQUEST SENSE: the oldest pending unit attention (cleared), else NO SENSE.
    fn request_sense(&self, nexus: &Nexus, cdb: &[u8], response: &mut Response) -> CmdResult {
        if cdb[1] & 0x01 != 0 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let allocation = usize::from(cdb[4]);
        let sense = match self.shared.attention(nexus, true) {
            Some((asc, ascq)) => Sense::new(key::UNIT_ATTENTION, asc, ascq),
            None => Sense::new(key::NO_SENSE, 0, 0),
        };
        sense.write_fixed(&mut response.data_in);
        response.data_in.truncate(allocation);
        Ok(())
    }

    /// LOGICAL UNIT RESET from `from` (task management; TARGET WARM/COLD RESET do the same
    /// for every logical unit): releases SPC-2 reservations and raises BUS DEVICE RESET
    /// FUNCTION OCCURRED (0x29/0x03) on every I_T nexus, the one that asked included
    /// (SAM-5 LOGICAL UNIT RESET: every I_T nexus; paths of one initiator port are
    /// separate nexuses).
    pub fn lun_reset(&self, from: &Nexus) {
        self.shared
            .with_reservations(|reservations| reservations.lun_reset());
        self.shared.attention(from, false);
        self.shared.raise_for_all(0x29, 0x03, None);
    }

    /// The nexus is gone (session closed): forget its unit attentions and SPC-2
    /// reservation (persistent reservations stay).
    pub fn nexus_lost(&self, nexus: &Nexus) {
        self.shared
            .with_reservations(|reservations| reservations.nexus_lost(nexus));
        self.shared.forget_nexus(nexus);
    }
}

/// The 8-byte single-level LUN of `lun`: peripheral addressing below 256, flat space
/// (0x40) up to 16,383.
pub(crate) fn encode_lun(lun: u64) -> [u8; 8] {
    let mut encoded = [0u8; 8];
    if lun < 256 {
        encoded[1] = lun as u8;
    } else {
        let flat = (lun & 0x3FFF) as u16 | 0x4000;
        encoded[..2].copy_from_slice(&flat.to_be_bytes());
    }
    encoded
}

/// REPORT LUNS (0xA0) for a session that sees `luns` (sorted).
pub fn report_luns(luns: &[u64], cdb: &[u8], response: &mut Response) {
    response.clear();
    let result = (|| -> CmdResult {
        require(cdb, 12)?;
        let allocation = be32(cdb, 6) as usize;
        if allocation < 16 {
            return Err(Sense::bad_cdb_field(6).into());
        }
        // SELECT REPORT 0, 1 and 2 all list the LUs of this target (no well-known LUs).
        if !matches!(cdb[2], 0x00..=0x02) {
            return Err(Sense::bad_cdb_field(2).into());
        }
        let out = &mut response.data_in;
        let listed = luns.iter().filter(|&&lun| lun < 0x4000);
        let length = (listed.clone().count() * 8) as u32;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for &lun in listed {
            out.extend_from_slice(&encode_lun(lun));
        }
        out.truncate(allocation);
        Ok(())
    })();
    if let Err(failure) = result {
        fail(failure, response);
    }
}

/// A CDB addressed to a LUN the session does not see: INQUIRY answers peripheral
/// qualifier 3 (not connected), REQUEST SENSE and others LOGICAL UNIT NOT SUPPORTED
/// (ILLEGAL REQUEST 0x25/0x00).
pub fn lun_not_present(cdb: &[u8], response: &mut Response) {
    response.clear();
    match cdb.first() {
        Some(&op::INQUIRY) if cdb.len() >= 6 && cdb[1] & 0x03 == 0 && cdb[2] == 0 => {
            super::inquiry::standard_inquiry(0x7F, &mut response.data_in);
            let allocation = usize::from(u16::from_be_bytes([cdb[3], cdb[4]]));
            response.data_in.truncate(allocation);
        }
        Some(&op::REQUEST_SENSE) if cdb.len() >= 6 => {
            LUN_NOT_SUPPORTED.write_fixed(&mut response.data_in);
            response.data_in.truncate(usize::from(cdb[4]));
        }
        _ => fail(LUN_NOT_SUPPORTED.into(), response),
    }
}
