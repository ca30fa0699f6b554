//! The steps of [`Node::start`](super::Node::start), each named for what it opens or
//! starts, in the order the module doc of `node` gives, and the checks that refuse a
//! start.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};

use super::api::NodeApi;
use super::{NodeOptions, certs, iscsi, nbd_access};
use crate::cache::Cache;
use crate::controller::Controllers;
use crate::controller::routing::Routing;
use crate::hw::{DeviceSpec, HwModel};
use crate::io::{Device, FaultPlane};
use crate::layout::{Array, DriveStore, Placement, PlacementKind};
use crate::meta::{MetaError, MetaStore, RecoveredBlock};
use crate::mgmt;
use crate::mgmt::events::EventLog;
use crate::mgmt::login_limit::LoginLimiter;
use crate::mgmt::rest::Mgmt;
use crate::mgmt::server::MgmtListener;
use crate::mgmt::users::UserStore;
use crate::private_files;
use crate::secrets::{KEY_FILE, NodeKey};

/// Loads the node's certificate (NBD over x509 and HTTPS serve it), making a self-signed
/// one at the first start, and prints its fingerprint.
pub(super) fn node_certificate(data_dir: &Path) -> anyhow::Result<certs::NodeCertificate> {
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
pub(super) fn mgmt_tls_config(
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

/// The threads the node joins and the sockets it removes when it stops.
#[derive(Default)]
pub(super) struct Services {
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) sockets: Vec<PathBuf>,
}

/// Opens the NL-SAS drives of the model (each with its simulated write cache and fault
/// rules) and lays the array over the drives; refuses an array of fewer than 16 segments.
/// (The SSDs are opened by `ssd_cache::open_ssds`.)
pub(super) fn open_devices(
    hw: &HwModel,
    data_dir: &Path,
    faults: &FaultPlane,
) -> anyhow::Result<Array> {
    let store = DriveStore::open(data_dir).map_err(anyhow::Error::msg)?;
    let mut drives = Vec::new();
    for (index, spec) in hw.nlsas.iter().enumerate() {
        // A drive replaced since the node was formatted is opened where it now is.
        let replaced;
        let spec = match store.replacement(index) {
            Some(path) => {
                replaced = DeviceSpec {
                    path,
                    size: None,
                    ..spec.clone()
                };
                &replaced
            }
            None => spec,
        };
        drives.push(
            open_device(hw, spec, data_dir, faults)
                .with_context(|| format!("cannot open NL-SAS device {:?}", spec.name))?,
        );
    }
    let kind = if hw.stripe.declustered {
        PlacementKind::Declustered {
            seed: crate::layout::placement::DEFAULT_SEED,
        }
    } else {
        PlacementKind::Straight
    };
    let placement = Placement::new(
        kind,
        drives.len(),
        hw.stripe.data + hw.stripe.parity,
        hw.stripe.parity,
        hw.stripe.spare,
    )
    .map_err(anyhow::Error::msg)?;
    let array = Array::new(
        drives,
        hw.stripe.data,
        hw.stripe.unit,
        hw.stripe.rows_per_segment,
        placement,
    );
    array.attach_store(store).map_err(anyhow::Error::msg)?;
    array.set_drive_timeout(hw.stripe.drive_timeout);
    if array.geometry().segments() < 16 {
        bail!(
            "the NL-SAS devices hold only {} segments; give them more space or fewer rows_per_segment (at least 16 segments)",
            array.geometry().segments()
        );
    }
    Ok(array)
}

/// Opens the event log and makes it where a durability failure writes its event.
pub(super) fn open_event_log(data_dir: &Path) -> anyhow::Result<Arc<EventLog>> {
    let events = EventLog::open(data_dir)
        .with_context(|| format!("cannot open the event log in {}", data_dir.display()))?;
    let final_events = events.clone();
    crate::fatal::set_event_sink(move |code, description| {
        final_events.raise_final(code, description, Duration::from_millis(200));
    });
    Ok(events)
}

/// Opens (formatting when new) or recovers the metadata store, tells the operator what
/// happened and raises `SYSTEM_STARTED` (formatted, or a clean stop before) or
/// `SYSTEM_RECOVERED` (journal replayed or blocks returned to cache after a crash).
pub(super) fn open_metadata(
    ssd: Device,
    array: Array,
    key: Arc<NodeKey>,
    data_dir: &Path,
    key_created: bool,
    events: &EventLog,
) -> anyhow::Result<(MetaStore, Vec<RecoveredBlock>)> {
    let (meta, recovered, report) =
        MetaStore::open(ssd, array, key).map_err(|err| open_error(err, data_dir, key_created))?;
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
    Ok((meta, recovered))
}

/// Starts the cache (with the recovered blocks) and the controllers over it; the
/// controllers' events go to the event log.
pub(super) fn start_controllers(
    hw: &HwModel,
    meta: &Arc<MetaStore>,
    recovered: Vec<RecoveredBlock>,
    events: &Arc<EventLog>,
) -> (Arc<Cache>, Arc<Controllers>) {
    let routing = Arc::new(Routing::new(hw.controllers));
    let cache = Cache::start(
        meta.clone(),
        hw.controllers,
        hw.cache_per_controller(),
        recovered,
        routing.clone(),
    );
    let controllers = Controllers::new(cache.clone(), routing, hw.controllers);
    let sink_events = events.clone();
    controllers.set_event_sink(Arc::new(move |code, description| {
        sink_events.raise(code, description, None, None);
    }));
    (cache, controllers)
}

/// Opens one iSCSI portal per address given (controller 1 first) and hands them to the
/// controllers; refuses more addresses than controllers.
pub(super) fn open_iscsi_portals(
    options: &NodeOptions,
    meta: &Arc<MetaStore>,
    controllers: &Arc<Controllers>,
) -> anyhow::Result<()> {
    if options.iscsi_tcp.len() > controllers.ids().len() {
        bail!(
            "{} iSCSI portal addresses were given but the model has {} controllers; give one address per controller at most",
            options.iscsi_tcp.len(),
            controllers.ids().len()
        );
    }
    let iscsi_node =
        iscsi::IscsiNode::new(meta.clone(), controllers.clone(), options.data_dir.clone())
            .map_err(anyhow::Error::msg)?;
    for (address, controller) in options.iscsi_tcp.iter().zip(controllers.ids()) {
        iscsi_node.open_portal(*controller, *address).with_context(|| {
            format!(
                "cannot listen for iSCSI on {address} (controller {controller}); is another target using the port? Choose others with --iscsi-listen"
            )
        })?;
    }
    controllers.add_portal_set(iscsi_node);
    Ok(())
}

/// What the management API serves from.
pub(super) struct MgmtParts<'a> {
    pub(super) api: Arc<NodeApi>,
    pub(super) users: UserStore,
    pub(super) events: &'a Arc<EventLog>,
    pub(super) certificate: &'a certs::NodeCertificate,
}

/// Serves the management API on DATA/troika.sock (0600: the local administrator only)
/// and, when asked, on its TCP address (HTTPS unless `--mgmt-tls off`).
pub(super) fn start_mgmt(
    options: &NodeOptions,
    parts: MgmtParts<'_>,
    shutdown: &Arc<AtomicBool>,
    services: &mut Services,
) -> anyhow::Result<()> {
    let tls = match options.mgmt_tcp {
        Some(_) if options.mgmt_tls => Some(mgmt_tls_config(parts.certificate)?),
        _ => None,
    };
    let mgmt = Arc::new(Mgmt {
        api: parts.api,
        users: Arc::new(parts.users),
        events: parts.events.clone(),
        limiter: Arc::new(LoginLimiter::new(options.login_lockout)),
        tls_fingerprint: tls.as_ref().map(|(_, fingerprint)| fingerprint.clone()),
    });
    let mgmt_socket = options.data_dir.join("troika.sock");
    let _ = std::fs::remove_file(&mgmt_socket);
    let listener = UnixListener::bind(&mgmt_socket)
        .with_context(|| format!("cannot listen on {}", mgmt_socket.display()))?;
    // The management socket's peers are the local administrator: only the node's user
    // (and root) may connect.
    nbd_access::restrict_socket(&mgmt_socket, None)?;
    services.sockets.push(mgmt_socket);
    services.threads.push(mgmt::server::spawn_server(
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
        services.threads.push(mgmt::server::spawn_server(
            MgmtListener::Tcp(tcp, tls.map(|(config, _)| config)),
            mgmt,
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Opens one device of the model with its simulated write cache and its fault rules.
pub(super) fn open_device(
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
pub(super) fn open_error(err: MetaError, data_dir: &Path, key_created: bool) -> anyhow::Error {
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
pub(super) fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
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
