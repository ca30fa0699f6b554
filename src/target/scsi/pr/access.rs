//! Which commands a nexus may run under the current reservations.
//!
//! Every CDB falls in one [`AccessClass`]; the reservation type and the nexus' standing
//! (holder, registered, neither) then decide, after SPC-5 table "SPC commands that are
//! allowed in the presence of various reservations" and the SBC-4 one:
//!
//! | class            | WE / EA non-holder | RO / AR registered | RO / AR unregistered |
//! |------------------|--------------------|--------------------|----------------------|
//! | always           | allowed            | allowed            | allowed              |
//! | registrants-only | conflict           | allowed            | conflict             |
//! | read             | WE allowed, EA no  | allowed            | WE allowed, EA no    |
//! | write / other    | conflict           | allowed            | conflict             |
//!
//! TEST UNIT READY is in the always class for persistent reservations (SPC-5 allows it
//! through every type) but conflicts under an SPC-2 reservation held by another nexus,
//! where only INQUIRY, REQUEST SENSE, REPORT LUNS, REPORT TARGET PORT GROUPS, PR IN and
//! RELEASE get through.

use super::{Nexus, Reservations};

/// How a command is treated in the presence of a persistent reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccessClass {
    /// Never blocked by a persistent reservation.
    Always,
    /// Allowed only for registrants of a registrants-only or all-registrants reservation.
    RegistrantsOnly,
    /// Reads the medium: allowed under the Write Exclusive types.
    Read,
    /// Changes the medium or anything else.
    Write,
}

fn classify(cdb: &[u8]) -> AccessClass {
    let service_action = cdb.get(1).map_or(0, |byte| byte & 0x1F);
    match cdb[0] {
        // TEST UNIT READY, REQUEST SENSE, INQUIRY, RESERVE/RELEASE (6)/(10) (decided by
        // the CRH rules in reserve_release), READ CAPACITY(10), LOG SENSE, PR IN, PR OUT
        // (checks its own keys), MAINTENANCE IN (report target port groups, supported
        // opcodes...), REPORT LUNS.
        0x00 | 0x03 | 0x12 | 0x16 | 0x17 | 0x56 | 0x57 | 0x25 | 0x4D | 0x5E | 0x5F | 0xA3
        | 0xA0 => AccessClass::Always,
        // SERVICE ACTION IN(16): READ CAPACITY(16) always; GET LBA STATUS reads.
        0x9E if service_action == 0x10 => AccessClass::Always,
        0x9E => AccessClass::Read,
        // START STOP UNIT that only starts the unit (SBC-4); any other use changes it.
        0x1B if cdb.get(4).is_some_and(|byte| byte & 0xF1 == 0x01) => AccessClass::Always,
        // MODE SELECT/SENSE (6)/(10), LOG SELECT, READ/WRITE BUFFER, RECEIVE/SEND
        // DIAGNOSTIC.
        0x15 | 0x55 | 0x1A | 0x5A | 0x4C | 0x3B | 0x3C | 0x1C | 0x1D => {
            AccessClass::RegistrantsOnly
        }
        // READ (6)/(10)/(12)/(16), VERIFY (10)/(12)/(16), PRE-FETCH (10)/(16),
        // RECEIVE COPY RESULTS.
        0x08 | 0x28 | 0xA8 | 0x88 | 0x2F | 0xAF | 0x8F | 0x34 | 0x90 | 0x84 => AccessClass::Read,
        _ => AccessClass::Write,
    }
}

/// Commands another nexus may still send while an SPC-2 reservation is held.
fn passes_spc2_reservation(cdb: &[u8]) -> bool {
    let service_action = cdb.get(1).map_or(0, |byte| byte & 0x1F);
    match cdb[0] {
        // INQUIRY, REQUEST SENSE, REPORT LUNS, RELEASE(6)/(10) (a no-op for others),
        // PERSISTENT RESERVE IN.
        0x12 | 0x03 | 0xA0 | 0x17 | 0x57 | 0x5E => true,
        // REPORT TARGET PORT GROUPS: multipath keeps probing every path.
        0xA3 => service_action == 0x0A,
        _ => false,
    }
}

pub(super) fn allows(reservations: &Reservations, nexus: &Nexus, cdb: &[u8]) -> bool {
    if cdb.is_empty() {
        return true;
    }
    if let Some(holder) = &reservations.spc2_holder
        && holder != nexus
        && !passes_spc2_reservation(cdb)
    {
        return false;
    }
    let Some(reservation) = &reservations.reservation else {
        return true;
    };
    if reservations.is_holder(reservation, nexus) {
        return true;
    }
    let registered = reservations.registration_of(nexus).is_some();
    let registrant_access = registered && reservation.kind.registrants_have_access();
    match classify(cdb) {
        AccessClass::Always => true,
        AccessClass::RegistrantsOnly | AccessClass::Write => registrant_access,
        AccessClass::Read => registrant_access || reservation.kind.others_may_read(),
    }
}
