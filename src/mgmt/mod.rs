//! Management: the REST/JSON API on the node's unix socket and the CLI that talks to it.
//!
//! The server promises InfiniBox's REST shape (`/api/rest/...`, the `{result, error,
//! metadata}` envelope, InfiniBox error codes with matching HTTP statuses) so later issues
//! extend it rather than replace it. It assumes a [`Management`] implementation (the node)
//! that is safe to call from several request threads; every call is a control-plane
//! operation, never on the data path.

pub mod api;

pub use api::{
    Management, MgmtError, PoolCreate, PoolInfo, SystemInfo, VolumeCreate, VolumeInfo,
};
