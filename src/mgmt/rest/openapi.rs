//! The OpenAPI 3 description of the API, built from the route table and the object
//! schemas below, served at `/api/rest/openapi.json`.
//!
//! The schemas are also the field lists that filters, sorts and `fields=` accept, and a
//! test serializes every real object and compares its keys with its schema, so the
//! description cannot drift from what the API answers.

use serde_json::{Map, Value, json};

// cycle: the spec is generated from the route table (the one list of routes), and the
// handlers the table names take their schemas from here.
use super::routes::{Answer, ROUTES};
use super::{Call, Mgmt, json_response};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::Response;

mod drive_schemas;
pub use drive_schemas::{COMPONENTS, DRIVE, ENCLOSURE, REBUILD};

/// An object's fields and their JSON types: `integer`, `number`, `string`, `boolean`, a
/// trailing `?` for nullable, `[t]` for an array of `t`.
pub struct Schema {
    pub name: &'static str,
    pub fields: &'static [(&'static str, &'static str)],
    /// Fields a request body must carry (bodies only).
    pub required: &'static [&'static str],
}

const fn object(name: &'static str, fields: &'static [(&'static str, &'static str)]) -> Schema {
    Schema {
        name,
        fields,
        required: &[],
    }
}

pub const SYSTEM: Schema = object(
    "System",
    &[
        ("name", "string"),
        ("serial", "integer"),
        ("serial_number", "integer"),
        ("version", "string"),
        ("troika_version", "string"),
        ("model", "string"),
        ("state", "string"),
        ("operational_state", "object"),
        ("physical_capacity", "integer"),
        ("allocated_physical_capacity", "integer"),
        ("free_physical_capacity", "integer"),
        ("used_physical_capacity", "integer"),
        ("controllers", "integer"),
        ("pools_count", "integer"),
        ("volumes_count", "integer"),
        ("started_at", "integer"),
        ("reads", "object"),
        ("ssd_cache", "object?"),
        ("tls_certificate_sha256", "string?"),
    ],
);

pub const FEATURE: Schema = object(
    "Feature",
    &[
        ("name", "string"),
        ("version", "integer"),
        ("enabled", "boolean"),
    ],
);

pub const POOL: Schema = object(
    "Pool",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("physical_capacity", "integer"),
        ("virtual_capacity", "integer"),
        ("allocated_physical_space", "integer"),
        ("free_physical_space", "integer"),
        ("free_virtual_space", "integer"),
        ("allocated_virtual_space", "integer"),
        ("physical_capacity_warning", "integer"),
        ("physical_capacity_critical", "integer"),
        ("ssd_enabled", "boolean"),
        ("owners", "[integer]"),
        ("volumes_count", "integer"),
        ("state", "string"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
    ],
);

pub const VOLUME: Schema = object(
    "Volume",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("size", "integer"),
        ("pool_id", "integer"),
        ("pool_name", "string"),
        ("provtype", "string"),
        ("type", "string"),
        ("dataset_type", "string"),
        ("parent_id", "integer"),
        ("family_id", "integer"),
        ("depth", "integer"),
        ("has_children", "boolean"),
        ("write_protected", "boolean"),
        ("ssd_enabled", "boolean"),
        ("used", "integer"),
        ("allocated", "integer"),
        ("unique_size", "integer"),
        ("tree_allocated", "integer"),
        ("num_blocks", "integer"),
        ("rmr_source", "boolean"),
        ("rmr_target", "boolean"),
        ("rmr_snapshot_guid", "string?"),
        ("mapped", "boolean"),
        ("cg_id", "integer?"),
        ("lock_expires_at", "integer?"),
        ("lock_state", "string"),
        ("serial", "string"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
    ],
);

pub const CG: Schema = object(
    "ConsistencyGroup",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("pool_id", "integer"),
        ("pool_name", "string"),
        ("type", "string"),
        ("parent_id", "integer"),
        ("members_count", "integer"),
        ("has_children", "boolean"),
        ("lock_expires_at", "integer?"),
        ("lock_state", "string"),
        ("is_replicated", "boolean"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
    ],
);

pub const CHANGED_BLOCKS: Schema = object(
    "ChangedBlocks",
    &[
        ("volume_id", "integer"),
        ("base_id", "integer"),
        ("block_size", "integer"),
        ("changed_bytes", "integer"),
        ("ranges", "[object]"),
    ],
);

pub const SNAPSHOT_POLICY: Schema = object(
    "SnapshotPolicy",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("enabled", "boolean"),
        ("schedules", "[object]"),
        ("assets", "[integer]"),
        ("assets_count", "integer"),
        ("snapshots_count", "integer"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
    ],
);

/// Replicas (none yet; infinisdk lists them before changing a group).
pub const HOST: Schema = object(
    "Host",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("ports", "[object]"),
        ("ports_count", "integer"),
        ("luns", "[object]"),
        ("luns_count", "integer"),
        ("host_cluster_id", "integer"),
        ("host_type", "string"),
        ("san_client_type", "string"),
        ("security_method", "string"),
        ("security_chap_inbound_username", "string"),
        ("security_chap_has_inbound_secret", "boolean"),
        ("security_chap_outbound_username", "string"),
        ("security_chap_has_outbound_secret", "boolean"),
        ("optimized", "boolean"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
    ],
);

pub const CLUSTER: Schema = object(
    "HostCluster",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("hosts", "[object]"),
        ("hosts_count", "integer"),
        ("luns", "[object]"),
        ("luns_count", "integer"),
        ("host_type", "string"),
        ("san_client_type", "string"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
    ],
);

pub const LUN: Schema = object(
    "Lun",
    &[
        ("id", "integer"),
        ("lun", "integer"),
        ("volume_id", "integer"),
        ("host_id", "integer"),
        ("host_cluster_id", "integer"),
        ("clustered", "boolean"),
    ],
);

pub const REPLICA: Schema = object(
    "Replica",
    &[
        ("id", "integer"),
        ("local_cg_id", "integer"),
        ("entity_type", "string"),
    ],
);

pub const CONTROLLER: Schema = object(
    "Controller",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("state", "string"),
        ("ports", "[string]"),
        ("ownership_share", "number"),
        ("owned_sections", "integer"),
        ("cache_bytes", "integer"),
        ("dirty_bytes", "integer"),
        ("mirror_bytes", "integer"),
        ("mirror_lag_bytes", "integer"),
        ("remirror_progress", "number?"),
        ("failback_progress", "number?"),
        ("failovers", "integer"),
        ("state_changed_at", "integer"),
    ],
);

pub const SCRUB: Schema = object(
    "Scrub",
    &[
        ("state", "string"),
        ("rate", "integer"),
        ("interval_seconds", "integer"),
        ("segment", "integer"),
        ("segments", "integer"),
        ("progress_percent", "number"),
        ("started_at", "integer?"),
        ("rows", "integer"),
        ("bytes", "integer"),
        ("seconds", "number"),
        ("data_repairs", "integer"),
        ("parity_repairs", "integer"),
        ("other_repairs", "integer"),
        ("unrepairable_rows", "integer"),
        ("passes_completed", "integer"),
        ("last_completed_at", "integer?"),
        ("next_run_at", "integer?"),
    ],
);

pub const FAULT: Schema = object(
    "Fault",
    &[
        ("id", "integer"),
        ("device", "string"),
        ("op", "string"),
        ("effect", "string"),
        ("error", "string?"),
        ("delay_ms", "integer?"),
        ("stall_ms", "integer?"),
        ("tear", "boolean"),
        ("nth", "integer?"),
        ("probability", "number?"),
        ("seed", "integer"),
        ("matched", "integer"),
        ("fired", "integer"),
    ],
);

pub const FIRED_FAULT: Schema = object(
    "FiredFault",
    &[
        ("rule", "integer"),
        ("device", "string"),
        ("op", "string"),
        ("sequence", "integer"),
        ("offset", "integer"),
        ("len", "integer"),
        ("effect", "string"),
    ],
);

pub const FAULTS_CLEARED: Schema = object("FaultsCleared", &[("cleared", "integer")]);

pub const POWER_CUT: Schema = object("PowerCut", &[("seed", "integer")]);

pub const USER: Schema = object(
    "User",
    &[
        ("id", "integer"),
        ("name", "string"),
        ("email", "string"),
        ("role", "string"),
        ("enabled", "boolean"),
        ("type", "string"),
        ("created_at", "integer"),
        ("updated_at", "integer"),
        ("last_login", "integer?"),
        ("failed_logins", "integer"),
    ],
);

pub const EVENT: Schema = object(
    "Event",
    &[
        ("id", "integer"),
        ("code", "string"),
        ("level", "string"),
        ("description", "string"),
        ("timestamp", "integer"),
        ("reporter", "string"),
        ("affected_entity_id", "integer?"),
        ("username", "string?"),
        ("visibility", "string"),
        ("seq_num", "integer"),
    ],
);

pub const EVENT_TYPES: Schema = object(
    "EventTypes",
    &[
        ("codes", "[string]"),
        ("levels", "[object]"),
        ("visibilities", "[string]"),
        ("reporters", "[string]"),
        ("types", "[object]"),
    ],
);

/// Request bodies.
pub const BODIES: &[Schema] = &[
    Schema {
        name: "Login",
        fields: &[
            ("username", "string"),
            ("password", "string"),
            ("clientid", "string"),
        ],
        required: &["username", "password"],
    },
    Schema {
        name: "UserCreate",
        fields: &[
            ("name", "string"),
            ("password", "string"),
            ("role", "string"),
            ("email", "string"),
            ("enabled", "boolean"),
        ],
        required: &["name", "password", "role"],
    },
    Schema {
        name: "UserUpdate",
        fields: &[
            ("name", "string"),
            ("password", "string"),
            ("role", "string"),
            ("email", "string"),
            ("enabled", "boolean"),
        ],
        required: &[],
    },
    Schema {
        name: "PoolCreate",
        fields: &[
            ("name", "string"),
            ("physical_capacity", "integer"),
            ("virtual_capacity", "integer"),
        ],
        required: &["name", "physical_capacity"],
    },
    Schema {
        name: "PoolUpdate",
        fields: &[
            ("name", "string"),
            ("physical_capacity", "integer"),
            ("virtual_capacity", "integer"),
            ("physical_capacity_warning", "integer"),
            ("physical_capacity_critical", "integer"),
            ("ssd_enabled", "boolean"),
            ("owners", "[integer]"),
        ],
        required: &[],
    },
    Schema {
        name: "PoolOwner",
        fields: &[("user_id", "integer")],
        required: &["user_id"],
    },
    Schema {
        name: "VolumeCreate",
        fields: &[
            ("name", "string"),
            ("pool_id", "integer"),
            ("size", "integer"),
            ("provtype", "string"),
            ("ssd_enabled", "boolean"),
            ("write_protected", "boolean"),
        ],
        required: &["name", "pool_id", "size"],
    },
    Schema {
        name: "VolumeUpdate",
        fields: &[
            ("name", "string"),
            ("size", "integer"),
            ("write_protected", "boolean"),
            ("ssd_enabled", "boolean"),
            ("lock_expires_at", "integer"),
        ],
        required: &[],
    },
    Schema {
        name: "SnapshotCreate",
        fields: &[
            ("name", "string"),
            ("parent_id", "integer"),
            ("write_protected", "boolean"),
            ("lock_expires_at", "integer"),
            ("ssd_enabled", "boolean"),
        ],
        required: &["parent_id"],
    },
    Schema {
        name: "GroupSnapshot",
        fields: &[
            ("snap_prefix", "string"),
            ("snap_suffix", "string"),
            ("entities", "[object]"),
        ],
        required: &["entities"],
    },
    Schema {
        name: "Source",
        fields: &[("source_id", "integer")],
        required: &["source_id"],
    },
    Schema {
        name: "CgCreate",
        fields: &[
            ("name", "string"),
            ("pool_id", "integer"),
            ("parent_id", "integer"),
            ("snap_prefix", "string"),
            ("snap_suffix", "string"),
            ("write_protected", "boolean"),
            ("lock_expires_at", "integer"),
        ],
        required: &[],
    },
    Schema {
        name: "PolicyCreate",
        fields: &[
            ("name", "string"),
            ("enabled", "boolean"),
            ("schedules", "[object]"),
            ("assets", "[integer]"),
        ],
        required: &["name", "schedules"],
    },
    Schema {
        name: "PolicyUpdate",
        fields: &[
            ("name", "string"),
            ("enabled", "boolean"),
            ("schedules", "[object]"),
        ],
        required: &[],
    },
    Schema {
        name: "PolicyAsset",
        fields: &[("entity_id", "integer")],
        required: &["entity_id"],
    },
    Schema {
        name: "CgUpdate",
        fields: &[("name", "string")],
        required: &[],
    },
    Schema {
        name: "CgMember",
        fields: &[("dataset_id", "integer")],
        required: &["dataset_id"],
    },
    Schema {
        name: "HostCreate",
        fields: &[
            ("name", "string"),
            ("ports", "[object]"),
            ("host_type", "string"),
            ("optimized", "boolean"),
            ("security_method", "string"),
            ("security_chap_inbound_username", "string"),
            ("security_chap_inbound_secret", "string"),
            ("security_chap_outbound_username", "string"),
            ("security_chap_outbound_secret", "string"),
        ],
        required: &["name"],
    },
    Schema {
        name: "HostUpdate",
        fields: &[
            ("name", "string"),
            ("host_type", "string"),
            ("optimized", "boolean"),
            ("security_method", "string"),
            ("security_chap_inbound_username", "string"),
            ("security_chap_inbound_secret", "string"),
            ("security_chap_outbound_username", "string"),
            ("security_chap_outbound_secret", "string"),
        ],
        required: &[],
    },
    Schema {
        name: "HostPort",
        fields: &[("type", "string"), ("address", "string")],
        required: &["type", "address"],
    },
    Schema {
        name: "LunCreate",
        fields: &[("volume_id", "integer"), ("lun", "integer")],
        required: &["volume_id"],
    },
    Schema {
        name: "ClusterCreate",
        fields: &[("name", "string"), ("host_type", "string")],
        required: &["name"],
    },
    Schema {
        name: "ClusterUpdate",
        fields: &[("name", "string")],
        required: &[],
    },
    Schema {
        name: "ClusterHost",
        fields: &[("id", "integer")],
        required: &["id"],
    },
    Schema {
        name: "FaultCreate",
        fields: &[
            ("device", "string"),
            ("op", "string"),
            ("error", "string"),
            ("delay_ms", "integer"),
            ("stall_ms", "integer"),
            ("tear", "boolean"),
            ("nth", "integer"),
            ("probability", "number"),
            ("seed", "integer"),
        ],
        required: &["device", "op"],
    },
    Schema {
        name: "PowerCutOptions",
        fields: &[("seed", "integer")],
        required: &[],
    },
    drive_schemas::DRIVE_REPLACE,
    drive_schemas::REBUILD_UPDATE,
];

/// Every object schema the answers use.
pub const OBJECTS: &[&Schema] = &[
    &SYSTEM,
    &FEATURE,
    &POOL,
    &VOLUME,
    &CG,
    &CHANGED_BLOCKS,
    &REPLICA,
    &SNAPSHOT_POLICY,
    &HOST,
    &CLUSTER,
    &LUN,
    &CONTROLLER,
    &SCRUB,
    &FAULT,
    &FIRED_FAULT,
    &FAULTS_CLEARED,
    &POWER_CUT,
    &COMPONENTS,
    &ENCLOSURE,
    &DRIVE,
    &REBUILD,
    &USER,
    &EVENT,
    &EVENT_TYPES,
];

/// The field names of a schema, for list queries.
pub fn field_names(schema: &Schema) -> Vec<&'static str> {
    schema.fields.iter().map(|(name, _)| *name).collect()
}

fn type_schema(kind: &str) -> Value {
    let (kind, nullable) = match kind.strip_suffix('?') {
        Some(kind) => (kind, true),
        None => (kind, false),
    };
    let mut schema = match kind.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
        Some(item) => json!({"type": "array", "items": type_schema(item)}),
        None => json!({"type": kind}),
    };
    if nullable {
        schema["nullable"] = json!(true);
    }
    schema
}

fn schema_json(schema: &Schema) -> Value {
    let properties: Map<String, Value> = schema
        .fields
        .iter()
        .map(|(name, kind)| ((*name).to_owned(), type_schema(kind)))
        .collect();
    let mut value = json!({"type": "object", "properties": properties});
    if !schema.required.is_empty() {
        value["required"] = json!(schema.required);
    }
    value
}

fn envelope(result: Value) -> Value {
    json!({
        "type": "object",
        "properties": {
            "result": result,
            "error": {"$ref": "#/components/schemas/Error"},
            "metadata": {"$ref": "#/components/schemas/Metadata"},
        },
    })
}

fn answer_content(answer: Answer) -> Value {
    let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    match answer {
        Answer::Object(name) => json!({"application/json": {"schema": envelope(reference(name))}}),
        Answer::List(name) => json!({"application/json": {"schema": envelope(
            json!({"type": "array", "items": reference(name)})
        )}}),
        Answer::Metrics => json!({"text/plain": {"schema": {"type": "string"}}}),
        Answer::Document => json!({"application/json": {"schema": {"type": "object"}}}),
    }
}

fn parameters(path: &str, answer: Answer, approval: bool) -> Vec<Value> {
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}})
        })
        .collect();
    if let Answer::List(_) = answer {
        parameters.push(json!({"name": "page", "in": "query",
            "schema": {"type": "integer", "minimum": 1}}));
        parameters.push(json!({"name": "page_size", "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": super::MAX_PAGE_SIZE}}));
        parameters.push(json!({"name": "sort", "in": "query", "schema": {"type": "string"}}));
        parameters.push(json!({"name": "fields", "in": "query", "schema": {"type": "string"}}));
    }
    if approval {
        parameters.push(json!({"name": "approved", "in": "query",
            "description": "must be true for this destructive operation",
            "schema": {"type": "boolean"}}));
    }
    parameters
}

fn error_responses(public: bool) -> Map<String, Value> {
    let error = json!({"description": "error", "content": {"application/json": {"schema":
        envelope(json!({"nullable": true}))}}});
    let mut responses = Map::new();
    for status in ["400", "404", "405", "409", "413"] {
        responses.insert(status.to_owned(), error.clone());
    }
    if !public {
        responses.insert("401".to_owned(), error.clone());
        responses.insert("403".to_owned(), error);
    }
    responses
}

/// The whole description.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let mut responses = error_responses(route.access == super::auth::Access::Public);
        responses.insert(
            route.status.to_string(),
            json!({"description": "success", "content": answer_content(route.answer)}),
        );
        let mut operation = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method.to_ascii_lowercase(),
                route.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters(route.path, route.answer, route.approval),
            "responses": responses,
            "x-roles": route.access.roles(),
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json":
                {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    let mut schemas: Map<String, Value> = Map::new();
    for schema in OBJECTS.iter().copied().chain(BODIES.iter()) {
        schemas.insert(schema.name.to_owned(), schema_json(schema));
    }
    schemas.insert(
        "Error".to_owned(),
        json!({"type": "object", "nullable": true, "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "reasons": {"type": "array", "items": {"type": "object", "properties": {
                "message": {"type": "string"},
                "affected_entities": {"type": "array", "items": {}}}}}}}),
    );
    schemas.insert(
        "Metadata".to_owned(),
        json!({"type": "object", "properties": {
            "ready": {"type": "boolean"}, "page": {"type": "integer"},
            "page_size": {"type": "integer"}, "pages_total": {"type": "integer"},
            "number_of_objects": {"type": "integer"}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "troika management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "InfiniBox-compatible REST API of a troika node.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::mgmt::users::SESSION_COOKIE},
            },
        },
        "security": [{"basic": []}, {"session": []}],
    })
}

pub fn get_openapi(_mgmt: &Mgmt, _call: &Call) -> Result<Response, MgmtError> {
    Ok(json_response(200, document().to_string().into_bytes()))
}
