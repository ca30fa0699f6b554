//! PERSISTENT RESERVE OUT (0x5F): the eight service actions of SPC-5 6.17 and 5.14.
//!
//! Order of checks for every service action: the CDB (service action, length), the
//! parameter list length (24 bytes exactly, except REGISTER AND MOVE: 24 plus its
//! TransportID), SPEC_I_PT (unsupported), then the nexus' registration and key
//! (RESERVATION CONFLICT on mismatch), then the action's own fields.

use super::{
    Nexus, PendingAttention, PersistentReservation, PrOutcome, PrType, RegistrantId, Registration,
    Reservations, conflict, fail, sense,
};
use crate::target::scsi::{PortGroups, Response};

const REGISTER: u8 = 0x00;
const RESERVE: u8 = 0x01;
const RELEASE: u8 = 0x02;
const CLEAR: u8 = 0x03;
const PREEMPT: u8 = 0x04;
const PREEMPT_AND_ABORT: u8 = 0x05;
const REGISTER_AND_IGNORE_EXISTING_KEY: u8 = 0x06;
const REGISTER_AND_MOVE: u8 = 0x07;

/// The basic parameter list is exactly this long.
const BASIC_PARAMETER_LIST: usize = 24;
/// More registrations than this get INSUFFICIENT REGISTRATION RESOURCES (it also bounds
/// the encoded state).
pub(super) const MAX_REGISTRATIONS: usize = 1024;

/// The decoded CDB of a PR OUT.
struct Command {
    service_action: u8,
    scope: u8,
    type_code: u8,
}

impl Command {
    /// The reservation type asked for, when scope and type are valid.
    fn reservation_type(&self) -> Option<PrType> {
        if self.scope != 0 {
            return None;
        }
        PrType::from_code(self.type_code)
    }
}

/// The basic parameter list (SPC-5 table "PERSISTENT RESERVE OUT parameter list").
struct Parameters {
    reservation_key: u64,
    service_action_key: u64,
    spec_i_pt: bool,
    all_tg_pt: bool,
    aptpl: bool,
}

impl Parameters {
    /// `list` is at least 24 bytes.
    fn parse(list: &[u8]) -> Parameters {
        let key_at = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&list[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        Parameters {
            reservation_key: key_at(0),
            service_action_key: key_at(8),
            spec_i_pt: list[20] & 0x08 != 0,
            all_tg_pt: list[20] & 0x04 != 0,
            aptpl: list[20] & 0x01 != 0,
        }
    }
}

pub(super) fn reserve_out(
    reservations: &mut Reservations,
    nexus: &Nexus,
    cdb: &[u8],
    data_out: &[u8],
    ports: &dyn PortGroups,
    response: &mut Response,
) -> PrOutcome {
    response.clear();
    let mut outcome = PrOutcome::default();
    if cdb.len() < 10 {
        fail(response, sense::INVALID_FIELD_IN_CDB);
        return outcome;
    }
    let command = Command {
        service_action: cdb[1] & 0x1F,
        scope: cdb[2] >> 4,
        type_code: cdb[2] & 0x0F,
    };
    if command.service_action > REGISTER_AND_MOVE {
        fail(response, sense::INVALID_FIELD_IN_CDB);
        return outcome;
    }
    let list_length = u32::from_be_bytes([cdb[5], cdb[6], cdb[7], cdb[8]]);
    let list_length = usize::try_from(list_length).unwrap_or(usize::MAX);
    if list_length < BASIC_PARAMETER_LIST || data_out.len() < list_length {
        fail(response, sense::PARAMETER_LIST_LENGTH_ERROR);
        return outcome;
    }
    let list = &data_out[..list_length];
    if command.service_action == REGISTER_AND_MOVE {
        register_and_move(reservations, nexus, list, ports, response, &mut outcome);
        return outcome;
    }
    let parameters = Parameters::parse(list);
    if parameters.spec_i_pt {
        // SIP_C=0: SPEC_I_PT is refused for every service action.
        fail(response, sense::INVALID_FIELD_IN_PARAMETER_LIST);
        return outcome;
    }
    if list_length != BASIC_PARAMETER_LIST {
        fail(response, sense::PARAMETER_LIST_LENGTH_ERROR);
        return outcome;
    }
    let mut action = Action {
        reservations,
        nexus,
        response,
        outcome: &mut outcome,
    };
    match command.service_action {
        REGISTER => action.register(&parameters, false),
        REGISTER_AND_IGNORE_EXISTING_KEY => action.register(&parameters, true),
        RESERVE => action.reserve(&command, &parameters),
        RELEASE => action.release(&command, &parameters),
        CLEAR => action.clear(&parameters),
        PREEMPT | PREEMPT_AND_ABORT => action.preempt(&command, &parameters),
        _ => fail(action.response, sense::INVALID_FIELD_IN_CDB),
    }
    outcome
}

/// One service action in progress.
struct Action<'a> {
    reservations: &'a mut Reservations,
    nexus: &'a Nexus,
    response: &'a mut Response,
    outcome: &'a mut PrOutcome,
}

impl Action<'_> {
    /// The sender's registration index if it is registered with `key`; otherwise the
    /// answer is RESERVATION CONFLICT.
    fn registered_with(&mut self, key: u64) -> Option<usize> {
        match self.reservations.registration_of(self.nexus) {
            Some((index, registration)) if registration.key == key => Some(index),
            _ => {
                conflict(self.response);
                None
            }
        }
    }

    /// Queues `code` for every registrant other than the sender (one per initiator port).
    fn notify_other_registrants(&mut self, code: (u8, u8)) {
        let ports: Vec<String> = self
            .reservations
            .registrations
            .iter()
            .filter(|registration| !registration.id.covers(self.nexus))
            .map(|registration| registration.id.initiator_port.clone())
            .collect();
        for port in ports {
            self.notify(port, code);
        }
    }

    fn notify(&mut self, initiator_port: String, (asc, ascq): (u8, u8)) {
        let attention = PendingAttention {
            initiator_port,
            asc,
            ascq,
        };
        if !self.outcome.attentions.contains(&attention) {
            self.outcome.attentions.push(attention);
        }
    }

    fn changed(&mut self, bump_generation: bool) {
        if bump_generation {
            self.reservations.bump_generation();
        }
        self.outcome.persist = true;
    }

    /// REGISTER and REGISTER AND IGNORE EXISTING KEY.
    fn register(&mut self, parameters: &Parameters, ignore_existing_key: bool) {
        let new_key = parameters.service_action_key;
        let existing = self
            .reservations
            .registration_of(self.nexus)
            .map(|(index, registration)| (index, registration.key));
        match existing {
            None => {
                if !ignore_existing_key && parameters.reservation_key != 0 {
                    return conflict(self.response);
                }
                if new_key == 0 {
                    return;
                }
                if self.reservations.registrations.len() >= MAX_REGISTRATIONS {
                    return fail(self.response, sense::INSUFFICIENT_REGISTRATION_RESOURCES);
                }
                let relative_port = (!parameters.all_tg_pt).then_some(self.nexus.relative_port);
                self.reservations.registrations.push(Registration {
                    id: RegistrantId {
                        initiator_port: self.nexus.initiator_port.clone(),
                        relative_port,
                    },
                    initiator_name: self.nexus.initiator_name.clone(),
                    key: new_key,
                });
            }
            Some((index, key)) => {
                if !ignore_existing_key && parameters.reservation_key != key {
                    return conflict(self.response);
                }
                if new_key == 0 {
                    self.unregister(index);
                } else {
                    self.reservations.registrations[index].key = new_key;
                }
            }
        }
        self.reservations.aptpl = parameters.aptpl;
        self.changed(true);
    }

    /// Removes registration `index`; a reservation it held goes with it (for the
    /// all-registrants types, with the last registrant).
    fn unregister(&mut self, index: usize) {
        let removed = self.reservations.registrations.remove(index);
        let Some(reservation) = &self.reservations.reservation else {
            return;
        };
        let released = match &reservation.holder {
            Some(holder) => *holder == removed.id,
            None => self.reservations.registrations.is_empty(),
        };
        if !released {
            return;
        }
        let kind = reservation.kind;
        self.reservations.reservation = None;
        if matches!(
            kind,
            PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
        ) {
            self.notify_other_registrants(sense::RESERVATIONS_RELEASED);
        }
    }

    fn reserve(&mut self, command: &Command, parameters: &Parameters) {
        let Some(index) = self.registered_with(parameters.reservation_key) else {
            return;
        };
        let Some(kind) = command.reservation_type() else {
            return fail(self.response, sense::INVALID_FIELD_IN_CDB);
        };
        match &self.reservations.reservation {
            Some(current) => {
                let same = current.kind == kind && self.reservations.is_holder(current, self.nexus);
                if !same {
                    conflict(self.response);
                }
            }
            None => {
                let holder = self.reservations.registrations[index].id.clone();
                self.reservations.reservation = Some(PersistentReservation {
                    kind,
                    holder: (!kind.all_registrants()).then_some(holder),
                });
                self.changed(false);
            }
        }
    }

    fn release(&mut self, command: &Command, parameters: &Parameters) {
        if self.registered_with(parameters.reservation_key).is_none() {
            return;
        }
        let Some(current) = &self.reservations.reservation else {
            return;
        };
        if !self.reservations.is_holder(current, self.nexus) {
            return;
        }
        if command.scope != 0 || command.type_code != current.kind.code() {
            return fail(self.response, sense::INVALID_RELEASE_OF_PR);
        }
        let kind = current.kind;
        self.reservations.reservation = None;
        if kind.registrants_have_access() {
            self.notify_other_registrants(sense::RESERVATIONS_RELEASED);
        }
        self.changed(false);
    }

    fn clear(&mut self, parameters: &Parameters) {
        if self.registered_with(parameters.reservation_key).is_none() {
            return;
        }
        self.notify_other_registrants(sense::RESERVATIONS_PREEMPTED);
        self.reservations.registrations.clear();
        self.reservations.reservation = None;
        self.changed(true);
    }

    /// PREEMPT and PREEMPT AND ABORT (SPC-5 5.14.11.4).
    fn preempt(&mut self, command: &Command, parameters: &Parameters) {
        let Some(own) = self.registered_with(parameters.reservation_key) else {
            return;
        };
        let own_id = self.reservations.registrations[own].id.clone();
        let victim_key = parameters.service_action_key;
        let current = self.reservations.reservation.clone();
        let Some(current) = current else {
            // No reservation: only registrations are removed.
            if victim_key == 0 {
                return fail(self.response, sense::INVALID_FIELD_IN_PARAMETER_LIST);
            }
            return self.remove_registrations_with(victim_key);
        };
        let preempts_reservation = match &current.holder {
            // All registrants: key zero takes the reservation from everybody.
            None => victim_key == 0,
            Some(holder) => {
                if victim_key == 0 {
                    return fail(self.response, sense::INVALID_FIELD_IN_PARAMETER_LIST);
                }
                self.reservations.registrations.iter().any(|registration| {
                    registration.id == *holder && registration.key == victim_key
                })
            }
        };
        if !preempts_reservation {
            return self.remove_registrations_with(victim_key);
        }
        let Some(kind) = command.reservation_type() else {
            return fail(self.response, sense::INVALID_FIELD_IN_CDB);
        };
        let removed = self.take_registrations(|registration| {
            registration.id != own_id && (victim_key == 0 || registration.key == victim_key)
        });
        for port in removed {
            self.notify(port, sense::REGISTRATIONS_PREEMPTED);
        }
        self.reservations.reservation = Some(PersistentReservation {
            kind,
            holder: (!kind.all_registrants()).then_some(own_id),
        });
        if kind != current.kind {
            self.notify_other_registrants(sense::RESERVATIONS_RELEASED);
        }
        self.changed(true);
    }

    /// PREEMPT that removes the registrations holding `key` (never the sender's) and
    /// leaves the reservation alone; none to remove is a conflict.
    fn remove_registrations_with(&mut self, key: u64) {
        let nexus = self.nexus;
        let removed = self.take_registrations(|registration| {
            registration.key == key && !registration.id.covers(nexus)
        });
        if removed.is_empty() {
            return conflict(self.response);
        }
        for port in removed {
            self.notify(port, sense::REGISTRATIONS_PREEMPTED);
        }
        self.changed(true);
    }

    /// Removes the registrations `doomed` picks; their initiator ports.
    fn take_registrations(&mut self, doomed: impl Fn(&Registration) -> bool) -> Vec<String> {
        let mut removed = Vec::new();
        self.reservations.registrations.retain(|registration| {
            let remove = doomed(registration);
            if remove {
                removed.push(registration.id.initiator_port.clone());
            }
            !remove
        });
        removed
    }
}

/// The REGISTER AND MOVE parameter list (SPC-5 table "REGISTER AND MOVE service action
/// parameter list") with its TransportID.
struct MoveParameters {
    reservation_key: u64,
    service_action_key: u64,
    unregister: bool,
    aptpl: bool,
    relative_port: u16,
    /// `(initiator port, initiator name)` from the TransportID.
    destination: Option<(String, String)>,
}

impl MoveParameters {
    /// `list` is at least 24 bytes. `Err` carries the sense code of a malformed list.
    fn parse(list: &[u8]) -> Result<MoveParameters, (u8, u8)> {
        let basic = Parameters::parse(list);
        let transport_id_length = u32::from_be_bytes([list[20], list[21], list[22], list[23]]);
        let transport_id_length = usize::try_from(transport_id_length).unwrap_or(usize::MAX);
        let transport_id = list
            .get(BASIC_PARAMETER_LIST..)
            .and_then(|rest| rest.get(..transport_id_length))
            .ok_or(sense::PARAMETER_LIST_LENGTH_ERROR)?;
        Ok(MoveParameters {
            reservation_key: basic.reservation_key,
            service_action_key: basic.service_action_key,
            unregister: list[17] & 0x02 != 0,
            aptpl: list[17] & 0x01 != 0,
            relative_port: u16::from_be_bytes([list[18], list[19]]),
            destination: parse_iscsi_initiator_port(transport_id),
        })
    }
}

/// An iSCSI TransportID of format 01b ("<name>,i,0x<ISID>"): the initiator port and the
/// name. Format 00b names no port and is not accepted here.
fn parse_iscsi_initiator_port(transport_id: &[u8]) -> Option<(String, String)> {
    let (&[format_and_protocol, _, length_high, length_low], rest) =
        transport_id.split_first_chunk::<4>()?;
    if format_and_protocol != 0x45 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([length_high, length_low]));
    let field = rest.get(..length)?;
    let text = field.split(|&byte| byte == 0).next()?;
    let port = std::str::from_utf8(text).ok()?;
    let separator = port.to_ascii_lowercase().find(",i,0x")?;
    let name = &port[..separator];
    if name.is_empty() || port.len() == separator + 5 {
        return None;
    }
    Some((port.to_owned(), name.to_owned()))
}

fn register_and_move(
    reservations: &mut Reservations,
    nexus: &Nexus,
    list: &[u8],
    ports: &dyn PortGroups,
    response: &mut Response,
    outcome: &mut PrOutcome,
) {
    let parameters = match MoveParameters::parse(list) {
        Ok(parameters) => parameters,
        Err(code) => return fail(response, code),
    };
    let mut action = Action {
        reservations,
        nexus,
        response,
        outcome,
    };
    let Some(own) = action.registered_with(parameters.reservation_key) else {
        return;
    };
    let own_id = action.reservations.registrations[own].id.clone();
    let Some(current) = action.reservations.reservation.clone() else {
        return conflict(action.response);
    };
    if current.holder.as_ref() != Some(&own_id) {
        // Not the holder, or an all-registrants reservation (nothing to move).
        return conflict(action.response);
    }
    let Some((port, name)) = parameters.destination else {
        return fail(action.response, sense::INVALID_FIELD_IN_PARAMETER_LIST);
    };
    let port_exists = ports
        .groups()
        .iter()
        .any(|group| group.relative_ports.contains(&parameters.relative_port));
    if parameters.service_action_key == 0 || !port_exists {
        return fail(action.response, sense::INVALID_FIELD_IN_PARAMETER_LIST);
    }
    // Names and ISIDs compare without regard to case: take a known registrant's spelling.
    let port = action
        .reservations
        .registrations
        .iter()
        .map(|registration| &registration.id.initiator_port)
        .find(|known| known.eq_ignore_ascii_case(&port))
        .cloned()
        .unwrap_or(port);
    let destination_nexus = Nexus {
        initiator_port: port,
        initiator_name: name,
        relative_port: parameters.relative_port,
    };
    if own_id.covers(&destination_nexus) {
        return fail(action.response, sense::INVALID_FIELD_IN_PARAMETER_LIST);
    }
    let destination_id = match action.reservations.registration_of(&destination_nexus) {
        Some((index, _)) => {
            action.reservations.registrations[index].key = parameters.service_action_key;
            action.reservations.registrations[index].id.clone()
        }
        None => {
            if action.reservations.registrations.len() >= MAX_REGISTRATIONS {
                return fail(action.response, sense::INSUFFICIENT_REGISTRATION_RESOURCES);
            }
            let id = RegistrantId {
                initiator_port: destination_nexus.initiator_port,
                relative_port: Some(destination_nexus.relative_port),
            };
            action.reservations.registrations.push(Registration {
                id: id.clone(),
                initiator_name: destination_nexus.initiator_name,
                key: parameters.service_action_key,
            });
            id
        }
    };
    action.reservations.reservation = Some(PersistentReservation {
        kind: current.kind,
        holder: Some(destination_id),
    });
    if parameters.unregister {
        action
            .reservations
            .registrations
            .retain(|registration| registration.id != own_id);
    }
    action.reservations.aptpl = parameters.aptpl;
    action.changed(true);
}
