//! Test helpers: an in-memory export that tracks holes, a provider over a few of them, a
//! server started on a TCP port or a unix socket, and a small blocking NBD client that
//! speaks raw bytes (so tests can also send what a real client never would).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::proto::*;
use super::{NbdAccessConfig, NbdClient, NbdConfig, NbdListener, NbdTls, spawn_server};
use crate::target::{BlockTarget, ExportInfo, ExportProvider, Extent};
use crate::types::IoError;

/// Allocation granularity of [`MemTarget`].
pub const MEM_BLOCK: u64 = 4096;

/// An export in memory. Blocks are allocated by writes and by zeroing with NO_HOLE, and
/// released by trims and by zeroing without it.
pub struct MemTarget {
    name: String,
    read_only: bool,
    state: Mutex<MemState>,
    pub flushes: AtomicUsize,
    pub prefetches: AtomicUsize,
    /// Reads at this offset wait until `release_slow_read` is set (at most 10 s), to
    /// force replies out of order without depending on the machine's speed.
    pub slow_read_offset: Option<u64>,
    pub release_slow_read: AtomicBool,
    /// Any access overlapping this offset fails with a media error.
    pub bad_offset: Option<u64>,
}

struct MemState {
    data: Vec<u8>,
    allocated: Vec<bool>,
}

impl MemTarget {
    pub fn new(name: &str, size: u64, read_only: bool) -> Self {
        MemTarget {
            name: name.to_owned(),
            read_only,
            state: Mutex::new(MemState {
                data: vec![0; size as usize],
                allocated: vec![false; size.div_ceil(MEM_BLOCK) as usize],
            }),
            flushes: AtomicUsize::new(0),
            prefetches: AtomicUsize::new(0),
            slow_read_offset: None,
            release_slow_read: AtomicBool::new(false),
            bad_offset: None,
        }
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), IoError> {
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(IoError::OutOfRange { offset, len, size });
        }
        if self
            .bad_offset
            .is_some_and(|bad| bad >= offset && bad < offset + len.max(1))
        {
            return Err(IoError::Media {
                volume: self.name.clone(),
                detail: "test media error".to_owned(),
            });
        }
        if write && self.read_only {
            return Err(IoError::ReadOnly {
                volume: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Marks the blocks of a range allocated, or releases the blocks it fully covers.
    fn set_allocated(state: &mut MemState, offset: u64, len: u64, allocated: bool) {
        if allocated {
            let first = offset / MEM_BLOCK;
            let last = (offset + len).div_ceil(MEM_BLOCK);
            for block in first..last {
                state.allocated[block as usize] = true;
            }
        } else {
            let first = offset.div_ceil(MEM_BLOCK);
            let last = (offset + len) / MEM_BLOCK;
            for block in first..last {
                state.allocated[block as usize] = false;
            }
        }
    }

    fn zero(&self, offset: u64, len: u64, keep_allocated: bool) {
        let mut state = self.state.lock();
        state.data[offset as usize..(offset + len) as usize].fill(0);
        Self::set_allocated(&mut state, offset, len, keep_allocated);
    }

    /// A copy of the contents, for checks.
    pub fn contents(&self, offset: u64, len: usize) -> Vec<u8> {
        self.state.lock().data[offset as usize..offset as usize + len].to_vec()
    }
}

impl BlockTarget for MemTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.state.lock().data.len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(offset, buf.len() as u64, false)?;
        if self.slow_read_offset == Some(offset) {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !self.release_slow_read.load(Ordering::Acquire)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let state = self.state.lock();
        buf.copy_from_slice(&state.data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> Result<(), IoError> {
        self.check(offset, data.len() as u64, true)?;
        let mut state = self.state.lock();
        state.data[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Self::set_allocated(&mut state, offset, data.len() as u64, true);
        Ok(())
    }

    fn flush(&self) -> Result<(), IoError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<(), IoError> {
        self.check(offset, len, true)?;
        self.zero(offset, len, false);
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fast_only: bool,
        _fua: bool,
    ) -> Result<(), IoError> {
        self.check(offset, len, true)?;
        // Punching holes is fast; writing allocated zeroes is not.
        if fast_only && no_hole {
            return Err(IoError::NotFast);
        }
        self.zero(offset, len, no_hole);
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.check(offset, len, false)?;
        self.prefetches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), IoError> {
        self.check(offset, len, false)?;
        let state = self.state.lock();
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let block_end = ((at / MEM_BLOCK + 1) * MEM_BLOCK).min(end);
            let hole = !state.allocated[(at / MEM_BLOCK) as usize];
            let zero = state.data[at as usize..block_end as usize]
                .iter()
                .all(|&b| b == 0);
            out.push(Extent {
                length: block_end - at,
                hole,
                zero,
            });
            at = block_end;
        }
        Ok(())
    }
}

/// Serves a fixed set of [`MemTarget`]s: all of them to the clients that see everything,
/// to an identified client those whose name starts with its identity and a '.', nothing
/// to anonymous ones.
pub struct MemProvider {
    pub exports: Vec<Arc<MemTarget>>,
}

impl MemProvider {
    fn grants(client: &NbdClient, name: &str) -> bool {
        match client {
            NbdClient::LocalAdmin | NbdClient::Open => true,
            NbdClient::Identified(identity) => name
                .strip_prefix(identity.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
            NbdClient::Anonymous => false,
        }
    }
}

impl ExportProvider for MemProvider {
    fn list_exports(&self, client: &NbdClient) -> Vec<ExportInfo> {
        self.exports
            .iter()
            .filter(|t| Self::grants(client, &t.name))
            .map(|t| ExportInfo {
                name: t.name.clone(),
                size: t.size(),
                read_only: t.read_only,
            })
            .collect()
    }

    fn open_export(&self, client: &NbdClient, name: &str) -> Option<Arc<dyn BlockTarget>> {
        self.exports
            .iter()
            .filter(|t| Self::grants(client, &t.name))
            .find(|t| t.name == name)
            .map(|t| Arc::clone(t) as Arc<dyn BlockTarget>)
    }
}

/// Where a test server listens.
#[derive(Clone, Debug)]
pub enum Address {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// A running server; stops and joins on drop.
pub struct TestServer {
    pub address: Address,
    pub shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A TCP server as started with `--nbd-open`: anonymous clients see every export.
    pub fn tcp(exports: Vec<Arc<MemTarget>>) -> Self {
        Self::tcp_with(exports, true)
    }

    /// A TCP server; `open` is `--nbd-open`.
    pub fn tcp_with(exports: Vec<Arc<MemTarget>>, open: bool) -> Self {
        Self::tcp_with_tls(exports, NbdTls::off(), open)
    }

    /// A TCP server with the given TLS policy; `open` is `--nbd-open`.
    pub fn tcp_with_tls(exports: Vec<Arc<MemTarget>>, tls: NbdTls, open: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = Address::Tcp(listener.local_addr().expect("addr"));
        let access = NbdAccessConfig {
            open,
            allowed_uids: Vec::new(),
        };
        Self::start(
            NbdListener::Tcp(listener),
            address,
            None,
            exports,
            tls,
            access,
        )
    }

    pub fn unix(exports: Vec<Arc<MemTarget>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nbd.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        Self::start(
            NbdListener::Unix(listener),
            Address::Unix(path),
            Some(dir),
            exports,
            NbdTls::off(),
            NbdAccessConfig::default(),
        )
    }

    fn start(
        listener: NbdListener,
        address: Address,
        dir: Option<tempfile::TempDir>,
        exports: Vec<Arc<MemTarget>>,
        tls: NbdTls,
        access: NbdAccessConfig,
    ) -> Self {
        let shutdown = Arc::new(AtomicBool::new(false));
        let handle = spawn_server(
            listener,
            Arc::new(MemProvider { exports }),
            NbdConfig {
                max_payload: 1024 * 1024,
                tls,
                access,
                ..NbdConfig::default()
            },
            Arc::clone(&shutdown),
        );
        TestServer {
            address,
            shutdown,
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// Sets the shutdown flag and waits for the server thread.
    pub fn stop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().expect("server thread panicked");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The max payload every [`TestServer`] advertises.
pub const TEST_MAX_PAYLOAD: u32 = 1024 * 1024;

pub trait Socket: Read + Write + Send {
    fn half_close(&self);
}

impl Socket for openssl::ssl::SslStream<TcpStream> {
    fn half_close(&self) {
        let _ = self.get_ref().shutdown(Shutdown::Write);
    }
}

impl Socket for TcpStream {
    fn half_close(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Socket for UnixStream {
    fn half_close(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// One reply as the client saw it.
#[derive(Debug, Default)]
pub struct Reply {
    pub cookie: u64,
    pub error: u32,
    pub data: Vec<u8>,
    /// `(length, flags)` descriptors of a block-status chunk.
    pub status: Vec<(u32, u32)>,
    pub context_id: u32,
    pub message: String,
    pub structured: bool,
    pub chunk_type: u16,
}

/// What a client negotiates in [`Client::connect`].
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub structured: bool,
    pub meta: bool,
    pub block_size: bool,
}

impl Setup {
    pub const FULL: Setup = Setup {
        structured: true,
        meta: true,
        block_size: true,
    };
    pub const PLAIN: Setup = Setup {
        structured: false,
        meta: false,
        block_size: false,
    };
}

/// A blocking NBD client over raw bytes.
pub struct Client {
    sock: Box<dyn Socket>,
    pub size: u64,
    pub flags: u16,
    /// Payload lengths of READs awaiting simple replies, by cookie.
    pending_reads: HashMap<u64, u32>,
}

impl Client {
    /// Opens a socket without reading anything.
    pub fn open(address: &Address) -> Self {
        let sock: Box<dyn Socket> = match address {
            Address::Tcp(addr) => {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.set_nodelay(true).unwrap();
                Box::new(s)
            }
            Address::Unix(path) => {
                let s = UnixStream::connect(path).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                Box::new(s)
            }
        };
        Client {
            sock,
            size: 0,
            flags: 0,
            pending_reads: HashMap::new(),
        }
    }

    /// A client over an already connected socket (e.g. a TLS session).
    pub fn over(sock: Box<dyn Socket>) -> Self {
        Client {
            sock,
            size: 0,
            flags: 0,
            pending_reads: HashMap::new(),
        }
    }

    /// Reads the greeting and sends client flags.
    pub fn start(address: &Address, client_flags: u32) -> Self {
        let mut client = Self::open(address);
        let greeting = client.read_vec(18);
        assert_eq!(&greeting[0..8], &NBD_MAGIC.to_be_bytes());
        assert_eq!(&greeting[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(
            u16::from_be_bytes([greeting[16], greeting[17]]),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        client.write(&client_flags.to_be_bytes());
        client
    }

    /// Handshakes with GO on `export` as `setup` says.
    pub fn connect(address: &Address, export: &str, setup: Setup) -> Self {
        let mut client = Self::start(address, CLIENT_FLAGS_KNOWN);
        if setup.structured {
            client.send_option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(client.read_option_reply().1, REP_ACK);
        }
        if setup.meta {
            client.send_option(
                OPT_SET_META_CONTEXT,
                &meta_payload(export, &[BASE_ALLOCATION]),
            );
            let (_, kind, data) = client.read_option_reply();
            assert_eq!(kind, REP_META_CONTEXT);
            assert_eq!(
                u32::from_be_bytes(data[0..4].try_into().unwrap()),
                BASE_ALLOCATION_ID
            );
            assert_eq!(client.read_option_reply().1, REP_ACK);
        }
        let infos: &[u16] = if setup.block_size {
            &[INFO_BLOCK_SIZE]
        } else {
            &[]
        };
        client.send_option(OPT_GO, &info_payload(export, infos));
        let replies = client.read_info_replies();
        let last = replies.last().expect("a reply");
        assert_eq!(last.0, REP_ACK, "GO on {export:?} failed");
        client
    }

    /// Reads INFO replies up to the final one, recording size and flags.
    pub fn read_info_replies(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut replies = Vec::new();
        loop {
            let (_, kind, data) = self.read_option_reply();
            if kind == REP_INFO && data.len() >= 2 && data[0..2] == INFO_EXPORT.to_be_bytes() {
                self.size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                self.flags = u16::from_be_bytes([data[10], data[11]]);
            }
            let done = kind != REP_INFO;
            replies.push((kind, data));
            if done {
                return replies;
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("client write");
    }

    /// Writes, ignoring errors (the server may have closed already).
    pub fn write_lossy(&mut self, bytes: &[u8]) {
        let _ = self.sock.write_all(bytes);
    }

    pub fn read_vec(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.sock.read_exact(&mut buf).expect("client read");
        buf
    }

    /// Half-closes and reads until the server closes; false if it does not within the
    /// client's read timeout.
    pub fn drains_to_eof(mut self) -> bool {
        self.sock.half_close();
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// True if the server closed the connection (without half-closing first).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.sock.read(&mut buf), Ok(0) | Err(_))
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut msg = Vec::with_capacity(16 + data.len());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
        msg.extend_from_slice(data);
        self.write(&msg);
    }

    /// Returns `(option, reply type, data)`.
    pub fn read_option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let header = self.read_vec(20);
        assert_eq!(&header[0..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let data = self.read_vec(len as usize);
        (option, kind, data)
    }

    /// Sends a request (and its payload, for writes).
    pub fn send(&mut self, flags: u16, command: u16, cookie: u64, offset: u64, len: u32) {
        self.send_with(flags, command, cookie, offset, len, &[]);
    }

    pub fn send_with(
        &mut self,
        flags: u16,
        command: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        self.write_all_request(&request_bytes(flags, command, cookie, offset, len), payload);
        if command == 0 {
            self.pending_reads.insert(cookie, len);
        }
    }

    fn write_all_request(&mut self, header: &[u8; 28], payload: &[u8]) {
        let mut msg = Vec::with_capacity(28 + payload.len());
        msg.extend_from_slice(header);
        msg.extend_from_slice(payload);
        self.write(&msg);
    }

    /// Reads one reply (one simple reply, or structured chunks up to DONE).
    pub fn reply(&mut self) -> Reply {
        let mut reply = Reply::default();
        loop {
            let magic = u32::from_be_bytes(self.read_vec(4).try_into().unwrap());
            if magic == SIMPLE_REPLY_MAGIC {
                let rest = self.read_vec(12);
                reply.error = u32::from_be_bytes(rest[0..4].try_into().unwrap());
                reply.cookie = u64::from_be_bytes(rest[4..12].try_into().unwrap());
                let expected = self.pending_reads.remove(&reply.cookie);
                if let (Some(len), 0) = (expected, reply.error) {
                    reply.data = self.read_vec(len as usize);
                }
                return reply;
            }
            assert_eq!(magic, STRUCTURED_REPLY_MAGIC, "bad reply magic");
            reply.structured = true;
            let rest = self.read_vec(16);
            let flags = u16::from_be_bytes([rest[0], rest[1]]);
            reply.chunk_type = u16::from_be_bytes([rest[2], rest[3]]);
            reply.cookie = u64::from_be_bytes(rest[4..12].try_into().unwrap());
            let len = u32::from_be_bytes(rest[12..16].try_into().unwrap());
            let payload = self.read_vec(len as usize);
            match reply.chunk_type {
                REPLY_TYPE_NONE => assert_eq!(len, 0),
                REPLY_TYPE_OFFSET_DATA => reply.data.extend_from_slice(&payload[8..]),
                REPLY_TYPE_BLOCK_STATUS => {
                    reply.context_id = u32::from_be_bytes(payload[0..4].try_into().unwrap());
                    for d in payload[4..].chunks_exact(8) {
                        reply.status.push((
                            u32::from_be_bytes(d[0..4].try_into().unwrap()),
                            u32::from_be_bytes(d[4..8].try_into().unwrap()),
                        ));
                    }
                }
                REPLY_TYPE_ERROR => {
                    reply.error = u32::from_be_bytes(payload[0..4].try_into().unwrap());
                    let mlen = u16::from_be_bytes([payload[4], payload[5]]) as usize;
                    reply.message = String::from_utf8(payload[6..6 + mlen].to_vec()).unwrap();
                }
                other => panic!("unexpected chunk type {other}"),
            }
            if flags & REPLY_FLAG_DONE != 0 {
                self.pending_reads.remove(&reply.cookie);
                return reply;
            }
        }
    }

    /// Sends one request and waits for its reply.
    pub fn call(
        &mut self,
        flags: u16,
        command: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> Reply {
        self.send_with(flags, command, 7, offset, len, payload);
        let reply = self.reply();
        assert_eq!(reply.cookie, 7);
        reply
    }

    /// Writes `data` and reads it back, asserting both succeed and match.
    pub fn verified_write_read(&mut self, offset: u64, data: &[u8]) {
        let len = data.len() as u32;
        assert_eq!(self.call(0, 1, offset, len, data).error, 0);
        let reply = self.call(0, 0, offset, len, &[]);
        assert_eq!(reply.error, 0);
        assert_eq!(reply.data, data);
    }
}

/// Encodes a request header.
pub fn request_bytes(flags: u16, command: u16, cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut header = [0u8; 28];
    header[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    header[4..6].copy_from_slice(&flags.to_be_bytes());
    header[6..8].copy_from_slice(&command.to_be_bytes());
    header[8..16].copy_from_slice(&cookie.to_be_bytes());
    header[16..24].copy_from_slice(&offset.to_be_bytes());
    header[24..28].copy_from_slice(&len.to_be_bytes());
    header
}

/// Payload of INFO / GO.
pub fn info_payload(export: &str, infos: &[u16]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for info in infos {
        data.extend_from_slice(&info.to_be_bytes());
    }
    data
}

/// Payload of LIST_META_CONTEXT / SET_META_CONTEXT.
pub fn meta_payload(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for query in queries {
        data.extend_from_slice(&(query.len() as u32).to_be_bytes());
        data.extend_from_slice(query.as_bytes());
    }
    data
}

/// A small deterministic generator (xorshift64*), so hostile tests are reproducible.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Random bytes, fewer than `max` of them.
    pub fn bytes_below(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max);
        (0..len).map(|_| self.next() as u8).collect()
    }
}
