//! A tiny PDU-level iSCSI initiator for the loopback tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::target::iscsi::chap;
use crate::target::iscsi::keys;
use crate::target::iscsi::pdu::{self, BHS_LEN, NO_TAG, Pdu, PduLimits, op};

pub struct Client {
    pub stream: TcpStream,
    pub cmdsn: u32,
    pub exp_statsn: u32,
    pub digests: (bool, bool),
    pub itt: u32,
    pub isid: [u8; 6],
    pub tsih: u16,
    out: Vec<u8>,
}

/// A command's outcome as the initiator sees it.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Vec<u8>,
    pub flags: u8,
    pub residual: u32,
    pub data_pdus: u32,
    pub r2ts: u32,
}

pub fn login_keys(initiator: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut keys = vec![
        ("InitiatorName".to_owned(), initiator.to_owned()),
        ("TargetName".to_owned(), super::fake::TARGET.to_owned()),
        ("SessionType".to_owned(), "Normal".to_owned()),
    ];
    keys.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    keys
}

pub fn text(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        keys::push(&mut out, k, v);
    }
    out
}

pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Operational keys the tests negotiate.
pub const OPERATIONAL: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxRecvDataSegmentLength", "4096"),
    ("MaxBurstLength", "16384"),
    ("FirstBurstLength", "8192"),
    ("X-com.example.Foo", "bar"),
];

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            cmdsn: 1,
            exp_statsn: 0,
            digests: (false, false),
            itt: 0x100,
            isid: [0x80, 0, 0, 0x12, 0x34, 0x56],
            tsih: 0,
            out: Vec::new(),
        }
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, bhs: &mut [u8; BHS_LEN], ahs: &[u8], data: &[u8]) {
        let mut out = std::mem::take(&mut self.out);
        pdu::encode_with_ahs(&mut out, bhs, ahs, data, self.digests);
        // The target may have closed on purpose; the next receive tells.
        let _ = self.stream.write_all(&out);
        self.out = out;
    }

    /// Receives one PDU; `None` when the connection closed or timed out.
    pub fn recv(&mut self) -> Option<Pdu> {
        let limits = PduLimits {
            header_digest: self.digests.0,
            data_digest: self.digests.1,
            max_data: pdu::MAX_SEGMENT,
        };
        let mut bhs = [0u8; BHS_LEN];
        self.stream.read_exact(&mut bhs).ok()?;
        let lens = pdu::lengths(&bhs, &limits).ok()?;
        let mut rest = vec![0; lens.header_rest(&limits) + lens.data_rest(&limits)];
        self.stream.read_exact(&mut rest).ok()?;
        let mut whole = bhs.to_vec();
        whole.extend_from_slice(&rest);
        let (pdu, _) = pdu::decode(&whole, &limits).expect("target sent a bad PDU");
        if matches!(
            pdu.opcode(),
            op::SCSI_RESPONSE
                | op::NOP_IN
                | op::TEXT_RESPONSE
                | op::LOGOUT_RESPONSE
                | op::TASK_MGMT_RESPONSE
                | op::REJECT
        ) || (pdu.opcode() == op::DATA_IN && pdu.flags() & 1 != 0)
        {
            self.exp_statsn = pdu.field(24).wrapping_add(1);
        }
        Some(pdu)
    }

    fn login_pdu(&mut self, flags: u8, data: &[u8]) -> Option<Pdu> {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::LOGIN | 0x40;
        bhs[1] = flags;
        bhs[8..14].copy_from_slice(&self.isid);
        bhs[14..16].copy_from_slice(&self.tsih.to_be_bytes());
        pdu::put32(&mut bhs, 16, self.itt);
        pdu::put32(&mut bhs, 24, self.cmdsn);
        pdu::put32(&mut bhs, 28, self.exp_statsn);
        let saved = self.digests;
        self.digests = (false, false);
        self.send(&mut bhs, &[], data);
        let reply = self.recv();
        self.digests = saved;
        if let Some(r) = &reply {
            self.exp_statsn = r.field(24).wrapping_add(1);
        }
        reply
    }

    /// Logs in with AuthMethod=None (or CHAP when `chap` gives user/secret and an optional
    /// mutual challenge). Returns the status class/detail and the operational answer.
    pub fn login(
        &mut self,
        initiator: &str,
        chap: Option<(&str, &str, Option<&str>)>,
        operational: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, u16> {
        let status_of = |p: &Pdu| u16::from_be_bytes([p.bhs[36], p.bhs[37]]);
        let method = if chap.is_some() { "CHAP,None" } else { "None" };
        let first = text(&login_keys(initiator, &[("AuthMethod", method)]));
        let reply = self.login_pdu(0x80 | 0x01, &first).ok_or(0xffff_u16)?;
        if status_of(&reply) != 0 {
            return Err(status_of(&reply));
        }
        let answer = keys::parse(&reply.data).unwrap();
        assert_eq!(get(&answer, "TargetPortalGroupTag"), Some("1"));
        if let Some((user, secret, mutual)) = chap {
            assert_eq!(get(&answer, "AuthMethod"), Some("CHAP"));
            assert_eq!(reply.flags() & 0x80, 0, "no transit before CHAP");
            let reply = self
                .login_pdu(0x01, &text(&[("CHAP_A".into(), "5".into())]))
                .ok_or(0xffff_u16)?;
            let answer = keys::parse(&reply.data).unwrap();
            let id: u8 = get(&answer, "CHAP_I").unwrap().parse().unwrap();
            let challenge = chap::decode_binary(get(&answer, "CHAP_C").unwrap()).unwrap();
            let response = chap::encode_hex(&chap::response(id, secret.as_bytes(), &challenge));
            let mut pairs = vec![
                ("CHAP_N".to_owned(), user.to_owned()),
                ("CHAP_R".to_owned(), response),
            ];
            let my_challenge = [0x5a; 16];
            if let Some(challenge) = mutual {
                pairs.push(("CHAP_I".into(), "77".into()));
                pairs.push(("CHAP_C".into(), challenge.to_owned()));
            }
            let reply = self
                .login_pdu(0x80 | 0x01, &text(&pairs))
                .ok_or(0xffff_u16)?;
            if status_of(&reply) != 0 {
                return Err(status_of(&reply));
            }
            assert_ne!(reply.flags() & 0x80, 0);
            if mutual.is_some() {
                let answer = keys::parse(&reply.data).unwrap();
                let want = chap::encode_hex(&chap::response(77, b"target-secret-2", &my_challenge));
                assert_eq!(get(&answer, "CHAP_N"), Some("target"));
                assert_eq!(get(&answer, "CHAP_R"), Some(want.as_str()));
            }
        } else {
            assert_eq!(get(&answer, "AuthMethod"), Some("None"));
            assert_ne!(reply.flags() & 0x80, 0);
        }
        let ops: Vec<(String, String)> = operational
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let reply = self
            .login_pdu(0x80 | (1 << 2) | 0x03, &text(&ops))
            .ok_or(0xffff_u16)?;
        if status_of(&reply) != 0 {
            return Err(status_of(&reply));
        }
        assert_eq!(reply.flags() & 0x83, 0x83, "final login response");
        self.tsih = pdu::get16(&reply.bhs, 14);
        assert_ne!(self.tsih, 0);
        let answer = keys::parse(&reply.data).unwrap();
        self.digests = (
            get(&answer, "HeaderDigest") == Some("CRC32C"),
            get(&answer, "DataDigest") == Some("CRC32C"),
        );
        Ok(answer)
    }

    pub fn login_open(&mut self) {
        self.login(super::fake::OPEN, None, OPERATIONAL).unwrap();
    }

    /// A SCSI Command header.
    pub fn command_bhs(
        &mut self,
        lun: u64,
        cdb: &[u8],
        flags: u8,
        edtl: u32,
    ) -> (u32, [u8; BHS_LEN]) {
        let itt = self.next_itt();
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::SCSI_COMMAND;
        bhs[1] = flags;
        bhs[8..16].copy_from_slice(&(lun << 48).to_be_bytes());
        pdu::put32(&mut bhs, 16, itt);
        pdu::put32(&mut bhs, 20, edtl);
        pdu::put32(&mut bhs, 24, self.cmdsn);
        pdu::put32(&mut bhs, 28, self.exp_statsn);
        bhs[32..32 + cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        self.cmdsn = self.cmdsn.wrapping_add(1);
        (itt, bhs)
    }

    pub fn data_out(
        &mut self,
        itt: u32,
        ttt: u32,
        datasn: u32,
        offset: u32,
        data: &[u8],
        last: bool,
    ) {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::DATA_OUT;
        bhs[1] = if last { 0x80 } else { 0 };
        pdu::put32(&mut bhs, 16, itt);
        pdu::put32(&mut bhs, 20, ttt);
        pdu::put32(&mut bhs, 28, self.exp_statsn);
        pdu::put32(&mut bhs, 36, datasn);
        pdu::put32(&mut bhs, 40, offset);
        self.send(&mut bhs, &[], data);
    }

    /// Collects the answer to `itt`: Data-In, R2T (answered from `write` in chunks of
    /// `chunk`), and status.
    pub fn finish(&mut self, itt: u32, write: &[u8], chunk: usize) -> Option<Outcome> {
        let mut outcome = Outcome::default();
        loop {
            let pdu = self.recv()?;
            match pdu.opcode() {
                op::DATA_IN => {
                    assert_eq!(pdu.itt(), itt);
                    assert_eq!(pdu.field(36), outcome.data_pdus, "DataSN");
                    assert_eq!(pdu.field(40) as usize, outcome.data.len(), "offset");
                    outcome.data.extend_from_slice(&pdu.data);
                    outcome.data_pdus += 1;
                    if pdu.flags() & 1 != 0 {
                        outcome.status = pdu.bhs[3];
                        outcome.flags = pdu.flags();
                        outcome.residual = pdu.field(44);
                        return Some(outcome);
                    }
                }
                op::R2T => {
                    assert_eq!(pdu.itt(), itt);
                    assert_eq!(pdu.field(36), outcome.r2ts, "R2TSN");
                    outcome.r2ts += 1;
                    let (ttt, offset, length) = (
                        pdu.field(20),
                        pdu.field(40) as usize,
                        pdu.field(44) as usize,
                    );
                    let mut sent = 0;
                    let mut datasn = 0;
                    while sent < length {
                        let n = chunk.min(length - sent);
                        let piece = write[offset + sent..offset + sent + n].to_vec();
                        self.data_out(
                            itt,
                            ttt,
                            datasn,
                            (offset + sent) as u32,
                            &piece,
                            sent + n == length,
                        );
                        sent += n;
                        datasn += 1;
                    }
                }
                op::SCSI_RESPONSE => {
                    assert_eq!(pdu.itt(), itt);
                    outcome.status = pdu.bhs[3];
                    outcome.flags = pdu.flags();
                    outcome.residual = pdu.field(44);
                    if pdu.data.len() >= 2 {
                        let n = u16::from_be_bytes([pdu.data[0], pdu.data[1]]) as usize;
                        outcome.sense = pdu.data[2..2 + n].to_vec();
                    }
                    return Some(outcome);
                }
                other => panic!("unexpected opcode {other:#x} while waiting for {itt:#x}"),
            }
        }
    }

    /// Runs a non-data or read command.
    pub fn read(&mut self, lun: u64, cdb: &[u8], edtl: u32) -> Outcome {
        let flags = 0x80 | if edtl > 0 { 0x40 } else { 0 };
        let (itt, mut bhs) = self.command_bhs(lun, cdb, flags, edtl);
        self.send(&mut bhs, &[], &[]);
        self.finish(itt, &[], 0).expect("no answer")
    }

    /// WRITE(10) of `data` at `lba` with `immediate` bytes of immediate data and
    /// `unsolicited` bytes of unsolicited Data-Out (in `chunk`-sized PDUs).
    pub fn write10(
        &mut self,
        lun: u64,
        lba: u32,
        data: &[u8],
        immediate: usize,
        unsolicited: usize,
        chunk: usize,
    ) -> Outcome {
        let blocks = (data.len() / 512) as u16;
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        let f = if unsolicited == 0 { 0x80 } else { 0 };
        let (itt, mut bhs) = self.command_bhs(lun, &cdb, f | 0x20, data.len() as u32);
        self.send(&mut bhs, &[], &data[..immediate]);
        let mut sent = 0;
        let mut datasn = 0;
        while sent < unsolicited {
            let n = chunk.min(unsolicited - sent);
            let piece = data[immediate + sent..immediate + sent + n].to_vec();
            self.data_out(
                itt,
                NO_TAG,
                datasn,
                (immediate + sent) as u32,
                &piece,
                sent + n == unsolicited,
            );
            sent += n;
            datasn += 1;
        }
        self.finish(itt, data, chunk).expect("no answer")
    }

    pub fn read10(&mut self, lun: u64, lba: u32, blocks: u16) -> Outcome {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.read(lun, &cdb, blocks as u32 * 512)
    }

    pub fn simple(&mut self, opcode: u8, flags: u8, itt: u32, data: &[u8]) -> Option<Pdu> {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = opcode;
        bhs[1] = flags;
        pdu::put32(&mut bhs, 16, itt);
        pdu::put32(&mut bhs, 20, NO_TAG);
        pdu::put32(&mut bhs, 24, self.cmdsn);
        pdu::put32(&mut bhs, 28, self.exp_statsn);
        if opcode & 0x40 == 0 {
            self.cmdsn = self.cmdsn.wrapping_add(1);
        }
        self.send(&mut bhs, &[], data);
        self.recv()
    }

    pub fn logout(&mut self) -> Option<Pdu> {
        let itt = self.next_itt();
        self.simple(op::LOGOUT | 0x40, 0x80, itt, &[])
    }
}
