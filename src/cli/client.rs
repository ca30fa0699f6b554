//! A blocking HTTP/1.1 client for the management API, on the node's unix socket or on its
//! TCP listener (`https://HOST:PORT`, or `http://` for a node started with
//! `--mgmt-tls off`, with HTTP basic credentials). Over HTTPS the node's certificate is
//! verified against the CA file the client was given ([`Client::with_ca_file`]): the
//! node's own `DATA/tls/server-cert.pem`, or the CA that signed an installed certificate;
//! the host name or address in the URL must be one of the certificate's names.
//!
//! One client keeps one keep-alive connection: it is opened on the first request and reused
//! by the next ones. A request on a reused connection that gets no byte of an answer (the
//! node closed the idle connection) is sent once more on a fresh one; any other failure is
//! reported. Responses are framed by their `Content-Length` (or read to the end of the
//! stream when there is none, after which the connection is dropped), capped at
//! [`MAX_RESPONSE_BYTES`]. A JSON body is returned parsed; any other body (e.g. `/metrics`)
//! as a JSON string.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use parking_lot::Mutex;
use serde_json::Value;

/// Largest response the client accepts.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How long the client waits for the node to take a request or answer it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client tries to open a TCP connection to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The port of an `http://` URL that names none.
const HTTP_DEFAULT_PORT: u16 = 80;
/// The port of an `https://` URL that names none.
const HTTPS_DEFAULT_PORT: u16 = 443;

/// Where the node's management API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The node's unix socket: the caller acts as the local ADMIN, without credentials.
    Unix(PathBuf),
    /// The node's TCP listener; `tls` for `https://`.
    Tcp { host: String, port: u16, tls: bool },
}

impl Endpoint {
    /// Parses `https://HOST[:PORT][/]` or `http://...`; HOST may be a name, an IPv4
    /// address or a bracketed IPv6 address.
    pub fn parse_url(url: &str) -> Result<Endpoint, String> {
        let scheme_is = |scheme: &str| {
            url.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        };
        let (rest, tls) = if scheme_is("https://") {
            (&url[8..], true)
        } else if scheme_is("http://") {
            (&url[7..], false)
        } else {
            return Err(format!(
                "{url:?} is not a URL like https://127.0.0.1:8080 (https://, or http:// for a \
                 node started with --mgmt-tls off)"
            ));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: give only http://HOST:PORT, without a path, query or user"
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| format!("{url:?}: the IPv6 address lacks its closing ]"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let port = match port {
            None if tls => HTTPS_DEFAULT_PORT,
            None => HTTP_DEFAULT_PORT,
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| format!("{url:?}: {text:?} is not a TCP port"))?,
        };
        Ok(Endpoint::Tcp {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// What to check when the node cannot be reached there.
    fn unreachable_hint(&self) -> &'static str {
        match self {
            Endpoint::Unix(_) => "is `troika serve` running with this data dir?",
            Endpoint::Tcp { .. } => {
                "is `troika serve` running with --mgmt-listen on this address and port?"
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(socket) => write!(f, "{}", socket.display()),
            Endpoint::Tcp { host, port, tls } => {
                let scheme = if *tls { "https" } else { "http" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}")
                } else {
                    write!(f, "{scheme}://{host}:{port}")
                }
            }
        }
    }
}

/// Why a request got no HTTP answer. An answer with an error status is not a `ClientError`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the troika node at {node}: {source}; {hint}")]
    Unreachable {
        node: String,
        hint: &'static str,
        source: io::Error,
    },
    #[error("lost the connection to the troika node at {node}: {source}")]
    Io { node: String, source: io::Error },
    #[error("the troika node at {node} sent an invalid response: {reason}")]
    BadResponse { node: String, reason: String },
}

/// One open connection.
enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Connection {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Connection::Unix(stream) => stream,
            Connection::Tcp(stream) => stream,
            Connection::Tls(stream) => stream.as_mut(),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Talks to one node's management API.
pub struct Client {
    endpoint: Endpoint,
    /// The `Authorization` field sent with every request, if any.
    authorization: Option<String>,
    /// The keep-alive connection, when one is open.
    connection: Mutex<Option<Connection>>,
    /// How to verify the node over HTTPS; `None` until [`Client::with_ca_file`].
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Clone for Client {
    /// The clone opens its own connection.
    fn clone(&self) -> Client {
        Client {
            endpoint: self.endpoint.clone(),
            authorization: self.authorization.clone(),
            connection: Mutex::new(None),
            tls: self.tls.clone(),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Client {
    /// A client of the unix socket at `socket`.
    pub fn new(socket: PathBuf) -> Client {
        Client::with_endpoint(Endpoint::Unix(socket), None)
    }

    /// A client of `endpoint`, sending HTTP basic `credentials` (user, password) if given.
    pub fn with_endpoint(endpoint: Endpoint, credentials: Option<(&str, &str)>) -> Client {
        let authorization = credentials.map(|(user, password)| {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{password}").as_bytes());
            format!("Basic {token}")
        });
        Client {
            endpoint,
            authorization,
            connection: Mutex::new(None),
            tls: None,
        }
    }

    /// Verifies an HTTPS node against the certificates in the PEM file `ca_file`.
    pub fn with_ca_file(mut self, ca_file: &Path) -> anyhow::Result<Client> {
        self.tls = Some(crate::mgmt::tls::client_config(ca_file)?);
        Ok(self)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn node(&self) -> String {
        self.endpoint.to_string()
    }

    /// Sends `method path` (path may carry a query) with an optional JSON body and returns
    /// the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut message = format!("{method} {path} HTTP/1.1\r\nHost: troika\r\nAccept: */*\r\n");
        if let Some(authorization) = &self.authorization {
            message.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
            message.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        message.push_str("\r\n");
        message.push_str(&body);

        let mut slot = self.connection.lock();
        let reused = slot.is_some();
        let answer = match self.exchange(&mut slot, message.as_bytes()) {
            Err(Exchange::NothingBack(_)) if reused => self.exchange(&mut slot, message.as_bytes()),
            other => other,
        };
        let (status, bytes) = answer.map_err(|failure| match failure {
            Exchange::NothingBack(error) | Exchange::Failed(error) => error,
        })?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// Sends one request on the open connection (opening one if none is) and reads the
    /// answer; leaves the connection open only when it can carry another request.
    fn exchange(
        &self,
        slot: &mut Option<Connection>,
        message: &[u8],
    ) -> Result<(u16, Vec<u8>), Exchange> {
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => self.connect().map_err(Exchange::Failed)?,
        };
        let io_error = |source| ClientError::Io {
            node: self.node(),
            source,
        };
        let stream = connection.stream();
        if let Err(error) = stream.write_all(message).and_then(|()| stream.flush()) {
            // The server may refuse a request (e.g. 413) and close before taking all of it;
            // its answer is still waiting to be read.
            if !matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(Exchange::Failed(io_error(error)));
            }
        }
        let answer = self.read_response(stream)?;
        if answer.keep_alive {
            *slot = Some(connection);
        }
        Ok((answer.status, answer.body))
    }

    fn connect(&self) -> Result<Connection, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            node: self.node(),
            hint: self.endpoint.unreachable_hint(),
            source,
        };
        let connection = match &self.endpoint {
            Endpoint::Unix(socket) => {
                Connection::Unix(UnixStream::connect(socket).map_err(unreachable)?)
            }
            Endpoint::Tcp { host, port, tls } => {
                let mut last_error = io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host:?} resolves to no address"),
                );
                let mut opened = None;
                for address in (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(unreachable)?
                {
                    match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                        Ok(stream) => {
                            opened = Some(stream);
                            break;
                        }
                        Err(error) => last_error = error,
                    }
                }
                let stream = opened.ok_or_else(|| unreachable(last_error))?;
                // Requests are small and answered one at a time: send them at once.
                stream.set_nodelay(true).map_err(unreachable)?;
                if *tls {
                    Connection::Tls(Box::new(self.start_tls(host, stream)?))
                } else {
                    Connection::Tcp(stream)
                }
            }
        };
        let configured = match &connection {
            Connection::Unix(stream) => stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT))),
            Connection::Tcp(stream) => stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT))),
            Connection::Tls(stream) => stream
                .sock
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.sock.set_write_timeout(Some(IO_TIMEOUT))),
        };
        configured.map_err(|source| ClientError::Io {
            node: self.node(),
            source,
        })?;
        Ok(connection)
    }

    /// The TLS session on `stream`; the handshake happens with the first request.
    fn start_tls(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ClientError> {
        let failed = |reason: String| ClientError::Unreachable {
            node: self.node(),
            hint: "give the node's certificate with --ca FILE (its DATA/tls/server-cert.pem)",
            source: io::Error::other(reason),
        };
        let config = self
            .tls
            .clone()
            .ok_or_else(|| failed("no CA file to verify the node's certificate with".into()))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|error| failed(format!("{host:?} is not a TLS server name: {error}")))?;
        let connection = rustls::ClientConnection::new(config, name)
            .map_err(|error| failed(format!("cannot start TLS: {error}")))?;
        Ok(rustls::StreamOwned::new(connection, stream))
    }

    fn read_response(&self, stream: &mut dyn ReadWrite) -> Result<Answer, Exchange> {
        let bad = |reason: String| ClientError::BadResponse {
            node: self.node(),
            reason,
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            match response.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    if status == 100 {
                        // An interim answer; the real one follows.
                        buf.drain(..head_len);
                        continue;
                    }
                    let length = content_length(response.headers)
                        .map_err(|reason| Exchange::Failed(bad(reason)))?;
                    let keep_alive = length.is_some()
                        && !eof
                        && response.version == Some(1)
                        && !closes(response.headers);
                    match length {
                        Some(length) if buf.len() - head_len >= length => {
                            return Ok(Answer {
                                status,
                                body: buf[head_len..head_len + length].to_vec(),
                                keep_alive,
                            });
                        }
                        None if eof => {
                            return Ok(Answer {
                                status,
                                body: buf[head_len..].to_vec(),
                                keep_alive: false,
                            });
                        }
                        Some(length) if eof => {
                            return Err(Exchange::Failed(bad(format!(
                                "the body ended after {} of {length} bytes",
                                buf.len() - head_len
                            ))));
                        }
                        _ => {}
                    }
                }
                Ok(httparse::Status::Partial) if eof && buf.is_empty() => {
                    return Err(Exchange::NothingBack(bad(
                        "the connection closed without an answer".into(),
                    )));
                }
                Ok(httparse::Status::Partial) if eof => {
                    return Err(Exchange::Failed(bad(
                        "the connection closed in the middle of the answer".into(),
                    )));
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => return Err(Exchange::Failed(bad(error.to_string()))),
            }
            if buf.len() > MAX_RESPONSE_BYTES {
                return Err(Exchange::Failed(bad(format!(
                    "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                ))));
            }
            match stream.read(&mut chunk) {
                Ok(0) => eof = true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let reset = error.kind() == io::ErrorKind::ConnectionReset;
                    let error = ClientError::Io {
                        node: self.node(),
                        source: error,
                    };
                    return Err(if reset && buf.is_empty() {
                        Exchange::NothingBack(error)
                    } else {
                        Exchange::Failed(error)
                    });
                }
            }
        }
    }
}

/// One complete answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// The connection can carry another request.
    keep_alive: bool,
}

/// Why one exchange failed: `NothingBack` when not a byte of an answer arrived (a reused
/// connection the node had closed; the request is sent again on a new one).
enum Exchange {
    NothingBack(ClientError),
    Failed(ClientError),
}

fn closes(fields: &[httparse::Header<'_>]) -> bool {
    fields.iter().any(|field| {
        field.name.eq_ignore_ascii_case("connection")
            && std::str::from_utf8(field.value)
                .unwrap_or("")
                .split(',')
                .any(|option| option.trim().eq_ignore_ascii_case("close"))
    })
}

fn content_length(fields: &[httparse::Header<'_>]) -> Result<Option<usize>, String> {
    let Some(field) = fields
        .iter()
        .find(|field| field.name.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(None);
    };
    let text = std::str::from_utf8(field.value).unwrap_or("").trim();
    match text.parse::<usize>() {
        Ok(length) if length <= MAX_RESPONSE_BYTES => Ok(Some(length)),
        Ok(length) => Err(format!(
            "the answer of {length} bytes is larger than {MAX_RESPONSE_BYTES} bytes"
        )),
        Err(_) => Err(format!("Content-Length {text:?} is not a number")),
    }
}

/// Percent-encodes a query value: everything but unreserved characters is escaped.
pub fn encode_query_value(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_endpoints() {
        let tcp = |host: &str, port| Endpoint::Tcp {
            host: host.into(),
            port,
            tls: false,
        };
        assert_eq!(
            Endpoint::parse_url("http://127.0.0.1:8080"),
            Ok(tcp("127.0.0.1", 8080))
        );
        assert_eq!(
            Endpoint::parse_url("HTTP://array.example/"),
            Ok(tcp("array.example", 80))
        );
        assert_eq!(
            Endpoint::parse_url("http://[::1]:9000"),
            Ok(tcp("::1", 9000))
        );
        assert_eq!(tcp("::1", 9000).to_string(), "http://[::1]:9000");
        let https = Endpoint::parse_url("https://h").unwrap();
        assert_eq!(
            https,
            Endpoint::Tcp {
                host: "h".into(),
                port: 443,
                tls: true
            }
        );
        assert_eq!(https.to_string(), "https://h:443");
        for bad in [
            "h:1",
            "http://",
            "http://h:0",
            "http://h:x",
            "http://h:1/api",
        ] {
            assert!(Endpoint::parse_url(bad).is_err(), "{bad} accepted");
        }
    }
}
