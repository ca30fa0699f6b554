//! Management: the REST/JSON API on the node's unix socket and TCP port (the CLI that
//! talks to it is `crate::cli`).
//!
//! The server promises InfiniBox's REST shape (`/api/rest/...`, the `{result, error,
//! metadata}` envelope, paging, `field=op:value` filters, InfiniBox error codes with
//! matching HTTP statuses) so InfiniBox tools (infinisdk, curl scripts) work unchanged and
//! later issues extend it rather than replace it. The unix socket is trusted (its callers
//! act as ADMIN); TCP callers authenticate (basic auth or a session cookie) and are held to
//! their role. Every change an operator cares about raises a persistent event. Management
//! threads run at idle CPU priority: the API never takes CPU the data path wants. It
//! assumes a [`Management`] implementation (the node) that is safe to call from several
//! request threads; every call is a control-plane operation, never on the data path.
//!
//! Pieces: [`http`] frames requests and responses under size limits, [`rest`] routes them
//! (one route table for dispatch, roles and the OpenAPI description) to the
//! [`Management`] calls, [`users`] holds users, password hashes and sessions, [`events`]
//! the event log, [`server`] owns the sockets and the connection threads; `crate::cli` (the
//! operator's CLI, its HTTP client and `top`) is the other end.

pub mod api;
pub mod drive_api;
pub mod events;
pub mod http;
pub mod login_limit;
pub mod rest;
pub mod scrub_api;
pub mod server;
pub mod snapshot_api;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod users;

pub use api::{
    Management, MgmtError, PoolCreate, PoolInfo, PoolUpdate, SystemInfo, VolumeCreate, VolumeInfo,
    VolumeUpdate,
};
pub use server::spawn_server;
