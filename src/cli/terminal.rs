//! Reading a password from the terminal on stdin with echo off (the CLI's only `unsafe`:
//! the termios calls).
//!
//! Echo is turned off with `tcsetattr` and restored by a guard when the line has been read,
//! also when reading fails. `ECHONL` stays on so the operator still sees the line end.

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::{AsRawFd, RawFd};

/// Whether stdin is a terminal (and so may be asked for a password).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Restores the terminal settings it holds when dropped.
struct EchoRestore {
    fd: RawFd,
    saved: libc::termios,
}

impl Drop for EchoRestore {
    fn drop(&mut self) {
        // SAFETY: `fd` is the process's stdin, open for the whole run, and `saved` is a
        // termios that `tcgetattr` filled for it.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Writes `prompt` to stderr and reads one line from stdin without echoing it.
pub fn read_password(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    let failed = |what: &str| {
        format!(
            "cannot {what} the terminal: {}",
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: termios is a plain C struct for which all zero bytes is a valid value;
    // tcgetattr overwrites it.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is stdin, open for the whole run; `saved` is a valid termios to fill.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(failed("read the settings of"));
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above; `quiet` is the terminal's own settings with echo off.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(failed("turn off the echo of"));
    }
    let _restore = EchoRestore { fd, saved };

    let mut stderr = std::io::stderr();
    let _ = stderr.write_all(prompt.as_bytes());
    let _ = stderr.flush();
    let mut line = String::new();
    match stdin.lock().read_line(&mut line) {
        Ok(0) => Err("no password typed (end of input)".to_owned()),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
        Err(error) => Err(format!("cannot read the password: {error}")),
    }
}
