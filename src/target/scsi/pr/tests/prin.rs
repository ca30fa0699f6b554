//! PERSISTENT RESERVE IN: the four service actions, truncation, unknown actions.

use super::*;

#[test]
fn read_keys_lists_keys_in_registration_order() {
    let mut state = Reservations::default();
    assert_eq!(read_keys(&state), (0, vec![]));
    register(&mut state, &bob(), 0xB1);
    register(&mut state, &alice(), 0xA1);
    assert_eq!(read_keys(&state), (2, vec![0xB1, 0xA1]));
}

#[test]
fn truncated_read_keys_still_reports_the_full_length() {
    // libiscsi prin_read_keys_truncate: allocation 8 leaves only the header.
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    let response = prin(&state, 0x00, 8);
    assert_good(&response);
    assert_eq!(response.data_in.len(), 8);
    assert_eq!(&response.data_in[4..8], &16u32.to_be_bytes());
    let response = prin(&state, 0x00, 12);
    assert_eq!(response.data_in.len(), 12);
}

#[test]
fn report_capabilities_announces_every_type() {
    let state = Reservations::default();
    let response = prin(&state, 0x02, 100);
    assert_good(&response);
    // Length 8; CRH, ATP_C, PTPL_C; TMV, ALLOW COMMANDS 1; all six types.
    assert_eq!(response.data_in, vec![0, 8, 0x15, 0x90, 0xEA, 0x01, 0, 0]);
}

#[test]
fn read_reservation_reports_holder_key_and_type() {
    let mut state = Reservations::default();
    assert_eq!(read_reservation(&state), None);
    register(&mut state, &alice(), 0xA1);
    reserve(&mut state, &alice(), 0xA1, EA_RO);
    assert_eq!(read_reservation(&state), Some((0xA1, EA_RO)));
}

#[test]
fn read_full_status_describes_every_registration() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    let (response, _) = prout(&mut state, &bob(), REGISTER, 0, 0, 0xB1, ALL_TG_PT);
    assert_good(&response);
    reserve(&mut state, &alice(), 0xA1, WE);
    let response = prin(&state, 0x03, 4096);
    assert_good(&response);
    let data = &response.data_in;
    assert_eq!(&data[0..4], &2u32.to_be_bytes());
    let additional = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
    assert_eq!(additional, data.len() - 8);
    let mut at = 8;
    let mut seen = Vec::new();
    while at < data.len() {
        let descriptor = &data[at..];
        let key = u64::from_be_bytes(descriptor[0..8].try_into().unwrap());
        let flags = descriptor[12];
        let scope_type = descriptor[13];
        let port = u16::from_be_bytes([descriptor[18], descriptor[19]]);
        let id_length = u32::from_be_bytes(descriptor[20..24].try_into().unwrap()) as usize;
        assert_eq!(id_length % 4, 0);
        assert!(id_length >= 20);
        let transport_id = &descriptor[24..24 + id_length];
        assert_eq!(transport_id[0], 0x45, "iSCSI, initiator port format");
        let name_length = u16::from_be_bytes([transport_id[2], transport_id[3]]) as usize;
        assert_eq!(name_length + 4, id_length);
        let name: Vec<u8> = transport_id[4..]
            .iter()
            .copied()
            .take_while(|&b| b != 0)
            .collect();
        seen.push((
            key,
            flags,
            scope_type,
            port,
            String::from_utf8(name).unwrap(),
        ));
        at += 24 + id_length;
    }
    assert_eq!(
        seen,
        vec![
            (0xA1, 0x01, WE, 1, alice().initiator_port),
            (0xB1, 0x02, 0, 0, bob().initiator_port),
        ]
    );
}

#[test]
fn read_full_status_marks_every_all_registrants_holder() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &alice(), 0xA1, EA_AR);
    let response = prin(&state, 0x03, 4096);
    let data = &response.data_in;
    let first_length = u32::from_be_bytes(data[28..32].try_into().unwrap()) as usize;
    let second = 8 + 24 + first_length;
    assert_eq!((data[8 + 12], data[8 + 13]), (0x01, EA_AR));
    assert_eq!((data[second + 12], data[second + 13]), (0x01, EA_AR));
}

#[test]
fn unknown_service_actions_are_invalid_fields() {
    // libiscsi prin_serviceaction_range: 0..=3 work, 4..0x20 fail.
    let state = Reservations::default();
    for service_action in 0..4 {
        assert_good(&prin(&state, service_action, 16384));
    }
    for service_action in 4..0x20 {
        assert_illegal(&prin(&state, service_action, 16384), 0x24, 0x00);
    }
    let mut response = Response::default();
    state.reserve_in(&alice(), &[0x5E, 0, 0], &mut response);
    assert_illegal(&response, 0x24, 0x00);
}
