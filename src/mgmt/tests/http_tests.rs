//! HTTP framing, size limits, keep-alive, connection limits and shutdown.

use super::*;

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
        "POST /api/rest/pools HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
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
        "POST /api/rest/pools HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
    let cases: Vec<(Vec<u8>, u16, &str)> =
        vec![
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
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The idle connection was closed by the server.
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
    assert!(UnixStream::connect(&server.socket).is_err());
}

#[test]
fn pipelined_requests_parse_one_at_a_time() {
    let two = b"GET /a HTTP/1.1\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    let (first, used) = http::parse_request(two).unwrap().unwrap();
    assert_eq!(
        (first.method.as_str(), first.path(), first.query()),
        ("GET", "/a", "")
    );
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

#[test]
fn tcp_needs_credentials_and_the_unix_socket_does_not() {
    let server = TestServer::start_with_tcp();
    let get = b"GET /api/rest/system HTTP/1.1\r\nConnection: close\r\n\r\n";
    let refused = only_response(&server.raw_tcp(get));
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Basic realm=\"troika\"")
    );
    assert_error(&refused.json(), "UNAUTHORIZED");

    let authorized = format!(
        "GET /api/rest/system HTTP/1.1\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        server.fixture.admin_basic()
    );
    let answered = only_response(&server.raw_tcp(authorized.as_bytes()));
    assert_eq!(answered.status, 200);
    assert_eq!(answered.json()["result"]["version"], API_LEVEL);

    let public = b"GET /api/rest/_features HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(only_response(&server.raw_tcp(public)).status, 200);
    assert_eq!(only_response(&server.raw(get)).status, 200);
}

#[test]
fn a_tcp_session_cookie_survives_across_connections() {
    let server = TestServer::start_with_tcp();
    let body = json!({"username": DEFAULT_ADMIN_NAME, "password": server.fixture.admin_password})
        .to_string();
    let login = format!(
        "POST /api/rest/users/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = only_response(&server.raw_tcp(login.as_bytes()));
    assert_eq!(response.status, 200);
    let cookie = response.header("set-cookie").unwrap();
    let session = cookie.split(';').next().unwrap();
    assert!(session.starts_with("JSESSIONID="), "{cookie}");
    let request = format!(
        "GET /api/rest/users/current HTTP/1.1\r\nCookie: {session}\r\nConnection: close\r\n\r\n"
    );
    let response = only_response(&server.raw_tcp(request.as_bytes()));
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["result"]["name"], DEFAULT_ADMIN_NAME);
}
