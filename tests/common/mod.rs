//! Test harness: starts the real `troika` binary on a temporary data directory with the
//! small CI hardware model, and talks to it the way operators and hosts do.
#![allow(dead_code)]

pub mod nbd_client;
pub mod tls;
pub mod tools;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn troika_bin() -> &'static str {
    env!("CARGO_BIN_EXE_troika")
}

/// The CI hardware model.
pub fn ci_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/ci.toml")
}

/// True when an external tool is on PATH. A test that skips without it goes through
/// `tools::present`, which says so on the terminal.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A loopback TCP port nobody listens on right now, chosen below the kernel's ephemeral
/// range (32768 and up by default) so that a client's outgoing connection elsewhere in the
/// test run cannot take it between this call and the node's bind. Parallel test binaries
/// start at offsets drawn from their process id; `TestNode::spawn` retries with fresh
/// ports if a port is taken anyway.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

/// Standard base64 with padding (for HTTP basic credentials).
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Status and body of a raw HTTP response.
pub fn split_response(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// `127.0.0.1:P,127.0.0.1:Q,...` for the ports, or `none`.
fn list_or_none(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".to_owned();
    }
    let addresses: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    addresses.join(",")
}

/// A running node.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub log: PathBuf,
    model: PathBuf,
    /// The REST API's TCP port, when the node serves one.
    pub api_port: Option<u16>,
    /// NBD TCP ports, one per controller (controller 1 first); empty for the unix socket
    /// only.
    pub nbd_ports: Vec<u16>,
    /// iSCSI portal ports, one per controller (controller 1 first); empty for none.
    pub iscsi_ports: Vec<u16>,
    /// More arguments for `troika serve` (e.g. `--nbd-open`), kept across restarts.
    serve_args: Vec<String>,
    /// Where the next start writes its stdout and stderr instead of `log` (taken by it,
    /// so a restart writes to `log` again).
    output: Option<OwnedFd>,
    /// Whether the TCP API speaks HTTPS; the plain-HTTP helpers (`http_tcp`, `raw_tcp`,
    /// `api_json`) need it off, which is the default here (`--mgmt-tls off`).
    pub mgmt_tls: bool,
    /// The NBD TLS flags `serve` gets: `--nbd-tls off` unless a test says otherwise
    /// (TCP listeners require TLS by default).
    pub nbd_tls_args: Vec<String>,
}

impl TestNode {
    /// Starts a node on a fresh data directory and waits until it serves.
    pub fn start() -> TestNode {
        Self::start_with_model(ci_model())
    }

    /// Starts a node with another hardware model.
    pub fn start_with_model(model: PathBuf) -> TestNode {
        Self::start_on(model, None, Vec::new())
    }

    /// Starts a node that also serves the REST API on a free loopback TCP port.
    pub fn start_with_api(model: PathBuf) -> TestNode {
        Self::start_on(model, Some(free_port()), Vec::new())
    }

    /// Starts a node whose REST API speaks HTTPS on a free loopback port, with `extra`
    /// `troika serve` arguments.
    pub fn start_with_https_api(model: PathBuf, extra: &[&str]) -> TestNode {
        let mut node = Self::prepare(model, Some(free_port()), Vec::new());
        node.mgmt_tls = true;
        node.serve_args = extra.iter().map(|arg| (*arg).to_owned()).collect();
        node.spawn();
        node
    }

    /// The node's TLS certificate (PEM), made on its first start.
    pub fn tls_cert_path(&self) -> PathBuf {
        self.data().join("tls/server-cert.pem")
    }

    /// Starts a node with an NBD TCP port on each of `controllers` controllers, open to
    /// anonymous clients (`--nbd-open`: these tests are about the ports, not access).
    pub fn start_with_nbd_ports(model: PathBuf, controllers: usize) -> TestNode {
        Self::start_with_serve_args(model, controllers, &["--nbd-open"])
    }

    /// Starts a node with an NBD TCP port on each of `controllers` controllers and more
    /// `troika serve` arguments.
    pub fn start_with_serve_args(model: PathBuf, controllers: usize, args: &[&str]) -> TestNode {
        let ports = (0..controllers).map(|_| free_port()).collect();
        let mut node = Self::prepare(model, None, ports);
        node.serve_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        node.spawn();
        node
    }

    /// Starts a node with the REST API and an iSCSI portal on each of `controllers`
    /// controllers.
    pub fn start_with_iscsi(model: PathBuf, controllers: usize) -> TestNode {
        let mut node = Self::prepare(model, Some(free_port()), Vec::new());
        node.iscsi_ports = (0..controllers).map(|_| free_port()).collect();
        node.spawn();
        node
    }

    fn start_on(model: PathBuf, api_port: Option<u16>, nbd_ports: Vec<u16>) -> TestNode {
        let mut node = Self::prepare(model, api_port, nbd_ports);
        node.spawn();
        node
    }

    fn prepare(model: PathBuf, api_port: Option<u16>, nbd_ports: Vec<u16>) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("serve.log");
        TestNode {
            dir,
            child: None,
            log,
            model,
            api_port,
            nbd_ports,
            iscsi_ports: Vec::new(),
            serve_args: Vec::new(),
            output: None,
            mgmt_tls: false,
            nbd_tls_args: vec!["--nbd-tls".to_owned(), "off".to_owned()],
        }
    }

    /// A node with NBD TCP ports on `controllers` controllers, not started yet: put files
    /// in its data directory and set `nbd_tls_args`, then call [`TestNode::launch`].
    pub fn prepare_with_nbd_ports(model: PathBuf, controllers: usize) -> TestNode {
        Self::prepare(model, None, (0..controllers).map(|_| free_port()).collect())
    }

    /// Starts a node made by [`TestNode::prepare_with_nbd_ports`] and waits until it serves.
    pub fn launch(&mut self) {
        self.spawn();
    }

    /// Starts a node (NBD on its unix socket only) whose stdout and stderr both go
    /// to `output` (e.g. the write end of a pipe another process reads) instead of the
    /// log file; a restart writes to the log file again.
    pub fn start_with_output(model: PathBuf, output: OwnedFd) -> TestNode {
        let mut node = Self::prepare(model, None, Vec::new());
        node.output = Some(output);
        node.spawn();
        node
    }

    /// The generated password of the built-in `admin` user.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data().join("admin-password"))
            .expect("the node writes DATA/admin-password on first start")
            .trim()
            .to_owned()
    }

    /// One HTTP/1.1 request on the REST API's TCP port, with basic credentials if given;
    /// returns the status and the body.
    pub fn http_tcp(
        &self,
        method: &str,
        target: &str,
        credentials: Option<(&str, &str)>,
        body: Option<&str>,
    ) -> (u16, String) {
        let port = self.api_port.expect("node started without a TCP API port");
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the REST port");
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: troika\r\nConnection: close\r\n");
        if let Some((user, password)) = credentials {
            request.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64_encode(format!("{user}:{password}").as_bytes())
            ));
        }
        let body = body.unwrap_or("");
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        split_response(&response)
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `troika serve` on this (stopped) node's data directory with no listener,
    /// expecting it to refuse: waits up to 60 s for it to exit, asserts it failed, and
    /// returns its stderr. `why` says what it should have refused, for the panic when it
    /// keeps running.
    pub fn refused_start(&self, why: &str) -> String {
        let mut child = Command::new(troika_bin())
            .args(["serve", "--hw"])
            .arg(&self.model)
            .arg("--data")
            .arg(self.data())
            .args([
                "--nbd-listen",
                "none",
                "--mgmt-listen",
                "none",
                "--iscsi-listen",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start troika serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("troika serve started: {why}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "troika serve exited 0:\n{stderr}");
        stderr
    }

    pub fn nbd_socket(&self) -> PathBuf {
        self.data().join("nbd.sock")
    }

    pub fn mgmt_socket(&self) -> PathBuf {
        self.data().join("troika.sock")
    }

    /// The NBD URI of an export on the unix socket (for libnbd tools and fio).
    pub fn uri(&self, export: &str) -> String {
        format!(
            "nbd+unix:///{export}?socket={}",
            self.nbd_socket().display()
        )
    }

    /// Starts `troika serve` and waits until every listener answers. A start that loses a
    /// port to another process (another test binary running beside this one) is retried
    /// on fresh ports, twice at most; any other failed start panics with the node's log.
    fn spawn(&mut self) {
        for _ in 0..2 {
            let log_before = self.log_text().len();
            match self.spawn_once() {
                Ok(()) => return,
                Err(failure)
                    if self.log_text()[log_before..].contains("Address already in use") =>
                {
                    eprintln!(
                        "a port was taken before the node bound it; retrying on others: {failure}"
                    );
                    self.pick_fresh_ports();
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        if let Err(failure) = self.spawn_once() {
            panic!("{failure}");
        }
    }

    fn pick_fresh_ports(&mut self) {
        if self.api_port.is_some() {
            self.api_port = Some(free_port());
        }
        for port in self.nbd_ports.iter_mut().chain(self.iscsi_ports.iter_mut()) {
            *port = free_port();
        }
    }

    fn spawn_once(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.mgmt_socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let stderr = self.output.take().unwrap_or_else(|| OwnedFd::from(log));
        let stdout = stderr.try_clone().expect("duplicate the output");
        let child = Command::new(troika_bin())
            .args(["serve", "--hw"])
            .arg(&self.model)
            .arg("--data")
            .arg(self.data())
            .arg("--nbd-listen")
            .arg(list_or_none(&self.nbd_ports))
            .arg("--mgmt-listen")
            .arg(
                self.api_port
                    .map_or_else(|| "none".to_owned(), |port| format!("127.0.0.1:{port}")),
            )
            .arg("--iscsi-listen")
            .arg(list_or_none(&self.iscsi_ports))
            .args(["--mgmt-tls", if self.mgmt_tls { "on" } else { "off" }])
            .args(&self.nbd_tls_args)
            .args(&self.serve_args)
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start troika serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let api_up = self
                .api_port
                .is_none_or(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            let nbd_up = self
                .nbd_ports
                .iter()
                .chain(&self.iscsi_ports)
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if UnixStream::connect(self.mgmt_socket()).is_ok()
                && UnixStream::connect(self.nbd_socket()).is_ok()
                && api_up
                && nbd_up
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "troika serve exited with {status}:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "troika serve did not come up in 60 s:\n{}",
            self.log_text()
        ))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The running node's process id (for /proc), `None` when it is not running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9: the process dies with whatever it had in memory.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending a signal to our own child process by pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let status = child.wait().expect("wait for troika");
            assert!(
                status.success(),
                "troika did not stop cleanly ({status}):\n{}",
                self.log_text()
            );
        }
    }

    /// SIGTERM and wait at most `timeout` for a clean exit; a node that does not stop in
    /// time is killed with SIGKILL and reported as an error (a hung shutdown), as is one
    /// that exits with a failure.
    pub fn stop_within(&mut self, timeout: Duration) -> Result<(), String> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("troika exited with {status}")),
            None => {
                self.kill9();
                Err(format!("troika did not stop within {timeout:?} of SIGTERM"))
            }
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the running node, without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: sending a signal to our own child process by pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// Waits at most `timeout` for the node to exit and returns its status; `None` if it
    /// is still running then (it is left running) or was not running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Starts the node again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs a CLI command against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(troika_bin())
            .arg("--data")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run troika CLI")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "troika {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates pool `pool` of `pool_size` and volume `volume` of `volume_size` in it.
    pub fn pool_and_volume(&self, pool: &str, pool_size: &str, volume: &str, volume_size: &str) {
        self.cli_ok(&["pool", "create", pool, "--size", pool_size]);
        self.cli_ok(&[
            "vol",
            "create",
            volume,
            "--pool",
            pool,
            "--size",
            volume_size,
        ]);
    }

    /// GET on the management socket; returns status and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut stream =
            UnixStream::connect(self.mgmt_socket()).expect("connect to management socket");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: troika\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// The node's Prometheus counters without labels.
    pub fn metrics(&self) -> HashMap<String, u64> {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `bytes` on `stream` and reads until the peer closes or `timeout` passes. The
/// server may close before it has read everything (a refused request); what it answered
/// is still returned.
pub fn exchange_raw<S: Read + Write>(mut stream: S, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let _ = stream.write_all(bytes);
    let deadline = Instant::now() + timeout;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    answer
}

impl TestNode {
    /// Opens a TCP connection to the REST port with a read timeout.
    pub fn connect_api(&self) -> std::net::TcpStream {
        let port = self.api_port.expect("node started without a TCP API port");
        let stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the REST port");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        stream
    }

    /// Opens the management unix socket with a read timeout.
    pub fn connect_mgmt_socket(&self) -> UnixStream {
        let stream = UnixStream::connect(self.mgmt_socket()).expect("connect to troika.sock");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        stream
    }

    /// Raw bytes to the REST TCP port on a fresh connection; everything answered within 10 s.
    pub fn raw_tcp(&self, bytes: &[u8]) -> Vec<u8> {
        exchange_raw(self.connect_api(), bytes, Duration::from_secs(10))
    }

    /// Raw bytes to the management unix socket on a fresh connection.
    pub fn raw_unix(&self, bytes: &[u8]) -> Vec<u8> {
        exchange_raw(self.connect_mgmt_socket(), bytes, Duration::from_secs(10))
    }

    /// A REST call over TCP with a JSON body; the answer parsed as JSON (a body that is not
    /// JSON, such as Prometheus text, comes back as a JSON string).
    pub fn api_json(
        &self,
        method: &str,
        target: &str,
        credentials: Option<(&str, &str)>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let text = body.map(serde_json::Value::to_string);
        let (status, answer) = self.http_tcp(method, target, credentials, text.as_deref());
        let value = serde_json::from_str(&answer).unwrap_or(serde_json::Value::String(answer));
        (status, value)
    }
}
