//! Random PR OUT, PR IN and RESERVE/RELEASE traffic from a few nexuses: never a panic,
//! every answer well formed, and the state keeps its invariants.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    /// A PR OUT with a plausible CDB and list (keys from a small set so they collide).
    Plausible {
        who: usize,
        service_action: u8,
        type_code: u8,
        key: u8,
        new_key: u8,
        flags: u8,
    },
    /// Arbitrary CDB and Data-Out bytes.
    Raw {
        who: usize,
        cdb: Vec<u8>,
        data_out: Vec<u8>,
    },
    PrIn {
        service_action: u8,
        allocation: u16,
    },
    Spc2 {
        who: usize,
        opcode: u8,
    },
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..4, 0u8..9, 0u8..10, 0u8..4, 0u8..4, any::<u8>()).prop_map(
            |(who, service_action, type_code, key, new_key, flags)| Step::Plausible {
                who, service_action, type_code, key, new_key, flags: flags & !SPEC_I_PT
            }
        ),
        1 => (0usize..4, proptest::collection::vec(any::<u8>(), 0..16),
              proptest::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(who, mut cdb, data_out)| {
                if let Some(first) = cdb.first_mut() { *first = 0x5F; }
                Step::Raw { who, cdb, data_out }
            }),
        1 => (0u8..0x20, any::<u16>()).prop_map(|(service_action, allocation)| Step::PrIn { service_action, allocation }),
        1 => (0usize..4, prop::sample::select(vec![0x16u8, 0x17, 0x56, 0x57]))
            .prop_map(|(who, opcode)| Step::Spc2 { who, opcode }),
    ]
}

fn who(index: usize) -> Nexus {
    [alice(), bob(), carol(), nexus("iqn.2026-01.test:alice", 2)][index].clone()
}

fn well_formed(response: &Response) -> bool {
    match response.status {
        status::GOOD | status::RESERVATION_CONFLICT => response.sense.is_empty(),
        status::CHECK_CONDITION => response.sense.len() == 18 && response.data_in.is_empty(),
        _ => false,
    }
}

fn invariants_hold(state: &Reservations) -> bool {
    let ids: Vec<_> = state
        .registrations
        .iter()
        .map(|registration| &registration.id)
        .collect();
    let unique = ids.iter().enumerate().all(|(i, id)| !ids[..i].contains(id));
    let reservation_ok = match &state.reservation {
        None => true,
        Some(reservation) => match &reservation.holder {
            Some(holder) => !reservation.kind.all_registrants() && ids.contains(&holder),
            None => reservation.kind.all_registrants() && !ids.is_empty(),
        },
    };
    unique
        && reservation_ok
        && state
            .registrations
            .iter()
            .all(|registration| registration.key != 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_traffic_never_breaks_the_state(steps in proptest::collection::vec(any_step(), 1..40)) {
        let mut state = Reservations::default();
        let keys = [0u64, 0x11, 0x22, 0x33];
        for step in steps {
            let before = state.generation;
            let mut response = Response::default();
            let mut persisted = None;
            match step {
                Step::Plausible { who: index, service_action, type_code, key, new_key, flags } => {
                    let cdb = prout_cdb(service_action, type_code, 24);
                    let list = basic_list(keys[usize::from(key)], keys[usize::from(new_key)], flags);
                    let outcome = state.reserve_out(&who(index), &cdb, &list, &ThreePorts, &mut response);
                    persisted = Some(outcome.persist);
                }
                Step::Raw { who: index, cdb, data_out } => {
                    let outcome = state.reserve_out(&who(index), &cdb, &data_out, &ThreePorts, &mut response);
                    persisted = Some(outcome.persist);
                }
                Step::PrIn { service_action, allocation } => {
                    response = prin(&state, service_action, allocation);
                    prop_assert!(response.data_in.len() <= usize::from(allocation));
                }
                Step::Spc2 { who: index, opcode } => {
                    let mut cdb = [0u8; 10];
                    cdb[0] = opcode;
                    state.reserve_release(&who(index), &cdb, &mut response);
                }
            }
            prop_assert!(well_formed(&response), "{:?}", response);
            prop_assert!(invariants_hold(&state), "{:?}", state);
            prop_assert!(state.generation >= before);
            if persisted == Some(false) {
                prop_assert_eq!(state.generation, before);
            }
            let reloaded = Reservations::load(Some(&state.encode())).unwrap();
            prop_assert_eq!(&reloaded.registrations, &state.registrations);
            prop_assert_eq!(&reloaded.reservation, &state.reservation);
        }
    }
}
