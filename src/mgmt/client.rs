//! A blocking HTTP/1.1 client for the management socket: one request per connection.
//!
//! It sends `Connection: close` and reads the response framed by its `Content-Length` (or
//! to the end of the stream when there is none), capped at [`MAX_RESPONSE_BYTES`]. A JSON
//! body is returned parsed; any other body (e.g. `/metrics`) as a JSON string.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Largest response the client accepts.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How long the client waits for the node to take a request or answer it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no HTTP answer. An answer with an error status is not a `ClientError`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the troika node at {}: {source}; is `troika serve` running with this data dir?",
        socket.display()
    )]
    Unreachable { socket: PathBuf, source: io::Error },
    #[error("lost the connection to the troika node at {}: {source}", socket.display())]
    Io { socket: PathBuf, source: io::Error },
    #[error("the troika node at {} sent an invalid response: {reason}", socket.display())]
    BadResponse { socket: PathBuf, reason: String },
}

/// Talks to one node's management socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Client {
        Client { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` (path may carry a query) with an optional JSON body and returns
    /// the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let io_error = |source| ClientError::Io {
            socket: self.socket.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(io_error)?;

        let body = body.map(Value::to_string).unwrap_or_default();
        let mut message = format!(
            "{method} {path} HTTP/1.1\r\nHost: troika\r\nAccept: application/json\r\nConnection: close\r\n"
        );
        if !body.is_empty() {
            message.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        message.push_str("\r\n");
        message.push_str(&body);
        if let Err(error) = stream.write_all(message.as_bytes()) {
            // The server may refuse a request (e.g. 413) and close before taking all of it;
            // its answer is still waiting to be read.
            if !matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(io_error(error));
            }
        }
        let (status, bytes) = self.read_response(&mut stream)?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    fn read_response(&self, stream: &mut UnixStream) -> Result<(u16, Vec<u8>), ClientError> {
        let bad = |reason: String| ClientError::BadResponse {
            socket: self.socket.clone(),
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
                    let length = content_length(response.headers).map_err(&bad)?;
                    if status == 100 {
                        // An interim answer; the real one follows.
                        buf.drain(..head_len);
                        continue;
                    }
                    match length {
                        Some(length) if buf.len() - head_len >= length => {
                            return Ok((status, buf[head_len..head_len + length].to_vec()));
                        }
                        None if eof => return Ok((status, buf[head_len..].to_vec())),
                        Some(length) if eof => {
                            return Err(bad(format!(
                                "the body ended after {} of {length} bytes",
                                buf.len() - head_len
                            )));
                        }
                        _ => {}
                    }
                }
                Ok(httparse::Status::Partial) if eof => {
                    return Err(bad(if buf.is_empty() {
                        "the connection closed without an answer".into()
                    } else {
                        "the connection closed in the middle of the answer".into()
                    }));
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => return Err(bad(error.to_string())),
            }
            if buf.len() > MAX_RESPONSE_BYTES {
                return Err(bad(format!(
                    "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            match stream.read(&mut chunk) {
                Ok(0) => eof = true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(ClientError::Io {
                        socket: self.socket.clone(),
                        source: error,
                    });
                }
            }
        }
    }
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
