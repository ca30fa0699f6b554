//! The iSCSI target of the real binary, with real PDUs: discovery lists every portal, a
//! host sees exactly its LUNs and what it writes reads back over NBD, CHAP (one-way and
//! mutual) admits only the right secrets, ALUA groups follow controller failures with unit
//! attentions, a failed controller's portal address is taken over so initiators reconnect
//! (libiscsi's `iscsi-perf -x`), and 1,000 malformed PDUs leave the target serving.

mod common;
#[path = "common/iscsi.rs"]
mod iscsi;
#[path = "common/iscsi_client.rs"]
mod iscsi_client;
#[path = "common/testdata.rs"]
mod testdata;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestNode, ci_model};
use iscsi::{api, create_host, map_volume, target_name};
use iscsi_client::{Auth, LoginRefused, Session, port_groups, read10, report_luns, write10};
use serde_json::json;

const HOST_A: &str = "iqn.2026-11.test.example:host-a";
const HOST_B: &str = "iqn.2026-11.test.example:host-b";
const STRANGER: &str = "iqn.2026-11.test.example:stranger";

fn node_with_two_hosts() -> TestNode {
    let node = TestNode::start_with_iscsi(ci_model(), 3);
    node.cli_ok(&["pool", "create", "pool1", "--size", "400M"]);
    for name in ["va", "vb", "vc"] {
        node.cli_ok(&["vol", "create", name, "--pool", "pool1", "--size", "32M"]);
    }
    let a = create_host(&node, "host-a", &[HOST_A]);
    let b = create_host(&node, "host-b", &[HOST_B]);
    map_volume(&node, a, "va", 1);
    map_volume(&node, b, "vb", 1);
    map_volume(&node, b, "vc", 2);
    node
}

fn login(node: &TestNode, port_index: usize, initiator: &str) -> Session {
    Session::login(
        node.iscsi_ports[port_index],
        initiator,
        Some(&target_name(node)),
        Auth::None,
    )
    .unwrap_or_else(|refused| panic!("login of {initiator} refused: {refused:?}"))
}

/// Sends TEST UNIT READY until no unit attention is pending.
fn clear_attentions(session: &mut Session, lun: u64) {
    for _ in 0..8 {
        if session.command(lun, &[0u8; 6], &[], 0).status == 0 {
            return;
        }
    }
    panic!("unit attentions do not clear");
}

#[test]
fn discovery_lists_every_portal_of_the_one_target() {
    let node = node_with_two_hosts();
    let mut session =
        Session::login(node.iscsi_ports[1], HOST_A, None, Auth::None).expect("discovery login");
    let targets = session.send_targets();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].0, target_name(&node));
    for (index, port) in node.iscsi_ports.iter().enumerate() {
        let expected = format!("127.0.0.1:{port},{}", index + 1);
        assert!(
            targets[0].1.contains(&expected),
            "{expected} missing: {targets:?}"
        );
    }
    if common::tools::present(&[&common::tools::ISCSI_LS]) {
        let out = Command::new("iscsi-ls")
            .args(["-i", HOST_B, "-s"])
            .arg(format!("iscsi://127.0.0.1:{}", node.iscsi_ports[0]))
            .output()
            .expect("iscsi-ls");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&target_name(&node)), "iscsi-ls: {text}");
    }
}

#[test]
fn each_host_sees_exactly_its_luns_and_data_is_one_with_nbd() {
    let node = node_with_two_hosts();
    let mut a = login(&node, 0, HOST_A);
    let mut b = login(&node, 1, HOST_B);
    assert_eq!(report_luns(&mut a), vec![1]);
    assert_eq!(report_luns(&mut b), vec![1, 2]);
    clear_attentions(&mut a, 1);
    // Host A cannot reach host B's second LUN.
    let refused = a.command(2, &read10(0, 1), &[], 512);
    assert_eq!(refused.status, 2, "{refused:?}");
    assert_eq!(refused.sense_code(), (0x05, 0x25, 0x00), "{refused:?}");
    // What A writes over iSCSI is volume va over NBD, and not vb.
    let block = vec![0xabu8; 4096];
    let written = a.command(1, &write10(8, 8), &block, 0);
    assert_eq!(written.status, 0, "{written:?}");
    let mut flush = [0u8; 10];
    flush[0] = 0x35;
    assert_eq!(a.command(1, &flush, &[], 0).status, 0);
    let check = |export: &str, pattern: &str| {
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", &format!("read -P {pattern} 4096 4096")])
            .arg(node.uri(export))
            .output()
            .expect("qemu-io")
    };
    if common::tools::present(&[&common::tools::QEMU_IO]) {
        let out = check("va", "0xab");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("Pattern verification failed"), "va: {text}");
        let out = check("vb", "0x00");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("Pattern verification failed"), "vb: {text}");
        // And the other way: NBD writes, iSCSI reads.
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0x5c 0 4096"])
            .arg(node.uri("vb"))
            .output()
            .expect("qemu-io write");
        assert!(out.status.success());
        clear_attentions(&mut b, 1);
        let read = b.command(1, &read10(0, 8), &[], 4096);
        assert_eq!(read.status, 0, "{read:?}");
        assert!(read.data.iter().all(|byte| *byte == 0x5c));
    }
    // A stranger cannot log in to the target at all.
    let refused = Session::login(
        node.iscsi_ports[0],
        STRANGER,
        Some(&target_name(&node)),
        Auth::None,
    )
    .err()
    .expect("a stranger logged in");
    assert_eq!(
        refused,
        LoginRefused {
            class: 2,
            detail: 2
        }
    );
    // Unmapping takes the LUN away from a running session.
    let host_b = api(&node, "GET", "/api/rest/hosts?name=eq:host-b", json!(null))[0]["id"]
        .as_u64()
        .unwrap();
    let volumes = api(&node, "GET", "/api/rest/volumes?name=eq:vc", json!(null));
    let vc = volumes[0]["id"].as_u64().unwrap();
    api(
        &node,
        "DELETE",
        &format!("/api/rest/hosts/{host_b}/luns/volume_id/{vc}"),
        json!(null),
    );
    assert_eq!(report_luns(&mut b), vec![1]);
}

#[test]
fn chap_admits_only_the_right_secrets_one_way_and_mutual() {
    let node = node_with_two_hosts();
    let password = node.admin_password();
    let hosts = api(&node, "GET", "/api/rest/hosts?name=eq:host-a", json!(null));
    let id = hosts[0]["id"].as_u64().unwrap();
    let set = |body: serde_json::Value| {
        let (status, answer) = node.api_json(
            "PUT",
            &format!("/api/rest/hosts/{id}"),
            Some(("admin", &password)),
            Some(&body),
        );
        assert_eq!(status, 200, "{answer}");
    };
    set(json!({
        "security_method": "CHAP",
        "security_chap_inbound_username": "host-a",
        "security_chap_inbound_secret": "inbound-secret-1",
    }));
    let target = target_name(&node);
    let port = node.iscsi_ports[2];
    let none = Session::login(port, HOST_A, Some(&target), Auth::None);
    assert!(none.is_err(), "a CHAP host logged in without CHAP");
    let wrong = Session::login(
        port,
        HOST_A,
        Some(&target),
        Auth::Chap {
            user: "host-a",
            secret: "not-the-secret",
        },
    );
    assert_eq!(
        wrong.err(),
        Some(LoginRefused {
            class: 2,
            detail: 1
        })
    );
    let mut good = Session::login(
        port,
        HOST_A,
        Some(&target),
        Auth::Chap {
            user: "host-a",
            secret: "inbound-secret-1",
        },
    )
    .expect("CHAP login");
    assert_eq!(report_luns(&mut good), vec![1]);
    set(json!({
        "security_method": "MUTUAL_CHAP",
        "security_chap_inbound_username": "host-a",
        "security_chap_inbound_secret": "inbound-secret-1",
        "security_chap_outbound_username": "array",
        "security_chap_outbound_secret": "outbound-sec-2",
    }));
    let mut mutual = Session::login(
        port,
        HOST_A,
        Some(&target),
        Auth::Mutual {
            user: "host-a",
            secret: "inbound-secret-1",
            target_user: "array",
            target_secret: "outbound-sec-2",
        },
    )
    .expect("mutual CHAP login");
    assert_eq!(report_luns(&mut mutual), vec![1]);
    // Host B (no CHAP) is unaffected.
    login(&node, 0, HOST_B);
}

#[test]
fn alua_groups_follow_a_controller_failure_with_unit_attentions() {
    let node = node_with_two_hosts();
    let mut session = login(&node, 0, HOST_A);
    clear_attentions(&mut session, 1);
    let answer = iscsi_client::report_target_port_groups(&mut session, 1);
    assert_eq!(answer.status, 0, "{answer:?}");
    let groups = port_groups(&answer.data);
    assert_eq!(
        groups,
        vec![(1, 0, vec![1]), (2, 0, vec![2]), (3, 0, vec![3])],
        "three active/optimized groups, one port each"
    );
    let password = node.admin_password();
    let (status, answer) = node.api_json(
        "POST",
        "/api/rest/controllers/2/fail?approved=true",
        Some(("admin", &password)),
        None,
    );
    assert_eq!(status, 200, "{answer}");
    // The next command on the surviving path reports the state change.
    let attention = session.command(1, &[0u8; 6], &[], 0);
    assert_eq!(attention.status, 2, "{attention:?}");
    assert_eq!(attention.sense_code(), (0x06, 0x2a, 0x06), "{attention:?}");
    clear_attentions(&mut session, 1);
    let answer = iscsi_client::report_target_port_groups(&mut session, 1);
    let groups = port_groups(&answer.data);
    let failed = groups.iter().find(|g| g.0 == 2).expect("group 2");
    assert!(
        failed.1 == 0x0e || failed.1 == 0x03,
        "group 2 reports {:#x}",
        failed.1
    );
    assert_eq!(groups.iter().find(|g| g.0 == 1).unwrap().1, 0);
}

#[test]
fn an_initiator_reconnects_to_a_failed_controllers_portal_with_no_error() {
    if !common::tools::present(&[&common::tools::ISCSI_PERF]) {
        return;
    }
    let node = node_with_two_hosts();
    let url = format!(
        "iscsi://127.0.0.1:{}/{}/1",
        node.iscsi_ports[0],
        target_name(&node)
    );
    let mut perf = Command::new("iscsi-perf")
        .args(["-i", HOST_A, "-m", "16", "-x", "20", "-t", "8"])
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start iscsi-perf");
    std::thread::sleep(Duration::from_secs(2));
    let password = node.admin_password();
    let (status, answer) = node.api_json(
        "POST",
        "/api/rest/controllers/1/fail?approved=true",
        Some(("admin", &password)),
        None,
    );
    assert_eq!(status, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = perf.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "iscsi-perf did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = perf.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        exit.success(),
        "iscsi-perf failed across the failover: {text}"
    );
    assert!(text.contains("iops average"), "{text}");
    // The address is served by a survivor now: a new session works and sees the LUN.
    let mut session = login(&node, 0, HOST_A);
    assert_eq!(report_luns(&mut session), vec![1]);
}

#[test]
fn a_thousand_malformed_pdus_leave_the_target_serving() {
    let node = node_with_two_hosts();
    let port = node.iscsi_ports[0];
    let target = target_name(&node);
    let mut good = login(&node, 1, HOST_B);
    clear_attentions(&mut good, 1);
    let mut rng = testdata::XorShift::new(0x15c5);
    let started = Instant::now();
    for round in 0..1000u32 {
        let mut stream = iscsi_client::connect(port);
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut header = [0u8; 48];
        for byte in header.iter_mut() {
            *byte = rng.next_u32() as u8;
        }
        match round % 5 {
            // A login with a lying data length and garbage keys.
            0 => header[0] = 0x43,
            // A SCSI command before login.
            1 => header[0] = 0x01,
            // An unknown opcode.
            2 => header[0] = 0x1c | (rng.next_u32() as u8 & 0x03),
            // A huge data segment length.
            3 => {
                header[0] = 0x43;
                header[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
            }
            // Random everything.
            _ => {}
        }
        let body_len = (rng.next_u32() % 300) as usize;
        let body: Vec<u8> = (0..body_len).map(|_| rng.next_u32() as u8).collect();
        let _ = stream.write_all(&header);
        let _ = stream.write_all(&body);
        let mut sink = [0u8; 512];
        let _ = std::io::Read::read(&mut stream, &mut sink);
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "hostile loop too slow"
        );
    }
    // Malformed PDUs inside a logged-in session: bad opcode, bad lengths, CmdSN far away.
    let mut victim = login(&node, 0, HOST_A);
    for round in 0..20u32 {
        let mut header = [0u8; 48];
        header[0] = if round % 2 == 0 { 0x1d } else { 0x05 };
        header[24..28].copy_from_slice(&(round * 1000).to_be_bytes());
        let _ = iscsi_client::send_pdu(&mut victim.stream, &header, &[1, 2, 3]);
    }
    // The target is up, other sessions work, new sessions work.
    let read = good.command(1, &read10(0, 8), &[], 4096);
    assert_eq!(read.status, 0, "{read:?}");
    let mut fresh =
        Session::login(port, HOST_A, Some(&target), Auth::None).expect("login after abuse");
    assert_eq!(report_luns(&mut fresh), vec![1]);
    assert!(
        !node.log_text().contains("panicked"),
        "a panic in the log:\n{}",
        node.log_text()
    );
}

/// PERSISTENT RESERVE OUT on LUN 1: `action` (0 REGISTER, 1 RESERVE), `kind` (1 Write
/// Exclusive), the reservation key and the service action key.
fn pr_out(
    session: &mut Session,
    action: u8,
    kind: u8,
    key: u64,
    new_key: u64,
) -> iscsi_client::ScsiResult {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[1] = action;
    cdb[2] = kind;
    cdb[8] = 24;
    let mut parameters = [0u8; 24];
    parameters[0..8].copy_from_slice(&key.to_be_bytes());
    parameters[8..16].copy_from_slice(&new_key.to_be_bytes());
    session.command(1, &cdb, &parameters, 0)
}

#[test]
fn persistent_reservations_survive_a_restart_and_hold_across_controllers() {
    let mut node = node_with_two_hosts();
    // Host B registers key 0xabc on controller 2 and takes a Write Exclusive reservation.
    let mut b = login(&node, 1, HOST_B);
    clear_attentions(&mut b, 1);
    assert_eq!(pr_out(&mut b, 0x00, 0, 0, 0xabc).status, 0, "REGISTER");
    assert_eq!(pr_out(&mut b, 0x01, 0x01, 0xabc, 0).status, 0, "RESERVE");
    // A second session of host B through controller 3 (another I_T nexus, unregistered)
    // may read but not write.
    let mut other = login(&node, 2, HOST_B);
    clear_attentions(&mut other, 1);
    assert_eq!(other.command(1, &read10(0, 1), &[], 512).status, 0);
    let denied = other.command(1, &write10(0, 1), &[0u8; 512], 0);
    assert_eq!(
        denied.status, 0x18,
        "write under another's reservation: {denied:?}"
    );
    drop((b, other));
    node.restart();
    let mut after = login(&node, 0, HOST_B);
    clear_attentions(&mut after, 1);
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5e;
    cdb[1] = 0x00; // READ KEYS
    cdb[8] = 64;
    let keys = after.command(1, &cdb, &[], 64);
    assert_eq!(keys.status, 0, "{keys:?}");
    let length = u32::from_be_bytes(keys.data[4..8].try_into().unwrap());
    assert_eq!(length, 8, "one key after the restart: {keys:?}");
    assert_eq!(&keys.data[8..16], &0xabcu64.to_be_bytes());
    cdb[1] = 0x01; // READ RESERVATION
    let reservation = after.command(1, &cdb, &[], 64);
    assert_eq!(reservation.status, 0);
    assert_eq!(
        u32::from_be_bytes(reservation.data[4..8].try_into().unwrap()),
        16
    );
    assert_eq!(reservation.data[21] & 0x0f, 0x01, "Write Exclusive kept");
}

/// A reservation file that does not decode (or cannot be read) is never taken for "no
/// reservations": the node refuses to start and names the file; with the file restored,
/// it starts and the reservation is there.
#[test]
fn a_damaged_reservation_file_refuses_the_start_naming_the_file() {
    let mut node = node_with_two_hosts();
    let mut b = login(&node, 0, HOST_B);
    clear_attentions(&mut b, 1);
    assert_eq!(pr_out(&mut b, 0x00, 0, 0, 0xabc).status, 0, "REGISTER");
    assert_eq!(pr_out(&mut b, 0x01, 0x01, 0xabc, 0).status, 0, "RESERVE");
    drop(b);
    node.stop();
    let dir = node.data().join("reservations");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("reservations directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pr"))
        .collect();
    assert_eq!(files.len(), 1, "one unit has saved reservations: {files:?}");
    let file = &files[0];
    let good = std::fs::read(file).unwrap();
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    std::fs::write(file, &damaged).unwrap();
    let stderr = node.refused_start("with a damaged reservation file");
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("cannot be loaded"),
        "the message names the file:\n{stderr}"
    );
    // Restored, the node starts and host B still holds its reservation.
    std::fs::write(file, &good).unwrap();
    node.restart();
    let mut after = login(&node, 0, HOST_B);
    clear_attentions(&mut after, 1);
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5e;
    cdb[1] = 0x01; // READ RESERVATION
    cdb[8] = 64;
    let reservation = after.command(1, &cdb, &[], 64);
    assert_eq!(reservation.status, 0, "{reservation:?}");
    assert_eq!(&reservation.data[8..16], &0xabcu64.to_be_bytes());
    assert_eq!(reservation.data[21] & 0x0f, 0x01, "Write Exclusive kept");
}
