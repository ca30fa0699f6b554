//! PERSISTENT RESERVE IN (0x5E): READ KEYS, READ RESERVATION, REPORT CAPABILITIES and
//! READ FULL STATUS (SPC-5 6.16). Answers are built whole, then cut to the allocation
//! length; the length fields always describe the whole answer.

use super::{Registration, Reservations, fail, sense};
use crate::target::scsi::Response;

const READ_KEYS: u8 = 0x00;
const READ_RESERVATION: u8 = 0x01;
const REPORT_CAPABILITIES: u8 = 0x02;
const READ_FULL_STATUS: u8 = 0x03;

/// Persistent reservation type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX (byte 4)
/// and EX_AC_AR (byte 5).
const TYPE_MASK: [u8; 2] = [0xEA, 0x01];

/// SCSI transport protocol identifier of iSCSI.
const PROTOCOL_ISCSI: u8 = 0x5;
/// TransportID format 01b: "<name>,i,0x<ISID>" (an initiator port).
const FORMAT_INITIATOR_PORT: u8 = 0x40;

pub(super) fn reserve_in(reservations: &Reservations, cdb: &[u8], response: &mut Response) {
    response.clear();
    if cdb.len() < 10 {
        return fail(response, sense::INVALID_FIELD_IN_CDB);
    }
    let allocation_length = usize::from(u16::from_be_bytes([cdb[7], cdb[8]]));
    let out = &mut response.data_in;
    match cdb[1] & 0x1F {
        READ_KEYS => read_keys(reservations, out),
        READ_RESERVATION => read_reservation(reservations, out),
        REPORT_CAPABILITIES => report_capabilities(reservations, out),
        READ_FULL_STATUS => read_full_status(reservations, out),
        _ => return fail(response, sense::INVALID_FIELD_IN_CDB),
    }
    response.data_in.truncate(allocation_length);
}

/// PRgeneration and an ADDITIONAL LENGTH to be filled by [`set_additional_length`].
fn header(reservations: &Reservations, out: &mut Vec<u8>) {
    out.extend_from_slice(&reservations.generation.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

fn set_additional_length(out: &mut [u8]) {
    let length = u32::try_from(out.len().saturating_sub(8)).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&length.to_be_bytes());
}

fn read_keys(reservations: &Reservations, out: &mut Vec<u8>) {
    header(reservations, out);
    for registration in &reservations.registrations {
        out.extend_from_slice(&registration.key.to_be_bytes());
    }
    set_additional_length(out);
}

fn read_reservation(reservations: &Reservations, out: &mut Vec<u8>) {
    header(reservations, out);
    if let Some(reservation) = &reservations.reservation {
        // The all-registrants types report key zero (SPC-5 6.16.3.3).
        let key = match &reservation.holder {
            Some(holder) => reservations
                .registrations
                .iter()
                .find(|registration| &registration.id == holder)
                .map_or(0, |registration| registration.key),
            None => 0,
        };
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // obsolete
        out.push(0);
        out.push(reservation.kind.code()); // scope LU (0) in the high nibble
        out.extend_from_slice(&[0; 2]); // obsolete
    }
    set_additional_length(out);
}

fn report_capabilities(reservations: &Reservations, out: &mut Vec<u8>) {
    const CRH: u8 = 0x10;
    const ATP_C: u8 = 0x04;
    const PTPL_C: u8 = 0x01;
    const TMV: u8 = 0x80;
    // ALLOW COMMANDS 001b: TEST UNIT READY passes Write Exclusive and Exclusive Access.
    const ALLOW_COMMANDS_TUR: u8 = 0x10;
    const PTPL_A: u8 = 0x01;
    out.extend_from_slice(&8u16.to_be_bytes());
    out.push(CRH | ATP_C | PTPL_C);
    out.push(TMV | ALLOW_COMMANDS_TUR | if reservations.aptpl { PTPL_A } else { 0 });
    out.extend_from_slice(&TYPE_MASK);
    out.extend_from_slice(&[0; 2]);
}

fn read_full_status(reservations: &Reservations, out: &mut Vec<u8>) {
    const ALL_TG_PT: u8 = 0x02;
    const R_HOLDER: u8 = 0x01;
    header(reservations, out);
    for registration in &reservations.registrations {
        let holds = reservations.reservation.as_ref().and_then(|reservation| {
            let holds = reservation
                .holder
                .as_ref()
                .is_none_or(|holder| holder == &registration.id);
            holds.then_some(reservation.kind)
        });
        out.extend_from_slice(&registration.key.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        let mut flags = 0;
        if registration.id.relative_port.is_none() {
            flags |= ALL_TG_PT;
        }
        if holds.is_some() {
            flags |= R_HOLDER;
        }
        out.push(flags);
        out.push(holds.map_or(0, |kind| kind.code()));
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&registration.id.relative_port.unwrap_or(0).to_be_bytes());
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        transport_id(registration, out);
        let transport_id_length = u32::try_from(out.len() - length_at - 4).unwrap_or(0);
        out[length_at..length_at + 4].copy_from_slice(&transport_id_length.to_be_bytes());
    }
    set_additional_length(out);
}

/// An iSCSI TransportID of format 01b naming the registration's initiator port; the name
/// is NUL-terminated and padded to a multiple of four, at least 20 bytes in all.
fn transport_id(registration: &Registration, out: &mut Vec<u8>) {
    let name = registration.id.initiator_port.as_bytes();
    let mut name_length = (name.len() + 1).next_multiple_of(4);
    name_length = name_length.max(16);
    out.push(FORMAT_INITIATOR_PORT | PROTOCOL_ISCSI);
    out.push(0);
    out.extend_from_slice(&u16::try_from(name_length).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(name);
    out.resize(out.len() + name_length - name.len(), 0);
}
