//! Event levels and the registry of event types: every code the node raises, with the
//! level and reporter it is shown with.

use serde::{Deserialize, Serialize};

/// How serious an event is, in increasing order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    /// Every level, least serious first.
    pub const ALL: [Level; 4] = [Level::Info, Level::Warning, Level::Error, Level::Critical];

    /// Parses a level name as shown on the wire, in any case (`"warning"`, `"WARNING"`).
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name))
    }

    /// The wire name: `INFO`, `WARNING`, `ERROR` or `CRITICAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// One kind of event: its code, level, reporter and what it means. The raiser writes the
/// concrete description; `description` here is the summary shown by `/events/types`.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventType {
    pub code: &'static str,
    pub level: Level,
    pub reporter: &'static str,
    pub description: &'static str,
}

const fn kind(
    code: &'static str,
    level: Level,
    reporter: &'static str,
    description: &'static str,
) -> EventType {
    EventType {
        code,
        level,
        reporter,
        description,
    }
}

use Level::{Critical, Error, Info, Warning};

/// Every event code the node raises.
pub const EVENT_TYPES: &[EventType] = &[
    kind("SYSTEM_STARTED", Info, "SYSTEM", "The system started"),
    kind(
        "SYSTEM_SHUTDOWN",
        Info,
        "SYSTEM",
        "The system shut down cleanly",
    ),
    kind(
        "SYSTEM_RECOVERED",
        Info,
        "SYSTEM",
        "The system recovered after a crash by replaying its journal (records and bytes replayed)",
    ),
    kind(
        "SYSTEM_DURABILITY_FAILURE",
        Critical,
        "SYSTEM",
        "The system stopped: {operation} on {device} failed, so metadata or data could not be made durable; restart it to recover from media",
    ),
    kind(
        "NBD_OPEN_EXPORTS",
        Warning,
        "SYSTEM",
        "The node serves every volume and snapshot to any NBD client on TCP without TLS (--nbd-open)",
    ),
    kind(
        "POOL_CREATED",
        Info,
        "MANAGEMENT",
        "Pool {name} was created",
    ),
    kind(
        "POOL_DELETED",
        Info,
        "MANAGEMENT",
        "Pool {name} was deleted",
    ),
    kind(
        "POOL_UPDATED",
        Info,
        "MANAGEMENT",
        "Pool {name} was updated",
    ),
    kind(
        "POOL_RENAMED",
        Info,
        "MANAGEMENT",
        "Pool {old_name} was renamed to {name}",
    ),
    kind(
        "POOL_CAPACITY_WARNING",
        Warning,
        "CAPACITY",
        "Pool {name} crossed its warning threshold of used physical capacity",
    ),
    kind(
        "POOL_CAPACITY_CRITICAL",
        Error,
        "CAPACITY",
        "Pool {name} crossed its critical threshold of used physical capacity",
    ),
    kind(
        "POOL_CAPACITY_NORMAL",
        Info,
        "CAPACITY",
        "Pool {name} is back under its capacity thresholds",
    ),
    kind(
        "POOL_LIMITED",
        Warning,
        "CAPACITY",
        "Pool {name} is out of physical space; writes that need new space are refused",
    ),
    kind(
        "POOL_LOCKED",
        Critical,
        "CAPACITY",
        "Pool {name} is locked: all writes to its volumes are refused",
    ),
    kind(
        "POOL_UNLOCKED",
        Info,
        "CAPACITY",
        "Pool {name} is writable again",
    ),
    kind(
        "VOLUME_CREATED",
        Info,
        "MANAGEMENT",
        "Volume {name} was created",
    ),
    kind(
        "VOLUME_DELETED",
        Info,
        "MANAGEMENT",
        "Volume {name} was deleted",
    ),
    kind(
        "VOLUME_RESIZED",
        Info,
        "MANAGEMENT",
        "Volume {name} was resized from {old_size} to {size}",
    ),
    kind(
        "VOLUME_RENAMED",
        Info,
        "MANAGEMENT",
        "Volume {old_name} was renamed to {name}",
    ),
    kind(
        "VOLUME_UPDATED",
        Info,
        "MANAGEMENT",
        "Volume {name} was updated",
    ),
    kind(
        "SNAPSHOT_CREATED",
        Info,
        "MANAGEMENT",
        "Snapshot {name} of {parent} was created",
    ),
    kind(
        "SNAPSHOT_REFRESHED",
        Info,
        "MANAGEMENT",
        "Snapshot {name} took its parent's current contents",
    ),
    kind(
        "VOLUME_RESTORED",
        Info,
        "MANAGEMENT",
        "Volume {name} was restored from snapshot {snapshot}",
    ),
    kind(
        "CG_CREATED",
        Info,
        "MANAGEMENT",
        "Consistency group {name} was created",
    ),
    kind(
        "CG_SNAPSHOT_CREATED",
        Info,
        "MANAGEMENT",
        "Group snapshot {name} of consistency group {parent} was created",
    ),
    kind(
        "CG_SNAPSHOT_REFRESHED",
        Info,
        "MANAGEMENT",
        "Group snapshot {name} took its group's current contents",
    ),
    kind(
        "CG_DELETED",
        Info,
        "MANAGEMENT",
        "Consistency group {name} was deleted",
    ),
    kind(
        "CG_MEMBER_ADDED",
        Info,
        "MANAGEMENT",
        "Volume {volume} joined consistency group {name}",
    ),
    kind(
        "CG_MEMBER_REMOVED",
        Info,
        "MANAGEMENT",
        "Volume {volume} left consistency group {name}",
    ),
    kind(
        "CG_RESTORED",
        Info,
        "MANAGEMENT",
        "Consistency group {name} was restored from group snapshot {snapshot}",
    ),
    kind(
        "HOST_CREATED",
        Info,
        "MANAGEMENT",
        "Host {name} was created",
    ),
    kind(
        "HOST_UPDATED",
        Info,
        "MANAGEMENT",
        "Host {name} was changed (name, type or CHAP settings)",
    ),
    kind(
        "HOST_DELETED",
        Info,
        "MANAGEMENT",
        "Host {name} was deleted with its own LUN mappings",
    ),
    kind(
        "HOST_PORT_ADDED",
        Info,
        "MANAGEMENT",
        "Initiator {address} was added to host {name}",
    ),
    kind(
        "HOST_PORT_REMOVED",
        Info,
        "MANAGEMENT",
        "Initiator {address} was removed from host {name}",
    ),
    kind(
        "CLUSTER_CREATED",
        Info,
        "MANAGEMENT",
        "Host cluster {name} was created",
    ),
    kind(
        "CLUSTER_UPDATED",
        Info,
        "MANAGEMENT",
        "Host cluster {name} was changed",
    ),
    kind(
        "CLUSTER_DELETED",
        Info,
        "MANAGEMENT",
        "Host cluster {name} was deleted with its LUN mappings",
    ),
    kind(
        "CLUSTER_HOST_ADDED",
        Info,
        "MANAGEMENT",
        "Host {host} joined host cluster {name}",
    ),
    kind(
        "CLUSTER_HOST_REMOVED",
        Info,
        "MANAGEMENT",
        "Host {host} left host cluster {name}",
    ),
    kind(
        "LUN_MAPPED",
        Info,
        "MANAGEMENT",
        "Volume {volume} was mapped to {host} as LUN {lun}",
    ),
    kind(
        "LUN_UNMAPPED",
        Info,
        "MANAGEMENT",
        "Volume {volume} was unmapped from {host} (LUN {lun})",
    ),
    kind(
        "SNAPSHOT_POLICY_CREATED",
        Info,
        "MANAGEMENT",
        "Snapshot policy {name} was created",
    ),
    kind(
        "SNAPSHOT_POLICY_UPDATED",
        Info,
        "MANAGEMENT",
        "Snapshot policy {name} was changed",
    ),
    kind(
        "SNAPSHOT_POLICY_DELETED",
        Info,
        "MANAGEMENT",
        "Snapshot policy {name} was deleted",
    ),
    kind(
        "SNAPSHOT_POLICY_SNAPSHOT_CREATED",
        Info,
        "MANAGEMENT",
        "Snapshot policy {name} took snapshot {snapshot}",
    ),
    kind(
        "SNAPSHOT_POLICY_SNAPSHOT_DELETED",
        Info,
        "MANAGEMENT",
        "Snapshot policy {name} deleted snapshot {snapshot} past its retention",
    ),
    kind(
        "SNAPSHOT_POLICY_FAILED",
        Error,
        "MANAGEMENT",
        "Snapshot policy {name} could not take or retire a snapshot",
    ),
    kind("USER_CREATED", Info, "SECURITY", "User {name} was created"),
    kind("USER_DELETED", Info, "SECURITY", "User {name} was deleted"),
    kind("USER_UPDATED", Info, "SECURITY", "User {name} was updated"),
    kind(
        "USER_LOGIN_SUCCESS",
        Info,
        "SECURITY",
        "User {name} logged in",
    ),
    kind(
        "USER_LOGIN_FAILURE",
        Warning,
        "SECURITY",
        "A login as {name} failed",
    ),
    kind(
        "USER_LOGIN_LOCKED_OUT",
        Warning,
        "SECURITY",
        "Logins as {name} (or from an address) are refused for a while after repeated failures",
    ),
    kind("USER_LOGOUT", Info, "SECURITY", "User {name} logged out"),
    kind(
        "ACCESS_DENIED",
        Warning,
        "SECURITY",
        "User {name} was denied {operation}",
    ),
    kind(
        "DATA_REPAIRED",
        Warning,
        "CACHE",
        "A block failed its checksum and was rebuilt from parity",
    ),
    kind(
        "DATA_UNRECOVERABLE",
        Critical,
        "CACHE",
        "A block failed its checksum and could not be rebuilt; its data is lost",
    ),
    kind(
        "DRIVE_FAILED",
        Critical,
        "DRIVE",
        "Drive {drive} failed; its data is read from parity and rebuilt into spare space",
    ),
    kind(
        "SSD_CACHE_FAILED",
        Critical,
        "DRIVE",
        "The SSD read cache on {ssd} failed; only cache was lost, data is safe on the NL-SAS drives",
    ),
    kind(
        "DRIVE_REPLACED",
        Info,
        "DRIVE",
        "Drive {drive} was replaced by {path}; its data is being copied back onto it",
    ),
    kind(
        "REBUILD_STARTED",
        Warning,
        "DRIVE",
        "The rebuild of drive {drive} into distributed spare space started",
    ),
    kind(
        "REBUILD_COMPLETED",
        Info,
        "DRIVE",
        "The rebuild of drive {drive} completed",
    ),
    kind(
        "DRIVE_COPYBACK_COMPLETED",
        Info,
        "DRIVE",
        "Drive {drive} was replaced and its data copied back; it is ACTIVE",
    ),
    kind(
        "ROWS_LOST",
        Critical,
        "DRIVE",
        "Rows lost more units to failed drives than parity can rebuild",
    ),
    kind(
        "SCRUB_STARTED",
        Info,
        "DRIVE",
        "A scrub pass over every allocated row of the NL-SAS array started",
    ),
    kind(
        "SCRUB_COMPLETED",
        Info,
        "DRIVE",
        "A scrub pass completed (rows, bytes, seconds and repairs by kind)",
    ),
    kind(
        "SCRUB_STOPPED",
        Info,
        "DRIVE",
        "A scrub pass was stopped by an operator before it completed",
    ),
    kind(
        "SCRUB_REPAIRED",
        Warning,
        "DRIVE",
        "The scrub found damaged units (data, parity, summary or unused space) and rewrote them from parity",
    ),
    kind(
        "SCRUB_UNREPAIRABLE",
        Critical,
        "DRIVE",
        "The scrub found rows with more damage than parity can locate and rebuild",
    ),
    kind(
        "CONTROLLER_FAILED",
        Critical,
        "CONTROLLER",
        "Controller {controller} failed; its work moved to the surviving controllers",
    ),
    kind(
        "CONTROLLER_RECOVERED",
        Info,
        "CONTROLLER",
        "Controller {controller} is serving again",
    ),
    kind(
        "REDUNDANCY_RESTORED",
        Info,
        "CONTROLLER",
        "Every block is protected again at full redundancy",
    ),
    kind(
        "FAULT_INJECTED",
        Warning,
        "MANAGEMENT",
        "Fault rule {id} was installed on device {device}: its operations may fail or stall",
    ),
    kind(
        "FAULT_CLEARED",
        Info,
        "MANAGEMENT",
        "Fault rule {id} (or every rule) was removed",
    ),
    kind(
        "POWER_CUT",
        Warning,
        "SYSTEM",
        "A simulated power cut (seed {seed}) stops the node without clean-up",
    ),
];

/// The registered type of `code`, if any.
pub fn event_type(code: &str) -> Option<&'static EventType> {
    EVENT_TYPES.iter().find(|kind| kind.code == code)
}
