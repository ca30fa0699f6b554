//! Loopback tests: a portal on 127.0.0.1 with the fake backend, driven by a tiny
//! PDU-level initiator.

mod client;
mod fake;
mod hostile;
mod libiscsi;
mod pdu_codec;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use client::{Client, OPERATIONAL, get};
use fake::Portal1;

use super::pdu::{self, BHS_LEN, NO_TAG, op};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn login_none_report_luns_inquiry_and_logout() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    let answer = c.login(fake::OPEN, None, OPERATIONAL).unwrap();
    assert_eq!(get(&answer, "InitialR2T"), Some("No"));
    assert_eq!(get(&answer, "ImmediateData"), Some("Yes"));
    assert_eq!(get(&answer, "MaxBurstLength"), Some("16384"));
    assert_eq!(get(&answer, "FirstBurstLength"), Some("8192"));
    assert_eq!(get(&answer, "X-com.example.Foo"), Some("NotUnderstood"));
    assert_eq!(get(&answer, "MaxRecvDataSegmentLength"), Some("8192"));
    let out = c.read(0, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    assert_eq!(out.status, 0);
    assert_eq!(&out.data[..4], &16u32.to_be_bytes());
    assert_eq!(out.flags & 0x02, 0x02, "underflow");
    assert_eq!(out.residual, 256 - 24);
    let out = c.read(0, &[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!(&out.data[8..14], b"TROIKA");
    let out = c.read(0, &[0x00; 6], 0);
    assert_eq!(out.status, 0);
    // A LUN the session does not see.
    let out = c.read(7, &[0x00; 6], 0);
    assert_eq!(out.status, 2);
    assert_eq!(out.sense[12], 0x25);
    // Unsupported opcode: the sink's answer is passed through.
    let out = c.read(0, &[0xe7, 0, 0, 0, 0, 0], 0);
    assert_eq!((out.status, out.sense[2], out.sense[12]), (2, 5, 0x20));
    let reply = c.logout().unwrap();
    assert_eq!(reply.opcode(), op::LOGOUT_RESPONSE);
    assert_eq!(reply.bhs[2], 0);
    assert!(c.recv().is_none(), "connection closes after logout");
    let deadline = Instant::now() + Duration::from_secs(2);
    while portal.disks.lost.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lost = portal.disks.lost.lock().unwrap();
    assert_eq!(
        lost[0].initiator_port,
        format!("{},i,0x800000123456", fake::OPEN)
    );
    assert_eq!(lost[0].relative_port, 1);
}

#[test]
fn write_with_immediate_unsolicited_and_r2t_then_read_across_data_ins() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    c.login_open();
    let data = pattern(32768, 3);
    // 4096 immediate + 4096 unsolicited (first burst 8192), then R2Ts of 16384 and 8192.
    let out = c.write10(1, 8, &data, 4096, 4096, 4096);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.r2ts, 2);
    assert_eq!(
        &portal.disks.luns.lock().unwrap()[&1][4096..4096 + 32768],
        &data[..]
    );
    let out = c.read10(1, 8, 64);
    assert_eq!(out.status, 0);
    assert_eq!(out.data, data);
    assert_eq!(out.data_pdus, 8, "initiator MaxRecvDataSegmentLength 4096");
    // Write with InitialR2T-style (no unsolicited, no immediate): all by R2T.
    let data = pattern(20480, 9);
    let out = c.write10(0, 0, &data, 0, 0, 8192);
    assert_eq!((out.status, out.r2ts), (0, 2));
    assert_eq!(c.read10(0, 0, 40).data, data);
    // EDTL larger than the CDB asks: underflow residual on a write.
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[8] = 1;
    let (itt, mut bhs) = c.command_bhs(0, &cdb, 0xa0, 1024);
    c.send(&mut bhs, &[], &[7; 1024]);
    let out = c.finish(itt, &[], 0).unwrap();
    assert_eq!((out.status, out.flags & 0x06, out.residual), (0, 0x02, 512));
    // READ with EDTL smaller than the data: overflow, truncated.
    let out = c.read(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], 512);
    assert_eq!(
        (out.data.len(), out.flags & 0x06, out.residual),
        (512, 0x04, 512)
    );
}

#[test]
fn digests_nop_and_sendtargets() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    let ops = [
        ("HeaderDigest", "CRC32C,None"),
        ("DataDigest", "CRC32C"),
        ("MaxRecvDataSegmentLength", "4096"),
    ];
    let answer = c.login(fake::OPEN, None, &ops).unwrap();
    assert_eq!(get(&answer, "HeaderDigest"), Some("CRC32C"));
    assert_eq!(c.digests, (true, true));
    let data = pattern(4096, 1);
    // InitialR2T defaults to Yes: everything beyond immediate data comes by R2T.
    let out = c.write10(0, 100, &data, 1024, 0, 1024);
    assert_eq!((out.status, out.r2ts), (0, 1));
    assert_eq!(c.read10(0, 100, 8).data, data);
    let itt = c.next_itt();
    let reply = c.simple(op::NOP_OUT | 0x40, 0x80, itt, b"ping!").unwrap();
    assert_eq!(reply.opcode(), op::NOP_IN);
    assert_eq!((reply.itt(), reply.field(20)), (itt, NO_TAG));
    assert_eq!(reply.data, b"ping!");
    let itt = c.next_itt();
    let reply = c.simple(op::TEXT, 0x80, itt, b"SendTargets=All\0").unwrap();
    assert_eq!(reply.opcode(), op::TEXT_RESPONSE);
    let text = String::from_utf8(reply.data).unwrap();
    assert_eq!(
        text,
        format!(
            "TargetName={}\0TargetAddress={},1\0",
            fake::TARGET,
            portal.addr
        )
    );
    // A bad header digest closes the connection.
    let (_, mut bhs) = c.command_bhs(0, &[0; 6], 0x80, 0);
    let mut bytes = Vec::new();
    pdu::encode_with_ahs(&mut bytes, &mut bhs, &[], &[], (true, true));
    bytes[50] ^= 1;
    c.send_raw(&bytes).unwrap();
    assert!(c.recv().is_none());
}

#[test]
fn discovery_session_sendtargets_and_multi_pdu_text() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    let mut keys = client::text(&[
        ("InitiatorName".into(), "iqn.unknown:discoverer".into()),
        ("SessionType".into(), "Discovery".into()),
        ("AuthMethod".into(), "None".into()),
    ]);
    keys.extend_from_slice(b"ImmediateData=Yes\0");
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::LOGIN | 0x40;
    bhs[1] = 0x80 | 0x03;
    bhs[8..14].copy_from_slice(&c.isid);
    c.send(&mut bhs, &[], &keys);
    let reply = c.recv().unwrap();
    assert_eq!(u16::from_be_bytes([reply.bhs[36], reply.bhs[37]]), 0);
    assert_eq!(reply.flags() & 0x83, 0x83);
    let answer = super::keys::parse(&reply.data).unwrap();
    assert_eq!(get(&answer, "ImmediateData"), Some("Irrelevant"));
    c.exp_statsn = reply.field(24) + 1;
    // SendTargets split over two PDUs with the C bit.
    let itt = c.next_itt();
    let first = c.simple(op::TEXT | 0x40, 0x40, itt, b"SendTar").unwrap();
    assert_eq!(
        (first.opcode(), first.flags() & 0x80),
        (op::TEXT_RESPONSE, 0)
    );
    let reply = c.simple(op::TEXT | 0x40, 0x80, itt, b"gets=All\0").unwrap();
    assert!(
        String::from_utf8_lossy(&reply.data).starts_with("TargetName=iqn.2025-01.io.troika:test\0")
    );
    // SCSI commands are not allowed in discovery.
    let (_, mut bhs) = c.command_bhs(0, &[0; 6], 0x80, 0);
    c.send(&mut bhs, &[], &[]);
    assert_eq!(c.recv().unwrap().opcode(), op::REJECT);
}

#[test]
fn login_failures() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    assert_eq!(c.login("iqn.unknown:host", None, OPERATIONAL), Err(0x0202));
    let mut c = Client::connect(portal.addr);
    assert_eq!(
        c.login(fake::CHAP, Some(("alice", "wrong", None)), OPERATIONAL),
        Err(0x0201)
    );
    let mut c = Client::connect(portal.addr);
    assert_eq!(
        c.login(
            fake::CHAP,
            Some(("mallory", "alice-secret-1", None)),
            OPERATIONAL
        ),
        Err(0x0201)
    );
    // CHAP required but None offered.
    let mut c = Client::connect(portal.addr);
    assert_eq!(c.login(fake::CHAP, None, OPERATIONAL), Err(0x0201));
    // Wrong target name.
    let mut c = Client::connect(portal.addr);
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::LOGIN | 0x40;
    bhs[1] = 0x81;
    let keys =
        b"InitiatorName=iqn.1994-05.com.example:open\0TargetName=iqn.nope\0AuthMethod=None\0";
    c.send(&mut bhs, &[], keys);
    let reply = c.recv().unwrap();
    assert_eq!(u16::from_be_bytes([reply.bhs[36], reply.bhs[37]]), 0x0203);
    assert!(c.recv().is_none());
    // Missing InitiatorName.
    let mut c = Client::connect(portal.addr);
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::LOGIN | 0x40;
    bhs[1] = 0x81;
    c.send(&mut bhs, &[], b"AuthMethod=None\0");
    let reply = c.recv().unwrap();
    assert_eq!(u16::from_be_bytes([reply.bhs[36], reply.bhs[37]]), 0x0207);
}

#[test]
fn chap_one_way_and_mutual() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    c.login(
        fake::CHAP,
        Some(("alice", "alice-secret-1", None)),
        OPERATIONAL,
    )
    .unwrap();
    assert_eq!(c.read(0, &[0; 6], 0).status, 0);
    let mut c = Client::connect(portal.addr);
    let challenge = super::chap::encode_hex(&[0x5a; 16]);
    c.login(
        fake::MUTUAL,
        Some(("alice", "alice-secret-1", Some(&challenge))),
        OPERATIONAL,
    )
    .unwrap();
    assert_eq!(c.read(0, &[0; 6], 0).status, 0);
}

#[test]
fn mutual_chap_needs_the_initiators_challenge_of_16_bytes_or_more() {
    let portal = Portal1::start();
    let auth_failure = Err(0x0201);
    // One-way CHAP to a mutual host: the host would accept any target.
    let mut c = Client::connect(portal.addr);
    let one_way = c.login(
        fake::MUTUAL,
        Some(("alice", "alice-secret-1", None)),
        OPERATIONAL,
    );
    assert_eq!(one_way.map(|_| ()), auth_failure);
    for short in [1, 15] {
        let mut c = Client::connect(portal.addr);
        let challenge = super::chap::encode_hex(&vec![0x5a; short]);
        let answer = c.login(
            fake::MUTUAL,
            Some(("alice", "alice-secret-1", Some(&challenge))),
            OPERATIONAL,
        );
        assert_eq!(answer.map(|_| ()), auth_failure, "{short}-byte challenge");
    }
    // A challenge sent to a one-way host is refused as well.
    let mut c = Client::connect(portal.addr);
    let challenge = super::chap::encode_hex(&[0x5a; 16]);
    let answer = c.login(
        fake::CHAP,
        Some(("alice", "alice-secret-1", Some(&challenge))),
        OPERATIONAL,
    );
    assert_eq!(answer.map(|_| ()), auth_failure);
}

#[test]
fn session_reinstatement_closes_the_old_session() {
    let portal = Portal1::start();
    let mut old = Client::connect(portal.addr);
    old.login_open();
    let mut new = Client::connect(portal.addr);
    new.login_open();
    assert_eq!(new.read(0, &[0; 6], 0).status, 0);
    // The old one got the target's logout request (or just the close) and is gone.
    loop {
        match old.recv() {
            None => break,
            Some(pdu) => assert_eq!(pdu.opcode(), op::ASYNC),
        }
    }
    assert_eq!(portal.disks.lost.lock().unwrap().len(), 1);
    // A different ISID is a second session beside it.
    let mut other = Client::connect(portal.addr);
    other.isid[5] = 0x99;
    other.login_open();
    assert_eq!(other.read(0, &[0; 6], 0).status, 0);
    assert_eq!(new.read(0, &[0; 6], 0).status, 0);
}

#[test]
fn task_management() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    c.login_open();
    // `held`: a command whose own response may come first (it finished before the
    // request arrived, which RFC 7143 allows: a completed task is answered).
    let tmf_after = |c: &mut Client, function: u8, lun: u64, rtt: u32, held: Option<u32>| {
        let itt = c.next_itt();
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::TASK_MGMT | 0x40;
        bhs[1] = 0x80 | function;
        bhs[8..16].copy_from_slice(&(lun << 48).to_be_bytes());
        pdu::put32(&mut bhs, 16, itt);
        pdu::put32(&mut bhs, 20, rtt);
        pdu::put32(&mut bhs, 24, c.cmdsn);
        pdu::put32(&mut bhs, 32, c.cmdsn.wrapping_sub(100));
        c.send(&mut bhs, &[], &[]);
        let mut reply = c.recv().unwrap();
        if held.is_some() && reply.opcode() == op::SCSI_RESPONSE && Some(reply.itt()) == held {
            reply = c.recv().unwrap();
        }
        assert_eq!((reply.opcode(), reply.itt()), (op::TASK_MGMT_RESPONSE, itt));
        reply.bhs[2]
    };
    let tmf =
        |c: &mut Client, function: u8, lun: u64, rtt: u32| tmf_after(c, function, lun, rtt, None);
    assert_eq!(tmf(&mut c, 1, 0, 0x4242), 1, "unknown task");
    // A write waiting for its R2T data is aborted; no response for it.
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[8] = 8;
    let (itt, mut bhs) = c.command_bhs(0, &cdb, 0xa0, 4096);
    c.send(&mut bhs, &[], &[]);
    let r2t = c.recv().unwrap();
    assert_eq!(r2t.opcode(), op::R2T);
    assert_eq!(tmf(&mut c, 1, 0, itt), 0);
    // A command executing on LUN 1 is aborted by ABORT TASK SET.
    portal.disks.hold_lun1.store(true, Ordering::Release);
    let (held, mut bhs) = c.command_bhs(1, &[0; 6], 0x80, 0);
    c.send(&mut bhs, &[], &[]);
    while portal.disks.executing.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let releaser = {
        let disks = std::sync::Arc::clone(&portal.disks);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            disks.hold_lun1.store(false, Ordering::Release);
        })
    };
    assert_eq!(tmf_after(&mut c, 2, 1, 0, Some(held)), 0);
    releaser.join().unwrap();
    assert_eq!(tmf(&mut c, 5, 0, 0), 0, "LUN reset");
    assert_eq!(portal.disks.resets.load(Ordering::Acquire), 1);
    assert_eq!(tmf(&mut c, 5, 9, 0), 2, "no such LUN");
    assert_eq!(tmf(&mut c, 3, 0, 0), 5, "CLEAR ACA not supported");
    assert_eq!(tmf(&mut c, 6, 0, 0), 0, "warm reset");
    // Nothing else was sent: the next command's answer is the next PDU.
    assert_eq!(c.read(0, &[0; 6], 0).status, 0);
    assert_eq!(tmf(&mut c, 7, 0, 0), 0, "cold reset");
    assert!(c.recv().is_none(), "cold reset drops the connection");
}

#[test]
fn cmdsn_outside_the_window_is_ignored() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    c.login_open();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let saved = c.cmdsn;
    c.cmdsn = saved + 100;
    let (_, mut bhs) = c.command_bhs(0, &[0; 6], 0x80, 0);
    c.send(&mut bhs, &[], &[]);
    assert!(c.recv().is_none(), "too high: no answer");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c.cmdsn = saved;
    let out = c.read(0, &[0; 6], 0);
    assert_eq!(out.status, 0);
}

#[test]
fn closing_the_portal_drops_connections_promptly() {
    let portal = Portal1::start();
    let mut c = Client::connect(portal.addr);
    c.login_open();
    let started = Instant::now();
    portal.shutdown.store(true, Ordering::Release);
    loop {
        match c.recv() {
            None => break,
            Some(pdu) => assert_eq!(pdu.opcode(), op::ASYNC),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[test]
fn a_closing_portal_answers_no_command_that_ends_after_the_close() {
    let portal = Portal1::start();
    let addr = portal.addr;
    let mut c = Client::connect(addr);
    c.login_open();
    portal.disks.hold_lun1.store(true, Ordering::Release);
    let (_, mut bhs) = c.command_bhs(1, &[0; 6], 0x80, 0);
    c.send(&mut bhs, &[], &[]);
    while portal.disks.executing.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(2));
    }
    // The portal closes, then the held command ends (as one failing because its
    // controller went away would): its result must not go out.
    portal.shutdown.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(20));
    portal.disks.hold_lun1.store(false, Ordering::Release);
    loop {
        match c.recv() {
            None => break,
            Some(pdu) => assert_eq!(pdu.opcode(), op::ASYNC, "only a logout request"),
        }
    }
    // By the time the connection dropped, the listener was gone: a reconnect is refused
    // rather than accepted and reset.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
