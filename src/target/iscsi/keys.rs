//! Text keys (RFC 7143 section 6 and 13): parsing `key=value\0` lists and negotiating the
//! operational keys.
//!
//! Every key the initiator offers gets an answer with the negotiated result, except the
//! declarative ones that need none (InitiatorName, InitiatorAlias, TargetName, SessionType,
//! MaxRecvDataSegmentLength of the initiator). Unknown keys and `X-` extensions are
//! answered `NotUnderstood`; keys that mean nothing for a discovery session `Irrelevant`;
//! values out of range `Reject`.

use super::IscsiConfig;

/// Longest key name (RFC 7143 6.1: 63 bytes).
const MAX_KEY: usize = 63;
/// Longest value we accept (RFC 7143 6.1: 8192 for text values, CHAP may be longer).
const MAX_VALUE: usize = 8192;
/// Most keys in one login or text exchange.
pub const MAX_KEYS: usize = 256;
/// Longest text of one login/text exchange when assembled from several PDUs.
pub const MAX_TEXT: usize = 64 * 1024;

/// Parses a text segment. `Err` when a pair has no `=`, a key is empty or too long, or
/// there are too many pairs.
pub fn parse(data: &[u8]) -> Result<Vec<(String, String)>, ()> {
    let mut pairs = Vec::new();
    for item in data.split(|b| *b == 0) {
        if item.is_empty() {
            continue;
        }
        let eq = item.iter().position(|b| *b == b'=').ok_or(())?;
        let (key, value) = (&item[..eq], &item[eq + 1..]);
        if key.is_empty() || key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(());
        }
        if pairs.len() >= MAX_KEYS {
            return Err(());
        }
        let key = std::str::from_utf8(key).map_err(|_| ())?;
        let value = std::str::from_utf8(value).map_err(|_| ())?;
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Appends `key=value\0`.
pub fn push(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// What the session runs with once login is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub header_digest: bool,
    pub data_digest: bool,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// The initiator's MaxRecvDataSegmentLength: our Data-In segments are at most this.
    pub initiator_max_recv: u32,
    /// Ours (declared to the initiator).
    pub target_max_recv: u32,
    pub max_burst: u32,
    pub first_burst: u32,
    pub max_outstanding_r2t: u32,
    pub time2wait: u32,
    pub time2retain: u32,
}

impl Params {
    /// RFC 7143 defaults, with our declared limits from `config`.
    pub fn new(config: &IscsiConfig) -> Self {
        Params {
            header_digest: false,
            data_digest: false,
            initial_r2t: true,
            immediate_data: true,
            initiator_max_recv: 8192,
            target_max_recv: config.max_recv_data_segment_length.clamp(512, pdu_max()),
            max_burst: config.max_burst_length.clamp(512, pdu_max()).min(262_144),
            first_burst: config.first_burst_length.clamp(512, pdu_max()).min(65_536),
            max_outstanding_r2t: 1,
            time2wait: 2,
            time2retain: 20,
        }
    }
}

fn pdu_max() -> u32 {
    super::pdu::MAX_SEGMENT
}

fn number(value: &str, min: u32, max: u32) -> Option<u32> {
    let n: u64 = if let Some(hex) = value.strip_prefix("0x").or(value.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        value.parse().ok()?
    };
    (n >= min as u64 && n <= max as u64).then_some(n as u32)
}

fn boolean(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// The answer to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Declarative key that needs no answer.
    Silent,
    Value(String),
}

/// Keys that only a normal session negotiates.
const NORMAL_ONLY: &[&str] = &[
    "InitialR2T",
    "ImmediateData",
    "MaxBurstLength",
    "FirstBurstLength",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "MaxConnections",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
];

/// Negotiates one operational key into `params`; `limits` are the target's configured
/// maxima. Login keys handled elsewhere (names, AuthMethod, CHAP_*) are not passed here.
pub fn negotiate(
    key: &str,
    value: &str,
    discovery: bool,
    params: &mut Params,
    config: &IscsiConfig,
) -> Answer {
    let v = |s: &str| Answer::Value(s.to_owned());
    if discovery && NORMAL_ONLY.contains(&key) {
        return v("Irrelevant");
    }
    match key {
        "HeaderDigest" | "DataDigest" => {
            let mut chosen = None;
            for offer in value.split(',') {
                match offer {
                    "None" => chosen = Some(false),
                    "CRC32C" => chosen = Some(true),
                    _ => continue,
                }
                break;
            }
            match chosen {
                Some(on) => {
                    if key == "HeaderDigest" {
                        params.header_digest = on;
                    } else {
                        params.data_digest = on;
                    }
                    v(if on { "CRC32C" } else { "None" })
                }
                None => v("Reject"),
            }
        }
        "MaxConnections" => match number(value, 1, 65535) {
            Some(_) => v("1"),
            None => v("Reject"),
        },
        "InitialR2T" => match boolean(value) {
            // OR with our "No": the initiator decides.
            Some(b) => {
                params.initial_r2t = b;
                v(yes_no(b))
            }
            None => v("Reject"),
        },
        "ImmediateData" => match boolean(value) {
            // AND with our "Yes".
            Some(b) => {
                params.immediate_data = b;
                v(yes_no(b))
            }
            None => v("Reject"),
        },
        "MaxRecvDataSegmentLength" => match number(value, 512, pdu_max()) {
            Some(n) => {
                params.initiator_max_recv = n;
                Answer::Silent
            }
            None => v("Reject"),
        },
        "MaxBurstLength" => match number(value, 512, pdu_max()) {
            Some(n) => {
                params.max_burst = n.min(config.max_burst_length.clamp(512, pdu_max()));
                params.first_burst = params.first_burst.min(params.max_burst);
                v(&params.max_burst.to_string())
            }
            None => v("Reject"),
        },
        "FirstBurstLength" => match number(value, 512, pdu_max()) {
            Some(n) => {
                params.first_burst = n
                    .min(config.first_burst_length.clamp(512, pdu_max()))
                    .min(params.max_burst.max(512));
                v(&params.first_burst.to_string())
            }
            None => v("Reject"),
        },
        "DefaultTime2Wait" => match number(value, 0, 3600) {
            Some(n) => {
                params.time2wait = n.max(2);
                v(&params.time2wait.to_string())
            }
            None => v("Reject"),
        },
        "DefaultTime2Retain" => match number(value, 0, 3600) {
            Some(n) => {
                params.time2retain = n.min(20);
                v(&params.time2retain.to_string())
            }
            None => v("Reject"),
        },
        "MaxOutstandingR2T" => match number(value, 1, 65535) {
            Some(_) => v("1"),
            None => v("Reject"),
        },
        "DataPDUInOrder" | "DataSequenceInOrder" => match boolean(value) {
            // OR with our "Yes".
            Some(_) => v("Yes"),
            None => v("Reject"),
        },
        "ErrorRecoveryLevel" => match number(value, 0, 2) {
            Some(_) => v("0"),
            None => v("Reject"),
        },
        "IFMarker" | "OFMarker" => match boolean(value) {
            Some(_) => v("No"),
            None => v("Reject"),
        },
        "IFMarkInt" | "OFMarkInt" => v("Irrelevant"),
        "InitiatorAlias" => Answer::Silent,
        // Target-declared keys the initiator must not send.
        "TargetAlias" | "TargetPortalGroupTag" | "TargetAddress" => v("Irrelevant"),
        _ => v("NotUnderstood"),
    }
}

#[cfg(test)]
mod tests;
