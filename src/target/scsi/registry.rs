//! The node-wide table of logical unit state: one [`LuShared`] per dataset, created (and
//! its persistent reservations loaded) on first use, dropped when the dataset is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{LuRegistry, LuShared, PortGroups, PrStore};

/// Saved reservations of a dataset that could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error(
    "the persistent reservations of dataset {dataset_id} in {location} cannot be loaded: {reason}; \
     the node will not serve the unit as if it had none. Restore the file from a copy, or \
     remove it to drop that unit's reservations knowingly"
)]
pub struct ReservationsError {
    pub dataset_id: u32,
    pub location: String,
    pub reason: String,
}

pub(crate) struct Inner {
    pub(crate) pr_store: Arc<dyn PrStore>,
    pub(crate) ports: Arc<dyn PortGroups>,
    units: Mutex<HashMap<u32, Arc<LuShared>>>,
}

impl LuRegistry {
    pub fn new(pr_store: Arc<dyn PrStore>, ports: Arc<dyn PortGroups>) -> Arc<LuRegistry> {
        Arc::new(LuRegistry {
            inner: Inner {
                pr_store,
                ports,
                units: Mutex::new(HashMap::new()),
            },
        })
    }

    /// The shared state of `dataset_id` (created, and its reservations loaded, on first
    /// use); an error when its saved reservations cannot be read (the unit must not be
    /// served as if it had none).
    pub fn shared(&self, dataset_id: u32) -> Result<Arc<LuShared>, ReservationsError> {
        let mut units = self.inner.units.lock();
        if let Some(shared) = units.get(&dataset_id) {
            return Ok(shared.clone());
        }
        let shared = Arc::new(LuShared::new(dataset_id, self.inner.pr_store.clone())?);
        units.insert(dataset_id, shared.clone());
        Ok(shared)
    }

    /// Loads the saved reservations of every dataset in `datasets` now (at start), so a
    /// damaged or unreadable one is found before anything is served.
    pub fn load_all(
        &self,
        datasets: impl IntoIterator<Item = u32>,
    ) -> Result<(), ReservationsError> {
        for dataset_id in datasets {
            self.shared(dataset_id)?;
        }
        Ok(())
    }

    /// The node's target ports, as every unit of this registry reports them.
    pub fn ports(&self) -> Arc<dyn PortGroups> {
        self.inner.ports.clone()
    }

    /// Forgets a deleted dataset (and its persisted reservations).
    pub fn forget(&self, dataset_id: u32) {
        let removed = self.inner.units.lock().remove(&dataset_id);
        match removed {
            Some(shared) => shared.remove_persisted(),
            None => self.inner.pr_store.remove(dataset_id),
        }
    }

    /// Every nexus of every unit gets the unit attention ASYMMETRIC ACCESS STATE CHANGED
    /// (0x2A/0x06): a controller failed or came back.
    pub fn alua_changed(&self) {
        let units: Vec<Arc<LuShared>> = self.inner.units.lock().values().cloned().collect();
        for unit in units {
            unit.raise_for_all(0x2A, 0x06, None);
        }
    }
}
