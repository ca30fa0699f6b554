//! Each controller's NBD TCP port: opened when the controller starts or comes back, closed
//! (listener dropped, connections told to stop) when it fails.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::target::ExportProvider;
use crate::target::nbd::{self, NbdConfig, NbdListener, NbdTlsMode};

/// Listens on `address`, retrying for up to 2 s while it is in use: a port closed a moment
/// ago may still be held by its listener thread.
pub fn bind_retrying(address: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(err) if attempts < 40 && err.kind() == std::io::ErrorKind::AddrInUse => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => return Err(err),
        }
    }
}

/// One controller's port.
#[derive(Default)]
struct Port {
    address: Option<SocketAddr>,
    shutdown: Option<Arc<AtomicBool>>,
    thread: Option<JoinHandle<()>>,
}

/// Every controller's port, and the server threads of closed ones still finishing.
#[derive(Default)]
pub struct Ports {
    ports: Mutex<Vec<Port>>,
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// What every port is opened (and reopened) with: access rules, TLS policy, tuning.
    config: Mutex<NbdConfig>,
}

impl Ports {
    pub fn new(count: usize) -> Ports {
        Ports {
            ports: Mutex::new((0..count).map(|_| Port::default()).collect()),
            retired: Mutex::new(Vec::new()),
            config: Mutex::new(NbdConfig::default()),
        }
    }

    /// The configuration ports opened from now on use (access rules, TLS, tuning).
    pub fn set_config(&self, config: NbdConfig) {
        *self.config.lock() = config;
    }

    /// The address controller `index` serves on, if it has one.
    pub fn address(&self, index: usize) -> Option<SocketAddr> {
        self.ports.lock().get(index).and_then(|port| port.address)
    }

    /// The URI scheme clients use on the ports: `nbds` when TLS is required there.
    pub fn scheme(&self) -> &'static str {
        match self.config.lock().tls.mode {
            NbdTlsMode::Require => "nbds",
            NbdTlsMode::On | NbdTlsMode::Off => "nbd",
        }
    }

    /// Listens on `address` for controller `index` (the address remembered for
    /// reopening).
    pub fn open(
        &self,
        index: usize,
        address: SocketAddr,
        provider: Arc<dyn ExportProvider>,
    ) -> std::io::Result<()> {
        let mut ports = self.ports.lock();
        let port = &mut ports[index];
        if port.thread.is_some() {
            return Ok(());
        }
        let listener = bind_retrying(address)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        port.thread = Some(nbd::spawn_server(
            NbdListener::Tcp(listener),
            provider,
            self.config.lock().clone(),
            shutdown.clone(),
        ));
        port.address = Some(address);
        port.shutdown = Some(shutdown);
        Ok(())
    }

    /// Reopens controller `index`'s port at its remembered address.
    pub fn reopen(&self, index: usize, provider: Arc<dyn ExportProvider>) -> std::io::Result<()> {
        match self.address(index) {
            Some(address) => self.open(index, address, provider),
            None => Ok(()),
        }
    }

    /// Stops controller `index`'s port: no new connections, and open ones close within
    /// about 100 ms. Does not wait for them.
    pub fn close(&self, index: usize) {
        let mut ports = self.ports.lock();
        let port = &mut ports[index];
        if let Some(shutdown) = port.shutdown.take() {
            shutdown.store(true, Ordering::Release);
        }
        if let Some(thread) = port.thread.take() {
            self.retired.lock().push(thread);
        }
    }

    /// Closes every port and waits for their threads.
    pub fn close_all(&self) {
        let count = self.ports.lock().len();
        for index in 0..count {
            self.close(index);
        }
        let threads = std::mem::take(&mut *self.retired.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}
