//! Tests of the management server, client and CLI against an in-memory [`Management`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::api::{
    Management, MgmtError, PoolCreate, PoolInfo, SystemInfo, VolumeCreate, VolumeInfo,
};
use super::cli::{self, CliCommand, PoolCommand, VolCommand};
use super::client::Client;
use super::http::{self, HttpError, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use super::rest::{POOL_FIELDS, VOLUME_FIELDS};
use super::server::{MAX_CONNECTIONS, spawn_server};

const SYSTEM_CAPACITY: u64 = 1 << 40;
const GIB: u64 = 1 << 30;

/// A pool as stored; the derived fields of [`PoolInfo`] are computed on read.
#[derive(Clone)]
struct StoredPool {
    id: u32,
    name: String,
    physical_capacity: u64,
    virtual_capacity: u64,
}

#[derive(Default)]
struct State {
    pools: BTreeMap<u32, StoredPool>,
    volumes: BTreeMap<u32, VolumeInfo>,
    next_id: u32,
}

impl State {
    fn allocate_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn pool_info(&self, pool: &StoredPool) -> PoolInfo {
        let volumes: Vec<&VolumeInfo> = self
            .volumes
            .values()
            .filter(|volume| volume.pool_id == pool.id)
            .collect();
        let allocated_virtual: u64 = volumes.iter().map(|volume| volume.size).sum();
        let allocated_physical: u64 = volumes.iter().map(|volume| volume.allocated).sum();
        PoolInfo {
            id: pool.id,
            name: pool.name.clone(),
            physical_capacity: pool.physical_capacity,
            virtual_capacity: pool.virtual_capacity,
            allocated_physical_space: allocated_physical,
            free_physical_space: pool.physical_capacity - allocated_physical,
            free_virtual_space: pool.virtual_capacity - allocated_virtual,
            allocated_virtual_space: allocated_virtual,
            volumes_count: volumes.len() as u64,
            state: "NORMAL".into(),
            created_at: 1_700_000_000_000 + u64::from(pool.id),
        }
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let pool = self
            .pools
            .get(&id)
            .ok_or_else(|| MgmtError::pool_not_found(id))?;
        Ok(self.pool_info(pool))
    }
}

/// The node as far as the REST layer can tell: names, ids, capacities, conflicts.
#[derive(Default)]
struct Memory {
    state: Mutex<State>,
}

impl Management for Memory {
    fn system(&self) -> SystemInfo {
        let state = self.state.lock();
        SystemInfo {
            name: "troika-test".into(),
            serial: 4242,
            version: "0.1.0".into(),
            model: "troika".into(),
            state: "NORMAL".into(),
            physical_capacity: SYSTEM_CAPACITY,
            allocated_physical_capacity: state.pools.values().map(|p| p.physical_capacity).sum(),
        }
    }

    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock();
        if request.name.is_empty() {
            return Err(MgmtError::bad_request("a pool needs a name"));
        }
        if state.pools.values().any(|pool| pool.name == request.name) {
            return Err(MgmtError::name_conflict("pool", &request.name));
        }
        let allocated: u64 = state.pools.values().map(|p| p.physical_capacity).sum();
        if allocated + request.physical_capacity > SYSTEM_CAPACITY {
            return Err(MgmtError::new(
                "INSUFFICIENT_PHYSICAL_CAPACITY",
                409,
                "not enough physical capacity",
            ));
        }
        let id = state.allocate_id();
        let pool = StoredPool {
            id,
            name: request.name,
            physical_capacity: request.physical_capacity,
            virtual_capacity: request
                .virtual_capacity
                .unwrap_or(request.physical_capacity),
        };
        state.pools.insert(id, pool);
        state.pool(id)
    }

    fn pools(&self) -> Vec<PoolInfo> {
        let state = self.state.lock();
        state
            .pools
            .values()
            .map(|pool| state.pool_info(pool))
            .collect()
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        self.state.lock().pool(id)
    }

    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let mut state = self.state.lock();
        let info = state.pool(id)?;
        if info.volumes_count > 0 {
            return Err(MgmtError::new(
                "POOL_NOT_EMPTY",
                409,
                "delete its volumes first",
            ));
        }
        state.pools.remove(&id);
        Ok(info)
    }

    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError> {
        if request.name == "boom" {
            panic!("the test node fails on a volume named boom");
        }
        let mut state = self.state.lock();
        let pool = state.pool(request.pool_id)?;
        if state.volumes.values().any(|v| v.name == request.name) {
            return Err(MgmtError::name_conflict("volume", &request.name));
        }
        if request.size == 0 {
            return Err(MgmtError::bad_request("size must be positive"));
        }
        if request.size > pool.free_virtual_space {
            return Err(MgmtError::new(
                "INSUFFICIENT_VIRTUAL_CAPACITY",
                409,
                "the pool's virtual capacity is exhausted",
            ));
        }
        let provtype = request.provtype.unwrap_or_else(|| "THIN".into());
        let id = state.allocate_id();
        let volume = VolumeInfo {
            id,
            name: request.name,
            size: request.size,
            pool_id: pool.id,
            pool_name: pool.name,
            allocated: if provtype == "THICK" { request.size } else { 0 },
            provtype,
            volume_type: "MASTER".into(),
            write_protected: false,
            used: 0,
            serial: format!("742b0f000000{id:04x}"),
            created_at: 1_700_000_000_000,
        };
        state.volumes.insert(id, volume.clone());
        Ok(volume)
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        self.state.lock().volumes.values().cloned().collect()
    }

    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let state = self.state.lock();
        state
            .volumes
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError> {
        let mut state = self.state.lock();
        let volume = state
            .volumes
            .get_mut(&id)
            .ok_or_else(|| MgmtError::volume_not_found(id))?;
        volume.size = new_size;
        Ok(volume.clone())
    }

    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        self.state
            .lock()
            .volumes
            .remove(&id)
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    fn metrics_text(&self) -> String {
        "# TYPE troika_volumes gauge\ntroika_volumes 0\n".into()
    }
}

/// A server on a socket in a temporary directory, stopped and joined on drop.
struct TestServer {
    _dir: tempfile::TempDir,
    api: Arc<Memory>,
    socket: PathBuf,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mgmt.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let api = Arc::new(Memory::default());
        let handle = spawn_server(listener, api.clone(), shutdown.clone());
        TestServer {
            _dir: dir,
            api,
            socket,
            shutdown,
            handle: Some(handle),
        }
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
        if let Some(handle) = self.handle.take() {
            handle.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_to_close(stream: &mut UnixStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    bytes
}

/// Reads exactly one response from a connection that stays open.
fn read_one_response(stream: &mut UnixStream) -> RawResponse {
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

#[test]
fn system_answers_in_the_envelope() {
    let server = TestServer::start();
    let response = only_response(&server.raw(
        b"GET /api/rest/system HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("connection"), Some("close"));
    let envelope = response.json();
    assert_eq!(envelope["error"], Value::Null);
    assert_eq!(envelope["metadata"], json!({"ready": true}));
    assert_eq!(envelope["result"]["name"], "troika-test");
    assert_eq!(envelope["result"]["physical_capacity"], SYSTEM_CAPACITY);
}

#[test]
fn field_lists_match_the_serialized_objects() {
    let memory = Memory::default();
    let pool = memory
        .create_pool(PoolCreate {
            name: "p".into(),
            physical_capacity: GIB,
            virtual_capacity: None,
        })
        .unwrap();
    let volume = memory
        .create_volume(VolumeCreate {
            name: "v".into(),
            pool_id: pool.id,
            size: GIB,
            provtype: None,
        })
        .unwrap();
    let keys = |value: Value| {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let sorted = |fields: &[&str]| {
        let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        fields.sort();
        fields
    };
    assert_eq!(keys(serde_json::to_value(pool).unwrap()), sorted(POOL_FIELDS));
    assert_eq!(keys(serde_json::to_value(volume).unwrap()), sorted(VOLUME_FIELDS));
}

#[test]
fn pools_are_created_read_listed_and_deleted_with_approval() {
    let server = TestServer::start();
    let body = json!({"name": "gold", "physical_capacity": 10 * GIB, "virtual_capacity": 20 * GIB});
    let (status, created) = server.call("POST", "/api/rest/pools", Some(body.clone()));
    assert_eq!(status, 201);
    assert_eq!(created["error"], Value::Null);
    assert_eq!(created["result"]["virtual_capacity"], 20 * GIB);
    let id = created["result"]["id"].as_u64().unwrap();

    let (status, again) = server.call("POST", "/api/rest/pools", Some(body));
    assert_eq!(status, 409);
    assert_error(&again, "NAME_CONFLICT");

    let too_big = json!({"name": "huge", "physical_capacity": 2 * SYSTEM_CAPACITY});
    let (status, refused) = server.call("POST", "/api/rest/pools", Some(too_big));
    assert_eq!(status, 409);
    assert_error(&refused, "INSUFFICIENT_PHYSICAL_CAPACITY");

    let (status, one) = server.call("GET", &format!("/api/rest/pools/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(one["result"], created["result"]);

    let (status, list) = server.call("GET", "/api/rest/pools", None);
    assert_eq!(status, 200);
    assert_eq!(names(&list), ["gold"]);

    let (status, refused) = server.call("DELETE", &format!("/api/rest/pools/{id}"), None);
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, refused) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{id}?approved=false"),
        None,
    );
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");

    let (status, deleted) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{id}?approved=true"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(deleted["result"]["name"], "gold");

    let (status, gone) = server.call("GET", &format!("/api/rest/pools/{id}"), None);
    assert_eq!(status, 404);
    assert_error(&gone, "POOL_NOT_FOUND");
    let (status, gone) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{id}?approved=true"),
        None,
    );
    assert_eq!(status, 404);
    assert_error(&gone, "POOL_NOT_FOUND");
    let (status, bad_id) = server.call("GET", "/api/rest/pools/abc", None);
    assert_eq!(status, 404);
    assert_error(&bad_id, "POOL_NOT_FOUND");
}

#[test]
fn volumes_are_created_resized_and_deleted() {
    let server = TestServer::start();
    let pool = server.create_pool("silver", 100 * GIB);
    let body = json!({"name": "db", "pool_id": pool, "size": 10 * GIB, "provtype": "THICK"});
    let (status, created) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 201);
    assert_eq!(created["result"]["type"], "MASTER");
    assert_eq!(created["result"]["provtype"], "THICK");
    assert_eq!(created["result"]["pool_name"], "silver");
    let id = created["result"]["id"].as_u64().unwrap();
    let path = format!("/api/rest/volumes/{id}");

    let no_pool = json!({"name": "x", "pool_id": 999, "size": GIB});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(no_pool));
    assert_eq!(status, 404);
    assert_error(&refused, "POOL_NOT_FOUND");

    let (status, grown) = server.call("PUT", &path, Some(json!({"size": 20 * GIB})));
    assert_eq!(status, 200);
    assert_eq!(grown["result"]["size"], 20 * GIB);

    let (status, refused) = server.call("PUT", &path, Some(json!({"size": 5 * GIB})));
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, shrunk) = server.call(
        "PUT",
        &format!("{path}?approved=true"),
        Some(json!({"size": 5 * GIB})),
    );
    assert_eq!(status, 200);
    assert_eq!(shrunk["result"]["size"], 5 * GIB);

    let (status, refused) = server.call(
        "PUT",
        &path,
        Some(json!({"size": 6 * GIB, "name": "renamed"})),
    );
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    assert!(refused["error"]["message"].as_str().unwrap().contains("name"));

    let (status, busy) = server.call(
        "DELETE",
        &format!("/api/rest/pools/{pool}?approved=true"),
        None,
    );
    assert_eq!(status, 409);
    assert_error(&busy, "POOL_NOT_EMPTY");

    let (status, refused) = server.call("DELETE", &path, None);
    assert_eq!(status, 403);
    assert_error(&refused, "APPROVAL_REQUIRED");
    let (status, deleted) = server.call("DELETE", &format!("{path}?approved=true"), None);
    assert_eq!(status, 200);
    assert_eq!(deleted["result"]["name"], "db");
    let (status, gone) = server.call("GET", &path, None);
    assert_eq!(status, 404);
    assert_error(&gone, "VOLUME_NOT_FOUND");
    let (status, gone) = server.call("PUT", &path, Some(json!({"size": GIB})));
    assert_eq!(status, 404);
    assert_error(&gone, "VOLUME_NOT_FOUND");
}

#[test]
fn bad_bodies_are_refused_naming_the_field() {
    let server = TestServer::start();
    let mut stream = server.connect();
    let body = br#"{"name": "p", "physical_capacity": "#;
    let request = format!(
        "POST /api/rest/pools HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let response = only_response(&read_to_close(&mut stream));
    assert_eq!(response.status, 400);
    assert_error(&response.json(), "BAD_REQUEST");

    let (status, missing) = server.call("POST", "/api/rest/pools", Some(json!({"name": "p"})));
    assert_eq!(status, 400);
    assert_error(&missing, "BAD_REQUEST");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("physical_capacity"),
        "{missing}"
    );

    let wrong_type = json!({"name": "v", "pool_id": "one", "size": 1});
    let (status, refused) = server.call("POST", "/api/rest/volumes", Some(wrong_type));
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");

    let (status, empty) = server.call("POST", "/api/rest/volumes", None);
    assert_eq!(status, 400);
    assert_error(&empty, "BAD_REQUEST");
    server.assert_alive();
}

#[test]
fn lists_page_with_metadata() {
    let server = TestServer::start();
    for index in 0..7 {
        server.create_pool(&format!("pool-{index}"), GIB);
    }
    let (status, page) = server.call("GET", "/api/rest/pools?page_size=3&page=2", None);
    assert_eq!(status, 200);
    assert_eq!(names(&page), ["pool-3", "pool-4", "pool-5"]);
    assert_eq!(
        page["metadata"],
        json!({"ready": true, "page": 2, "page_size": 3, "pages_total": 3, "number_of_objects": 7})
    );
    let (_, last) = server.call("GET", "/api/rest/pools?page_size=3&page=3", None);
    assert_eq!(names(&last), ["pool-6"]);
    let (status, past) = server.call("GET", "/api/rest/pools?page_size=3&page=4", None);
    assert_eq!(status, 200);
    assert_eq!(past["result"], json!([]));

    let (_, default) = server.call("GET", "/api/rest/pools", None);
    assert_eq!(default["metadata"]["page"], 1);
    assert_eq!(default["metadata"]["page_size"], 50);
    assert_eq!(default["metadata"]["pages_total"], 1);
    assert_eq!(default["metadata"]["number_of_objects"], 7);

    let (_, largest) = server.call("GET", "/api/rest/pools?page_size=1000", None);
    assert_eq!(largest["metadata"]["page_size"], 1000);
    for bad in ["1001", "0", "-1", "many"] {
        let (status, refused) = server.call("GET", &format!("/api/rest/pools?page_size={bad}"), None);
        assert_eq!(status, 400);
        assert_error(&refused, "INVALID_PAGE_SIZE");
    }
    let (status, refused) = server.call("GET", "/api/rest/pools?page=0", None);
    assert_eq!(status, 400);
    assert_error(&refused, "INVALID_PAGE");

    let (_, empty) = server.call("GET", "/api/rest/volumes", None);
    assert_eq!(empty["result"], json!([]));
    assert_eq!(empty["metadata"]["number_of_objects"], 0);
    assert_eq!(empty["metadata"]["pages_total"], 0);
}

#[test]
fn lists_filter_sort_and_project() {
    let server = TestServer::start();
    let ids: Vec<u32> = ["b", "c", "a"]
        .iter()
        .map(|name| server.create_pool(name, GIB))
        .collect();
    let big = server.create_pool("big pool", 10 * GIB);
    server.create_volume("v1", ids[0], GIB / 2);
    server.create_volume("v2", big, GIB);
    server.create_volume("v3", big, 2 * GIB);

    let get = |path: &str| {
        let (status, envelope) = server.call("GET", path, None);
        assert_eq!(status, 200, "{path}: {envelope}");
        envelope
    };
    assert_eq!(names(&get("/api/rest/pools?name=eq:c")), ["c"]);
    assert_eq!(names(&get("/api/rest/pools?name=c")), ["c"]);
    assert_eq!(names(&get("/api/rest/pools?name=eq:big%20pool")), ["big pool"]);
    assert_eq!(names(&get("/api/rest/pools?name=big+pool")), ["big pool"]);
    assert_eq!(names(&get(&format!("/api/rest/pools?id=eq:{}", ids[2]))), ["a"]);
    assert_eq!(names(&get("/api/rest/pools?name=ne:c&sort=name")), ["a", "b", "big pool"]);
    assert_eq!(names(&get("/api/rest/pools?sort=name")), ["a", "b", "big pool", "c"]);
    assert_eq!(names(&get("/api/rest/pools?sort=-id")), ["big pool", "a", "c", "b"]);
    assert_eq!(names(&get("/api/rest/pools?sort=-volumes_count,name")), ["big pool", "b", "a", "c"]);
    assert_eq!(names(&get("/api/rest/pools?name=in:[a,c]")), ["c", "a"]);
    assert_eq!(names(&get("/api/rest/pools?name=notin:a,c")), ["b", "big pool"]);
    assert_eq!(names(&get("/api/rest/pools?name=like:bi")), ["big pool"]);
    let filtered = get(&format!("/api/rest/pools?physical_capacity=gt:{GIB}"));
    assert_eq!(names(&filtered), ["big pool"]);
    assert_eq!(filtered["metadata"]["number_of_objects"], 1);
    assert_eq!(
        names(&get(&format!("/api/rest/volumes?pool_id=eq:{big}&sort=-size"))),
        ["v3", "v2"]
    );
    assert_eq!(
        names(&get(&format!("/api/rest/volumes?size=between:{},{GIB}", GIB / 2))),
        ["v1", "v2"]
    );
    assert_eq!(names(&get("/api/rest/volumes?pool_name=eq:big%20pool&size=lt:2147483648")), ["v2"]);
    assert_eq!(names(&get("/api/rest/volumes?write_protected=eq:false")).len(), 3);
    assert_eq!(
        get("/api/rest/pools?name=eq:a&fields=id,name")["result"],
        json!([{"id": ids[2], "name": "a"}])
    );

    let (status, refused) = server.call("GET", "/api/rest/pools?name=%FF", None);
    assert_eq!(status, 400);
    assert_error(&refused, "BAD_REQUEST");
    for (path, what) in [
        ("/api/rest/pools?colour=eq:red", "colour"),
        ("/api/rest/pools?sort=colour", "colour"),
        ("/api/rest/pools?fields=name,colour", "colour"),
        ("/api/rest/pools?id=eq:seven", "seven"),
        ("/api/rest/pools?id=between:1", "between"),
        ("/api/rest/pools?id=like:1", "like"),
    ] {
        let (status, refused) = server.call("GET", path, None);
        assert_eq!(status, 400, "{path}");
        assert_error(&refused, "BAD_REQUEST");
        assert!(
            refused["error"]["message"].as_str().unwrap().contains(what),
            "{path}: {refused}"
        );
    }
}

#[test]
fn metrics_are_prometheus_text() {
    let server = TestServer::start();
    let response =
        only_response(&server.raw(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(String::from_utf8(response.body).unwrap().contains("troika_volumes 0"));
    let (status, text) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(text.as_str().unwrap().starts_with("# TYPE"));
}

#[test]
fn unknown_paths_and_wrong_methods_are_refused() {
    let server = TestServer::start();
    for path in ["/", "/api", "/api/rest", "/api/rest/hosts", "/api/rest/pools/1/luns"] {
        let (status, refused) = server.call("GET", path, None);
        assert_eq!(status, 404, "{path}");
        assert_error(&refused, "NOT_FOUND");
    }
    for (method, path, allow) in [
        ("POST", "/api/rest/system", "GET"),
        ("DELETE", "/api/rest/pools", "GET, POST"),
        ("PUT", "/api/rest/pools/1", "GET, DELETE"),
        ("PATCH", "/api/rest/volumes/1", "GET, PUT, DELETE"),
        ("POST", "/metrics", "GET"),
    ] {
        let request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n\r\n");
        let response = only_response(&server.raw(request.as_bytes()));
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), Some(allow));
        assert_error(&response.json(), "METHOD_NOT_ALLOWED");
    }
    // A trailing slash names the same resource.
    let (status, _) = server.call("GET", "/api/rest/system/", None);
    assert_eq!(status, 200);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start();
    let mut stream = server.connect();
    stream
        .write_all(b"GET /api/rest/system HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let response = read_one_response(&mut stream);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("keep-alive"));

    // Two pipelined requests, the second one closing.
    let body = r#"{"name": "p", "physical_capacity": 1024}"#;
    let pipelined = format!(
        "POST /api/rest/pools HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
         GET /api/rest/pools HTTP/1.1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(pipelined.as_bytes()).unwrap();
    let responses = parse_responses(&read_to_close(&mut stream));
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0].status, 201);
    assert_eq!(responses[1].status, 200);
    assert_eq!(responses[1].header("connection"), Some("close"));
    assert_eq!(names(&responses[1].json()), ["p"]);

    // HTTP/1.0 closes unless asked to keep alive.
    let response = only_response(&server.raw(b"GET /api/rest/system HTTP/1.0\r\n\r\n"));
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn expect_continue_gets_an_interim_answer() {
    let server = TestServer::start();
    let mut stream = server.connect();
    let body = r#"{"name": "p", "physical_capacity": 1024}"#;
    let head = format!(
        "POST /api/rest/pools HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).unwrap();
    assert_eq!(only_response(&read_to_close(&mut stream)).status, 201);
}

#[test]
fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"\x00\x01\x02garbage\r\n\r\n".to_vec(), 400, "BAD_REQUEST"),
        (b"GET /api/rest/system HTTP/9.9\r\n\r\n".to_vec(), 400, "BAD_REQUEST"),
        (
            b"GET /api/rest/system HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
                .to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            format!(
                "POST /api/rest/pools HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            )
            .into_bytes(),
            413,
            "REQUEST_TOO_LARGE",
        ),
        (
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
            413,
            "REQUEST_TOO_LARGE",
        ),
        (
            format!(
                "GET /api/rest/system HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
                "a".repeat(MAX_HEAD_BYTES)
            )
            .into_bytes(),
            413,
            "REQUEST_TOO_LARGE",
        ),
        (
            format!(
                "GET /api/rest/system HTTP/1.1\r\n{}\r\n",
                "X-A: 1\r\n".repeat(65)
            )
            .into_bytes(),
            431,
            "TOO_MANY_HEADERS",
        ),
        (
            b"POST /api/rest/pools HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            501,
            "NOT_IMPLEMENTED",
        ),
    ];
    for (request, status, code) in cases {
        let response = only_response(&server.raw(&request));
        assert_eq!(
            response.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&request[..request.len().min(80)])
        );
        assert_eq!(response.header("connection"), Some("close"));
        assert_error(&response.json(), code);
        server.assert_alive();
    }
}

#[test]
fn an_oversize_body_is_refused_while_it_is_being_sent() {
    let server = TestServer::start();
    let client = server.client();
    let huge = Value::String("x".repeat(2 * MAX_BODY_BYTES));
    let (status, envelope) = client
        .request("POST", "/api/rest/pools", Some(&huge))
        .unwrap();
    assert_eq!(status, 413);
    assert_error(&envelope, "REQUEST_TOO_LARGE");
    server.assert_alive();
}

#[test]
fn truncated_requests_are_answered_or_closed_cleanly() {
    let server = TestServer::start();
    for partial in [
        &b"GET /api/rest/sys"[..],
        b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"name\"",
    ] {
        let mut stream = server.connect();
        stream.write_all(partial).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let response = only_response(&read_to_close(&mut stream));
        assert_eq!(response.status, 400);
        assert_error(&response.json(), "BAD_REQUEST");
    }
    // A client that vanishes mid-request costs nothing.
    let mut stream = server.connect();
    stream.write_all(b"GET /api/rest/sys").unwrap();
    drop(stream);
    // An empty connection is closed without an answer.
    let mut stream = server.connect();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_close(&mut stream).is_empty());
    server.assert_alive();
}

#[test]
fn a_panicking_call_costs_one_request() {
    let server = TestServer::start();
    let pool = server.create_pool("p", GIB);
    let body = json!({"name": "boom", "pool_id": pool, "size": 1024});
    let (status, envelope) = server.call("POST", "/api/rest/volumes", Some(body));
    assert_eq!(status, 500);
    assert_error(&envelope, "INTERNAL_ERROR");
    server.assert_alive();
}

#[test]
fn connections_past_the_limit_get_503() {
    let server = TestServer::start();
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut stream = server.connect();
        stream
            .write_all(b"GET /api/rest/system HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(read_one_response(&mut stream).status, 200);
        open.push(stream);
    }
    let response = only_response(&server.raw(b"GET /api/rest/system HTTP/1.1\r\n\r\n"));
    assert_eq!(response.status, 503);
    assert_error(&response.json(), "SERVICE_UNAVAILABLE");

    drop(open);
    // Closed connections free their slots once their threads notice.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = server.call("GET", "/api/rest/system", None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots were never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_stops_the_server_and_its_idle_connections() {
    let mut server = TestServer::start();
    let mut idle = server.connect();
    idle.write_all(b"GET /api/rest/system HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_one_response(&mut idle).status, 200);
    let mut buf = [0u8; 64];
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // The idle connection was closed by the server.
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
    assert!(UnixStream::connect(&server.socket).is_err());
}

#[test]
fn pipelined_requests_parse_one_at_a_time() {
    let two = b"GET /a HTTP/1.1\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    let (first, used) = http::parse_request(two).unwrap().unwrap();
    assert_eq!((first.method.as_str(), first.path(), first.query()), ("GET", "/a", ""));
    let (second, rest) = http::parse_request(&two[used..]).unwrap().unwrap();
    assert_eq!(second.path(), "/b");
    assert_eq!(second.query(), "x=1");
    assert_eq!(second.body, b"hi");
    assert_eq!(used + rest, two.len());
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_request_parser(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = http::parse_request(&bytes);
    }

    #[test]
    fn random_heads_never_panic_the_request_parser(
        method in "[A-Z]{1,7}",
        target in "/[ -~]{0,40}",
        fields in proptest::collection::vec(("[A-Za-z-]{1,16}", "[ -~]{0,30}"), 0..70),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut request = format!("{method} {target} HTTP/1.1\r\n");
        for (name, value) in &fields {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&tail);
        let _ = http::parse_request(&bytes);
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more(body in "[ -~]{0,200}", cut in any::<prop::sample::Index>()) {
        let request = format!(
            "PUT /api/rest/volumes/3?approved=true HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let bytes = request.as_bytes();
        let cut = cut.index(bytes.len());
        prop_assert_eq!(http::parse_request(&bytes[..cut]), Ok(None));
        let (parsed, used) = http::parse_request(bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(parsed.body, body.as_bytes());
    }
}

#[test]
fn http_errors_map_to_statuses() {
    assert_eq!(HttpError::HeadTooLarge.status(), 413);
    assert_eq!(HttpError::BodyTooLarge(1).status(), 413);
    assert_eq!(HttpError::Truncated(3).status(), 400);
    assert_eq!(HttpError::Timeout.status(), 408);
}

/// The binary's command line, as far as the management commands go.
#[derive(Debug, clap::Parser)]
struct TestCli {
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CliCommand,
}

fn parse_cli(args: &[&str]) -> Result<TestCli, clap::Error> {
    TestCli::try_parse_from(std::iter::once("troika").chain(args.iter().copied()))
}

/// Runs a command line against the socket; returns exit code, stdout, stderr.
fn run_cli(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let cli = parse_cli(args).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run_with(cli.command, socket, cli.json, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn sizes_are_parsed_by_clap() {
    let cli = parse_cli(&["pool", "create", "p", "--size", "10G", "--virtual-size", "1T"]).unwrap();
    assert_eq!(
        cli.command,
        CliCommand::Pool {
            cmd: PoolCommand::Create {
                name: "p".into(),
                size: 10 * GIB,
                virtual_size: Some(1 << 40),
            }
        }
    );
    let cli = parse_cli(&["vol", "resize", "v", "512M"]).unwrap();
    assert_eq!(
        cli.command,
        CliCommand::Vol {
            cmd: VolCommand::Resize {
                name: "v".into(),
                size: 512 << 20
            }
        }
    );
    let error = parse_cli(&["pool", "create", "p", "--size", "10X"]).unwrap_err();
    assert_eq!(error.exit_code(), cli::EXIT_USAGE);
    let message = error.to_string();
    assert!(message.contains("--size"), "{message}");
    assert!(message.contains("10X"), "{message}");
    let error = parse_cli(&["vol", "resize", "v", "lots"]).unwrap_err();
    assert!(error.to_string().contains("SIZE"), "{error}");
    assert!(parse_cli(&["vol", "create", "v", "--size", "1G"]).is_err());
}

#[test]
fn cli_manages_pools_and_volumes_by_name() {
    let server = TestServer::start();
    let socket = server.socket.as_path();

    let (code, out, err) = run_cli(socket, &["pool", "create", "gold pool", "--size", "100G"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("gold pool"), "{out}");
    assert!(out.contains("100.0 GiB"), "{out}");

    let (code, _, err) = run_cli(socket, &["pool", "create", "gold pool", "--size", "1G"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert!(err.starts_with("troika: error: NAME_CONFLICT: "), "{err}");

    run_cli(socket, &["pool", "create", "silver", "--size", "1G"]);
    let (code, out, _) = run_cli(
        socket,
        &["vol", "create", "db", "--pool", "gold pool", "--size", "10G", "--thick"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("THICK") && out.contains("gold pool"), "{out}");
    let (code, _, _) = run_cli(socket, &["vol", "create", "logs", "--pool", "silver", "--size", "512M"]);
    assert_eq!(code, 0);

    let (code, out, _) = run_cli(socket, &["vol", "ls"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NAME  ID  SIZE"), "{out}");
    assert!(lines[1].starts_with("db  "), "{out}");
    assert!(lines[2].starts_with("logs"), "{out}");
    // Columns line up.
    let size_column = lines[0].find("SIZE").unwrap();
    assert_eq!(&lines[1][size_column..size_column + 8], "10.0 GiB");

    let (code, out, _) = run_cli(socket, &["vol", "ls", "--pool", "silver"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("logs") && !out.contains("db"), "{out}");

    let (code, _, err) = run_cli(socket, &["vol", "ls", "--pool", "bronze"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert_eq!(err, "troika: error: POOL_NOT_FOUND: pool \"bronze\" does not exist\n");

    let (code, out, _) = run_cli(socket, &["vol", "resize", "db", "5G"]);
    assert_eq!(code, 0);
    assert!(out.contains("5.0 GiB"), "{out}");

    let (code, out, _) = run_cli(socket, &["--json", "pool", "ls"]);
    assert_eq!(code, 0);
    let pools: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 2);
    assert_eq!(pools[0]["name"], "gold pool");
    assert_eq!(pools[0]["volumes_count"], 1);

    let (code, _, err) = run_cli(socket, &["pool", "delete", "gold pool"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert!(err.contains("POOL_NOT_EMPTY"), "{err}");
    let (code, out, _) = run_cli(socket, &["vol", "delete", "db"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted volume \"db\""), "{out}");
    let (code, _, err) = run_cli(socket, &["vol", "delete", "db"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert_eq!(err, "troika: error: VOLUME_NOT_FOUND: volume \"db\" does not exist\n");
    let (code, _, _) = run_cli(socket, &["pool", "delete", "gold pool"]);
    assert_eq!(code, 0);

    let (code, out, _) = run_cli(socket, &["pool", "ls"]);
    assert_eq!(code, 0);
    assert!(!out.contains("gold") && out.contains("silver"), "{out}");

    let (code, out, _) = run_cli(socket, &["system", "show"]);
    assert_eq!(code, 0);
    assert!(out.contains("troika-test") && out.contains("1.0 TiB"), "{out}");
    let (code, out, _) = run_cli(socket, &["--json", "system", "show"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["serial"], 4242);
}

#[test]
fn cli_lists_every_page() {
    let server = TestServer::start();
    let pool = server.create_pool("p", 1 << 40);
    let count = super::rest::MAX_PAGE_SIZE + 5;
    for index in 0..count {
        let create = VolumeCreate {
            name: format!("v{index:05}"),
            pool_id: pool,
            size: 1024,
            provtype: None,
        };
        server.api.create_volume(create).unwrap();
    }
    let (code, out, _) = run_cli(&server.socket, &["--json", "vol", "ls"]);
    assert_eq!(code, 0);
    let volumes: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(volumes.as_array().unwrap().len(), count);
}

#[test]
fn cli_reports_an_unreachable_node() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let (code, out, err) = run_cli(&socket, &["pool", "ls"]);
    assert_eq!(code, cli::EXIT_UNREACHABLE);
    assert!(out.is_empty());
    let expected = format!("troika: error: cannot reach the troika node at {}: ", socket.display());
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("is `troika serve` running with this data dir?"), "{err}");
}
