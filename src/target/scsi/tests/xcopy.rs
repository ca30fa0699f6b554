//! EXTENDED COPY and RECEIVE COPY RESULTS, with the parameter-list checks libiscsi
//! makes.

use super::super::test_support::*;
use super::super::{Nexus, Response, status};

const HEADER: usize = 16;

fn target_descriptor(naa_bytes: &[u8; 16], flags: u8) -> [u8; 32] {
    let mut descriptor = [0u8; 32];
    descriptor[0] = 0xE4;
    descriptor[1] = flags;
    descriptor[4] = 0x01;
    descriptor[5] = 0x03;
    descriptor[7] = 16;
    descriptor[8..24].copy_from_slice(naa_bytes);
    descriptor[30] = 0x02; // block length 512
    descriptor
}

fn segment(source: u16, destination: u16, blocks: u16, from: u64, to: u64) -> [u8; 28] {
    let mut descriptor = [0u8; 28];
    descriptor[0] = 0x02;
    descriptor[2..4].copy_from_slice(&24u16.to_be_bytes());
    descriptor[4..6].copy_from_slice(&source.to_be_bytes());
    descriptor[6..8].copy_from_slice(&destination.to_be_bytes());
    descriptor[10..12].copy_from_slice(&blocks.to_be_bytes());
    descriptor[12..20].copy_from_slice(&from.to_be_bytes());
    descriptor[20..28].copy_from_slice(&to.to_be_bytes());
    descriptor
}

fn parameter_list(list_id: u8, usage: u8, targets: &[[u8; 32]], segments: &[[u8; 28]]) -> Vec<u8> {
    let mut list = vec![0u8; HEADER];
    list[0] = list_id;
    list[1] = usage << 3;
    list[2..4].copy_from_slice(&((targets.len() * 32) as u16).to_be_bytes());
    list[8..12].copy_from_slice(&((segments.len() * 28) as u32).to_be_bytes());
    for target in targets {
        list.extend_from_slice(target);
    }
    for segment in segments {
        list.extend_from_slice(segment);
    }
    list
}

fn xcopy_cdb(length: usize) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(length as u32).to_be_bytes());
    cdb
}

fn copy_results(sa: u8, list_id: u8) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x84;
    cdb[1] = sa;
    cdb[2] = list_id;
    cdb[10..14].copy_from_slice(&1024u32.to_be_bytes());
    cdb
}

fn xcopy(rig: &Rig, list: &[u8]) -> Response {
    rig.run(&xcopy_cdb(list.len()), list)
}

#[test]
fn copies_within_a_unit_and_reports_status() {
    let rig = Rig::new();
    rig.run(&cdb16(0x93, 0, 0, 16), &[b'A'; 512]);
    let me = target_descriptor(&naa(7), 0);
    assert_eq!(sense_of(&rig.run(&copy_results(0, 1), &[])), (5, 0x24, 0));
    let list = parameter_list(1, 0, &[me], &[segment(0, 0, 16, 0, 1000)]);
    assert_eq!(xcopy(&rig, &list).status, status::GOOD);
    assert_eq!(rig.target.bytes(1000 * 512, 16 * 512), vec![b'A'; 16 * 512]);
    let result = rig.run(&copy_results(0, 1), &[]);
    assert_eq!(result.status, status::GOOD);
    assert_eq!(&result.data_in[..8], &[0, 0, 0, 8, 0x01, 0, 1, 0xF1]);
    assert_eq!(&result.data_in[8..12], &8u32.to_be_bytes());
    // List identifiers belong to the nexus that sent the copy: another nexus (another
    // path of the same initiator port too) sees nothing, and a lost nexus's results go.
    let other_path = Nexus {
        relative_port: 2,
        ..nexus(1)
    };
    for who in [nexus(2), other_path] {
        rig.unit.shared.attention(&who, true);
        assert_eq!(
            sense_of(&rig.run_as(&who, &copy_results(0, 1), &[])),
            (5, 0x24, 0)
        );
    }
    rig.unit.nexus_lost(&nexus(1));
    assert_eq!(sense_of(&rig.run(&copy_results(0, 1), &[])), (5, 0x24, 0));
    // Discarded list identifiers leave no result.
    let list = parameter_list(2, 2, &[me], &[segment(0, 0, 1, 0, 5)]);
    assert_eq!(xcopy(&rig, &list).status, status::GOOD);
    assert_eq!(sense_of(&rig.run(&copy_results(0, 2), &[])), (5, 0x24, 0));
    // Parameter list length 0 is a no-op.
    assert_eq!(rig.run(&xcopy_cdb(0), &[]).status, status::GOOD);
}

#[test]
fn copies_to_a_peer_unit() {
    let mut rig = Rig::new();
    let peer = Rig::in_registry(rig.registry.clone(), 8, 1 << 20, false);
    rig.peers.units.push(peer.unit.clone());
    rig.run(&cdb16(0x93, 0, 10, 4), &[b'Z'; 512]);
    let targets = [target_descriptor(&naa(7), 0), target_descriptor(&naa(8), 0)];
    let list = parameter_list(3, 0, &targets, &[segment(0, 1, 4, 10, 20)]);
    assert_eq!(xcopy(&rig, &list).status, status::GOOD);
    assert_eq!(peer.target.bytes(20 * 512, 2048), vec![b'Z'; 2048]);
    // An unknown designator is unreachable.
    let unknown = [
        target_descriptor(&naa(7), 0),
        target_descriptor(&naa(99), 0),
    ];
    let list = parameter_list(4, 0, &unknown, &[segment(0, 1, 4, 10, 20)]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (0x0A, 0x0D, 0x02));
    // A read-only destination is write protected.
    let mut rig = Rig::new();
    let frozen = Rig::in_registry(rig.registry.clone(), 9, 1 << 20, true);
    rig.peers.units.push(frozen.unit.clone());
    let targets = [target_descriptor(&naa(7), 0), target_descriptor(&naa(9), 0)];
    let list = parameter_list(5, 0, &targets, &[segment(0, 1, 4, 10, 20)]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (7, 0x27, 0));
}

#[test]
fn parameter_list_checks() {
    let rig = Rig::new();
    let me = target_descriptor(&naa(7), 0);
    let good = parameter_list(1, 0, &[me], &[segment(0, 0, 8, 0, 100)]);
    // Truncated by the parameter list length.
    assert_eq!(
        sense_of(&rig.run(&xcopy_cdb(HEADER + 31), &good)),
        (5, 0x1A, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&xcopy_cdb(good.len() - 1), &good)),
        (5, 0x1A, 0)
    );
    assert_eq!(sense_of(&rig.run(&xcopy_cdb(8), &good)), (5, 0x1A, 0));
    // Too many descriptors of each kind.
    let list = parameter_list(1, 0, &[me; 3], &[segment(0, 0, 1, 0, 100)]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (5, 0x26, 0x06));
    let list = parameter_list(1, 0, &[me], &[segment(0, 0, 1, 0, 100); 17]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (5, 0x26, 0x08));
    // Longer than the maximum descriptor list length.
    let list = parameter_list(1, 0, &[me; 3], &[segment(0, 0, 1, 0, 100); 34]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (5, 0x1A, 0));
    // Unsupported descriptor types.
    let mut fibre = me;
    fibre[0] = 0xE0;
    let list = parameter_list(1, 0, &[fibre], &[segment(0, 0, 1, 0, 100)]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (5, 0x26, 0x07));
    let mut stream = segment(0, 0, 1, 0, 100);
    stream[0] = 0x03;
    let list = parameter_list(1, 0, &[me], &[stream]);
    assert_eq!(sense_of(&xcopy(&rig, &list)), (5, 0x26, 0x09));
    // LU ID TYPE is ignored (SPC-4); NUL, bad index, beyond the end of the unit fail.
    let list = parameter_list(
        1,
        0,
        &[target_descriptor(&naa(7), 0xC0)],
        &[segment(0, 0, 1, 0, 1)],
    );
    assert_eq!(xcopy(&rig, &list).status, status::GOOD);
    let list = parameter_list(
        1,
        0,
        &[target_descriptor(&naa(7), 0x20)],
        &[segment(0, 0, 1, 0, 1)],
    );
    assert_eq!(sense_of(&xcopy(&rig, &list)).0, 0x0A);
    let list = parameter_list(1, 0, &[me], &[segment(0, 1, 1, 0, 1)]);
    assert_eq!(sense_of(&xcopy(&rig, &list)).0, 0x0A);
    let list = parameter_list(1, 0, &[me], &[segment(0, 0, 8, 0, RIG_BLOCKS - 1)]);
    assert_eq!(sense_of(&xcopy(&rig, &list)).0, 0x0A);
    // Service actions other than LID1.
    let mut cdb = xcopy_cdb(good.len());
    cdb[1] = 0x01;
    assert_eq!(sense_of(&rig.run(&cdb, &good)), (5, 0x24, 0));
}

#[test]
fn operating_parameters() {
    let rig = Rig::new();
    let response = rig.run(&copy_results(3, 0), &[]);
    let data = &response.data_in;
    assert_eq!(data.len(), 46);
    assert_eq!(u32::from_be_bytes(data[..4].try_into().unwrap()), 42);
    assert_eq!(u16::from_be_bytes([data[8], data[9]]), 2);
    assert_eq!(u16::from_be_bytes([data[10], data[11]]), 16);
    assert_eq!(&data[43..46], &[2, 0x02, 0xE4]);
    assert_eq!(sense_of(&rig.run(&copy_results(4, 0), &[])), (5, 0x24, 0));
}

#[test]
fn overlapping_copy_within_a_unit() {
    let rig = Rig::new();
    let data: Vec<u8> = (0..2048u32 * 512).map(|i| (i / 512) as u8).collect();
    rig.run(&cdb16(0x8A, 0, 0, 2048), &data);
    let me = target_descriptor(&naa(7), 0);
    // Blocks 0..2047 move up by one: more than one copy chunk, source and destination
    // overlapping.
    let list = parameter_list(1, 0, &[me], &[segment(0, 0, 2047, 0, 1)]);
    assert_eq!(xcopy(&rig, &list).status, status::GOOD);
    assert_eq!(rig.target.bytes(512, 2047 * 512), data[..2047 * 512]);
}
