//! Controllers: the layer between the target ports and the cache.
//!
//! Promises to the front ends: every export (a volume, by name) can be opened on any port,
//! and every request on it reaches the cache that holds its sections; a write is
//! acknowledged only once the cache holds it. Assumes the cache and metadata below are
//! shared by all connection threads.
//!
//! The node still runs the controllers' data path as one cache with the DRAM budget of all
//! controllers together. The per-controller caches, mirroring and failover (DESIGN.md,
//! "Sections and ownership") slot in here: `VolumeTarget` is where a request is cut into
//! sections and routed to their owner. Two pieces of that are built and tested but not yet
//! wired into the data path: [`state`], the controller's state machine, and [`placement`],
//! the stable hash that picks each section's owner and mirror.
//!
//! Every request a `VolumeTarget` serves is counted in its volume's and its controller's
//! [`IoStats`]; both are looked up once when the export is opened, so the per-request cost
//! is a clock read before and after and a few relaxed atomic adds.

pub mod placement;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::meta::VolumeHandle;
use crate::stats::{IoStats, StatsRegistry};
use crate::target::{BlockTarget, ExportInfo, ExportProvider, Extent};
use crate::types::IoError;

/// A checked controller number (0-based internally, shown 1-based to operators).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControllerId(u8);

impl ControllerId {
    /// The id of controller `index` of `count`; `None` out of range.
    pub fn new(index: usize, count: usize) -> Option<ControllerId> {
        (index < count && index < 8).then_some(ControllerId(index as u8))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for ControllerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0 + 1)
    }
}

/// The node's controllers as the front ends see them.
pub struct Controllers {
    cache: Arc<Cache>,
    ids: Vec<ControllerId>,
    stats: Arc<StatsRegistry>,
}

impl Controllers {
    pub fn new(cache: Arc<Cache>, count: usize) -> Arc<Controllers> {
        let ids = (0..count)
            .filter_map(|index| ControllerId::new(index, count))
            .collect();
        Arc::new(Controllers {
            cache,
            ids,
            stats: Arc::new(StatsRegistry::new(count)),
        })
    }

    pub fn ids(&self) -> &[ControllerId] {
        &self.ids
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Every controller as operators see it.
    pub fn infos(&self) -> Vec<crate::mgmt::api::ControllerInfo> {
        Vec::new()
    }

    /// Fails controller `number` (1-based); see `Management::fail_controller`.
    pub fn fail_by_number(
        &self,
        number: u32,
    ) -> Result<crate::mgmt::api::ControllerInfo, crate::mgmt::api::MgmtError> {
        Err(crate::mgmt::api::MgmtError::new(
            "CONTROLLER_NOT_FOUND",
            404,
            format!("no controller {number}"),
        ))
    }

    /// Recovers controller `number` (1-based); see `Management::recover_controller`.
    pub fn recover_by_number(
        &self,
        number: u32,
    ) -> Result<crate::mgmt::api::ControllerInfo, crate::mgmt::api::MgmtError> {
        self.fail_by_number(number)
    }

    /// The I/O statistics of every volume and controller (for `/metrics`).
    pub fn stats(&self) -> &Arc<StatsRegistry> {
        &self.stats
    }

    /// Opens the named export for a connection that arrived on `controller`'s port; `None`
    /// when there is no such volume or no such controller.
    pub fn open_export_on(
        &self,
        name: &str,
        controller: ControllerId,
    ) -> Option<Arc<dyn BlockTarget>> {
        let controller_stats = self.stats.controller(controller)?.clone();
        let handle = {
            let state = self.cache.meta().state();
            let volume = state.catalog.volume_by_name(name)?;
            state.volumes.get(&volume.id)?.clone()
        };
        let volume_stats = self.stats.volume(&handle);
        Some(Arc::new(VolumeTarget {
            cache: self.cache.clone(),
            handle,
            volume_stats,
            controller_stats,
        }))
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

impl ExportProvider for ControllerPort {
    fn list_exports(&self) -> Vec<ExportInfo> {
        self.controllers.list_exports()
    }

    fn open_export(&self, name: &str) -> Option<Arc<dyn BlockTarget>> {
        self.controllers.open_export_on(name, self.controller)
    }
}

impl ExportProvider for Controllers {
    fn list_exports(&self) -> Vec<ExportInfo> {
        let state = self.cache.meta().state();
        state
            .catalog
            .volumes
            .values()
            .map(|volume| ExportInfo {
                name: volume.name.clone(),
                size: volume.size,
                read_only: volume.write_protected,
            })
            .collect()
    }

    /// Opens on the first controller (the unix socket is controller 1's port; the TCP ports
    /// go through [`ControllerPort`]).
    fn open_export(&self, name: &str) -> Option<Arc<dyn BlockTarget>> {
        self.open_export_on(name, *self.ids.first()?)
    }
}

/// One open volume on a port.
pub struct VolumeTarget {
    cache: Arc<Cache>,
    handle: Arc<VolumeHandle>,
    volume_stats: Arc<IoStats>,
    controller_stats: Arc<IoStats>,
}

impl VolumeTarget {
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
        self.cache.write(&self.handle, offset, data)?;
        if fua {
            self.cache.flush()?;
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
        let result = self.cache.read(&self.handle, offset, buf);
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
        let result = self.cache.flush();
        self.account(result, started, IoStats::record_flush)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoError> {
        let started = Instant::now();
        let result = self.cache.trim(&self.handle, offset, len).and_then(|()| {
            if fua {
                self.cache.flush()?;
            }
            Ok(())
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
            .cache
            .write_zeroes(&self.handle, offset, len, no_hole, fast_only)
            .and_then(|()| {
                if fua {
                    self.cache.flush()?;
                }
                Ok(())
            });
        self.account(result, started, |stats, _| stats.record_write_zeroes())
    }

    fn prefetch(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.cache.prefetch(&self.handle, offset, len)
    }

    fn block_status(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), IoError> {
        self.cache.block_status(&self.handle, offset, len, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_ids_are_checked() {
        assert!(ControllerId::new(2, 3).is_some());
        assert!(ControllerId::new(3, 3).is_none());
        assert_eq!(ControllerId::new(0, 3).unwrap().to_string(), "1");
    }
}
