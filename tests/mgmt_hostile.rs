//! Hostile clients of the REST API, against the real binary over TCP and the unix socket:
//! broken framing, oversized and chunked requests, bad JSON, bad list parameters, path
//! tricks in names and targets, unicode, many requests on one connection, a slowloris,
//! a burst beyond the connection limit and bad credentials.
//!
//! Every answer is checked: a refusal is a 4xx with an error envelope that says why, and no
//! answer is ever a 5xx except the documented 501 (chunked bodies) and 503 (connection
//! limit). At the end the node must still answer, `GET /metrics` included.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{TestNode, ci_model, exchange_raw, split_response};
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;
/// Unauthenticated connections kept from one address (src/mgmt/server/slots.rs).
const PER_ADDRESS_LIMIT: usize = troika::mgmt::server::slots::MAX_PER_ADDRESS;

/// Which socket a raw request goes to.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Unix,
}

const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Unix];

/// A node and the admin's credentials.
struct Target {
    node: TestNode,
    password: String,
}

impl Target {
    fn start() -> Target {
        let node = TestNode::start_with_api(ci_model());
        let password = node.admin_password();
        Target { node, password }
    }

    fn basic(&self) -> String {
        common::base64_encode(format!("admin:{}", self.password).as_bytes())
    }

    /// Raw bytes on a fresh connection; the status and body of the answer, checked to be
    /// a well-formed response with an allowed status.
    fn raw(&self, transport: Transport, bytes: &[u8]) -> (u16, String) {
        let answer = match transport {
            Transport::Tcp => self.node.raw_tcp(bytes),
            Transport::Unix => self.node.raw_unix(bytes),
        };
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (status, body) = split_response(&text);
        check_status(status, &format!("{transport:?} {:?}", show(bytes)), &body);
        (status, body)
    }

    /// A request with the admin's basic credentials (TCP) or as the local admin (unix),
    /// with `body` sent as it is.
    fn admin(&self, transport: Transport, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: troika\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Transport::Tcp = transport {
            head.push_str(&format!("Authorization: Basic {}\r\n", self.basic()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        let (status, text) = self.raw(transport, &bytes);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Like [`Target::admin`], for a request that must be refused with a clear 4xx:
    /// `status`, an error envelope with a code and a message, and no result.
    fn refused(
        &self,
        transport: Transport,
        method: &str,
        target: &str,
        body: &[u8],
        status: u16,
    ) -> Value {
        let (got, answer) = self.admin(transport, method, target, body);
        let what = format!(
            "{transport:?} {method} {target} {:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(got, status, "{what}: {answer}");
        assert_clear_error(&answer, &what);
        answer
    }
}

/// A printable, bounded view of raw request bytes for failure messages.
fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
    if bytes.len() > 120 {
        format!("{text}... ({} bytes)", bytes.len())
    } else {
        text
    }
}

/// No answer is a server error, except the documented 501 (chunked) and 503 (too many
/// connections); every answer has a status.
fn check_status(status: u16, what: &str, body: &str) {
    assert!(
        status >= 100,
        "{what}: no well-formed answer (got {body:?})"
    );
    assert!(
        status < 500 || status == 501 || status == 503,
        "{what}: server error {status}: {body}"
    );
}

/// The envelope of a refusal: `result` null, `error` with a code and a message.
fn assert_clear_error(answer: &Value, what: &str) {
    assert!(answer["result"].is_null(), "{what}: {answer}");
    let code = answer["error"]["code"].as_str().unwrap_or("");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(
        !code.is_empty() && !message.is_empty(),
        "{what}: no error code and message in {answer}"
    );
}

#[test]
fn broken_framing_is_refused_with_the_right_status() {
    let target = Target::start();
    let huge_header = format!(
        "GET /api/rest/_features HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let many_headers = format!(
        "GET /api/rest/_features HTTP/1.1\r\n{}\r\n",
        (0..70)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /api/rest/_features\r\n\r\n".to_vec(), 400),
        (
            "unknown version",
            b"GET /api/rest/_features HTTP/7.3\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in the target",
            b"GET /api/rest/\0features HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header without a colon",
            b"GET /api/rest/_features HTTP/1.1\r\nNoColon\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in a header name",
            b"GET /api/rest/_features HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header value not UTF-8",
            b"GET /api/rest/_features HTTP/1.1\r\nCookie: \xff\xfe\r\n\r\n".to_vec(),
            400,
        ),
        (
            "negative Content-Length",
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length not a number",
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n".to_vec(),
            400,
        ),
        (
            "conflicting Content-Lengths",
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"
                .to_vec(),
            400,
        ),
        (
            "two Authorization fields",
            b"GET /api/rest/system HTTP/1.1\r\nAuthorization: Basic a\r\nAuthorization: Basic b\r\n\r\n"
                .to_vec(),
            400,
        ),
        ("head over 16 KiB", huge_header.into_bytes(), 413),
        ("too many header fields", many_headers.into_bytes(), 431),
        (
            "body over 1 MiB, declared only",
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n".to_vec(),
            413,
        ),
        (
            "Content-Length past u64",
            b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
            413,
        ),
        (
            "chunked body",
            b"POST /api/rest/pools HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            501,
        ),
    ];
    for transport in TRANSPORTS {
        for (name, bytes, status) in &cases {
            let started = Instant::now();
            let (got, body) = target.raw(transport, bytes);
            assert_eq!(got, *status, "{transport:?} {name}: {body}");
            let answer: Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("{transport:?} {name}: not JSON: {body:?}"));
            assert_clear_error(&answer, name);
            // Refused from the head alone: the server does not wait for a body it will not
            // read (e.g. the 1 MiB one that is never sent).
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{transport:?} {name}: took {:?}",
                started.elapsed()
            );
        }

        // A body cut short by the client closing its side.
        let mut stream: Box<dyn ReadWrite> = match transport {
            Transport::Tcp => Box::new(target.node.connect_api()),
            Transport::Unix => Box::new(target.node.connect_mgmt_socket()),
        };
        stream
            .write_all(b"POST /api/rest/pools HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na")
            .expect("send");
        stream.shutdown_write();
        let answer = exchange_raw(stream, b"", Duration::from_secs(10));
        let (status, body) = split_response(&String::from_utf8_lossy(&answer));
        assert_eq!(status, 400, "{transport:?} truncated body: {body}");
    }
    assert_node_healthy(&target);
}

/// A stream whose write side can be closed, TCP or unix.
trait ReadWrite: Read + Write {
    fn shutdown_write(&self);
}

impl ReadWrite for TcpStream {
    fn shutdown_write(&self) {
        self.shutdown(Shutdown::Write)
            .expect("shut down the write side");
    }
}

impl ReadWrite for std::os::unix::net::UnixStream {
    fn shutdown_write(&self) {
        self.shutdown(Shutdown::Write)
            .expect("shut down the write side");
    }
}

#[test]
fn hostile_bodies_queries_and_names_get_a_clear_400() {
    let target = Target::start();
    let (status, pool) = target.admin(
        Transport::Unix,
        "POST",
        "/api/rest/pools",
        json!({"name": "pool", "physical_capacity": 64 * MIB})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 201, "{pool}");
    let pool_id = pool["result"]["id"].as_u64().expect("pool id");
    let (status, volume) = target.admin(
        Transport::Unix,
        "POST",
        "/api/rest/volumes",
        json!({"name": "vol", "pool_id": pool_id, "size": 4 * MIB})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 201, "{volume}");
    let volume_id = volume["result"]["id"].as_u64().expect("volume id");
    let volume_path = format!("/api/rest/volumes/{volume_id}");
    let volume_create = |fields: &str| format!(r#"{{"name":"v2","pool_id":{pool_id},{fields}}}"#);

    // Bodies that are not JSON objects, or not the right one.
    let bodies: Vec<(&str, String)> = vec![
        ("/api/rest/pools", String::new()),
        ("/api/rest/pools", "   ".into()),
        ("/api/rest/pools", "{".into()),
        ("/api/rest/pools", "[]".into()),
        ("/api/rest/pools", "null".into()),
        ("/api/rest/pools", "\"pool\"".into()),
        ("/api/rest/pools", "{\"name\": \"p\"}".into()),
        (
            "/api/rest/pools",
            "{\"name\": 7, \"physical_capacity\": 1}".into(),
        ),
        (
            "/api/rest/pools",
            "{\"name\": \"p\", \"physical_capacity\": 1} trailing".into(),
        ),
        (
            "/api/rest/pools",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        ("/api/rest/volumes", volume_create(r#""size":"4194304""#)),
        ("/api/rest/volumes", volume_create(r#""size":-4096"#)),
        ("/api/rest/volumes", volume_create(r#""size":4096.5"#)),
        ("/api/rest/volumes", volume_create(r#""size":1e30"#)),
        (
            "/api/rest/volumes",
            volume_create(r#""size":18446744073709551616"#),
        ),
        (
            "/api/rest/volumes",
            volume_create(r#""size":18446744073709551615"#),
        ),
        ("/api/rest/volumes", volume_create(r#""size":0"#)),
        ("/api/rest/volumes", volume_create(r#""size":4097"#)),
        ("/api/rest/volumes", volume_create(r#""size":true"#)),
        ("/api/rest/volumes", volume_create(r#""size":null"#)),
        (
            "/api/rest/volumes",
            volume_create(r#""size":4096,"provtype":"FAT""#),
        ),
        (
            "/api/rest/volumes",
            r#"{"name":"v2","pool_id":"1","size":4096}"#.into(),
        ),
        (
            "/api/rest/volumes",
            r#"{"name":"v2","pool_id":4294967296,"size":4096}"#.into(),
        ),
        (
            "/api/rest/users",
            r#"{"name":"u","password":"long-enough-pw","role":"ROOT"}"#.into(),
        ),
        (
            "/api/rest/users",
            r#"{"name":"u","password":"long-enough-pw","role":"ADMIN","shell":"/bin/sh"}"#.into(),
        ),
        (
            "/api/rest/users/login",
            r#"{"username":"admin","password":"x","remember":true}"#.into(),
        ),
    ];
    for transport in TRANSPORTS {
        for (path, body) in &bodies {
            target.refused(transport, "POST", path, body.as_bytes(), 400);
        }
        let non_utf8 = b"{\"name\": \"\xff\xfe\", \"physical_capacity\": 4194304}";
        target.refused(transport, "POST", "/api/rest/pools", non_utf8, 400);

        // Updates take only their own fields, with their own types.
        for body in [
            r#"{"owner":"me"}"#,
            r#"{"size":"big"}"#,
            r#"{"size":-1}"#,
            r#"{"write_protected":"yes"}"#,
        ] {
            target.refused(transport, "PUT", &volume_path, body.as_bytes(), 400);
        }
        for body in [
            r#"{"physical_capacity_warning":300}"#,
            r#"{"owners":"everyone"}"#,
            r#"{"owners":[-1]}"#,
            r#"{"colour":"red"}"#,
        ] {
            let path = format!("/api/rest/pools/{pool_id}");
            target.refused(transport, "PUT", &path, body.as_bytes(), 400);
        }

        // List parameters.
        for query in [
            "page_size=1000000",
            "page_size=-1",
            "page_size=abc",
            "page_size=1.5",
            "page=0",
            "page=-3",
            "page=abc",
            "page=99999999999999999999999",
            "page_size=18446744073709551616",
            "nosuchfield=1",
            "size=gt:abc",
            "size=between:1",
            "id=in:",
            "sort=nosuchfield",
            "sort=-",
            "fields=nosuchfield",
            "%zz=1",
            "name=%ff%fe",
        ] {
            target.refused(
                transport,
                "GET",
                &format!("/api/rest/volumes?{query}"),
                b"",
                400,
            );
        }
        // An unknown operator is an equality test with the whole text: it finds nothing
        // rather than failing.
        let (status, answer) =
            target.admin(transport, "GET", "/api/rest/volumes?name=bogus:vol", b"");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["result"], json!([]));

        // Names with path tricks, control characters or unicode.
        for name in [
            "../../etc/passwd",
            "a/b",
            "%2e%2e",
            "%00",
            "a\u{0}b",
            "vol\nname",
            "\u{1F4BE}disk",
            "\u{202E}lov",
            "vol\u{200F}",
            "-leading-dash",
            "",
            &"n".repeat(10_000),
        ] {
            let pool = json!({"name": name, "physical_capacity": 4 * MIB}).to_string();
            target.refused(transport, "POST", "/api/rest/pools", pool.as_bytes(), 400);
            let volume = json!({"name": name, "pool_id": pool_id, "size": 4 * MIB}).to_string();
            target.refused(
                transport,
                "POST",
                "/api/rest/volumes",
                volume.as_bytes(),
                400,
            );
            let rename = json!({"name": name}).to_string();
            target.refused(transport, "PUT", &volume_path, rename.as_bytes(), 400);
            // User names may start with '-' (they are never command arguments).
            if !name.starts_with('-') {
                let user = json!({"name": name, "password": "long-enough-pw", "role": "READ_ONLY"})
                    .to_string();
                target.refused(transport, "POST", "/api/rest/users", user.as_bytes(), 400);
            }
        }

        // Targets with path tricks find nothing; they never reach another route.
        for (path, status) in [
            ("/api/rest/volumes/..", 404),
            ("/api/rest/volumes/%2e%2e", 404),
            ("/api/rest/volumes/../users", 404),
            ("/api/rest/volumes/%2e%2e/%2e%2e/users", 404),
            ("/api/rest/volumes/1%00", 404),
            ("/api/rest/volumes/-1", 404),
            ("/api/rest/volumes/4294967296", 404),
            ("/api/rest/volumes/\u{1F4BE}", 404),
            ("/api/rest/../rest/users", 404),
            ("/api/rest/volumes//", 404),
            ("//api/rest/volumes", 404),
            ("*", 404),
        ] {
            target.refused(transport, "GET", path, b"", status);
        }
        target.refused(transport, "BREW", "/api/rest/volumes", b"", 405);
    }
    // Nothing above created or renamed anything.
    let (_, volumes) = target.admin(Transport::Unix, "GET", "/api/rest/volumes", b"");
    let names: Vec<&str> = volumes["result"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["vol"]);
    assert_node_healthy(&target);
}

/// One HTTP/1.1 exchange on an open keep-alive connection: the status.
fn keep_alive_request(stream: &mut TcpStream, request: &[u8]) -> u16 {
    stream.write_all(request).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).expect("read the body");
                assert!(n > 0, "closed in the middle of a body");
                buf.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(buf.len(), end + 4 + length, "more bytes than one answer");
            return split_response(&head).0;
        }
        let n = stream.read(&mut chunk).expect("read the head");
        assert!(n > 0, "the server closed a kept-alive connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn many_requests_on_one_connection_and_slow_or_many_clients() {
    let target = Target::start();

    // 5,000 requests on one kept-alive connection, every one answered, in bounded time.
    let mut stream =
        TcpStream::connect(("127.0.0.1", target.node.api_port.expect("port"))).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "GET /api/rest/system HTTP/1.1\r\nHost: troika\r\nAuthorization: Basic {}\r\n\r\n",
        target.basic()
    );
    let started = Instant::now();
    for index in 0..5_000 {
        let status = keep_alive_request(&mut stream, request.as_bytes());
        assert_eq!(status, 200, "request {index} on the kept-alive connection");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "5,000 kept-alive requests took {:?}",
        started.elapsed()
    );
    drop(stream);

    // Slowloris: partial heads, then silence. Others are still served promptly.
    let slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = target.node.connect_api();
            stream
                .write_all(b"GET /api/rest/system HTTP/1.1\r\nHost: tro")
                .expect("send a partial head");
            stream
        })
        .collect();
    for transport in TRANSPORTS {
        let started = Instant::now();
        let (status, _) = target.raw(
            transport,
            b"GET /api/rest/_features HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{transport:?}: a slowloris held up another client for {:?}",
            started.elapsed()
        );
    }
    drop(slow);

    // 100 silent connections at once from one address: past the per-address limit each
    // newcomer pushes out the longest-silent one (closed without an answer), the others
    // are served; none hangs. A connection first listens for a refusal or a close, then
    // asks.
    let port = target.node.api_port.expect("port");
    let connections = 100;
    let barrier = Arc::new(Barrier::new(connections));
    let started = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("timeout");
                // Every connection is open before any is answered or closed.
                barrier.wait();
                let mut refusal = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut chunk) {
                    refusal.extend_from_slice(&chunk[..n]);
                }
                let answer = if refusal.is_empty() {
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("timeout");
                    exchange_raw(
                        stream,
                        b"GET /api/rest/_features HTTP/1.1\r\nConnection: close\r\n\r\n",
                        Duration::from_secs(20),
                    )
                } else {
                    refusal
                };
                split_response(&String::from_utf8_lossy(&answer))
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = clients
        .into_iter()
        .map(|client| client.join().expect("client thread"))
        .collect();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the burst took {:?}",
        started.elapsed()
    );
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused = answers.iter().filter(|(status, _)| *status == 503).count();
    let pushed_out = answers.iter().filter(|(status, _)| *status == 0).count();
    for (status, body) in answers.iter().filter(|(status, _)| *status != 0) {
        check_status(*status, "burst", body);
    }
    assert_eq!(served + refused + pushed_out, connections, "{answers:?}");
    assert!(
        refused + pushed_out >= connections - PER_ADDRESS_LIMIT,
        "{refused} refused and {pushed_out} closed of {connections}"
    );
    assert!(served >= 1, "nobody was served");
    for (status, body) in answers.iter().filter(|(status, _)| *status == 503) {
        let answer: Value = serde_json::from_str(body).expect("a JSON refusal");
        assert_eq!(answer["error"]["code"], "SERVICE_UNAVAILABLE", "{status}");
    }

    // The slots come back once the connections are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = target
            .node
            .http_tcp("GET", "/api/rest/_features", None, None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused after the burst");
        thread::sleep(Duration::from_millis(100));
    }
    assert_node_healthy(&target);
}

#[test]
fn bad_credentials_are_401() {
    let target = Target::start();
    let wrong = common::base64_encode(b"admin:not-the-password");
    let unknown = common::base64_encode(b"nobody-at-all:whatever");
    let no_colon = common::base64_encode(b"adminpassword");
    let not_utf8 = common::base64_encode(b"admin:\xff\xfe");
    for authorization in [
        format!("Basic {wrong}"),
        format!("Basic {unknown}"),
        format!("Basic {no_colon}"),
        format!("Basic {not_utf8}"),
        "Basic !!!not-base64!!!".to_owned(),
        "Basic".to_owned(),
        "Bearer abc.def.ghi".to_owned(),
        "garbage".to_owned(),
        format!("Basic {}", "A".repeat(8_000)),
    ] {
        let request = format!(
            "GET /api/rest/system HTTP/1.1\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = target.raw(Transport::Tcp, request.as_bytes());
        assert_eq!(status, 401, "{}: {body}", show(authorization.as_bytes()));
        let answer: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer["error"]["code"], "UNAUTHORIZED", "{answer}");
    }
    for cookie in ["JSESSIONID=forged", "JSESSIONID=", "JSESSIONID", ";;;=;"] {
        let request = format!(
            "GET /api/rest/system HTTP/1.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = target.raw(Transport::Tcp, request.as_bytes());
        assert_eq!(status, 401, "cookie {cookie:?}: {body}");
    }
    let (status, body) = target.raw(
        Transport::Tcp,
        b"GET /api/rest/system HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401, "{body}");
    assert_node_healthy(&target);
}

/// The node still answers on both sockets, and its metrics are readable.
fn assert_node_healthy(target: &Target) {
    for transport in TRANSPORTS {
        let (status, system) = target.admin(transport, "GET", "/api/rest/system", b"");
        assert_eq!(status, 200, "{transport:?}: {system}");
        assert_eq!(system["result"]["state"], "ACTIVE", "{system}");
        let (status, metrics) = target.admin(transport, "GET", "/metrics", b"");
        assert_eq!(status, 200, "{transport:?} /metrics: {metrics}");
        assert!(
            metrics.as_str().is_some_and(|text| text.contains("# TYPE")),
            "{transport:?}: /metrics is not Prometheus text: {metrics}"
        );
    }
}

/// A refused update changes nothing: a rename sent with an invalid size must not rename.
#[test]
fn a_refused_volume_update_changes_nothing() {
    let target = Target::start();
    let pool = json!({"name": "pool", "physical_capacity": 64 * MIB}).to_string();
    let (status, pool) = target.admin(Transport::Unix, "POST", "/api/rest/pools", pool.as_bytes());
    assert_eq!(status, 201, "{pool}");
    let volume = json!({"name": "vol", "pool_id": pool["result"]["id"], "size": 4 * MIB});
    let (status, volume) = target.admin(
        Transport::Unix,
        "POST",
        "/api/rest/volumes",
        volume.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{volume}");
    let path = format!("/api/rest/volumes/{}?approved=true", volume["result"]["id"]);
    let update = json!({"name": "renamed", "write_protected": true, "size": 4097});
    target.refused(
        Transport::Unix,
        "PUT",
        &path,
        update.to_string().as_bytes(),
        400,
    );
    let (_, after) = target.admin(Transport::Unix, "GET", &path, b"");
    assert_eq!(after["result"]["name"], "vol", "{after}");
    assert_eq!(after["result"]["write_protected"], false, "{after}");
}
