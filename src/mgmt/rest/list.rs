//! Lists in InfiniBox's shape: paging (`page`, `page_size` at most [`MAX_PAGE_SIZE`]),
//! filters (`field=op:value`, or `field=value` for equality; ops eq ne gt ge lt le like in
//! notin between is isnot), sorting (`sort=a,-b`, then by id so pages are stable) and
//! projection (`fields=a,b`). Filters and sorts may name only the object's own fields; an
//! unknown field, operator or value is a 400 that names it.

use std::cmp::Ordering;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{envelope_response, json_response, to_json};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::Response;

/// Default `page_size` of a list.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest `page_size` a list accepts.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Query parameters with a meaning of their own; every other key of a list is a filter.
const RESERVED_PARAMETERS: &[&str] = &["page", "page_size", "sort", "fields", "approved"];

/// Splits a query string into percent-decoded `(key, value)` pairs.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, MgmtError> {
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
    String::from_utf8(decode_escapes(text, true))
        .map_err(|_| MgmtError::bad_request(format!("query {text:?} is not UTF-8 once decoded")))
}

/// Decodes `%XX` escapes in one path segment (`+` stays a plus sign); a `%` not followed
/// by two hex digits, or bytes that do not decode to UTF-8, are kept as they are.
pub fn decode_path_segment(segment: &str) -> String {
    String::from_utf8(decode_escapes(segment, false)).unwrap_or_else(|_| segment.to_owned())
}

/// The bytes `text` stands for once its `%XX` escapes (and, with `plus_is_space`, its `+`
/// signs) are decoded.
fn decode_escapes(text: &str, plus_is_space: bool) -> Vec<u8> {
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
            (b'+', _) if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

/// Like [`list_response`], but a list without filters in id order takes only its page
/// from `page(skip, take, descending)` (which also says how many objects there are) and
/// never builds the others; other lists get every object from `all`.
pub fn paged_list_response<T: Serialize>(
    query: &[(String, String)],
    fields: &[&str],
    all: impl FnOnce() -> Vec<T>,
    page: impl FnOnce(usize, usize, bool) -> (usize, Vec<T>),
) -> Result<Response, MgmtError> {
    let view = ListQuery::parse(query, fields)?;
    match view.id_order(&[]) {
        Some(descending) if view.filters.is_empty() => {
            let (skip, take) = view.window();
            let (total, objects) = page(skip, take, descending);
            view.respond_objects(total, &objects)
        }
        _ => view.filter_sort_page(&all()),
    }
}

/// Filters, sorts, pages and projects a list, then wraps it with list metadata. `objects`
/// must be in ascending id order (as the catalog and the user store keep them).
pub fn list_response<T: Serialize>(
    objects: &[T],
    fields: &[&str],
    query: &[(String, String)],
) -> Result<Response, MgmtError> {
    let view = ListQuery::parse(query, fields)?;
    match view.id_order(&[]) {
        Some(descending) if view.filters.is_empty() => {
            let (skip, take) = view.window();
            let page: Vec<&T> = if descending {
                objects.iter().rev().skip(skip).take(take).collect()
            } else {
                objects.iter().skip(skip).take(take).collect()
            };
            view.respond_objects(objects.len(), &page)
        }
        _ => view.filter_sort_page(objects),
    }
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
                // `(a,b)` as InfiniBox clients send it, `[a,b]` or bare `a,b`.
                let inner = operand
                    .strip_prefix('(')
                    .and_then(|rest| rest.strip_suffix(')'))
                    .or_else(|| operand.strip_prefix('[')?.strip_suffix(']'))
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
pub struct ListQuery {
    page: usize,
    page_size: usize,
    filters: Vec<Filter>,
    /// Field and whether it sorts descending.
    sort: Vec<(String, bool)>,
    fields: Option<Vec<String>>,
}

impl ListQuery {
    pub fn parse(query: &[(String, String)], known: &[&str]) -> Result<ListQuery, MgmtError> {
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

    /// The fields the filters read (a caller may build rows with only these to filter).
    pub fn filter_fields(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(|filter| filter.field.as_str())
    }

    /// `Some(descending)` when the order asked for is the id order (no sort, or one key
    /// that orders like the id), so a store kept in id order needs no sort.
    pub fn id_order(&self, same_as_id: &[&str]) -> Option<bool> {
        match self.sort.as_slice() {
            [] => Some(false),
            [(field, descending)] if field == "id" || same_as_id.contains(&field.as_str()) => {
                Some(*descending)
            }
            _ => None,
        }
    }

    /// Objects to skip and to take for the requested page.
    pub fn window(&self) -> (usize, usize) {
        (
            (self.page - 1).saturating_mul(self.page_size),
            self.page_size,
        )
    }

    /// Projects the page's rows and wraps them with the list metadata.
    pub fn respond(&self, number_of_objects: usize, page: Vec<Value>) -> Response {
        let pages_total = number_of_objects.div_ceil(self.page_size);
        let page: Vec<Value> = page.into_iter().map(|row| self.project(row)).collect();
        let envelope = json!({
            "result": page,
            "error": null,
            "metadata": {
                "ready": true,
                "page": self.page,
                "page_size": self.page_size,
                "pages_total": pages_total,
                "number_of_objects": number_of_objects,
            },
        });
        envelope_response(200, envelope)
    }

    /// Responds with a page of objects: serialized directly when no projection is asked
    /// for, through JSON values otherwise.
    pub fn respond_objects<T: Serialize>(
        &self,
        number_of_objects: usize,
        page: &[T],
    ) -> Result<Response, MgmtError> {
        if self.fields.is_none() {
            return self.respond_serialized(number_of_objects, page);
        }
        let rows = page.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
        Ok(self.respond(number_of_objects, rows))
    }

    /// The general path: every object encoded, filtered, sorted, then paged.
    fn filter_sort_page<T: Serialize>(&self, objects: &[T]) -> Result<Response, MgmtError> {
        let mut rows = Vec::with_capacity(objects.len());
        for object in objects {
            let row = to_json(object)?;
            if self.matches(&row)? {
                rows.push(row);
            }
        }
        self.sort(&mut rows);
        let number_of_objects = rows.len();
        let (skip, take) = self.window();
        let page: Vec<Value> = rows.into_iter().skip(skip).take(take).collect();
        Ok(self.respond(number_of_objects, page))
    }

    /// Like [`ListQuery::respond`] for a page that needs no projection: the objects are
    /// serialized straight into the body, without building JSON values first.
    fn respond_serialized<T: Serialize>(
        &self,
        number_of_objects: usize,
        page: &[T],
    ) -> Result<Response, MgmtError> {
        let mut body = Vec::with_capacity(page.len() * 512 + 160);
        body.extend_from_slice(b"{\"result\":");
        serde_json::to_writer(&mut body, page)
            .map_err(|error| MgmtError::internal(format!("cannot encode the answer: {error}")))?;
        let metadata = json!({
            "ready": true,
            "page": self.page,
            "page_size": self.page_size,
            "pages_total": number_of_objects.div_ceil(self.page_size),
            "number_of_objects": number_of_objects,
        });
        body.extend_from_slice(format!(",\"error\":null,\"metadata\":{metadata}}}").as_bytes());
        Ok(json_response(200, body))
    }

    pub fn matches(&self, row: &Value) -> Result<bool, MgmtError> {
        for filter in &self.filters {
            if !filter.matches(row)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sorts by the requested keys, then by id so that pages are stable.
    pub fn sort(&self, rows: &mut [Value]) {
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
