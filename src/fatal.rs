//! Durability failures stop the node, one way.
//!
//! What it promises: when metadata or data cannot be made durable (a journal write or
//! fsync, a checkpoint, a superblock, a row write that would leave a row below its
//! redundancy, the vault), [`durability_failure`] ends the process with exit status 2
//! after one operator message naming the device and the operation, and after an event
//! written where it can be. It never returns, so the caller never answers success for what
//! was not committed and never goes on serving state that was not committed. A restart
//! recovers from media.
//!
//! Exactly one message: when several threads fail at once (the journal's group-commit
//! followers see the leader's failure), the first one speaks and exits; the others park
//! until the exit takes them.
//!
//! Unit tests (`cfg(test)` of the library) share one process, so there
//! [`durability_failure`] panics with the same message instead of exiting; a test expects
//! the panic (`std::panic::catch_unwind` or `#[should_panic]`) and then reopens the store
//! from media as a restart would. Nothing is written to the event sink in that case, and
//! every failure speaks (tests fail independently of each other).

use std::fmt;
use std::sync::OnceLock;

/// Exit status of a node stopped by a durability failure.
pub const EXIT_DURABILITY: i32 = 2;

/// Where the stop's event goes (the node's event log), set once at start.
type EventSink = Box<dyn Fn(&str, &str) + Send + Sync>;
static EVENT_SINK: OnceLock<EventSink> = OnceLock::new();

/// Sets where [`durability_failure`] writes its event (`code`, `description`); the sink
/// must write synchronously and durably as far as it can, and must not block for long
/// (it may be called while the failing thread holds any lock of the node, the event
/// log's included).
pub fn set_event_sink(sink: impl Fn(&str, &str) + Send + Sync + 'static) {
    let _ = EVENT_SINK.set(Box::new(sink));
}

/// The operator message of a durability failure.
fn describe(device: &str, operation: &str, error: &dyn fmt::Display) -> String {
    format!(
        "durability failure: {operation} on {device} failed: {error}; the node stopped so it \
         never acknowledges or serves what was not committed; check the device, then restart \
         the node to recover from media"
    )
}

/// Stops the node: `device` (e.g. `ssd0`, `nlsas3`) failed `operation` (e.g. "journal
/// fsync") with `error`. Writes one message and an event, then exits with status 2 without
/// running any clean-up (a clean stop would destage and checkpoint through the failed
/// device). Under `cfg(test)` it panics with the message instead (see the module doc).
#[cfg(not(test))]
pub fn durability_failure(device: &str, operation: &str, error: &dyn fmt::Display) -> ! {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOPPING: AtomicBool = AtomicBool::new(false);
    if STOPPING.swap(true, Ordering::AcqRel) {
        // Another thread is already stopping the node; its exit ends this one too.
        loop {
            std::thread::park();
        }
    }
    let description = describe(device, operation, error);
    crate::say!("troika: {description}");
    if let Some(sink) = EVENT_SINK.get() {
        sink("SYSTEM_DURABILITY_FAILURE", &description);
    }
    // SAFETY: _exit ends the process at once; it touches no memory of ours.
    unsafe { libc::_exit(EXIT_DURABILITY) }
}

/// Unit-test form: panics with the message (see the module doc).
#[cfg(test)]
pub fn durability_failure(device: &str, operation: &str, error: &dyn fmt::Display) -> ! {
    panic!("troika: {}", describe(device, operation, error))
}
