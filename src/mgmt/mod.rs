//! Management: the REST/JSON API on the node's unix socket and the CLI that talks to it.
//!
//! The server promises InfiniBox's REST shape (`/api/rest/...`, the `{result, error,
//! metadata}` envelope, InfiniBox error codes with matching HTTP statuses) so later issues
//! extend it rather than replace it. It assumes a [`Management`] implementation (the node)
//! that is safe to call from several request threads; every call is a control-plane
//! operation, never on the data path.
//!
//! Pieces: [`http`] frames requests and responses under size limits, [`rest`] routes them
//! to the [`Management`] calls and builds the envelopes, [`server`] owns the socket and the
//! connection threads, [`client`] and [`cli`] are the other end.

pub mod api;
pub mod cli;
pub mod client;
pub mod events;
pub mod http;
pub mod rest;
pub mod server;
#[cfg(test)]
mod tests;
pub mod top;
pub mod users;

pub use api::{
    Management, MgmtError, PoolCreate, PoolInfo, PoolUpdate, SystemInfo, VolumeCreate, VolumeInfo,
    VolumeUpdate,
};
pub use cli::{CliCommand, PoolCommand, SystemCommand, VolCommand, run};
pub use client::{Client, ClientError};
pub use server::spawn_server;
