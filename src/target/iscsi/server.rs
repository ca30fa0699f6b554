//! The accept loop of one portal and the life of each connection: login, then full
//! feature phase, then cleanup (nexus lost, session table).
//!
//! The listener is non-blocking and polled, so a set shutdown flag is noticed within
//! [`ACCEPT_POLL`]; connection threads notice it through their socket timeouts, send a
//! target-initiated logout (async message) when they can, and close. Logins that do not
//! finish within [`LOGIN_TIMEOUT`] are dropped; at most [`MAX_CONNECTIONS`] connections are
//! served at once.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::IscsiConfig;
use super::connection;
use super::login;
use super::session::{CommandSink, Directory, SessionControl, SessionTable};
use super::wire::{self, PduReader};
use crate::target::scsi::Nexus;

const ACCEPT_POLL: Duration = Duration::from_millis(50);
pub const MAX_CONNECTIONS: usize = 1024;
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the accept loop of one portal.
pub fn spawn(
    listener: TcpListener,
    tpgt: u16,
    dir: Arc<dyn Directory>,
    config: IscsiConfig,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("iscsi-accept".to_owned())
        .spawn(move || accept_loop(listener, tpgt, dir, Arc::new(config), shutdown))
        .expect("cannot start the iSCSI accept thread")
}

fn accept_loop(
    listener: TcpListener,
    tpgt: u16,
    dir: Arc<dyn Directory>,
    config: Arc<IscsiConfig>,
    shutdown: Arc<AtomicBool>,
) {
    if let Err(err) = listener.set_nonblocking(true) {
        crate::say!("iscsi: cannot make the listener non-blocking: {err}");
        return;
    }
    let sessions = Arc::new(SessionTable::default());
    // Set once the listener is closed: connections of a closing portal drop only then, so
    // an initiator that reconnects at once is refused instead of being accepted into the
    // backlog of a listener about to close (and reset in the middle of its login).
    let closed = Arc::new(AtomicBool::new(false));
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shutdown.load(Ordering::Acquire) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                crate::poll::wait_readable(listener.as_raw_fd(), ACCEPT_POLL);
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        connections.retain(|handle| !handle.is_finished());
        if connections.len() >= MAX_CONNECTIONS {
            wire::shutdown(&stream);
            continue;
        }
        let dir = Arc::clone(&dir);
        let config = Arc::clone(&config);
        let shutdown = Arc::clone(&shutdown);
        let sessions = Arc::clone(&sessions);
        let closed = Arc::clone(&closed);
        let spawned = std::thread::Builder::new()
            .name("iscsi-conn".to_owned())
            .spawn(move || {
                // Last guard: a bug must cost this connection only.
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    serve_connection(&stream, tpgt, &*dir, &config, &shutdown, &sessions)
                }));
                if shutdown.load(Ordering::Acquire) {
                    wait_closed(&closed);
                }
                wire::shutdown(&stream);
            });
        if let Ok(handle) = spawned {
            connections.push(handle);
        }
    }
    drop(listener);
    closed.store(true, Ordering::Release);
    for handle in connections {
        let _ = handle.join();
    }
}

/// Waits (bounded) until the accept loop has closed the listener.
fn wait_closed(closed: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !closed.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn isid_hex(isid: &[u8; 6]) -> String {
    isid.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve_connection(
    stream: &TcpStream,
    tpgt: u16,
    dir: &dyn Directory,
    config: &IscsiConfig,
    shutdown: &AtomicBool,
    sessions: &SessionTable,
) {
    if wire::configure(stream).is_err() {
        return;
    }
    let (Ok(read_half), Ok(control_half)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    let mut reader = PduReader::new(read_half);
    reader.deadline = Some(Instant::now() + LOGIN_TIMEOUT);
    let control = SessionControl::new(control_half);
    let logged = {
        let flags = [shutdown, &control.stop];
        let mut tsih = || sessions.allocate_tsih();
        login::run(&mut reader, stream, dir, config, tpgt, &flags, &mut tsih)
    };
    let Some(logged) = logged else {
        control.mark_done();
        return;
    };
    reader.deadline = None;
    let nexus = Nexus {
        initiator_port: format!("{},i,0x{}", logged.initiator, isid_hex(&logged.isid)),
        initiator_name: logged.initiator.clone(),
        relative_port: tpgt,
    };
    let sink: Option<Box<dyn CommandSink>> = if logged.discovery {
        None
    } else {
        sessions.register(&logged.initiator, logged.isid, Arc::clone(&control));
        Some(dir.open_session(&logged.initiator, tpgt))
    };
    let stop = AtomicBool::new(false);
    let flags = [shutdown, &control.stop];
    connection::serve(
        stream,
        &mut reader,
        logged.params,
        logged.statsn,
        logged.exp_cmdsn,
        nexus.clone(),
        sink.as_deref(),
        dir,
        config,
        &flags,
        &stop,
    );
    if let Some(sink) = &sink {
        sink.nexus_lost(&nexus);
        sessions.remove(&logged.initiator, logged.isid, &control);
    }
    if !logged.discovery {
        crate::say!(
            "iscsi: session {} (tsih {}) of {} closed",
            nexus.initiator_port,
            logged.tsih,
            logged.initiator
        );
    }
    control.mark_done();
}
