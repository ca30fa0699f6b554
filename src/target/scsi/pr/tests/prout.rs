//! PERSISTENT RESERVE OUT: every service action, its happy path and its errors.

use super::*;

#[test]
fn register_adds_a_key_and_bumps_the_generation() {
    let mut state = Reservations::default();
    let (response, outcome) = prout(&mut state, &alice(), REGISTER, 0, 0, 0xA1, 0);
    assert_good(&response);
    assert!(outcome.persist);
    assert_eq!(read_keys(&state), (1, vec![0xA1]));
    // Changing the key needs the current one.
    let (response, _) = prout(&mut state, &alice(), REGISTER, 0, 0xA1, 0xA2, 0);
    assert_good(&response);
    assert_eq!(read_keys(&state), (2, vec![0xA2]));
}

#[test]
fn register_with_the_wrong_key_conflicts() {
    let mut state = Reservations::default();
    let (response, outcome) = prout(&mut state, &alice(), REGISTER, 0, 0x99, 0xA1, 0);
    assert_conflict(&response);
    assert!(!outcome.persist);
    register(&mut state, &alice(), 0xA1);
    let (response, _) = prout(&mut state, &alice(), REGISTER, 0, 0xBAD, 0xA2, 0);
    assert_conflict(&response);
    assert_eq!(read_keys(&state), (1, vec![0xA1]));
}

#[test]
fn register_and_ignore_replaces_whatever_key_is_there() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    let (response, _) = prout(&mut state, &alice(), REGISTER_AND_IGNORE, 0, 0xBAD, 0xA2, 0);
    assert_good(&response);
    assert_eq!(read_keys(&state), (2, vec![0xA2]));
}

#[test]
fn unregistered_nexus_registering_key_zero_changes_nothing() {
    let mut state = Reservations::default();
    let (response, outcome) = prout(&mut state, &alice(), REGISTER, 0, 0, 0, 0);
    assert_good(&response);
    assert!(!outcome.persist);
    assert_eq!(read_keys(&state), (0, vec![]));
}

#[test]
fn unregister_removes_the_key() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    let (response, outcome) = prout(&mut state, &alice(), REGISTER, 0, 0xA1, 0, 0);
    assert_good(&response);
    assert!(outcome.persist);
    assert_eq!(read_keys(&state), (3, vec![0xB1]));
}

#[test]
fn registrations_are_per_target_port_unless_all_tg_pt() {
    let mut state = Reservations::default();
    let alice_on_2 = nexus("iqn.2026-01.test:alice", 2);
    register(&mut state, &alice(), 0xA1);
    // Through port 2 Alice is another, unregistered, nexus.
    let (response, _) = prout(&mut state, &alice_on_2, REGISTER, 0, 0xA1, 0xA2, 0);
    assert_conflict(&response);
    let (response, _) = prout(&mut state, &bob(), REGISTER, 0, 0, 0xB1, ALL_TG_PT);
    assert_good(&response);
    let bob_on_3 = nexus("iqn.2026-01.test:bob", 3);
    let (response, _) = prout(&mut state, &bob_on_3, REGISTER, 0, 0xB1, 0xB2, 0);
    assert_good(&response);
    assert_eq!(read_keys(&state).1, vec![0xA1, 0xB2]);
}

#[test]
fn parameter_list_length_must_be_24() {
    let mut state = Reservations::default();
    let list = [0u8; 32];
    for length in [0, 23, 25, 32] {
        let cdb = prout_cdb(REGISTER, 0, length);
        let mut response = Response::default();
        state.reserve_out(&alice(), &cdb, &list, &ThreePorts, &mut response);
        assert_illegal(&response, 0x1A, 0x00);
    }
    // The CDB claims more than the initiator sent.
    let cdb = prout_cdb(REGISTER, 0, 24);
    let mut response = Response::default();
    state.reserve_out(&alice(), &cdb, &list[..20], &ThreePorts, &mut response);
    assert_illegal(&response, 0x1A, 0x00);
}

#[test]
fn bad_cdbs_are_invalid_fields() {
    let mut state = Reservations::default();
    let list = basic_list(0, 1, 0);
    for service_action in 0x08..0x20 {
        let cdb = prout_cdb(service_action, 0, 24);
        let mut response = Response::default();
        state.reserve_out(&alice(), &cdb, &list, &ThreePorts, &mut response);
        assert_illegal(&response, 0x24, 0x00);
    }
    let mut response = Response::default();
    state.reserve_out(&alice(), &[0x5F, 0], &list, &ThreePorts, &mut response);
    assert_illegal(&response, 0x24, 0x00);
}

#[test]
fn spec_i_pt_is_not_supported() {
    let mut state = Reservations::default();
    let (response, outcome) = prout(&mut state, &alice(), REGISTER, 0, 0, 0xA1, SPEC_I_PT);
    assert_illegal(&response, 0x26, 0x00);
    assert!(!outcome.persist);
    assert_eq!(read_keys(&state), (0, vec![]));
}

#[test]
fn reserve_needs_a_registration_with_the_right_key() {
    let mut state = Reservations::default();
    let (response, _) = prout(&mut state, &alice(), RESERVE, WE, 0xA1, 0, 0);
    assert_conflict(&response);
    register(&mut state, &alice(), 0xA1);
    let (response, _) = prout(&mut state, &alice(), RESERVE, WE, 0xBAD, 0, 0);
    assert_conflict(&response);
    assert_eq!(read_reservation(&state), None);
}

#[test]
fn reserve_rejects_bad_type_and_scope() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    for type_code in [0x0, 0x2, 0x4, 0x9, 0xF, 0x10 | WE] {
        let (response, _) = prout(&mut state, &alice(), RESERVE, type_code, 0xA1, 0, 0);
        assert_illegal(&response, 0x24, 0x00);
    }
}

#[test]
fn reserve_holds_without_bumping_the_generation() {
    for type_code in ALL_TYPES {
        let mut state = Reservations::default();
        register(&mut state, &alice(), 0xA1);
        register(&mut state, &bob(), 0xB1);
        let (response, outcome) = prout(&mut state, &alice(), RESERVE, type_code, 0xA1, 0, 0);
        assert_good(&response);
        assert!(outcome.persist);
        let expected_key = if type_code >= WE_AR { 0 } else { 0xA1 };
        assert_eq!(read_reservation(&state), Some((expected_key, type_code)));
        assert_eq!(read_keys(&state).0, 2);
        // Reserving again the same way is GOOD; another type conflicts.
        let (response, _) = prout(&mut state, &alice(), RESERVE, type_code, 0xA1, 0, 0);
        assert_good(&response);
        let other = if type_code == WE { EA } else { WE };
        let (response, _) = prout(&mut state, &alice(), RESERVE, other, 0xA1, 0, 0);
        assert_conflict(&response);
    }
}

#[test]
fn another_registrant_cannot_reserve_a_held_unit() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &alice(), 0xA1, EA);
    let (response, _) = prout(&mut state, &bob(), RESERVE, EA, 0xB1, 0, 0);
    assert_conflict(&response);
    assert_eq!(read_reservation(&state), Some((0xA1, EA)));
}

#[test]
fn release_by_the_holder_frees_the_unit() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &alice(), 0xA1, WE);
    // Not the holder: GOOD, nothing happens.
    let (response, outcome) = prout(&mut state, &bob(), RELEASE, WE, 0xB1, 0, 0);
    assert_good(&response);
    assert!(!outcome.persist);
    // Wrong type from the holder.
    let (response, _) = prout(&mut state, &alice(), RELEASE, EA, 0xA1, 0, 0);
    assert_illegal(&response, 0x26, 0x04);
    let (response, outcome) = prout(&mut state, &alice(), RELEASE, WE, 0xA1, 0, 0);
    assert_good(&response);
    assert!(outcome.persist);
    assert!(outcome.attentions.is_empty(), "WE release tells nobody");
    assert_eq!(read_reservation(&state), None);
    assert_eq!(read_keys(&state).0, 2);
    // Releasing when nothing is reserved is GOOD.
    let (response, _) = prout(&mut state, &alice(), RELEASE, WE, 0xA1, 0, 0);
    assert_good(&response);
}

#[test]
fn releasing_a_registrants_only_reservation_tells_the_other_registrants() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &alice(), 0xA1, EA_RO);
    let (response, outcome) = prout(&mut state, &alice(), RELEASE, EA_RO, 0xA1, 0, 0);
    assert_good(&response);
    assert_eq!(outcome.attentions, vec![attention(&bob(), 0x2A, 0x04)]);
}

#[test]
fn clear_removes_everything_and_preempts_the_others() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &bob(), 0xB1, WE);
    let (response, _) = prout(&mut state, &alice(), CLEAR, 0, 0xBAD, 0, 0);
    assert_conflict(&response);
    let (response, outcome) = prout(&mut state, &alice(), CLEAR, 0, 0xA1, 0, 0);
    assert_good(&response);
    assert!(outcome.persist);
    assert_eq!(outcome.attentions, vec![attention(&bob(), 0x2A, 0x03)]);
    assert_eq!(read_keys(&state), (3, vec![]));
    assert_eq!(read_reservation(&state), None);
}

#[test]
fn preempt_without_a_reservation_removes_registrations() {
    // libiscsi prout_preempt_rm_reg: the second initiator removes the first's key.
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    let (generation, _) = read_keys(&state);
    let (response, outcome) = prout(&mut state, &bob(), PREEMPT, EA, 0xB1, 0xA1, 0);
    assert_good(&response);
    assert!(outcome.persist);
    assert_eq!(outcome.attentions, vec![attention(&alice(), 0x2A, 0x05)]);
    assert_eq!(read_keys(&state), (generation + 1, vec![0xB1]));
    assert_eq!(read_reservation(&state), None);
}

#[test]
fn preempt_errors() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    // Not registered / wrong own key.
    let (response, _) = prout(&mut state, &carol(), PREEMPT, EA, 0xC1, 0xA1, 0);
    assert_conflict(&response);
    let (response, _) = prout(&mut state, &bob(), PREEMPT, EA, 0xBAD, 0xA1, 0);
    assert_conflict(&response);
    // No registration holds that key.
    let (response, _) = prout(&mut state, &bob(), PREEMPT, EA, 0xB1, 0x77, 0);
    assert_conflict(&response);
    // Key zero with no all-registrants reservation.
    let (response, _) = prout(&mut state, &bob(), PREEMPT, EA, 0xB1, 0, 0);
    assert_illegal(&response, 0x26, 0x00);
    reserve(&mut state, &alice(), 0xA1, WE);
    let (response, _) = prout(&mut state, &bob(), PREEMPT, EA, 0xB1, 0, 0);
    assert_illegal(&response, 0x26, 0x00);
    // Taking the reservation with a bad type.
    let (response, _) = prout(&mut state, &bob(), PREEMPT, 0x2, 0xB1, 0xA1, 0);
    assert_illegal(&response, 0x24, 0x00);
    assert_eq!(read_keys(&state).1, vec![0xA1, 0xB1]);
}

#[test]
fn preempting_the_holder_takes_the_reservation() {
    for service_action in [PREEMPT, PREEMPT_AND_ABORT] {
        let mut state = Reservations::default();
        register(&mut state, &alice(), 0xA1);
        register(&mut state, &bob(), 0xB1);
        register(&mut state, &carol(), 0xC1);
        reserve(&mut state, &alice(), 0xA1, WE);
        let (response, outcome) = prout(&mut state, &bob(), service_action, EA, 0xB1, 0xA1, 0);
        assert_good(&response);
        assert_eq!(read_reservation(&state), Some((0xB1, EA)));
        assert_eq!(read_keys(&state), (4, vec![0xB1, 0xC1]));
        assert_eq!(
            outcome.attentions,
            vec![
                attention(&alice(), 0x2A, 0x05),
                attention(&carol(), 0x2A, 0x04)
            ]
        );
    }
}

#[test]
fn preempting_a_non_holder_leaves_the_reservation() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    register(&mut state, &carol(), 0xC1);
    reserve(&mut state, &alice(), 0xA1, WE);
    let (response, outcome) = prout(&mut state, &bob(), PREEMPT, EA, 0xB1, 0xC1, 0);
    assert_good(&response);
    assert_eq!(read_reservation(&state), Some((0xA1, WE)));
    assert_eq!(read_keys(&state).1, vec![0xA1, 0xB1]);
    assert_eq!(outcome.attentions, vec![attention(&carol(), 0x2A, 0x05)]);
}

#[test]
fn preempt_with_key_zero_takes_an_all_registrants_reservation() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    register(&mut state, &carol(), 0xC1);
    reserve(&mut state, &alice(), 0xA1, WE_AR);
    let (response, outcome) = prout(&mut state, &bob(), PREEMPT, EA, 0xB1, 0, 0);
    assert_good(&response);
    assert_eq!(read_reservation(&state), Some((0xB1, EA)));
    assert_eq!(read_keys(&state).1, vec![0xB1]);
    assert_eq!(outcome.attentions.len(), 2);
    assert!(
        outcome
            .attentions
            .contains(&attention(&alice(), 0x2A, 0x05))
    );
    assert!(
        outcome
            .attentions
            .contains(&attention(&carol(), 0x2A, 0x05))
    );
}

#[test]
fn all_registrants_reservation_is_held_by_every_registrant() {
    for type_code in [WE_AR, EA_AR] {
        let mut state = Reservations::default();
        register(&mut state, &alice(), 0xA1);
        register(&mut state, &bob(), 0xB1);
        reserve(&mut state, &alice(), 0xA1, type_code);
        // Bob holds it too: reserving the same type is a no-op, he can release it.
        let (response, _) = prout(&mut state, &bob(), RESERVE, type_code, 0xB1, 0, 0);
        assert_good(&response);
        // Alice leaving keeps the reservation (libiscsi reserve_ownership, shared).
        let (response, _) = prout(&mut state, &alice(), REGISTER, 0, 0xA1, 0, 0);
        assert_good(&response);
        assert_eq!(read_reservation(&state), Some((0, type_code)));
        let (response, outcome) = prout(&mut state, &bob(), RELEASE, type_code, 0xB1, 0, 0);
        assert_good(&response);
        assert!(outcome.attentions.is_empty());
        assert_eq!(read_reservation(&state), None);
    }
}

#[test]
fn last_registrant_leaving_ends_an_all_registrants_reservation() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    reserve(&mut state, &alice(), 0xA1, EA_AR);
    let (response, _) = prout(&mut state, &alice(), REGISTER, 0, 0xA1, 0, 0);
    assert_good(&response);
    assert_eq!(read_reservation(&state), None);
}

#[test]
fn holder_unregistering_releases_its_reservation() {
    // libiscsi reserve_ownership for the single-holder types.
    for type_code in [WE, EA, WE_RO, EA_RO] {
        let mut state = Reservations::default();
        register(&mut state, &alice(), 0xA1);
        register(&mut state, &bob(), 0xB1);
        reserve(&mut state, &alice(), 0xA1, type_code);
        let (response, outcome) = prout(&mut state, &alice(), REGISTER, 0, 0xA1, 0, 0);
        assert_good(&response);
        assert_eq!(read_reservation(&state), None);
        let expected = if type_code >= WE_RO {
            vec![attention(&bob(), 0x2A, 0x04)]
        } else {
            vec![]
        };
        assert_eq!(outcome.attentions, expected);
    }
}

fn move_list(key: u64, new_key: u64, unregister: bool, port: u16, transport_id: &[u8]) -> Vec<u8> {
    let mut list = vec![0u8; 24];
    list[..8].copy_from_slice(&key.to_be_bytes());
    list[8..16].copy_from_slice(&new_key.to_be_bytes());
    list[17] = if unregister { 0x02 } else { 0 };
    list[18..20].copy_from_slice(&port.to_be_bytes());
    let length = u32::try_from(transport_id.len()).unwrap();
    list[20..24].copy_from_slice(&length.to_be_bytes());
    list.extend_from_slice(transport_id);
    list
}

fn iscsi_transport_id(port_name: &str) -> Vec<u8> {
    let padded = (port_name.len() + 1).next_multiple_of(4);
    let mut id = vec![0x45, 0];
    id.extend_from_slice(&u16::try_from(padded).unwrap().to_be_bytes());
    id.extend_from_slice(port_name.as_bytes());
    id.resize(4 + padded, 0);
    id
}

fn register_and_move(state: &mut Reservations, from: &Nexus, list: &[u8]) -> (Response, PrOutcome) {
    let cdb = prout_cdb(REGISTER_AND_MOVE, WE, u32::try_from(list.len()).unwrap());
    let mut response = Response::default();
    let outcome = state.reserve_out(from, &cdb, list, &ThreePorts, &mut response);
    (response, outcome)
}

#[test]
fn register_and_move_hands_the_reservation_over() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    reserve(&mut state, &alice(), 0xA1, WE);
    let carol_id = iscsi_transport_id(&carol().initiator_port);
    let list = move_list(0xA1, 0xC1, true, 2, &carol_id);
    let (response, outcome) = register_and_move(&mut state, &alice(), &list);
    assert_good(&response);
    assert!(outcome.persist);
    assert_eq!(read_reservation(&state), Some((0xC1, WE)));
    assert_eq!(read_keys(&state), (2, vec![0xC1]));
    // Carol now holds it: she may release it.
    let (response, _) = prout(&mut state, &carol(), RELEASE, WE, 0xC1, 0, 0);
    assert_good(&response);
    assert_eq!(read_reservation(&state), None);
}

#[test]
fn register_and_move_errors() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    let carol_id = iscsi_transport_id(&carol().initiator_port);
    // Nothing reserved, then not the holder: conflicts.
    let (response, _) = register_and_move(
        &mut state,
        &alice(),
        &move_list(0xA1, 0xC1, false, 2, &carol_id),
    );
    assert_conflict(&response);
    reserve(&mut state, &alice(), 0xA1, WE);
    let (response, _) = register_and_move(
        &mut state,
        &bob(),
        &move_list(0xB1, 0xC1, false, 2, &carol_id),
    );
    assert_conflict(&response);
    // Key zero, unknown port, a name-only TransportID, itself: invalid fields.
    let bad_lists = [
        move_list(0xA1, 0, false, 2, &carol_id),
        move_list(0xA1, 0xC1, false, 9, &carol_id),
        move_list(
            0xA1,
            0xC1,
            false,
            2,
            &[0x05, 0, 0, 8, b'i', b'q', b'n', b'.', 0, 0, 0, 0],
        ),
        move_list(
            0xA1,
            0xC1,
            false,
            1,
            &iscsi_transport_id(&alice().initiator_port),
        ),
    ];
    for list in bad_lists {
        let (response, _) = register_and_move(&mut state, &alice(), &list);
        assert_illegal(&response, 0x26, 0x00);
    }
    // The TransportID runs past the list.
    let mut list = move_list(0xA1, 0xC1, false, 2, &carol_id);
    list.truncate(30);
    let (response, _) = register_and_move(&mut state, &alice(), &list);
    assert_illegal(&response, 0x1A, 0x00);
    assert_eq!(read_reservation(&state), Some((0xA1, WE)));
}

#[test]
fn aptpl_is_remembered_for_report_capabilities() {
    let mut state = Reservations::default();
    let (response, _) = prout(&mut state, &alice(), REGISTER, 0, 0, 0xA1, APTPL);
    assert_good(&response);
    assert_eq!(prin(&state, 0x02, 8).data_in[3] & 0x01, 0x01);
}

#[test]
fn register_and_move_matches_port_names_without_regard_to_case() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &carol(), 0xC1);
    reserve(&mut state, &alice(), 0xA1, EA);
    let shouting = carol().initiator_port.to_ascii_uppercase();
    let list = move_list(0xA1, 0xC2, false, 2, &iscsi_transport_id(&shouting));
    let (response, _) = register_and_move(&mut state, &alice(), &list);
    assert_good(&response);
    assert_eq!(read_keys(&state).1, vec![0xA1, 0xC2]);
    assert!(state.allows(&carol(), &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
    // Moving onto itself, however spelled, is refused.
    let own = alice().initiator_port.to_ascii_uppercase();
    let list = move_list(0xC2, 0xA9, false, 1, &iscsi_transport_id(&own));
    let (response, _) = register_and_move(&mut state, &carol(), &list);
    assert_good(&response);
    let list = move_list(0xA9, 0xA8, false, 1, &iscsi_transport_id(&own));
    let (response, _) = register_and_move(&mut state, &alice(), &list);
    assert_illegal(&response, 0x26, 0x00);
}
