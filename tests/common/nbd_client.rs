//! A small blocking NBD client for tests: fixed newstyle handshake with `NBD_OPT_GO`,
//! simple replies, one request at a time. Independent of the server's code on purpose.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const FLAG_FUA: u16 = 1;

/// The connection: the node's unix socket or one of its controllers' TCP ports.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// A connected client on one export.
pub struct NbdClient {
    stream: Conn,
    pub size: u64,
    pub flags: u16,
    cookie: u64,
}

fn read_u16(stream: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    stream.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
fn read_u32(stream: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    stream.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn read_u64(stream: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    stream.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

impl NbdClient {
    /// Connects to `socket` and opens `export`.
    pub fn connect(socket: &Path, export: &str) -> io::Result<NbdClient> {
        Self::handshake(Conn::Unix(UnixStream::connect(socket)?), export)
    }

    /// Connects to a TCP port on the loopback interface and opens `export`. Every read and
    /// write on the connection gives up after `timeout` (a hung server is an error, not a
    /// hung test).
    pub fn connect_tcp(port: u16, export: &str, timeout: Duration) -> io::Result<NbdClient> {
        let stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Self::handshake(Conn::Tcp(stream), export)
    }

    fn handshake(mut stream: Conn, export: &str) -> io::Result<NbdClient> {
        if read_u64(&mut stream)? != NBDMAGIC || read_u64(&mut stream)? != IHAVEOPT {
            return Err(io::Error::other("bad server greeting"));
        }
        let _server_flags = read_u16(&mut stream)?;
        stream.write_all(&3u32.to_be_bytes())?; // FIXED_NEWSTYLE | NO_ZEROES
        let mut option = Vec::new();
        option.extend_from_slice(&IHAVEOPT.to_be_bytes());
        option.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
        let data_len = 4 + export.len() + 2;
        option.extend_from_slice(&(data_len as u32).to_be_bytes());
        option.extend_from_slice(&(export.len() as u32).to_be_bytes());
        option.extend_from_slice(export.as_bytes());
        option.extend_from_slice(&0u16.to_be_bytes());
        stream.write_all(&option)?;
        let (mut size, mut flags) = (0, 0);
        loop {
            if read_u64(&mut stream)? != OPT_REPLY_MAGIC {
                return Err(io::Error::other("bad option reply magic"));
            }
            let _option = read_u32(&mut stream)?;
            let reply = read_u32(&mut stream)?;
            let len = read_u32(&mut stream)? as usize;
            let mut data = vec![0; len];
            stream.read_exact(&mut data)?;
            match reply {
                1 => break, // ACK
                3
                    // NBD_REP_INFO
                    if data.len() >= 12 && u16::from_be_bytes([data[0], data[1]]) == 0 => {
                        size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                        flags = u16::from_be_bytes([data[10], data[11]]);
                    }
                r if r & 0x8000_0000 != 0 => {
                    return Err(io::Error::other(format!("export {export:?} refused: reply {r:#x} {}", String::from_utf8_lossy(&data))));
                }
                _ => {}
            }
        }
        Ok(NbdClient {
            stream,
            size,
            flags,
            cookie: 0,
        })
    }

    fn request(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> io::Result<u32> {
        self.cookie += 1;
        let mut header = [0u8; 28];
        header[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        header[4..6].copy_from_slice(&flags.to_be_bytes());
        header[6..8].copy_from_slice(&command.to_be_bytes());
        header[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        header[16..24].copy_from_slice(&offset.to_be_bytes());
        header[24..28].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&header)?;
        self.stream.write_all(payload)?;
        Ok(0)
    }

    fn reply(&mut self) -> io::Result<u32> {
        if read_u32(&mut self.stream)? != SIMPLE_REPLY_MAGIC {
            return Err(io::Error::other("bad reply magic"));
        }
        let error = read_u32(&mut self.stream)?;
        let cookie = read_u64(&mut self.stream)?;
        if cookie != self.cookie {
            return Err(io::Error::other("reply cookie does not match"));
        }
        Ok(error)
    }

    fn check(error: u32) -> io::Result<()> {
        if error == 0 {
            Ok(())
        } else {
            // Keep the raw errno so tests can check it.
            Err(io::Error::from_raw_os_error(error as i32))
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8], flags: u16) -> io::Result<()> {
        self.request(CMD_WRITE, flags, offset, data.len() as u32, data)?;
        let error = self.reply()?;
        Self::check(error)
    }

    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.request(CMD_READ, 0, offset, buf.len() as u32, &[])?;
        let error = self.reply()?;
        Self::check(error)?;
        self.stream.read_exact(buf)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.request(CMD_FLUSH, 0, 0, 0, &[])?;
        let error = self.reply()?;
        Self::check(error)
    }

    pub fn trim(&mut self, offset: u64, len: u32) -> io::Result<()> {
        self.request(CMD_TRIM, 0, offset, len, &[])?;
        let error = self.reply()?;
        Self::check(error)
    }

    /// Sends a command and returns the raw errno of its reply (for error-path tests).
    pub fn raw(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> io::Result<u32> {
        self.request(command, flags, offset, len, payload)?;
        self.reply()
    }

    pub fn disconnect(mut self) {
        let _ = self.request(CMD_DISC, 0, 0, 0, &[]);
    }
}
