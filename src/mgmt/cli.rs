//! The `troika` CLI's management commands: clap subcommands that call the REST API over the
//! node's unix socket and print tables (or the API's `result` JSON with `--json`).
//!
//! Objects are named by NAME on the command line; each name is resolved to an id with a
//! filtered list (`?name=eq:NAME`). Destructive commands (delete, resize) pass
//! `approved=true`: typing the command is the operator's approval.
//!
//! Exit codes: 0 success, 1 the API refused (its code and message go to stderr), 2 usage,
//! 3 the node cannot be reached.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::api::{PoolInfo, SystemInfo, VolumeInfo};
use super::client::{Client, ClientError, encode_query_value};
use super::rest::MAX_PAGE_SIZE;
use crate::types::{format_size, parse_size};

pub const EXIT_OK: i32 = 0;
pub const EXIT_API_ERROR: i32 = 1;
/// What clap exits with on a usage error; the binary uses it for its own usage errors.
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;

/// Management commands.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum CliCommand {
    /// Create, list and delete pools.
    Pool {
        #[command(subcommand)]
        cmd: PoolCommand,
    },
    /// Create, list, resize and delete volumes.
    #[command(alias = "volume")]
    Vol {
        #[command(subcommand)]
        cmd: VolCommand,
    },
    /// Show the system.
    System {
        #[command(subcommand)]
        cmd: SystemCommand,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum PoolCommand {
    /// Create a pool.
    Create {
        name: String,
        /// Physical capacity, e.g. 512M, 10G, 1T.
        #[arg(long, value_parser = size_arg)]
        size: u64,
        /// Virtual capacity (thin provisioning); defaults to the physical capacity.
        #[arg(long, value_parser = size_arg)]
        virtual_size: Option<u64>,
    },
    /// List pools.
    Ls,
    /// Delete an empty pool.
    Delete { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum VolCommand {
    /// Create a volume.
    Create {
        name: String,
        /// The pool that holds the volume.
        #[arg(long)]
        pool: String,
        /// Size, e.g. 512M, 10G, 1T.
        #[arg(long, value_parser = size_arg)]
        size: u64,
        /// Reserve the whole size in the pool now (default: thin).
        #[arg(long)]
        thick: bool,
    },
    /// List volumes.
    Ls {
        /// Only the volumes of this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Grow or shrink a volume (shrinking discards the data past the new end).
    Resize {
        name: String,
        #[arg(value_parser = size_arg)]
        size: u64,
    },
    /// Delete a volume and its data.
    Delete { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum SystemCommand {
    /// Show the system's identity, state and capacity.
    Show,
}

/// clap value parser for sizes.
fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).ok_or_else(|| {
        format!(
            "{text:?} is not a size; use a number of bytes with an optional K, M, G, T or P \
             suffix, e.g. 512M, 10G, 1T"
        )
    })
}

/// Runs one command against the node's socket, printing to stdout and stderr; returns the
/// process exit code.
pub fn run(command: CliCommand, socket: &Path, json: bool) -> i32 {
    run_with(
        command,
        socket,
        json,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`run`] with the output streams given (tests capture them).
pub fn run_with(
    command: CliCommand,
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let session = Session {
        client: Client::new(socket.to_path_buf()),
        json,
    };
    let outcome = session
        .execute(command)
        .and_then(|text| out.write_all(text.as_bytes()).map_err(CliError::Output));
    match outcome {
        Ok(()) => EXIT_OK,
        Err(error) => {
            let _ = writeln!(err, "troika: error: {error}");
            error.exit_code()
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { .. } | CliError::Output(_) => EXIT_API_ERROR,
            CliError::Client(ClientError::BadResponse { .. }) => EXIT_API_ERROR,
            CliError::Client(_) => EXIT_UNREACHABLE,
        }
    }

    fn api(code: &str, message: String) -> CliError {
        CliError::Api {
            code: code.to_owned(),
            message,
        }
    }
}

struct Session {
    client: Client,
    json: bool,
}

impl Session {
    /// Runs the command and returns what to print.
    fn execute(&self, command: CliCommand) -> Result<String, CliError> {
        match command {
            CliCommand::Pool { cmd } => self.pool(cmd),
            CliCommand::Vol { cmd } => self.volume(cmd),
            CliCommand::System {
                cmd: SystemCommand::Show,
            } => {
                let system = self.call("GET", "/api/rest/system", None)?;
                self.render(system, |system: SystemInfo| system_table(&system))
            }
        }
    }

    fn pool(&self, command: PoolCommand) -> Result<String, CliError> {
        match command {
            PoolCommand::Create {
                name,
                size,
                virtual_size,
            } => {
                let body = json!({
                    "name": name,
                    "physical_capacity": size,
                    "virtual_capacity": virtual_size,
                });
                let pool = self.call("POST", "/api/rest/pools", Some(&body))?;
                self.render(pool, |pool: PoolInfo| pool_table(&[pool]))
            }
            PoolCommand::Ls => {
                let pools = self.list_all("/api/rest/pools?sort=name")?;
                self.render(pools, |pools: Vec<PoolInfo>| pool_table(&pools))
            }
            PoolCommand::Delete { name } => {
                let id = self.resolve("pools", "POOL_NOT_FOUND", "pool", &name)?;
                let path = format!("/api/rest/pools/{id}?approved=true");
                let pool = self.call("DELETE", &path, None)?;
                self.render(pool, |pool: PoolInfo| {
                    format!("deleted pool {:?} (id {})\n", pool.name, pool.id)
                })
            }
        }
    }

    fn volume(&self, command: VolCommand) -> Result<String, CliError> {
        match command {
            VolCommand::Create {
                name,
                pool,
                size,
                thick,
            } => {
                let pool_id = self.resolve("pools", "POOL_NOT_FOUND", "pool", &pool)?;
                let body = json!({
                    "name": name,
                    "pool_id": pool_id,
                    "size": size,
                    "provtype": if thick { "THICK" } else { "THIN" },
                });
                let volume = self.call("POST", "/api/rest/volumes", Some(&body))?;
                self.render(volume, |volume: VolumeInfo| volume_table(&[volume]))
            }
            VolCommand::Ls { pool } => {
                let mut path = "/api/rest/volumes?sort=name".to_owned();
                if let Some(pool) = pool {
                    let pool_id = self.resolve("pools", "POOL_NOT_FOUND", "pool", &pool)?;
                    path.push_str(&format!("&pool_id=eq:{pool_id}"));
                }
                let volumes = self.list_all(&path)?;
                self.render(volumes, |volumes: Vec<VolumeInfo>| volume_table(&volumes))
            }
            VolCommand::Resize { name, size } => {
                let id = self.resolve("volumes", "VOLUME_NOT_FOUND", "volume", &name)?;
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let volume = self.call("PUT", &path, Some(&json!({ "size": size })))?;
                self.render(volume, |volume: VolumeInfo| volume_table(&[volume]))
            }
            VolCommand::Delete { name } => {
                let id = self.resolve("volumes", "VOLUME_NOT_FOUND", "volume", &name)?;
                let path = format!("/api/rest/volumes/{id}?approved=true");
                let volume = self.call("DELETE", &path, None)?;
                self.render(volume, |volume: VolumeInfo| {
                    format!("deleted volume {:?} (id {})\n", volume.name, volume.id)
                })
            }
        }
    }

    /// With `--json` the raw `result`; otherwise `human` of the typed result.
    fn render<T: DeserializeOwned>(
        &self,
        result: Value,
        human: impl FnOnce(T) -> String,
    ) -> Result<String, CliError> {
        if self.json {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default();
            return Ok(text + "\n");
        }
        let typed = serde_json::from_value(result).map_err(|error| {
            CliError::Client(ClientError::BadResponse {
                socket: self.client.socket().to_path_buf(),
                reason: format!("unexpected result: {error}"),
            })
        })?;
        Ok(human(typed))
    }

    /// One API call; an error envelope or a non-2xx status becomes [`CliError::Api`].
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let (status, envelope) = self.client.request(method, path, body)?;
        result_of(status, envelope)
    }

    /// Every page of a list, concatenated.
    fn list_all(&self, path: &str) -> Result<Value, CliError> {
        let mut objects = Vec::new();
        let mut page = 1u64;
        loop {
            let paged = format!("{path}&page={page}&page_size={MAX_PAGE_SIZE}");
            let (status, envelope) = self.client.request("GET", &paged, None)?;
            let pages_total = envelope["metadata"]["pages_total"].as_u64().unwrap_or(0);
            let result = result_of(status, envelope)?;
            match result {
                Value::Array(items) => objects.extend(items),
                other => objects.push(other),
            }
            if page >= pages_total {
                return Ok(Value::Array(objects));
            }
            page += 1;
        }
    }

    /// The id of the object named `name` in `collection`.
    fn resolve(
        &self,
        collection: &str,
        not_found: &str,
        kind: &str,
        name: &str,
    ) -> Result<u32, CliError> {
        let path = format!(
            "/api/rest/{collection}?name=eq:{}&fields=id",
            encode_query_value(name)
        );
        let found = self.call("GET", &path, None)?;
        found
            .get(0)
            .and_then(|object| object["id"].as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| CliError::api(not_found, format!("{kind} {name:?} does not exist")))
    }
}

/// The `result` of an envelope; its `error`, or a non-2xx status, becomes [`CliError::Api`].
fn result_of(status: u16, mut envelope: Value) -> Result<Value, CliError> {
    if let Some(error) = envelope.get("error").filter(|error| !error.is_null()) {
        let code = error["code"].as_str().unwrap_or("ERROR");
        let message = error["message"].as_str().unwrap_or("(no message)");
        return Err(CliError::api(code, message.to_owned()));
    }
    if !(200..300).contains(&status) {
        return Err(CliError::api("HTTP_ERROR", format!("HTTP status {status}")));
    }
    Ok(envelope
        .get_mut("result")
        .map(Value::take)
        .unwrap_or_default())
}

/// Left-aligned columns separated by two spaces, no trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|title| title.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn pool_table(pools: &[PoolInfo]) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|pool| {
            vec![
                pool.name.clone(),
                pool.id.to_string(),
                format_size(pool.physical_capacity),
                format_size(pool.virtual_capacity),
                format_size(pool.allocated_physical_space),
                format_size(pool.free_physical_space),
                pool.volumes_count.to_string(),
                pool.state.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "ID", "PHYSICAL", "VIRTUAL", "USED", "FREE", "VOLUMES", "STATE",
        ],
        &rows,
    )
}

fn volume_table(volumes: &[VolumeInfo]) -> String {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|volume| {
            vec![
                volume.name.clone(),
                volume.id.to_string(),
                format_size(volume.size),
                format_size(volume.used),
                volume.pool_name.clone(),
                volume.provtype.clone(),
                volume.serial.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "ID", "SIZE", "USED", "POOL", "PROVTYPE", "SERIAL"],
        &rows,
    )
}

fn system_table(system: &SystemInfo) -> String {
    let rows = vec![
        vec!["name".into(), system.name.clone()],
        vec!["serial".into(), system.serial.to_string()],
        vec!["model".into(), system.model.clone()],
        vec!["version".into(), system.version.clone()],
        vec!["state".into(), system.state.clone()],
        vec![
            "physical capacity".into(),
            format_size(system.physical_capacity),
        ],
        vec![
            "allocated physical".into(),
            format_size(system.allocated_physical_capacity),
        ],
    ];
    table(&["FIELD", "VALUE"], &rows)
}
