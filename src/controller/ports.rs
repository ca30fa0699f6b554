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
use crate::types::{ControllerId, PerController};

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
pub struct Ports {
    ports: Mutex<PerController<Port>>,
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// What every port is opened (and reopened) with: access rules, TLS policy, tuning.
    config: Mutex<NbdConfig>,
}

impl Ports {
    pub fn new(count: usize) -> Ports {
        Ports {
            ports: Mutex::new(PerController::new(count, |_| Port::default())),
            retired: Mutex::new(Vec::new()),
            config: Mutex::new(NbdConfig::default()),
        }
    }

    /// The configuration ports opened from now on use (access rules, TLS, tuning).
    pub fn set_config(&self, config: NbdConfig) {
        *self.config.lock() = config;
    }

    /// The address controller `id` serves on, if it has one.
    pub fn address(&self, id: ControllerId) -> Option<SocketAddr> {
        self.ports.lock().get(id).and_then(|port| port.address)
    }

    /// The URI scheme clients use on the ports: `nbds` when TLS is required there.
    pub fn scheme(&self) -> &'static str {
        match self.config.lock().tls.mode {
            NbdTlsMode::Require => "nbds",
            NbdTlsMode::On | NbdTlsMode::Off => "nbd",
        }
    }

    /// Listens on `address` for controller `id` (the address remembered for reopening).
    pub fn open(
        &self,
        id: ControllerId,
        address: SocketAddr,
        provider: Arc<dyn ExportProvider>,
    ) -> std::io::Result<()> {
        let mut ports = self.ports.lock();
        let port = &mut ports[id];
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

    /// Reopens controller `id`'s port at its remembered address.
    pub fn reopen(
        &self,
        id: ControllerId,
        provider: Arc<dyn ExportProvider>,
    ) -> std::io::Result<()> {
        match self.address(id) {
            Some(address) => self.open(id, address, provider),
            None => Ok(()),
        }
    }

    /// Stops controller `id`'s port: no new connections, and open ones close within
    /// about 100 ms. Does not wait for them.
    pub fn close(&self, id: ControllerId) {
        let mut ports = self.ports.lock();
        let port = &mut ports[id];
        if let Some(shutdown) = port.shutdown.take() {
            shutdown.store(true, Ordering::Release);
        }
        if let Some(thread) = port.thread.take() {
            self.retired.lock().push(thread);
        }
    }

    /// Closes every port and waits for their threads.
    pub fn close_all(&self) {
        let ids = self.ports.lock().ids();
        for id in ids {
            self.close(id);
        }
        let threads = std::mem::take(&mut *self.retired.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}
