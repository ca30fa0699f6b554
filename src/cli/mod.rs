//! The management client: the operator's CLI (`troika pool|vol|snap|...`), the HTTP client
//! it uses ([`client`]) and `troika top` ([`top`]).
//!
//! What it promises: it talks to a node only through the management API's wire format
//! (the REST paths, the `{result, error, metadata}` envelope and the request and answer
//! types of `crate::mgmt`, with their error codes); it never reaches into the node's
//! layers, so it works the same against a node on this machine or across the network.
//!
//! The commands are clap subcommands that call the REST API and print tables (or the
//! API's `result` JSON with `--json`).
//!
//! The API is reached on the node's unix socket (the caller acts as the local ADMIN) or, with
//! `--url https://HOST:PORT`, on its TCP listener with HTTP basic credentials (`--user`, the
//! password from `TROIKA_PASSWORD` or a prompt with echo off). Over HTTPS the node's
//! certificate is verified against `--ca FILE` (env `TROIKA_CA`; default
//! `DATA/tls/server-cert.pem`, the node's own certificate when the CLI runs beside it).
//!
//! Objects are named by NAME on the command line; each name is resolved to an id with a
//! filtered list (`?name=eq:NAME`, with `type=eq:SNAPSHOT` where only a snapshot or group
//! snapshot will do, so `snap delete` never deletes a master volume). Controllers are named
//! by their number (1, 2, ...). Destructive commands (delete, resize, update, restore,
//! refresh, lock, controller fail, fault inject, clear and power-cut) pass `approved=true`:
//! typing the command is the operator's approval.
//!
//! Snapshots (`snap create|ls|delete|refresh|lock|diff`, `vol restore`) are volumes of type
//! SNAPSHOT; consistency groups (`cg create|ls|show|add|remove|snap|restore|delete`) snapshot
//! and restore their member volumes at one instant, a group snapshot (`cg snap`) being a
//! group of type SNAPSHOT whose members are the snapshots. Lock ends (`--lock-until`,
//! `--until`) are UTC times or durations from now, see [`LockUntil`].
//!
//! Snapshot policies (`policy create|ls|show|add|remove|enable|disable|delete`) are run by
//! the node: each schedule (`--schedule NAME:EVERY:KEEP[:LOCK]`, e.g. `hourly:1h:24`)
//! snapshots every volume of the policy once per EVERY, locks each snapshot for LOCK, and
//! keeps the newest KEEP per volume; deleting a policy leaves its snapshots.
//!
//! Exit codes: 0 success, 1 the API refused (its code and message go to stderr), 2 usage,
//! 3 the node cannot be reached, 4 the node refused the credentials.
//!
//! Output never panics: a write error is an error like the others (exit 1 with a message),
//! except a closed pipe (`troika vol ls | head -1`), which ends the command quietly with 0,
//! the way a reader that stopped reading expects.
//!
//! Pieces: `session` holds the client and the calls every verb shares, `objects` the pool,
//! volume and system verbs, `snapshots` the snapshot verbs and `vol restore`,
//! `consistency_groups` the group verbs, `lock_until` the lock end parser, `policies` the
//! snapshot policy verbs, `hosts` the host and host cluster verbs, `schedule_spec` the schedule parser, `accounts` the user verbs,
//! `controllers` the controller verbs, `drives` the drive verbs, `faults` the fault injection verbs, `events` the event log and `top`, `tables` the human
//! `controllers` the controller verbs, `faults` the fault injection verbs, `scrub` the scrub verbs, `events` the event log and `top`, `tables` the human
//! output, `terminal` the password prompt.

mod accounts;
pub mod client;
mod consistency_groups;
mod controllers;
mod drives;
mod events;
mod faults;
mod host_commands;
mod lock_until;
mod objects;
mod policies;
mod schedule_spec;
mod scrub;
mod session;
mod snapshots;
mod tables;
mod terminal;
pub mod top;

use std::io::Write;
use std::path::Path;

use crate::mgmt::api::ScheduleInfo;
use crate::types::parse_size;
use client::{Client, ClientError, Endpoint};
pub use host_commands::{ChapArg, ChapArgs, ClusterCommand, HostCommand};
pub use lock_until::LockUntil;
use session::Session;

pub const EXIT_OK: i32 = 0;
pub const EXIT_API_ERROR: i32 = 1;
/// What clap exits with on a usage error; the binary uses it for its own usage errors.
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;
/// The node answered 401: wrong user or password, or a disabled user.
pub const EXIT_UNAUTHORIZED: i32 = 4;

/// Environment variable with the password of `--user`.
pub const PASSWORD_ENV: &str = "TROIKA_PASSWORD";
/// Environment variable with the password of a user being created or changed.
pub const NEW_PASSWORD_ENV: &str = "TROIKA_NEW_PASSWORD";

/// Management commands.
#[derive(Clone, Debug, PartialEq, clap::Subcommand)]
pub enum CliCommand {
    /// Create, list, change and delete pools.
    Pool {
        #[command(subcommand)]
        cmd: PoolCommand,
    },
    /// Create, list, change, resize, restore and delete volumes.
    #[command(alias = "volume")]
    Vol {
        #[command(subcommand)]
        cmd: VolCommand,
    },
    /// Take, list, lock, refresh, compare and delete snapshots.
    #[command(alias = "snapshot")]
    Snap {
        #[command(subcommand)]
        cmd: SnapCommand,
    },
    /// Consistency groups: volumes snapshotted and restored together, at one instant.
    Cg {
        #[command(subcommand)]
        cmd: CgCommand,
    },
    /// Snapshot policies: schedules by which the node snapshots volumes and keeps the newest.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCommand,
    },
    /// Hosts: the iSCSI initiators the node admits, their CHAP settings and LUN mappings.
    Host {
        #[command(subcommand)]
        cmd: HostCommand,
    },
    /// Host clusters: hosts that share LUN mappings.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCommand,
    },
    /// Create, list, change and delete users.
    User {
        #[command(subcommand)]
        cmd: UserCommand,
    },
    /// Show the event log, or follow it.
    Event {
        #[command(subcommand)]
        cmd: EventCommand,
    },
    /// The newest events (like `event ls`), or with --follow new ones as they come (like
    /// `event follow`).
    Events {
        /// Keep printing new events.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        filter: EventFilter,
        /// How many of the newest events to list.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..),
              conflicts_with = "follow")]
        limit: u64,
        #[command(flatten)]
        stop: FollowStop,
    },
    /// Live per-volume IOPS, throughput, latency and cache hits from the node's metrics.
    Top {
        /// Seconds between frames.
        #[arg(long, default_value_t = 2.0, value_parser = interval_arg)]
        interval: f64,
        /// Stop after this many frames (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show the system.
    System {
        #[command(subcommand)]
        cmd: SystemCommand,
    },
    /// List the controllers, fail one or recover it.
    Controller {
        #[command(subcommand)]
        cmd: ControllerCommand,
    },
    /// List the NL-SAS drives with their state and rebuild progress; fail, replace, and set
    /// the rebuild priority (ADMIN).
    Drive {
        #[command(subcommand)]
        cmd: DriveCommand,
    },
    /// Inject faults into the node's devices, list and clear them, cut the power (ADMIN or
    /// TECHNICIAN).
    Fault {
        #[command(subcommand)]
        cmd: FaultCommand,
    },
    /// The background scrub of the NL-SAS array: show it, start or stop a pass.
    Scrub {
        #[command(subcommand)]
        cmd: ScrubCommand,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum ScrubCommand {
    /// Show whether a pass runs, its progress and repairs, and when the next starts.
    Status,
    /// Start a pass over every allocated row now (ADMIN or TECHNICIAN).
    Start,
    /// Stop the running pass; the next starts after the interval (ADMIN or TECHNICIAN).
    Stop,
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
    /// List pools with their state (NORMAL, LIMITED, LOCKED) and space.
    Ls,
    /// Change a pool's name, capacities, thresholds or SSD cache flag.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        name: String,
        /// The new name.
        #[arg(long = "name", group = "change")]
        new_name: Option<String>,
        /// New physical capacity.
        #[arg(long, value_parser = size_arg, group = "change")]
        size: Option<u64>,
        /// New virtual capacity.
        #[arg(long, value_parser = size_arg, group = "change")]
        virtual_size: Option<u64>,
        /// Physical usage (percent) that raises a warning.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100), group = "change")]
        warning: Option<u8>,
        /// Physical usage (percent) that raises a critical event.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100), group = "change")]
        critical: Option<u8>,
        /// Cache the pool's volumes on SSD.
        #[arg(long, value_parser = on_off_arg, value_name = "on|off", group = "change")]
        ssd: Option<bool>,
    },
    /// Show a pool's owners (POOL_ADMIN users), adding or removing some first.
    Owners {
        name: String,
        /// Make this user an owner (repeatable).
        #[arg(long, value_name = "USER")]
        add: Vec<String>,
        /// Stop this user owning the pool (repeatable).
        #[arg(long, value_name = "USER")]
        remove: Vec<String>,
    },
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
    /// List volumes with their provisioning, write protection and used space.
    Ls {
        /// Only the volumes of this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Change a volume's name, write protection or SSD cache flag.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        name: String,
        /// The new name.
        #[arg(long = "name", group = "change")]
        new_name: Option<String>,
        /// Refuse writes (the NBD export becomes read-only).
        #[arg(long, value_parser = on_off_arg, value_name = "on|off", group = "change")]
        write_protect: Option<bool>,
        /// Cache the volume on SSD.
        #[arg(long, value_parser = on_off_arg, value_name = "on|off", group = "change")]
        ssd: Option<bool>,
    },
    /// Grow or shrink a volume (shrinking discards the data past the new end).
    Resize {
        name: String,
        #[arg(value_parser = size_arg)]
        size: u64,
    },
    /// Replace a volume's contents with a snapshot's (hosts see the snapshot's data at once).
    Restore {
        name: String,
        /// A snapshot of the volume's family.
        snapshot: String,
    },
    /// Delete a volume and its data.
    Delete { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum SnapCommand {
    /// Take a snapshot of a volume (or of a snapshot); it is read-only unless --writable.
    Create {
        /// The volume or snapshot to take it of.
        volume: String,
        /// The snapshot's name (default: the node names it after the volume).
        #[arg(long)]
        name: Option<String>,
        /// Nobody may delete or change it until then: a UTC time ("2030-01-31 12:00:00",
        /// 2030-01-31T12:00:00Z) or a duration from now (30m, 12h, 7d).
        #[arg(long, value_parser = LockUntil::parse, value_name = "TIME")]
        lock_until: Option<LockUntil>,
        /// Let hosts write the snapshot.
        #[arg(long)]
        writable: bool,
    },
    /// List the snapshots with their space and locks, or only those taken of VOL.
    Ls {
        /// A volume or snapshot whose snapshots to list.
        volume: Option<String>,
    },
    /// Delete a snapshot (refused while it is locked or has snapshots of its own).
    Delete { name: String },
    /// Replace a snapshot's contents with its parent's current contents.
    Refresh { name: String },
    /// Lock a snapshot, or extend its lock (a lock is never shortened).
    Lock {
        name: String,
        /// A UTC time ("2030-01-31 12:00:00", 2030-01-31T12:00:00Z) or a duration from now
        /// (30m, 12h, 7d).
        #[arg(long, value_parser = LockUntil::parse, value_name = "TIME")]
        until: LockUntil,
    },
    /// The byte ranges where A differs from B (two volumes or snapshots of one family).
    Diff {
        #[arg(value_name = "A")]
        name: String,
        #[arg(value_name = "B")]
        base: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum CgCommand {
    /// Create an empty consistency group.
    Create {
        name: String,
        /// The pool of the group and its volumes.
        #[arg(long)]
        pool: String,
    },
    /// List the consistency groups and group snapshots.
    Ls,
    /// Show a consistency group or group snapshot, and its members.
    Show { name: String },
    /// Add a volume of the group's pool to the group.
    Add {
        #[arg(value_name = "CG")]
        group: String,
        volume: String,
    },
    /// Take a volume out of the group (the volume and its data stay).
    Remove {
        #[arg(value_name = "CG")]
        group: String,
        volume: String,
    },
    /// Snapshot every member at one instant (a group snapshot).
    Snap {
        #[arg(value_name = "CG")]
        group: String,
        /// The group snapshot's name (default: the node names it after the group).
        #[arg(long)]
        name: Option<String>,
        /// Nobody may delete or change the snapshots until then: a UTC time ("2030-01-31
        /// 12:00:00", 2030-01-31T12:00:00Z) or a duration from now (30m, 12h, 7d).
        #[arg(long, value_parser = LockUntil::parse, value_name = "TIME")]
        lock_until: Option<LockUntil>,
    },
    /// Replace every member's contents with a group snapshot's, at one instant.
    Restore {
        #[arg(value_name = "CG")]
        group: String,
        snapgroup: String,
    },
    /// Delete a consistency group (its volumes stay unless --delete-members) or a group
    /// snapshot with its snapshots.
    Delete {
        name: String,
        /// Delete the group's volumes too.
        #[arg(long)]
        delete_members: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum PolicyCommand {
    /// Create a snapshot policy (enabled, without volumes until `policy add`).
    Create {
        name: String,
        /// A schedule (repeatable): every EVERY take a snapshot of each volume, locked for
        /// LOCK if given, and keep the newest KEEP, e.g. hourly:1h:24 or daily:1d:7:30d
        /// (durations such as 30s, 15m, 1h, 1d).
        #[arg(long = "schedule", required = true, value_parser = schedule_spec::parse,
              value_name = "NAME:EVERY:KEEP[:LOCK]")]
        schedules: Vec<ScheduleInfo>,
    },
    /// List the snapshot policies with their schedules, volumes and snapshots.
    Ls,
    /// Show a snapshot policy, its schedules and its volumes.
    Show { name: String },
    /// Let the policy snapshot a master volume.
    Add {
        #[arg(value_name = "POLICY")]
        policy: String,
        volume: String,
    },
    /// Stop the policy snapshotting a volume (the snapshots it took stay).
    Remove {
        #[arg(value_name = "POLICY")]
        policy: String,
        volume: String,
    },
    /// Let the node take and retire the policy's snapshots again.
    Enable { name: String },
    /// Stop the policy taking and retiring snapshots; its snapshots stay.
    Disable { name: String },
    /// Delete a snapshot policy; the snapshots it took stay.
    Delete { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user; the password comes from TROIKA_NEW_PASSWORD or is asked twice.
    Create {
        name: String,
        /// ADMIN, POOL_ADMIN, READ_ONLY or TECHNICIAN.
        #[arg(long)]
        role: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// List users.
    Ls,
    /// Change a user's role, email, enabled flag or password.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        name: String,
        /// ADMIN, POOL_ADMIN, READ_ONLY or TECHNICIAN.
        #[arg(long, group = "change")]
        role: Option<String>,
        /// The new email; an empty one removes it.
        #[arg(long, group = "change")]
        email: Option<String>,
        /// Let the user log in.
        #[arg(long, group = "change", conflicts_with = "disable")]
        enable: bool,
        /// Refuse the user's logins and requests.
        #[arg(long, group = "change")]
        disable: bool,
        /// Set a new password, from TROIKA_NEW_PASSWORD or asked twice.
        #[arg(long, group = "change")]
        password_prompt: bool,
    },
    /// Delete a user and end its sessions.
    Delete { name: String },
    /// Show the user the CLI is acting as.
    Whoami,
}

#[derive(Clone, Debug, PartialEq, clap::Subcommand)]
pub enum EventCommand {
    /// List the newest events, oldest first.
    Ls {
        #[command(flatten)]
        filter: EventFilter,
        /// How many of the newest events to list.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// Print new events as the node raises them (polling every 500 ms).
    Follow {
        #[command(flatten)]
        filter: EventFilter,
        #[command(flatten)]
        stop: FollowStop,
    },
}

/// Which events to show.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct EventFilter {
    /// Only events of this level: INFO, WARNING, ERROR or CRITICAL.
    #[arg(long, value_parser = level_arg)]
    pub level: Option<String>,
    /// Only events with this code, e.g. VOLUME_CREATED.
    #[arg(long)]
    pub code: Option<String>,
}

/// When `follow` stops (default: never).
#[derive(Clone, Debug, Default, PartialEq, clap::Args)]
pub struct FollowStop {
    /// Stop after printing this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this many seconds; with --count, not seeing them all by then is an error.
    #[arg(long, value_parser = interval_arg)]
    pub timeout: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum ControllerCommand {
    /// List the controllers with their state, ports, ownership, cache and failover progress.
    Ls,
    /// Show one controller.
    Show {
        /// The controller's number: 1, 2, ...
        number: u32,
    },
    /// Fail a controller as a hardware fault would: its ports close, its cache is discarded
    /// and the others take over its sections (ADMIN or TECHNICIAN).
    Fail {
        /// The controller's number: 1, 2, ...
        number: u32,
    },
    /// Bring a failed controller back; its sections move back to it gradually (ADMIN or
    /// TECHNICIAN).
    Recover {
        /// The controller's number: 1, 2, ...
        number: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum DriveCommand {
    /// List the drives: number, name, enclosure:slot, state, rebuild progress, rate, ETA,
    /// capacity and serial, then the rebuild's phase and priority.
    Ls,
    /// Fail a drive as a hardware fault would: it is never used again and its data is
    /// rebuilt from parity into spare space (ADMIN). Asks for confirmation unless --yes.
    Fail {
        /// The drive's number (the ID column of `drive ls`, from 0).
        number: u32,
        /// Do not ask: typing the command is the confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Replace a failed drive with a block device or a file (created sparse at the drive's
    /// size when missing); its data is copied back onto it (ADMIN).
    Replace {
        /// The drive's number (the ID column of `drive ls`, from 0).
        number: u32,
        /// The new device or file on the node; a relative path is taken from the current
        /// directory.
        #[arg(long)]
        path: std::path::PathBuf,
    },
    /// Set how hard rebuilds and copy-backs push against host reads (ADMIN).
    Priority {
        #[arg(value_parser = ["low", "medium", "high"], ignore_case = true)]
        level: String,
    },
}

#[derive(Clone, Debug, PartialEq, clap::Subcommand)]
pub enum FaultCommand {
    /// Install a fault rule on a device (a name of the hardware model, e.g. nlsas3): one
    /// effect, fired on the Nth matching operation, with a probability, or (neither) on
    /// every one.
    #[command(group = clap::ArgGroup::new("effect").required(true))]
    Inject {
        /// The device's name in the hardware model.
        device: String,
        /// The operation it matches.
        #[arg(long, value_parser = ["read", "write", "fsync"])]
        op: String,
        /// Fail the operation with this error (only eio).
        #[arg(long, value_parser = ["eio"], ignore_case = true, group = "effect")]
        error: Option<String>,
        /// Complete the operation this many milliseconds late.
        #[arg(long, group = "effect")]
        delay_ms: Option<u64>,
        /// Stall the whole device for this many milliseconds.
        #[arg(long, group = "effect")]
        stall_ms: Option<u64>,
        /// Land only a prefix of the write's sectors and fail it (op write).
        #[arg(long, group = "effect")]
        tear: bool,
        /// Fire once, on the Nth matching operation from now (1-based).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..),
              conflicts_with = "probability")]
        nth: Option<u64>,
        /// Fire on each matching operation with this probability (0 < P <= 1).
        #[arg(long)]
        probability: Option<f64>,
        /// The seed of the rule's random choices (default: the node picks one and shows it).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// List the fault rules with how often each matched and fired.
    Ls,
    /// The faults that fired, oldest first.
    Log,
    /// Remove the fault rule ID, or every rule (and end every stall).
    Clear { id: Option<u64> },
    /// Cut the power: the node answers with the seed, then dies without clean-up; its
    /// device caches keep, lose or tear their unflushed writes as the seed says.
    PowerCut {
        /// The seed of the cut (default: the node picks one and shows it).
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum SystemCommand {
    /// Show the system's identity, versions, state, capacity and object counts.
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

/// clap value parser for `on` / `off`.
fn on_off_arg(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("{text:?} is neither on nor off")),
    }
}

/// clap value parser for event levels; the API spells them in capitals.
fn level_arg(text: &str) -> Result<String, String> {
    let level = text.to_ascii_uppercase();
    match level.as_str() {
        "INFO" | "WARNING" | "ERROR" | "CRITICAL" => Ok(level),
        _ => Err(format!(
            "{text:?} is not an event level; use INFO, WARNING, ERROR or CRITICAL"
        )),
    }
}

/// clap value parser for a number of seconds between 1 ms and a day.
fn interval_arg(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| (0.001..=86_400.0).contains(seconds))
        .ok_or_else(|| format!("{text:?} is not a number of seconds between 0.001 and 86400"))
}

/// Where the node is and who the CLI is, from the global flags and the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Used when there is no `url`.
    pub socket: std::path::PathBuf,
    /// `https://HOST:PORT` (or `http://` for a node started with `--mgmt-tls off`).
    pub url: Option<String>,
    /// The user for `url`.
    pub user: Option<String>,
    /// The PEM file that verifies an `https://` node's certificate.
    pub ca: std::path::PathBuf,
}

/// Runs one command against the node, printing to stdout and stderr; returns the process
/// exit code.
pub fn run(command: CliCommand, target: &Target, json: bool) -> i32 {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let settings = Settings {
        json,
        stdout_is_terminal: stdout.is_terminal(),
    };
    let mut out = stdout.lock();
    let mut err = std::io::stderr().lock();
    match connect(target) {
        Ok(client) => execute(command, client, settings, &mut out, &mut err),
        Err(error) => report(&error, &mut err),
    }
}

/// [`run`] on the unix socket `socket` with the output streams given (tests capture them).
pub fn run_with(
    command: CliCommand,
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let settings = Settings {
        json,
        stdout_is_terminal: false,
    };
    execute(
        command,
        Client::new(socket.to_path_buf()),
        settings,
        out,
        err,
    )
}

/// How the output is shaped.
#[derive(Clone, Copy, Debug)]
struct Settings {
    json: bool,
    /// Whether `top` may clear the screen between frames.
    stdout_is_terminal: bool,
}

fn execute(
    command: CliCommand,
    client: Client,
    settings: Settings,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let session = Session::new(client, settings);
    match session.execute(command, out) {
        Ok(()) => EXIT_OK,
        // The reader went away (`troika vol ls | head -1`): it has what it wanted, and the
        // command itself was done, so the CLI ends quietly, as if it had finished.
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(error) => report(&error, err),
    }
}

fn report(error: &CliError, err: &mut dyn Write) -> i32 {
    let _ = writeln!(err, "troika: error: {error}");
    error.exit_code()
}

/// The client for `target`: the unix socket, or the URL with the user's password.
fn connect(target: &Target) -> Result<Client, CliError> {
    let Some(url) = &target.url else {
        return Ok(Client::new(target.socket.clone()));
    };
    let endpoint = Endpoint::parse_url(url).map_err(CliError::Usage)?;
    let user = target.user.as_deref().ok_or_else(|| {
        CliError::Usage(format!(
            "--url {url} needs a user: give --user NAME or set TROIKA_USER"
        ))
    })?;
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(password) => password,
        Err(_) if terminal::stdin_is_terminal() => {
            terminal::read_password(&format!("Password for {user} at {endpoint}: "))
                .map_err(CliError::Usage)?
        }
        Err(_) => {
            return Err(CliError::Usage(format!(
                "no password for user {user:?}: set {PASSWORD_ENV}, or run on a terminal to \
                 be asked for it"
            )));
        }
    };
    let client = Client::with_endpoint(endpoint.clone(), Some((user, &password)));
    match endpoint {
        Endpoint::Tcp { tls: true, .. } => client.with_ca_file(&target.ca).map_err(|error| {
            CliError::Usage(format!(
                "{error:#}; --url {url} is HTTPS: give the node's certificate (or its CA) with \
                 --ca FILE or TROIKA_CA"
            ))
        }),
        _ => Ok(client),
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    #[error(
        "the node at {node} refused the credentials ({message}); check --user (or TROIKA_USER) \
         and {PASSWORD_ENV}"
    )]
    Unauthorized { node: String, message: String },
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { .. } | CliError::Failed(_) | CliError::Output(_) => EXIT_API_ERROR,
            CliError::Unauthorized { .. } => EXIT_UNAUTHORIZED,
            CliError::Usage(_) => EXIT_USAGE,
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
