//! Tests of the management server, client and CLI against an in-memory [`Management`].
//!
//! `memory` is the fake node; `rest_tests` cover the routes and the envelope, `http_tests`
//! the framing, limits, connection handling and the TCP listener, `cli_tests` the CLI
//! against a live server. [`Fixture`] is shared with `rest::tests`.

mod cli_tests;
mod http_tests;
pub(crate) mod memory;
mod rest_tests;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::api::{
    API_LEVEL, Management, MgmtError, OperationalState, PoolCreate, PoolInfo, PoolUpdate,
    SystemInfo, VolumeCreate, VolumeInfo, VolumeUpdate,
};
use super::events::EventLog;
use super::http::{self, HttpError, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use super::rest::Mgmt;
use super::rest::openapi::{POOL, VOLUME, field_names};
use super::server::slots::MAX_AUTHENTICATED;
use super::server::{MgmtListener, spawn_server};
use super::users::{DEFAULT_ADMIN_NAME, UserStore};
use crate::cli::client::Client;
use crate::cli::{self, CliCommand, ControllerCommand, PoolCommand, VolCommand};
use memory::{GIB, Memory, SYSTEM_CAPACITY};

/// A [`Mgmt`] over a fresh [`Memory`] node (or the real node on a small store, see
/// [`Fixture::on_node`]), with a real user store and event log in a temporary directory
/// that lives as long as the fixture.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    /// The fake node; `None` where the fixture runs on the real one.
    memory: Option<Arc<Memory>>,
    pub(crate) mgmt: Arc<Mgmt>,
    /// The generated password of the built-in `admin` user.
    pub(crate) admin_password: String,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(Memory::default());
        Fixture::over(dir, memory.clone(), Some(memory))
    }

    /// On the real node's management calls over a small store (about 128 MiB), for tests
    /// of the node's rules that need none of what only the fake can do (see `memory`).
    pub(crate) fn on_node() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let node = crate::node::small_node_api(dir.path());
        Fixture::over(dir, node, None)
    }

    fn over(
        dir: tempfile::TempDir,
        api: Arc<dyn Management>,
        memory: Option<Arc<Memory>>,
    ) -> Fixture {
        let (users, admin_password) = UserStore::open(dir.path()).unwrap();
        let admin_password = admin_password.expect("a fresh directory creates the admin");
        let events = EventLog::open(dir.path()).unwrap();
        let mgmt = Arc::new(Mgmt {
            api,
            users: Arc::new(users),
            events,
            limiter: Arc::new(crate::mgmt::login_limit::LoginLimiter::new(
                crate::mgmt::login_limit::DEFAULT_LOCKOUT,
            )),
            tls_fingerprint: None,
        });
        Fixture {
            dir,
            memory,
            mgmt,
            admin_password,
        }
    }

    /// The fake node behind the fixture.
    pub(crate) fn api(&self) -> &Memory {
        self.memory
            .as_deref()
            .expect("this fixture runs on the real node, not the fake")
    }

    /// `Authorization` header value for HTTP basic credentials.
    pub(crate) fn basic(name: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        format!("Basic {encoded}")
    }

    /// Basic credentials of the built-in admin.
    pub(crate) fn admin_basic(&self) -> String {
        Fixture::basic(DEFAULT_ADMIN_NAME, &self.admin_password)
    }
}

/// A server on a socket in a temporary directory (and, if asked, on a TCP port of the
/// loopback), stopped and joined on drop.
struct TestServer {
    fixture: Fixture,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        TestServer::start_with(false)
    }

    /// On the real node over a small store ([`Fixture::on_node`]).
    fn start_on_node() -> TestServer {
        TestServer::serve(Fixture::on_node(), false)
    }

    /// Also listens on 127.0.0.1, on a free port.
    fn start_with_tcp() -> TestServer {
        TestServer::start_with(true)
    }

    fn start_with(tcp: bool) -> TestServer {
        TestServer::serve(Fixture::new(), tcp)
    }

    fn serve(fixture: Fixture, tcp: bool) -> TestServer {
        let socket = fixture.dir.path().join("mgmt.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut handles = vec![spawn_server(
            MgmtListener::Unix(listener),
            fixture.mgmt.clone(),
            shutdown.clone(),
        )];
        let tcp = tcp.then(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            handles.push(spawn_server(
                MgmtListener::Tcp(listener, None),
                fixture.mgmt.clone(),
                shutdown.clone(),
            ));
            address
        });
        TestServer {
            fixture,
            socket,
            tcp,
            shutdown,
            handles,
        }
    }

    fn api(&self) -> &Memory {
        self.fixture.api()
    }

    fn client(&self) -> Client {
        Client::new(self.socket.clone())
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.client().request(method, path, body.as_ref()).unwrap()
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Sends raw bytes on a fresh connection and reads everything until the server closes.
    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = self.connect();
        // The server may close before taking all the bytes; its answer is still readable.
        let _ = stream.write_all(bytes);
        read_to_close(&mut stream)
    }

    /// [`TestServer::raw`] on a TCP connection.
    fn raw_tcp(&self, bytes: &[u8]) -> Vec<u8> {
        let address = self.tcp.expect("the server was started with TCP");
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(bytes);
        read_to_close(&mut stream)
    }

    fn create_pool(&self, name: &str, size: u64) -> u32 {
        let body = json!({"name": name, "physical_capacity": size});
        let (status, envelope) = self.call("POST", "/api/rest/pools", Some(body));
        assert_eq!(status, 201, "{envelope}");
        envelope["result"]["id"].as_u64().unwrap() as u32
    }

    fn create_volume(&self, name: &str, pool_id: u32, size: u64) -> u32 {
        let body = json!({"name": name, "pool_id": pool_id, "size": size});
        let (status, envelope) = self.call("POST", "/api/rest/volumes", Some(body));
        assert_eq!(status, 201, "{envelope}");
        envelope["result"]["id"].as_u64().unwrap() as u32
    }

    fn assert_alive(&self) {
        let (status, _) = self.call("GET", "/api/rest/system", None);
        assert_eq!(status, 200);
    }

    fn stop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        for handle in self.handles.drain(..) {
            handle.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_to_close(stream: &mut impl Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    bytes
}

/// Reads exactly one response from a connection that stays open.
fn read_one_response(stream: &mut impl Read) -> RawResponse {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        if let Ok(httparse::Status::Complete(head_len)) = response.parse(&bytes) {
            let length: usize = response
                .headers
                .iter()
                .find(|field| field.name.eq_ignore_ascii_case("content-length"))
                .map(|field| std::str::from_utf8(field.value).unwrap().parse().unwrap())
                .unwrap();
            if bytes.len() >= head_len + length {
                return only_response(&bytes);
            }
        }
    }
}

/// One parsed response: status, header fields (lower-case names), body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Parses the responses in `bytes`, one after another.
fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(head_len) = response.parse(bytes).unwrap() else {
            panic!("partial response: {:?}", String::from_utf8_lossy(bytes));
        };
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|field| {
                (
                    field.name.to_ascii_lowercase(),
                    String::from_utf8(field.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| value.parse().unwrap())
            .unwrap();
        responses.push(RawResponse {
            status: response.code.unwrap(),
            headers,
            body: bytes[head_len..head_len + length].to_vec(),
        });
        bytes = &bytes[head_len + length..];
    }
    responses
}

fn only_response(bytes: &[u8]) -> RawResponse {
    let mut responses = parse_responses(bytes);
    assert_eq!(responses.len(), 1);
    responses.remove(0)
}

fn assert_error(envelope: &Value, code: &str) {
    assert_eq!(envelope["error"]["code"], code, "{envelope}");
    assert!(envelope["error"]["message"].as_str().unwrap().len() > 5);
    assert_eq!(envelope["error"]["reasons"], json!([]));
    assert_eq!(envelope["result"], Value::Null);
    assert_eq!(envelope["metadata"]["ready"], true);
}

fn names(envelope: &Value) -> Vec<String> {
    envelope["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|object| object["name"].as_str().unwrap().to_owned())
        .collect()
}
