//! Non-medium commands: sense layout, dispatch errors, unit attentions, INQUIRY and VPD,
//! capacity, mode pages, REPORT SUPPORTED OPERATION CODES, REPORT TARGET PORT GROUPS,
//! REPORT LUNS.

use super::super::sense::{INVALID_FIELD_IN_CDB, MISCOMPARE_DURING_VERIFY, Sense};
use super::super::test_support::*;
use super::super::unit::encode_lun;
use super::super::{Nexus, Response, lun_not_present, report_luns, status};

#[test]
fn fixed_sense_layout() {
    let mut out = Vec::new();
    MISCOMPARE_DURING_VERIFY
        .with_information(0x1234)
        .write_fixed(&mut out);
    assert_eq!(out.len(), 18);
    assert_eq!(out[0], 0xF0);
    assert_eq!(out[2], 0x0E);
    assert_eq!(&out[3..7], &[0, 0, 0x12, 0x34]);
    assert_eq!(out[7], 10);
    assert_eq!((out[12], out[13]), (0x1D, 0x00));
    out.clear();
    Sense::bad_cdb_field(3).write_fixed(&mut out);
    assert_eq!(out[0], 0x70);
    assert_eq!((out[2], out[12]), (0x05, 0x24));
    assert_eq!(&out[15..18], &[0xC0, 0, 3]);
    out.clear();
    INVALID_FIELD_IN_CDB.write_fixed(&mut out);
    assert_eq!(out[15], 0);
}

#[test]
fn unsupported_opcode_is_invalid_command_operation_code() {
    let rig = Rig::new();
    for opcode in [0x01u8, 0x04, 0x3B, 0x48, 0x7F, 0xC0, 0xFF] {
        let response = rig.run(&[opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            sense_of(&response),
            (0x05, 0x20, 0x00),
            "opcode {opcode:#x}"
        );
    }
    assert_eq!(sense_of(&rig.run(&[], &[])), (0x05, 0x24, 0x00));
}

#[test]
fn unsupported_service_action_is_invalid_field() {
    let rig = Rig::new();
    let response = rig.run(&cdb16(0x9E, 0x11, 0, 32), &[]);
    assert_eq!(sense_of(&response), (0x05, 0x24, 0x00));
    let response = rig.run(&[0xA3, 0x05, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(sense_of(&response), (0x05, 0x24, 0x00));
}

#[test]
fn short_cdb_is_invalid_field() {
    let rig = Rig::new();
    assert_eq!(
        sense_of(&rig.run(&[0x28, 0, 0, 0], &[])),
        (0x05, 0x24, 0x00)
    );
    assert_eq!(
        sense_of(&rig.run(&[0x88, 0, 0, 0, 0, 0, 0, 0], &[])),
        (0x05, 0x24, 0x00)
    );
    assert_eq!(sense_of(&rig.run(&[0x12, 0, 0], &[])), (0x05, 0x24, 0x00));
}

#[test]
fn unit_attention_rules() {
    let rig = Rig::new();
    let first = nexus(1);
    let second = nexus(2);
    // A newcomer has nothing pending: its first command runs.
    assert_eq!(rig.run_as(&first, &[0; 6], &[]).status, status::GOOD);
    assert_eq!(rig.run_as(&second, &[0; 6], &[]).status, status::GOOD);
    // The same initiator port through another target port is another I_T nexus.
    let first_other_path = Nexus {
        relative_port: 2,
        ..first.clone()
    };
    assert_eq!(
        rig.run_as(&first_other_path, &[0; 6], &[]).status,
        status::GOOD
    );
    // A LUN reset raises BUS DEVICE RESET on every nexus, the asking one included.
    rig.unit.lun_reset(&first);
    for who in [&first, &first_other_path, &second] {
        assert_eq!(sense_of(&rig.run_as(who, &[0; 6], &[])), (0x06, 0x29, 0x03));
        assert_eq!(rig.run_as(who, &[0; 6], &[]).status, status::GOOD);
    }
    rig.unit.nexus_lost(&first_other_path);
    // ALUA changes reach every known nexus.
    rig.registry.alua_changed();
    assert_eq!(
        sense_of(&rig.run_as(&first, &[0; 6], &[])),
        (0x06, 0x2A, 0x06)
    );
    assert_eq!(
        sense_of(&rig.run_as(&second, &[0; 6], &[])),
        (0x06, 0x2A, 0x06)
    );
    assert_eq!(rig.run_as(&second, &[0; 6], &[]).status, status::GOOD);
    // A lost nexus forgets what was pending for it.
    rig.registry.alua_changed();
    rig.unit.nexus_lost(&second);
    assert_eq!(rig.run_as(&second, &[0; 6], &[]).status, status::GOOD);
    // INQUIRY neither sees nor clears a pending attention; REQUEST SENSE reports and
    // clears it.
    rig.registry.alua_changed();
    let inquiry = rig.run_as(&first, &[0x12, 0, 0, 0, 96, 0], &[]);
    assert_eq!(inquiry.status, status::GOOD);
    let sense = rig.run_as(&first, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!(sense.status, status::GOOD);
    assert_eq!(
        (sense.data_in[2], sense.data_in[12], sense.data_in[13]),
        (6, 0x2A, 0x06)
    );
    let sense = rig.run_as(&first, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!((sense.data_in[2], sense.data_in[12]), (0, 0));
    // REQUEST SENSE with DESC set is refused.
    assert_eq!(
        sense_of(&rig.run(&[0x03, 1, 0, 0, 18, 0], &[])),
        (0x05, 0x24, 0x00)
    );
}

#[test]
fn standard_inquiry_layout() {
    let rig = Rig::new();
    let response = rig.run(&[0x12, 0, 0, 0, 255, 0], &[]);
    let data = &response.data_in;
    assert_eq!(data.len(), 96);
    assert_eq!(data[0], 0);
    assert_eq!(data[2], 0x06);
    assert_eq!(data[3] & 0x0F, 2);
    assert_eq!(data[3] & 0x10, 0x10);
    assert_eq!(usize::from(data[4]) + 5, data.len());
    assert_eq!((data[5] >> 4) & 3, 1, "TPGS implicit");
    assert_eq!(data[5] & 0x08, 0x08, "3PC");
    assert_eq!(data[7] & 0x02, 0x02, "CmdQue");
    assert_eq!(&data[8..16], b"TROIKA  ");
    // Allocation length honoured, including 0.
    assert_eq!(rig.run(&[0x12, 0, 0, 0, 36, 0], &[]).data_in.len(), 36);
    assert_eq!(rig.run(&[0x12, 0, 0, 0, 0, 0], &[]).data_in.len(), 0);
    assert_eq!(rig.run(&[0x12, 0, 0, 0, 5, 0], &[]).data_in.len(), 5);
    // EVPD=0 with a page code, CmdDt, unknown VPD page.
    assert_eq!(
        sense_of(&rig.run(&[0x12, 0, 0x80, 0, 96, 0], &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&[0x12, 2, 0, 0, 96, 0], &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&[0x12, 1, 0x99, 0, 96, 0], &[])),
        (5, 0x24, 0)
    );
}

fn vpd(rig: &Rig, page: u8) -> Vec<u8> {
    let response = rig.run(&[0x12, 1, page, 0x10, 0, 0], &[]);
    assert_eq!(response.status, status::GOOD, "page {page:#x}");
    let data = response.data_in;
    assert_eq!(data[1], page);
    assert_eq!(
        usize::from(u16::from_be_bytes([data[2], data[3]])) + 4,
        data.len()
    );
    data
}

#[test]
fn vpd_pages() {
    let rig = Rig::new();
    let list = vpd(&rig, 0x00);
    assert_eq!(
        &list[4..],
        &[0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2]
    );
    for page in &list[4..] {
        vpd(&rig, *page);
    }
    assert_eq!(&vpd(&rig, 0x80)[4..], b"SERIAL0007");
    let limits = vpd(&rig, 0xB0);
    assert_eq!(limits.len(), 64);
    assert_eq!(limits[4] & 1, 0, "WSNZ");
    assert_eq!(limits[5], 64, "MAXIMUM COMPARE AND WRITE LENGTH");
    let max_unmap = u32::from_be_bytes(limits[20..24].try_into().unwrap());
    assert!(
        max_unmap > 0 && max_unmap <= 1 << 20,
        "MAXIMUM UNMAP LBA COUNT"
    );
    let max_write_same = u64::from_be_bytes(limits[36..44].try_into().unwrap());
    assert_eq!(max_write_same, 1 << 15, "MAXIMUM WRITE SAME LENGTH");
    assert_eq!(u16::from_be_bytes([limits[6], limits[7]]), 8);
    let provisioning = vpd(&rig, 0xB2);
    assert_eq!(provisioning[5] & 0xE0, 0xE0, "LBPU LBPWS LBPWS10");
    assert_eq!((provisioning[5] >> 2) & 7, 1, "LBPRZ");
    assert_eq!(provisioning[6] & 7, 2, "thin");
    assert_eq!(
        u16::from_be_bytes([vpd(&rig, 0xB1)[4], vpd(&rig, 0xB1)[5]]),
        1
    );
}

#[test]
fn device_identification_designators() {
    let rig = Rig::new();
    let page = vpd(&rig, 0x83);
    let mut at = 4;
    let mut seen = Vec::new();
    while at < page.len() {
        let length = usize::from(page[at + 3]);
        let designator = &page[at + 4..at + 4 + length];
        seen.push((
            page[at] & 0x0F,
            (page[at + 1] >> 4) & 3,
            page[at + 1] & 0x0F,
        ));
        match page[at + 1] & 0x0F {
            3 => assert_eq!(designator, naa(7)),
            4 | 5 => assert_eq!(designator, &[0, 0, 0, 1]),
            8 => {
                assert_eq!(length % 4, 0);
                assert!(designator.contains(&0));
                assert!(designator.starts_with(b"iqn.2025-01.io.troika:test"));
            }
            other => panic!("unexpected designator type {other}"),
        }
        at += 4 + length;
    }
    assert_eq!(at, page.len());
    assert_eq!(
        seen,
        vec![(1, 0, 3), (1, 1, 4), (1, 1, 5), (3, 1, 8), (3, 2, 8)]
    );
}

#[test]
fn third_party_copy_page_lists_commands() {
    let rig = Rig::new();
    let page = vpd(&rig, 0x8F);
    let mut at = 4;
    let mut kinds = Vec::new();
    while at < page.len() {
        let kind = u16::from_be_bytes([page[at], page[at + 1]]);
        let length = usize::from(u16::from_be_bytes([page[at + 2], page[at + 3]]));
        assert_eq!((length + 4) % 4, 0);
        if kind == 1 {
            assert_eq!(&page[at + 5..at + 12], &[0x83, 1, 0, 0x84, 2, 0, 3]);
        }
        kinds.push(kind);
        at += 4 + length;
    }
    assert_eq!(at, page.len());
    assert_eq!(kinds, vec![0x0001, 0x0008, 0x0004, 0x000C, 0x8001]);
}

#[test]
fn read_capacity() {
    let rig = Rig::new();
    let ten = rig.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(ten.data_in, [0, 0, 0x07, 0xFF, 0, 0, 2, 0]);
    assert_eq!(
        sense_of(&rig.run(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[])),
        (5, 0x24, 0)
    );
    let sixteen = rig.run(&cdb16(0x9E, 0x10, 0, 32), &[]);
    assert_eq!(sixteen.data_in.len(), 32);
    assert_eq!(
        &sixteen.data_in[..12],
        &[0, 0, 0, 0, 0, 0, 0x07, 0xFF, 0, 0, 2, 0]
    );
    assert_eq!(sixteen.data_in[13], 3);
    assert_eq!(sixteen.data_in[14] & 0xC0, 0xC0);
    assert_eq!(rig.run(&cdb16(0x9E, 0x10, 0, 12), &[]).data_in.len(), 12);
}

#[test]
fn mode_sense_and_select() {
    let rig = Rig::new();
    let all = rig.run(&[0x1A, 0, 0x3F, 0, 255, 0], &[]);
    assert_eq!(all.status, status::GOOD);
    let data = &all.data_in;
    assert_eq!(usize::from(data[0]) + 1, data.len());
    assert_eq!(data[2] & 0x80, 0, "not write protected");
    assert_eq!(data[3], 8);
    assert_eq!(&data[4..8], &[0, 0, 0x08, 0]);
    assert_eq!(&data[12..14], &[0x08, 0x12]);
    assert_eq!(data[14] & 0x04, 0x04, "WCE");
    assert_eq!(&data[32..34], &[0x0A, 0x0A]);
    assert_eq!(&data[44..46], &[0x1C, 0x0A]);
    // Saved values are not supported; unknown pages and subpages are refused.
    assert_eq!(
        sense_of(&rig.run(&[0x1A, 0, 0xFF, 0, 255, 0], &[])),
        (5, 0x39, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&[0x1A, 0, 0x19, 0, 255, 0], &[])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&rig.run(&[0x1A, 0, 0x08, 1, 255, 0], &[])),
        (5, 0x24, 0)
    );
    // MODE SENSE(10) with long LBA descriptor, and DBD.
    let ten = rig.run(&[0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0], &[]);
    assert_eq!(ten.data_in[4] & 1, 1);
    assert_eq!(ten.data_in[7], 16);
    assert_eq!(ten.data_in.len(), 8 + 16 + 20);
    let no_descriptor = rig.run(&[0x1A, 0x08, 0x0A, 0, 255, 0], &[]);
    assert_eq!(no_descriptor.data_in.len(), 4 + 12);
    // Changeable: nothing.
    let changeable = rig.run(&[0x1A, 0x08, 0x48, 0, 255, 0], &[]);
    assert!(changeable.data_in[6..].iter().all(|&byte| byte == 0));
    // MODE SELECT takes the current values back, refuses changes.
    let mut list = rig.run(&[0x1A, 0, 0x08, 0, 255, 0], &[]).data_in;
    list[0] = 0;
    let select = [0x15, 0x10, 0, 0, list.len() as u8, 0];
    assert_eq!(rig.run(&select, &list).status, status::GOOD);
    list[14] = 0;
    assert_eq!(sense_of(&rig.run(&select, &list)), (5, 0x26, 0));
    assert_eq!(sense_of(&rig.run(&select, &list[..3])), (5, 0x1A, 0));
    assert_eq!(rig.run(&[0x15, 0x10, 0, 0, 0, 0], &[]).status, status::GOOD);
    assert_eq!(
        sense_of(&rig.run(&[0x15, 0x11, 0, 0, 0, 0], &[])),
        (5, 0x24, 0)
    );
}

#[test]
fn read_only_target_reports_write_protect() {
    let rig = Rig::with(1 << 20, true);
    let sense = rig.run(&[0x1A, 0, 0x0A, 0, 255, 0], &[]);
    assert_eq!(sense.data_in[2] & 0x80, 0x80);
    assert_eq!(sense.data_in[12 + 4] & 0x08, 0x08, "SWP");
}

#[test]
fn report_supported_opcodes() {
    let rig = Rig::new();
    let all = rig.run(&[0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    assert_eq!(all.status, status::GOOD);
    let data = &all.data_in;
    let length = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    assert_eq!(length + 4, data.len());
    assert_eq!(length % 8, 0);
    assert!(data[4..].chunks(8).any(|d| d[0] == 0x89 && d[7] == 16));
    let with_timeouts = rig.run(&[0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
    assert_eq!((with_timeouts.data_in.len() - 4) % 20, 0);
    // One command: READ(10) usage data.
    let one = rig.run(&[0xA3, 0x0C, 1, 0x28, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(one.data_in[1] & 7, 3);
    assert_eq!(&one.data_in[2..4], &[0, 10]);
    assert_eq!(one.data_in[4], 0x28);
    // Unsupported opcode: SUPPORT = 1; opcode with service actions under option 1: error.
    let missing = rig.run(&[0xA3, 0x0C, 1, 0xC5, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(missing.data_in, [0, 1, 0, 0]);
    assert_eq!(
        sense_of(&rig.run(&[0xA3, 0x0C, 1, 0x9E, 0, 0, 0, 0, 1, 0, 0, 0], &[])).1,
        0x24
    );
    let with_sa = rig.run(&[0xA3, 0x0C, 2, 0x9E, 0, 0x10, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(with_sa.data_in[1] & 7, 3);
    assert_eq!(
        sense_of(&rig.run(&[0xA3, 0x0C, 2, 0x28, 0, 0, 0, 0, 1, 0, 0, 0], &[])).1,
        0x24
    );
    assert_eq!(
        sense_of(&rig.run(&[0xA3, 0x0C, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[])).1,
        0x24
    );
    // Usage data of every listed command starts with its opcode and matches its length.
    for descriptor in data[4..].chunks(8) {
        let cdb = [
            0xA3,
            0x0C,
            3,
            descriptor[0],
            descriptor[2],
            descriptor[3],
            0,
            0,
            1,
            0,
            0,
            0,
        ];
        let one = rig.run(&cdb, &[]);
        assert_eq!(one.data_in[1] & 7, 3);
        assert_eq!(one.data_in[4], descriptor[0]);
        assert_eq!(&one.data_in[2..4], &descriptor[6..8]);
    }
}

#[test]
fn report_target_port_groups() {
    let rig = Rig::new();
    let response = rig.run(&[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    let data = &response.data_in;
    assert_eq!(u32::from_be_bytes([data[0], data[1], data[2], data[3]]), 24);
    assert_eq!(&data[4..16], &[0x00, 0xCF, 0, 1, 0, 2, 0, 1, 0, 0, 0, 1]);
    assert_eq!(&data[16..20], &[0x01, 0xCF, 0, 2]);
    let extended = rig.run(&[0xA3, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(extended.data_in[4], 0x10);
    assert_eq!(extended.data_in.len(), 32);
    assert_eq!(
        rig.run(&[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0], &[])
            .data_in
            .len(),
        4
    );
}

#[test]
fn report_luns_encoding() {
    assert_eq!(encode_lun(0), [0; 8]);
    assert_eq!(encode_lun(255), [0, 255, 0, 0, 0, 0, 0, 0]);
    assert_eq!(encode_lun(256), [0x41, 0x00, 0, 0, 0, 0, 0, 0]);
    assert_eq!(encode_lun(16383), [0x7F, 0xFF, 0, 0, 0, 0, 0, 0]);
    let mut response = Response::default();
    let cdb = [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    report_luns(&[0, 1, 300], &cdb, &mut response);
    assert_eq!(response.status, status::GOOD);
    assert_eq!(&response.data_in[..8], &[0, 0, 0, 24, 0, 0, 0, 0]);
    assert_eq!(&response.data_in[16..18], &[0, 1]);
    assert_eq!(&response.data_in[24..26], &[0x41, 0x2C]);
    report_luns(
        &[0, 1],
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0],
        &mut response,
    );
    assert_eq!(sense_of(&response), (5, 0x24, 0));
    report_luns(
        &[0, 1],
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0],
        &mut response,
    );
    assert_eq!(response.data_in.len(), 16);
    report_luns(
        &[0],
        &[0xA0, 0, 0x10, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &mut response,
    );
    assert_eq!(sense_of(&response), (5, 0x24, 0));
    report_luns(&[0], &[0xA0, 0], &mut response);
    assert_eq!(sense_of(&response), (5, 0x24, 0));
}

#[test]
fn absent_lun() {
    let mut response = Response::default();
    lun_not_present(&[0x12, 0, 0, 0, 96, 0], &mut response);
    assert_eq!(response.status, status::GOOD);
    assert_eq!(response.data_in[0], 0x7F);
    lun_not_present(&[0x03, 0, 0, 0, 18, 0], &mut response);
    assert_eq!((response.data_in[2], response.data_in[12]), (5, 0x25));
    lun_not_present(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &mut response);
    assert_eq!(sense_of(&response), (5, 0x25, 0));
    lun_not_present(&[], &mut response);
    assert_eq!(sense_of(&response), (5, 0x25, 0));
}

#[test]
fn registry_shares_and_forgets() {
    let rig = Rig::new();
    let again = rig.registry.shared(7).unwrap();
    assert!(std::sync::Arc::ptr_eq(&again, &rig.unit.shared));
    rig.registry.forget(7);
    assert!(!std::sync::Arc::ptr_eq(
        &rig.registry.shared(7).unwrap(),
        &rig.unit.shared
    ));
}
