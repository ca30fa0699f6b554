//! Command dispatch for one logical unit.
//! SKELETON: the scsi helper owns this file; signatures are the contract with the iSCSI
//! layer and must stay.

use super::{CopyPeers, LogicalUnit, Nexus, Response};

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
        let _ = (nexus, cdb, data_out, peers, response);
        todo!("scsi helper")
    }

    /// LOGICAL UNIT RESET from `from` (task management): releases SPC-2 reservations and
    /// raises BUS DEVICE RESET (0x29/0x03) unit attentions on every other nexus.
    pub fn lun_reset(&self, from: &Nexus) {
        let _ = from;
        todo!("scsi helper")
    }

    /// The nexus is gone (session closed): forget its unit attentions and SPC-2
    /// reservation (persistent reservations stay).
    pub fn nexus_lost(&self, nexus: &Nexus) {
        let _ = nexus;
        todo!("scsi helper")
    }
}

/// REPORT LUNS (0xA0) for a session that sees `luns` (sorted).
pub fn report_luns(luns: &[u64], cdb: &[u8], response: &mut Response) {
    let _ = (luns, cdb, response);
    todo!("scsi helper")
}

/// A CDB addressed to a LUN the session does not see: INQUIRY answers peripheral
/// qualifier 3 (not connected), REQUEST SENSE and others LOGICAL UNIT NOT SUPPORTED
/// (ILLEGAL REQUEST 0x25/0x00).
pub fn lun_not_present(cdb: &[u8], response: &mut Response) {
    let _ = (cdb, response);
    todo!("scsi helper")
}
