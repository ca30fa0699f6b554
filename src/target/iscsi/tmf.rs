//! Task management (RFC 7143 11.5/11.6): ABORT TASK, ABORT TASK SET, CLEAR TASK SET,
//! LOGICAL UNIT RESET, TARGET WARM RESET, TARGET COLD RESET.
//!
//! Aborted tasks send no response; the TMF response goes out only after every affected
//! task has left its worker, so it always follows anything the tasks sent. CLEAR ACA and
//! TASK REASSIGN answer "function not supported" (5) / "reassignment not supported" (4).
//! A cold reset closes the connection after its response.

use std::sync::PoisonError;

// cycle: task management is a part of the connection's state machine, split out by size;
// it aborts the connection's tasks and their pending Data-Out.
use super::connection::{Shared, Task, admit};
// cycle: as above, the pending Data-Out of aborted tasks.
use super::dataout;
use super::pdu::{self, BHS_LEN, Pdu, op};
use super::session::lun_from_wire;

const COMPLETE: u8 = 0;
const NO_TASK: u8 = 1;
const NO_LUN: u8 = 2;
const REASSIGN_UNSUPPORTED: u8 = 4;
const UNSUPPORTED: u8 = 5;

/// Handles one TMF request; false when the connection must close.
pub fn request(shared: &Shared<'_>, pdu: &Pdu) -> bool {
    if !admit(shared, pdu, false) {
        return true;
    }
    let function = pdu.flags() & 0x7f;
    let lun_field = pdu.lun();
    let response = match (function, shared.sink) {
        (_, None) => UNSUPPORTED,
        (1, Some(_)) => abort_task(shared, pdu.field(20), pdu.field(32), pdu.cmdsn()),
        (2 | 4, Some(sink)) => match lun_from_wire(lun_field) {
            Some(lun) if sink.luns().contains(&lun) => {
                abort_where(shared, |l| l == lun_field);
                COMPLETE
            }
            _ => NO_LUN,
        },
        (5, Some(sink)) => match lun_from_wire(lun_field) {
            Some(lun) if sink.luns().contains(&lun) => {
                abort_where(shared, |l| l == lun_field);
                if sink.lun_reset(&shared.nexus, lun) {
                    COMPLETE
                } else {
                    NO_LUN
                }
            }
            _ => NO_LUN,
        },
        (6 | 7, Some(sink)) => {
            abort_where(shared, |_| true);
            for lun in sink.luns() {
                sink.lun_reset(&shared.nexus, lun);
            }
            COMPLETE
        }
        (8, Some(_)) => REASSIGN_UNSUPPORTED,
        _ => UNSUPPORTED,
    };
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op::TASK_MGMT_RESPONSE;
    bhs[1] = 0x80;
    bhs[2] = response;
    pdu::put32(&mut bhs, 16, pdu.itt());
    let sent = shared.responder.send(bhs, &[], true);
    sent && !(function == 7 && response == COMPLETE)
}

fn abort_task(shared: &Shared<'_>, referenced: u32, ref_cmdsn: u32, cmdsn: u32) -> u8 {
    if dataout::abort(shared, referenced) {
        return COMPLETE;
    }
    let found = {
        let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        match tasks.get_mut(&referenced) {
            Some(task) => {
                task.aborted = true;
                true
            }
            None => false,
        }
    };
    if found {
        wait_for(shared, referenced);
        return COMPLETE;
    }
    // RFC 7143 11.6.1 b): not received yet but inside the window and before this TMF.
    let before = (cmdsn.wrapping_sub(ref_cmdsn) as i32) > 0;
    if shared.responder.in_window(ref_cmdsn) && before {
        COMPLETE
    } else {
        NO_TASK
    }
}

fn wait_for(shared: &Shared<'_>, itt: u32) {
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    while tasks.contains_key(&itt) && !shared.stop.load(std::sync::atomic::Ordering::Acquire) {
        tasks = shared
            .tasks_done
            .wait_timeout(tasks, std::time::Duration::from_millis(50))
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Aborts every task (pending or dispatched) whose LUN field satisfies `which`, and waits
/// until none is left executing.
fn abort_where(shared: &Shared<'_>, which: impl Fn(u64) -> bool + Copy) {
    dataout::abort_where(shared, which);
    {
        let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for task in tasks.values_mut() {
            if which(task.lun_field) {
                task.aborted = true;
            }
        }
    }
    shared.wait_tasks(|t: &Task| t.aborted && which(t.lun_field));
}
