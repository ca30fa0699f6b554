//! HTTP/1.1 framing for the management socket: reading requests under size limits and
//! writing responses.
//!
//! Every byte a client sends is hostile. [`parse_request`] is a pure function over the bytes
//! received so far: it either needs more bytes, yields a typed [`Request`] and how many bytes
//! it used, or refuses with an [`HttpError`] that carries its own HTTP status. Limits are
//! checked before anything is allocated for them: the head (request line and header fields)
//! may not exceed [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] fields, and the declared body may not
//! exceed [`MAX_BODY_BYTES`]. Bodies are framed by `Content-Length` only; a chunked body is
//! refused rather than guessed at.
//!
//! [`RequestReader`] drives that parser over a blocking stream with a short read timeout, so
//! that the connection notices server shutdown and gives up on idle or slow clients: the
//! request head must arrive within [`HEADER_TIMEOUT`] of its first byte (a slowloris
//! client is answered 408 and dropped), the whole request within [`REQUEST_TIMEOUT`], and
//! a connection may wait for its next request only as long as the caller allows (the
//! server gives a new connection [`FIRST_REQUEST_TIMEOUT`], a kept-alive one
//! [`IDLE_TIMEOUT`]).

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Largest request head (request line plus header fields, up to the blank line).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// How long a kept-alive connection may sit idle between requests before it is closed
/// (sooner when the server needs its slot: see [`crate::mgmt::server`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection may take to complete its TLS handshake and send the first
/// request head.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send a request head once its first byte has arrived.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send one whole request once its first byte has arrived.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request was refused before it reached the API. The connection is closed after the
/// error response, because the framing of anything after it can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the request head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the request has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the request body of {0} bytes is larger than the {MAX_BODY_BYTES}-byte limit")]
    BodyTooLarge(u64),
    #[error("Transfer-Encoding is not supported; send the body with a Content-Length")]
    TransferEncoding,
    #[error("the connection closed after {0} bytes, in the middle of a request")]
    Truncated(usize),
    #[error(
        "the request was not complete in time (head within {} s, all within {} s)",
        HEADER_TIMEOUT.as_secs(),
        REQUEST_TIMEOUT.as_secs()
    )]
    Timeout,
}

impl HttpError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::Truncated(_) => 400,
            HttpError::HeadTooLarge | HttpError::BodyTooLarge(_) => 413,
            HttpError::TooManyHeaders => 431,
            HttpError::TransferEncoding => 501,
            HttpError::Timeout => 408,
        }
    }

    /// The error code that goes into the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Malformed(_) | HttpError::Truncated(_) => "BAD_REQUEST",
            HttpError::HeadTooLarge | HttpError::BodyTooLarge(_) => "REQUEST_TOO_LARGE",
            HttpError::TooManyHeaders => "TOO_MANY_HEADERS",
            HttpError::TransferEncoding => "NOT_IMPLEMENTED",
            HttpError::Timeout => "REQUEST_TIMEOUT",
        }
    }
}

/// One complete, size-checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path, then an optional `?query`.
    pub target: String,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The `Authorization` header field, if sent.
    pub authorization: Option<String>,
    /// The `Cookie` header field(s), joined with `; `, if sent.
    pub cookie: Option<String>,
    /// Every header field as sent, names in lower case (for [`super::rest::guard`]).
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address on TCP (set by the server; `None` on the unix socket).
    pub peer: Option<IpAddr>,
    /// Set by the server when this connection already proved this very `Authorization`
    /// value on an earlier request: the login limiter is not asked again.
    pub verified_authorization: bool,
}

impl Request {
    /// A request with no credentials and no body, e.g. for tests and internal calls.
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            keep_alive: true,
            authorization: None,
            cookie: None,
            fields: Vec::new(),
            body: Vec::new(),
            peer: None,
            verified_authorization: false,
        }
    }

    /// The value of cookie `name`, if the request carries it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookie.as_deref()?.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The raw query string (after `?`), empty when there is none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }
}

/// A parsed request head: what is needed to know how many more bytes make up the request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    keep_alive: bool,
    expect_continue: bool,
    authorization: Option<String>,
    cookie: Option<String>,
    fields: Vec<(String, String)>,
    head_len: usize,
    content_length: usize,
}

impl Head {
    fn into_request(self, body: Vec<u8>) -> Request {
        Request {
            method: self.method,
            target: self.target,
            keep_alive: self.keep_alive,
            authorization: self.authorization,
            cookie: self.cookie,
            fields: self.fields,
            body,
            peer: None,
            verified_authorization: false,
        }
    }
}

/// Parses the head at the start of `buf`. `Ok(None)` means more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(error) => return Err(HttpError::Malformed(error.to_string())),
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::Malformed("incomplete request line".into()));
    };

    let mut content_length: Option<u64> = None;
    // HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 closes them.
    let mut keep_alive = minor_version >= 1;
    let mut expect_continue = false;
    let mut authorization = None;
    let mut cookie: Option<String> = None;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let value = std::str::from_utf8(field.value)
            .map_err(|_| HttpError::Malformed(format!("header field {} is not UTF-8", field.name)))?
            .trim();
        fields.push((field.name.to_ascii_lowercase(), value.to_owned()));
        if field.name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(HttpError::Malformed(
                    "conflicting Content-Length header fields".into(),
                ));
            }
            content_length = Some(length);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if field.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if field.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if field.name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(HttpError::Malformed(
                    "more than one Authorization header field".into(),
                ));
            }
            authorization = Some(value.to_owned());
        } else if field.name.eq_ignore_ascii_case("cookie") {
            cookie = Some(match cookie {
                Some(previous) => format!("{previous}; {value}"),
                None => value.to_owned(),
            });
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY_BYTES as u64 {
        return Err(HttpError::BodyTooLarge(content_length));
    }
    Ok(Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        keep_alive,
        expect_continue,
        authorization,
        cookie,
        fields,
        head_len,
        // Checked against MAX_BODY_BYTES above, so it fits.
        content_length: content_length as usize,
    }))
}

/// `Content-Length` is one or more decimal digits and nothing else (no sign, no spaces).
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed(format!(
            "Content-Length {value:?} is not a decimal number"
        )));
    }
    // All digits, so the only possible failure is overflow: far past any limit.
    Ok(value.parse().unwrap_or(u64::MAX))
}

/// True when a read on a socket with a timeout failed only because nothing came in time
/// (or a signal interrupted it): the caller looks at its clocks and flags and reads again.
pub fn only_waited(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Parses one request from the start of `buf`: `Ok(None)` while more bytes are needed,
/// otherwise the request and the number of bytes of `buf` it used (the rest belongs to the
/// next, pipelined request).
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let total = head.head_len + head.content_length;
    if buf.len() < total {
        return Ok(None);
    }
    let body = buf[head.head_len..total].to_vec();
    Ok(Some((head.into_request(body), total)))
}

/// What [`RequestReader::next_request`] found on the connection.
#[derive(Debug)]
pub enum ReadOutcome {
    Request(Request),
    /// The peer closed cleanly between requests, sat idle too long, the stream failed, or
    /// the server is stopping: close without a response.
    Closed,
    /// The request is refused: answer with the error, then close.
    Refused(HttpError),
}

/// Reads requests one after another from one connection, keeping bytes of a pipelined
/// next request for the following call.
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
}

impl RequestReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads until one whole request has arrived. `stream` must have a short read timeout
    /// (reads that time out are how `stop` gets polled); `stop` returning true ends the wait.
    /// A connection with no byte of a request after `idle_timeout` is closed.
    pub fn next_request<S: Read + Write>(
        &mut self,
        stream: &mut S,
        stop: &dyn Fn() -> bool,
        idle_timeout: Duration,
    ) -> ReadOutcome {
        let mut waiting_since = Instant::now();
        let mut sent_continue = false;
        let mut chunk = [0u8; 8192];
        let mut head_complete = false;
        loop {
            match parse_head(&self.buf) {
                Err(error) => return ReadOutcome::Refused(error),
                Ok(Some(head)) => {
                    head_complete = true;
                    let total = head.head_len + head.content_length;
                    if self.buf.len() >= total {
                        let body = self.buf[head.head_len..total].to_vec();
                        self.buf.drain(..total);
                        return ReadOutcome::Request(head.into_request(body));
                    }
                    if head.expect_continue && !sent_continue {
                        sent_continue = true;
                        if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                            return ReadOutcome::Closed;
                        }
                    }
                }
                Ok(None) => {}
            }
            if stop() {
                return ReadOutcome::Closed;
            }
            let waited = waiting_since.elapsed();
            if self.buf.is_empty() {
                if waited > idle_timeout {
                    return ReadOutcome::Closed;
                }
            } else if waited > REQUEST_TIMEOUT || (!head_complete && waited > HEADER_TIMEOUT) {
                return ReadOutcome::Refused(HttpError::Timeout);
            }
            match stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return ReadOutcome::Closed,
                Ok(0) => return ReadOutcome::Refused(HttpError::Truncated(self.buf.len())),
                Ok(n) => {
                    if self.buf.is_empty() {
                        // The request clock starts at its first byte.
                        waiting_since = Instant::now();
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(error) if only_waited(&error) => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }
}

/// A response ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header fields, e.g. `Allow` on a 405.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Writes the whole response; `keep_alive` says whether the connection stays open.
    pub fn write_to(&self, out: &mut impl Write, keep_alive: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        out.write_all(&bytes)?;
        out.flush()
    }
}

/// The standard reason phrase for the statuses this server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}
