//! Operator messages: what the node says on stderr.
//!
//! What it promises: writing a message never stops the node. A closed pipe (the terminal's
//! `tee` died), a full disk behind a redirect, or any other write error is counted and
//! otherwise ignored; `eprintln!` would panic on such an error instead, so the node's own
//! code says things through [`say!`](crate::say) only.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Messages that could not be written (closed pipe, full disk, ...).
static LOST_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// Writes one line to stderr; a failure is counted, never raised.
pub fn say(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    if writeln!(err, "{args}").is_err() {
        LOST_MESSAGES.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many messages could not be written since the process started.
pub fn lost_messages() -> u64 {
    LOST_MESSAGES.load(Ordering::Relaxed)
}

/// `say!("troika: ...", args)`: like `eprintln!`, but a write error never panics.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(format_args!($($arg)*))
    };
}
