//! The access table: every reservation type against the holder, a registered
//! non-holder and an unregistered nexus.

use super::*;

const READ10: &[u8] = &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const WRITE10: &[u8] = &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const TEST_UNIT_READY: &[u8] = &[0; 6];
const INQUIRY: &[u8] = &[0x12, 0, 0, 0, 36, 0];
const MODE_SENSE6: &[u8] = &[0x1A, 0, 0x3F, 0, 255, 0];
const READ_CAPACITY16: &[u8] = &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
const SYNCHRONIZE_CACHE10: &[u8] = &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const REPORT_LUNS: &[u8] = &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0];
const PR_IN: &[u8] = &[0x5E, 0, 0, 0, 0, 0, 0, 0x20, 0, 0];

/// (command, name) in the column order of the expectations below.
const COMMANDS: [(&[u8], &str); 9] = [
    (READ10, "READ(10)"),
    (WRITE10, "WRITE(10)"),
    (TEST_UNIT_READY, "TEST UNIT READY"),
    (INQUIRY, "INQUIRY"),
    (MODE_SENSE6, "MODE SENSE(6)"),
    (READ_CAPACITY16, "READ CAPACITY(16)"),
    (SYNCHRONIZE_CACHE10, "SYNCHRONIZE CACHE(10)"),
    (REPORT_LUNS, "REPORT LUNS"),
    (PR_IN, "PERSISTENT RESERVE IN"),
];

const ALL: [bool; 9] = [true; 9];
/// Write Exclusive family, not allowed to write: reads and the always class pass.
const READS_ONLY: [bool; 9] = [true, false, true, true, false, true, false, true, true];
/// Exclusive Access family: only the always class passes.
const NOTHING: [bool; 9] = [false, false, true, true, false, true, false, true, true];

/// Alice holds (reserved), Bob is registered, Carol is not.
fn reserved(type_code: u8) -> Reservations {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    register(&mut state, &bob(), 0xB1);
    reserve(&mut state, &alice(), 0xA1, type_code);
    state
}

fn check(state: &Reservations, who: &Nexus, expected: [bool; 9], label: &str) {
    for ((cdb, name), allowed) in COMMANDS.iter().zip(expected) {
        assert_eq!(state.allows(who, cdb), allowed, "{label}: {name}");
    }
}

#[test]
fn access_table_for_every_type() {
    let table: [(u8, [bool; 9], [bool; 9]); 6] = [
        // type, registered non-holder, unregistered
        (WE, READS_ONLY, READS_ONLY),
        (EA, NOTHING, NOTHING),
        (WE_RO, ALL, READS_ONLY),
        (EA_RO, ALL, NOTHING),
        (WE_AR, ALL, READS_ONLY),
        (EA_AR, ALL, NOTHING),
    ];
    for (type_code, registered, unregistered) in table {
        let state = reserved(type_code);
        check(&state, &alice(), ALL, &format!("type {type_code} holder"));
        check(
            &state,
            &bob(),
            registered,
            &format!("type {type_code} registered"),
        );
        check(
            &state,
            &carol(),
            unregistered,
            &format!("type {type_code} unregistered"),
        );
    }
}

#[test]
fn libiscsi_reserve_access_expectations() {
    // (type, registered i2 read, registered i2 write, unregistered i2 read, write)
    let expectations = [
        (EA, false, false, false, false),
        (WE, true, false, true, false),
        (EA_RO, true, true, false, false),
        (WE_RO, true, true, true, false),
        (EA_AR, true, true, false, false),
        (WE_AR, true, true, true, false),
    ];
    for (type_code, reg_read, reg_write, unreg_read, unreg_write) in expectations {
        let mut state = reserved(type_code);
        assert!(state.allows(&alice(), READ10) && state.allows(&alice(), WRITE10));
        assert_eq!(state.allows(&bob(), READ10), reg_read, "type {type_code}");
        assert_eq!(state.allows(&bob(), WRITE10), reg_write, "type {type_code}");
        let (response, _) = prout(&mut state, &bob(), REGISTER, 0, 0xB1, 0, 0);
        assert_good(&response);
        assert_eq!(state.allows(&bob(), READ10), unreg_read, "type {type_code}");
        assert_eq!(
            state.allows(&bob(), WRITE10),
            unreg_write,
            "type {type_code}"
        );
    }
}

#[test]
fn registrations_alone_block_nothing() {
    let mut state = Reservations::default();
    register(&mut state, &alice(), 0xA1);
    for (cdb, name) in COMMANDS {
        assert!(state.allows(&carol(), cdb), "{name}");
    }
    assert!(state.allows(&carol(), &[]));
}

#[test]
fn all_target_ports_registration_is_the_holder_on_every_port() {
    let mut state = Reservations::default();
    let (response, _) = prout(&mut state, &alice(), REGISTER, 0, 0, 0xA1, ALL_TG_PT);
    assert_good(&response);
    reserve(&mut state, &alice(), 0xA1, EA);
    let alice_on_3 = nexus("iqn.2026-01.test:alice", 3);
    assert!(state.allows(&alice_on_3, WRITE10));
    assert!(!state.allows(&bob(), READ10));
}

#[test]
fn start_stop_unit_passes_only_to_start() {
    let state = reserved(EA);
    assert!(state.allows(&carol(), &[0x1B, 0, 0, 0, 0x01, 0]));
    assert!(!state.allows(&carol(), &[0x1B, 0, 0, 0, 0x00, 0]));
    assert!(!state.allows(&carol(), &[0x1B, 0, 0, 0, 0x31, 0]));
    assert!(!state.allows(&carol(), &[0x1B]));
}
