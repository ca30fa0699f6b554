//! The REST API on a node's `troika.sock` as a local administrator (no credentials), with
//! JSON bodies: what the snapshot and consistency-group tests need to create, restore and
//! delete datasets. One request per connection.
//!
//! Included with `#[path = "common/rest_unix.rs"] mod rest_unix;` so `common/mod.rs` stays
//! as is.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// A request that gets no answer for this long is an error, not a hung test.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One request with an optional body (sent as it is: JSON text, or a bare number); the
/// status and the answer parsed as JSON. `Err` when the node is not there (killed,
/// restarting) or closes before answering.
pub fn call(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> io::Result<(u16, Value)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: troika\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (status, text) = super::common::split_response(&response);
    if status == 0 {
        return Err(io::Error::other(format!(
            "no HTTP answer to {method} {target}: {response:?}"
        )));
    }
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// A request that must succeed (2xx); its `result`.
pub fn ok(socket: &Path, method: &str, target: &str, body: Option<&str>) -> Value {
    match call(socket, method, target, body) {
        Ok((status, envelope)) if (200..300).contains(&status) => envelope["result"].clone(),
        Ok((status, envelope)) => panic!("{method} {target}: {status} {envelope}"),
        Err(error) => panic!("{method} {target}: {error}"),
    }
}

/// Installs a fault rule (`POST /api/rest/faults?approved=true` with `body`, e.g.
/// `{"device": "ssd0", "op": "fsync", "error": "EIO", "nth": 1}`); panics unless it is taken.
pub fn inject_fault(socket: &Path, body: &str) -> Value {
    ok(socket, "POST", "/api/rest/faults?approved=true", Some(body))
}

/// Every object of a list (the first page of up to 1000: enough for a test's node).
pub fn list(socket: &Path, collection: &str, filter: &str) -> Vec<Value> {
    let separator = if filter.is_empty() { "" } else { "&" };
    let target = format!("/api/rest/{collection}?page_size=1000{separator}{filter}");
    match ok(socket, "GET", &target, None) {
        Value::Array(items) => items,
        other => panic!("GET {target}: not a list: {other}"),
    }
}

/// The `id` field of an object.
pub fn id_of(object: &Value) -> u32 {
    object["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or_else(|| panic!("no id in {object}"))
}
