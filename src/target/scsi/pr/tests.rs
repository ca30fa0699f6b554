//! Unit tests of the reservations layer: shared helpers here, the cases by subject in
//! the submodules.

mod access;
mod codec;
mod fuzz;
mod prin;
mod prout;
mod spc2;

use super::{PendingAttention, PrOutcome, Reservations};
use crate::target::scsi::{AluaState, Nexus, PortGroup, PortGroups, Response, status};

pub(super) const REGISTER: u8 = 0x00;
pub(super) const RESERVE: u8 = 0x01;
pub(super) const RELEASE: u8 = 0x02;
pub(super) const CLEAR: u8 = 0x03;
pub(super) const PREEMPT: u8 = 0x04;
pub(super) const PREEMPT_AND_ABORT: u8 = 0x05;
pub(super) const REGISTER_AND_IGNORE: u8 = 0x06;
pub(super) const REGISTER_AND_MOVE: u8 = 0x07;

pub(super) const WE: u8 = 1;
pub(super) const EA: u8 = 3;
pub(super) const WE_RO: u8 = 5;
pub(super) const EA_RO: u8 = 6;
pub(super) const WE_AR: u8 = 7;
pub(super) const EA_AR: u8 = 8;
pub(super) const ALL_TYPES: [u8; 6] = [WE, EA, WE_RO, EA_RO, WE_AR, EA_AR];

/// Parameter list byte 20 bits.
pub(super) const SPEC_I_PT: u8 = 0x08;
pub(super) const ALL_TG_PT: u8 = 0x04;
pub(super) const APTPL: u8 = 0x01;

/// Three controllers, one port each (relative ports 1, 2, 3).
pub(super) struct ThreePorts;

impl PortGroups for ThreePorts {
    fn groups(&self) -> Vec<PortGroup> {
        (1..=3)
            .map(|id| PortGroup {
                id,
                state: AluaState::ActiveOptimized,
                relative_ports: vec![id],
            })
            .collect()
    }

    fn target_port_name(&self, relative_port: u16) -> String {
        format!("iqn.2026-01.troika:t,t,0x{relative_port:04x}")
    }

    fn target_name(&self) -> String {
        "iqn.2026-01.troika:t".to_owned()
    }
}

/// The nexus of initiator `name` (ISID 1) through target port `relative_port`.
pub(super) fn nexus(name: &str, relative_port: u16) -> Nexus {
    Nexus {
        initiator_port: format!("{name},i,0x000000000001"),
        initiator_name: name.to_owned(),
        relative_port,
    }
}

pub(super) fn alice() -> Nexus {
    nexus("iqn.2026-01.test:alice", 1)
}

pub(super) fn bob() -> Nexus {
    nexus("iqn.2026-01.test:bob", 1)
}

pub(super) fn carol() -> Nexus {
    nexus("iqn.2026-01.test:carol", 2)
}

pub(super) fn prout_cdb(service_action: u8, type_code: u8, list_length: u32) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5F;
    cdb[1] = service_action;
    cdb[2] = type_code;
    cdb[5..9].copy_from_slice(&list_length.to_be_bytes());
    cdb
}

pub(super) fn basic_list(key: u64, service_action_key: u64, flags: u8) -> [u8; 24] {
    let mut list = [0u8; 24];
    list[..8].copy_from_slice(&key.to_be_bytes());
    list[8..16].copy_from_slice(&service_action_key.to_be_bytes());
    list[20] = flags;
    list
}

/// One PR OUT with a 24-byte basic parameter list.
pub(super) fn prout(
    state: &mut Reservations,
    from: &Nexus,
    service_action: u8,
    type_code: u8,
    key: u64,
    service_action_key: u64,
    flags: u8,
) -> (Response, PrOutcome) {
    let cdb = prout_cdb(service_action, type_code, 24);
    let list = basic_list(key, service_action_key, flags);
    let mut response = Response::default();
    let outcome = state.reserve_out(from, &cdb, &list, &ThreePorts, &mut response);
    (response, outcome)
}

/// REGISTER AND IGNORE EXISTING KEY, expected to succeed.
pub(super) fn register(state: &mut Reservations, from: &Nexus, key: u64) {
    let (response, _) = prout(state, from, REGISTER_AND_IGNORE, 0, 0, key, 0);
    assert_good(&response);
}

/// PR OUT RESERVE, expected to succeed.
pub(super) fn reserve(state: &mut Reservations, from: &Nexus, key: u64, type_code: u8) {
    let (response, _) = prout(state, from, RESERVE, type_code, key, 0, 0);
    assert_good(&response);
}

pub(super) fn prin(state: &Reservations, service_action: u8, allocation: u16) -> Response {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5E;
    cdb[1] = service_action;
    cdb[7..9].copy_from_slice(&allocation.to_be_bytes());
    let mut response = Response::default();
    state.reserve_in(&alice(), &cdb, &mut response);
    response
}

/// (PRgeneration, keys) from READ KEYS.
pub(super) fn read_keys(state: &Reservations) -> (u32, Vec<u64>) {
    let response = prin(state, 0x00, 8192);
    assert_good(&response);
    let data = &response.data_in;
    let generation = u32::from_be_bytes(data[0..4].try_into().unwrap());
    let keys = data[8..]
        .chunks_exact(8)
        .map(|chunk| u64::from_be_bytes(chunk.try_into().unwrap()))
        .collect();
    (generation, keys)
}

/// (key, scope/type byte) from READ RESERVATION, `None` when not reserved.
pub(super) fn read_reservation(state: &Reservations) -> Option<(u64, u8)> {
    let response = prin(state, 0x01, 8192);
    assert_good(&response);
    let data = &response.data_in;
    let length = u32::from_be_bytes(data[4..8].try_into().unwrap());
    if length == 0 {
        assert_eq!(data.len(), 8);
        return None;
    }
    assert_eq!(length, 16);
    Some((
        u64::from_be_bytes(data[8..16].try_into().unwrap()),
        data[21],
    ))
}

pub(super) fn assert_good(response: &Response) {
    assert_eq!(
        response.status,
        status::GOOD,
        "sense {:02x?}",
        response.sense
    );
    assert!(response.sense.is_empty());
}

pub(super) fn assert_conflict(response: &Response) {
    assert_eq!(response.status, status::RESERVATION_CONFLICT);
    assert!(response.sense.is_empty());
}

/// CHECK CONDITION, ILLEGAL REQUEST with `(asc, ascq)` in 18-byte fixed sense.
pub(super) fn assert_illegal(response: &Response, asc: u8, ascq: u8) {
    assert_eq!(response.status, status::CHECK_CONDITION);
    assert_eq!(response.sense.len(), 18);
    assert_eq!(response.sense[0], 0x70);
    assert_eq!(response.sense[2], 0x05);
    assert_eq!(response.sense[7], 10);
    assert_eq!((response.sense[12], response.sense[13]), (asc, ascq));
}

pub(super) fn attention(who: &Nexus, asc: u8, ascq: u8) -> PendingAttention {
    PendingAttention {
        initiator_port: who.initiator_port.clone(),
        asc,
        ascq,
    }
}
