//! PDU codec round trips and malformed lengths.

use crate::target::iscsi::pdu::{self, BHS_LEN, Pdu, PduError, PduLimits, decode};

fn limits(hd: bool, dd: bool) -> PduLimits {
    PduLimits {
        header_digest: hd,
        data_digest: dd,
        max_data: 8192,
    }
}

fn sample() -> [u8; BHS_LEN] {
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x01;
    bhs[1] = 0xa0;
    for (i, b) in bhs.iter_mut().enumerate().skip(8) {
        *b = i as u8;
    }
    bhs
}

#[test]
fn round_trips_with_and_without_digests_and_padding() {
    for (hd, dd) in [(false, false), (true, false), (false, true), (true, true)] {
        for len in [0usize, 1, 3, 4, 5, 511, 8192] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ahs = [0u8, 5, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd];
            let mut bhs = sample();
            let mut bytes = Vec::new();
            pdu::encode_with_ahs(&mut bytes, &mut bhs, &ahs, &data, (hd, dd));
            assert_eq!(bytes.len() % 4, 0);
            let (pdu, used) = decode(&bytes, &limits(hd, dd)).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(pdu.bhs, bhs);
            assert_eq!(pdu.ahs, ahs);
            assert_eq!(pdu.data, data);
            let mut scratch = Vec::new();
            let cdb = pdu::cdb_of(&pdu, &mut scratch).unwrap();
            assert_eq!(cdb.len(), 20);
            assert_eq!(&cdb[16..], &[0xaa, 0xbb, 0xcc, 0xdd]);
            // Every truncation is reported, never a panic.
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..cut], &limits(hd, dd)).unwrap_err(),
                    PduError::Truncated
                );
            }
            if hd {
                let mut bad = bytes.clone();
                bad[3] ^= 0x10;
                assert_eq!(
                    decode(&bad, &limits(hd, dd)).unwrap_err(),
                    PduError::HeaderDigest
                );
            }
            if dd && len > 0 {
                let mut bad = bytes.clone();
                let at = bad.len() - 5;
                bad[at] ^= 1;
                assert_eq!(
                    decode(&bad, &limits(hd, dd)).unwrap_err(),
                    PduError::DataDigest
                );
            }
        }
    }
}

#[test]
fn oversized_segments_are_refused_before_reading() {
    let mut bhs = sample();
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    let mut bytes = bhs.to_vec();
    bytes.resize(100, 0);
    assert_eq!(
        decode(&bytes, &limits(false, false)).unwrap_err(),
        PduError::TooLong
    );
    bhs[5..8].copy_from_slice(&[0, 0x20, 0x01]);
    assert_eq!(
        pdu::lengths(&bhs, &limits(false, false)).unwrap_err(),
        PduError::TooLong
    );
}

#[test]
fn malformed_ahs_is_refused() {
    let mut pdu = Pdu::default();
    let mut scratch = Vec::new();
    for ahs in [
        vec![0, 0, 1, 0],             // zero length
        vec![0, 9, 1, 0, 1, 2, 3, 4], // longer than present
        vec![0, 1, 2, 0],             // bidirectional read length: unsupported
        vec![0, 5, 1],                // truncated
    ] {
        pdu.ahs = ahs;
        assert!(pdu::cdb_of(&pdu, &mut scratch).is_none());
    }
    pdu.ahs.clear();
    assert_eq!(pdu::cdb_of(&pdu, &mut scratch).unwrap().len(), 16);
}
