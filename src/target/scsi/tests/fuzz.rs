//! Random CDBs of every opcode and random Data-Out: never a panic, always a status, and
//! sense whenever the status is CHECK CONDITION.

use proptest::prelude::*;

use super::super::status;
use super::super::test_support::*;

/// Opcodes `pr.rs` answers; left to that module's own tests.
fn delegated(opcode: u8) -> bool {
    matches!(opcode, 0x16 | 0x17 | 0x56 | 0x57 | 0x5E | 0x5F)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_cdbs_always_answer(
        opcode in any::<u8>(),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
        data_out in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        prop_assume!(!delegated(opcode));
        let rig = Rig::with(64 * 512, false);
        let mut cdb = vec![opcode];
        cdb.extend_from_slice(&tail);
        // Keep LBAs small often enough to reach the success paths.
        if cdb.len() > 9 && tail[0] & 1 == 0 {
            for byte in &mut cdb[2..9] {
                *byte = 0;
            }
        }
        let response = rig.run(&cdb, &data_out);
        prop_assert!(matches!(
            response.status,
            status::GOOD | status::CHECK_CONDITION | status::CONDITION_MET
        ));
        if response.status == status::CHECK_CONDITION {
            prop_assert!(response.sense.len() >= 18);
            prop_assert!(response.data_in.is_empty());
        }
        prop_assert!(response.data_in.len() <= 16 << 20);
    }
}
