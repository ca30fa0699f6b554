//! Controllers: the layer between the target ports and the cache.
//!
//! Promises to the front ends: every export (a volume, by name) can be opened on any live
//! controller's port, and every request on it reaches the domains that hold its sections:
//! the owner (reads, the first copy of a write) and the mirror (the second copy), as
//! [`routing`] places them. A write is acknowledged only once both hold it (or, with one
//! controller left, once it is in the vault). Requests enter the cache through their
//! port's controller gate with no lock (see `cache::gate`); a request for a section owned
//! elsewhere is carried out by the arriving thread on the owner's domain, so forwarding
//! costs a memcpy into the owner's and the mirror's slots, not a thread handoff.
//!
//! Each controller runs the state machine in [`state`]; [`failover`] drives it: a failure
//! closes the controller's port, pauses requests for the moment it takes to promote its
//! sections' mirror copies, and leaves re-mirroring to a background worker; a recovery
//! reopens the port and moves ownership back in steps.
//!
//! Every request a `VolumeTarget` serves is counted in its volume's and its controller's
//! [`IoStats`]; both are looked up once when the export is opened, so the per-request cost
//! is a clock read before and after and a few relaxed atomic adds.

pub mod access;
mod error;
mod failover;
mod info;
pub mod placement;
mod ports;
pub use ports::bind_retrying;
pub mod routing;
#[cfg(test)]
mod share_tests;
pub mod state;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cache::Cache;
use crate::meta::VolumeHandle;
use crate::stats::{IoStats, StatsRegistry};
use crate::target::{BlockTarget, ChangedExtent, Extent, ShareOutcome};
use crate::types::{BLOCK_SIZE, IoError};
pub use crate::types::{ControllerId, PerController};
pub use error::ControllerError;
pub use failover::EventSink;
pub use info::ControllerInfo;
use routing::Routing;
use state::{ControllerEvent, ControllerState};

/// What the node keeps about one controller besides its state machine.
struct Record {
    state: ControllerState,
    failovers: u64,
    state_changed_at: u64,
    /// Failback steps done while RECOVERING.
    failback_step: u8,
}

/// The node's controllers as the front ends see them.
pub struct Controllers {
    cache: Arc<Cache>,
    routing: Arc<Routing>,
    ids: Vec<ControllerId>,
    stats: Arc<StatsRegistry>,
    records: Mutex<PerController<Record>>,
    /// Serializes failures, recoveries and failback steps.
    control: Mutex<()>,
    ports: ports::Ports,
    events: Mutex<Option<EventSink>>,
    remirror: Mutex<Option<std::thread::JoinHandle<()>>>,
    portal_sets: Mutex<Vec<Arc<dyn PortalSet>>>,
    /// What each NBD client may reach (see [`access`]).
    access: Mutex<Arc<dyn access::ExportAccess>>,
}

/// A front end with a listener per controller besides NBD (the iSCSI portals): closed when
/// its controller fails, reopened when it comes back, told when any controller's state
/// changed (ALUA unit attentions).
pub trait PortalSet: Send + Sync {
    /// Controller `controller` failed: stop its listener and drop its connections.
    fn close(&self, controller: ControllerId);
    /// Controller `controller` is back: listen again.
    fn reopen(&self, controller: ControllerId);
    /// Some controller's state changed (after the change is visible in `state`).
    fn states_changed(&self);
    /// The node stops: close every listener and wait for the connections.
    fn close_all(&self);
}

/// Dirty data left for [`Controllers::at_one_instant`] to destage while hosts wait.
const PAUSED_DESTAGE_BYTES: u64 = 4 << 20;
/// How long it destages before pausing, whatever is left.
const PRE_DESTAGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Controllers {
    /// The controllers over `cache`, placing sections with `routing` (the router the
    /// cache was started with); all start ACTIVE.
    pub fn new(cache: Arc<Cache>, routing: Arc<Routing>, count: usize) -> Arc<Controllers> {
        let now = crate::clock::now_ms();
        let records = PerController::new(count, |_| Record {
            state: ControllerState::Starting
                .on(ControllerEvent::Ready)
                .expect("Starting takes Ready"),
            failovers: 0,
            state_changed_at: now,
            failback_step: 0,
        });
        let ids: Vec<ControllerId> = records.ids().collect();
        let controllers = Arc::new(Controllers {
            cache,
            routing,
            ids,
            stats: Arc::new(StatsRegistry::new(count)),
            records: Mutex::new(records),
            control: Mutex::new(()),
            ports: ports::Ports::new(count),
            events: Mutex::new(None),
            remirror: Mutex::new(None),
            portal_sets: Mutex::new(Vec::new()),
            access: Mutex::new(Arc::new(access::DefaultAccess)),
        });
        let weak = Arc::downgrade(&controllers);
        controllers.cache.set_panic_hook(Arc::new(move |id| {
            if let Some(controllers) = weak.upgrade() {
                controllers.fail_after_panic(id);
            }
        }));
        controllers
    }

    pub fn ids(&self) -> &[ControllerId] {
        &self.ids
    }

    /// Runs `change` at one instant every port agrees on: no ownership change under way,
    /// host requests on all controllers paused, every write acknowledged before it
    /// destaged to the array (so the maps hold it), none admitted until `change` returns.
    /// Snapshots, restores and refreshes use it. Most dirty data is destaged before the
    /// pause, so hosts wait only for what arrived meanwhile.
    ///
    /// `needs_destage` says whether the datasets `change` reads have blocks not destaged
    /// (asked before the pause, and again once hosts are paused); when they have none,
    /// nothing is destaged and hosts wait only for `change`.
    pub fn at_one_instant<T>(
        &self,
        needs_destage: impl Fn() -> bool,
        change: impl FnOnce() -> Result<T, crate::types::IoError>,
    ) -> Result<T, crate::types::IoError> {
        let _control = self.control.lock();
        if needs_destage() {
            self.cache
                .destage_down_to(PAUSED_DESTAGE_BYTES, PRE_DESTAGE_LIMIT);
        }
        self.cache.pause();
        let settled = if needs_destage() {
            self.cache.drain()
        } else {
            Ok(())
        };
        let outcome = settled.and_then(|()| change());
        self.cache.resume();
        outcome
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The I/O statistics of every volume and controller (for `/metrics`).
    pub fn stats(&self) -> &Arc<StatsRegistry> {
        &self.stats
    }

    /// Where events go (the node's event log).
    pub fn set_event_sink(&self, sink: EventSink) {
        *self.events.lock() = Some(sink);
    }

    /// The NBD configuration (access rules, TLS policy, tuning) the controllers' ports
    /// open with; set it before opening them.
    pub fn set_nbd_config(&self, config: crate::target::nbd::NbdConfig) {
        self.ports.set_config(config);
    }

    /// Opens controller `controller`'s NBD port on `address`.
    pub fn open_port(
        self: &Arc<Self>,
        controller: ControllerId,
        address: SocketAddr,
    ) -> std::io::Result<()> {
        self.ports.open(
            controller,
            address,
            ControllerPort::new(self.clone(), controller),
        )
    }

    /// Adds a front end whose listeners follow the controllers' states.
    pub fn add_portal_set(&self, set: Arc<dyn PortalSet>) {
        self.portal_sets.lock().push(set);
    }

    fn portal_sets(&self) -> Vec<Arc<dyn PortalSet>> {
        self.portal_sets.lock().clone()
    }

    /// Closes every port and waits for their connections (node shutdown).
    pub fn close_ports(&self) {
        self.ports.close_all();
        for set in self.portal_sets() {
            set.close_all();
        }
        if let Some(worker) = self.remirror.lock().take() {
            let _ = worker.join();
        }
    }

    /// The state of controller `controller`.
    pub fn state(&self, controller: ControllerId) -> ControllerState {
        self.records.lock()[controller].state
    }

    /// Opens the named export, whoever asks, for a connection that arrived on
    /// `controller`'s port; `None` when there is no such volume or no such controller.
    /// Front ends serving clients use [`Controllers::open_export_for`].
    pub fn open_export_on(
        self: &Arc<Self>,
        name: &str,
        controller: ControllerId,
    ) -> Option<Arc<dyn BlockTarget>> {
        let id = self.cache.meta().state().catalog.volume_by_name(name)?.id;
        self.open_dataset_on(id, controller)
    }

    /// Opens dataset `id` (volume or snapshot) for a connection on `controller`'s port;
    /// `None` when there is no such dataset or no such controller.
    pub fn open_dataset_on(
        self: &Arc<Self>,
        id: u32,
        controller: ControllerId,
    ) -> Option<Arc<dyn BlockTarget>> {
        let controller_stats = self.stats.controller(controller)?.clone();
        let handle = self.cache.meta().state().volumes.get(&id)?.clone();
        let volume_stats = self.stats.volume(&handle);
        Some(Arc::new(VolumeTarget {
            controllers: self.clone(),
            cache: self.cache.clone(),
            port: controller,
            handle,
            volume_stats,
            controller_stats,
        }))
    }

    /// The first controller whose ports are open (the unix socket's requests enter there).
    fn first_open(&self) -> ControllerId {
        let records = self.records.lock();
        records
            .iter()
            .find(|(_, record)| record.state.ports_open())
            .map_or(self.ids[0], |(id, _)| id)
    }
}

/// One controller's target port: serves every volume, and counts what it serves as that
/// controller's.
pub struct ControllerPort {
    controllers: Arc<Controllers>,
    controller: ControllerId,
}

impl ControllerPort {
    pub fn new(controllers: Arc<Controllers>, controller: ControllerId) -> Arc<ControllerPort> {
        Arc::new(ControllerPort {
            controllers,
            controller,
        })
    }
}

/// The node's unix socket: enters through the first controller whose ports are open.
pub struct NodePort {
    controllers: Arc<Controllers>,
}

impl NodePort {
    pub fn new(controllers: Arc<Controllers>) -> Arc<NodePort> {
        Arc::new(NodePort { controllers })
    }
}

/// One open volume on a port.
pub struct VolumeTarget {
    controllers: Arc<Controllers>,
    cache: Arc<Cache>,
    /// The controller whose port the connection arrived on.
    port: ControllerId,
    handle: Arc<VolumeHandle>,
    volume_stats: Arc<IoStats>,
    controller_stats: Arc<IoStats>,
}

impl VolumeTarget {
    /// Runs a cache operation admitted through this port's controller (retried after an
    /// ownership change). A panic in it fails that controller, not the node, and the
    /// request gets an I/O error.
    fn serve<T>(
        &self,
        mut operation: impl FnMut(&Cache) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        let cache = &*self.cache;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.admitted(self.port, || operation(cache))
        }));
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.controllers.fail_after_panic(self.port);
                Err(IoError::Media {
                    volume: self.handle.name.clone(),
                    detail: format!(
                        "controller {} failed while serving this request; reconnect through another controller's port",
                        self.port
                    ),
                })
            }
        }
    }

    /// Counts a finished request in the volume's and the controller's stats: `record` on
    /// success, an error on failure (a declined fast-zero is neither).
    fn account<T>(
        &self,
        result: Result<T, IoError>,
        started: Instant,
        record: impl Fn(&IoStats, Duration),
    ) -> Result<T, IoError> {
        match &result {
            Ok(_) => {
                let latency = started.elapsed();
                record(&self.volume_stats, latency);
                record(&self.controller_stats, latency);
            }
            Err(IoError::NotFast) => {}
            Err(_) => {
                self.volume_stats.record_error();
                self.controller_stats.record_error();
            }
        }
        result
    }

    fn write_then_flush(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoError> {
        self.serve(|cache| cache.write(&self.handle, offset, data))?;
        if fua {
            self.serve(Cache::flush)?;
        }
        Ok(())
    }
}

impl BlockTarget for VolumeTarget {
    fn name(&self) -> &str {
        &self.handle.name
    }

    fn size(&self) -> u64 {
        self.handle.size()
    }

    /// A write-protected volume is exported read-only; one protected while a client is
    /// connected refuses that client's writes with EPERM.
    fn read_only(&self) -> bool {
        self.handle.is_write_protected()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let started = Instant::now();
        let bytes = buf.len() as u64;
        let result = self.serve(|cache| cache.read(&self.handle, offset, buf));
        self.account(result, started, |stats, latency| {
            stats.record_read(bytes, latency)
        })
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoError> {
        let started = Instant::now();
        let result = self.write_then_flush(offset, data, fua);
        self.account(result, started, |stats, latency| {
            stats.record_write(data.len() as u64, latency)
        })
    }

    fn flush(&self) -> Result<(), IoError> {
        let started = Instant::now();
        let result = self.serve(Cache::flush);
        self.account(result, started, IoStats::record_flush)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoError> {
        let started = Instant::now();
        let result = self
            .serve(|cache| cache.trim(&self.handle, offset, len))
            .and_then(|()| {
                if fua {
                    self.serve(Cache::flush)
                } else {
                    Ok(())
                }
            });
        self.account(result, started, |stats, _| stats.record_trim())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), IoError> {
        let started = Instant::now();
        let result = self
            .serve(|cache| cache.write_zeroes(&self.handle, offset, len, no_hole, fast_only))
            .and_then(|()| {
                if fua {
                    self.serve(Cache::flush)
                } else {
                    Ok(())
                }
            });
        self.account(result, started, |stats, _| stats.record_write_zeroes())
    }

    fn prefetch(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.serve(|cache| cache.prefetch(&self.handle, offset, len))
    }

    fn block_status(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), IoError> {
        self.serve(|cache| cache.block_status(&self.handle, offset, len, out))
    }

    fn compare_with(&self, base: &str) -> Option<u64> {
        let state = self.cache.meta().state();
        let base = state.catalog.volume_by_name(base)?;
        (base.family() == self.handle.family && base.id != self.handle.id.0)
            .then_some(u64::from(base.id))
    }

    fn changed_status(
        &self,
        base: u64,
        offset: u64,
        len: u64,
        out: &mut Vec<ChangedExtent>,
    ) -> Result<(), IoError> {
        let base = u32::try_from(base).unwrap_or(u32::MAX);
        self.serve(|cache| cache.changed_status(&self.handle, base, offset, len, out))
    }

    fn copy_by_reference(
        &self,
        source: &dyn BlockTarget,
        from: u64,
        to: u64,
        len: u64,
    ) -> Result<Option<ShareOutcome>, IoError> {
        let Some(source) = source
            .as_any()
            .and_then(|any| any.downcast_ref::<VolumeTarget>())
        else {
            return Ok(None);
        };
        let block = BLOCK_SIZE as u64;
        let (from_block, to_block, blocks) = (from / block, to / block, len / block);
        if !(from | to | len).is_multiple_of(block)
            || !Arc::ptr_eq(&self.cache, &source.cache)
            || !Cache::can_share(&source.handle, from_block, &self.handle, to_block, blocks)
        {
            return Ok(None);
        }
        let started = Instant::now();
        let result = self.serve(|cache| {
            cache.share_blocks(&source.handle, from_block, &self.handle, to_block, blocks)
        });
        self.account(result, started, |stats, latency| {
            stats.record_write(len, latency)
        })
        .map(Some)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
