//! Reservations of one logical unit: SPC-2 RESERVE/RELEASE and SPC-5 persistent
//! reservations (PERSISTENT RESERVE IN/OUT, all types).
//! SKELETON: the pr helper owns this file; signatures are the contract with `unit.rs`.

use super::{Nexus, PortGroups, Response};

/// A unit attention one nexus must get because of a PR OUT (e.g. RESERVATIONS PREEMPTED
/// 0x2A/0x03, RESERVATIONS RELEASED 0x2A/0x04, REGISTRATIONS PREEMPTED 0x2A/0x05).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingAttention {
    pub initiator_port: String,
    pub asc: u8,
    pub ascq: u8,
}

/// What a PR OUT did beyond its response.
#[derive(Debug, Default)]
pub(crate) struct PrOutcome {
    /// The persistent state changed: the caller saves [`Reservations::encode`] through the
    /// `PrStore` before it answers GOOD.
    pub persist: bool,
    pub attentions: Vec<PendingAttention>,
}

/// Every reservation and registration of one logical unit.
#[derive(Debug, Default)]
pub(crate) struct Reservations {}

impl Reservations {
    /// The state saved by [`Reservations::encode`]; `None` or undecodable bytes give the
    /// empty state (and the caller logs it).
    pub(crate) fn load(bytes: Option<&[u8]>) -> Reservations {
        let _ = bytes;
        Reservations::default()
    }

    /// The persistent part (registrations, the persistent reservation, APTPL), versioned
    /// and checksummed.
    pub(crate) fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Whether `cdb` from `nexus` may run under the current reservations (SPC-5 5.13.1 and
    /// the SPC-2 rules); `false` answers RESERVATION CONFLICT.
    pub(crate) fn allows(&self, nexus: &Nexus, cdb: &[u8]) -> bool {
        let _ = (nexus, cdb);
        true
    }

    /// PERSISTENT RESERVE IN (0x5E).
    pub(crate) fn reserve_in(&self, nexus: &Nexus, cdb: &[u8], response: &mut Response) {
        let _ = (nexus, cdb, response);
        todo!("pr helper")
    }

    /// PERSISTENT RESERVE OUT (0x5F).
    pub(crate) fn reserve_out(
        &mut self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: &[u8],
        ports: &dyn PortGroups,
        response: &mut Response,
    ) -> PrOutcome {
        let _ = (nexus, cdb, data_out, ports, response);
        todo!("pr helper")
    }

    /// RESERVE(6)/(10) 0x16/0x56 and RELEASE(6)/(10) 0x17/0x57.
    pub(crate) fn reserve_release(&mut self, nexus: &Nexus, cdb: &[u8], response: &mut Response) {
        let _ = (nexus, cdb, response);
        todo!("pr helper")
    }

    /// LOGICAL UNIT RESET: drops the SPC-2 reservation (persistent state stays).
    pub(crate) fn lun_reset(&mut self) {}

    /// The nexus is gone: drops its SPC-2 reservation.
    pub(crate) fn nexus_lost(&mut self, nexus: &Nexus) {
        let _ = nexus;
    }
}
