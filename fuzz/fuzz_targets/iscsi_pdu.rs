//! iSCSI PDUs: decode whatever bytes come with limits taken from the first input byte,
//! and check that an accepted PDU re-encodes to the bytes it came from and that its CDB
//! (with any Extended CDB AHS) can be taken without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troika::target::iscsi::pdu::{self, PduLimits};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let limits = PduLimits {
        header_digest: knobs & 1 != 0,
        data_digest: knobs & 2 != 0,
        max_data: 512 << (knobs >> 4),
    };
    let Ok((mut decoded, used)) = pdu::decode(bytes, &limits) else {
        return;
    };
    assert!(used <= bytes.len());
    assert!(decoded.data.len() <= limits.max_data as usize);
    let mut scratch = Vec::new();
    if let Some(cdb) = pdu::cdb_of(&decoded, &mut scratch) {
        assert!(cdb.len() >= 16);
    }
    let mut again = Vec::new();
    let ahs = decoded.ahs.clone();
    pdu::encode_with_ahs(
        &mut again,
        &mut decoded.bhs,
        &ahs,
        &decoded.data,
        (limits.header_digest, limits.data_digest),
    );
    let (twice, used_again) = pdu::decode(&again, &limits).expect("re-encoded PDU decodes");
    assert_eq!(used_again, again.len());
    assert_eq!(twice.bhs, decoded.bhs);
    assert_eq!(twice.data, decoded.data);
});
