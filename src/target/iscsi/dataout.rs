//! Write data collection: immediate data, the unsolicited Data-Out sequence (up to
//! FirstBurstLength when InitialR2T=No), then one R2T at a time (MaxOutstandingR2T=1) of
//! at most MaxBurstLength.
//!
//! Every Data-Out is checked against its task: target transfer tag, DataSN (from 0 in each
//! sequence), buffer offset (in order) and the end of the current sequence. A PDU that
//! fails gets Reject (invalid PDU field, or data digest error) and its task ends with
//! CHECK CONDITION, ABORTED COMMAND, so the initiator never hangs. A command enters the
//! R2T phase only while the solicited data of the connection's commands stays under
//! [`R2T_BUDGET`]; others wait in a queue that completing commands resume. Immediate and
//! unsolicited data need no budget: the CmdSN window and FirstBurstLength bound them.

use std::collections::{HashMap, VecDeque};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

// cycle: Data-Out handling is a part of the connection's state machine, split out by size;
// it works on the connection's shared state and jobs.
use super::connection::{Job, Shared};
use super::pdu::{NO_TAG, Pdu, reject};

/// Write data one connection may buffer before it stops soliciting more.
pub const R2T_BUDGET: usize = 64 << 20;

/// Commands waiting for write data.
#[derive(Default)]
pub struct Writes {
    pending: HashMap<u32, PendingWrite>,
    deferred: VecDeque<u32>,
    next_ttt: u32,
}

struct PendingWrite {
    job: Job,
    /// End offset of the sequence in progress (unsolicited or the last R2T).
    seq_end: u32,
    ttt: u32,
    datasn: u32,
    r2tsn: u32,
    /// An R2T is outstanding or the unsolicited sequence is open.
    open: bool,
}

impl PendingWrite {
    fn received(&self) -> u32 {
        self.job.data.len() as u32
    }
}

fn lock<'a>(shared: &'a Shared<'_>) -> std::sync::MutexGuard<'a, Writes> {
    shared.writes.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn is_pending(shared: &Shared<'_>, itt: u32) -> bool {
    lock(shared).pending.contains_key(&itt)
}

/// Starts collecting data for `job` (its immediate data already in `job.data`).
pub fn start(shared: &Shared<'_>, job: Job, unsolicited: bool) {
    let itt = job.itt;
    let received = job.data.len() as u32;
    let first_burst_end = job.edtl.min(shared.params.first_burst);
    let mut writes = lock(shared);
    let open = unsolicited && received < first_burst_end;
    writes.pending.insert(
        itt,
        PendingWrite {
            job,
            seq_end: first_burst_end,
            ttt: NO_TAG,
            datasn: 0,
            r2tsn: 0,
            open,
        },
    );
    if !open {
        solicit(shared, &mut writes, itt);
    }
}

/// Sends the next R2T of `itt`, or queues it when the budget is spent.
fn solicit(shared: &Shared<'_>, writes: &mut Writes, itt: u32) {
    if !issue_r2t(shared, writes, itt) {
        writes.deferred.push_back(itt);
    }
}

/// False when the budget does not allow the R2T now.
fn issue_r2t(shared: &Shared<'_>, writes: &mut Writes, itt: u32) -> bool {
    let ttt = loop {
        writes.next_ttt = writes.next_ttt.wrapping_add(1);
        if writes.next_ttt != NO_TAG {
            break writes.next_ttt;
        }
    };
    let Some(pw) = writes.pending.get_mut(&itt) else {
        return true;
    };
    let offset = pw.received();
    let remaining = pw.job.edtl - offset;
    let length = remaining.min(shared.params.max_burst);
    if pw.job.charged == 0 {
        // The whole solicited rest is charged at the first R2T, so a command that got one
        // never waits for budget again (no deadlock between half-received commands).
        let held = shared.held.load(Ordering::Acquire);
        if held > 0 && held + remaining as usize > R2T_BUDGET {
            return false;
        }
        shared.held.fetch_add(remaining as usize, Ordering::AcqRel);
        pw.job.charged = remaining as usize;
    }
    pw.seq_end = offset + length;
    pw.ttt = ttt;
    pw.datasn = 0;
    pw.open = true;
    let r2tsn = pw.r2tsn;
    pw.r2tsn += 1;
    if !shared
        .responder
        .r2t(pw.job.lun_field, itt, ttt, r2tsn, offset, length)
    {
        shared.stop.store(true, Ordering::Release);
    }
    true
}

/// Issues R2Ts that waited for budget (called when a command completes).
pub fn resume_deferred(shared: &Shared<'_>) {
    let mut writes = lock(shared);
    while let Some(&itt) = writes.deferred.front() {
        if !issue_r2t(shared, &mut writes, itt) {
            break;
        }
        writes.deferred.pop_front();
    }
}

/// Ends a pending write without executing it; `answer` with ABORTED COMMAND sense.
fn end(shared: &Shared<'_>, pw: PendingWrite, answer: Option<(u8, u8)>) {
    shared.held.fetch_sub(pw.job.charged, Ordering::AcqRel);
    let job = pw.job;
    match answer {
        Some((asc, ascq)) => shared.fail(job.itt, job.lun_field, job.counted, 0x0b, asc, ascq),
        None if job.counted => {
            shared.responder.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        None => {}
    }
    shared.recycle(job.data);
    shared.recycle(job.cdb);
}

/// Removes the pending write `itt` (task management); true when there was one.
pub fn abort(shared: &Shared<'_>, itt: u32) -> bool {
    let removed = {
        let mut writes = lock(shared);
        writes.deferred.retain(|i| *i != itt);
        writes.pending.remove(&itt)
    };
    match removed {
        Some(pw) => {
            end(shared, pw, None);
            true
        }
        None => false,
    }
}

/// Removes every pending write whose LUN field satisfies `which`.
pub fn abort_where(shared: &Shared<'_>, which: impl Fn(u64) -> bool) {
    let itts: Vec<u32> = lock(shared)
        .pending
        .iter()
        .filter(|(_, pw)| which(pw.job.lun_field))
        .map(|(itt, _)| *itt)
        .collect();
    for itt in itts {
        abort(shared, itt);
    }
}

pub fn drop_all(shared: &Shared<'_>) {
    abort_where(shared, |_| true);
}

/// A Data-Out whose data digest failed: Reject it and end its task.
pub fn digest_error(shared: &Shared<'_>, pdu: &Pdu) {
    shared.responder.reject(reject::DATA_DIGEST, &pdu.bhs);
    let removed = lock(shared).pending.remove(&pdu.itt());
    if let Some(pw) = removed {
        // PROTOCOL SERVICE CRC ERROR
        end(shared, pw, Some((0x47, 0x05)));
    }
}

/// One Data-Out PDU.
pub fn data_out(shared: &Shared<'_>, pdu: &Pdu) {
    let itt = pdu.itt();
    let mut writes = lock(shared);
    let Some(pw) = writes.pending.get_mut(&itt) else {
        // Data for a task we no longer have (aborted, failed): dropped.
        return;
    };
    let len = pdu.data.len() as u32;
    let offset = pdu.field(40);
    let valid = pw.open
        && pdu.field(20) == pw.ttt
        && pdu.field(36) == pw.datasn
        && offset == pw.received()
        && len <= pw.seq_end - offset;
    if !valid {
        let pw = writes.pending.remove(&itt);
        drop(writes);
        shared.responder.reject(reject::INVALID_PDU_FIELD, &pdu.bhs);
        if let Some(pw) = pw {
            // DATA PHASE ERROR
            end(shared, pw, Some((0x4b, 0x00)));
        }
        return;
    }
    pw.job.data.extend_from_slice(&pdu.data);
    pw.datasn += 1;
    let received = pw.received();
    if received == pw.job.edtl {
        let Some(pw) = writes.pending.remove(&itt) else {
            return;
        };
        drop(writes);
        shared.dispatch(pw.job);
        return;
    }
    if pdu.final_bit() || received == pw.seq_end {
        pw.open = false;
        solicit(shared, &mut writes, itt);
    }
}
