//! What operators see of one controller: the shape `GET /api/rest/controllers` returns,
//! made here, in the layer that knows the controllers, and served as it is by `mgmt`.

use serde::{Deserialize, Serialize};

/// One controller as `GET /api/rest/controllers` and `troika controller ls` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ControllerInfo {
    /// 1, 2 or 3 (as operators count).
    pub id: u32,
    /// `controller-1`, ...
    pub name: String,
    /// STARTING, ACTIVE, FAILED, RECOVERING or STOPPED.
    pub state: String,
    /// Its target ports while they are open, e.g. `nbd://127.0.0.1:10809`.
    pub ports: Vec<String>,
    /// Share of all sections it owns now (0.0 to 1.0).
    pub ownership_share: f64,
    /// Sections it holds in cache as their owner.
    pub owned_sections: u64,
    /// Its DRAM cache budget.
    pub cache_bytes: u64,
    /// Host data it owns that is not destaged yet.
    pub dirty_bytes: u64,
    /// Copies of other controllers' dirty data it holds as their mirror.
    pub mirror_bytes: u64,
    /// Of its dirty bytes, those without a second copy yet (re-mirroring after a failure).
    pub mirror_lag_bytes: u64,
    /// Re-mirroring after a failover, 0.0 to 1.0; `None` when nothing is being re-mirrored.
    pub remirror_progress: Option<f64>,
    /// Failback, 0.0 to 1.0, while ownership moves back to it; `None` otherwise.
    pub failback_progress: Option<f64>,
    /// Times it failed since the node started.
    pub failovers: u64,
    /// Milliseconds since the Unix epoch of its last state change.
    pub state_changed_at: u64,
}
