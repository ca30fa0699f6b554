//! Controllers: the layer between the target ports and the cache.
//!
//! Promises to the front ends: every export (a volume, by name) can be opened on any port,
//! and every request on it reaches the cache that holds its sections; a write is
//! acknowledged only once the cache holds it. Assumes the cache and metadata below are
//! shared by all connection threads.
//!
//! This node runs the controllers' data path as one cache with the DRAM budget of
//! all controllers together. The per-controller caches, section ownership by stable hash,
//! mirroring and failover (DESIGN.md, "Sections and ownership") slot in here: `VolumeTarget`
//! is where a request is cut into sections and routed to their owner.

use std::sync::Arc;

use crate::cache::Cache;
use crate::meta::VolumeHandle;
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
}

impl Controllers {
    pub fn new(cache: Arc<Cache>, count: usize) -> Arc<Controllers> {
        let ids = (0..count)
            .filter_map(|index| ControllerId::new(index, count))
            .collect();
        Arc::new(Controllers { cache, ids })
    }

    pub fn ids(&self) -> &[ControllerId] {
        &self.ids
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
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
                read_only: false,
            })
            .collect()
    }

    fn open_export(&self, name: &str) -> Option<Arc<dyn BlockTarget>> {
        let state = self.cache.meta().state();
        let volume = state.catalog.volume_by_name(name)?;
        let handle = state.volumes.get(&volume.id)?.clone();
        Some(Arc::new(VolumeTarget {
            cache: self.cache.clone(),
            handle,
        }))
    }
}

/// One open volume on a port.
pub struct VolumeTarget {
    cache: Arc<Cache>,
    handle: Arc<VolumeHandle>,
}

impl BlockTarget for VolumeTarget {
    fn name(&self) -> &str {
        &self.handle.name
    }

    fn size(&self) -> u64 {
        self.handle.size()
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.cache.read(&self.handle, offset, buf)
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoError> {
        self.cache.write(&self.handle, offset, data)?;
        if fua {
            self.cache.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IoError> {
        self.cache.flush()
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoError> {
        self.cache.trim(&self.handle, offset, len)?;
        if fua {
            self.cache.flush()?;
        }
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), IoError> {
        self.cache
            .write_zeroes(&self.handle, offset, len, no_hole, fast_only)?;
        if fua {
            self.cache.flush()?;
        }
        Ok(())
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
