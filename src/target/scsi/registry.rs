//! The node-wide table of logical unit state.
//! SKELETON: the scsi helper owns this file.

use std::sync::Arc;

use super::{LuRegistry, LuShared, PortGroups, PrStore};

pub(crate) struct Inner {
    pub(crate) pr_store: Arc<dyn PrStore>,
    pub(crate) ports: Arc<dyn PortGroups>,
}

impl LuRegistry {
    pub fn new(pr_store: Arc<dyn PrStore>, ports: Arc<dyn PortGroups>) -> Arc<LuRegistry> {
        Arc::new(LuRegistry {
            inner: Inner { pr_store, ports },
        })
    }

    /// The shared state of `dataset_id` (created, and its reservations loaded, on first use).
    pub fn shared(&self, dataset_id: u32) -> Arc<LuShared> {
        let _ = (&self.inner.pr_store, &self.inner.ports, dataset_id);
        todo!("scsi helper")
    }

    /// Forgets a deleted dataset (and its persisted reservations).
    pub fn forget(&self, dataset_id: u32) {
        let _ = dataset_id;
        todo!("scsi helper")
    }

    /// Every nexus of every unit gets the unit attention ASYMMETRIC ACCESS STATE CHANGED
    /// (0x2A/0x06): a controller failed or came back.
    pub fn alua_changed(&self) {
        todo!("scsi helper")
    }
}
