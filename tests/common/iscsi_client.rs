//! A small iSCSI initiator for tests: login (no authentication, CHAP, mutual CHAP), SCSI
//! commands with Data-In or immediate Data-Out, Text SendTargets, and raw PDUs for hostile
//! input. Sequential: one command in flight. Not a library: it panics on anything a test
//! did not expect, except where a method returns the target's answer.
//!
//! Included with `#[path = "common/iscsi_client.rs"] mod iscsi_client;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use md5::{Digest, Md5};

pub const LOGIN_REQUEST: u8 = 0x03;
pub const TEXT_REQUEST: u8 = 0x04;
pub const SCSI_COMMAND: u8 = 0x01;
pub const LOGIN_RESPONSE: u8 = 0x23;
pub const SCSI_RESPONSE: u8 = 0x21;
pub const DATA_IN: u8 = 0x25;
pub const TEXT_RESPONSE: u8 = 0x24;
pub const REJECT: u8 = 0x3f;

/// One PDU as read off the wire.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub header: [u8; 48],
    pub data: Vec<u8>,
}

impl Pdu {
    pub fn opcode(&self) -> u8 {
        self.header[0] & 0x3f
    }
    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.header[at..at + 4].try_into().unwrap())
    }
}

/// What a SCSI command came back with.
#[derive(Clone, Debug, Default)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    /// Fixed-format sense data (without the 2-byte length).
    pub sense: Vec<u8>,
}

impl ScsiResult {
    /// (sense key, ASC, ASCQ) of a CHECK CONDITION.
    pub fn sense_code(&self) -> (u8, u8, u8) {
        if self.sense.len() < 14 {
            return (0, 0, 0);
        }
        (self.sense[2] & 0x0f, self.sense[12], self.sense[13])
    }
}

/// How a login authenticates.
#[derive(Clone, Debug)]
pub enum Auth<'a> {
    None,
    Chap {
        user: &'a str,
        secret: &'a str,
    },
    Mutual {
        user: &'a str,
        secret: &'a str,
        target_user: &'a str,
        target_secret: &'a str,
    },
    /// Mutual CHAP sending `challenge` as the initiator's challenge (for tests of the
    /// target's bounds on it).
    MutualWith {
        user: &'a str,
        secret: &'a str,
        target_user: &'a str,
        target_secret: &'a str,
        challenge: &'a [u8],
    },
}

pub struct Session {
    pub stream: TcpStream,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub itt: u32,
    pub isid: [u8; 6],
    pub tsih: u16,
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the portal");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn pad4(length: usize) -> usize {
    (length + 3) & !3
}

/// Writes one PDU (no digests).
pub fn send_pdu(stream: &mut TcpStream, header: &[u8; 48], data: &[u8]) -> std::io::Result<()> {
    let mut header = *header;
    let length = data.len() as u32;
    header[5..8].copy_from_slice(&length.to_be_bytes()[1..]);
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(data);
    bytes.resize(48 + pad4(data.len()), 0);
    stream.write_all(&bytes)
}

/// Reads one PDU (no digests); `None` when the target closed the connection.
pub fn read_pdu(stream: &mut TcpStream) -> Option<Pdu> {
    let mut header = [0u8; 48];
    stream.read_exact(&mut header).ok()?;
    let ahs = usize::from(header[4]) * 4;
    let length = u32::from_be_bytes([0, header[5], header[6], header[7]]) as usize;
    let mut rest = vec![0u8; ahs + pad4(length)];
    stream.read_exact(&mut rest).ok()?;
    Some(Pdu {
        header,
        data: rest[ahs..ahs + length].to_vec(),
    })
}

/// `key=value\0...` text.
pub fn text_keys(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        out.extend_from_slice(format!("{key}={value}").as_bytes());
        out.push(0);
    }
    out
}

/// The keys of a text or login answer.
pub fn parse_keys(data: &[u8]) -> Vec<(String, String)> {
    data.split(|b| *b == 0)
        .filter(|item| !item.is_empty())
        .filter_map(|item| {
            let text = String::from_utf8_lossy(item);
            text.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn key<'a>(keys: &'a [(String, String)], name: &str) -> Option<&'a str> {
    keys.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn hex_to_bytes(text: &str) -> Vec<u8> {
    let digits = text.trim_start_matches("0x").trim_start_matches("0X");
    (0..digits.len() / 2)
        .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn bytes_to_hex(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// CHAP_R for identifier `id`, `secret` and `challenge`: MD5(id || secret || challenge).
pub fn chap_response(id: u8, secret: &str, challenge: &[u8]) -> Vec<u8> {
    let mut hasher = Md5::new();
    hasher.update([id]);
    hasher.update(secret.as_bytes());
    hasher.update(challenge);
    hasher.finalize().to_vec()
}

/// Why a login ended without a session: the login status class and detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginRefused {
    pub class: u8,
    pub detail: u8,
}

impl Session {
    fn login_header(&self, csg: u8, nsg: u8, transit: bool) -> [u8; 48] {
        let mut h = [0u8; 48];
        h[0] = LOGIN_REQUEST | 0x40;
        h[1] = (if transit { 0x80 } else { 0 }) | (csg << 2) | nsg;
        h[8..14].copy_from_slice(&self.isid);
        h[14..16].copy_from_slice(&self.tsih.to_be_bytes());
        h[16..20].copy_from_slice(&self.itt.to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        h
    }

    fn login_step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> Result<(Pdu, Vec<(String, String)>), LoginRefused> {
        let header = self.login_header(csg, nsg, transit);
        send_pdu(&mut self.stream, &header, &text_keys(keys)).expect("send login");
        let answer = read_pdu(&mut self.stream).ok_or(LoginRefused {
            class: 0xff,
            detail: 0xff,
        })?;
        assert_eq!(
            answer.opcode(),
            LOGIN_RESPONSE,
            "answer to a login: {answer:?}"
        );
        let (class, detail) = (answer.header[36], answer.header[37]);
        if class != 0 {
            return Err(LoginRefused { class, detail });
        }
        self.exp_stat_sn = answer.u32_at(24).wrapping_add(1);
        self.tsih = u16::from_be_bytes([answer.header[14], answer.header[15]]);
        let keys = parse_keys(&answer.data);
        Ok((answer, keys))
    }

    /// Logs `initiator` in to `target` (a normal session; `None` target: discovery).
    pub fn login(
        port: u16,
        initiator: &str,
        target: Option<&str>,
        auth: Auth,
    ) -> Result<Session, LoginRefused> {
        let mut session = Session {
            stream: connect(port),
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
            isid: [0x80, 0x00, 0x00, 0x12, 0x34, 0x56],
            tsih: 0,
        };
        let mut first: Vec<(&str, &str)> = vec![("InitiatorName", initiator)];
        match target {
            Some(name) => {
                first.push(("TargetName", name));
                first.push(("SessionType", "Normal"));
            }
            None => first.push(("SessionType", "Discovery")),
        }
        match auth {
            Auth::None => {
                first.push(("AuthMethod", "None"));
                session.login_step(0, 1, true, &first)?;
            }
            Auth::Chap { user, secret } => session.chap(&first, user, secret, None)?,
            Auth::Mutual {
                user,
                secret,
                target_user,
                target_secret,
            } => {
                let mutual = (target_user, target_secret, &[0x5a; 16][..]);
                session.chap(&first, user, secret, Some(mutual))?
            }
            Auth::MutualWith {
                user,
                secret,
                target_user,
                target_secret,
                challenge,
            } => {
                let mutual = (target_user, target_secret, challenge);
                session.chap(&first, user, secret, Some(mutual))?
            }
        }
        let operational = [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
        ];
        let ops: &[(&str, &str)] = if target.is_some() {
            &operational
        } else {
            &operational[..2]
        };
        let (answer, _) = session.login_step(1, 3, true, ops)?;
        assert!(
            answer.header[1] & 0x80 != 0,
            "login did not transit to full feature"
        );
        Ok(session)
    }

    fn chap(
        &mut self,
        first: &[(&str, &str)],
        user: &str,
        secret: &str,
        mutual: Option<(&str, &str, &[u8])>,
    ) -> Result<(), LoginRefused> {
        let mut keys = first.to_vec();
        keys.push(("AuthMethod", "CHAP,None"));
        let (_, answer) = self.login_step(0, 1, false, &keys)?;
        assert_eq!(key(&answer, "AuthMethod"), Some("CHAP"), "{answer:?}");
        let (_, challenge) = self.login_step(0, 1, false, &[("CHAP_A", "5")])?;
        let id: u8 = key(&challenge, "CHAP_I").expect("CHAP_I").parse().unwrap();
        let c = hex_to_bytes(key(&challenge, "CHAP_C").expect("CHAP_C"));
        let response = bytes_to_hex(&chap_response(id, secret, &c));
        let my_challenge = mutual.map_or(&[][..], |(_, _, challenge)| challenge);
        let my_challenge_hex = bytes_to_hex(my_challenge);
        let mut answer_keys = vec![("CHAP_N", user), ("CHAP_R", response.as_str())];
        if mutual.is_some() {
            answer_keys.push(("CHAP_I", "77"));
            answer_keys.push(("CHAP_C", my_challenge_hex.as_str()));
        }
        let (_, reply) = self.login_step(0, 1, true, &answer_keys)?;
        if let Some((target_user, target_secret, _)) = mutual {
            assert_eq!(key(&reply, "CHAP_N"), Some(target_user), "{reply:?}");
            let expected = chap_response(77, target_secret, my_challenge);
            let got = hex_to_bytes(key(&reply, "CHAP_R").expect("target CHAP_R"));
            assert_eq!(got, expected, "the target's mutual CHAP answer is wrong");
        }
        Ok(())
    }

    /// Runs one SCSI command on `lun`; `data_out` is sent as immediate data (keep it at or
    /// under FirstBurstLength); `expected_in` is the Data-In length allowed.
    pub fn command(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        expected_in: u32,
    ) -> ScsiResult {
        self.try_command(lun, cdb, data_out, expected_in)
            .expect("the target closed the connection")
    }

    /// [`Session::command`], with `Err` when the target goes away (killed, power cut)
    /// instead of a panic.
    pub fn try_command(
        &mut self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        expected_in: u32,
    ) -> std::io::Result<ScsiResult> {
        let mut h = [0u8; 48];
        h[0] = SCSI_COMMAND;
        h[1] = 0x80 | 0x01; // F, simple task attribute
        if expected_in > 0 {
            h[1] |= 0x40;
        }
        if !data_out.is_empty() {
            h[1] |= 0x20;
        }
        h[8..16].copy_from_slice(&encode_lun(lun));
        self.itt = self.itt.wrapping_add(1);
        h[16..20].copy_from_slice(&self.itt.to_be_bytes());
        let edtl = if data_out.is_empty() {
            expected_in
        } else {
            data_out.len() as u32
        };
        h[20..24].copy_from_slice(&edtl.to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        h[32..32 + cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        send_pdu(&mut self.stream, &h, data_out)?;
        let mut result = ScsiResult::default();
        loop {
            let pdu = read_pdu(&mut self.stream).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the target closed the connection",
                )
            })?;
            match pdu.opcode() {
                DATA_IN => {
                    let offset = pdu.u32_at(40) as usize;
                    if result.data.len() < offset + pdu.data.len() {
                        result.data.resize(offset + pdu.data.len(), 0);
                    }
                    result.data[offset..offset + pdu.data.len()].copy_from_slice(&pdu.data);
                    if pdu.header[1] & 0x01 != 0 {
                        result.status = pdu.header[3];
                        self.exp_stat_sn = pdu.u32_at(24).wrapping_add(1);
                        return Ok(result);
                    }
                }
                SCSI_RESPONSE => {
                    result.status = pdu.header[3];
                    self.exp_stat_sn = pdu.u32_at(24).wrapping_add(1);
                    if pdu.data.len() >= 2 {
                        let length = usize::from(u16::from_be_bytes([pdu.data[0], pdu.data[1]]));
                        result.sense = pdu.data[2..(2 + length).min(pdu.data.len())].to_vec();
                    }
                    return Ok(result);
                }
                0x20 => {} // NOP-In
                // Asynchronous message (e.g. a path's ALUA state changed during a
                // failover): informational here, the command's answer still comes.
                0x32 => {}
                other => panic!("unexpected PDU 0x{other:02x} during a command: {pdu:?}"),
            }
        }
    }

    /// SendTargets=All: the (TargetName, [TargetAddress]) pairs.
    pub fn send_targets(&mut self) -> Vec<(String, Vec<String>)> {
        let mut h = [0u8; 48];
        h[0] = TEXT_REQUEST | 0x40;
        h[1] = 0x80;
        self.itt = self.itt.wrapping_add(1);
        h[16..20].copy_from_slice(&self.itt.to_be_bytes());
        h[20..24].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        h[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        h[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        send_pdu(&mut self.stream, &h, &text_keys(&[("SendTargets", "All")])).unwrap();
        let answer = read_pdu(&mut self.stream).expect("text response");
        assert_eq!(answer.opcode(), TEXT_RESPONSE, "{answer:?}");
        self.exp_stat_sn = answer.u32_at(24).wrapping_add(1);
        let mut targets: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in parse_keys(&answer.data) {
            if k == "TargetName" {
                targets.push((v, Vec::new()));
            } else if k == "TargetAddress" {
                targets.last_mut().expect("address before name").1.push(v);
            }
        }
        targets
    }
}

/// The 8-byte LUN field: peripheral addressing below 256, flat space above.
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut out = [0u8; 8];
    if lun < 256 {
        out[1] = lun as u8;
    } else {
        out[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        out[1] = lun as u8;
    }
    out
}

pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x28;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = read10(lba, blocks);
    cdb[0] = 0x2a;
    cdb
}

/// REPORT LUNS: the LUN numbers.
pub fn report_luns(session: &mut Session) -> Vec<u64> {
    let mut cdb = [0u8; 12];
    cdb[0] = 0xa0;
    cdb[6..10].copy_from_slice(&4096u32.to_be_bytes());
    let result = session.command(0, &cdb, &[], 4096);
    assert_eq!(result.status, 0, "REPORT LUNS: {result:?}");
    let length = u32::from_be_bytes(result.data[0..4].try_into().unwrap()) as usize;
    result.data[8..8 + length]
        .chunks(8)
        .map(|entry| u64::from(entry[0] & 0x3f) << 8 | u64::from(entry[1]))
        .collect()
}

/// REPORT TARGET PORT GROUPS: (group id, asymmetric access state) per group.
pub fn report_target_port_groups(session: &mut Session, lun: u64) -> ScsiResult {
    let mut cdb = [0u8; 12];
    cdb[0] = 0xa3;
    cdb[1] = 0x0a;
    cdb[6..10].copy_from_slice(&1024u32.to_be_bytes());
    session.command(lun, &cdb, &[], 1024)
}

/// Decodes REPORT TARGET PORT GROUPS data (length header form).
pub fn port_groups(data: &[u8]) -> Vec<(u16, u8, Vec<u16>)> {
    let length = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
    let mut at = 4;
    let mut groups = Vec::new();
    while at + 8 <= (4 + length).min(data.len()) {
        let state = data[at] & 0x0f;
        let id = u16::from_be_bytes([data[at + 2], data[at + 3]]);
        let count = usize::from(data[at + 7]);
        let ports = (0..count)
            .filter_map(|i| {
                let p = at + 8 + 4 * i;
                data.get(p + 2..p + 4)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
            })
            .collect();
        groups.push((id, state, ports));
        at += 8 + 4 * count;
    }
    groups
}
