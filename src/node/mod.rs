//! The node: one process that owns a data directory, serves it until a signal, and stops
//! cleanly. Also the `Management` implementation the REST server calls.
//!
//! What it promises:
//!
//! - **One node per data directory.** Start-up takes an exclusive, non-blocking `flock` on
//!   `DATA/troika.lock` (and writes its pid there) before it opens anything else; a second
//!   node on the same directory is refused with the holder's pid. The lock lasts as long
//!   as the process (the kernel drops it on any exit).
//! - **Start-up, in this order** ([`Node::start`], its steps in `start`): make the data
//!   directory private ([`data_dir::prepare`]: created 0700, or group and other bits
//!   cleared throughout); take the lock; load the node key (`node.key`, made at the first
//!   start); load the TLS certificate (self-signed at the first start, see [`certs`]);
//!   check io_uring; open the vault SSD and the NL-SAS drives with their fault rules and
//!   lay out the array; open the event log and make it where a durability failure writes;
//!   open (format or recover) the metadata and raise `SYSTEM_STARTED` or, after a crash,
//!   `SYSTEM_RECOVERED`; open the user store (making `admin` and `DATA/admin-password` at
//!   the first start); start the cache and the controllers; serve NBD (`DATA/nbd.sock` and
//!   the TCP ports); open the iSCSI portals; start the snapshot policies; serve the
//!   management API (`DATA/troika.sock`, 0600, and the TCP port, HTTPS unless `--mgmt-tls
//!   off`); start the heal, the scrub (see [`scrub`]) and the monitor. Nothing is served
//!   before the metadata is recovered.
//! - **What start-up refuses**, each with a message that says what to do: a data directory
//!   it cannot create or make private; a directory another node holds; a kernel without
//!   usable io_uring; a device it cannot open; an array of fewer than 16 segments; a
//!   missing or wrong node key for metadata sealed under one (a key made by this very
//!   start is removed again); a half-installed certificate, or one that does not match its
//!   key; more iSCSI addresses than controllers; a port or socket it cannot listen on.
//! - **Exit status 2 after a durability failure.** When metadata or data cannot be made
//!   durable, [`crate::fatal::durability_failure`] writes one message and a final event
//!   and ends the process with status 2, without the clean stop (see `fatal`); a restart
//!   recovers from media.
//! - **The clean stop, in this order** ([`Node::run_until_signal`], see [`stop`]): every
//!   SIGINT, SIGTERM or SIGHUP leads to it, never to an abort. Close the ports (NBD and
//!   iSCSI stop accepting, the services see the shutdown flag); end the services (join
//!   the NBD server, the management servers, the policy runner and the monitor); vault
//!   every acknowledged write (flush); destage the cache and write the final checkpoint;
//!   remove the sockets; raise `SYSTEM_SHUTDOWN` and sync the event log; release the lock.
//!   Nothing written to the terminal can end the node (every message goes through
//!   [`say!`](crate::say)).

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

mod api;
pub mod certs;
pub mod data_dir;
mod drives;
mod heal;
mod host_admin;
pub mod iscsi;
mod monitor;
pub mod nbd_access;
pub mod nbd_tls;
mod policies;
pub mod scrub;
#[cfg(test)]
mod snapshot_tests;
mod snapshots;
mod ssd_cache;
mod start;
pub mod stop;

use crate::clock::now_ms;
use api::NodeApi;
pub use nbd_tls::NbdTlsOptions;
use ssd_cache::{attach_ssd_cache, open_ssd_cache, open_ssds};
use start::{
    MgmtParts, Services, lock_data_dir, node_certificate, open_devices, open_event_log,
    open_iscsi_portals, open_metadata, start_controllers, start_mgmt,
};
use stop::{StopPhase, StopProgress, StopSignals};

use crate::cache::Cache;
use crate::controller::Controllers;
use crate::hw::HwModel;
use crate::io::{self, FaultPlane};
use crate::mgmt::events::EventLog;
use crate::mgmt::users::UserStore;
use crate::secrets::NodeKey;
use crate::target::nbd::NbdAccessConfig;

/// Where the node listens.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    /// NBD TCP addresses, one per controller in order (controller 1 first); the unix
    /// socket is controller 1's.
    pub nbd_tcp: Vec<SocketAddr>,
    /// The REST API's TCP address (authenticated); `None` serves only the unix socket.
    pub mgmt_tcp: Option<SocketAddr>,
    /// Whether `mgmt_tcp` speaks HTTPS (the default) or plain HTTP (`--mgmt-tls off`,
    /// for tests only).
    pub mgmt_tls: bool,
    /// How long a user name or client address stays locked out after repeated failed
    /// logins (see [`crate::mgmt::login_limit`]).
    pub login_lockout: Duration,
    /// iSCSI portals, one per controller in order (controller 1 first); empty for none.
    pub iscsi_tcp: Vec<SocketAddr>,
    /// TLS on the NBD listeners.
    pub nbd_tls: NbdTlsOptions,
    /// Who may use NBD: `--nbd-open` and the unix socket's extra uids.
    pub nbd_access: NbdAccessConfig,
    /// `--nbd-socket-group`: the NBD socket is mode 0660 owned by this group (else 0600).
    pub nbd_socket_group: Option<u32>,
}

/// A running node.
pub struct Node {
    cache: Arc<Cache>,
    controllers: Arc<Controllers>,
    events: Arc<EventLog>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
    _lock: File,
}

impl Node {
    /// Opens and recovers the node and starts serving, in the order the module doc gives.
    pub fn start(hw: HwModel, options: &NodeOptions) -> anyhow::Result<Node> {
        let data_dir = &options.data_dir;
        data_dir::prepare(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let (key, key_created) = NodeKey::load_or_create(data_dir)?;
        let key = Arc::new(key);
        let certificate = node_certificate(data_dir)?;
        io::probe().map_err(anyhow::Error::msg)?;

        let faults = Arc::new(FaultPlane::new());
        let (ssd, cache_region) = open_ssds(&hw, data_dir, &faults)?;
        let array = open_devices(&hw, data_dir, &faults)?;
        let events = open_event_log(data_dir)?;
        heal::report_drive_events(&array, events.clone());
        let (meta, recovered) = open_metadata(ssd, array, key, data_dir, key_created, &events)?;
        let (users, admin_password) = UserStore::open(data_dir)
            .with_context(|| format!("cannot open the user store in {}", data_dir.display()))?;
        // The password goes to the 0600 file only: terminals and logs are read by others.
        if admin_password.is_some() {
            crate::say!(
                "troika: created the user \"admin\"; its password is in {} (mode 0600): read it from there, and change it",
                data_dir.join("admin-password").display()
            );
        }
        let meta = Arc::new(meta);
        let ssd = cache_region.and_then(|region| open_ssd_cache(&hw, region, &meta, &events));
        let (cache, controllers) = start_controllers(&hw, &meta, recovered, &events);
        attach_ssd_cache(&hw, ssd, &cache);
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut services = Services::default();

        let (nbd_socket, nbd_thread) =
            nbd_access::start_nbd(options, &controllers, &meta, &events, &shutdown)?;
        services.sockets.push(nbd_socket);
        services.threads.push(nbd_thread);
        open_iscsi_portals(options, &meta, &controllers)?;

        let scrubber = scrub::Scrubber::open(meta.clone(), hw.scrub, data_dir, events.clone());
        let api = Arc::new(NodeApi {
            hw,
            scrub: scrubber.clone(),
            meta: meta.clone(),
            cache: cache.clone(),
            controllers: controllers.clone(),
            faults,
            started_at: now_ms(),
        });
        services.threads.push(policies::spawn(
            api.clone(),
            events.clone(),
            shutdown.clone(),
        ));
        let mgmt_parts = MgmtParts {
            api,
            users,
            events: &events,
            certificate: &certificate,
        };
        start_mgmt(options, mgmt_parts, &shutdown, &mut services)?;
        services
            .threads
            .push(heal::spawn(meta.clone(), shutdown.clone()));
        services
            .threads
            .push(scrub::spawn(scrubber, shutdown.clone()));
        services
            .threads
            .push(monitor::spawn(meta, events.clone(), shutdown.clone()));
        Ok(Node {
            cache,
            controllers,
            events,
            shutdown,
            threads: services.threads,
            sockets: services.sockets,
            _lock: lock,
        })
    }

    /// The node's serial number (names its iSCSI target and datasets).
    pub fn serial(&self) -> u64 {
        self.cache.meta().serial()
    }

    /// Serves until `signals` ask for the stop (see [`stop`]), then stops cleanly.
    pub fn run_until_signal(self, signals: &StopSignals) -> anyhow::Result<()> {
        let progress = signals.progress();
        progress.serving(self.cache.clone());
        // A durability failure does not come back here: it ends the process itself
        // (`fatal::durability_failure`, exit status 2).
        while !progress.requested() {
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::say!(
            "troika: shutting down: closing ports, destaging cached data, writing a checkpoint"
        );
        self.stop(progress)
    }

    /// Closes the ports, destages everything and checkpoints, moving `progress` through
    /// the stop's phases so that a signal meanwhile can say where it is.
    fn stop(self, progress: &StopProgress) -> anyhow::Result<()> {
        progress.advance(StopPhase::ClosingPorts);
        self.shutdown.store(true, Ordering::Release);
        self.controllers.close_ports();
        progress.advance(StopPhase::EndingServices);
        for thread in self.threads {
            let _ = thread.join();
        }
        progress.advance(StopPhase::Vaulting);
        self.cache
            .flush()
            .map_err(|err| anyhow::anyhow!("final flush failed: {err}"))?;
        progress.advance(StopPhase::Destaging);
        self.cache
            .shutdown()
            .map_err(|err| anyhow::anyhow!("shutdown failed: {err}"))?;
        if let Some(ssd) = self.cache.ssd() {
            ssd.shutdown();
        }
        progress.advance(StopPhase::Recording);
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
        let lost = crate::console::lost_messages();
        let description = if lost == 0 {
            "the node stopped cleanly".to_owned()
        } else {
            format!(
                "the node stopped cleanly; {lost} operator messages could not be written \
                 (closed terminal or pipe, or a full disk)"
            )
        };
        self.events
            .raise("SYSTEM_SHUTDOWN", description, None, None);
        self.events.sync();
        progress.advance(StopPhase::Stopped);
        crate::say!("troika: stopped cleanly");
        Ok(())
    }
}

/// The node's management calls (the real `NodeApi`) over a small store in `dir`
/// (`crate::testing::open_small_store`) with one controller and 4 MiB of cache, for tests
/// of the layers above the node that want its real rules rather than a model of them.
#[cfg(test)]
pub(crate) fn small_node_api(dir: &std::path::Path) -> Arc<NodeApi> {
    let (meta, recovered) = crate::testing::open_small_store(dir);
    let meta = Arc::new(meta);
    let routing = Arc::new(crate::controller::routing::Routing::new(1));
    let cache = Cache::start(meta.clone(), 1, 4 << 20, recovered, routing.clone());
    let controllers = Controllers::new(cache.clone(), routing, 1);
    Arc::new(NodeApi {
        hw: HwModel::embedded_default(),
        scrub: scrub::test_scrubber(&meta, dir),
        meta,
        cache,
        controllers,
        faults: Default::default(),
        started_at: 0,
    })
}
