//! How the cache learns where a section lives: the controllers layer places sections, the
//! cache asks it per request (one atomic load, no lock).

use super::SectionKey;
use crate::types::ControllerId;

/// Where a section lives: the controller whose domain owns it and the one whose domain
/// mirrors it, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub owner: ControllerId,
    pub mirror: Option<ControllerId>,
}

/// Names each section's owner and mirror (the controllers layer implements it).
pub trait SectionRouter: Send + Sync {
    fn route(&self, key: SectionKey) -> Route;
}
