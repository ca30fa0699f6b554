//! The device layer: io_uring rings, aligned buffers and devices opened for direct I/O.
//!
//! What it promises:
//!
//! - **Direct I/O.** Every [`Device`] (a regular file or a block device) is opened
//!   `O_RDWR | O_DIRECT | O_CLOEXEC`, so data goes to media without the page cache; a
//!   filesystem that refuses O_DIRECT is reported as such when the device is opened.
//! - **Alignment.** Buffers, lengths and offsets of reads and writes are multiples of
//!   [`ALIGN`] (4096). [`AlignedBuf`] and [`BufferPool`] hand out such buffers; a misaligned
//!   request fails with `EINVAL` and is never submitted.
//! - **An operation owns its buffer until its completion arrives.** [`IoRing::execute`]
//!   borrows every request's buffer for the whole call and returns only when every
//!   operation it submitted has completed, also when unwinding; if the kernel cannot be
//!   waited on, the process aborts rather than free memory the kernel may still write.
//! - **A full ring is back-pressure.** In-flight operations are capped at the completion
//!   queue size; when the ring is full, `execute` waits for completions and pushes the
//!   rest. Nothing is dropped, and short transfers, `EINTR` and `EAGAIN` are continued.
//! - **Batched submission.** One `io_uring_enter` submits everything that fits.
//! - **No per-request allocation in steady state.** A ring keeps its scratch vectors; a
//!   [`BufferPool`] allocates all its buffers up front and blocks when they are all in use.
//! - **Errors are reported, not retried:** a failed read, write or sync returns its error
//!   to the caller (a failed sync is a durability failure the caller must act on).
//! - **Simulated latency.** A device opened with a
//!   [`LatencyModel`](crate::hw::LatencyModel) does not report a
//!   completion before the modelled service time has passed (for hardware-in-the-loop
//!   rigs on sparse files).
//!
//! What it assumes: Linux 5.6+ with io_uring enabled ([`probe`] checks at start-up), and
//! that a ring is used by one thread ([`IoRing`] is `Send`, not `Sync`; reactors own one,
//! other threads use [`with_thread_ring`]).

mod buf;
mod device;
pub mod faults;
mod ring;

#[cfg(test)]
mod tests;

use std::cell::RefCell;

use io_uring::{IoUring, Probe, opcode};

pub use self::buf::{ALIGN, AlignedBuf, BufferPool, PooledBuf};
pub use self::device::{Device, DeviceError};
pub use self::faults::{FaultEffect, FaultOp, FaultPlane, FaultRule, FaultSpec, FaultTrigger};
pub use self::ring::{IoKind, IoRequest, IoRing};

/// Submission slots of a thread's own ring.
const THREAD_RING_ENTRIES: u32 = 256;

thread_local! {
    static THREAD_RING: RefCell<Option<IoRing>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's own ring (created on first use, 256 entries), for threads
/// such as connection workers that issue media I/O now and then. A nested call gets a
/// temporary ring of its own.
///
/// # Panics
/// If io_uring cannot be set up; [`probe`] at start-up reports that as an operator message
/// before any thread gets here.
pub fn with_thread_ring<R>(f: impl FnOnce(&mut IoRing) -> R) -> R {
    let cached = THREAD_RING.with(|slot| slot.borrow_mut().take());
    let mut ring = match cached {
        Some(ring) => ring,
        None => match IoRing::new(THREAD_RING_ENTRIES) {
            Ok(ring) => ring,
            Err(e) => panic!("cannot create this thread's io_uring ring: {e}"),
        },
    };
    let result = f(&mut ring);
    THREAD_RING.with(|slot| *slot.borrow_mut() = Some(ring));
    result
}

/// Checks that io_uring works and supports the operations troika uses (read, write,
/// fsync). Returns an operator-facing message otherwise.
pub fn probe() -> Result<(), String> {
    const ADVICE: &str =
        "troika needs Linux 5.6+ with io_uring enabled (check /proc/sys/kernel/io_uring_disabled)";
    let ring = IoUring::new(8).map_err(|e| {
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map(|v| format!(" (kernel.io_uring_disabled = {})", v.trim()))
            .unwrap_or_default();
        format!("io_uring is not available: {e}{disabled}; {ADVICE}")
    })?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        format!("io_uring is not available: cannot probe its operations: {e}; {ADVICE}")
    })?;
    let needed = [
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Fsync::CODE, "FSYNC"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "io_uring is not available: the kernel lacks the {} operation(s); {ADVICE}",
            missing.join(", ")
        ))
    }
}
