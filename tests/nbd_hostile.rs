//! Hostile NBD input against the real binary: over a thousand seeded-random malformed
//! sessions, each on its own connection, while a healthy client keeps writing and
//! verifying its own volume. The node must stay up, answer with the protocol's errors,
//! close only the broken connection, and leave the healthy data alone.
//!
//! Set `TROIKA_HOSTILE_SEED` to replay a run; the seed is printed.

mod common;
#[path = "common/testdata.rs"]
mod testdata;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::{CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, NbdClient};
use testdata::XorShift;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;

const MIB: u64 = 1 << 20;
/// The hostile export and the healthy client's export.
const HOSTILE: &str = "H";
const HEALTHY: &str = "G";
const HEALTHY_REGION: u64 = 4 * MIB;
const SESSIONS: usize = 2500;
const TIMEOUT: Duration = Duration::from_secs(5);

/// One raw connection to the NBD socket.
struct Raw {
    stream: UnixStream,
}

/// What the server did at the end of a session after the client half-closed.
enum End {
    Closed,
    Hung,
}

impl Raw {
    fn connect(socket: &Path) -> io::Result<Raw> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Raw { stream })
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn u16(&mut self) -> io::Result<u16> {
        let mut b = [0; 2];
        self.stream.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0; 4];
        self.stream.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0; 8];
        self.stream.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0; len];
        self.stream.read_exact(&mut b)?;
        Ok(b)
    }

    /// Reads the server greeting; returns the handshake flags.
    fn greeting(&mut self) -> Result<u16, String> {
        let magic = self.u64().map_err(|e| format!("no greeting: {e}"))?;
        let opt = self.u64().map_err(|e| format!("no greeting: {e}"))?;
        if magic != NBDMAGIC || opt != IHAVEOPT {
            return Err(format!("bad greeting {magic:#x} {opt:#x}"));
        }
        self.u16().map_err(|e| format!("no handshake flags: {e}"))
    }

    fn option(&mut self, option: u32, data: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(16 + data.len());
        frame.extend_from_slice(&IHAVEOPT.to_be_bytes());
        frame.extend_from_slice(&option.to_be_bytes());
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        self.send(&frame)
    }

    /// One option reply: (option, type, data).
    fn option_reply(&mut self) -> io::Result<(u32, u32, Vec<u8>)> {
        let magic = self.u64()?;
        if magic != OPT_REPLY_MAGIC {
            return Err(io::Error::other(format!(
                "bad option reply magic {magic:#x}"
            )));
        }
        let option = self.u32()?;
        let kind = self.u32()?;
        let len = self.u32()?;
        if len > 1 << 20 {
            return Err(io::Error::other(format!("option reply of {len} bytes")));
        }
        Ok((option, kind, self.bytes(len as usize)?))
    }

    /// Greeting, client flags and `NBD_OPT_GO` on `export`; returns the export size.
    fn open(&mut self, export: &str) -> Result<u64, String> {
        self.greeting()?;
        self.send(&3u32.to_be_bytes()).map_err(|e| e.to_string())?;
        self.option(OPT_GO, &go_data(export.as_bytes()))
            .map_err(|e| e.to_string())?;
        let mut size = None;
        loop {
            let (_, kind, data) = self
                .option_reply()
                .map_err(|e| format!("GO {export}: {e}"))?;
            match kind {
                REP_ACK => break,
                3 if data.len() >= 12 && data[..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(data[2..10].try_into().unwrap()));
                }
                k if k & 0x8000_0000 != 0 => return Err(format!("GO {export} refused: {k:#x}")),
                _ => {}
            }
        }
        size.ok_or_else(|| format!("GO {export}: no export size"))
    }

    fn request(
        &mut self,
        command: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
    ) -> io::Result<()> {
        self.send(&request_header(command, flags, cookie, offset, len))
    }

    /// A simple reply: (errno, cookie).
    fn simple_reply(&mut self) -> io::Result<(u32, u64)> {
        let magic = self.u32()?;
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(io::Error::other(format!("bad reply magic {magic:#x}")));
        }
        Ok((self.u32()?, self.u64()?))
    }

    /// Half-closes and waits for the server to close its side.
    fn finish(mut self) -> End {
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut sink = [0u8; 65536];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return End::Closed,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return End::Hung;
                }
                Err(_) => return End::Closed,
            }
        }
    }
}

/// `min` plus up to `spread - 1` random bytes.
fn junk(rng: &mut XorShift, min: usize, spread: u64) -> Vec<u8> {
    let len = min + rng.below(spread) as usize;
    rng.bytes(len)
}

fn go_data(name: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name);
    data.extend_from_slice(&0u16.to_be_bytes());
    data
}

fn request_header(command: u16, flags: u16, cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut header = [0u8; 28];
    header[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    header[4..6].copy_from_slice(&flags.to_be_bytes());
    header[6..8].copy_from_slice(&command.to_be_bytes());
    header[8..16].copy_from_slice(&cookie.to_be_bytes());
    header[16..24].copy_from_slice(&offset.to_be_bytes());
    header[24..28].copy_from_slice(&len.to_be_bytes());
    header
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Checks a request the server must reject: an error reply with the same cookie, or (for a
/// stream it cannot resynchronise) a close. `Ok(true)` when the connection is still usable.
fn expect_rejected(raw: &mut Raw, cookie: u64, what: &str) -> Result<bool, String> {
    match raw.simple_reply() {
        Ok((0, _)) => Err(format!("{what}: the server accepted it (errno 0)")),
        Ok((_, c)) if c != cookie => Err(format!("{what}: reply cookie {c} is not {cookie}")),
        Ok((errno, _))
            if errno == EINVAL || errno == ENOSPC || errno == EIO || errno == 75 || errno == 1 =>
        {
            Ok(true)
        }
        Ok((errno, _)) => Err(format!("{what}: unexpected errno {errno}")),
        Err(e) if is_closed(&e) => Ok(false),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A read the connection can still answer after hostile input: proves it is in sync.
fn expect_working(raw: &mut Raw, what: &str) -> Result<(), String> {
    raw.request(CMD_READ, 0, 0xABCD, 0, 4096)
        .map_err(|e| format!("{what}: {e}"))?;
    match raw.simple_reply() {
        Ok((0, 0xABCD)) => raw
            .bytes(4096)
            .map(|_| ())
            .map_err(|e| format!("{what}: read data: {e}")),
        Ok(other) => Err(format!("{what}: follow-up read answered {other:?}")),
        Err(e) => Err(format!("{what}: follow-up read: {e}")),
    }
}

/// One malformed session. Returns a protocol violation, if the server committed one.
fn hostile_session(
    socket: &Path,
    rng: &mut XorShift,
    hung: &mut Vec<String>,
) -> Result<(), String> {
    let kind = rng.below(22);
    let mut raw = Raw::connect(socket).map_err(|e| format!("kind {kind}: cannot connect: {e}"))?;
    let what = format!("kind {kind}");
    let result = run_kind(kind, &mut raw, rng);
    if let End::Hung = raw.finish() {
        hung.push(what.clone());
    }
    result.map_err(|e| format!("{what}: {e}"))
}

fn run_kind(kind: u64, raw: &mut Raw, rng: &mut XorShift) -> Result<(), String> {
    // Failures to send are the server closing on us: allowed for hostile input.
    let send = |raw: &mut Raw, bytes: &[u8]| {
        let _ = raw.send(bytes);
    };
    match kind {
        // Connect and go away at once.
        0 => Ok(()),
        // Garbage before reading the greeting.
        1 => {
            let junk = junk(rng, 1, 300);
            send(raw, &junk);
            Ok(())
        }
        // Unknown client flags.
        2 => {
            raw.greeting()?;
            let flags = rng.next_u32() | (4 << rng.below(29));
            send(raw, &flags.to_be_bytes());
            send(raw, &junk(rng, 0, 64));
            Ok(())
        }
        // Bad option magic.
        3 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let mut frame = rng.next_u64().to_be_bytes().to_vec();
            frame.extend_from_slice(&OPT_GO.to_be_bytes());
            frame.extend_from_slice(&(rng.below(64) as u32).to_be_bytes());
            send(raw, &frame);
            Ok(())
        }
        // Huge option lengths, known and unknown options, a little data, then close.
        4 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let option = [OPT_GO, OPT_INFO, OPT_EXPORT_NAME, OPT_LIST, rng.next_u32()]
                [rng.below(5) as usize];
            let len = [
                u32::MAX,
                0x8000_0000,
                64 << 20,
                (1 << 20) + 1 + rng.below(1 << 24) as u32,
            ][rng.below(4) as usize];
            let mut frame = IHAVEOPT.to_be_bytes().to_vec();
            frame.extend_from_slice(&option.to_be_bytes());
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&junk(rng, 0, 8192));
            send(raw, &frame);
            Ok(())
        }
        // Unknown option: NBD_REP_ERR_UNSUP, and the handshake goes on.
        5 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let option = 12 + rng.below(u32::MAX as u64 - 12) as u32;
            let data = junk(rng, 0, 256);
            raw.option(option, &data).map_err(|e| e.to_string())?;
            let (echo, reply, _) = raw
                .option_reply()
                .map_err(|e| format!("unknown option {option:#x}: {e}"))?;
            if echo != option || reply != REP_ERR_UNSUP {
                return Err(format!(
                    "unknown option {option:#x}: reply {reply:#x} for option {echo:#x}"
                ));
            }
            raw.option(OPT_GO, &go_data(HOSTILE.as_bytes()))
                .map_err(|e| e.to_string())?;
            loop {
                let (_, kind, _) = raw
                    .option_reply()
                    .map_err(|e| format!("GO after unknown option: {e}"))?;
                if kind == REP_ACK {
                    break;
                }
                if kind & 0x8000_0000 != 0 {
                    return Err(format!("GO after unknown option refused: {kind:#x}"));
                }
            }
            expect_working(raw, "after an unknown option")
        }
        // A truncated option frame.
        6 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let mut frame = IHAVEOPT.to_be_bytes().to_vec();
            frame.extend_from_slice(&OPT_GO.to_be_bytes());
            let data = go_data(HOSTILE.as_bytes());
            frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
            frame.extend_from_slice(&data);
            let cut = rng.below(frame.len() as u64) as usize;
            send(raw, &frame[..cut]);
            Ok(())
        }
        // GO on an export that does not exist, with odd names.
        7 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let mut name = b"nope-".to_vec();
            name.extend(junk(rng, 0, 40));
            raw.option(OPT_GO, &go_data(&name))
                .map_err(|e| e.to_string())?;
            loop {
                match raw.option_reply() {
                    Ok((_, REP_ACK, _)) => {
                        return Err(format!("GO on unknown export {name:?} was acknowledged"));
                    }
                    Ok((_, kind, _)) if kind & 0x8000_0000 != 0 => return Ok(()),
                    Ok(_) => continue,
                    Err(e) if is_closed(&e) => return Ok(()),
                    Err(e) => return Err(format!("GO on unknown export: {e}")),
                }
            }
        }
        // GO whose inner lengths disagree with the option length.
        8 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let mut data = Vec::new();
            let claimed = [u32::MAX, 4096, 1 + HOSTILE.len() as u32][rng.below(3) as usize];
            data.extend_from_slice(&claimed.to_be_bytes());
            data.extend_from_slice(HOSTILE.as_bytes());
            data.extend_from_slice(&(rng.below(0x1_0000) as u16).to_be_bytes());
            data.extend(junk(rng, 0, 4));
            raw.option(OPT_GO, &data).map_err(|e| e.to_string())?;
            match raw.option_reply() {
                Ok((_, REP_ACK, _)) => Err("GO with inconsistent lengths was acknowledged".into()),
                _ => Ok(()),
            }
        }
        // NBD_OPT_EXPORT_NAME with junk, then junk.
        9 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let name = junk(rng, 0, 5000);
            let _ = raw.option(OPT_EXPORT_NAME, &name);
            send(raw, &junk(rng, 0, 200));
            Ok(())
        }
        // LIST with a payload (invalid), then ABORT.
        10 => {
            raw.greeting()?;
            send(raw, &3u32.to_be_bytes());
            let _ = raw.option(OPT_LIST, &junk(rng, 1, 64));
            match raw.option_reply() {
                Ok((_, kind, _)) if kind & 0x8000_0000 == 0 => {
                    return Err(format!("LIST with a payload answered {kind:#x}"));
                }
                _ => {}
            }
            let _ = raw.option(OPT_ABORT, &[]);
            Ok(())
        }
        // Transmission: bad request magic.
        11 => {
            raw.open(HOSTILE)?;
            let mut header = request_header(CMD_READ, 0, 1, 0, 4096);
            header[..4].copy_from_slice(&(rng.next_u32() | 1).to_be_bytes());
            send(raw, &header);
            match raw.simple_reply() {
                Ok((0, _)) => Err("request with bad magic was served".into()),
                _ => Ok(()),
            }
        }
        // Huge read lengths.
        12 => {
            let size = raw.open(HOSTILE)?;
            let len = [u32::MAX, (32 << 20) + 1, 64 << 20, 0x8000_0000][rng.below(4) as usize];
            let offset = [0, 4096 * rng.below(size / 4096)][rng.below(2) as usize];
            raw.request(CMD_READ, 0, 7, offset, len)
                .map_err(|e| e.to_string())?;
            if expect_rejected(raw, 7, &format!("read of {len} bytes"))? {
                expect_working(raw, "after a huge read")?;
            }
            Ok(())
        }
        // Huge write lengths with a little payload, then close.
        13 => {
            raw.open(HOSTILE)?;
            let len = [u32::MAX, (32 << 20) + 1, 0x8000_0000][rng.below(3) as usize];
            raw.request(CMD_WRITE, 0, 8, 0, len)
                .map_err(|e| e.to_string())?;
            send(raw, &junk(rng, 0, 16384));
            Ok(())
        }
        // Past-the-end and overflowing offsets.
        14 => {
            let size = raw.open(HOSTILE)?;
            let offset = [
                size,
                size - 512,
                size + 4096 * rng.below(1000),
                u64::MAX - 511,
                u64::MAX,
                1 << 63,
            ][rng.below(6) as usize];
            let mut len = [512u32, 4096, 8192, 1 << 20][rng.below(4) as usize];
            if offset == size - 512 {
                len = len.max(1024);
            }
            let command = [CMD_READ, CMD_TRIM, CMD_WRITE_ZEROES][rng.below(3) as usize];
            raw.request(command, 0, 9, offset, len)
                .map_err(|e| e.to_string())?;
            if expect_rejected(
                raw,
                9,
                &format!("command {command} at {offset:#x}+{len} on a {size}-byte export"),
            )? {
                expect_working(raw, "after a past-the-end request")?;
            }
            Ok(())
        }
        // Misaligned reads inside the export: served or EINVAL, and the stream stays in sync.
        15 => {
            let size = raw.open(HOSTILE)?;
            let offset = 1 + rng.below(size - 8192);
            let len = 1 + rng.below(8191) as u32;
            raw.request(CMD_READ, 0, 10, offset, len)
                .map_err(|e| e.to_string())?;
            match raw.simple_reply() {
                Ok((0, 10)) => {
                    raw.bytes(len as usize)
                        .map_err(|e| format!("misaligned read data: {e}"))?;
                }
                Ok((EINVAL, 10)) => {}
                Ok(other) => return Err(format!("misaligned read {offset}+{len}: {other:?}")),
                Err(e) => return Err(format!("misaligned read {offset}+{len}: {e}")),
            }
            expect_working(raw, "after a misaligned read")
        }
        // Unknown command types.
        16 => {
            raw.open(HOSTILE)?;
            let command = 9 + rng.below(0xFFFF - 9) as u16;
            raw.request(command, 0, 11, 0, 0)
                .map_err(|e| e.to_string())?;
            match raw.simple_reply() {
                Ok((EINVAL, 11)) => expect_working(raw, "after an unknown command"),
                Ok(other) => Err(format!("unknown command {command}: {other:?}")),
                Err(e) if is_closed(&e) => Ok(()),
                Err(e) => Err(format!("unknown command {command}: {e}")),
            }
        }
        // Unknown flags on a read.
        17 => {
            raw.open(HOSTILE)?;
            let flags = (rng.next_u32() as u16) | (0x40 << rng.below(10));
            raw.request(CMD_READ, flags, 12, 0, 4096)
                .map_err(|e| e.to_string())?;
            match raw.simple_reply() {
                Ok((0, 12)) => {
                    raw.bytes(4096).map_err(|e| format!("read data: {e}"))?;
                }
                Ok((EINVAL, 12)) => {}
                Ok(other) => return Err(format!("read with flags {flags:#x}: {other:?}")),
                Err(e) if is_closed(&e) => return Ok(()),
                Err(e) => return Err(format!("read with flags {flags:#x}: {e}")),
            }
            expect_working(raw, "after unknown flags")
        }
        // Random garbage after a valid handshake.
        18 => {
            raw.open(HOSTILE)?;
            send(raw, &junk(rng, 1, 8192));
            Ok(())
        }
        // Pipelined valid reads, then a truncated request.
        19 => {
            raw.open(HOSTILE)?;
            let count = 1 + rng.below(8);
            for cookie in 0..count {
                raw.request(CMD_READ, 0, cookie, cookie * 4096, 4096)
                    .map_err(|e| e.to_string())?;
            }
            let header = request_header(CMD_WRITE, 0, 99, 0, 4096);
            send(raw, &header[..rng.below(28) as usize]);
            for _ in 0..count {
                match raw.simple_reply() {
                    Ok((0, _)) => {
                        raw.bytes(4096)
                            .map_err(|e| format!("pipelined read data: {e}"))?;
                    }
                    Ok(other) => return Err(format!("pipelined read: {other:?}")),
                    Err(e) => return Err(format!("pipelined read: {e}")),
                }
            }
            Ok(())
        }
        // On the healthy export: requests that must change nothing.
        20 => {
            let size = raw.open(HEALTHY)?;
            let len = 4096 * (1 + rng.below(4)) as u32;
            raw.request(CMD_WRITE, 0, 13, size - 2048 + 4096 * rng.below(4), len)
                .map_err(|e| e.to_string())?;
            send(raw, &rng.bytes(len as usize));
            if expect_rejected(raw, 13, "write past the end of the healthy export")? {
                let mut header = request_header(CMD_WRITE, 0, 14, 0, 4096);
                header[3] ^= 0x10;
                send(raw, &header);
                send(raw, &[0xEE; 4096]);
            }
            Ok(())
        }
        // A write whose payload is cut short.
        _ => {
            raw.open(HOSTILE)?;
            let len = 4096 * (1 + rng.below(16)) as u32;
            raw.request(CMD_WRITE, 0, 15, 4096 * rng.below(256), len)
                .map_err(|e| e.to_string())?;
            send(raw, &junk(rng, 0, len as u64));
            Ok(())
        }
    }
}

/// Writes and verifies random ranges of the healthy volume's first 4 MiB until told to stop.
fn healthy_client(socket: &Path, stop: &AtomicBool, rounds: &AtomicU64) -> Vec<u8> {
    let mut client = NbdClient::connect(socket, HEALTHY).expect("healthy client connects");
    let mut rng = XorShift::new(0x600D);
    let mut model = vec![0u8; HEALTHY_REGION as usize];
    while !stop.load(Ordering::Relaxed) {
        let len = 4096 * (1 + rng.below(16)) as usize;
        let offset = 4096 * rng.below((HEALTHY_REGION - len as u64) / 4096 + 1) as usize;
        let data = rng.bytes(len);
        client
            .write(offset as u64, &data, 0)
            .expect("healthy write");
        model[offset..offset + len].copy_from_slice(&data);
        let check_len = 4096 * (1 + rng.below(64)) as usize;
        let check = 4096 * rng.below((HEALTHY_REGION - check_len as u64) / 4096 + 1) as usize;
        let mut back = vec![0u8; check_len];
        client.read(check as u64, &mut back).expect("healthy read");
        assert!(
            back[..] == model[check..check + check_len],
            "healthy region differs at {check}+{check_len} after {} rounds",
            rounds.load(Ordering::Relaxed)
        );
        rounds.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    client.flush().expect("healthy flush");
    client.disconnect();
    model
}

#[test]
fn a_thousand_malformed_sessions_harm_nothing() {
    let started = Instant::now();
    let node = TestNode::start();
    node.cli_ok(&["pool", "create", "P", "--size", "200M"]);
    node.cli_ok(&["vol", "create", HOSTILE, "--pool", "P", "--size", "16M"]);
    node.cli_ok(&["vol", "create", HEALTHY, "--pool", "P", "--size", "16M"]);

    let seed = std::env::var("TROIKA_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("TROIKA_HOSTILE_SEED={seed}");

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let healthy = {
        let socket = node.nbd_socket();
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
        std::thread::spawn(move || healthy_client(&socket, &stop, &rounds))
    };

    let mut rng = XorShift::new(seed);
    let mut violations = Vec::new();
    let mut hung = Vec::new();
    let socket = node.nbd_socket();
    let deadline = started + Duration::from_secs(50);
    let mut sessions = 0;
    while sessions < SESSIONS && Instant::now() < deadline {
        if let Err(violation) = hostile_session(&socket, &mut rng, &mut hung) {
            violations.push(format!("session {sessions}: {violation}"));
        }
        sessions += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let model = healthy.join().expect("the healthy client failed");

    assert!(
        testdata::node_alive(node.data()),
        "the node died:\n{}",
        node.log_text()
    );
    assert!(
        sessions >= 1000,
        "only {sessions} sessions in the time bound"
    );
    assert!(
        rounds.load(Ordering::Relaxed) >= 20,
        "the healthy client made only {rounds:?} rounds"
    );

    let mut fresh =
        NbdClient::connect(&node.nbd_socket(), HEALTHY).expect("a fresh client connects");
    let mut back = vec![0u8; HEALTHY_REGION as usize];
    fresh.read(0, &mut back).expect("read the healthy region");
    assert!(
        back == model,
        "the healthy region changed under hostile sessions"
    );
    fresh.disconnect();
    let mut fresh = NbdClient::connect(&node.nbd_socket(), HOSTILE)
        .expect("a fresh client on the hostile export");
    fresh.write(0, &[0x42; 4096], 0).expect("write");
    let mut block = vec![0u8; 4096];
    fresh.read(0, &mut block).expect("read");
    assert!(block.iter().all(|&b| b == 0x42));
    fresh.disconnect();
    node.metrics();

    assert!(
        violations.is_empty(),
        "seed {seed}: {} protocol violations in {sessions} sessions, first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(15)]
    );
    assert!(
        hung.is_empty(),
        "seed {seed}: the server kept {} connections open {TIMEOUT:?} after the client half-closed: {:?}",
        hung.len(),
        &hung[..hung.len().min(15)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn exact_errnos_on_a_valid_connection() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "16M");
    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let size = client.size;
    assert_eq!(size, 16 * MIB);
    let block = [0x77u8; 4096];
    client.write(0, &block, 0).expect("write");

    let cases: [(&str, u16, u64, u32, usize, u32); 8] = [
        ("read past the end", CMD_READ, size, 4096, 0, EINVAL),
        (
            "read across the end",
            CMD_READ,
            size - 4096,
            8192,
            0,
            EINVAL,
        ),
        (
            "read at u64::MAX",
            CMD_READ,
            u64::MAX - 4095,
            4096,
            0,
            EINVAL,
        ),
        ("write past the end", CMD_WRITE, size, 4096, 4096, ENOSPC),
        (
            "write across the end",
            CMD_WRITE,
            size - 4096,
            8192,
            8192,
            ENOSPC,
        ),
        (
            "write zeroes past the end",
            CMD_WRITE_ZEROES,
            size,
            4096,
            0,
            ENOSPC,
        ),
        ("unknown command", 0x99, 0, 0, 0, EINVAL),
        ("unknown command 0xFFFF", 0xFFFF, 0, 0, 0, EINVAL),
    ];
    for (what, command, offset, len, payload, errno) in cases {
        let got = client
            .raw(command, 0, offset, len, &vec![0xEE; payload])
            .expect(what);
        assert_eq!(got, errno, "{what}: errno {got}, expected {errno}");
        // The connection is still in sync and the data untouched.
        let mut back = [0u8; 4096];
        client
            .read(0, &mut back)
            .unwrap_or_else(|e| panic!("read after {what}: {e}"));
        assert_eq!(back, block, "after {what}");
        client
            .read(size - 4096, &mut back)
            .unwrap_or_else(|e| panic!("read the last block after {what}: {e}"));
        assert_eq!(back, [0u8; 4096], "the last block changed after {what}");
    }
    client.disconnect();
    assert!(testdata::node_alive(node.data()));
}
