//! The node: opens the devices the hardware model names, recovers the metadata, starts the
//! cache, the controllers and the ports, serves until SIGINT/SIGTERM, and shuts down
//! cleanly (destage, checkpoint, close). Also the `Management` implementation the REST
//! server calls.
//!
//! What it promises about stopping (see `stop`): every SIGINT or SIGTERM leads to the
//! clean stop, never to an abort, and nothing written to the terminal can end the node
//! (every message goes through [`say!`](crate::say)).

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};

mod api;
pub mod certs;
pub mod data_dir;
mod host_admin;
pub mod iscsi;
mod monitor;
pub mod nbd_access;
pub mod nbd_tls;
mod policies;
#[cfg(test)]
mod snapshot_tests;
mod snapshots;
pub mod stop;

use crate::clock::now_ms;
use api::NodeApi;
pub use nbd_tls::NbdTlsOptions;
use stop::{StopPhase, StopProgress, StopSignals};

use crate::cache::Cache;
use crate::controller::Controllers;
use crate::controller::routing::Routing;
use crate::hw::DeviceSpec;
use crate::hw::HwModel;
use crate::io::{self, Device, FaultPlane};
use crate::layout::Array;
use crate::meta::{MetaError, MetaStore};
use crate::mgmt;
use crate::mgmt::events::EventLog;
use crate::mgmt::login_limit::LoginLimiter;
use crate::mgmt::rest::Mgmt;
use crate::mgmt::server::MgmtListener;
use crate::mgmt::users::UserStore;
use crate::private_files;
use crate::secrets::{KEY_FILE, NodeKey};
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

/// Loads the node's certificate (NBD over x509 and HTTPS serve it), making a self-signed
/// one at the first start, and prints its fingerprint.
fn node_certificate(data_dir: &Path) -> anyhow::Result<certs::NodeCertificate> {
    let certificate = certs::NodeCertificate::load_or_create(data_dir)?;
    crate::say!(
        "troika: TLS certificate {} ({}), SHA-256 fingerprint {}",
        certificate.cert_path.display(),
        if certificate.created {
            "self-signed, made now"
        } else {
            "installed"
        },
        certificate.fingerprint
    );
    Ok(certificate)
}

/// The HTTPS configuration of the REST API's TCP port, and the certificate's fingerprint.
fn mgmt_tls_config(
    certificate: &certs::NodeCertificate,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    let config = mgmt::tls::server_config(certificate.chain.clone(), certificate.key.clone_key())
        .with_context(|| {
        format!(
            "cannot use the TLS certificate {} with its key {}; install a matching pair",
            certificate.cert_path.display(),
            certificate.key_path.display()
        )
    })?;
    Ok((config, certificate.fingerprint.clone()))
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
    /// Opens and recovers the node and starts serving.
    pub fn start(hw: HwModel, options: &NodeOptions) -> anyhow::Result<Node> {
        let data_dir = &options.data_dir;
        data_dir::prepare(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let (key, key_created) = NodeKey::load_or_create(data_dir)?;
        let key = Arc::new(key);
        let certificate = node_certificate(data_dir)?;
        io::probe().map_err(anyhow::Error::msg)?;

        let faults = Arc::new(FaultPlane::new());
        let ssd = open_device(&hw, &hw.ssds[0], data_dir, &faults)
            .with_context(|| format!("cannot open the vault SSD {:?}", hw.ssds[0].name))?;
        let mut drives = Vec::new();
        for spec in &hw.nlsas {
            drives.push(
                open_device(&hw, spec, data_dir, &faults)
                    .with_context(|| format!("cannot open NL-SAS device {:?}", spec.name))?,
            );
        }
        let array = Array::new(
            drives,
            hw.stripe.data,
            hw.stripe.unit,
            hw.stripe.rows_per_segment,
        );
        if array.geometry().segments() < 16 {
            bail!(
                "the NL-SAS devices hold only {} segments; give them more space or fewer rows_per_segment (at least 16 segments)",
                array.geometry().segments()
            );
        }
        let events = EventLog::open(data_dir)
            .with_context(|| format!("cannot open the event log in {}", data_dir.display()))?;
        let final_events = events.clone();
        crate::fatal::set_event_sink(move |code, description| {
            final_events.raise_final(code, description, Duration::from_millis(200));
        });
        let (meta, recovered, report) = MetaStore::open(ssd, array, key)
            .map_err(|err| open_error(err, data_dir, key_created))?;
        if report.sealed_plain_secrets {
            crate::say!(
                "troika: sealed the CHAP secrets of the catalog under {} (the metadata was of a format that kept them plain); change the hosts' CHAP secrets if the devices may have been read by others",
                data_dir.join(KEY_FILE).display()
            );
        }
        if report.formatted {
            crate::say!(
                "troika: formatted a new node (serial {}) in {}",
                meta.serial(),
                data_dir.display()
            );
            events.raise(
                "SYSTEM_STARTED",
                format!("formatted a new node, serial {}", meta.serial()),
                None,
                None,
            );
        } else {
            let summary = format!(
                "recovered from media in {} ms: replayed {} journal batches ({} records), {} flushed blocks returned to cache",
                report.elapsed.as_millis(),
                report.replayed_batches,
                report.replayed_records,
                report.recovered_blocks
            );
            crate::say!("troika: {summary}");
            // A clean stop checkpoints everything, so only a crash leaves work to replay.
            let clean = report.replayed_batches == 0 && report.recovered_blocks == 0;
            let code = if clean {
                "SYSTEM_STARTED"
            } else {
                "SYSTEM_RECOVERED"
            };
            events.raise(code, summary, None, None);
        }
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
        let routing = Arc::new(Routing::new(hw.controllers));
        let cache = Cache::start(
            meta.clone(),
            hw.controllers,
            hw.dram_per_controller,
            recovered,
            routing.clone(),
        );
        let controllers = Controllers::new(cache.clone(), routing, hw.controllers);
        let sink_events = events.clone();
        controllers.set_event_sink(Arc::new(move |code, description| {
            sink_events.raise(code, description, None, None);
        }));
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut sockets = Vec::new();

        let (nbd_socket, nbd_thread) =
            nbd_access::start_nbd(options, &controllers, &meta, &events, &shutdown)?;
        sockets.push(nbd_socket);
        threads.push(nbd_thread);

        if options.iscsi_tcp.len() > controllers.ids().len() {
            bail!(
                "{} iSCSI portal addresses were given but the model has {} controllers; give one address per controller at most",
                options.iscsi_tcp.len(),
                controllers.ids().len()
            );
        }
        let iscsi_node = iscsi::IscsiNode::new(meta.clone(), controllers.clone(), data_dir.clone())
            .map_err(anyhow::Error::msg)?;
        for (address, controller) in options.iscsi_tcp.iter().zip(controllers.ids()) {
            iscsi_node.open_portal(*controller, *address).with_context(|| {
                format!(
                    "cannot listen for iSCSI on {address} (controller {controller}); is another target using the port? Choose others with --iscsi-listen"
                )
            })?;
        }
        controllers.add_portal_set(iscsi_node);

        let api = Arc::new(NodeApi {
            hw,
            meta: meta.clone(),
            cache: cache.clone(),
            controllers: controllers.clone(),
            faults,
            started_at: now_ms(),
        });
        threads.push(policies::spawn(
            api.clone(),
            events.clone(),
            shutdown.clone(),
        ));
        let tls = match options.mgmt_tcp {
            Some(_) if options.mgmt_tls => Some(mgmt_tls_config(&certificate)?),
            _ => None,
        };
        let mgmt = Arc::new(Mgmt {
            api,
            users: Arc::new(users),
            events: events.clone(),
            limiter: Arc::new(LoginLimiter::new(options.login_lockout)),
            tls_fingerprint: tls.as_ref().map(|(_, fingerprint)| fingerprint.clone()),
        });
        let mgmt_socket = data_dir.join("troika.sock");
        let _ = std::fs::remove_file(&mgmt_socket);
        let listener = UnixListener::bind(&mgmt_socket)
            .with_context(|| format!("cannot listen on {}", mgmt_socket.display()))?;
        // The management socket's peers are the local administrator: only the node's user
        // (and root) may connect.
        nbd_access::restrict_socket(&mgmt_socket, None)?;
        sockets.push(mgmt_socket);
        threads.push(mgmt::server::spawn_server(
            MgmtListener::Unix(listener),
            mgmt.clone(),
            shutdown.clone(),
        ));
        if let Some(address) = options.mgmt_tcp {
            let tcp = TcpListener::bind(address).with_context(|| {
                format!(
                    "cannot listen for the REST API on {address}; is another server using the port? Choose another with --mgmt-listen"
                )
            })?;
            if tls.is_none() {
                crate::say!(
                    "troika: WARNING: the REST API on {address} speaks plain HTTP (--mgmt-tls off): passwords cross the network in clear text; this is for tests only"
                );
            }
            threads.push(mgmt::server::spawn_server(
                MgmtListener::Tcp(tcp, tls.map(|(config, _)| config)),
                mgmt.clone(),
                shutdown.clone(),
            ));
        }
        threads.push(monitor::spawn(meta, events.clone(), shutdown.clone()));
        Ok(Node {
            cache,
            controllers,
            events,
            shutdown,
            threads,
            sockets,
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

/// Opens one device of the model with its simulated write cache and its fault rules.
fn open_device(
    hw: &HwModel,
    spec: &DeviceSpec,
    data_dir: &Path,
    faults: &FaultPlane,
) -> anyhow::Result<Device> {
    let path = hw.resolve_path(spec, data_dir);
    let device = Device::open(&path, spec.size, spec.latency)?;
    let device_faults = faults
        .attach(&spec.name, &path, spec.write_cache)
        .with_context(|| format!("cannot open {} for fault injection", path.display()))?;
    for rule in &spec.faults {
        faults
            .inject(rule.clone())
            .map_err(|err| anyhow::anyhow!("fault rule on {}: {err}", spec.name))?;
    }
    Ok(device.with_faults(device_faults))
}

/// An operator's message for a failed metadata open; a wrong node key names its file.
/// A key made by this start (none was there) is removed again, so the next start finds
/// the directory as the operator left it.
fn open_error(err: MetaError, data_dir: &Path, key_created: bool) -> anyhow::Error {
    let MetaError::WrongKey {
        ssd,
        recorded,
        given,
    } = &err
    else {
        return anyhow::anyhow!("{err}");
    };
    let key_path = data_dir.join(KEY_FILE);
    if key_created {
        let _ = std::fs::remove_file(&key_path);
        anyhow::anyhow!(
            "the node key {} is missing, but the metadata on {ssd} was written under one (its secrets are sealed with it); restore this node's node.key from a backup (whoever holds node.key holds the secrets, and without it the node cannot start)",
            key_path.display()
        )
    } else {
        anyhow::anyhow!(
            "the node key {} is not the key the metadata on {ssd} was written under (fingerprint {recorded:016x}; this file's is {given:016x}), so its secrets cannot be opened; restore the node.key that belongs to this data directory",
            key_path.display()
        )
    }
}

/// Takes an exclusive lock on the data directory so two nodes never share it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("troika.lock");
    let file =
        private_files::open_or_create(&path, std::fs::OpenOptions::new().read(true).write(true))
            .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another troika node is already serving {} (pid {}); stop it first or use another --data directory",
            data_dir.display(),
            holder.trim()
        );
    }
    let _ = file.set_len(0);
    let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(file)
}
