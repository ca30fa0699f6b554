//! A hostile initiator: well over 1,000 malformed PDUs and logins, after which a fresh
//! session still works and the target still holds the data written before.

use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

use super::client::Client;
use super::fake::{self, Portal1};
use crate::target::iscsi::pdu::{self, BHS_LEN, NO_TAG, op};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.next() % max;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends an immediate ping and reads until its answer; false when the session is gone.
fn alive(c: &mut Client) -> bool {
    let itt = c.next_itt();
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::NOP_OUT | 0x40;
    bhs[1] = 0x80;
    pdu::put32(&mut bhs, 16, itt);
    pdu::put32(&mut bhs, 20, NO_TAG);
    pdu::put32(&mut bhs, 24, c.cmdsn);
    c.send(&mut bhs, &[], &[]);
    loop {
        match c.recv() {
            None => return false,
            Some(p) if p.opcode() == op::NOP_IN && p.itt() == itt => return true,
            Some(p) => assert!(
                matches!(
                    p.opcode(),
                    op::REJECT | op::SCSI_RESPONSE | op::R2T | op::DATA_IN
                ),
                "unexpected {:#x}",
                p.opcode()
            ),
        }
    }
}

/// Sends garbage on a fresh connection, half-closes, and waits for the target to close.
fn garbage_connection(portal: &Portal1, bytes: &[u8]) {
    let mut c = Client::connect(portal.addr);
    let _ = c.send_raw(bytes);
    let _ = c.stream.shutdown(Shutdown::Write);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    // Whatever the target answers, it must end the connection.
    let _ = c.stream.read_to_end(&mut sink);
}

fn login_bhs(rng: &mut Rng) -> [u8; BHS_LEN] {
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::LOGIN | 0x40;
    bhs[1] = rng.next() as u8;
    bhs[2] = rng.next() as u8 & 1;
    bhs[3] = rng.next() as u8 & 1;
    bhs[14] = rng.next() as u8 & 1;
    bhs
}

#[test]
fn survives_a_hostile_initiator() {
    let portal = Portal1::start();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut count = 0;
    // Malformed logins and raw garbage on fresh connections.
    for i in 0..300 {
        let mut bhs = login_bhs(&mut rng);
        let data: Vec<u8> = match i % 6 {
            0 => rng.bytes(300),
            1 => b"InitiatorName=\0TargetName=x\0".to_vec(),
            2 => format!("InitiatorName={}\0AuthMethod=Bogus\0", fake::OPEN).into_bytes(),
            3 => format!(
                "InitiatorName={}\0TargetName={}\0CHAP_N=x\0CHAP_R=0x00\0",
                fake::CHAP,
                fake::TARGET
            )
            .into_bytes(),
            4 => vec![b'A'; 5000],
            _ => format!("InitiatorName={}\0SessionType=Weird\0", fake::OPEN).into_bytes(),
        };
        let mut bytes = Vec::new();
        if i % 10 == 9 {
            bytes = [&[0u8; 48][..], &rng.bytes(100)].concat();
        } else {
            pdu::encode_with_ahs(&mut bytes, &mut bhs, &[], &data, (false, false));
            if i % 7 == 3 {
                // A data segment far above MaxRecvDataSegmentLength.
                bytes[5..8].copy_from_slice(&[0x7f, 0xff, 0xff]);
            }
        }
        garbage_connection(&portal, &bytes);
        count += 1;
    }
    // Malformed PDUs inside sessions.
    let mut c = Client::connect(portal.addr);
    c.login_open();
    let good = vec![0x5au8; 4096];
    assert_eq!(c.write10(0, 0, &good, 4096, 0, 4096).status, 0);
    let mut sessions = 1;
    for i in 0..900 {
        match i % 9 {
            0 => {
                // Unknown or target-only opcodes.
                let opcode = [0x07u8, 0x0f, 0x1c, 0x21, 0x3f, 0x10][(rng.next() % 6) as usize];
                let mut bhs = [0u8; BHS_LEN];
                bhs[0] = opcode | 0x40;
                c.send(&mut bhs, &[], &rng.bytes(64));
            }
            1 => {
                // Data-Out for a task that does not exist.
                let data = rng.bytes(512);
                let data = if data.is_empty() { vec![0] } else { data };
                c.data_out(rng.next() as u32, rng.next() as u32, 0, 0, &data, true);
            }
            2 => {
                // Bad AHS on a SCSI command.
                let (_, mut bhs) = c.command_bhs(0, &[0; 6], 0x80, 0);
                let ahs = [0u8, 40, (rng.next() % 3) as u8, 0];
                c.send(&mut bhs, &ahs, &[]);
            }
            3 => {
                // Wrong DataSN / offset / TTT for a solicited transfer.
                let mut cdb = [0u8; 10];
                cdb[0] = 0x2a;
                cdb[8] = 16;
                let (itt, mut bhs) = c.command_bhs(0, &cdb, 0xa0, 8192);
                c.send(&mut bhs, &[], &[]);
                let r2t = c.recv().unwrap();
                assert_eq!(r2t.opcode(), op::R2T);
                let (ttt, datasn, offset) = match rng.next() % 3 {
                    0 => (r2t.field(20), 5, 0),
                    1 => (r2t.field(20), 0, 512),
                    _ => (r2t.field(20) ^ 1, 0, 0),
                };
                c.data_out(itt, ttt, datasn, offset, &[1; 512], false);
            }
            4 => {
                // Immediate data beyond the expected length.
                let mut cdb = [0u8; 10];
                cdb[0] = 0x2a;
                cdb[8] = 1;
                let (_, mut bhs) = c.command_bhs(0, &cdb, 0xa0, 512);
                c.send(&mut bhs, &[], &[0; 1024]);
            }
            5 => {
                // Data beyond the unsolicited burst.
                let mut cdb = [0u8; 10];
                cdb[0] = 0x2a;
                cdb[8] = 32;
                let (itt, mut bhs) = c.command_bhs(0, &cdb, 0x20, 16384);
                c.send(&mut bhs, &[], &[]);
                c.data_out(itt, NO_TAG, 0, 0, &[3; 8192], false);
                c.data_out(itt, NO_TAG, 1, 8192, &[3; 4096], true);
            }
            6 => {
                // CmdSN far outside the window: ignored.
                let saved = c.cmdsn;
                c.cmdsn = saved.wrapping_add(1000 + (rng.next() % 1000) as u32);
                let (_, mut bhs) = c.command_bhs(0, &[0; 6], 0x80, 0);
                c.send(&mut bhs, &[], &[]);
                c.cmdsn = saved;
            }
            7 => {
                // Bidirectional and huge transfers.
                let (_, mut bhs) = c.command_bhs(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0xe0, 512);
                c.send(&mut bhs, &[], &[]);
                let (_, mut bhs) =
                    c.command_bhs(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0xc0, u32::MAX);
                c.send(&mut bhs, &[], &[]);
            }
            _ => {
                // Oversized segment: Reject and close; then log in again.
                let mut bhs = [0u8; BHS_LEN];
                bhs[0] = op::NOP_OUT | 0x40;
                bhs[5..8].copy_from_slice(&[0x01, 0x00, 0x00]);
                let _ = c.send_raw(&bhs);
                let reply = c.recv();
                assert!(reply.is_none() || reply.unwrap().opcode() == op::REJECT);
                assert!(c.recv().is_none());
                c = Client::connect(portal.addr);
                c.isid[5] = (sessions % 250) as u8;
                c.login_open();
                sessions += 1;
                count += 1;
                continue;
            }
        }
        count += 1;
        assert!(alive(&mut c), "session died at step {i}");
    }
    assert!(count >= 1000);
    // Data digest errors on a digest session.
    let mut d = Client::connect(portal.addr);
    d.isid[5] = 0xfe;
    d.login(
        fake::OPEN,
        None,
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
    )
    .unwrap();
    for _ in 0..20 {
        let itt = d.next_itt();
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::NOP_OUT | 0x40;
        bhs[1] = 0x80;
        pdu::put32(&mut bhs, 16, itt);
        pdu::put32(&mut bhs, 20, NO_TAG);
        let mut bytes = Vec::new();
        pdu::encode_with_ahs(&mut bytes, &mut bhs, &[], &[9; 64], (true, true));
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        d.send_raw(&bytes).unwrap();
        let reply = d.recv().unwrap();
        assert_eq!((reply.opcode(), reply.bhs[2]), (op::REJECT, 0x02));
        assert!(alive(&mut d));
    }
    // A new session still works and the data is intact.
    let mut fresh = Client::connect(portal.addr);
    fresh.isid[5] = 0xff;
    fresh.login_open();
    assert_eq!(fresh.read10(0, 0, 8).data, good);
}
