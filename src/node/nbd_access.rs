//! NBD access on the node: which datasets an NBD client may reach, decided from the real
//! catalog, and the node's NBD unix socket made the local administrator's door.
//!
//! What it promises:
//! - an identified client (a TLS identity) reaches exactly the volumes and snapshots
//!   mapped to the host that has the identity as an NBD port, its own mappings and its
//!   cluster's (the same view the host's iSCSI initiators get); an identity no host has,
//!   and an anonymous client, reach nothing; the local administrator and `--nbd-open`
//!   clients reach everything. The lookup takes the catalog's read lock once and walks
//!   the hosts and mappings: it runs per NBD option while haggling, never per I/O;
//! - the NBD unix socket is mode 0600 (0660 with `--nbd-socket-group`, owned by that
//!   group) from right after it is bound (so is the management socket, always 0600); the credential check on every connection (see
//!   [`crate::target::nbd::access`]) is what admits a peer, the mode keeps others from
//!   even connecting.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use anyhow::{Context, bail};

use super::NodeOptions;
use crate::controller::access::{ExportAccess, ExportView};
use crate::controller::{Controllers, NodePort};
use crate::meta::MetaStore;
use crate::meta::catalog::Catalog;
use crate::mgmt::events::EventLog;
use crate::target::NbdClient;
use crate::target::nbd::{self, NbdConfig, NbdListener, NbdTlsMode};

/// What `client` may reach according to `catalog`.
pub fn nbd_view(catalog: &Catalog, client: &NbdClient) -> ExportView {
    let identity = match client {
        NbdClient::LocalAdmin | NbdClient::Open => return ExportView::Everything,
        NbdClient::Anonymous => return ExportView::Datasets(BTreeSet::new()),
        NbdClient::Identified(identity) => identity,
    };
    let Some(host) = catalog.host_by_nbd_identity(identity) else {
        return ExportView::Datasets(BTreeSet::new());
    };
    ExportView::Datasets(
        catalog
            .luns_of_host(host.id)
            .into_iter()
            .map(|(_, dataset)| dataset)
            .collect(),
    )
}

/// The node's [`ExportAccess`]: [`nbd_view`] over the live catalog.
pub struct CatalogAccess {
    meta: Arc<MetaStore>,
}

impl CatalogAccess {
    pub fn new(meta: Arc<MetaStore>) -> Arc<CatalogAccess> {
        Arc::new(CatalogAccess { meta })
    }
}

impl ExportAccess for CatalogAccess {
    fn view(&self, client: &NbdClient) -> ExportView {
        if client.sees_everything() {
            return ExportView::Everything;
        }
        nbd_view(&self.meta.state().catalog, client)
    }
}

/// The group id `--nbd-socket-group` names: a group name, or a number.
pub fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group)
        .map_err(|_| anyhow::anyhow!("--nbd-socket-group {group:?} contains a NUL byte"))?;
    let mut group_entry: libc::group = unsafe_zeroed_group();
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is a NUL-terminated string,
    // `group_entry` and `found` live on our stack, and `buffer` is a live allocation whose
    // length we pass; getgrnam_r writes only into those.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut group_entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        bail!(
            "--nbd-socket-group {group:?}: no such group on this machine; give an existing group name or a numeric gid"
        );
    }
    Ok(group_entry.gr_gid)
}

fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: `libc::group` is a plain C struct of integers and pointers, for which all
    // zero bytes (null pointers, zero ids) is a valid value; getgrnam_r overwrites it.
    unsafe { std::mem::zeroed() }
}

/// Starts the node's NBD service: installs the catalog's access rules and each
/// listener's TLS (see [`super::nbd_tls`]), serves the unix socket (DATA/nbd.sock, made the administrator's: see [`restrict_socket`]) and opens each
/// controller's TCP port; with `--nbd-open` on TCP, says so on the terminal and raises
/// NBD_OPEN_EXPORTS. Returns the socket's path and the unix server's thread.
pub fn start_nbd(
    options: &NodeOptions,
    controllers: &Arc<Controllers>,
    meta: &Arc<MetaStore>,
    events: &Arc<EventLog>,
    shutdown: &Arc<AtomicBool>,
) -> anyhow::Result<(PathBuf, JoinHandle<()>)> {
    let (unix_tls, tcp_tls) = super::nbd_tls::listener_tls(
        &options.data_dir,
        &options.nbd_tls,
        !options.nbd_tcp.is_empty(),
        options.nbd_access.open,
    )?;
    let config = NbdConfig {
        access: options.nbd_access.clone(),
        ..NbdConfig::default()
    };
    let tcp_requires_tls = tcp_tls.mode == NbdTlsMode::Require;
    controllers.set_export_access(CatalogAccess::new(meta.clone()));
    controllers.set_nbd_config(NbdConfig {
        tls: tcp_tls,
        ..config.clone()
    });
    let socket = options.data_dir.join("nbd.sock");
    let _ = std::fs::remove_file(&socket);
    let unix = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    restrict_socket(&socket, options.nbd_socket_group)?;
    let thread = nbd::spawn_server(
        NbdListener::Unix(unix),
        NodePort::new(controllers.clone()),
        NbdConfig {
            tls: unix_tls,
            ..config
        },
        shutdown.clone(),
    );
    if options.nbd_tcp.len() > controllers.ids().len() {
        bail!(
            "{} NBD addresses were given but the model has {} controllers; give one address per controller at most",
            options.nbd_tcp.len(),
            controllers.ids().len()
        );
    }
    for (address, controller) in options.nbd_tcp.iter().zip(controllers.ids()) {
        controllers
            .open_port(*controller, *address)
            .with_context(|| {
                format!(
                    "cannot listen for NBD on {address} (controller {controller}); is another server using the port?"
                )
            })?;
    }
    if options.nbd_access.open && !options.nbd_tcp.is_empty() {
        let warning = if tcp_requires_tls {
            "every volume and snapshot is served to any NBD client on TCP that proves no TLS identity (--nbd-open); use it only for benchmarking on a trusted machine"
        } else {
            "every volume and snapshot is served to any NBD client on TCP without TLS (--nbd-open); use it only for benchmarking on a trusted machine"
        };
        crate::say!("troika: WARNING: {warning}");
        events.raise("NBD_OPEN_EXPORTS", warning.to_owned(), None, None);
    }
    Ok((socket, thread))
}

/// Gives a unix socket its mode: 0600, or 0660 owned by group `group`.
pub fn restrict_socket(path: &Path, group: Option<u32>) -> anyhow::Result<()> {
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    if let Some(gid) = group {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .with_context(|| format!("{} contains a NUL byte", path.display()))?;
        // SAFETY: `c_path` is a NUL-terminated path that lives across the call; -1 as the
        // owner means "leave the owner unchanged".
        let rc = unsafe { libc::chown(c_path.as_ptr(), u32::MAX, gid) };
        if rc != 0 {
            bail!(
                "cannot give {} to group {gid}: {}; the node's user must belong to the group given with --nbd-socket-group",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {} to {mode:o}", path.display()))
}

#[cfg(test)]
mod tests;
