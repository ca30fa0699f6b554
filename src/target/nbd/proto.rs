//! NBD wire format: constants, and pure parsers for what a client sends.
//!
//! Nothing here does I/O. The option parser ([`parse_option`]) and the request-header
//! parser ([`parse_request`]) take bytes and return typed values or typed errors; the
//! request validator ([`validate_request`]) checks a parsed request against what was
//! negotiated. All three are total: any input yields a value, never a panic, and nothing
//! they do allocates, so they can be fuzzed and benchmarked in isolation.

/// `NBDMAGIC`, the first thing the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: sent by the server after [`NBD_MAGIC`], and by the client before each option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server → client).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags (client → server); any other bit means the client wants something we did
/// not offer, and the connection is closed.
pub const CLIENT_FLAG_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_FLAG_NO_ZEROES: u32 = 1 << 1;
pub const CLIENT_FLAGS_KNOWN: u32 = CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES;

/// Option codes.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information types in `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
/// Extended-headers flag: the request carries a payload of `length` bytes whatever its
/// type. We never negotiate extended headers, so it is invalid, but its presence on an
/// unknown command means we cannot know where the next request starts.
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

/// Structured reply flag and types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` descriptor flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// The metadata contexts we serve, and the ids they get on `NBD_OPT_SET_META_CONTEXT`.
pub const BASE_ALLOCATION: &str = "base:allocation";
pub const BASE_ALLOCATION_ID: u32 = 1;
/// `troika:changed:<base>`: which blocks differ from dataset `<base>` of the same family
/// (a snapshot, or the volume), so backup tools read only what changed.
pub const CHANGED_PREFIX: &str = "troika:changed:";
pub const CHANGED_ID: u32 = 2;
/// `troika:changed:` descriptor flag: the blocks differ from the base.
pub const STATE_CHANGED: u32 = 1 << 0;

/// Strings on the wire (export names, queries) must not exceed this (spec).
pub const MAX_STRING: usize = 4096;

/// Size of a request header on the wire.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Size of an option request header on the wire (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;

/// An NBD error number, as sent in replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const EIO: Errno = Errno(5);
    pub const ENOMEM: Errno = Errno(12);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const EOVERFLOW: Errno = Errno(75);
    pub const ENOTSUP: Errno = Errno(95);
    pub const ESHUTDOWN: Errno = Errno(108);
}

/// The information items a client asked for in `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InfoWanted {
    pub name: bool,
    pub description: bool,
    pub block_size: bool,
}

/// A meta-context option (`LIST` or `SET`) reduced to what this server can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaContextQuery<'a> {
    pub export: &'a str,
    /// Whether the queries select (SET) or match (LIST) `base:allocation`.
    pub base_allocation: bool,
    /// The base named by a `troika:changed:<base>` query (the last one).
    pub changed: Option<&'a str>,
}

/// A parsed option request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionRequest<'a> {
    ExportName(&'a str),
    Abort,
    List,
    Info {
        export: &'a str,
        wanted: InfoWanted,
    },
    Go {
        export: &'a str,
        wanted: InfoWanted,
    },
    StructuredReply,
    ListMetaContext(MetaContextQuery<'a>),
    SetMetaContext(MetaContextQuery<'a>),
    /// Known or unknown, but not served here (STARTTLS, EXTENDED_HEADERS, ...).
    Unsupported(u32),
}

/// Why an option payload was refused (`NBD_REP_ERR_INVALID` with this message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionError(pub &'static str);

/// A parsed option header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

/// Parses an option header; `None` when the magic is wrong (the stream is not NBD).
pub fn parse_option_header(bytes: &[u8; OPTION_HEADER_LEN]) -> Option<OptionHeader> {
    let magic = u64::from_be_bytes(bytes[0..8].try_into().ok()?);
    if magic != IHAVEOPT {
        return None;
    }
    Some(OptionHeader {
        option: be_u32(&bytes[8..12])?,
        length: be_u32(&bytes[12..16])?,
    })
}

/// Parses the payload of option `option`.
pub fn parse_option(option: u32, data: &[u8]) -> Result<OptionRequest<'_>, OptionError> {
    match option {
        OPT_EXPORT_NAME => Ok(OptionRequest::ExportName(wire_str(data)?)),
        // The spec asks servers to ignore any data sent with ABORT.
        OPT_ABORT => Ok(OptionRequest::Abort),
        OPT_LIST => no_data(data).map(|()| OptionRequest::List),
        OPT_STRUCTURED_REPLY => no_data(data).map(|()| OptionRequest::StructuredReply),
        OPT_INFO | OPT_GO => {
            let (export, wanted) = parse_info_request(data)?;
            Ok(if option == OPT_GO {
                OptionRequest::Go { export, wanted }
            } else {
                OptionRequest::Info { export, wanted }
            })
        }
        OPT_LIST_META_CONTEXT => {
            parse_meta_context(data, MetaMode::List).map(OptionRequest::ListMetaContext)
        }
        OPT_SET_META_CONTEXT => {
            parse_meta_context(data, MetaMode::Set).map(OptionRequest::SetMetaContext)
        }
        other => Ok(OptionRequest::Unsupported(other)),
    }
}

fn no_data(data: &[u8]) -> Result<(), OptionError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(OptionError("this option takes no data"))
    }
}

fn parse_info_request(data: &[u8]) -> Result<(&str, InfoWanted), OptionError> {
    let mut cursor = Cursor::new(data);
    let name_len = cursor
        .u32()
        .ok_or(OptionError("truncated export name length"))?;
    let name = cursor
        .bytes(name_len as usize)
        .ok_or(OptionError("export name runs past the option"))?;
    let name = wire_str(name)?;
    let count = cursor
        .u16()
        .ok_or(OptionError("truncated information request count"))?;
    let mut wanted = InfoWanted::default();
    for _ in 0..count {
        match cursor
            .u16()
            .ok_or(OptionError("truncated information request list"))?
        {
            INFO_NAME => wanted.name = true,
            INFO_DESCRIPTION => wanted.description = true,
            INFO_BLOCK_SIZE => wanted.block_size = true,
            // INFO_EXPORT is always sent; unknown requests must be ignored.
            _ => {}
        }
    }
    if !cursor.is_empty() {
        return Err(OptionError("trailing bytes after information requests"));
    }
    Ok((name, wanted))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MetaMode {
    List,
    Set,
}

fn parse_meta_context(data: &[u8], mode: MetaMode) -> Result<MetaContextQuery<'_>, OptionError> {
    let mut cursor = Cursor::new(data);
    let name_len = cursor
        .u32()
        .ok_or(OptionError("truncated export name length"))?;
    let export = cursor
        .bytes(name_len as usize)
        .ok_or(OptionError("export name runs past the option"))?;
    let export = wire_str(export)?;
    let count = cursor.u32().ok_or(OptionError("truncated query count"))?;
    // LIST with no queries lists everything; SET with no queries selects nothing.
    let mut base_allocation = count == 0 && mode == MetaMode::List;
    let mut changed = None;
    for _ in 0..count {
        let len = cursor.u32().ok_or(OptionError("truncated query length"))?;
        let query = cursor
            .bytes(len as usize)
            .ok_or(OptionError("query runs past the option"))?;
        let query = wire_str(query)?;
        if !query.contains(':') {
            return Err(OptionError(
                "a query must start with a namespace and a colon",
            ));
        }
        if let Some(base) = query.strip_prefix(CHANGED_PREFIX)
            && !base.is_empty()
        {
            changed = Some(base);
            continue;
        }
        match query {
            BASE_ALLOCATION => base_allocation = true,
            // The bare namespace is a wildcard for LIST and ignored by SET (spec).
            "base:" if mode == MetaMode::List => base_allocation = true,
            // Unknown namespaces and leaves are ignored, never an error.
            _ => {}
        }
    }
    if !cursor.is_empty() {
        return Err(OptionError("trailing bytes after queries"));
    }
    Ok(MetaContextQuery {
        export,
        base_allocation,
        changed,
    })
}

/// Checks a wire string: UTF-8, at most [`MAX_STRING`] bytes, no NUL.
fn wire_str(bytes: &[u8]) -> Result<&str, OptionError> {
    if bytes.len() > MAX_STRING {
        return Err(OptionError("string longer than 4096 bytes"));
    }
    if bytes.contains(&0) {
        return Err(OptionError("string contains NUL"));
    }
    std::str::from_utf8(bytes).map_err(|_| OptionError("string is not UTF-8"))
}

/// A transmission command this server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
}

impl Command {
    fn from_wire(kind: u16) -> Option<Command> {
        Some(match kind {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disc,
            3 => Command::Flush,
            4 => Command::Trim,
            5 => Command::Cache,
            6 => Command::WriteZeroes,
            7 => Command::BlockStatus,
            _ => return None,
        })
    }

    /// Command flags that may accompany this command (FUA is valid on every command).
    fn allowed_flags(self) -> u16 {
        CMD_FLAG_FUA
            | match self {
                Command::Read => CMD_FLAG_DF,
                Command::WriteZeroes => CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
                Command::BlockStatus => CMD_FLAG_REQ_ONE,
                _ => 0,
            }
    }

    /// True for commands that change the export's contents.
    pub fn writes(self) -> bool {
        matches!(self, Command::Write | Command::Trim | Command::WriteZeroes)
    }
}

/// A parsed request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: Command,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Why a request header could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not a request: the stream is out of sync, close the connection.
    BadMagic(u32),
    /// A command this server does not know. `payload` is true when the flags say a payload
    /// of `length` bytes follows, which we cannot safely skip: close the connection.
    /// Otherwise the request is answered with `EINVAL`.
    UnknownCommand {
        cookie: u64,
        kind: u16,
        payload: bool,
    },
}

/// Parses a request header.
pub fn parse_request(bytes: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, RequestError> {
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != REQUEST_MAGIC {
        return Err(RequestError::BadMagic(magic));
    }
    let flags = u16::from_be_bytes([bytes[4], bytes[5]]);
    let kind = u16::from_be_bytes([bytes[6], bytes[7]]);
    let mut cookie = [0u8; 8];
    cookie.copy_from_slice(&bytes[8..16]);
    let cookie = u64::from_be_bytes(cookie);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[16..24]);
    let offset = u64::from_be_bytes(offset);
    let length = u32::from_be_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    match Command::from_wire(kind) {
        Some(command) => Ok(Request {
            flags,
            command,
            cookie,
            offset,
            length,
        }),
        None => Err(RequestError::UnknownCommand {
            cookie,
            kind,
            payload: flags & CMD_FLAG_PAYLOAD_LEN != 0,
        }),
    }
}

/// What was negotiated for a connection, as far as request validation cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size now (it may change with a resize).
    pub size: u64,
    pub read_only: bool,
    pub structured: bool,
    pub base_allocation: bool,
    /// A `troika:changed:` context was selected.
    pub changed: bool,
    /// The client asked for `NBD_INFO_BLOCK_SIZE` in `NBD_OPT_GO`, so it promised to
    /// respect `min_block`.
    pub block_size_negotiated: bool,
    pub min_block: u32,
    pub max_payload: u32,
}

/// A request refused before it reaches the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub errno: Errno,
    pub message: &'static str,
}

fn reject(errno: Errno, message: &'static str) -> Result<(), Rejection> {
    Err(Rejection { errno, message })
}

/// Checks a parsed request against what was negotiated, in this order: flags, write
/// permission, payload size, meta context, alignment, range.
pub fn validate_request(request: &Request, negotiated: &Negotiated) -> Result<(), Rejection> {
    let command = request.command;
    if request.flags & !command.allowed_flags() != 0 {
        return reject(Errno::EINVAL, "flag not valid for this command");
    }
    if request.has(CMD_FLAG_DF) && !negotiated.structured {
        return reject(Errno::EINVAL, "DF needs structured replies");
    }
    if command == Command::Disc || command == Command::Flush {
        return Ok(());
    }
    if command.writes() && negotiated.read_only {
        return reject(Errno::EPERM, "export is read-only");
    }
    if matches!(command, Command::Read | Command::Write) && request.length > negotiated.max_payload
    {
        return reject(Errno::EINVAL, "length exceeds the maximum payload");
    }
    if command == Command::BlockStatus {
        if !negotiated.base_allocation && !negotiated.changed {
            return reject(Errno::EINVAL, "no metadata context was negotiated");
        }
        if request.length == 0 {
            return reject(Errno::EINVAL, "block status of zero bytes");
        }
    }
    if negotiated.block_size_negotiated && negotiated.min_block > 1 {
        let min = u64::from(negotiated.min_block);
        if !request.offset.is_multiple_of(min) || !u64::from(request.length).is_multiple_of(min) {
            return reject(
                Errno::EINVAL,
                "request not aligned to the minimum block size",
            );
        }
    }
    let in_range = request
        .offset
        .checked_add(u64::from(request.length))
        .is_some_and(|end| end <= negotiated.size);
    if !in_range {
        return match command {
            Command::Write | Command::WriteZeroes => {
                reject(Errno::ENOSPC, "request goes past the end of the export")
            }
            _ => reject(Errno::EINVAL, "request goes past the end of the export"),
        };
    }
    Ok(())
}

/// Transmission flags for an export.
pub fn transmission_flags(read_only: bool, structured: bool) -> u16 {
    let mut flags = TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_CACHE
        | TFLAG_CAN_MULTI_CONN;
    if read_only {
        flags |= TFLAG_READ_ONLY;
    } else {
        flags |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO;
    }
    if structured {
        flags |= TFLAG_SEND_DF;
    }
    flags
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Reads big-endian fields from an option payload without ever going past its end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { rest: data }
    }

    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes(4).and_then(be_u32)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}
