//! The schemas of the component routes: the rack tree, enclosures, drives and the
//! rebuild, and the bodies that replace a drive and set the rebuild's priority.

use super::{Schema, object};

pub const COMPONENTS: Schema = object(
    "Components",
    &[
        ("rack", "integer"),
        ("enclosures", "[object]"),
        ("nodes", "[object]"),
        ("ups", "[object]"),
        ("pdus", "[object]"),
    ],
);

pub const ENCLOSURE: Schema = object(
    "Enclosure",
    &[
        ("id", "integer"),
        ("state", "string"),
        ("drives", "[object]"),
    ],
);

pub const DRIVE: Schema = object(
    "Drive",
    &[
        ("id", "integer"),
        ("drive_index", "integer"),
        ("enclosure_index", "integer"),
        ("serial_number", "string"),
        ("bytes_capacity", "integer"),
        ("state", "string"),
        ("name", "string"),
        ("path", "string"),
        ("rebuild_progress", "number"),
        ("read_errors", "integer"),
        ("failure_reason", "string?"),
    ],
);

pub const REBUILD: Schema = object(
    "Rebuild",
    &[
        ("phase", "string"),
        ("drive_id", "integer?"),
        ("progress", "number"),
        ("segments_done", "integer"),
        ("segments", "integer"),
        ("bytes", "integer"),
        ("seconds", "number"),
        ("bytes_per_second", "number"),
        ("eta_seconds", "number?"),
        ("priority", "string"),
        ("drives_out", "integer"),
    ],
);

pub const DRIVE_REPLACE: Schema = Schema {
    name: "DriveReplace",
    fields: &[("path", "string")],
    required: &["path"],
};

pub const REBUILD_UPDATE: Schema = Schema {
    name: "RebuildUpdate",
    fields: &[("priority", "string")],
    required: &["priority"],
};
