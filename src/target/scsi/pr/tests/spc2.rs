//! SPC-2 RESERVE/RELEASE and how they meet persistent reservations (CRH=1).

use super::*;

fn run(state: &mut Reservations, from: &Nexus, cdb: &[u8]) -> Response {
    let mut response = Response::default();
    state.reserve_release(from, cdb, &mut response);
    response
}

const RESERVE6: [u8; 6] = [0x16, 0, 0, 0, 0, 0];
const RELEASE6: [u8; 6] = [0x17, 0, 0, 0, 0, 0];
const RESERVE10: [u8; 10] = [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const RELEASE10: [u8; 10] = [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const TEST_UNIT_READY: [u8; 6] = [0; 6];
const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 36, 0];
const MODE_SENSE6: [u8; 6] = [0x1A, 0, 0x3F, 0, 255, 0];
const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

#[test]
fn two_initiators_take_turns() {
    // libiscsi reserve6_2initiators.
    let mut state = Reservations::default();
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    assert_conflict(&run(&mut state, &bob(), &RESERVE6));
    assert!(state.allows(&bob(), &RELEASE6));
    assert_good(&run(&mut state, &bob(), &RELEASE6));
    assert!(state.allows(&alice(), &MODE_SENSE6));
    assert!(!state.allows(&bob(), &MODE_SENSE6));
    assert!(!state.allows(&bob(), &RESERVE6));
    assert_conflict(&run(&mut state, &bob(), &RESERVE10));
    assert_good(&run(&mut state, &alice(), &RELEASE6));
    assert_good(&run(&mut state, &bob(), &RESERVE10));
    assert_good(&run(&mut state, &bob(), &RELEASE10));
    assert!(state.allows(&alice(), &MODE_SENSE6));
}

#[test]
fn others_get_only_inquiry_and_friends() {
    let mut state = Reservations::default();
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    for cdb in [
        &TEST_UNIT_READY[..],
        &MODE_SENSE6,
        &READ10,
        &[0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0],
    ] {
        assert!(!state.allows(&bob(), cdb), "{cdb:02x?}");
        assert!(state.allows(&alice(), cdb), "{cdb:02x?}");
    }
    for cdb in [
        &INQUIRY[..],
        &[0x03, 0, 0, 0, 18, 0],
        &[0xA0; 12],
        &[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    ] {
        assert!(state.allows(&bob(), cdb), "{cdb:02x?}");
    }
    // The same initiator through another target port is another nexus.
    assert!(!state.allows(&nexus("iqn.2026-01.test:alice", 2), &READ10));
}

#[test]
fn reset_and_logout_drop_the_reservation() {
    let mut state = Reservations::default();
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    state.nexus_lost(&bob());
    assert!(!state.allows(&bob(), &READ10));
    state.nexus_lost(&alice());
    assert!(state.allows(&bob(), &READ10));
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    state.lun_reset();
    assert!(state.allows(&bob(), &READ10));
}

#[test]
fn third_party_and_long_id_are_refused() {
    let mut state = Reservations::default();
    assert_illegal(
        &run(&mut state, &alice(), &[0x16, 0x10, 0, 0, 0, 0]),
        0x24,
        0x00,
    );
    assert_illegal(
        &run(&mut state, &alice(), &[0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]),
        0x24,
        0x00,
    );
    assert_illegal(
        &run(&mut state, &alice(), &[0x56, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
        0x24,
        0x00,
    );
    assert_illegal(&run(&mut state, &alice(), &[]), 0x24, 0x00);
    assert!(state.allows(&bob(), &READ10));
}

#[test]
fn persistent_reservation_decides_reserve_and_release() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &alice(), 0xA1, WE);
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    assert_conflict(&run(&mut state, &bob(), &RESERVE6));
    assert_good(&run(&mut state, &alice(), &RELEASE6));
    assert_eq!(read_reservation(&state), Some((0xA1, WE)));
    // The holder's RESERVE was a no-op: Bob is not shut out beyond WE rules.
    assert!(state.allows(&bob(), &READ10));
}

#[test]
fn encode_leaves_the_spc2_reservation_out() {
    let mut state = Reservations::default();
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    let loaded = Reservations::load(Some(&state.encode())).unwrap();
    assert!(loaded.allows(&bob(), &READ10));
}

#[test]
fn release_drops_the_spc2_reservation_even_under_a_persistent_one() {
    let mut state = Reservations::default();
    assert_good(&run(&mut state, &alice(), &RESERVE6));
    register(&mut state, &alice(), 0xA1);
    reserve(&mut state, &alice(), 0xA1, WE);
    assert!(!state.allows(&bob(), &READ10));
    assert_good(&run(&mut state, &alice(), &RELEASE10));
    assert!(state.allows(&bob(), &READ10));
    assert_eq!(read_reservation(&state), Some((0xA1, WE)));
}
