//! Full feature phase of one connection: this thread reads every PDU, handles the short
//! ones itself (NOP, text, logout, task management, Data-Out bookkeeping) and hands each
//! SCSI command whose data is complete to a pool of workers, which execute it on the
//! session's [`CommandSink`] and send its response under the writer lock. Responses
//! therefore go out in completion order, matched by ITT.
//!
//! Promises: a command is admitted only inside the CmdSN window (others are dropped
//! silently); write data is accepted only as negotiated (immediate, unsolicited up to
//! FirstBurstLength, then one R2T at a time of at most MaxBurstLength) and never beyond
//! the expected length; buffered write data of a connection stays under
//! [`dataout::R2T_BUDGET`]; a broken stream closes only this connection.

use std::collections::HashMap;
use std::net::TcpStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::IscsiConfig;
use super::dataout::{self, Writes};
use super::keys::{self, Params};
use super::pdu::{self, BHS_LEN, NO_TAG, Pdu, PduError, PduLimits, op, reject};
use super::respond::{self, Completion, Responder};
use super::session::{CommandSink, Directory, lun_from_wire};
use super::text;
use super::wire::{PduReader, ReadError};
use crate::target::scsi::{Nexus, Response, status};

/// Largest transfer one command may announce (EDTL); larger ones get CHECK CONDITION.
pub const MAX_TRANSFER: u32 = 64 << 20;
/// Commands moving at most this many bytes may run on the reading thread.
const INLINE_MAX: u32 = 64 << 10;
/// Buffers kept between commands are trimmed to this.
const KEEP_BUFFER: usize = 1 << 20;

/// A SCSI command ready to execute.
pub struct Job {
    pub itt: u32,
    pub lun_field: u64,
    pub cdb: Vec<u8>,
    pub data: Vec<u8>,
    pub edtl: u32,
    pub read: bool,
    pub wanted: Option<u32>,
    /// Counted in the window's in-flight commands (non-immediate).
    pub counted: bool,
    /// Solicited bytes charged to the connection's budget ([`Shared::held`]).
    pub charged: usize,
}

/// What the task table knows of a dispatched command.
pub struct Task {
    pub lun_field: u64,
    pub aborted: bool,
}

/// State shared by the reader and the workers.
pub struct Shared<'a> {
    pub responder: Responder<'a>,
    pub nexus: Nexus,
    pub sink: Option<&'a dyn CommandSink>,
    pub params: Params,
    pub tasks: Mutex<HashMap<u32, Task>>,
    pub tasks_done: Condvar,
    pub writes: Mutex<Writes>,
    /// Solicited write data bytes charged by commands of this connection.
    pub held: AtomicUsize,
    pub stop: &'a AtomicBool,
    /// Workers waiting for a job.
    idle: AtomicUsize,
    /// The reader's own response buffer (fast path).
    inline: Mutex<Response>,
    pool: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    jobs: Mutex<Option<Sender<Job>>>,
}

impl Shared<'_> {
    pub fn buffer(&self) -> Vec<u8> {
        self.pool.1.try_recv().unwrap_or_default()
    }

    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        if buf.capacity() > KEEP_BUFFER {
            buf = Vec::new();
        }
        let _ = self.pool.0.try_send(buf);
    }

    /// Hands a complete command to the workers.
    pub fn dispatch(&self, job: Job) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                job.itt,
                Task {
                    lun_field: job.lun_field,
                    aborted: false,
                },
            );
        // Fast path: when every worker is busy, a small command runs here on the reading
        // thread rather than waiting in the queue (no hand-off, no wake-up).
        if let Some(sink) = self.sink
            && job.edtl <= INLINE_MAX
            && self.idle.load(Ordering::Acquire) == 0
        {
            let mut response = self.inline.lock().unwrap_or_else(PoisonError::into_inner);
            run(self, sink, job, &mut response);
            return;
        }
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            self.stop.store(true, Ordering::Release);
        }
    }

    /// Answers a command without executing it (bad CDB, bad data, unknown LUN...).
    pub fn fail(&self, itt: u32, lun_field: u64, counted: bool, key: u8, asc: u8, ascq: u8) {
        if counted {
            self.responder.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        let sense = respond::sense(key, asc, ascq);
        let ok = self.responder.complete(&Completion {
            itt,
            lun: lun_field,
            status: status::CHECK_CONDITION,
            data: &[],
            sense: &sense,
            edtl: 0,
            wanted: None,
            read: false,
        });
        if !ok {
            self.stop.store(true, Ordering::Release);
        }
    }

    /// Waits until no task matching `which` remains (bounded; the connection may stop).
    pub fn wait_tasks(&self, which: impl Fn(&Task) -> bool) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        while tasks.values().any(&which) && !self.stop.load(Ordering::Acquire) {
            tasks = self
                .tasks_done
                .wait_timeout(tasks, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Runs the full feature phase until logout, a broken stream or a stop flag.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    stream: &TcpStream,
    reader: &mut PduReader,
    params: Params,
    statsn: u32,
    exp_cmdsn: u32,
    nexus: Nexus,
    sink: Option<&dyn CommandSink>,
    dir: &dyn Directory,
    config: &IscsiConfig,
    flags: &[&AtomicBool],
    stop: &AtomicBool,
) {
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
    let pool = crossbeam_channel::bounded(config.queue_depth.max(1) as usize);
    let shared = Shared {
        responder: Responder::new(
            stream,
            &params,
            statsn,
            exp_cmdsn,
            config.queue_depth,
            flags,
        ),
        nexus,
        sink,
        params,
        tasks: Mutex::new(HashMap::new()),
        tasks_done: Condvar::new(),
        writes: Mutex::new(Writes::default()),
        held: AtomicUsize::new(0),
        stop,
        idle: AtomicUsize::new(0),
        inline: Mutex::new(Response::default()),
        pool,
        jobs: Mutex::new(Some(jobs_tx)),
    };
    std::thread::scope(|scope| {
        if let Some(sink) = sink {
            for _ in 0..config.workers_per_connection.max(1) {
                let rx = jobs_rx.clone();
                let shared = &shared;
                let spawned = std::thread::Builder::new()
                    .name("iscsi-worker".to_owned())
                    .spawn_scoped(scope, move || worker(shared, sink, rx));
                if spawned.is_err() {
                    break;
                }
            }
        }
        drop(jobs_rx);
        read_loop(&shared, reader, dir, flags);
        if flags.iter().any(|flag| flag.load(Ordering::Acquire)) {
            // The portal is closing (or the session was reinstated): ask for a logout.
            shared.responder.async_logout();
        }
        stop.store(true, Ordering::Release);
        // Workers drain the queue and exit once the sender is gone.
        shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    });
}

fn read_loop(
    shared: &Shared<'_>,
    reader: &mut PduReader,
    dir: &dyn Directory,
    flags: &[&AtomicBool],
) {
    let limits = PduLimits {
        header_digest: shared.params.header_digest,
        data_digest: shared.params.data_digest,
        max_data: shared.params.target_max_recv,
    };
    let mut pdu = Pdu::default();
    let mut text_in: Vec<u8> = Vec::new();
    let mut text_out: Vec<u8> = Vec::new();
    let mut cdb = Vec::new();
    let mut all: Vec<&AtomicBool> = flags.to_vec();
    all.push(shared.stop);
    loop {
        match reader.read_pdu(&mut pdu, &limits, &all) {
            Ok(()) => {}
            Err(ReadError::Closed) => return,
            Err(ReadError::Pdu(PduError::DataDigest)) => {
                if pdu.opcode() == op::DATA_OUT {
                    dataout::digest_error(shared, &pdu);
                } else {
                    shared.responder.reject(reject::DATA_DIGEST, &pdu.bhs);
                }
                continue;
            }
            Err(ReadError::Pdu(PduError::TooLong)) => {
                shared.responder.reject(reject::PROTOCOL_ERROR, &pdu.bhs);
                return;
            }
            Err(ReadError::Pdu(_)) => return,
        }
        let keep_going = match pdu.opcode() {
            op::SCSI_COMMAND => {
                scsi_command(shared, &pdu, &mut cdb);
                true
            }
            op::DATA_OUT => {
                dataout::data_out(shared, &pdu);
                true
            }
            op::NOP_OUT => nop_out(shared, &pdu),
            op::TEXT => text_request(shared, &pdu, dir, &mut text_in, &mut text_out),
            op::TASK_MGMT => super::tmf::request(shared, &pdu),
            op::LOGOUT => logout(shared, &pdu),
            op::LOGIN => {
                shared.responder.reject(reject::PROTOCOL_ERROR, &pdu.bhs);
                true
            }
            _ => {
                shared
                    .responder
                    .reject(reject::COMMAND_NOT_SUPPORTED, &pdu.bhs);
                true
            }
        };
        if !keep_going || shared.stop.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Takes a non-immediate PDU's CmdSN: false when outside the window (drop the PDU).
pub fn admit(shared: &Shared<'_>, pdu: &Pdu, counts: bool) -> bool {
    if pdu.immediate() {
        return true;
    }
    let responder = &shared.responder;
    if !responder.in_window(pdu.cmdsn()) {
        return false;
    }
    if counts {
        responder.inflight.fetch_add(1, Ordering::AcqRel);
    }
    responder
        .exp_cmdsn
        .store(pdu.cmdsn().wrapping_add(1), Ordering::Release);
    true
}

/// Bytes a write CDB transfers when the opcode says so.
fn write_length(cdb: &[u8]) -> Option<u32> {
    let block = crate::target::scsi::BLOCK_SIZE;
    let blocks = match *cdb.first()? {
        0x0a => match *cdb.get(4)? {
            0 => 256,
            n => n as u32,
        },
        0x2a | 0x2e => u16::from_be_bytes([*cdb.get(7)?, *cdb.get(8)?]) as u32,
        0xaa | 0xae => u32::from_be_bytes(cdb.get(6..10)?.try_into().ok()?),
        0x8a | 0x8e => u32::from_be_bytes(cdb.get(10..14)?.try_into().ok()?),
        0x89 => 2 * *cdb.get(13)? as u32,
        _ => return None,
    };
    blocks.checked_mul(block)
}

fn scsi_command(shared: &Shared<'_>, pdu: &Pdu, cdb: &mut Vec<u8>) {
    if shared.sink.is_none() {
        // Discovery sessions carry no SCSI commands.
        shared.responder.reject(reject::PROTOCOL_ERROR, &pdu.bhs);
        return;
    }
    let counted = !pdu.immediate();
    if !admit(shared, pdu, true) {
        return;
    }
    let itt = pdu.itt();
    let lun_field = pdu.lun();
    let flags = pdu.flags();
    let (read, write) = (flags & 0x40 != 0, flags & 0x20 != 0);
    let edtl = pdu.field(20);
    let Some(cdb) = pdu::cdb_of(pdu, cdb) else {
        if counted {
            shared.responder.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        shared.responder.reject(reject::INVALID_PDU_FIELD, &pdu.bhs);
        return;
    };
    let duplicate = shared
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(&itt)
        || dataout::is_pending(shared, itt);
    if duplicate || (read && write) || edtl > MAX_TRANSFER {
        // Bidirectional commands are not supported; a reused ITT is an initiator bug.
        shared.fail(itt, lun_field, counted, 0x05, 0x24, 0x00);
        return;
    }
    let immediate_len = pdu.data.len() as u32;
    if immediate_len > 0
        && (!write
            || !shared.params.immediate_data
            || immediate_len > edtl
            || immediate_len > shared.params.first_burst)
    {
        if counted {
            shared.responder.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        shared.responder.reject(reject::PROTOCOL_ERROR, &pdu.bhs);
        return;
    }
    let mut data = shared.buffer();
    data.extend_from_slice(&pdu.data);
    let job = Job {
        itt,
        lun_field,
        cdb: {
            let mut v = shared.buffer();
            v.extend_from_slice(cdb);
            v
        },
        data,
        edtl,
        read,
        wanted: write_length(cdb),
        counted,
        charged: 0,
    };
    if !write || immediate_len >= edtl {
        shared.dispatch(job);
        return;
    }
    let unsolicited = flags & 0x80 == 0 && !shared.params.initial_r2t;
    dataout::start(shared, job, unsolicited);
}

fn nop_out(shared: &Shared<'_>, pdu: &Pdu) -> bool {
    if !admit(shared, pdu, false) {
        return true;
    }
    if pdu.itt() == NO_TAG {
        // A ping answer or a CmdSN update: nothing to send.
        return true;
    }
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::NOP_IN;
    bhs[1] = 0x80;
    bhs[8..16].copy_from_slice(&pdu.bhs[8..16]);
    pdu::put32(&mut bhs, 16, pdu.itt());
    pdu::put32(&mut bhs, 20, NO_TAG);
    let echo = &pdu.data[..pdu.data.len().min(shared.responder.max_segment)];
    shared.responder.send(bhs, echo, true)
}

fn text_request(
    shared: &Shared<'_>,
    pdu: &Pdu,
    dir: &dyn Directory,
    text_in: &mut Vec<u8>,
    text_out: &mut Vec<u8>,
) -> bool {
    if !admit(shared, pdu, false) {
        return true;
    }
    if text_in.len() + pdu.data.len() > keys::MAX_TEXT {
        text_in.clear();
        return shared.responder.reject(reject::PROTOCOL_ERROR, &pdu.bhs);
    }
    text_in.extend_from_slice(&pdu.data);
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::TEXT_RESPONSE;
    bhs[8..16].copy_from_slice(&pdu.bhs[8..16]);
    pdu::put32(&mut bhs, 16, pdu.itt());
    pdu::put32(&mut bhs, 20, NO_TAG);
    if pdu.flags() & 0x40 != 0 {
        // More text follows: acknowledge, not final.
        return shared.responder.send(bhs, &[], true);
    }
    let result = text::answer(text_in, dir, text_out);
    text_in.clear();
    if result.is_err() {
        return shared.responder.reject(reject::PROTOCOL_ERROR, &pdu.bhs);
    }
    bhs[1] = 0x80;
    let len = text_out.len().min(shared.responder.max_segment);
    shared.responder.send(bhs, &text_out[..len], true)
}

fn logout(shared: &Shared<'_>, pdu: &Pdu) -> bool {
    if !admit(shared, pdu, false) {
        return true;
    }
    let reason = pdu.flags() & 0x7f;
    let response = match reason {
        0 | 1 => 0u8,
        // Connection recovery needs ErrorRecoveryLevel 2.
        2 => 2,
        _ => return shared.responder.reject(reject::INVALID_PDU_FIELD, &pdu.bhs),
    };
    if response == 0 {
        dataout::drop_all(shared);
        shared.wait_tasks(|_| true);
        // The nexus ends before the initiator hears so: another initiator that acts on
        // this logout (RESERVE after the holder logged out) must find the SPC-2
        // reservation gone.
        if let Some(sink) = shared.sink {
            sink.nexus_lost(&shared.nexus);
        }
    }
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::LOGOUT_RESPONSE;
    bhs[1] = 0x80;
    bhs[2] = response;
    pdu::put32(&mut bhs, 16, pdu.itt());
    bhs[40..42].copy_from_slice(&(shared.params.time2wait as u16).to_be_bytes());
    bhs[42..44].copy_from_slice(&(shared.params.time2retain as u16).to_be_bytes());
    let sent = shared.responder.send(bhs, &[], true);
    sent && response != 0
}

fn worker(shared: &Shared<'_>, sink: &dyn CommandSink, jobs: Receiver<Job>) {
    let mut response = Response::default();
    loop {
        shared.idle.fetch_add(1, Ordering::AcqRel);
        let next = jobs.recv();
        shared.idle.fetch_sub(1, Ordering::AcqRel);
        let Ok(job) = next else { break };
        run(shared, sink, job, &mut response);
    }
}

/// Executes one command and sends its result.
fn run(shared: &Shared<'_>, sink: &dyn CommandSink, job: Job, response: &mut Response) {
    {
        let aborted = |shared: &Shared<'_>| {
            shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&job.itt)
                .is_none_or(|t| t.aborted)
        };
        response.clear();
        // A closing portal runs nothing more: the initiator reissues on its next connection.
        let stopped = shared.stop.load(Ordering::Acquire) || shared.responder.stopping();
        if !stopped && !aborted(shared) {
            match lun_from_wire(job.lun_field) {
                Some(lun) => {
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        sink.execute(&shared.nexus, lun, &job.cdb, &job.data, response)
                    }));
                    if run.is_err() {
                        // The SCSI layer failed: INTERNAL TARGET FAILURE.
                        response.clear();
                        response.status = status::CHECK_CONDITION;
                        response
                            .sense
                            .extend_from_slice(&respond::sense(0x04, 0x44, 0x00));
                    }
                }
                None => {
                    response.status = status::CHECK_CONDITION;
                    response
                        .sense
                        .extend_from_slice(&respond::sense(0x05, 0x25, 0x00));
                }
            }
        }
        let was_aborted = {
            let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            let task = tasks.remove(&job.itt);
            task.is_none_or(|t| t.aborted)
        };
        if job.counted {
            shared.responder.inflight.fetch_sub(1, Ordering::AcqRel);
        }
        shared.held.fetch_sub(job.charged, Ordering::AcqRel);
        if !was_aborted && !stopped {
            let ok = shared.responder.complete(&Completion {
                itt: job.itt,
                lun: job.lun_field,
                status: response.status,
                data: &response.data_in,
                sense: &response.sense,
                edtl: job.edtl,
                wanted: job.wanted,
                read: job.read,
            });
            if !ok {
                shared.stop.store(true, Ordering::Release);
            }
        }
        shared.tasks_done.notify_all();
        if response.data_in.capacity() > KEEP_BUFFER {
            response.data_in = Vec::new();
        }
        shared.recycle(job.data);
        shared.recycle(job.cdb);
        dataout::resume_deferred(shared);
    }
}
