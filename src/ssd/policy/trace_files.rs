//! Reading and writing trace files for the replay.
//!
//! - **MSR Cambridge** CSV: `Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime`,
//!   Type `Read` or `Write`, offset and size in bytes. The disk number becomes part of the
//!   block key (disk `d`'s offsets are placed at `d << 50` bytes), so disks never share keys.
//! - **Plain** CSV: `timestamp,offset,size,op`, op `R`/`W` or `read`/`write` (any case),
//!   offset and size in bytes.
//!
//! Which one a file is follows from its first data line's field count (7 or 4). A first
//! line whose timestamp is not a number is taken as a header and skipped; any other line that
//! does not parse is an error naming the line. Lines may be blank. Nothing here trusts the
//! file: sizes are capped and offsets checked, so a hostile trace is refused, not obeyed.

use std::io::{BufRead, Write};

use super::traces::Request;

/// The largest request a trace may hold (a larger size is a damaged line).
const MAX_REQUEST_BYTES: u64 = 1 << 30;
/// Where each MSR disk's offsets start; offsets must stay below it.
const DISK_SPAN_BITS: u32 = 50;
/// The most disks an MSR trace may name.
const MAX_DISK: u64 = 1 << 12;

/// A trace file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    Msr,
    Plain,
}

fn parse_size(field: &str, what: &str) -> Result<u64, String> {
    field
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{what} {field:?} is not a whole number"))
}

fn parse_op(field: &str) -> Result<bool, String> {
    match field.trim().to_ascii_lowercase().as_str() {
        "r" | "read" => Ok(false),
        "w" | "write" => Ok(true),
        other => Err(format!("operation {other:?} is neither read nor write")),
    }
}

fn request(offset: u64, size: u64, write: bool) -> Result<Request, String> {
    if size > MAX_REQUEST_BYTES {
        return Err(format!(
            "size {size} is over the limit of {MAX_REQUEST_BYTES} bytes"
        ));
    }
    if offset >= 1 << DISK_SPAN_BITS {
        return Err(format!(
            "offset {offset} is beyond 2^{DISK_SPAN_BITS} bytes"
        ));
    }
    Ok(Request {
        offset,
        size: size as u32,
        write,
    })
}

/// Parses one data line of `format`.
pub fn parse_line(format: TraceFormat, line: &str) -> Result<Request, String> {
    let fields: Vec<&str> = line.split(',').collect();
    match format {
        TraceFormat::Msr => {
            let [_, _, disk, op, offset, size, _] = fields[..] else {
                return Err(format!("{} fields where MSR lines have 7", fields.len()));
            };
            let disk = parse_size(disk, "disk number")?;
            if disk >= MAX_DISK {
                return Err(format!("disk number {disk} is over {MAX_DISK}"));
            }
            let mut parsed = request(
                parse_size(offset, "offset")?,
                parse_size(size, "size")?,
                parse_op(op)?,
            )?;
            parsed.offset += disk << DISK_SPAN_BITS;
            Ok(parsed)
        }
        TraceFormat::Plain => {
            let [_, offset, size, op] = fields[..] else {
                return Err(format!("{} fields where plain lines have 4", fields.len()));
            };
            request(
                parse_size(offset, "offset")?,
                parse_size(size, "size")?,
                parse_op(op)?,
            )
        }
    }
}

/// A header line: its first field (the timestamp) is not a number.
fn is_header(line: &str) -> bool {
    let first = line.split(',').next().unwrap_or_default().trim();
    first.parse::<f64>().is_err()
}

/// Reads a trace (either format), at most `limit` requests. `source` names the input in
/// errors.
pub fn read_trace(
    input: impl BufRead,
    source: &str,
    limit: usize,
) -> Result<(TraceFormat, Vec<Request>), String> {
    let mut format = None;
    let mut trace = Vec::new();
    for (at, line) in input.lines().enumerate() {
        if trace.len() >= limit {
            break;
        }
        let number = at + 1;
        let line = line.map_err(|error| format!("{source}: reading line {number}: {error}"))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let known = match format {
            Some(known) => known,
            None => match line.split(',').count() {
                7 => TraceFormat::Msr,
                4 => TraceFormat::Plain,
                count => {
                    return Err(format!(
                        "{source}: line {number} has {count} fields: expected an MSR \
                         Cambridge trace (7) or timestamp,offset,size,op (4)"
                    ));
                }
            },
        };
        match parse_line(known, line) {
            Ok(request) => trace.push(request),
            // The first line of a file may be a header (its timestamp is no number).
            Err(_) if format.is_none() && number == 1 && is_header(line) => {}
            Err(error) => return Err(format!("{source}: line {number}: {error}")),
        }
        format = Some(known);
    }
    let format = format
        .filter(|_| !trace.is_empty())
        .ok_or_else(|| format!("{source}: no requests in the file"))?;
    Ok((format, trace))
}

/// Writes `trace` as a plain CSV with a header; the timestamp is the request's index.
pub fn write_plain(mut output: impl Write, trace: &[Request]) -> std::io::Result<()> {
    writeln!(output, "timestamp,offset,size,op")?;
    for (at, request) in trace.iter().enumerate() {
        let op = if request.write { 'W' } else { 'R' };
        writeln!(output, "{at},{},{},{op}", request.offset, request.size)?;
    }
    output.flush()
}
