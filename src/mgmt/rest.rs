//! The REST routes in InfiniBox's shape, over a [`Management`] implementation.
//!
//! Every JSON answer is the envelope `{"result", "error", "metadata"}`: `error` is `null` on
//! success and `{"code", "message", "reasons"}` otherwise, `result` is `null` on failure.
//! Lists page with `page` (1-based) and `page_size` (default 50, at most 1000), filter with
//! `field=op:value` (or `field=value` for equality) and sort with `sort=a,-b`; their metadata
//! carries `page`, `page_size`, `pages_total` and `number_of_objects` (after filtering).
//! Deleting, and shrinking a volume, need `approved=true` or fail with `APPROVAL_REQUIRED`.
//!
//! Routes:
//!
//! | method | path                     | answer                                  |
//! |--------|--------------------------|-----------------------------------------|
//! | GET    | `/api/rest/system`       | `SystemInfo`                            |
//! | GET    | `/api/rest/pools`        | list of `PoolInfo`                      |
//! | POST   | `/api/rest/pools`        | 201, `PoolInfo` from a `PoolCreate`     |
//! | GET    | `/api/rest/pools/{id}`   | `PoolInfo`                              |
//! | DELETE | `/api/rest/pools/{id}`   | the deleted `PoolInfo`                  |
//! | GET    | `/api/rest/volumes`      | list of `VolumeInfo`                    |
//! | POST   | `/api/rest/volumes`      | 201, `VolumeInfo` from a `VolumeCreate` |
//! | GET    | `/api/rest/volumes/{id}` | `VolumeInfo`                            |
//! | PUT    | `/api/rest/volumes/{id}` | resized `VolumeInfo` from `{"size": N}` |
//! | DELETE | `/api/rest/volumes/{id}` | the deleted `VolumeInfo`                |
//! | GET    | `/metrics`               | Prometheus text                         |

use std::cmp::Ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::api::{Management, MgmtError, PoolCreate, VolumeCreate, VolumeInfo};
use super::http::{HttpError, Request, Response};

/// Default `page_size` of a list.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest `page_size` a list accepts.
pub const MAX_PAGE_SIZE: usize = 1000;

const JSON: &str = "application/json";
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The fields of `PoolInfo` as serialized; filters and sorts may name only these.
pub const POOL_FIELDS: &[&str] = &[
    "id",
    "name",
    "physical_capacity",
    "virtual_capacity",
    "allocated_physical_space",
    "free_physical_space",
    "free_virtual_space",
    "allocated_virtual_space",
    "volumes_count",
    "state",
    "created_at",
];

/// The fields of `VolumeInfo` as serialized; filters and sorts may name only these.
pub const VOLUME_FIELDS: &[&str] = &[
    "id",
    "name",
    "size",
    "pool_id",
    "pool_name",
    "provtype",
    "type",
    "write_protected",
    "used",
    "allocated",
    "serial",
    "created_at",
];

/// Query parameters with a meaning of their own; every other key of a list is a filter.
const RESERVED_PARAMETERS: &[&str] = &["page", "page_size", "sort", "fields", "approved"];

/// Answers one request. Never panics on input; failures become error envelopes.
pub fn handle(api: &dyn Management, request: &Request) -> Response {
    let query = match parse_query(request.query()) {
        Ok(query) => query,
        Err(error) => return error_response(&error),
    };
    let path = request.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = request.method.as_str();
    let body = request.body.as_slice();
    let outcome = match segments.as_slice() {
        ["metrics"] => match method {
            "GET" => Ok(Response {
                status: 200,
                content_type: METRICS_CONTENT_TYPE,
                headers: Vec::new(),
                body: api.metrics_text().into_bytes(),
            }),
            _ => return method_not_allowed(method, "GET"),
        },
        ["api", "rest", "system"] => match method {
            "GET" => object_response(200, &api.system()),
            _ => return method_not_allowed(method, "GET"),
        },
        ["api", "rest", "pools"] => match method {
            "GET" => list_response(api.pools(), POOL_FIELDS, &query),
            "POST" => parse_body::<PoolCreate>(body)
                .and_then(|create| api.create_pool(create))
                .and_then(|pool| object_response(201, &pool)),
            _ => return method_not_allowed(method, "GET, POST"),
        },
        ["api", "rest", "pools", id] => match method {
            "GET" => pool_id(id)
                .and_then(|id| api.pool(id))
                .and_then(|pool| object_response(200, &pool)),
            "DELETE" => require_approval(&query, "deleting a pool")
                .and_then(|()| pool_id(id))
                .and_then(|id| api.delete_pool(id))
                .and_then(|pool| object_response(200, &pool)),
            _ => return method_not_allowed(method, "GET, DELETE"),
        },
        ["api", "rest", "volumes"] => match method {
            "GET" => list_response(api.volumes(), VOLUME_FIELDS, &query),
            "POST" => parse_body::<VolumeCreate>(body)
                .and_then(|create| api.create_volume(create))
                .and_then(|volume| object_response(201, &volume)),
            _ => return method_not_allowed(method, "GET, POST"),
        },
        ["api", "rest", "volumes", id] => match method {
            "GET" => volume_id(id)
                .and_then(|id| api.volume(id))
                .and_then(|volume| object_response(200, &volume)),
            "PUT" => volume_id(id)
                .and_then(|id| resize_volume(api, id, body, &query))
                .and_then(|volume| object_response(200, &volume)),
            "DELETE" => require_approval(&query, "deleting a volume")
                .and_then(|()| volume_id(id))
                .and_then(|id| api.delete_volume(id))
                .and_then(|volume| object_response(200, &volume)),
            _ => return method_not_allowed(method, "GET, PUT, DELETE"),
        },
        _ => Err(MgmtError::new(
            "NOT_FOUND",
            404,
            format!(
                "no resource at {}; the API is under /api/rest (system, pools, volumes)",
                request.path()
            ),
        )),
    };
    outcome.unwrap_or_else(|error| error_response(&error))
}

/// The envelope for a request refused by the HTTP layer.
pub fn http_error_response(error: &HttpError) -> Response {
    envelope_response(
        error.status(),
        error_envelope(error.code(), &error.to_string()),
    )
}

/// The envelope for an API failure, with the failure's own status and code.
pub fn error_response(error: &MgmtError) -> Response {
    let status = if (400..=599).contains(&error.status) {
        error.status
    } else {
        500
    };
    envelope_response(status, error_envelope(error.code, &error.message))
}

fn error_envelope(code: &str, message: &str) -> Value {
    json!({
        "result": null,
        "error": {"code": code, "message": message, "reasons": []},
        "metadata": {"ready": true},
    })
}

fn envelope_response(status: u16, envelope: Value) -> Response {
    Response {
        status,
        content_type: JSON,
        headers: Vec::new(),
        body: envelope.to_string().into_bytes(),
    }
}

fn method_not_allowed(method: &str, allow: &'static str) -> Response {
    let error = MgmtError::new(
        "METHOD_NOT_ALLOWED",
        405,
        format!("method {method} is not allowed here; allowed: {allow}"),
    );
    let mut response = error_response(&error);
    response.headers.push(("Allow", allow.to_owned()));
    response
}

fn to_json(object: &impl Serialize) -> Result<Value, MgmtError> {
    serde_json::to_value(object).map_err(|error| {
        MgmtError::new(
            "INTERNAL_ERROR",
            500,
            format!("cannot encode the answer: {error}"),
        )
    })
}

fn object_response(status: u16, object: &impl Serialize) -> Result<Response, MgmtError> {
    let envelope = json!({
        "result": to_json(object)?,
        "error": null,
        "metadata": {"ready": true},
    });
    Ok(envelope_response(status, envelope))
}

fn pool_id(text: &str) -> Result<u32, MgmtError> {
    text.parse()
        .map_err(|_| MgmtError::pool_not_found(format!("id {text:?}")))
}

fn volume_id(text: &str) -> Result<u32, MgmtError> {
    text.parse()
        .map_err(|_| MgmtError::volume_not_found(format!("id {text:?}")))
}

/// Decodes a JSON object body; serde's message names the missing or mistyped field.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, MgmtError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MgmtError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| MgmtError::bad_request(format!("invalid request body: {error}")))
}

/// `{"size": N}`; `approved=true` is needed to shrink, as shrinking discards data.
fn resize_volume(
    api: &dyn Management,
    id: u32,
    body: &[u8],
    query: &[(String, String)],
) -> Result<VolumeInfo, MgmtError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VolumeUpdate {
        size: u64,
    }
    let update: VolumeUpdate = parse_body(body)?;
    let current = api.volume(id)?;
    if update.size < current.size {
        require_approval(
            query,
            "shrinking a volume (it discards the data past the new end)",
        )?;
    }
    api.resize_volume(id, update.size)
}

fn require_approval(query: &[(String, String)], what: &str) -> Result<(), MgmtError> {
    let approved = query
        .iter()
        .any(|(key, value)| key == "approved" && value.eq_ignore_ascii_case("true"));
    if approved {
        Ok(())
    } else {
        Err(MgmtError::new(
            "APPROVAL_REQUIRED",
            403,
            format!("{what} needs approval: repeat the request with ?approved=true"),
        ))
    }
}

/// Splits a query string into percent-decoded `(key, value)` pairs.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, MgmtError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space in form encoding). A `%` not followed by two hex
/// digits is kept as it is.
fn percent_decode(text: &str) -> Result<String, MgmtError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| MgmtError::bad_request(format!("query {text:?} is not UTF-8 once decoded")))
}

/// Filters, sorts, pages and projects a list, then wraps it with list metadata.
fn list_response<T: Serialize>(
    objects: Vec<T>,
    fields: &[&str],
    query: &[(String, String)],
) -> Result<Response, MgmtError> {
    let view = ListQuery::parse(query, fields)?;
    let mut rows = Vec::with_capacity(objects.len());
    for object in &objects {
        let row = to_json(object)?;
        if view.matches(&row)? {
            rows.push(row);
        }
    }
    view.sort(&mut rows);
    let number_of_objects = rows.len();
    let pages_total = number_of_objects.div_ceil(view.page_size);
    let page: Vec<Value> = rows
        .into_iter()
        .skip((view.page - 1).saturating_mul(view.page_size))
        .take(view.page_size)
        .map(|row| view.project(row))
        .collect();
    let envelope = json!({
        "result": page,
        "error": null,
        "metadata": {
            "ready": true,
            "page": view.page,
            "page_size": view.page_size,
            "pages_total": pages_total,
            "number_of_objects": number_of_objects,
        },
    });
    Ok(envelope_response(200, envelope))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FilterOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    In,
    NotIn,
    Between,
    Is,
    IsNot,
}

impl FilterOp {
    fn from_name(name: &str) -> Option<FilterOp> {
        Some(match name {
            "eq" => FilterOp::Eq,
            "ne" => FilterOp::Ne,
            "gt" => FilterOp::Gt,
            "ge" => FilterOp::Ge,
            "lt" => FilterOp::Lt,
            "le" => FilterOp::Le,
            "like" => FilterOp::Like,
            "in" => FilterOp::In,
            "notin" => FilterOp::NotIn,
            "between" => FilterOp::Between,
            "is" => FilterOp::Is,
            "isnot" => FilterOp::IsNot,
            _ => return None,
        })
    }
}

/// `field=op:value`, with `value` a list (`a,b` or `[a,b]`) for `in`, `notin`, `between`.
#[derive(Debug)]
struct Filter {
    field: String,
    op: FilterOp,
    operands: Vec<String>,
}

impl Filter {
    fn parse(field: &str, text: &str) -> Result<Filter, MgmtError> {
        // A value whose prefix is not an operator is compared for equality as a whole.
        let (op, operand) = text
            .split_once(':')
            .and_then(|(name, rest)| FilterOp::from_name(name).map(|op| (op, rest)))
            .unwrap_or((FilterOp::Eq, text));
        let operands: Vec<String> = match op {
            FilterOp::In | FilterOp::NotIn | FilterOp::Between => {
                let inner = operand
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
                    .unwrap_or(operand);
                inner
                    .split(',')
                    .map(|item| item.trim().to_owned())
                    .collect()
            }
            _ => vec![operand.to_owned()],
        };
        if op == FilterOp::Between && operands.len() != 2 {
            return Err(MgmtError::bad_request(format!(
                "filter {field}=between:{operand} needs two values, e.g. between:1,10"
            )));
        }
        Ok(Filter {
            field: field.to_owned(),
            op,
            operands,
        })
    }

    fn matches(&self, row: &Value) -> Result<bool, MgmtError> {
        let value = row.get(&self.field).unwrap_or(&Value::Null);
        let compare = |operand: &String| {
            compare_to_text(value, operand).ok_or_else(|| {
                MgmtError::bad_request(format!(
                    "filter value {operand:?} cannot be compared with field {} (value {value})",
                    self.field
                ))
            })
        };
        let first = &self.operands[0];
        Ok(match self.op {
            FilterOp::Eq => compare(first)? == Ordering::Equal,
            FilterOp::Ne => compare(first)? != Ordering::Equal,
            FilterOp::Gt => compare(first)? == Ordering::Greater,
            FilterOp::Ge => compare(first)? != Ordering::Less,
            FilterOp::Lt => compare(first)? == Ordering::Less,
            FilterOp::Le => compare(first)? != Ordering::Greater,
            FilterOp::In | FilterOp::NotIn => {
                let mut found = false;
                for operand in &self.operands {
                    found |= compare(operand)? == Ordering::Equal;
                }
                found == (self.op == FilterOp::In)
            }
            FilterOp::Between => {
                compare(first)? != Ordering::Less
                    && compare(&self.operands[1])? != Ordering::Greater
            }
            FilterOp::Like => {
                let Value::String(text) = value else {
                    return Err(MgmtError::bad_request(format!(
                        "field {} is not text; `like` only applies to text",
                        self.field
                    )));
                };
                text.contains(first.trim_matches('%'))
            }
            FilterOp::Is | FilterOp::IsNot => {
                let is_null = value.is_null();
                let wants_null = first.eq_ignore_ascii_case("null");
                (is_null == wants_null) == (self.op == FilterOp::Is)
            }
        })
    }
}

/// How a field's value compares with a filter's text, read as the field's own type.
/// `None` when the text cannot be read as that type.
fn compare_to_text(value: &Value, text: &str) -> Option<Ordering> {
    match value {
        Value::String(string) => Some(string.as_str().cmp(text)),
        Value::Bool(flag) => text.parse::<bool>().ok().map(|other| flag.cmp(&other)),
        Value::Number(number) => {
            if let (Some(left), Ok(right)) = (number.as_u64(), text.parse::<u64>()) {
                Some(left.cmp(&right))
            } else {
                let right: f64 = text.parse().ok()?;
                number.as_f64()?.partial_cmp(&right)
            }
        }
        Value::Null if text.eq_ignore_ascii_case("null") => Some(Ordering::Equal),
        _ => None,
    }
}

/// Orders two values of the same field; numbers numerically, text bytewise.
fn compare_values(left: &Value, right: &Value) -> Ordering {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => a
                .as_f64()
                .partial_cmp(&b.as_f64())
                .unwrap_or(Ordering::Equal),
        },
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => Ordering::Equal,
    }
}

/// The paging, filtering, sorting and projection a list request asked for.
#[derive(Debug)]
struct ListQuery {
    page: usize,
    page_size: usize,
    filters: Vec<Filter>,
    /// Field and whether it sorts descending.
    sort: Vec<(String, bool)>,
    fields: Option<Vec<String>>,
}

impl ListQuery {
    fn parse(query: &[(String, String)], known: &[&str]) -> Result<ListQuery, MgmtError> {
        let check_field = |field: &str, purpose: &str| {
            if known.contains(&field) {
                Ok(())
            } else {
                Err(MgmtError::bad_request(format!(
                    "cannot {purpose} by unknown field {field:?}; known fields: {}",
                    known.join(", ")
                )))
            }
        };
        let mut view = ListQuery {
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            filters: Vec::new(),
            sort: Vec::new(),
            fields: None,
        };
        for (key, value) in query {
            match key.as_str() {
                "page" => {
                    view.page = value
                        .parse()
                        .ok()
                        .filter(|&page| page >= 1)
                        .ok_or_else(|| {
                            MgmtError::new(
                                "INVALID_PAGE",
                                400,
                                format!("page {value:?} is not a page number (1, 2, ...)"),
                            )
                        })?;
                }
                "page_size" => {
                    view.page_size = value
                        .parse()
                        .ok()
                        .filter(|size| (1..=MAX_PAGE_SIZE).contains(size))
                        .ok_or_else(|| {
                            MgmtError::new(
                                "INVALID_PAGE_SIZE",
                                400,
                                format!(
                                    "page_size {value:?} must be between 1 and {MAX_PAGE_SIZE}"
                                ),
                            )
                        })?;
                }
                "sort" => {
                    for key in value.split(',').filter(|key| !key.is_empty()) {
                        let (field, descending) = match key.strip_prefix('-') {
                            Some(field) => (field, true),
                            None => (key, false),
                        };
                        check_field(field, "sort")?;
                        view.sort.push((field.to_owned(), descending));
                    }
                }
                "fields" => {
                    let mut wanted = Vec::new();
                    for field in value.split(',').filter(|field| !field.is_empty()) {
                        check_field(field, "select")?;
                        wanted.push(field.to_owned());
                    }
                    view.fields = Some(wanted);
                }
                key if RESERVED_PARAMETERS.contains(&key) => {}
                field => {
                    check_field(field, "filter")?;
                    view.filters.push(Filter::parse(field, value)?);
                }
            }
        }
        Ok(view)
    }

    fn matches(&self, row: &Value) -> Result<bool, MgmtError> {
        for filter in &self.filters {
            if !filter.matches(row)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sorts by the requested keys, then by id so that pages are stable.
    fn sort(&self, rows: &mut [Value]) {
        rows.sort_by(|a, b| {
            self.sort
                .iter()
                .map(|(field, descending)| {
                    let order = compare_values(&a[field.as_str()], &b[field.as_str()]);
                    if *descending { order.reverse() } else { order }
                })
                .find(|order| order.is_ne())
                .unwrap_or_else(|| compare_values(&a["id"], &b["id"]))
        });
    }

    fn project(&self, row: Value) -> Value {
        match (&self.fields, row) {
            (Some(fields), Value::Object(mut object)) => {
                let mut kept = Map::new();
                for field in fields {
                    if let Some(value) = object.remove(field) {
                        kept.insert(field.clone(), value);
                    }
                }
                Value::Object(kept)
            }
            (_, row) => row,
        }
    }
}
