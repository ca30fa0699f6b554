//! The external clients the tests drive, and what a test does when one is missing.
//!
//! A missing client is never silent. Under `./test.sh` (README's test command, which
//! installs every client and sets `TROIKA_REQUIRE_TOOLS=1`) the test fails. Under a plain
//! `cargo test` it prints a `SKIPPED` line naming the Debian package to install, written
//! straight to the process's stderr: libtest captures only the `print!` family, so the
//! line shows in the normal output of a passing run, not only in captured output.
//!
//! The older per-suite switches (`TROIKA_REQUIRE_FIO`, `TROIKA_REQUIRE_ISCSI`,
//! `TROIKA_REQUIRE_INFINISDK`) still make their own tools required.

use std::io::Write;
use std::process::Command;

/// A client program a test runs, with the package that provides it.
pub struct Tool {
    /// What the test runs (the command name, or a description for a probe).
    pub name: &'static str,
    /// The Debian package to install.
    pub package: &'static str,
    /// The environment switch, besides `TROIKA_REQUIRE_TOOLS`, that makes it required.
    require_env: Option<&'static str>,
    probe: fn(&'static str) -> bool,
}

const fn on_path(name: &'static str, package: &'static str) -> Tool {
    Tool {
        name,
        package,
        require_env: None,
        probe: command_exists,
    }
}

const fn iscsi(name: &'static str) -> Tool {
    Tool {
        name,
        package: "libiscsi-bin",
        require_env: Some("TROIKA_REQUIRE_ISCSI"),
        probe: command_exists,
    }
}

pub const FIO_NBD: Tool = Tool {
    name: "fio (with its nbd engine)",
    package: "fio",
    require_env: Some("TROIKA_REQUIRE_FIO"),
    probe: fio_has_nbd_engine,
};
pub const NBDINFO: Tool = on_path("nbdinfo", "libnbd-bin");
pub const NBDCOPY: Tool = on_path("nbdcopy", "libnbd-bin");
pub const QEMU_IO: Tool = on_path("qemu-io", "qemu-utils");
pub const LOSETUP: Tool = on_path("losetup", "util-linux");
pub const SETPRIV: Tool = on_path("setpriv", "util-linux");
pub const ISCSI_TEST_CU: Tool = iscsi("iscsi-test-cu");
pub const ISCSI_LS: Tool = iscsi("iscsi-ls");
pub const ISCSI_PERF: Tool = iscsi("iscsi-perf");

/// True when every tool in `tools` is installed. Otherwise the test is skipped visibly (or
/// fails, when the tools are required) and the caller returns.
pub fn present(tools: &[&Tool]) -> bool {
    let missing: Vec<&&Tool> = tools
        .iter()
        .filter(|tool| !(tool.probe)(tool.name))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let names: Vec<&str> = missing.iter().map(|tool| tool.name).collect();
    let mut packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    packages.dedup();
    let required = required()
        || missing.iter().any(|tool| {
            tool.require_env
                .is_some_and(|name| std::env::var_os(name).is_some())
        });
    assert!(
        !required,
        "{} is required but not installed; install it with `apt-get install -y {}`",
        names.join(", "),
        packages.join(" ")
    );
    skipped(
        &format!("{} not installed", names.join(", ")),
        &format!(
            "apt-get install -y {} (or run ./test.sh as root)",
            packages.join(" ")
        ),
    );
    false
}

/// True when the suite runs under `./test.sh`, which promises every client is installed.
pub fn required() -> bool {
    std::env::var_os("TROIKA_REQUIRE_TOOLS").is_some()
}

/// Says on the terminal that the running test (or the part of it named in `reason`) was
/// skipped, why, and what would let it run.
pub fn skipped(reason: &str, remedy: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Straight to fd 2, past libtest's capture; a failed write to the terminal is not a
    // test failure.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason}; to run it: {remedy}"
    );
}

fn command_exists(name: &'static str) -> bool {
    super::have(name)
}

fn fio_has_nbd_engine(_: &'static str) -> bool {
    Command::new("fio")
        .arg("--enghelp")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "nbd")
        })
        .unwrap_or(false)
}
