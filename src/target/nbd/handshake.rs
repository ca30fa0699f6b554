//! The fixed-newstyle handshake: greeting, client flags, then option haggling until the
//! client enters transmission (`GO`, `EXPORT_NAME`), aborts, or breaks the protocol.
//!
//! ```text
//!  greeting ──client flags ok──▶ haggling ──GO ack / EXPORT_NAME──▶ transmission
//!      │                          │  ▲  │
//!      └─unknown flags─▶ closed ◀─┘  └──┘ other options (INFO, LIST, STRUCTURED_REPLY,
//!                       (ABORT, bad magic,   META_CONTEXT, unsupported, errors)
//!                        EOF, huge option, unknown EXPORT_NAME, deadline, shutdown)
//! ```
//!
//! State carried across options: whether structured replies were negotiated, which
//! export the last `SET_META_CONTEXT` named (and whether it selected `base:allocation`),
//! and the [`NbdClient`] every export lookup is made for. The client is derived from the
//! [`NbdConnection`] when haggling starts, so it changes only with a TLS upgrade: after
//! STARTTLS an identified TCP client sees its host's mappings (also under `--nbd-open`),
//! an anonymous TLS client what any anonymous TCP client sees.
//!
//! TLS: `STARTTLS` (when the listener offers TLS) is answered with an ACK and ends this
//! handshake with [`Outcome::StartTls`]; the caller runs the TLS handshake on the same
//! socket and haggling starts again over TLS ([`Phase::AfterTls`]) with fresh option
//! state (the spec: what was negotiated in the clear is forgotten). When the listener
//! requires TLS, every option other than STARTTLS and ABORT gets `NBD_REP_ERR_TLS_REQD`
//! before it, and `EXPORT_NAME` closes. A second STARTTLS is `NBD_REP_ERR_INVALID`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::proto::{self, InfoWanted, OptionRequest};
use super::stream::{FrameReader, Stream, write_all};
use super::tls::{NbdConnection, NbdPeer};
use super::{NbdClient, NbdConfig};
use crate::target::{BlockTarget, ExportProvider};

/// Largest option payload we parse; bigger ones get `NBD_REP_ERR_TOO_BIG`.
const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Largest option payload we read and drop to stay in sync; bigger ones close the
/// connection (nothing legitimate is that large).
const MAX_DISCARD_LEN: u32 = 1024 * 1024;
/// A client gets this long to finish the handshake.
pub(super) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(60);

/// What transmission needs from the handshake.
pub(super) struct Session {
    pub target: Arc<dyn BlockTarget>,
    pub structured: bool,
    pub base_allocation: bool,
    /// The `troika:changed:` base selected, as the target's token.
    pub changed: Option<u64>,
    pub block_size_negotiated: bool,
    /// How the client connected (peer address, TLS identity), for the log.
    pub connection: NbdConnection,
}

/// How a handshake ended.
pub(super) enum Outcome {
    Transmission(Session),
    /// STARTTLS was acknowledged: the TLS handshake comes next on this socket, then
    /// [`negotiate`] again with [`Phase::AfterTls`].
    StartTls {
        no_zeroes: bool,
    },
    /// The connection ends: the client aborted, left, or broke the protocol.
    Closed,
}

/// Where in the connection's life a handshake starts.
pub(super) enum Phase {
    /// A new connection: greeting and client flags first.
    Fresh,
    /// Haggling over TLS after STARTTLS (the client flags were sent before it).
    AfterTls { no_zeroes: bool },
}

/// State of option haggling.
struct Haggle<'a> {
    stream: &'a Stream,
    provider: &'a dyn ExportProvider,
    config: &'a NbdConfig,
    shutdown: &'a AtomicBool,
    connection: &'a NbdConnection,
    /// Who the exports are looked up for.
    client: NbdClient,
    no_zeroes: bool,
    structured: bool,
    /// What the last `SET_META_CONTEXT` selected.
    meta: Option<Selected>,
}

/// The contexts a `SET_META_CONTEXT` selected for an export.
struct Selected {
    export: String,
    base_allocation: bool,
    /// The `troika:changed:` base, as the target's token.
    changed: Option<u64>,
}

/// Who a connection's client is: a unix-socket peer has already passed the server's
/// credential check and is the local administrator; a TCP client is identified by the
/// TLS identity it proved, if any.
fn client_of(connection: &NbdConnection, config: &NbdConfig) -> NbdClient {
    match connection.peer {
        NbdPeer::Unix { .. } => NbdClient::LocalAdmin,
        NbdPeer::Tcp { .. } => {
            NbdClient::over_tcp(connection.tls_identity.clone(), config.access.open)
        }
    }
}

/// Runs the handshake of a connection: from the greeting on a fresh one, or the haggling
/// again after STARTTLS (with `connection` then saying what TLS proved).
pub(super) fn negotiate(
    stream: &Stream,
    reader: &mut FrameReader<'_>,
    provider: &dyn ExportProvider,
    config: &NbdConfig,
    shutdown: &AtomicBool,
    connection: &NbdConnection,
    phase: Phase,
) -> Outcome {
    reader.set_deadline(Some(Instant::now() + HANDSHAKE_DEADLINE));
    let no_zeroes = match phase {
        Phase::Fresh => greet(stream, reader, shutdown),
        Phase::AfterTls { no_zeroes } => Some(no_zeroes),
    };
    let outcome = match no_zeroes {
        Some(no_zeroes) => {
            let mut haggle = Haggle {
                stream,
                provider,
                config,
                shutdown,
                connection,
                client: client_of(connection, config),
                no_zeroes,
                structured: false,
                meta: None,
            };
            haggle.run(reader)
        }
        None => Outcome::Closed,
    };
    reader.set_deadline(None);
    outcome
}

/// Sends the greeting and reads the client flags; returns whether the client asked for
/// no zeroes, or `None` when the connection must close.
fn greet(stream: &Stream, reader: &mut FrameReader<'_>, shutdown: &AtomicBool) -> Option<bool> {
    let mut greeting = [0u8; 18];
    greeting[0..8].copy_from_slice(&proto::NBD_MAGIC.to_be_bytes());
    greeting[8..16].copy_from_slice(&proto::IHAVEOPT.to_be_bytes());
    greeting[16..18]
        .copy_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
    write_all(stream, &[&greeting], shutdown).ok()?;
    let mut client_flags = [0u8; 4];
    reader.read_exact(&mut client_flags).ok()?;
    let client_flags = u32::from_be_bytes(client_flags);
    if client_flags & !proto::CLIENT_FLAGS_KNOWN != 0 {
        return None;
    }
    Some(client_flags & proto::CLIENT_FLAG_NO_ZEROES != 0)
}

impl Haggle<'_> {
    /// Haggles until the client enters transmission, starts TLS, or the connection ends.
    fn run(&mut self, reader: &mut FrameReader<'_>) -> Outcome {
        let mut data = Vec::new();
        loop {
            let mut header = [0u8; proto::OPTION_HEADER_LEN];
            if reader.read_exact(&mut header).is_err() {
                return Outcome::Closed;
            }
            let Some(header) = proto::parse_option_header(&header) else {
                return Outcome::Closed;
            };
            if header.length > MAX_OPTION_LEN {
                if header.length > MAX_DISCARD_LEN
                    || header.option == proto::OPT_EXPORT_NAME
                    || reader.discard(u64::from(header.length)).is_err()
                {
                    return Outcome::Closed;
                }
                if self
                    .reply(header.option, proto::REP_ERR_TOO_BIG, b"option too large")
                    .is_err()
                {
                    return Outcome::Closed;
                }
                continue;
            }
            data.clear();
            data.resize(header.length as usize, 0);
            if reader.read_exact(&mut data).is_err() {
                return Outcome::Closed;
            }
            match self.option(header.option, &data) {
                Ok(Step::Continue) => {}
                Ok(Step::Done(outcome)) => return outcome,
                Err(_) => return Outcome::Closed,
            }
        }
    }
}

enum Step {
    Continue,
    Done(Outcome),
}

impl Haggle<'_> {
    fn option(&mut self, option: u32, data: &[u8]) -> std::io::Result<Step> {
        if let Some(step) = self.tls_gate(option, data)? {
            return Ok(step);
        }
        let request = match proto::parse_option(option, data) {
            Ok(request) => request,
            Err(_) if option == proto::OPT_EXPORT_NAME => {
                return Ok(Step::Done(Outcome::Closed));
            }
            Err(err) => {
                if option == proto::OPT_SET_META_CONTEXT {
                    self.meta = None;
                }
                self.reply(option, proto::REP_ERR_INVALID, err.0.as_bytes())?;
                return Ok(Step::Continue);
            }
        };
        if self.shutdown.load(Ordering::Acquire) {
            if !matches!(request, OptionRequest::Abort) {
                self.reply(option, proto::REP_ERR_SHUTDOWN, b"server shutting down")?;
            }
            return Ok(Step::Done(Outcome::Closed));
        }
        match request {
            OptionRequest::ExportName(name) => return Ok(Step::Done(self.export_name(name)?)),
            OptionRequest::Abort => {
                // The client may close without waiting for this ACK.
                let _ = self.reply(option, proto::REP_ACK, &[]);
                return Ok(Step::Done(Outcome::Closed));
            }
            OptionRequest::List => self.list(option)?,
            OptionRequest::Info { export, wanted } => {
                self.info(option, export, wanted)?;
            }
            OptionRequest::Go { export, wanted } => {
                if let Some(session) = self.info(option, export, wanted)? {
                    return Ok(Step::Done(Outcome::Transmission(session)));
                }
            }
            OptionRequest::StructuredReply => {
                self.structured = true;
                self.reply(option, proto::REP_ACK, &[])?;
            }
            OptionRequest::ListMetaContext(query) => {
                self.meta_context(option, &query, false)?;
            }
            OptionRequest::SetMetaContext(query) => {
                self.meta = None;
                if !self.structured {
                    self.reply(
                        option,
                        proto::REP_ERR_INVALID,
                        b"negotiate structured replies first",
                    )?;
                } else if let Some(changed) = self.meta_context(option, &query, true)? {
                    self.meta = Some(Selected {
                        export: query.export.to_owned(),
                        base_allocation: query.base_allocation,
                        changed,
                    });
                }
            }
            OptionRequest::Unsupported(_) => {
                self.reply(option, proto::REP_ERR_UNSUP, b"option not supported")?;
            }
        }
        Ok(Step::Continue)
    }

    /// STARTTLS, and what TLS policy says about other options; `None` lets the option
    /// through to the ordinary handling.
    fn tls_gate(&mut self, option: u32, data: &[u8]) -> std::io::Result<Option<Step>> {
        let secured = self.connection.tls;
        if option == proto::OPT_STARTTLS {
            let offered = self.config.tls.offered().is_some();
            if !offered {
                self.reply(option, proto::REP_ERR_UNSUP, b"TLS is not offered here")?;
            } else if secured {
                self.reply(option, proto::REP_ERR_INVALID, b"TLS is already on")?;
            } else if !data.is_empty() {
                self.reply(option, proto::REP_ERR_INVALID, b"STARTTLS takes no data")?;
            } else if self.shutdown.load(Ordering::Acquire) {
                self.reply(option, proto::REP_ERR_SHUTDOWN, b"server shutting down")?;
                return Ok(Some(Step::Done(Outcome::Closed)));
            } else {
                self.reply(option, proto::REP_ACK, &[])?;
                return Ok(Some(Step::Done(Outcome::StartTls {
                    no_zeroes: self.no_zeroes,
                })));
            }
            return Ok(Some(Step::Continue));
        }
        if secured || !self.config.tls.required() || option == proto::OPT_ABORT {
            return Ok(None);
        }
        if option == proto::OPT_EXPORT_NAME {
            // No error reply is possible to EXPORT_NAME.
            return Ok(Some(Step::Done(Outcome::Closed)));
        }
        self.reply(
            option,
            proto::REP_ERR_TLS_REQD,
            b"TLS is required: use STARTTLS",
        )?;
        Ok(Some(Step::Continue))
    }

    /// Sends one option reply.
    fn reply(&self, option: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
        let mut header = [0u8; 20];
        header[0..8].copy_from_slice(&proto::OPTION_REPLY_MAGIC.to_be_bytes());
        header[8..12].copy_from_slice(&option.to_be_bytes());
        header[12..16].copy_from_slice(&kind.to_be_bytes());
        // Every reply we build is far below 4 GiB (names are capped at 4096 bytes).
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        header[16..20].copy_from_slice(&len.to_be_bytes());
        write_all(self.stream, &[&header, data], self.shutdown)
    }

    /// Finds an export this client may reach: the empty name means the only export it
    /// may reach, when there is exactly one.
    fn resolve(&self, name: &str) -> Option<(String, Arc<dyn BlockTarget>)> {
        if name.is_empty() {
            let exports = self.provider.list_exports(&self.client);
            let [only] = exports.as_slice() else {
                return None;
            };
            let target = self.provider.open_export(&self.client, &only.name)?;
            return Some((only.name.clone(), target));
        }
        let target = self.provider.open_export(&self.client, name)?;
        Some((name.to_owned(), target))
    }

    fn list(&self, option: u32) -> std::io::Result<()> {
        for export in self.provider.list_exports(&self.client) {
            let name = export.name.as_bytes();
            if name.len() > proto::MAX_STRING {
                continue;
            }
            let mut data = Vec::with_capacity(4 + name.len());
            data.extend_from_slice(&(name.len() as u32).to_be_bytes());
            data.extend_from_slice(name);
            self.reply(option, proto::REP_SERVER, &data)?;
        }
        self.reply(option, proto::REP_ACK, &[])
    }

    /// Answers INFO or GO; returns the session when a GO succeeded.
    fn info(
        &self,
        option: u32,
        export: &str,
        wanted: InfoWanted,
    ) -> std::io::Result<Option<Session>> {
        let Some((canonical, target)) = self.resolve(export) else {
            self.reply(option, proto::REP_ERR_UNKNOWN, b"no such export")?;
            return Ok(None);
        };
        let mut info = [0u8; 14];
        info[0..2].copy_from_slice(&proto::INFO_EXPORT.to_be_bytes());
        info[2..10].copy_from_slice(&target.size().to_be_bytes());
        let flags = proto::transmission_flags(target.read_only(), self.structured);
        info[10..12].copy_from_slice(&flags.to_be_bytes());
        self.reply(option, proto::REP_INFO, &info[..12])?;

        info[0..2].copy_from_slice(&proto::INFO_BLOCK_SIZE.to_be_bytes());
        info[2..6].copy_from_slice(&self.config.min_block.to_be_bytes());
        info[6..10].copy_from_slice(&self.config.preferred_block.to_be_bytes());
        info[10..14].copy_from_slice(&self.config.max_payload.to_be_bytes());
        self.reply(option, proto::REP_INFO, &info)?;

        if wanted.name {
            self.reply_info_string(option, proto::INFO_NAME, &canonical)?;
        }
        if wanted.description {
            let description = format!("troika volume {canonical}");
            self.reply_info_string(option, proto::INFO_DESCRIPTION, &description)?;
        }
        self.reply(option, proto::REP_ACK, &[])?;
        if option != proto::OPT_GO {
            return Ok(None);
        }
        Ok(Some(Session {
            target,
            structured: self.structured,
            base_allocation: self.meta_selected(export).0,
            changed: self.meta_selected(export).1,
            block_size_negotiated: wanted.block_size,
            connection: self.connection.clone(),
        }))
    }

    fn reply_info_string(&self, option: u32, kind: u16, text: &str) -> std::io::Result<()> {
        let text = &text.as_bytes()[..text.len().min(proto::MAX_STRING)];
        let mut data = Vec::with_capacity(2 + text.len());
        data.extend_from_slice(&kind.to_be_bytes());
        data.extend_from_slice(text);
        self.reply(option, proto::REP_INFO, &data)
    }

    /// The contexts selected for the export now being entered: `base:allocation`, and the
    /// `troika:changed:` base (a selection made for another export does not carry over).
    fn meta_selected(&self, export: &str) -> (bool, Option<u64>) {
        match &self.meta {
            Some(selected) if selected.export == export => {
                (selected.base_allocation, selected.changed)
            }
            _ => (false, None),
        }
    }

    /// Answers LIST_META_CONTEXT or SET_META_CONTEXT (`set`: with context ids); returns
    /// `None` when it failed, else the `troika:changed:` base token, if one was named and
    /// can be served.
    fn meta_context(
        &self,
        option: u32,
        query: &proto::MetaContextQuery<'_>,
        set: bool,
    ) -> std::io::Result<Option<Option<u64>>> {
        let Some((_, target)) = self.resolve(query.export) else {
            self.reply(option, proto::REP_ERR_UNKNOWN, b"no such export")?;
            return Ok(None);
        };
        let id = |id: u32| if set { id } else { 0 };
        if query.base_allocation {
            let mut data = Vec::with_capacity(4 + proto::BASE_ALLOCATION.len());
            data.extend_from_slice(&id(proto::BASE_ALLOCATION_ID).to_be_bytes());
            data.extend_from_slice(proto::BASE_ALLOCATION.as_bytes());
            self.reply(option, proto::REP_META_CONTEXT, &data)?;
        }
        // A base that is not of the export's family, or that this client may not reach,
        // is simply not selected (spec: unknown contexts are left out, never an error).
        let changed = query.changed.and_then(|base| {
            self.provider.open_export(&self.client, base)?;
            let token = target.compare_with(base)?;
            Some((base, token))
        });
        if let Some((base, _)) = changed {
            let name = format!("{}{base}", proto::CHANGED_PREFIX);
            let mut data = Vec::with_capacity(4 + name.len());
            data.extend_from_slice(&id(proto::CHANGED_ID).to_be_bytes());
            data.extend_from_slice(name.as_bytes());
            self.reply(option, proto::REP_META_CONTEXT, &data)?;
        }
        self.reply(option, proto::REP_ACK, &[])?;
        Ok(Some(changed.map(|(_, token)| token)))
    }

    /// The legacy way into transmission: no error reply is possible, so failure closes.
    fn export_name(&self, name: &str) -> std::io::Result<Outcome> {
        let Some((_, target)) = self.resolve(name) else {
            return Ok(Outcome::Closed);
        };
        let mut reply = [0u8; 10 + 124];
        reply[0..8].copy_from_slice(&target.size().to_be_bytes());
        let flags = proto::transmission_flags(target.read_only(), self.structured);
        reply[8..10].copy_from_slice(&flags.to_be_bytes());
        let len = if self.no_zeroes { 10 } else { reply.len() };
        write_all(self.stream, &[&reply[..len]], self.shutdown)?;
        Ok(Outcome::Transmission(Session {
            target,
            structured: self.structured,
            base_allocation: self.meta_selected(name).0,
            changed: self.meta_selected(name).1,
            block_size_negotiated: false,
            connection: self.connection.clone(),
        }))
    }
}
