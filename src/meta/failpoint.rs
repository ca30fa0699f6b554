//! Test-only failpoints of the metadata layer: make the journal's or the checkpoint's next
//! write or sync fail as the device would (EIO), without a failing device.
//!
//! Armed per thread: unit tests run side by side in one process, and the writes these
//! points guard run on the thread that asks for them (a commit, a checkpoint). A point
//! fires once, on its `skip + 1`-th hit after being armed.

use std::cell::RefCell;
use std::io;

/// Where a write or sync can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failpoint {
    /// A journal batch write fails with nothing written.
    JournalWrite,
    /// A journal batch write puts only the batch's first 4 KiB on media, then fails.
    JournalTornWrite,
    /// The journal's fdatasync after its writes fails (the writes did land).
    JournalSync,
    /// A checkpoint image write fails with nothing written.
    CheckpointWrite,
    /// A superblock write fails with nothing written.
    SuperblockWrite,
}

thread_local! {
    static ARMED: RefCell<Vec<(Failpoint, u32)>> = const { RefCell::new(Vec::new()) };
}

/// Makes the `skip + 1`-th hit of `point` on this thread fail (once).
pub(crate) fn arm(point: Failpoint, skip: u32) {
    ARMED.with(|armed| armed.borrow_mut().push((point, skip)));
}

/// Whether `point` fires now on this thread.
pub(crate) fn fires(point: Failpoint) -> bool {
    ARMED.with(|armed| {
        let mut armed = armed.borrow_mut();
        let Some(index) = armed.iter().position(|(armed, _)| *armed == point) else {
            return false;
        };
        if armed[index].1 == 0 {
            armed.remove(index);
            true
        } else {
            armed[index].1 -= 1;
            false
        }
    })
}

/// `Err(EIO)` when `point` fires now on this thread.
pub(crate) fn check(point: Failpoint) -> io::Result<()> {
    if fires(point) {
        return Err(injected());
    }
    Ok(())
}

/// The error an armed point gives.
pub(crate) fn injected() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}
