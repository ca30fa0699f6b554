//! The login phase (RFC 7143 section 6): security stage (AuthMethod None or CHAP),
//! operational stage (keys), then full feature phase.
//!
//! Promises: a normal session needs InitiatorName, our TargetName and a known initiator;
//! CHAP is required when the backend says so and verified before any transition out of
//! the security stage; a host set to mutual CHAP must send its own challenge (CHAP_I,
//! CHAP_C, bounded as [`chap::answer_initiator`] says) with its answer, else the login
//! fails with 0x0201 (authentication failure); the target sets T only when the initiator asked for it and the
//! stage is complete; a failed login gets its status class/detail and then the connection
//! closes. Multi-PDU text (C bit) is assembled up to [`keys::MAX_TEXT`].

use std::net::TcpStream;
use std::sync::atomic::AtomicBool;

use super::chap::{self, Challenge};
use super::keys::{self, Answer, Params};
use super::pdu::{self, BHS_LEN, Pdu, PduLimits, op};
use super::session::Directory;
use super::wire::{self, PduReader};
use super::{Authentication, IscsiConfig};

/// Login status class/detail values.
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const INITIATOR_ERROR: u16 = 0x0200;
    pub const AUTH_FAILURE: u16 = 0x0201;
    pub const AUTHORIZATION_FAILURE: u16 = 0x0202;
    pub const NOT_FOUND: u16 = 0x0203;
    pub const UNSUPPORTED_VERSION: u16 = 0x0205;
    pub const MISSING_PARAMETER: u16 = 0x0207;
    pub const SESSION_DOES_NOT_EXIST: u16 = 0x020a;
    pub const INVALID_DURING_LOGIN: u16 = 0x020b;
    pub const OUT_OF_RESOURCES: u16 = 0x0302;
}

const SECURITY: u8 = 0;
const OPERATIONAL: u8 = 1;
const FULL_FEATURE: u8 = 3;

/// A completed login.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub params: Params,
    pub initiator: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub discovery: bool,
    /// StatSN of the next response.
    pub statsn: u32,
    /// ExpCmdSN to start the full feature phase with.
    pub exp_cmdsn: u32,
}

/// Where the CHAP exchange stands.
enum Chap {
    NotStarted,
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    Agreed,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    Challenged(Challenge),
    Done,
}

struct Login<'a> {
    dir: &'a dyn Directory,
    config: &'a IscsiConfig,
    tpgt: u16,
    params: Params,
    initiator: Option<String>,
    discovery: bool,
    auth: Option<Authentication>,
    chap: Chap,
    authenticated: bool,
    stage: u8,
    first: bool,
    isid: [u8; 6],
    itt: u32,
    statsn: u32,
    exp_cmdsn: u32,
    text: Vec<u8>,
    declared_limit: bool,
}

/// Runs the login on a fresh connection; `None` when it failed (the reply was sent).
/// `allocate_tsih` gives the new session its identifying handle.
pub fn run(
    reader: &mut PduReader,
    stream: &TcpStream,
    dir: &dyn Directory,
    config: &IscsiConfig,
    tpgt: u16,
    stop: &[&AtomicBool],
    allocate_tsih: &mut dyn FnMut() -> u16,
) -> Option<LoggedIn> {
    let mut login = Login {
        dir,
        config,
        tpgt,
        params: Params::new(config),
        initiator: None,
        discovery: false,
        auth: None,
        chap: Chap::NotStarted,
        authenticated: false,
        stage: SECURITY,
        first: true,
        isid: [0; 6],
        itt: 0,
        statsn: 0,
        exp_cmdsn: 0,
        text: Vec::new(),
        declared_limit: false,
    };
    let limits = PduLimits {
        header_digest: false,
        data_digest: false,
        max_data: 8192.max(config.max_recv_data_segment_length.min(pdu::MAX_SEGMENT)),
    };
    let mut pdu = Pdu::default();
    let mut out = Vec::new();
    loop {
        reader.read_pdu(&mut pdu, &limits, stop).ok()?;
        let (reply_bhs, data, outcome) = login.step(&pdu, allocate_tsih);
        let mut bhs = reply_bhs;
        pdu::encode(&mut out, &mut bhs, &data, (false, false));
        wire::write_all(stream, &out, stop).ok()?;
        login.statsn = login.statsn.wrapping_add(1);
        match outcome {
            Step::Continue => {}
            Step::Failed => return None,
            Step::Done(tsih) => {
                return Some(LoggedIn {
                    params: login.params,
                    initiator: login.initiator.unwrap_or_default(),
                    isid: login.isid,
                    tsih,
                    discovery: login.discovery,
                    statsn: login.statsn,
                    exp_cmdsn: login.exp_cmdsn,
                });
            }
        }
    }
}

enum Step {
    Continue,
    Failed,
    Done(u16),
}

impl Login<'_> {
    fn reply(&mut self, flags: u8, status: u16) -> [u8; BHS_LEN] {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::LOGIN_RESPONSE;
        bhs[1] = flags;
        bhs[8..14].copy_from_slice(&self.isid);
        pdu::put32(&mut bhs, 16, self.itt);
        pdu::put32(&mut bhs, 24, self.statsn);
        pdu::put32(&mut bhs, 28, self.exp_cmdsn);
        pdu::put32(
            &mut bhs,
            32,
            self.exp_cmdsn
                .wrapping_add(self.config.queue_depth.max(1) - 1),
        );
        bhs[36..38].copy_from_slice(&status.to_be_bytes());
        bhs
    }

    fn fail(&mut self, status: u16) -> ([u8; BHS_LEN], Vec<u8>, Step) {
        let flags = self.stage << 2;
        (self.reply(flags, status), Vec::new(), Step::Failed)
    }

    fn step(
        &mut self,
        req: &Pdu,
        allocate_tsih: &mut dyn FnMut() -> u16,
    ) -> ([u8; BHS_LEN], Vec<u8>, Step) {
        if self.first {
            self.isid.copy_from_slice(&req.bhs[8..14]);
            self.itt = req.itt();
            self.statsn = req.exp_statsn();
            self.exp_cmdsn = req.cmdsn();
        }
        if req.opcode() != op::LOGIN {
            return self.fail(status::INVALID_DURING_LOGIN);
        }
        self.itt = req.itt();
        // Version-max >= 0 always holds; version-min must be 0.
        if req.bhs[3] != 0 {
            return self.fail(status::UNSUPPORTED_VERSION);
        }
        if req.bhs[8..14] != self.isid {
            return self.fail(status::INITIATOR_ERROR);
        }
        if pdu::get16(&req.bhs, 14) != 0 {
            // Adding a connection to a session: MaxConnections is 1.
            return self.fail(status::SESSION_DOES_NOT_EXIST);
        }
        let flags = req.flags();
        let transit = flags & 0x80 != 0;
        let cont = flags & 0x40 != 0;
        let csg = (flags >> 2) & 3;
        let nsg = flags & 3;
        if transit && cont {
            return self.fail(status::INITIATOR_ERROR);
        }
        if csg == 2
            || csg == FULL_FEATURE
            || (csg != self.stage && !(self.stage == SECURITY && csg == OPERATIONAL))
        {
            return self.fail(status::INITIATOR_ERROR);
        }
        if csg == OPERATIONAL && self.stage == SECURITY {
            // Skipping security is allowed only when no authentication is asked for.
            self.stage = OPERATIONAL;
            if !self.first && !self.authenticated {
                return self.fail(status::AUTH_FAILURE);
            }
        }
        if self.text.len() + req.data.len() > keys::MAX_TEXT {
            return self.fail(status::OUT_OF_RESOURCES);
        }
        self.text.extend_from_slice(&req.data);
        if cont {
            // More text comes: acknowledge with an empty response.
            let bhs = self.reply(self.stage << 2, status::SUCCESS);
            return (bhs, Vec::new(), Step::Continue);
        }
        let text = std::mem::take(&mut self.text);
        let Ok(pairs) = keys::parse(&text) else {
            return self.fail(status::INITIATOR_ERROR);
        };
        let mut answer = Vec::new();
        let first = self.first;
        self.first = false;
        if first {
            if let Err(code) = self.identify(&pairs) {
                return self.fail(code);
            }
            keys::push(&mut answer, "TargetPortalGroupTag", &self.tpgt.to_string());
        }
        if let Err(code) = self.keys(&pairs, &mut answer) {
            return self.fail(code);
        }
        if self.stage == OPERATIONAL && !self.authenticated {
            if self.requires_chap() {
                return self.fail(status::AUTH_FAILURE);
            }
            self.authenticated = true;
        }
        if self.stage == OPERATIONAL {
            self.declare_limit(&mut answer);
        }
        let may_transit = transit
            && match self.stage {
                SECURITY => self.authenticated && (nsg == OPERATIONAL || nsg == FULL_FEATURE),
                _ => nsg == FULL_FEATURE,
            };
        if transit && !may_transit && self.stage == OPERATIONAL {
            return self.fail(status::INITIATOR_ERROR);
        }
        if !may_transit {
            let bhs = self.reply(self.stage << 2, status::SUCCESS);
            return (bhs, answer, Step::Continue);
        }
        if nsg == OPERATIONAL {
            let bhs = self.reply(0x80 | (self.stage << 2) | nsg, status::SUCCESS);
            self.stage = OPERATIONAL;
            return (bhs, answer, Step::Continue);
        }
        self.declare_limit(&mut answer);
        let tsih = allocate_tsih();
        let mut bhs = self.reply(0x80 | (self.stage << 2) | FULL_FEATURE, status::SUCCESS);
        bhs[14..16].copy_from_slice(&tsih.to_be_bytes());
        (bhs, answer, Step::Done(tsih))
    }

    /// Declares our MaxRecvDataSegmentLength, once per login, past authentication.
    fn declare_limit(&mut self, answer: &mut Vec<u8>) {
        if !self.declared_limit {
            self.declared_limit = true;
            keys::push(
                answer,
                "MaxRecvDataSegmentLength",
                &self.params.target_max_recv.to_string(),
            );
        }
    }

    fn requires_chap(&self) -> bool {
        matches!(self.auth, Some(Authentication::Chap { .. }))
    }

    /// Checks the names and session type of the first request.
    fn identify(&mut self, pairs: &[(String, String)]) -> Result<(), u16> {
        let find = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let initiator = find("InitiatorName").ok_or(status::MISSING_PARAMETER)?;
        if initiator.is_empty() {
            return Err(status::MISSING_PARAMETER);
        }
        self.discovery = match find("SessionType").unwrap_or("Normal") {
            "Normal" => false,
            "Discovery" => true,
            _ => return Err(status::INITIATOR_ERROR),
        };
        self.auth = self.dir.authentication(initiator);
        if !self.discovery {
            let target = find("TargetName").ok_or(status::MISSING_PARAMETER)?;
            if target != self.dir.target_name() {
                return Err(status::NOT_FOUND);
            }
            if self.auth.is_none() {
                return Err(status::AUTHORIZATION_FAILURE);
            }
        }
        self.initiator = Some(initiator.to_owned());
        Ok(())
    }

    fn keys(&mut self, pairs: &[(String, String)], answer: &mut Vec<u8>) -> Result<(), u16> {
        let mut chap_n = None;
        let mut chap_r = None;
        let mut chap_i = None;
        let mut chap_c = None;
        for (key, value) in pairs {
            match key.as_str() {
                "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias" => {}
                "AuthMethod" => {
                    if self.stage != SECURITY {
                        return Err(status::INITIATOR_ERROR);
                    }
                    let want_chap = self.requires_chap();
                    let offers: Vec<&str> = value.split(',').collect();
                    if want_chap && offers.contains(&"CHAP") {
                        self.chap = Chap::Agreed;
                        keys::push(answer, key, "CHAP");
                    } else if !want_chap && offers.contains(&"None") {
                        self.authenticated = true;
                        keys::push(answer, key, "None");
                    } else {
                        return Err(status::AUTH_FAILURE);
                    }
                }
                "CHAP_A" => {
                    if !matches!(self.chap, Chap::Agreed) {
                        return Err(status::INITIATOR_ERROR);
                    }
                    if !value.split(',').any(|a| a == "5") {
                        return Err(status::AUTH_FAILURE);
                    }
                    let challenge = Challenge::new().ok_or(status::OUT_OF_RESOURCES)?;
                    keys::push(answer, "CHAP_A", "5");
                    keys::push(answer, "CHAP_I", &challenge.id.to_string());
                    keys::push(answer, "CHAP_C", &chap::encode_hex(&challenge.challenge));
                    self.chap = Chap::Challenged(challenge);
                }
                "CHAP_N" => chap_n = Some(value.as_str()),
                "CHAP_R" => chap_r = Some(value.as_str()),
                "CHAP_I" => chap_i = Some(value.as_str()),
                "CHAP_C" => chap_c = Some(value.as_str()),
                _ if self.stage == SECURITY && !key.starts_with("X-") && is_operational(key) => {
                    let result =
                        keys::negotiate(key, value, self.discovery, &mut self.params, self.config);
                    if let Answer::Value(v) = result {
                        keys::push(answer, key, &v);
                    }
                }
                _ => {
                    match keys::negotiate(key, value, self.discovery, &mut self.params, self.config)
                    {
                        Answer::Silent => {}
                        Answer::Value(v) => keys::push(answer, key, &v),
                    }
                }
            }
        }
        if chap_n.is_some() || chap_r.is_some() {
            self.finish_chap(chap_n, chap_r, chap_i, chap_c, answer)?;
        }
        Ok(())
    }

    fn finish_chap(
        &mut self,
        name: Option<&str>,
        response: Option<&str>,
        id: Option<&str>,
        challenge: Option<&str>,
        answer: &mut Vec<u8>,
    ) -> Result<(), u16> {
        let Chap::Challenged(ours) = &self.chap else {
            return Err(status::INITIATOR_ERROR);
        };
        let Some(Authentication::Chap { inbound, outbound }) = &self.auth else {
            return Err(status::AUTH_FAILURE);
        };
        let (Some(name), Some(response)) = (name, response) else {
            return Err(status::AUTH_FAILURE);
        };
        if !ours.verify(&inbound.user, &inbound.secret, name, response) {
            return Err(status::AUTH_FAILURE);
        }
        // A host set to mutual CHAP must challenge us (else it would accept any target);
        // a one-way host must not (we have no secret to answer with).
        match (id, challenge, outbound) {
            (None, None, None) => {}
            (Some(id), Some(challenge), Some(out)) => {
                let reply = chap::answer_initiator(ours, id, challenge, &out.secret)
                    .ok_or(status::AUTH_FAILURE)?;
                keys::push(answer, "CHAP_N", &out.user);
                keys::push(answer, "CHAP_R", &reply);
            }
            _ => return Err(status::AUTH_FAILURE),
        }
        self.chap = Chap::Done;
        self.authenticated = true;
        Ok(())
    }
}

/// Keys negotiable in the operational stage that an initiator may also send early.
fn is_operational(key: &str) -> bool {
    !matches!(key, "AuthMethod") && !key.starts_with("CHAP_")
}
