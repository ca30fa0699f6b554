//! Durability failures stop the node, one way.
//!
//! What it promises: when metadata or data cannot be made durable (a journal write or
//! fsync, a checkpoint, a superblock, a row write that would leave a row below its
//! redundancy, the vault), [`durability_failure`] ends the process with exit status 2
//! after one operator message naming the device and the operation, and after an event
//! written where it can be. It never returns, so the caller never answers success for what
//! was not committed and never goes on serving state that was not committed. A restart
//! recovers from media.

use std::fmt;
use std::sync::OnceLock;

/// Exit status of a node stopped by a durability failure.
pub const EXIT_DURABILITY: i32 = 2;

/// Where the stop's event goes (the node's event log), set once at start.
type EventSink = Box<dyn Fn(&str, &str) + Send + Sync>;
static EVENT_SINK: OnceLock<EventSink> = OnceLock::new();

/// Sets where [`durability_failure`] writes its event (`code`, `description`); the sink
/// must write synchronously and durably as far as it can, and must not block for long.
pub fn set_event_sink(sink: impl Fn(&str, &str) + Send + Sync + 'static) {
    let _ = EVENT_SINK.set(Box::new(sink));
}

/// Stops the node: `device` (e.g. `ssd0`, `nlsas3`) failed `operation` (e.g. "journal
/// fsync") with `error`. Writes one message and an event, then exits with status 2 without
/// running any clean-up (a clean stop would destage and checkpoint through the failed
/// device).
pub fn durability_failure(device: &str, operation: &str, error: &dyn fmt::Display) -> ! {
    let description = format!(
        "durability failure: {operation} on {device} failed: {error}; the node stopped so it \
         never acknowledges or serves what was not committed; check the device, then restart \
         the node to recover from media"
    );
    crate::say!("troika: {description}");
    if let Some(sink) = EVENT_SINK.get() {
        sink("SYSTEM_DURABILITY_FAILURE", &description);
    }
    // SAFETY: _exit ends the process at once; it touches no memory of ours.
    unsafe { libc::_exit(EXIT_DURABILITY) }
}
