//! Request guards against cross-site requests, checked before routing or authentication.
//!
//! A browser that holds basic credentials or a session cookie for the node sends them with
//! any request a foreign page makes it send; the guards make such a request fail:
//!
//! - **Origin.** A request whose `Origin` header field is present must come from the
//!   node's own address: `http://` or `https://` followed by exactly the authority of the
//!   request's `Host` header field (a default port, 80 or 443, may be left out on either
//!   side). Any other origin, `null`, several `Origin` fields, or an `Origin` without a
//!   `Host` is refused with 403 `ORIGIN_NOT_ALLOWED`. Clients that are not browsers
//!   (infinisdk, the CLI, curl) send no `Origin` and are not affected.
//! - **Content type.** A POST, PUT or PATCH body must be `application/json` (a
//!   `charset=utf-8` parameter is allowed), else 415 `UNSUPPORTED_MEDIA_TYPE`: an HTML form
//!   can only send `text/plain`, `multipart/form-data` or
//!   `application/x-www-form-urlencoded`. A request with an empty body and no
//!   `Content-Type` (how infinisdk sends actions that take no body) passes; a route that
//!   needs a body then refuses the empty one itself.

use super::super::api::MgmtError;
use super::super::http::Request;

/// The one media type request bodies may have.
const JSON: &str = "application/json";

/// Refuses a request that a foreign web page could have made a browser send.
pub fn check(request: &Request) -> Result<(), MgmtError> {
    check_origin(request)?;
    check_content_type(request)
}

/// The values of header field `name` (lower case), in the order sent.
fn field_values<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> {
    (request.fields.iter())
        .filter(move |(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

fn forbidden_origin(message: String) -> MgmtError {
    MgmtError::new("ORIGIN_NOT_ALLOWED", 403, message)
}

fn check_origin(request: &Request) -> Result<(), MgmtError> {
    let origins: Vec<&str> = field_values(request, "origin").collect();
    let origin = match origins.as_slice() {
        [] => return Ok(()),
        [origin] => *origin,
        _ => {
            return Err(forbidden_origin(
                "the request has more than one Origin header field".into(),
            ));
        }
    };
    let hosts: Vec<&str> = field_values(request, "host").collect();
    let [host] = hosts.as_slice() else {
        return Err(forbidden_origin(format!(
            "the request comes from origin {origin:?} but has {} Host header fields; a cross-origin request is refused",
            hosts.len()
        )));
    };
    if same_origin(origin, host) {
        Ok(())
    } else {
        Err(forbidden_origin(format!(
            "the request comes from origin {origin:?}, not from this node ({host:?}); requests made by other web sites are refused"
        )))
    }
}

/// Whether `origin` (`scheme://authority`) names the node reached at `host` (`Host`'s
/// authority).
fn same_origin(origin: &str, host: &str) -> bool {
    let (default_port, authority) = if let Some(rest) = origin.strip_prefix("http://") {
        (80, rest)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (443, rest)
    } else {
        return false;
    };
    match (
        split_authority(authority, default_port),
        split_authority(host, default_port),
    ) {
        (Some((origin_host, origin_port)), Some((host_host, host_port))) => {
            origin_host.eq_ignore_ascii_case(host_host) && origin_port == host_port
        }
        _ => false,
    }
}

/// `host[:port]` (host may be a bracketed IPv6 address) as its host and port; `None` for
/// anything else (a path, user info, an empty host, a port that is not a number).
fn split_authority(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']')?;
        (address, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => default_port,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().ok()?
        }
        Some(_) => return None,
    };
    Some((host, port))
}

fn unsupported(message: String) -> MgmtError {
    MgmtError::new("UNSUPPORTED_MEDIA_TYPE", 415, message)
}

fn check_content_type(request: &Request) -> Result<(), MgmtError> {
    if !matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
        return Ok(());
    }
    let types: Vec<&str> = field_values(request, "content-type").collect();
    let content_type = match types.as_slice() {
        [] if request.body.is_empty() => return Ok(()),
        [] => {
            return Err(unsupported(format!(
                "the {} body has no Content-Type; send it as {JSON}",
                request.method
            )));
        }
        [content_type] => *content_type,
        _ => {
            return Err(unsupported(format!(
                "the request has more than one Content-Type header field; send one, {JSON}"
            )));
        }
    };
    if is_json(content_type) {
        Ok(())
    } else {
        Err(unsupported(format!(
            "the {} body is {content_type:?}; send it as {JSON} (optionally with charset=utf-8)",
            request.method
        )))
    }
}

/// `application/json`, optionally with `charset=utf-8`, in any case and spacing.
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or("");
    media_type.eq_ignore_ascii_case(JSON)
        && parts.all(|parameter| match parameter.split_once('=') {
            Some((name, value)) => {
                name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            None => parameter.is_empty(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, fields: &[(&str, &str)], body: &[u8]) -> Request {
        let mut request = Request::new(method, "/api/rest/pools");
        request.fields = (fields.iter())
            .map(|(name, value)| (name.to_ascii_lowercase(), (*value).to_owned()))
            .collect();
        request.body = body.to_vec();
        request
    }

    fn refusal(request: &Request) -> (&'static str, u16) {
        let error = check(request).expect_err("the guard let the request through");
        (error.code, error.status)
    }

    #[test]
    fn origins_of_the_node_itself_pass() {
        for (origin, host) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("https://127.0.0.1:8443", "127.0.0.1:8443"),
            ("http://Node.Example", "node.example"),
            ("http://node.example", "node.example:80"),
            ("https://node.example:443", "node.example"),
            ("http://[::1]:8080", "[::1]:8080"),
        ] {
            let get = request("GET", &[("Origin", origin), ("Host", host)], b"");
            assert!(check(&get).is_ok(), "{origin} at {host}");
        }
        // No Origin at all: infinisdk, the CLI, curl.
        assert!(check(&request("GET", &[("Host", "troika")], b"")).is_ok());
    }

    #[test]
    fn foreign_origins_are_refused() {
        let forbidden = ("ORIGIN_NOT_ALLOWED", 403);
        for (origin, host) in [
            ("http://evil.example", "127.0.0.1:8080"),
            ("http://127.0.0.1:8081", "127.0.0.1:8080"),
            ("https://127.0.0.1", "127.0.0.1:80"),
            ("null", "127.0.0.1:8080"),
            ("ftp://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080/path", "127.0.0.1:8080"),
            ("http://user@127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1:80x", "127.0.0.1:80x"),
            ("http://", ""),
            ("", "127.0.0.1:8080"),
        ] {
            let post = request(
                "POST",
                &[
                    ("Origin", origin),
                    ("Host", host),
                    ("Content-Type", "application/json"),
                ],
                b"{}",
            );
            assert_eq!(refusal(&post), forbidden, "{origin:?} at {host:?}");
        }
        let no_host = request("GET", &[("Origin", "http://a")], b"");
        assert_eq!(refusal(&no_host), forbidden);
        let two = request(
            "GET",
            &[
                ("Origin", "http://a"),
                ("Origin", "http://a"),
                ("Host", "a"),
            ],
            b"",
        );
        assert_eq!(refusal(&two), forbidden);
    }

    #[test]
    fn bodies_must_be_json() {
        for content_type in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            let post = request("POST", &[("Content-Type", content_type)], b"{}");
            assert!(check(&post).is_ok(), "{content_type}");
        }
        let unsupported = ("UNSUPPORTED_MEDIA_TYPE", 415);
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "application/json; boundary=x",
            "application/jsonx",
            "",
        ] {
            for method in ["POST", "PUT", "PATCH"] {
                let sent = request(method, &[("Content-Type", content_type)], b"{}");
                assert_eq!(refusal(&sent), unsupported, "{method} {content_type:?}");
            }
        }
        let untyped = request("POST", &[], b"{}");
        assert_eq!(refusal(&untyped), unsupported);
        let two = request(
            "POST",
            &[
                ("Content-Type", "application/json"),
                ("Content-Type", "text/plain"),
            ],
            b"{}",
        );
        assert_eq!(refusal(&two), unsupported);
    }

    #[test]
    fn bodiless_requests_and_reads_need_no_type() {
        assert!(check(&request("POST", &[], b"")).is_ok());
        assert!(
            check(&request(
                "POST",
                &[("Content-Type", "application/json")],
                b""
            ))
            .is_ok()
        );
        assert!(check(&request("GET", &[("Content-Type", "text/plain")], b"x")).is_ok());
        assert!(check(&request("DELETE", &[], b"")).is_ok());
        // A form post with an empty body still names its type and is refused.
        let form = request(
            "POST",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"",
        );
        assert_eq!(refusal(&form), ("UNSUPPORTED_MEDIA_TYPE", 415));
    }
}
