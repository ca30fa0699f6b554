//! Waiting until one descriptor can be read or written: the one wrapper around `poll(2)`
//! that the accept loops and the non-blocking sockets (NBD, TLS, iSCSI, management) use.
//!
//! Promises: a wait never blocks longer than its timeout (a zero timeout never blocks), and
//! never fails. A wait that a signal interrupts (`EINTR`), or that poll refuses, reads as
//! [`Readiness::NotYet`], like a timeout: every caller's next step is a non-blocking call
//! on the descriptor, which succeeds, reports the real error, or leads to another wait.

use std::os::fd::RawFd;
use std::time::Duration;

/// What a wait is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Bytes to read, or a connection to accept on a listener.
    Readable,
    /// Room to write.
    Writable,
}

/// What a wait saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The descriptor is ready for what was asked.
    Ready,
    /// Not ready for what was asked, but an error or hang-up is pending on the descriptor:
    /// the next read or write reports it.
    Failed,
    /// Nothing within the timeout (or the wait was interrupted).
    NotYet,
}

impl Readiness {
    /// True when the next call on the descriptor will not just block again: it is ready,
    /// or it will report an error or hang-up.
    pub fn is_settled(self) -> bool {
        self != Readiness::NotYet
    }
}

/// Waits up to `timeout` (rounded down to whole milliseconds, at most `c_int::MAX` of
/// them) until `fd` is ready for `interest`.
pub fn wait(fd: RawFd, interest: Interest, timeout: Duration) -> Readiness {
    let events = match interest {
        Interest::Readable => libc::POLLIN,
        Interest::Writable => libc::POLLOUT,
    };
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is one valid, initialised pollfd on our stack for the duration of
    // the call, matching the count of 1; poll only writes its `revents` field. A closed or
    // reused `fd` cannot make the call unsound: poll reports POLLNVAL or waits on it.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if ready <= 0 {
        Readiness::NotYet
    } else if pollfd.revents & events != 0 {
        Readiness::Ready
    } else {
        Readiness::Failed
    }
}

/// Waits up to `timeout` until `fd` has bytes to read or a connection to accept.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> Readiness {
    wait(fd, Interest::Readable, timeout)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_socket_is_readable_only_once_bytes_arrive() {
        let (mut near, far) = UnixStream::pair().expect("a socket pair");
        let fd = far.as_raw_fd();
        assert_eq!(wait_readable(fd, Duration::ZERO), Readiness::NotYet);
        assert_eq!(
            wait_readable(fd, Duration::from_millis(1)),
            Readiness::NotYet
        );
        assert_eq!(
            wait(fd, Interest::Writable, Duration::ZERO),
            Readiness::Ready
        );
        near.write_all(b"x").expect("a write to the pair");
        assert_eq!(wait_readable(fd, Duration::ZERO), Readiness::Ready);
    }

    #[test]
    fn a_hang_up_settles_the_wait() {
        let (near, far) = UnixStream::pair().expect("a socket pair");
        drop(near);
        // A closed peer reads as end of file: readable, so a reader sees the 0.
        let seen = wait_readable(far.as_raw_fd(), Duration::ZERO);
        assert!(seen.is_settled(), "{seen:?}");
    }

    #[test]
    fn a_negative_descriptor_only_times_out() {
        // poll ignores a negative descriptor, so the wait runs out with nothing seen.
        assert_eq!(wait_readable(-1, Duration::ZERO), Readiness::NotYet);
    }
}
