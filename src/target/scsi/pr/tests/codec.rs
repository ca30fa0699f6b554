//! Saved state: round trips, and hostile bytes never panic.

use proptest::prelude::*;

use super::*;
use crate::target::scsi::pr::DamagedReservations;
use crate::target::scsi::pr::{PersistentReservation, PrType, RegistrantId, Registration, codec};

fn any_registration() -> impl Strategy<Value = Registration> {
    (
        any::<u64>(),
        "[a-z0-9.:-]{1,40}",
        proptest::option::of(1u16..4),
        "[0-9a-f]{12}",
    )
        .prop_map(|(key, name, relative_port, isid)| Registration {
            id: RegistrantId {
                initiator_port: format!("{name},i,0x{isid}"),
                relative_port,
            },
            initiator_name: name,
            key,
        })
}

fn any_state() -> impl Strategy<Value = Reservations> {
    (
        proptest::collection::vec(any_registration(), 0..8),
        any::<u32>(),
        any::<bool>(),
        proptest::option::of((0usize..6, any::<prop::sample::Index>())),
    )
        .prop_map(|(registrations, generation, aptpl, reservation)| {
            let reservation = reservation.and_then(|(type_index, holder)| {
                let kind = PrType::from_code(ALL_TYPES[type_index]).unwrap();
                if registrations.is_empty() {
                    return None;
                }
                let holder = (!kind.all_registrants())
                    .then(|| registrations[holder.index(registrations.len())].id.clone());
                Some(PersistentReservation { kind, holder })
            });
            Reservations {
                registrations,
                reservation,
                generation,
                aptpl,
                spc2_holder: None,
            }
        })
}

proptest! {
    #[test]
    fn encode_then_load_gives_the_same_state(state in any_state()) {
        let bytes = state.encode();
        prop_assert_eq!(Reservations::load(Some(&bytes)), Ok(state));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Reservations::load(Some(&bytes));
    }

    #[test]
    fn damaged_encodings_are_refused(state in any_state(), position in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = state.encode();
        let at = position.index(bytes.len());
        bytes[at] ^= flip;
        prop_assert_eq!(Reservations::load(Some(&bytes)), Err(DamagedReservations));
    }

    #[test]
    fn truncated_encodings_are_refused(state in any_state(), cut in any::<prop::sample::Index>()) {
        let bytes = state.encode();
        let keep = cut.index(bytes.len());
        prop_assert_eq!(Reservations::load(Some(&bytes[..keep])), Err(DamagedReservations));
    }
}

#[test]
fn nothing_saved_is_the_empty_state_but_an_empty_save_is_refused() {
    assert_eq!(Reservations::load(None), Ok(Reservations::default()));
    assert_eq!(Reservations::load(Some(&[])), Err(DamagedReservations));
}

#[test]
fn a_valid_checksum_over_nonsense_is_still_refused() {
    // Right frame and checksum, but the holder index points past the registrations.
    let mut body = Vec::new();
    body.extend_from_slice(b"TRPR");
    body.push(1);
    body.extend_from_slice(&14u32.to_be_bytes());
    body.extend_from_slice(&5u32.to_be_bytes());
    body.push(0x02);
    body.push(WE);
    body.extend_from_slice(&7u32.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    let checksum = crc32c::crc32c(&body);
    body.extend_from_slice(&checksum.to_be_bytes());
    assert!(codec::decode(&body).is_none());
}
