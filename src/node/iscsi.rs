//! The node's iSCSI wiring: one target named from the system serial, one portal and one
//! target port group per controller, hosts and LUN mappings from the catalog, persistent
//! reservations in files beside the metadata.
//!
//! Promises: a portal listens while its controller's ports are open (closed, connections
//! dropped, when it fails; reopened when it comes back); every controller state change
//! raises ASYMMETRIC ACCESS STATE CHANGED on every logical unit; an initiator sees only the
//! datasets mapped to its host (or its host's cluster); a reservation is on disk before
//! PERSISTENT RESERVE OUT answers.
//!
//! Saved reservations are never silently dropped: at start every existing dataset's file
//! is read and decoded, and one that cannot be (an I/O error, a bad checksum or format)
//! stops the start with a message naming the file. Refusing to start was chosen over
//! serving that unit fenced: it needs no new unit state, and the operator has to look at
//! the file either way (restore it, or remove it to drop the reservations knowingly). A
//! unit whose file goes bad while the node runs (only this node writes it, so only by
//! outside interference) is not offered to initiators, with a message, rather than served
//! without its reservations.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::controller::state::ControllerState;
use crate::controller::{ControllerId, Controllers, PerController, PortalSet, bind_retrying};
use crate::meta::MetaStore;
use crate::meta::host_records::ChapMethod;
use crate::target::iscsi::{
    self, Authentication, ChapCredentials, IscsiBackend, IscsiConfig, Portal,
};
use crate::target::scsi::{
    AluaState, LogicalUnit, LuIdentity, LuRegistry, PortGroup, PortGroups, PrStore,
    ReservationsError,
};

/// The node's iSCSI target name.
pub fn target_name(serial: u64) -> String {
    format!("iqn.2026-11.io.troika:node-{serial:016x}")
}

/// A dataset's 16-byte NAA 6h designator: the same digits as its `serial` in the REST API.
pub fn dataset_naa(serial: u64, id: u32) -> [u8; 16] {
    let high = (6u64 << 60) | (serial & 0x0FFF_FFFF_FFFF_FFFF);
    let mut naa = [0u8; 16];
    naa[..8].copy_from_slice(&high.to_be_bytes());
    naa[8..].copy_from_slice(&u64::from(id).to_be_bytes());
    naa
}

/// The REST API's `serial` of a dataset (32 hex digits of its NAA designator).
pub fn dataset_serial(serial: u64, id: u32) -> String {
    dataset_naa(serial, id)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The ALUA state a controller's target port group reports.
fn alua_state(state: ControllerState) -> AluaState {
    match state {
        ControllerState::Active => AluaState::ActiveOptimized,
        ControllerState::Recovering => AluaState::ActiveNonOptimized,
        ControllerState::Starting => AluaState::Transitioning,
        ControllerState::Failed | ControllerState::Stopped => AluaState::Offline,
    }
}

/// Port groups as the controllers' states make them.
struct ControllerGroups {
    controllers: Arc<Controllers>,
    target: String,
}

impl PortGroups for ControllerGroups {
    fn groups(&self) -> Vec<PortGroup> {
        self.controllers
            .ids()
            .iter()
            .map(|id| {
                let number = tpgt_of(*id);
                PortGroup {
                    id: number,
                    state: alua_state(self.controllers.state(*id)),
                    relative_ports: vec![number],
                }
            })
            .collect()
    }

    fn target_port_name(&self, relative_port: u16) -> String {
        format!("{},t,0x{relative_port:04x}", self.target)
    }

    fn target_name(&self) -> String {
        self.target.clone()
    }
}

/// Persistent reservations, one file per dataset under `<data>/reservations`, replaced
/// atomically (write, fsync, rename, fsync the directory).
struct ReservationFiles {
    dir: PathBuf,
}

impl ReservationFiles {
    fn path(&self, dataset_id: u32) -> PathBuf {
        self.dir.join(format!("dataset-{dataset_id}.pr"))
    }
}

impl ReservationFiles {
    /// Removes the reservations of datasets that no longer exist (deleted while the node
    /// ran; dataset ids are not reused, this only keeps the directory clean).
    fn prune(&self, exists: impl Fn(u32) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let dataset = name
                .to_str()
                .and_then(|name| name.strip_prefix("dataset-"))
                .and_then(|rest| rest.strip_suffix(".pr"))
                .and_then(|id| id.parse::<u32>().ok());
            if let Some(dataset) = dataset
                && !exists(dataset)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl PrStore for ReservationFiles {
    fn load(&self, dataset_id: u32) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(dataset_id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn location(&self, dataset_id: u32) -> String {
        self.path(dataset_id).display().to_string()
    }

    fn save(&self, dataset_id: u32, state: &[u8]) -> std::io::Result<()> {
        crate::private_files::create_dir(&self.dir)?;
        let path = self.path(dataset_id);
        let temporary = path.with_extension("pr.new");
        {
            let mut file = crate::private_files::create_new(&temporary)?;
            file.write_all(state)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    fn remove(&self, dataset_id: u32) {
        let _ = std::fs::remove_file(self.path(dataset_id));
    }
}

/// One controller's portal address: served by its own controller, or, while that one is
/// failed, by a survivor that took the address over (as an array moves a failed node's IP).
struct PortalSlot {
    address: Option<SocketAddr>,
    /// The controller serving the address now.
    served_by: ControllerId,
    shutdown: Option<Arc<AtomicBool>>,
    thread: Option<JoinHandle<()>>,
}

/// The node's iSCSI target: backend of every portal, and the portals themselves.
pub struct IscsiNode {
    meta: Arc<MetaStore>,
    controllers: Arc<Controllers>,
    registry: Arc<LuRegistry>,
    groups: Arc<ControllerGroups>,
    target: String,
    config: IscsiConfig,
    /// Per controller, the portal address it owns.
    portals: Mutex<PerController<PortalSlot>>,
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// This node itself, for portals reopened from [`PortalSet::reopen`].
    me: Weak<IscsiNode>,
}

impl IscsiNode {
    /// The target of this node, with no portal open yet; refused when a dataset's saved
    /// reservations cannot be loaded (see the module doc).
    pub fn new(
        meta: Arc<MetaStore>,
        controllers: Arc<Controllers>,
        data_dir: PathBuf,
    ) -> Result<Arc<IscsiNode>, ReservationsError> {
        let target = target_name(meta.serial());
        let groups = Arc::new(ControllerGroups {
            controllers: controllers.clone(),
            target: target.clone(),
        });
        let store = Arc::new(ReservationFiles {
            dir: data_dir.join("reservations"),
        });
        store.prune(|dataset| meta.state().volumes.contains_key(&dataset));
        let registry = LuRegistry::new(store, groups.clone());
        let datasets: Vec<u32> = meta.state().volumes.keys().copied().collect();
        registry.load_all(datasets)?;
        let count = controllers.ids().len();
        Ok(Arc::new_cyclic(|me| IscsiNode {
            me: me.clone(),
            meta,
            controllers,
            registry,
            groups,
            target,
            config: IscsiConfig::default(),
            portals: Mutex::new(PerController::new(count, |id| PortalSlot {
                address: None,
                served_by: id,
                shutdown: None,
                thread: None,
            })),
            retired: Mutex::new(Vec::new()),
        }))
    }

    /// Listens on `address` as controller `controller`'s portal (remembered for reopening).
    pub fn open_portal(
        self: &Arc<Self>,
        controller: ControllerId,
        address: SocketAddr,
    ) -> std::io::Result<()> {
        self.serve_portal(controller, controller, address)
    }

    /// Serves slot `slot`'s address with controller `server`'s target port group.
    fn serve_portal(
        self: &Arc<Self>,
        slot: ControllerId,
        server: ControllerId,
        address: SocketAddr,
    ) -> std::io::Result<()> {
        let mut portals = self.portals.lock();
        let portal = &mut portals[slot];
        portal.address = Some(address);
        if portal.thread.is_some() {
            return Ok(());
        }
        let listener = bind_retrying(address)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let backend: Arc<dyn IscsiBackend> = self.clone();
        portal.thread = Some(iscsi::spawn_portal(
            listener,
            tpgt_of(server),
            backend,
            self.config.clone(),
            shutdown.clone(),
        ));
        portal.served_by = server;
        portal.shutdown = Some(shutdown);
        Ok(())
    }

    /// A surviving controller takes over failed controller `failed`'s portal address, so
    /// initiators reconnecting to it reach the target again.
    fn take_over(self: &Arc<Self>, failed: ControllerId) {
        let Some(address) = self.portals.lock()[failed].address else {
            return;
        };
        let survivor = self
            .controllers
            .ids()
            .iter()
            .copied()
            .find(|id| *id != failed && self.controllers.state(*id).ports_open());
        let Some(survivor) = survivor else { return };
        if let Err(err) = self.serve_portal(failed, survivor, address) {
            crate::say!(
                "troika: controller {survivor} cannot take over the iSCSI portal {address} of failed controller {failed}: {err}"
            );
        }
    }

    fn close_portal(&self, id: ControllerId) {
        let mut portals = self.portals.lock();
        let slot = &mut portals[id];
        if let Some(shutdown) = slot.shutdown.take() {
            shutdown.store(true, Ordering::Release);
        }
        if let Some(thread) = slot.thread.take() {
            self.retired.lock().push(thread);
        }
    }

    fn controller_of(&self, tpgt: u16) -> Option<ControllerId> {
        ControllerId::from_number(u32::from(tpgt), self.controllers.ids().len())
    }
}

/// The target portal group tag of controller `id`'s portals: its number.
fn tpgt_of(id: ControllerId) -> u16 {
    id.number() as u16
}

impl PortalSet for IscsiNode {
    fn close(&self, controller: ControllerId) {
        // Portals this controller had taken over go too; their own controllers are back
        // or will be taken over below.
        let slots = self.portals.lock().ids();
        let mut orphans = Vec::new();
        for slot in slots {
            let served_by = self.portals.lock()[slot].served_by;
            if served_by == controller {
                self.close_portal(slot);
                if slot != controller {
                    orphans.push(slot);
                }
            }
        }
        let Some(me) = self.me.upgrade() else { return };
        // Taking over waits for the closed listener to let go of the address: not under
        // the caller's locks.
        std::thread::spawn(move || {
            // The failed controller's state is set after `close` returns.
            std::thread::sleep(Duration::from_millis(100));
            me.take_over(controller);
            for slot in orphans {
                me.take_over(slot);
            }
        });
    }

    fn reopen(&self, controller: ControllerId) {
        let address = self.portals.lock()[controller].address;
        self.close_portal(controller);
        if let (Some(address), Some(me)) = (address, self.me.upgrade())
            && let Err(err) = me.open_portal(controller, address)
        {
            crate::say!(
                "troika: controller {controller} cannot reopen its iSCSI portal {address}: {err}"
            );
        }
    }

    fn states_changed(&self) {
        self.registry.alua_changed();
    }

    fn close_all(&self) {
        let slots = self.portals.lock().ids();
        for slot in slots {
            self.close_portal(slot);
        }
        let threads = std::mem::take(&mut *self.retired.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl IscsiBackend for IscsiNode {
    fn target_name(&self) -> String {
        self.target.clone()
    }

    fn portals(&self) -> Vec<Portal> {
        let portals = self.portals.lock();
        portals
            .values()
            .filter(|slot| slot.thread.is_some())
            .filter_map(|slot| {
                Some(Portal {
                    address: slot.address?,
                    tpgt: tpgt_of(slot.served_by),
                })
            })
            .collect()
    }

    fn authentication(&self, initiator: &str) -> Option<Authentication> {
        let state = self.meta.state();
        let host = state.catalog.host_by_initiator(initiator)?;
        let chap = &host.chap;
        let inbound = ChapCredentials {
            user: chap.inbound_user.clone(),
            secret: chap.inbound_secret.clone(),
        };
        Some(match chap.method {
            ChapMethod::None => Authentication::None,
            ChapMethod::Chap => Authentication::Chap {
                inbound,
                outbound: None,
            },
            ChapMethod::MutualChap => Authentication::Chap {
                inbound,
                outbound: Some(ChapCredentials {
                    user: chap.outbound_user.clone(),
                    secret: chap.outbound_secret.clone(),
                }),
            },
        })
    }

    fn luns(&self, initiator: &str) -> Vec<(u64, u32)> {
        let state = self.meta.state();
        let Some(host) = state.catalog.host_by_initiator(initiator) else {
            return Vec::new();
        };
        state
            .catalog
            .luns_of_host(host.id)
            .into_iter()
            .filter(|(_, volume)| state.volumes.contains_key(volume))
            .map(|(lun, volume)| (u64::from(lun), volume))
            .collect()
    }

    fn open_unit(&self, dataset_id: u32, tpgt: u16) -> Option<LogicalUnit> {
        let controller = self.controller_of(tpgt)?;
        let target = self.controllers.open_dataset_on(dataset_id, controller)?;
        let serial = self.meta.serial();
        let identity = LuIdentity {
            dataset_id,
            naa: dataset_naa(serial, dataset_id),
            serial: dataset_serial(serial, dataset_id),
            name: target.name().to_owned(),
        };
        let shared = match self.registry.shared(dataset_id) {
            Ok(shared) => shared,
            Err(err) => {
                crate::say!(
                    "troika: iSCSI logical unit {} not offered: {err}",
                    identity.name
                );
                return None;
            }
        };
        Some(LogicalUnit {
            target,
            identity: Arc::new(identity),
            shared,
            ports: self.groups.clone(),
        })
    }

    fn generation(&self) -> u64 {
        self.meta.catalog_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::scsi::PortGroups;

    struct NoPorts;

    impl PortGroups for NoPorts {
        fn groups(&self) -> Vec<PortGroup> {
            Vec::new()
        }
        fn target_port_name(&self, relative_port: u16) -> String {
            format!("iqn.2026-11.io.troika:test,t,0x{relative_port:04x}")
        }
        fn target_name(&self) -> String {
            "iqn.2026-11.io.troika:test".to_owned()
        }
    }

    fn registry(dir: &std::path::Path) -> (Arc<ReservationFiles>, Arc<LuRegistry>) {
        let files = Arc::new(ReservationFiles {
            dir: dir.join("reservations"),
        });
        (files.clone(), LuRegistry::new(files, Arc::new(NoPorts)))
    }

    #[test]
    fn a_missing_file_is_no_reservations_and_a_saved_one_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (files, registry) = registry(dir.path());
        assert_eq!(files.load(3).unwrap(), None);
        registry.load_all([3]).unwrap();
        // A state saved by a unit loads back in a fresh registry.
        let saved = registry
            .shared(3)
            .unwrap()
            .with_reservations(|reservations| reservations.encode());
        files.save(4, &saved).unwrap();
        let (_, fresh) = self::registry(dir.path());
        fresh.load_all([4]).unwrap();
    }

    #[test]
    fn a_damaged_or_unreadable_file_refuses_the_load_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = registry(dir.path());
        std::fs::create_dir_all(&files.dir).unwrap();
        // Bad format (and so bad checksum): flipped bytes, a truncation, an empty file.
        let good = {
            let (_, registry) = registry(dir.path());
            registry
                .shared(9)
                .unwrap()
                .with_reservations(|reservations| reservations.encode())
        };
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        for (dataset, bytes) in [
            (5u32, flipped),
            (6, good[..good.len() - 3].to_vec()),
            (7, Vec::new()),
        ] {
            std::fs::write(files.path(dataset), &bytes).unwrap();
            let (_, registry) = registry(dir.path());
            let err = registry.load_all([1, dataset]).unwrap_err().to_string();
            assert!(
                err.contains(&files.path(dataset).display().to_string())
                    && err.contains("not a valid saved reservation state"),
                "{err}"
            );
            assert!(registry.shared(dataset).is_err(), "never served as none");
        }
        // An I/O error reading it (here: a directory where the file should be).
        std::fs::create_dir(files.path(8)).unwrap();
        assert!(files.load(8).is_err());
        let (_, registry) = registry(dir.path());
        let err = registry.load_all([8]).unwrap_err().to_string();
        assert!(err.contains(&files.path(8).display().to_string()), "{err}");
    }
}
