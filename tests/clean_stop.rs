//! SIGINT and SIGTERM always lead to the clean stop, and nothing the node's output does can
//! end it (issue 15 part 4). The real binary runs with its stdout and stderr piped into a
//! reader process, as in `troika serve 2>&1 | tee serve.log`:
//!
//! - the reader dies on Ctrl-C before the node writes its stop messages; the node still
//!   stops cleanly (exit 0, `SYSTEM_SHUTDOWN`) and every acknowledged, unflushed block
//!   reads back after a restart;
//! - the reader dies while the node serves; the node goes on serving and saying things
//!   (counted as lost), and stops cleanly;
//! - a second and a third SIGINT during a stop with real work (a slow destage) do not
//!   abort it: the node says what it is still doing, then exits 0 with the data intact.
//!
//! The reader is made to exit before the node is signalled, so the pipe is surely closed
//! when the node writes its stop messages (with one Ctrl-C for both, `tee` usually wins
//! that race, but not always).

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;
#[path = "common/stamp.rs"]
mod stamp;

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::nbd_client::NbdClient;
use common::{TestNode, ci_model};
use stamp::{BLOCK, read_versions, stamp};

/// How long a clean stop may take on a loaded CI machine.
const STOP_TIMEOUT: Duration = Duration::from_secs(180);
/// Blocks per NBD write (1 MiB).
const CHUNK_BLOCKS: u64 = 256;
/// The stamp tag of the test volume's blocks.
const TAG: u32 = 15;

/// A process reading the node's output into a file, like `tee` on a terminal.
struct Reader {
    child: Child,
    copy: PathBuf,
}

impl Reader {
    /// Starts the reader; returns it and the write end of its pipe for the node.
    fn start(copy: PathBuf) -> (Reader, OwnedFd) {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("exec cat > \"$0\"")
            .arg(&copy)
            .stdin(Stdio::piped());
        // A test run started in the background (`cargo test &`, nohup, some CI runners)
        // inherits SIGINT ignored; a terminal's `tee` does not, so the reader resets it.
        // SAFETY: between fork and exec only async-signal-safe calls run: signal(2).
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start the log reader");
        let pipe = OwnedFd::from(child.stdin.take().expect("the reader's stdin"));
        (Reader { child, copy }, pipe)
    }

    /// Ends the reader with SIGINT, as Ctrl-C ends `tee`, and waits until it is gone: from
    /// then on every write to the pipe fails with EPIPE.
    fn interrupt(mut self) -> String {
        // SAFETY: sending a signal to our own child process by pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let status = wait_child(&mut self.child, Duration::from_secs(10))
            .expect("the reader ends on SIGINT");
        assert!(
            !status.success(),
            "the reader ended by its signal: {status}"
        );
        std::fs::read_to_string(&self.copy).unwrap_or_default()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Writes `blocks` stamped blocks (version 1, each distinct) from block 0, acknowledged
/// and never flushed.
fn write_unflushed(client: &mut NbdClient, blocks: u64) {
    let mut buf = vec![0u8; CHUNK_BLOCKS as usize * BLOCK];
    for first in (0..blocks).step_by(CHUNK_BLOCKS as usize) {
        let count = CHUNK_BLOCKS.min(blocks - first);
        for (index, block) in buf.chunks_exact_mut(BLOCK).take(count as usize).enumerate() {
            stamp(TAG, first + index as u64, 1, block);
        }
        client
            .write(first * BLOCK as u64, &buf[..count as usize * BLOCK], 0)
            .expect("write");
    }
}

/// Every one of the first `blocks` blocks holds its version 1.
fn assert_all_written(node: &TestNode, blocks: u64) {
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect over NBD");
    let versions = read_versions(&mut client, TAG, 0, blocks)
        .expect("read back")
        .unwrap_or_else(|why| panic!("after the restart: {why}\n{}", node.log_text()));
    let lost = versions.iter().filter(|&&version| version != 1).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {blocks} acknowledged blocks did not survive the stop\n{}",
        node.log_text()
    );
    client.disconnect();
}

/// The `SYSTEM_SHUTDOWN` events' descriptions in the node's event log.
fn shutdown_events(node: &TestNode) -> Vec<String> {
    rest_unix::list(&node.mgmt_socket(), "events", "code=eq:SYSTEM_SHUTDOWN")
        .iter()
        .map(|event| event["description"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// One unlabelled counter or gauge from `/metrics` (asked with a bounded wait).
fn metric(node: &TestNode, name: &str) -> u64 {
    let (status, text) =
        rest_unix::call(&node.mgmt_socket(), "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics: {text}");
    let text = text.as_str().unwrap_or_default();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("/metrics has no {name}"))
}

/// Waits until the node's log holds `text` `times` times; false if it does not within
/// `timeout`.
fn wait_for_log(node: &TestNode, text: &str, times: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if node.log_text().matches(text).count() >= times {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Waits for the node's exit after a signal and requires status 0.
fn assert_clean_exit(node: &mut TestNode) {
    match node.wait_exit(STOP_TIMEOUT) {
        Some(status) => assert!(
            status.success(),
            "troika exited with {status}, not 0\n{}",
            node.log_text()
        ),
        None => panic!(
            "troika did not stop within {STOP_TIMEOUT:?}\n{}",
            node.log_text()
        ),
    }
}

#[test]
fn sigint_stops_cleanly_after_the_log_reader_died_on_it() {
    const BLOCKS: u64 = 8 * CHUNK_BLOCKS;
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let (reader, pipe) = Reader::start(copy_dir.path().join("serve.log"));
    let mut node = TestNode::start_with_output(ci_model(), pipe);
    node.pool_and_volume("p", "200M", "v", "64M");
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect over NBD");
    write_unflushed(&mut client, BLOCKS);
    let dirty = metric(&node, "troika_cache_dirty_bytes");

    // Ctrl-C: the reader goes first, then the node gets its SIGINT with the host still
    // connected and its writes only in cache.
    let said = reader.interrupt();
    assert!(said.contains("troika: serving"), "the reader saw: {said}");
    node.signal(libc::SIGINT);
    assert_clean_exit(&mut node);

    node.restart();
    assert_all_written(&node, BLOCKS);
    let shutdowns = shutdown_events(&node);
    assert_eq!(shutdowns.len(), 1, "{shutdowns:?}");
    assert!(
        shutdowns[0].contains("operator messages could not be written"),
        "the stop's messages met the closed pipe ({dirty} bytes were dirty at the signal): \
         {shutdowns:?}"
    );
    drop(client);
}

#[test]
fn node_serves_and_talks_on_after_its_log_reader_exits() {
    const BLOCKS: u64 = 2 * CHUNK_BLOCKS;
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let (reader, pipe) = Reader::start(copy_dir.path().join("serve.log"));
    let mut node = TestNode::start_with_output(ci_model(), pipe);
    node.pool_and_volume("p", "200M", "v", "64M");
    let said = reader.interrupt();
    assert!(said.contains("troika: serving"), "the reader saw: {said}");
    assert_eq!(metric(&node, "troika_console_lost_messages_total"), 0);

    // Each NBD session's end is said on stderr, now a pipe nobody reads.
    for _ in 0..3 {
        let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect");
        write_unflushed(&mut client, BLOCKS);
        client.disconnect();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&node, "troika_console_lost_messages_total") < 3 {
        assert!(
            Instant::now() < deadline,
            "the node did not say that three NBD sessions closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.cli_ok(&["vol", "create", "w", "--pool", "p", "--size", "16M"]);
    node.cli_ok(&["vol", "delete", "w"]);
    assert_all_written(&node, BLOCKS);

    node.signal(libc::SIGTERM);
    assert_clean_exit(&mut node);
    node.restart();
    assert_all_written(&node, BLOCKS);
    assert_eq!(shutdown_events(&node).len(), 1);
}

#[test]
fn sighup_from_a_closing_terminal_is_a_clean_stop() {
    const BLOCKS: u64 = 2 * CHUNK_BLOCKS;
    let mut node = TestNode::start();
    node.pool_and_volume("p", "200M", "v", "64M");
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect over NBD");
    write_unflushed(&mut client, BLOCKS);
    node.signal(libc::SIGHUP);
    assert_clean_exit(&mut node);
    node.restart();
    assert_all_written(&node, BLOCKS);
    assert_eq!(shutdown_events(&node).len(), 1);
    drop(client);
}

/// The CI model with NL-SAS drives that seek, so destaging takes seconds.
fn slow_destage_model(dir: &Path) -> PathBuf {
    let ci = std::fs::read_to_string(ci_model()).expect("read hw/ci.toml");
    let nlsas = "size = \"128M\"";
    assert_eq!(ci.matches(nlsas).count(), 6, "hw/ci.toml changed shape");
    let slow = ci.replace(
        nlsas,
        "size = \"128M\"\nlatency = { kind = \"hdd\", seek_us = 4000, rpm = 7200 }",
    );
    let path = dir.join("slow-destage.toml");
    std::fs::write(&path, slow).expect("write the model");
    path
}

#[test]
fn more_signals_during_a_busy_stop_do_not_abort_it() {
    const BLOCKS: u64 = 12 * CHUNK_BLOCKS;
    let model_dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::start_with_model(slow_destage_model(model_dir.path()));
    node.pool_and_volume("p", "200M", "v", "64M");
    let mut client = NbdClient::connect(&node.nbd_socket(), "v").expect("connect over NBD");
    write_unflushed(&mut client, BLOCKS);
    client.disconnect();

    node.signal(libc::SIGINT);
    assert!(
        wait_for_log(&node, "troika: shutting down", 1, Duration::from_secs(30)),
        "no stop began\n{}",
        node.log_text()
    );
    // Signal again, and again, each after the node said where the stop was, until one
    // lands in the destage (or the node is gone): none of them may abort the stop.
    let mut signals = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (signals < 3 || !node.log_text().contains("MiB of cached data"))
        && Instant::now() < deadline
    {
        node.signal(libc::SIGINT);
        signals += 1;
        if !wait_for_log(
            &node,
            "still stopping: ",
            signals - 1,
            Duration::from_secs(10),
        ) {
            break;
        }
    }
    assert_clean_exit(&mut node);

    let log = node.log_text();
    let reports: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("still stopping: "))
        .collect();
    assert!(
        signals >= 3 && reports.len() == signals - 1,
        "{signals} signals, every one after the first reported: {reports:?}\n{log}"
    );
    assert!(
        reports
            .iter()
            .any(|line| line.contains("MiB of cached data")),
        "a signal came while the stop destaged and said how much was left: {reports:?}\n{log}"
    );
    assert!(
        reports
            .iter()
            .all(|line| line.contains("kill -9 does (flushed writes survive it)")),
        "{reports:?}"
    );
    let stopped = log
        .find("troika: stopped cleanly")
        .expect("stopped cleanly");
    assert!(log.rfind("still stopping: ").expect("a report") < stopped);

    node.restart();
    assert_all_written(&node, BLOCKS);
    assert_eq!(shutdown_events(&node).len(), 1);
}

#[test]
fn cli_output_into_a_closed_pipe_ends_quietly() {
    let node = TestNode::start();
    node.pool_and_volume("p", "200M", "v", "16M");
    for args in [
        &["vol", "ls"][..],
        &["event", "ls"][..],
        &["top", "--interval", "0.1", "--count", "3"][..],
    ] {
        // `troika vol ls | head -0`: the reader is gone before the CLI writes a byte.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(common::troika_bin())
            .arg("--data")
            .arg(node.data())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run the CLI");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "troika {args:?} into a closed pipe: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
