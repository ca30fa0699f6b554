//! The iSCSI PDU codec: 48-byte basic header segment, additional header segments, optional
//! CRC32C header and data digests, and the data segment padded to 4 bytes.
//!
//! The codec promises never to allocate more than the negotiated bound: the data segment
//! length is checked against our MaxRecvDataSegmentLength before any byte of it is read,
//! and the AHS is at most 1020 bytes by construction. Digests are little-endian on the wire
//! (as Linux and libiscsi send them).

/// Length of the basic header segment.
pub const BHS_LEN: usize = 48;

/// Opcodes (the low six bits of byte 0).
pub mod op {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT: u8 = 0x02;
    pub const LOGIN: u8 = 0x03;
    pub const TEXT: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT: u8 = 0x06;
    pub const SNACK: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Reject reasons (RFC 7143 11.17.1).
pub mod reject {
    pub const DATA_DIGEST: u8 = 0x02;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
}

/// The reserved "no task" tag.
pub const NO_TAG: u32 = 0xffff_ffff;
/// Largest data segment anyone may declare (24-bit field).
pub const MAX_SEGMENT: u32 = (1 << 24) - 1;

/// One PDU: header, AHS (without its padding: lengths are multiples of 4) and data segment
/// (without padding). Buffers are reused from PDU to PDU.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub bhs: [u8; BHS_LEN],
    pub ahs: Vec<u8>,
    pub data: Vec<u8>,
}

impl Default for Pdu {
    fn default() -> Self {
        Pdu {
            bhs: [0; BHS_LEN],
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }
}

/// What a connection has negotiated for incoming PDUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduLimits {
    pub header_digest: bool,
    pub data_digest: bool,
    /// Our MaxRecvDataSegmentLength: larger data segments are a protocol error.
    pub max_data: u32,
}

/// Why a PDU could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduError {
    /// Fewer bytes than the header or lengths announce.
    Truncated,
    /// DataSegmentLength beyond our MaxRecvDataSegmentLength (the stream is out of step:
    /// answer Reject and close).
    TooLong,
    /// The header digest does not match: the lengths cannot be trusted, close.
    HeaderDigest,
    /// The data digest does not match (the PDU was consumed whole): Reject 0x02.
    DataDigest,
}

/// Big-endian field helpers on a header.
pub fn get32(bhs: &[u8; BHS_LEN], at: usize) -> u32 {
    u32::from_be_bytes([bhs[at], bhs[at + 1], bhs[at + 2], bhs[at + 3]])
}

pub fn put32(bhs: &mut [u8; BHS_LEN], at: usize, value: u32) {
    bhs[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

pub fn get16(bhs: &[u8; BHS_LEN], at: usize) -> u16 {
    u16::from_be_bytes([bhs[at], bhs[at + 1]])
}

impl Pdu {
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }
    /// The I (immediate delivery) bit.
    pub fn immediate(&self) -> bool {
        self.bhs[0] & 0x40 != 0
    }
    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }
    /// The F (final) bit.
    pub fn final_bit(&self) -> bool {
        self.bhs[1] & 0x80 != 0
    }
    pub fn lun(&self) -> u64 {
        u64::from_be_bytes(self.bhs[8..16].try_into().unwrap_or([0; 8]))
    }
    pub fn itt(&self) -> u32 {
        get32(&self.bhs, 16)
    }
    pub fn field(&self, at: usize) -> u32 {
        get32(&self.bhs, at)
    }
    /// CmdSN of an initiator PDU (offset 24).
    pub fn cmdsn(&self) -> u32 {
        get32(&self.bhs, 24)
    }
    pub fn exp_statsn(&self) -> u32 {
        get32(&self.bhs, 28)
    }
}

/// Lengths the header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lengths {
    pub ahs: usize,
    pub data: usize,
}

impl Lengths {
    /// Bytes after the BHS up to and including the header digest.
    pub fn header_rest(&self, limits: &PduLimits) -> usize {
        self.ahs + if limits.header_digest { 4 } else { 0 }
    }
    /// Bytes of the data segment with padding and digest.
    pub fn data_rest(&self, limits: &PduLimits) -> usize {
        if self.data == 0 {
            return 0;
        }
        padded(self.data) + if limits.data_digest { 4 } else { 0 }
    }
}

pub fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The lengths a header announces, bounded by `limits`.
pub fn lengths(bhs: &[u8; BHS_LEN], limits: &PduLimits) -> Result<Lengths, PduError> {
    let ahs = bhs[4] as usize * 4;
    let data = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]);
    if data > limits.max_data {
        return Err(PduError::TooLong);
    }
    Ok(Lengths {
        ahs,
        data: data as usize,
    })
}

fn digest_le(bytes: &[u8]) -> [u8; 4] {
    crc32c::crc32c(bytes).to_le_bytes()
}

/// Checks the header digest over BHS + AHS. `rest` is the AHS followed by the digest.
pub fn check_header(bhs: &[u8; BHS_LEN], rest: &[u8], limits: &PduLimits) -> Result<(), PduError> {
    if !limits.header_digest {
        return Ok(());
    }
    let split = rest.len().checked_sub(4).ok_or(PduError::Truncated)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(bhs), &rest[..split]);
    if crc.to_le_bytes() != rest[split..] {
        return Err(PduError::HeaderDigest);
    }
    Ok(())
}

/// Checks the data digest over data + padding. `segment` is data, padding and digest.
pub fn check_data(segment: &[u8], limits: &PduLimits) -> Result<(), PduError> {
    if !limits.data_digest || segment.is_empty() {
        return Ok(());
    }
    let split = segment.len().checked_sub(4).ok_or(PduError::Truncated)?;
    if digest_le(&segment[..split]) != segment[split..] {
        return Err(PduError::DataDigest);
    }
    Ok(())
}

/// Decodes one whole PDU from the front of `bytes`; returns it and the bytes it used.
/// Used by the fuzz target and tests; the connection reader does the same in steps.
pub fn decode(bytes: &[u8], limits: &PduLimits) -> Result<(Pdu, usize), PduError> {
    let mut pdu = Pdu::default();
    let head = bytes.get(..BHS_LEN).ok_or(PduError::Truncated)?;
    pdu.bhs.copy_from_slice(head);
    let lens = lengths(&pdu.bhs, limits)?;
    let mut at = BHS_LEN;
    let rest_len = lens.header_rest(limits);
    let rest = bytes.get(at..at + rest_len).ok_or(PduError::Truncated)?;
    check_header(&pdu.bhs, rest, limits)?;
    pdu.ahs.extend_from_slice(&rest[..lens.ahs]);
    at += rest_len;
    let data_len = lens.data_rest(limits);
    let segment = bytes.get(at..at + data_len).ok_or(PduError::Truncated)?;
    check_data(segment, limits)?;
    pdu.data.extend_from_slice(&segment[..lens.data]);
    Ok((pdu, at + data_len))
}

/// The CDB of a SCSI Command PDU: the 16 header bytes, extended by an Extended CDB AHS
/// (type 1) when present. `None` when the AHS is malformed or of an unsupported type
/// (bidirectional commands, type 2, are not supported).
pub fn cdb_of<'a>(pdu: &Pdu, scratch: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    scratch.clear();
    scratch.extend_from_slice(&pdu.bhs[32..48]);
    let mut ahs = &pdu.ahs[..];
    while !ahs.is_empty() {
        if ahs.len() < 4 {
            return None;
        }
        let len = u16::from_be_bytes([ahs[0], ahs[1]]) as usize;
        let kind = ahs[2];
        // The AHS length counts the bytes after the type-specific byte; padded to 4.
        let total = 3 + len;
        let padded_total = padded(total);
        if padded_total > ahs.len() || len == 0 {
            return None;
        }
        match kind {
            1 => scratch.extend_from_slice(&ahs[4..3 + len]),
            _ => return None,
        }
        ahs = &ahs[padded_total..];
    }
    Some(&scratch[..])
}

/// Encodes a target PDU into `out` (cleared first): sets DataSegmentLength and a zero AHS
/// length in `bhs`, adds padding and digests as negotiated.
pub fn encode(out: &mut Vec<u8>, bhs: &mut [u8; BHS_LEN], data: &[u8], digests: (bool, bool)) {
    out.clear();
    append(out, bhs, data, digests);
}

/// Like [`encode`] but appends to `out` (several PDUs in one write).
pub fn append(out: &mut Vec<u8>, bhs: &mut [u8; BHS_LEN], data: &[u8], digests: (bool, bool)) {
    let len = data.len().min(MAX_SEGMENT as usize) as u32;
    bhs[4] = 0;
    bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(bhs);
    if digests.0 {
        out.extend_from_slice(&digest_le(bhs));
    }
    if data.is_empty() {
        return;
    }
    let data = &data[..len as usize];
    let start = out.len();
    out.extend_from_slice(data);
    out.resize(start + padded(data.len()), 0);
    if digests.1 {
        let crc = digest_le(&out[start..]);
        out.extend_from_slice(&crc);
    }
}

/// Encodes an initiator-side PDU with AHS (tests and tools): like [`append`] but keeps the
/// AHS and its length field.
pub fn encode_with_ahs(
    out: &mut Vec<u8>,
    bhs: &mut [u8; BHS_LEN],
    ahs: &[u8],
    data: &[u8],
    digests: (bool, bool),
) {
    out.clear();
    let len = data.len().min(MAX_SEGMENT as usize) as u32;
    bhs[4] = (ahs.len() / 4).min(255) as u8;
    bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(bhs);
    out.extend_from_slice(&ahs[..bhs[4] as usize * 4]);
    if digests.0 {
        let crc = digest_le(out);
        out.extend_from_slice(&crc);
    }
    if !data.is_empty() {
        let start = out.len();
        out.extend_from_slice(&data[..len as usize]);
        out.resize(start + padded(len as usize), 0);
        if digests.1 {
            let crc = digest_le(&out[start..]);
            out.extend_from_slice(&crc);
        }
    }
}
