//! What the controllers layer answers when an operator's request about a controller
//! (fail it, recover it) cannot be carried out. The messages speak to the operator; the
//! node maps each kind to its management error (HTTP status and error code) in one place.

use super::state::InvalidTransition;
use crate::types::ControllerId;

/// Why a controller operation was refused. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ControllerError {
    /// The operator named a controller number the node does not have.
    #[error("there is no controller {number}; this node has controllers 1 to {count}")]
    NotFound { number: u32, count: usize },
    /// The controller's state machine does not take the request in its current state.
    #[error("controller {id} cannot {action} now: {refused}")]
    Transition {
        id: ControllerId,
        /// What was asked: `fail` or `recover`.
        action: &'static str,
        refused: InvalidTransition,
    },
    /// Failing the controller would leave no controller to serve.
    #[error("controller {id} is the last live controller; failing it would stop the node")]
    LastLive { id: ControllerId },
    /// Dirty data still has one copy after the last failure; a second failure now could
    /// lose it.
    #[error(
        "controllers are still re-mirroring {unmirrored_mib:.1} MiB of dirty data after the last failure; fail another controller once REDUNDANCY_RESTORED is raised (see `troika controller ls`)"
    )]
    StillRemirroring { unmirrored_mib: f64 },
    /// Another controller's failback is under way (one at a time).
    #[error(
        "controller {returning} is still failing back; recover controller {id} once it is ACTIVE (see `troika controller ls`)"
    )]
    FailbackUnderWay {
        returning: ControllerId,
        id: ControllerId,
    },
}
