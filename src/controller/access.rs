//! What each NBD client may reach through the controllers' ports.
//!
//! Promises: [`ControllerPort`] and [`NodePort`] list and open for a client only the
//! datasets its [`ExportView`] holds, checked by dataset id under the catalog lock at the
//! moment of the lookup (a rename cannot make a name point a client at a dataset it was not
//! granted); a dataset outside the view is answered exactly as a missing one. The view
//! comes from the [`ExportAccess`] the node installs; until one is installed, only the
//! clients that see everything ([`NbdClient::sees_everything`]) see anything.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ControllerId, ControllerPort, Controllers, NodePort};
use crate::target::{BlockTarget, ExportInfo, ExportProvider, NbdClient};

/// The datasets one client may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportView {
    /// Every volume and snapshot.
    Everything,
    /// Only these datasets (by id); empty for none.
    Datasets(BTreeSet<u32>),
}

impl ExportView {
    pub fn allows(&self, dataset_id: u32) -> bool {
        match self {
            ExportView::Everything => true,
            ExportView::Datasets(ids) => ids.contains(&dataset_id),
        }
    }
}

/// Decides what a client may reach; looked up once per NBD option (LIST, INFO, GO), never
/// per I/O.
pub trait ExportAccess: Send + Sync {
    fn view(&self, client: &NbdClient) -> ExportView;
}

/// The policy before the node installs its own: everything for the local administrator
/// and `--nbd-open`, nothing for anyone else.
pub struct DefaultAccess;

impl ExportAccess for DefaultAccess {
    fn view(&self, client: &NbdClient) -> ExportView {
        if client.sees_everything() {
            ExportView::Everything
        } else {
            ExportView::Datasets(BTreeSet::new())
        }
    }
}

impl Controllers {
    /// Installs the policy deciding what each NBD client may reach.
    pub fn set_export_access(&self, access: Arc<dyn ExportAccess>) {
        *self.access.lock() = access;
    }

    fn view_of(&self, client: &NbdClient) -> ExportView {
        let access = self.access.lock().clone();
        access.view(client)
    }

    /// The exports `client` may reach, in dataset id order.
    pub fn list_exports_for(&self, client: &NbdClient) -> Vec<ExportInfo> {
        let view = self.view_of(client);
        let state = self.cache.meta().state();
        state
            .catalog
            .volumes
            .values()
            .filter(|volume| view.allows(volume.id))
            .map(|volume| ExportInfo {
                name: volume.name.clone(),
                size: volume.size,
                read_only: volume.write_protected,
            })
            .collect()
    }

    /// Opens the export `name` for `client` on `controller`'s port; `None` when there is
    /// no such export or `client` may not reach it (the same answer).
    pub fn open_export_for(
        self: &Arc<Self>,
        client: &NbdClient,
        name: &str,
        controller: ControllerId,
    ) -> Option<Arc<dyn BlockTarget>> {
        let view = self.view_of(client);
        let id = self.cache.meta().state().catalog.volume_by_name(name)?.id;
        if !view.allows(id) {
            return None;
        }
        self.open_dataset_on(id, controller)
    }
}

impl ExportProvider for ControllerPort {
    fn list_exports(&self, client: &NbdClient) -> Vec<ExportInfo> {
        self.controllers.list_exports_for(client)
    }

    fn open_export(&self, client: &NbdClient, name: &str) -> Option<Arc<dyn BlockTarget>> {
        self.controllers
            .open_export_for(client, name, self.controller)
    }
}

impl ExportProvider for NodePort {
    fn list_exports(&self, client: &NbdClient) -> Vec<ExportInfo> {
        self.controllers.list_exports_for(client)
    }

    fn open_export(&self, client: &NbdClient, name: &str) -> Option<Arc<dyn BlockTarget>> {
        let controller = self.controllers.first_open();
        self.controllers.open_export_for(client, name, controller)
    }
}
