//! Reservations of one logical unit: SPC-2 RESERVE/RELEASE and SPC-5 persistent
//! reservations (PERSISTENT RESERVE IN/OUT, all six types).
//!
//! What this layer promises to the dispatcher (`unit.rs`), which holds one
//! [`Reservations`] per logical unit behind a mutex:
//!
//! - [`Reservations::allows`] answers, before a command runs, whether the reservations let
//!   that nexus run that CDB (SPC-5 5.14.1 table "SPC commands that are allowed in the
//!   presence of various reservations", the SBC-4 equivalent, and the SPC-2 rules);
//!   `false` means RESERVATION CONFLICT.
//! - PR IN / PR OUT / RESERVE / RELEASE fill the [`Response`] completely: GOOD, CHECK
//!   CONDITION with 18-byte fixed sense (ILLEGAL REQUEST and the ASC of the fault), or
//!   RESERVATION CONFLICT with no sense. No input, however malformed, panics.
//! - A PR OUT that changes registrations or the persistent reservation sets
//!   [`PrOutcome::persist`]; the caller saves [`Reservations::encode`] before answering.
//!   The unit attentions other initiator ports must see are in [`PrOutcome::attentions`].
//! - Saved state that cannot be decoded is refused ([`Reservations::load`] gives
//!   [`DamagedReservations`]), never taken for "no reservations": silently dropping a
//!   reservation would let a fenced-off host write again. The node refuses to start then,
//!   naming the file (see `node::iscsi`): simpler than serving the unit fenced, and an
//!   operator must look at a damaged file anyway.
//!
//! Model. Registrations are per I_T nexus, identified by the initiator port name and the
//! relative target port; a registration made with ALL_TG_PT=1 covers the initiator port
//! through every target port. The persistent reservation (scope LU only) is held by one
//! registration, or for the all-registrants types by every registrant. The SPC-2
//! reservation belongs to one exact nexus and is never persisted. We report CRH=1 (SPC-5
//! 5.14.3): RESERVE from the persistent reservation holder is a GOOD no-op, from anyone
//! else a conflict; RELEASE only ever drops the sender's own SPC-2 reservation.
//!
//! PRgeneration increases on every successful REGISTER and REGISTER AND IGNORE EXISTING
//! KEY (except an unregistered nexus registering key zero, a no-op), CLEAR, PREEMPT,
//! PREEMPT AND ABORT and REGISTER AND MOVE; never on RESERVE or RELEASE.
//!
//! Not supported: SPEC_I_PT (SIP_C=0; refused with INVALID FIELD IN PARAMETER LIST),
//! scopes other than LU (INVALID FIELD IN CDB), and the task aborts of PREEMPT AND ABORT:
//! this layer has no handle on tasks, so it behaves as PREEMPT (the caller may abort the
//! preempted initiator ports' tasks, they are named in the REGISTRATIONS PREEMPTED
//! attentions).

mod access;
mod codec;
mod prin;
mod prout;
#[cfg(test)]
mod tests;

use super::{Nexus, PortGroups, Response, status};

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

/// The six persistent reservation types (SPC-5 table "Persistent reservation type codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrType {
    WriteExclusive,
    ExclusiveAccess,
    WriteExclusiveRegistrantsOnly,
    ExclusiveAccessRegistrantsOnly,
    WriteExclusiveAllRegistrants,
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// The TYPE field value, or `None` for a reserved or obsolete code.
    pub(crate) fn from_code(code: u8) -> Option<PrType> {
        Some(match code {
            0x1 => PrType::WriteExclusive,
            0x3 => PrType::ExclusiveAccess,
            0x5 => PrType::WriteExclusiveRegistrantsOnly,
            0x6 => PrType::ExclusiveAccessRegistrantsOnly,
            0x7 => PrType::WriteExclusiveAllRegistrants,
            0x8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 0x1,
            PrType::ExclusiveAccess => 0x3,
            PrType::WriteExclusiveRegistrantsOnly => 0x5,
            PrType::ExclusiveAccessRegistrantsOnly => 0x6,
            PrType::WriteExclusiveAllRegistrants => 0x7,
            PrType::ExclusiveAccessAllRegistrants => 0x8,
        }
    }

    /// Every registrant holds the reservation (types 7 and 8).
    pub(crate) fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registered nexuses get full access (types 5 to 8).
    pub(crate) fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Non-holders may still read (the Write Exclusive family).
    pub(crate) fn others_may_read(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusive
                | PrType::WriteExclusiveRegistrantsOnly
                | PrType::WriteExclusiveAllRegistrants
        )
    }
}

/// Which I_T nexuses one registration stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RegistrantId {
    pub initiator_port: String,
    /// The relative target port, or `None` when registered with ALL_TG_PT=1.
    pub relative_port: Option<u16>,
}

impl RegistrantId {
    fn covers(&self, nexus: &Nexus) -> bool {
        self.initiator_port == nexus.initiator_port
            && self
                .relative_port
                .is_none_or(|port| port == nexus.relative_port)
    }
}

/// One registered reservation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    pub id: RegistrantId,
    /// The initiator's name (for the TransportID in READ FULL STATUS).
    pub initiator_name: String,
    pub key: u64,
}

/// The persistent reservation (scope is always LU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PersistentReservation {
    pub kind: PrType,
    /// The holding registration; `None` for the all-registrants types (every registrant
    /// holds it).
    pub holder: Option<RegistrantId>,
}

/// Every reservation and registration of one logical unit.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reservations {
    /// In registration order (READ KEYS lists them so).
    registrations: Vec<Registration>,
    reservation: Option<PersistentReservation>,
    generation: u32,
    /// The last registration asked APTPL=1 (reported as PTPL_A; we persist regardless).
    aptpl: bool,
    /// The SPC-2 reservation: one exact nexus, lost on reset and logout.
    spc2_holder: Option<Nexus>,
}

/// Saved reservation state that does not decode (bad magic, version, length, checksum or
/// contents; an empty file too: a save never leaves one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid saved reservation state (bad magic, version, length, checksum or contents)")]
pub struct DamagedReservations;

impl Reservations {
    /// The state saved by [`Reservations::encode`]; `None` (nothing saved) gives the empty
    /// state, bytes that do not decode are refused.
    pub(crate) fn load(bytes: Option<&[u8]>) -> Result<Reservations, DamagedReservations> {
        match bytes {
            None => Ok(Reservations::default()),
            Some(bytes) => codec::decode(bytes).ok_or(DamagedReservations),
        }
    }

    /// The persistent part (registrations, the persistent reservation, APTPL), versioned
    /// and checksummed.
    pub(crate) fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// No reservation is held (SPC-2 or persistent): `allows` answers true for every
    /// command, whatever the registrations.
    pub(crate) fn reserves_nothing(&self) -> bool {
        self.spc2_holder.is_none() && self.reservation.is_none()
    }

    /// Whether `cdb` from `nexus` may run under the current reservations (SPC-5 5.13.1 and
    /// the SPC-2 rules); `false` answers RESERVATION CONFLICT.
    pub(crate) fn allows(&self, nexus: &Nexus, cdb: &[u8]) -> bool {
        access::allows(self, nexus, cdb)
    }

    /// PERSISTENT RESERVE IN (0x5E).
    pub(crate) fn reserve_in(&self, nexus: &Nexus, cdb: &[u8], response: &mut Response) {
        let _ = nexus;
        prin::reserve_in(self, cdb, response);
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
        prout::reserve_out(self, nexus, cdb, data_out, ports, response)
    }

    /// RESERVE(6)/(10) 0x16/0x56 and RELEASE(6)/(10) 0x17/0x57.
    pub(crate) fn reserve_release(&mut self, nexus: &Nexus, cdb: &[u8], response: &mut Response) {
        response.clear();
        let Some(&opcode) = cdb.first() else {
            return fail(response, sense::INVALID_FIELD_IN_CDB);
        };
        let flags = cdb.get(1).copied().unwrap_or(0);
        // RESERVE(6)/RELEASE(6): the old extent and third-party fields must be zero;
        // (10): 3RDPTY (bit 4) and LONGID (bit 1) are not supported.
        let unsupported = match opcode {
            0x16 | 0x17 => flags & 0x1F != 0,
            0x56 | 0x57 => flags & 0x12 != 0,
            _ => true,
        };
        if unsupported {
            return fail(response, sense::INVALID_FIELD_IN_CDB);
        }
        let reserve = matches!(opcode, 0x16 | 0x56);
        if !reserve {
            // RELEASE: drops our own SPC-2 reservation, never a persistent one; from
            // anyone else it is a GOOD no-op.
            self.nexus_lost(nexus);
            return;
        }
        if let Some(reservation) = &self.reservation {
            // CRH=1: the persistent reservation holder gets GOOD and nothing changes.
            if !self.is_holder(reservation, nexus) {
                response.status = status::RESERVATION_CONFLICT;
            }
            return;
        }
        match &self.spc2_holder {
            Some(holder) if holder != nexus => response.status = status::RESERVATION_CONFLICT,
            _ => self.spc2_holder = Some(nexus.clone()),
        }
    }

    /// LOGICAL UNIT RESET: drops the SPC-2 reservation (persistent state stays).
    pub(crate) fn lun_reset(&mut self) {
        self.spc2_holder = None;
    }

    /// The nexus is gone: drops its SPC-2 reservation.
    pub(crate) fn nexus_lost(&mut self, nexus: &Nexus) {
        if self.spc2_holder.as_ref() == Some(nexus) {
            self.spc2_holder = None;
        }
    }

    /// The registration covering `nexus`, with its index.
    fn registration_of(&self, nexus: &Nexus) -> Option<(usize, &Registration)> {
        self.registrations
            .iter()
            .enumerate()
            .find(|(_, registration)| registration.id.covers(nexus))
    }

    /// Whether `nexus` holds `reservation` (any registrant for the all-registrants types).
    fn is_holder(&self, reservation: &PersistentReservation, nexus: &Nexus) -> bool {
        match &reservation.holder {
            Some(holder) => holder.covers(nexus),
            None => self.registration_of(nexus).is_some(),
        }
    }

    fn bump_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

/// Fixed-format sense data for the ILLEGAL REQUEST faults this layer reports.
mod sense {
    /// (ASC, ASCQ) pairs.
    pub(super) const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    pub(super) const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    pub(super) const INVALID_RELEASE_OF_PR: (u8, u8) = (0x26, 0x04);
    pub(super) const PARAMETER_LIST_LENGTH_ERROR: (u8, u8) = (0x1A, 0x00);
    pub(super) const INSUFFICIENT_REGISTRATION_RESOURCES: (u8, u8) = (0x55, 0x04);

    /// Unit attention codes raised for other initiator ports.
    pub(super) const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2A, 0x03);
    pub(super) const RESERVATIONS_RELEASED: (u8, u8) = (0x2A, 0x04);
    pub(super) const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2A, 0x05);

    const ILLEGAL_REQUEST: u8 = 0x05;

    /// Writes 18 bytes of fixed-format current sense (response code 0x70) into `sense`.
    pub(super) fn illegal_request(sense: &mut Vec<u8>, (asc, ascq): (u8, u8)) {
        sense.clear();
        sense.extend_from_slice(&[0x70, 0, ILLEGAL_REQUEST, 0, 0, 0, 0, 10]);
        sense.extend_from_slice(&[0, 0, 0, 0, asc, ascq, 0, 0, 0, 0]);
    }
}

/// Answers CHECK CONDITION, ILLEGAL REQUEST with `code`.
fn fail(response: &mut Response, code: (u8, u8)) {
    response.status = status::CHECK_CONDITION;
    response.data_in.clear();
    sense::illegal_request(&mut response.sense, code);
}

/// Answers RESERVATION CONFLICT (no sense).
fn conflict(response: &mut Response) {
    response.status = status::RESERVATION_CONFLICT;
    response.data_in.clear();
    response.sense.clear();
}
