//! The heal thread: while any drive is out, it rebuilds failed drives into spare space and
//! copies replaced drives back, a few segments at a time, resting in proportion to its own
//! work while hosts are reading (the priority sets how much). Drive events go to the event
//! log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::io::IoRing;
use crate::layout::{Array, DriveEvent};
use crate::meta::MetaStore;
use crate::mgmt::events::EventLog;

/// Segments healed between two looks at the host load.
const SEGMENTS_PER_STEP: usize = 4;
/// Nap while nothing needs healing.
const IDLE: Duration = Duration::from_millis(200);

/// Sends the array's drive events to the event log.
pub(super) fn report_drive_events(array: &Array, events: Arc<EventLog>) {
    array.set_listener(move |event| {
        let (code, description) = describe(&event);
        events.raise(code, description, None, None);
    });
}

fn describe(event: &DriveEvent) -> (&'static str, String) {
    match event {
        DriveEvent::Failed {
            drive,
            name,
            reason,
        } => (
            "DRIVE_FAILED",
            format!(
                "Drive {drive} ({name}) failed: {reason}. Its data is read from parity and rebuilt into spare space; replace it with `troika drive replace {drive} --path NEW`"
            ),
        ),
        DriveEvent::RebuildStarted {
            drive,
            name,
            segments,
        } => (
            "REBUILD_STARTED",
            format!(
                "The rebuild of drive {drive} ({name}) into distributed spare space started ({segments} segments to visit; only allocated ones are read)"
            ),
        ),
        DriveEvent::RebuildCompleted {
            drive,
            name,
            bytes,
            seconds,
        } => {
            let gib = *bytes as f64 / (1u64 << 30) as f64;
            let rate = if *seconds > 0.0 {
                *bytes as f64 / 1e6 / seconds
            } else {
                0.0
            };
            (
                "REBUILD_COMPLETED",
                format!(
                    "The rebuild of drive {drive} ({name}) completed: {gib:.2} GiB in {seconds:.1} s ({rate:.1} MB/s); its data is now in distributed spare space"
                ),
            )
        }
        DriveEvent::CopybackCompleted { drive, name } => (
            "DRIVE_COPYBACK_COMPLETED",
            format!(
                "Drive {drive} ({name}) was replaced and its data copied back; it is ACTIVE and its spare space is free"
            ),
        ),
        DriveEvent::RowsLost { rows, first_row } => (
            "ROWS_LOST",
            format!(
                "{rows} row(s), the first row {first_row}, lost more units to failed drives than parity can rebuild; their blocks answer a media error. Restore the affected volumes from a copy"
            ),
        ),
    }
}

/// Starts the heal thread.
pub(super) fn spawn(meta: Arc<MetaStore>, shutdown: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::Builder::new()
        .name("heal".into())
        .spawn(move || run(&meta, &shutdown))
        .expect("the node needs a heal thread; the process is out of threads")
}

fn run(meta: &MetaStore, shutdown: &AtomicBool) {
    let mut ring = match IoRing::new(64) {
        Ok(ring) => ring,
        Err(err) => {
            crate::say!(
                "troika: the heal thread cannot make an io_uring ({err}); failed drives will not be rebuilt"
            );
            return;
        }
    };
    let array = meta.array();
    let mut buffers = array.heal_buffers();
    while !shutdown.load(Ordering::Acquire) {
        if !array.is_degraded() {
            thread::sleep(IDLE);
            continue;
        }
        let reads_before = array.reads_served();
        let started = Instant::now();
        let in_use = |segment: u64| meta.state().alloc.may_hold_data(segment);
        match array.heal_step(&mut ring, &mut buffers, &in_use, SEGMENTS_PER_STEP) {
            Ok(true) => {}
            Ok(false) => {
                thread::sleep(IDLE);
                continue;
            }
            Err(err) => {
                crate::say!("troika: heal step failed ({err}); trying again");
                thread::sleep(IDLE);
                continue;
            }
        }
        // The heal's own reads are not counted: rest only when others read meanwhile.
        let busy = array.reads_served() > reads_before;
        if busy {
            let rest = started
                .elapsed()
                .mul_f64(array.heal_priority().rest_factor());
            thread::sleep(rest.min(Duration::from_secs(1)));
        }
    }
}
