//! The node-wide table of logical unit state: one [`LuShared`] per dataset, created (and
//! its persistent reservations loaded) on first use, dropped when the dataset is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{LuRegistry, LuShared, PortGroups, PrStore};

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

    /// The shared state of `dataset_id` (created, and its reservations loaded, on first use).
    pub fn shared(&self, dataset_id: u32) -> Arc<LuShared> {
        let mut units = self.inner.units.lock();
        units
            .entry(dataset_id)
            .or_insert_with(|| Arc::new(LuShared::new(dataset_id, self.inner.pr_store.clone())))
            .clone()
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
