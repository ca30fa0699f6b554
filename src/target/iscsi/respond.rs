//! Everything the target sends in full feature phase, under one writer lock that also
//! owns StatSN: SCSI responses, Data-In sequences (status collapsed into the last PDU when
//! GOOD), R2T, NOP-In, Reject, task management, text, logout and async messages.
//!
//! Every PDU carries the current ExpCmdSN and MaxCmdSN (the window is
//! `queue_depth` minus the commands in flight, so it never shrinks below ExpCmdSN - 1).

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use super::keys::Params;
use super::pdu::{self, BHS_LEN, NO_TAG, op};
use super::wire;
use crate::target::scsi::status;

/// The writing half of a connection.
pub struct Responder<'a> {
    pub stream: &'a TcpStream,
    out: Mutex<Out>,
    pub exp_cmdsn: AtomicU32,
    pub inflight: AtomicU32,
    pub queue_depth: u32,
    pub digests: (bool, bool),
    /// The initiator's MaxRecvDataSegmentLength.
    pub max_segment: usize,
    pub max_burst: usize,
    pub stop: &'a [&'a AtomicBool],
}

struct Out {
    statsn: u32,
    buf: Vec<u8>,
}

/// A finished SCSI command, ready to report.
pub struct Completion<'d> {
    pub itt: u32,
    pub lun: u64,
    pub status: u8,
    pub data: &'d [u8],
    pub sense: &'d [u8],
    pub edtl: u32,
    /// Bytes the command meant to move when known (writes), for the residual.
    pub wanted: Option<u32>,
    pub read: bool,
}

impl<'a> Responder<'a> {
    /// `statsn` and `exp_cmdsn` continue from the login; `params` give the digests and the
    /// initiator's segment and burst limits.
    pub fn new(
        stream: &'a TcpStream,
        params: &Params,
        statsn: u32,
        exp_cmdsn: u32,
        queue_depth: u32,
        stop: &'a [&'a AtomicBool],
    ) -> Self {
        Responder {
            stream,
            out: Mutex::new(Out {
                statsn,
                buf: Vec::new(),
            }),
            exp_cmdsn: AtomicU32::new(exp_cmdsn),
            inflight: AtomicU32::new(0),
            queue_depth: queue_depth.max(1),
            digests: (params.header_digest, params.data_digest),
            max_segment: params.initiator_max_recv.max(512) as usize,
            max_burst: params.max_burst.max(512) as usize,
            stop,
        }
    }

    pub fn max_cmdsn(&self) -> u32 {
        let exp = self.exp_cmdsn.load(Ordering::Acquire);
        let free = self
            .queue_depth
            .saturating_sub(self.inflight.load(Ordering::Acquire));
        exp.wrapping_add(free).wrapping_sub(1)
    }

    /// Whether `cmdsn` lies in [ExpCmdSN, MaxCmdSN] (serial arithmetic).
    pub fn in_window(&self, cmdsn: u32) -> bool {
        let exp = self.exp_cmdsn.load(Ordering::Acquire);
        let free = self
            .queue_depth
            .saturating_sub(self.inflight.load(Ordering::Acquire));
        cmdsn.wrapping_sub(exp) < free
    }

    /// Whether the portal is closing or the session was taken over.
    pub fn stopping(&self) -> bool {
        self.stop.iter().any(|flag| flag.load(Ordering::Acquire))
    }

    /// Fills in sequence numbers and sends the PDUs `build` appends, in one write.
    fn send_with(&self, build: impl FnOnce(&mut Vec<u8>, &mut u32, u32, u32)) -> bool {
        self.send_checked(false, build)
    }

    /// [`Self::send_with`]; with `unless_stopping`, sends nothing and returns false when a
    /// stop flag is set (checked under the writer lock, so nothing slips out after it).
    fn send_checked(
        &self,
        unless_stopping: bool,
        build: impl FnOnce(&mut Vec<u8>, &mut u32, u32, u32),
    ) -> bool {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if unless_stopping && self.stopping() {
            return false;
        }
        let Out { statsn, buf } = &mut *out;
        buf.clear();
        let exp = self.exp_cmdsn.load(Ordering::Acquire);
        build(buf, statsn, exp, self.max_cmdsn());
        let ok = wire::write_all(self.stream, buf, self.stop).is_ok();
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new();
        }
        ok
    }

    /// Sends one PDU whose StatSN field (offset 24) takes the next StatSN when `status`.
    pub fn send(&self, mut bhs: [u8; BHS_LEN], data: &[u8], advances_statsn: bool) -> bool {
        let digests = self.digests;
        self.send_with(|buf, statsn, exp, max| {
            pdu::put32(&mut bhs, 24, *statsn);
            if advances_statsn {
                *statsn = statsn.wrapping_add(1);
            }
            pdu::put32(&mut bhs, 28, exp);
            pdu::put32(&mut bhs, 32, max);
            pdu::append(buf, &mut bhs, data, digests);
        })
    }

    pub fn reject(&self, reason: u8, header: &[u8; BHS_LEN]) -> bool {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::REJECT;
        bhs[1] = 0x80;
        bhs[2] = reason;
        pdu::put32(&mut bhs, 16, NO_TAG);
        self.send(bhs, header, true)
    }

    pub fn r2t(&self, lun: u64, itt: u32, ttt: u32, r2tsn: u32, offset: u32, length: u32) -> bool {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::R2T;
        bhs[1] = 0x80;
        bhs[8..16].copy_from_slice(&lun.to_be_bytes());
        pdu::put32(&mut bhs, 16, itt);
        pdu::put32(&mut bhs, 20, ttt);
        pdu::put32(&mut bhs, 36, r2tsn);
        pdu::put32(&mut bhs, 40, offset);
        pdu::put32(&mut bhs, 44, length);
        self.send(bhs, &[], false)
    }

    /// Sends the result of a SCSI command: Data-In PDUs, then status (collapsed into the
    /// last Data-In when GOOD without sense), with residual counts.
    ///
    /// Once the portal is closing (or the session was reinstated) no result goes out and
    /// this returns false: a command that ends then may have failed only because its
    /// controller is going away (NOT READY, state transition), and the initiator, which
    /// sees the connection drop, reissues it on its new connection instead.
    pub fn complete(&self, c: &Completion<'_>) -> bool {
        let edtl = c.edtl as usize;
        let (sent, residual_flags, residual) = if c.read {
            let produced = c.data.len();
            let sent = produced.min(edtl);
            let (flags, residual) = residual_of(produced as u64, edtl as u64);
            (sent, flags, residual)
        } else {
            match c.wanted {
                Some(w) => {
                    let (flags, residual) = residual_of(w as u64, edtl as u64);
                    (0, flags, residual)
                }
                None => (0, 0, 0),
            }
        };
        let collapse = sent > 0 && c.status == status::GOOD && c.sense.is_empty();
        let digests = self.digests;
        let max_segment = self.max_segment;
        let max_burst = self.max_burst;
        let data = &c.data[..sent];
        self.send_checked(true, |buf, statsn, exp, max| {
            let mut offset = 0usize;
            let mut datasn = 0u32;
            while offset < sent {
                let burst_end = (offset / max_burst + 1) * max_burst;
                let len = max_segment.min(sent - offset).min(burst_end - offset);
                let last = offset + len == sent;
                let mut bhs = [0u8; BHS_LEN];
                bhs[0] = op::DATA_IN;
                let mut flags = 0u8;
                if last || offset + len == burst_end {
                    flags |= 0x80;
                }
                if last && collapse {
                    flags |= 0x01 | residual_flags;
                    bhs[3] = c.status;
                    pdu::put32(&mut bhs, 24, *statsn);
                    *statsn = statsn.wrapping_add(1);
                    pdu::put32(&mut bhs, 44, residual);
                }
                bhs[1] = flags;
                bhs[8..16].copy_from_slice(&c.lun.to_be_bytes());
                pdu::put32(&mut bhs, 16, c.itt);
                pdu::put32(&mut bhs, 20, NO_TAG);
                pdu::put32(&mut bhs, 28, exp);
                pdu::put32(&mut bhs, 32, max);
                pdu::put32(&mut bhs, 36, datasn);
                pdu::put32(&mut bhs, 40, offset as u32);
                pdu::append(buf, &mut bhs, &data[offset..offset + len], digests);
                offset += len;
                datasn += 1;
            }
            if collapse {
                return;
            }
            let mut bhs = [0u8; BHS_LEN];
            bhs[0] = op::SCSI_RESPONSE;
            bhs[1] = 0x80
                | if c.status == status::GOOD {
                    residual_flags
                } else {
                    0
                };
            bhs[3] = c.status;
            pdu::put32(&mut bhs, 16, c.itt);
            pdu::put32(&mut bhs, 24, *statsn);
            *statsn = statsn.wrapping_add(1);
            pdu::put32(&mut bhs, 28, exp);
            pdu::put32(&mut bhs, 32, max);
            pdu::put32(&mut bhs, 36, datasn);
            if c.status == status::GOOD {
                pdu::put32(&mut bhs, 44, residual);
            }
            if c.sense.is_empty() {
                pdu::append(buf, &mut bhs, &[], digests);
            } else {
                let sense = &c.sense[..c.sense.len().min(252)];
                let mut segment = [0u8; 254];
                segment[..2].copy_from_slice(&(sense.len() as u16).to_be_bytes());
                segment[2..2 + sense.len()].copy_from_slice(sense);
                pdu::append(buf, &mut bhs, &segment[..2 + sense.len()], digests);
            }
        })
    }

    /// Target-initiated logout request (the portal is closing).
    pub fn async_logout(&self) {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op::ASYNC;
        bhs[1] = 0x80;
        pdu::put32(&mut bhs, 16, NO_TAG);
        bhs[36] = 1;
        bhs[42..44].copy_from_slice(&2u16.to_be_bytes());
        // Best effort: the connection closes right after.
        let _ = self.send(bhs, &[], false);
    }
}

/// Residual flags (O = 0x04, U = 0x02) and count when the command moves `actual` bytes
/// against an expected transfer length `expected`.
pub fn residual_of(actual: u64, expected: u64) -> (u8, u32) {
    if actual > expected {
        (0x04, (actual - expected).min(u32::MAX as u64) as u32)
    } else if actual < expected {
        (0x02, (expected - actual) as u32)
    } else {
        (0, 0)
    }
}

/// Fixed-format sense data.
pub fn sense(key: u8, asc: u8, ascq: u8) -> [u8; 18] {
    let mut s = [0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}
