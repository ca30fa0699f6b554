//! README's test command (`./test.sh`) on a machine that lacks the clients and cannot
//! install them: it must stop before any test with one message that names every missing
//! package and how to get it, and never start cargo.
//!
//! The script runs with a PATH that holds only bash and `id`, so every probe fails, and as
//! a user who is not root (as `nobody` through setpriv when the suite runs as root), so it
//! may not install.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn which(tool: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&found.stdout).trim().to_owned()
}

#[test]
fn without_clients_and_rights_it_names_what_is_missing_and_runs_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = root.join("test.sh");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("test.sh"),
        &script,
    )
    .unwrap();
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["bash", "id"] {
        std::os::unix::fs::symlink(which(tool), bin.join(tool)).unwrap();
    }

    let mut command = if running_as_root() {
        if !common::tools::present(&[&common::tools::SETPRIV]) {
            return;
        }
        // By its full path: the child's PATH below has no setpriv in it.
        let mut command = Command::new(which("setpriv"));
        command.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        command.arg(bin.join("bash"));
        command
    } else {
        Command::new(bin.join("bash"))
    };
    let out = command
        .arg(&script)
        .env_clear()
        .env("PATH", &bin)
        .current_dir(root)
        .output()
        .expect("run test.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    for package in [
        "fio",
        "libnbd-bin",
        "nbdkit",
        "qemu-utils",
        "util-linux",
        "python3-venv",
        "libiscsi-bin",
        "libssl-dev",
        "pkg-config",
    ] {
        assert!(stderr.contains(package), "{package} not named: {stderr}");
    }
    assert!(stderr.contains("apt-get install -y fio"), "{stderr}");
    assert!(
        !stdout.contains("installing"),
        "it tried to install: {stdout}"
    );
    assert!(!root.join("target").exists(), "it went past the check");
}
