//! The role matrix of the REST API, against the real binary over TCP.
//!
//! [`ROWS`] is the specification, written here independently of the product's route table:
//! every method and path, who may call it, and a plausible request. The test checks that
//! `GET /api/rest/openapi.json` lists exactly these method+path pairs (so a new route
//! without a row fails), then sends every row as every role and as an anonymous caller.
//! An allowed request must succeed with the row's status; a denied one must answer 403
//! `PERMISSION_DENIED` (401 `UNAUTHORIZED` when anonymous) and change nothing: pools,
//! volumes (snapshots too), consistency groups, hosts, host clusters, users, fault rules and
//! which controllers are FAILED, as an admin reads them, are compared before and after.
//!
//! Snapshots follow the volume rules: READ_ONLY may not take, restore or refresh them,
//! POOL_ADMIN only in its own pools. A locked snapshot is the exception to "allowed means
//! success": rows marked [`locked`] try to delete it, shorten its lock, change it, refresh
//! it or restore into it, and every caller the role check admits gets 409
//! `SNAPSHOT_LOCKED` with nothing changed (the others get 403, or 401, as usual), so
//! nobody (ADMIN, POOL_ADMIN, TECHNICIAN, READ_ONLY) gets rid of it before it expires.
//!
//! The power cut cannot succeed here (it kills the node), so its row is sent without
//! `approved=true` and is marked [`needs_approval`]: every caller the role check admits
//! (ADMIN, TECHNICIAN) gets 403 `APPROVAL_REQUIRED` from the handler, which is not the
//! role check's `PERMISSION_DENIED`, and the others are denied as usual. tests/cli.rs cuts
//! the power of a node of its own.
//!
//! Each cell starts from the same state: objects a row changes are scratch objects
//! (named `scratch...`) made by the admin just before the request and removed after it,
//! a controller a row fails is recovered after it, and fault rules (which never fire:
//! a 1 ms read delay on the billionth read) are cleared after it, so the order of cells
//! does not matter.
//!
//! Rows that act on one controller need the node to list its controllers. While it lists
//! none (its controllers report nothing yet), an allowed request reaches the handler and
//! must answer 404 `CONTROLLER_NOT_FOUND`: the role check comes first, so 403 or not is
//! still decided, and once the node lists its controllers the rows want full success.

mod common;

use std::collections::BTreeSet;

use common::{TestNode, ci_model};
use serde_json::{Value, json};

const PASSWORD: &str = "role-matrix-password";
const MIB: u64 = 1024 * 1024;
/// The initiator of the scratch host.
const SCRATCH_IQN: &str = "iqn.2024-01.com.example:scratch";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Anonymous,
    Admin,
    PoolAdmin,
    ReadOnly,
    Technician,
}

const ROLES: [Role; 5] = [
    Role::Anonymous,
    Role::Admin,
    Role::PoolAdmin,
    Role::ReadOnly,
    Role::Technician,
];

impl Role {
    /// The user acting in this role (created by [`World::new`]).
    fn user(self) -> Option<&'static str> {
        match self {
            Role::Anonymous => None,
            Role::Admin => Some("admin2"),
            Role::PoolAdmin => Some("pooladmin"),
            Role::ReadOnly => Some("readonly"),
            Role::Technician => Some("technician"),
        }
    }

    fn wire_name(self) -> &'static str {
        match self {
            Role::Anonymous => "",
            Role::Admin => "ADMIN",
            Role::PoolAdmin => "POOL_ADMIN",
            Role::ReadOnly => "READ_ONLY",
            Role::Technician => "TECHNICIAN",
        }
    }
}

/// Who a row admits.
#[derive(Clone, Copy, Debug)]
enum Who {
    Anyone,
    AnyUser,
    /// ADMIN, and POOL_ADMIN when the row's pool is one it owns.
    PoolOwner,
    /// ADMIN and TECHNICIAN.
    Technician,
    Admin,
}

impl Who {
    fn admits(self, role: Role, owned_pool: bool) -> bool {
        match self {
            Who::Anyone => true,
            Who::AnyUser => role != Role::Anonymous,
            Who::PoolOwner => role == Role::Admin || (role == Role::PoolAdmin && owned_pool),
            Who::Technician => matches!(role, Role::Admin | Role::Technician),
            Who::Admin => role == Role::Admin,
        }
    }
}

/// A request to send.
struct Call {
    target: String,
    body: Option<Value>,
}

fn call(target: impl Into<String>) -> Call {
    Call {
        target: target.into(),
        body: None,
    }
}

fn call_with(target: impl Into<String>, body: Value) -> Call {
    Call {
        target: target.into(),
        body: Some(body),
    }
}

/// One row of the specification.
struct Row {
    method: &'static str,
    path: &'static str,
    who: Who,
    /// The status of a success.
    status: u16,
    /// For `Who::PoolOwner` rows: whether the request acts on the pool POOL_ADMIN owns.
    owned_pool: bool,
    /// The request names a controller (see the module doc for a node that lists none).
    on_controller: bool,
    /// The status and error code that even an admitted caller gets (a locked snapshot, a
    /// power cut without approval): the request passes the role check and is refused after
    /// it, changing nothing.
    refusal: Option<(u16, &'static str)>,
    /// Makes the row's scratch objects as the admin and builds the request.
    build: fn(&World, Role) -> Call,
}

const fn row(
    method: &'static str,
    path: &'static str,
    who: Who,
    status: u16,
    build: fn(&World, Role) -> Call,
) -> Row {
    Row {
        method,
        path,
        who,
        status,
        owned_pool: false,
        on_controller: false,
        refusal: None,
        build,
    }
}

const fn in_owned_pool(mut row: Row) -> Row {
    row.owned_pool = true;
    row
}

const fn on_controller(mut row: Row) -> Row {
    row.on_controller = true;
    row
}

/// A lock holds: admitted callers get 409 `SNAPSHOT_LOCKED`.
const fn locked(mut row: Row) -> Row {
    row.refusal = Some((409, "SNAPSHOT_LOCKED"));
    row
}

/// Sent without `approved=true`: admitted callers get 403 `APPROVAL_REQUIRED`.
const fn needs_approval(mut row: Row) -> Row {
    row.refusal = Some((403, "APPROVAL_REQUIRED"));
    row
}

/// Names an ACTIVE drive where a failed one is needed: admitted callers get 409
/// `DRIVE_STATE`.
const fn active_drive(mut row: Row) -> Row {
    row.refusal = Some((409, "DRIVE_STATE"));
    row
}

/// A fault rule that never fires in a test: a 1 ms delay on the billionth read of a device.
fn idle_fault() -> Value {
    json!({"device": "nlsas5", "op": "read", "delay_ms": 1, "nth": 1_000_000_000u64})
}

/// Every route of the API, as the specification says.
static ROWS: &[Row] = &[
    row("GET", "/api/rest/system", Who::AnyUser, 200, |_, _| {
        call("/api/rest/system")
    }),
    row("GET", "/api/rest/_features", Who::Anyone, 200, |_, _| {
        call("/api/rest/_features")
    }),
    row("GET", "/api/rest/openapi.json", Who::Anyone, 200, |_, _| {
        call("/api/rest/openapi.json")
    }),
    row(
        "POST",
        "/api/rest/users/login",
        Who::Anyone,
        200,
        |_, role| {
            let user = role.user().unwrap_or("readonly");
            call_with(
                "/api/rest/users/login",
                json!({"username": user, "password": PASSWORD}),
            )
        },
    ),
    row(
        "POST",
        "/api/rest/users/logout",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/users/logout"),
    ),
    row(
        "GET",
        "/api/rest/users/current",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/users/current"),
    ),
    row("GET", "/api/rest/users", Who::Admin, 200, |_, _| {
        call("/api/rest/users")
    }),
    row("POST", "/api/rest/users", Who::Admin, 201, |_, _| {
        call_with(
            "/api/rest/users",
            json!({"name": "scratch-user", "password": PASSWORD, "role": "ADMIN",
                   "email": "scratch@example.com"}),
        )
    }),
    row(
        "GET",
        "/api/rest/users/{id}",
        Who::Admin,
        200,
        |world, _| call(format!("/api/rest/users/{}", world.user_id(Role::ReadOnly))),
    ),
    row(
        "PUT",
        "/api/rest/users/{id}",
        Who::Admin,
        200,
        |world, role| {
            // Everyone but the ADMIN tries to promote itself (or READ_ONLY, when anonymous).
            let target = match role {
                Role::Admin => world.scratch_user("scratch-put", "READ_ONLY"),
                Role::Anonymous => world.user_id(Role::ReadOnly),
                _ => world.user_id(role),
            };
            call_with(
                format!("/api/rest/users/{target}"),
                json!({"role": "ADMIN", "email": "changed@example.com"}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/users/{id}",
        Who::Admin,
        200,
        |world, _| {
            let id = world.scratch_user("scratch-delete", "READ_ONLY");
            call(format!("/api/rest/users/{id}?approved=true"))
        },
    ),
    row("GET", "/api/rest/pools", Who::AnyUser, 200, |_, _| {
        call("/api/rest/pools")
    }),
    row("POST", "/api/rest/pools", Who::Admin, 201, |_, _| {
        call_with(
            "/api/rest/pools",
            json!({"name": "scratch-pool", "physical_capacity": 16 * MIB}),
        )
    }),
    row(
        "GET",
        "/api/rest/pools/{id}",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/pools/{}", world.pool_b)),
    ),
    row(
        "PUT",
        "/api/rest/pools/{id}",
        Who::Admin,
        200,
        |world, _| {
            // Owned by POOL_ADMIN: even its owner may not change the pool itself.
            let id = world.scratch_pool(true);
            call_with(
                format!("/api/rest/pools/{id}"),
                json!({"name": "scratch-renamed", "physical_capacity": 24 * MIB}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/pools/{id}",
        Who::Admin,
        200,
        |world, _| {
            let id = world.scratch_pool(true);
            call(format!("/api/rest/pools/{id}?approved=true"))
        },
    ),
    row(
        "GET",
        "/api/rest/pools/{id}/owners",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/pools/{}/owners", world.pool_a)),
    ),
    row(
        "POST",
        "/api/rest/pools/{id}/owners",
        Who::Admin,
        201,
        |world, _| {
            // POOL_ADMIN making itself an owner of a pool is the interesting denial.
            let id = world.scratch_pool(false);
            call_with(
                format!("/api/rest/pools/{id}/owners"),
                json!({"user_id": world.user_id(Role::PoolAdmin)}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/pools/{id}/owners/{user_id}",
        Who::Admin,
        200,
        |world, _| {
            let id = world.scratch_pool(true);
            call(format!(
                "/api/rest/pools/{id}/owners/{}",
                world.user_id(Role::PoolAdmin)
            ))
        },
    ),
    row("GET", "/api/rest/volumes", Who::AnyUser, 200, |_, _| {
        call("/api/rest/volumes")
    }),
    in_owned_pool(row(
        "POST",
        "/api/rest/volumes",
        Who::PoolOwner,
        201,
        |world, _| {
            call_with(
                "/api/rest/volumes",
                json!({"name": "scratch-vol", "pool_id": world.pool_a, "size": 4 * MIB}),
            )
        },
    )),
    row(
        "POST",
        "/api/rest/volumes",
        Who::PoolOwner,
        201,
        |world, _| {
            call_with(
                "/api/rest/volumes",
                json!({"name": "scratch-vol", "pool_id": world.pool_b, "size": 4 * MIB}),
            )
        },
    ),
    row(
        "GET",
        "/api/rest/volumes/{id}",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/volumes/{}", world.volume_b)),
    ),
    in_owned_pool(row(
        "PUT",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| update_volume(world, world.pool_a),
    )),
    row(
        "PUT",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| update_volume(world, world.pool_b),
    ),
    in_owned_pool(row(
        "DELETE",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            let id = world.scratch_volume(world.pool_a);
            call(format!("/api/rest/volumes/{id}?approved=true"))
        },
    )),
    row(
        "DELETE",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            let id = world.scratch_volume(world.pool_b);
            call(format!("/api/rest/volumes/{id}?approved=true"))
        },
    ),
    // ---- snapshots: whoever may change a pool's volumes may snapshot them ----
    in_owned_pool(row(
        "POST",
        "/api/rest/volumes",
        Who::PoolOwner,
        201,
        |world, _| snapshot_of(world.volume_a),
    )),
    row(
        "POST",
        "/api/rest/volumes",
        Who::PoolOwner,
        201,
        |world, _| snapshot_of(world.volume_b),
    ),
    in_owned_pool(row(
        "POST",
        "/api/rest/volumes/group_snapshot",
        Who::PoolOwner,
        201,
        |world, _| group_snapshot_of(world.volume_a),
    )),
    row(
        "POST",
        "/api/rest/volumes/group_snapshot",
        Who::PoolOwner,
        201,
        |world, _| group_snapshot_of(world.volume_b),
    ),
    in_owned_pool(row(
        "POST",
        "/api/rest/volumes/{id}/restore",
        Who::PoolOwner,
        200,
        |world, _| restore_volume(world, world.pool_a),
    )),
    row(
        "POST",
        "/api/rest/volumes/{id}/restore",
        Who::PoolOwner,
        200,
        |world, _| restore_volume(world, world.pool_b),
    ),
    in_owned_pool(row(
        "POST",
        "/api/rest/volumes/{id}/refresh",
        Who::PoolOwner,
        200,
        |world, _| refresh_snapshot(world, world.pool_a),
    )),
    row(
        "POST",
        "/api/rest/volumes/{id}/refresh",
        Who::PoolOwner,
        200,
        |world, _| refresh_snapshot(world, world.pool_b),
    ),
    row(
        "GET",
        "/api/rest/volumes/{id}/changed_blocks",
        Who::AnyUser,
        200,
        |world, _| {
            call(format!(
                "/api/rest/volumes/{}/changed_blocks?base_id={}",
                world.volume_b, world.snapshot_b
            ))
        },
    ),
    // ---- a locked snapshot: nobody may delete, change, refresh or restore into it ----
    locked(in_owned_pool(row(
        "DELETE",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            call(format!(
                "/api/rest/volumes/{}?approved=true",
                world.locked_a
            ))
        },
    ))),
    locked(row(
        "DELETE",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            call(format!(
                "/api/rest/volumes/{}?approved=true",
                world.locked_b
            ))
        },
    )),
    locked(in_owned_pool(row(
        "PUT",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            // Shortening a lock (by a minute) is refused like removing it.
            call_with(
                format!("/api/rest/volumes/{}?approved=true", world.locked_a),
                json!({"lock_expires_at": world.lock_until - 60_000}),
            )
        },
    ))),
    locked(in_owned_pool(row(
        "PUT",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            call_with(
                format!("/api/rest/volumes/{}?approved=true", world.locked_a),
                json!({"name": "locked-a-renamed", "write_protected": false}),
            )
        },
    ))),
    locked(in_owned_pool(row(
        "POST",
        "/api/rest/volumes/{id}/refresh",
        Who::PoolOwner,
        200,
        |world, _| {
            call(format!(
                "/api/rest/volumes/{}/refresh?approved=true",
                world.locked_a
            ))
        },
    ))),
    locked(in_owned_pool(row(
        "POST",
        "/api/rest/volumes/{id}/restore",
        Who::PoolOwner,
        200,
        |world, _| {
            let source = world.scratch_snapshot(world.volume_a, "scratch-source");
            call_with(
                format!("/api/rest/volumes/{}/restore?approved=true", world.locked_a),
                json!(source),
            )
        },
    ))),
    in_owned_pool(row(
        "PUT",
        "/api/rest/volumes/{id}",
        Who::PoolOwner,
        200,
        |world, _| {
            // Extending is allowed: to the same later instant in every cell, so the rows
            // that shorten or break the lock see the same lock whatever the order.
            call_with(
                format!("/api/rest/volumes/{}?approved=true", world.locked_a),
                json!({"lock_expires_at": world.lock_until + 60_000}),
            )
        },
    )),
    // ---- consistency groups ----
    row("GET", "/api/rest/cgs", Who::AnyUser, 200, |_, _| {
        call("/api/rest/cgs")
    }),
    in_owned_pool(row(
        "POST",
        "/api/rest/cgs",
        Who::PoolOwner,
        201,
        |world, _| {
            call_with(
                "/api/rest/cgs",
                json!({"name": "scratch-cg", "pool_id": world.pool_a}),
            )
        },
    )),
    row("POST", "/api/rest/cgs", Who::PoolOwner, 201, |world, _| {
        call_with(
            "/api/rest/cgs",
            json!({"name": "scratch-cg", "pool_id": world.pool_b}),
        )
    }),
    in_owned_pool(row(
        "POST",
        "/api/rest/cgs",
        Who::PoolOwner,
        201,
        |world, _| snapgroup_of(world.scratch_group(world.pool_a).0),
    )),
    row("POST", "/api/rest/cgs", Who::PoolOwner, 201, |world, _| {
        snapgroup_of(world.scratch_group(world.pool_b).0)
    }),
    row(
        "GET",
        "/api/rest/cgs/{id}",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/cgs/{}", world.cg_b)),
    ),
    in_owned_pool(row(
        "PUT",
        "/api/rest/cgs/{id}",
        Who::PoolOwner,
        200,
        |world, _| rename_cg(world.scratch_cg(world.pool_a)),
    )),
    row(
        "PUT",
        "/api/rest/cgs/{id}",
        Who::PoolOwner,
        200,
        |world, _| rename_cg(world.scratch_cg(world.pool_b)),
    ),
    in_owned_pool(row(
        "DELETE",
        "/api/rest/cgs/{id}",
        Who::PoolOwner,
        200,
        |world, _| delete_cg(world.scratch_group(world.pool_a).0),
    )),
    row(
        "DELETE",
        "/api/rest/cgs/{id}",
        Who::PoolOwner,
        200,
        |world, _| delete_cg(world.scratch_group(world.pool_b).0),
    ),
    row(
        "GET",
        "/api/rest/cgs/{id}/members",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/cgs/{}/members", world.cg_b)),
    ),
    in_owned_pool(row(
        "POST",
        "/api/rest/cgs/{id}/members",
        Who::PoolOwner,
        201,
        |world, _| add_member(world, world.pool_a),
    )),
    row(
        "POST",
        "/api/rest/cgs/{id}/members",
        Who::PoolOwner,
        201,
        |world, _| add_member(world, world.pool_b),
    ),
    in_owned_pool(row(
        "DELETE",
        "/api/rest/cgs/{id}/members/{volume_id}",
        Who::PoolOwner,
        200,
        |world, _| remove_member(world.scratch_group(world.pool_a)),
    )),
    row(
        "DELETE",
        "/api/rest/cgs/{id}/members/{volume_id}",
        Who::PoolOwner,
        200,
        |world, _| remove_member(world.scratch_group(world.pool_b)),
    ),
    in_owned_pool(row(
        "POST",
        "/api/rest/cgs/{id}/restore",
        Who::PoolOwner,
        200,
        |world, _| restore_cg(world, world.pool_a),
    )),
    row(
        "POST",
        "/api/rest/cgs/{id}/restore",
        Who::PoolOwner,
        200,
        |world, _| restore_cg(world, world.pool_b),
    ),
    in_owned_pool(row(
        "POST",
        "/api/rest/cgs/{id}/refresh",
        Who::PoolOwner,
        200,
        |world, _| refresh_snapgroup(world, world.pool_a),
    )),
    row(
        "POST",
        "/api/rest/cgs/{id}/refresh",
        Who::PoolOwner,
        200,
        |world, _| refresh_snapgroup(world, world.pool_b),
    ),
    row(
        "GET",
        "/api/rest/snapshot_policies",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/snapshot_policies"),
    ),
    row(
        "POST",
        "/api/rest/snapshot_policies",
        Who::Admin,
        201,
        |_, _| {
            call_with(
                "/api/rest/snapshot_policies",
                json!({"name": "scratch-policy", "enabled": false,
                       "schedules": [{"name": "hourly", "interval": 3600, "retention": 2}]}),
            )
        },
    ),
    row(
        "GET",
        "/api/rest/snapshot_policies/{id}",
        Who::AnyUser,
        200,
        |world, _| {
            call(format!(
                "/api/rest/snapshot_policies/{}",
                world.scratch_policy()
            ))
        },
    ),
    row(
        "PUT",
        "/api/rest/snapshot_policies/{id}",
        Who::Admin,
        200,
        |world, _| {
            call_with(
                format!("/api/rest/snapshot_policies/{}", world.scratch_policy()),
                json!({"name": "scratch-policy-renamed"}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/snapshot_policies/{id}",
        Who::Admin,
        200,
        |world, _| {
            call(format!(
                "/api/rest/snapshot_policies/{}?approved=true",
                world.scratch_policy()
            ))
        },
    ),
    row(
        "POST",
        "/api/rest/snapshot_policies/{id}/assets",
        Who::Admin,
        201,
        |world, _| {
            call_with(
                format!(
                    "/api/rest/snapshot_policies/{}/assets",
                    world.scratch_policy()
                ),
                json!({"entity_id": world.volume_b}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/snapshot_policies/{id}/assets/{entity_id}",
        Who::Admin,
        200,
        |world, _| {
            let id = world.scratch_policy();
            world.admin_ok(
                "POST",
                &format!("/api/rest/snapshot_policies/{id}/assets"),
                Some(json!({"entity_id": world.volume_b})),
                201,
            );
            call(format!(
                "/api/rest/snapshot_policies/{id}/assets/{}",
                world.volume_b
            ))
        },
    ),
    row("GET", "/api/rest/hosts", Who::AnyUser, 200, |_, _| {
        call("/api/rest/hosts")
    }),
    row("POST", "/api/rest/hosts", Who::Admin, 201, |_, _| {
        call_with(
            "/api/rest/hosts",
            json!({"name": "scratch-host", "ports": [{"type": "ISCSI", "address": SCRATCH_IQN}]}),
        )
    }),
    row(
        "GET",
        "/api/rest/hosts/{id}",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/hosts/{}", world.scratch_host())),
    ),
    row(
        "PUT",
        "/api/rest/hosts/{id}",
        Who::Admin,
        200,
        |world, _| {
            call_with(
                format!("/api/rest/hosts/{}", world.scratch_host()),
                json!({"name": "scratch-renamed"}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/hosts/{id}",
        Who::Admin,
        200,
        |world, _| {
            call(format!(
                "/api/rest/hosts/{}?approved=true",
                world.scratch_host()
            ))
        },
    ),
    row(
        "POST",
        "/api/rest/hosts/{id}/ports",
        Who::Admin,
        201,
        |world, _| {
            call_with(
                format!("/api/rest/hosts/{}/ports", world.scratch_host()),
                json!({"type": "ISCSI", "address": "iqn.2024-01.com.example:scratch-extra"}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/hosts/{id}/ports/{type}/{address}",
        Who::Admin,
        200,
        |world, _| {
            call(format!(
                "/api/rest/hosts/{}/ports/ISCSI/{SCRATCH_IQN}",
                world.scratch_host()
            ))
        },
    ),
    row(
        "GET",
        "/api/rest/hosts/{id}/luns",
        Who::AnyUser,
        200,
        |world, _| {
            call(format!(
                "/api/rest/hosts/{}/luns",
                world.scratch_mapping("hosts").0
            ))
        },
    ),
    row(
        "POST",
        "/api/rest/hosts/{id}/luns",
        Who::Admin,
        201,
        |world, _| {
            call_with(
                format!("/api/rest/hosts/{}/luns", world.scratch_host()),
                json!({"volume_id": world.volume_b}),
            )
        },
    ),
    row(
        "GET",
        "/api/rest/hosts/{id}/luns/{lun}",
        Who::AnyUser,
        200,
        |world, _| {
            let (owner, lun) = world.scratch_mapping("hosts");
            call(format!("/api/rest/hosts/{owner}/luns/{lun}"))
        },
    ),
    row(
        "DELETE",
        "/api/rest/hosts/{id}/luns/lun/{lun}",
        Who::Admin,
        200,
        |world, _| {
            let (owner, lun) = world.scratch_mapping("hosts");
            call(format!("/api/rest/hosts/{owner}/luns/lun/{lun}"))
        },
    ),
    row(
        "DELETE",
        "/api/rest/hosts/{id}/luns/volume_id/{volume_id}",
        Who::Admin,
        200,
        |world, _| {
            let (owner, _) = world.scratch_mapping("hosts");
            call(format!(
                "/api/rest/hosts/{owner}/luns/volume_id/{}",
                world.volume_b
            ))
        },
    ),
    row("GET", "/api/rest/clusters", Who::AnyUser, 200, |_, _| {
        call("/api/rest/clusters")
    }),
    row("POST", "/api/rest/clusters", Who::Admin, 201, |_, _| {
        call_with("/api/rest/clusters", json!({"name": "scratch-cluster"}))
    }),
    row(
        "GET",
        "/api/rest/clusters/{id}",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/clusters/{}", world.scratch_cluster())),
    ),
    row(
        "PUT",
        "/api/rest/clusters/{id}",
        Who::Admin,
        200,
        |world, _| {
            call_with(
                format!("/api/rest/clusters/{}", world.scratch_cluster()),
                json!({"name": "scratch-renamed"}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/clusters/{id}",
        Who::Admin,
        200,
        |world, _| {
            call(format!(
                "/api/rest/clusters/{}?approved=true",
                world.scratch_cluster()
            ))
        },
    ),
    row(
        "POST",
        "/api/rest/clusters/{id}/hosts",
        Who::Admin,
        201,
        |world, _| {
            call_with(
                format!("/api/rest/clusters/{}/hosts", world.scratch_cluster()),
                json!({"id": world.scratch_host()}),
            )
        },
    ),
    row(
        "DELETE",
        "/api/rest/clusters/{id}/hosts/{host_id}",
        Who::Admin,
        200,
        |world, _| {
            let (cluster, host) = (world.scratch_cluster(), world.scratch_host());
            world.admin_ok(
                "POST",
                &format!("/api/rest/clusters/{cluster}/hosts"),
                Some(json!({"id": host})),
                201,
            );
            call(format!("/api/rest/clusters/{cluster}/hosts/{host}"))
        },
    ),
    row(
        "GET",
        "/api/rest/clusters/{id}/luns",
        Who::AnyUser,
        200,
        |world, _| {
            call(format!(
                "/api/rest/clusters/{}/luns",
                world.scratch_mapping("clusters").0
            ))
        },
    ),
    row(
        "POST",
        "/api/rest/clusters/{id}/luns",
        Who::Admin,
        201,
        |world, _| {
            call_with(
                format!("/api/rest/clusters/{}/luns", world.scratch_cluster()),
                json!({"volume_id": world.volume_b}),
            )
        },
    ),
    row(
        "GET",
        "/api/rest/clusters/{id}/luns/{lun}",
        Who::AnyUser,
        200,
        |world, _| {
            let (owner, lun) = world.scratch_mapping("clusters");
            call(format!("/api/rest/clusters/{owner}/luns/{lun}"))
        },
    ),
    row(
        "DELETE",
        "/api/rest/clusters/{id}/luns/lun/{lun}",
        Who::Admin,
        200,
        |world, _| {
            let (owner, lun) = world.scratch_mapping("clusters");
            call(format!("/api/rest/clusters/{owner}/luns/lun/{lun}"))
        },
    ),
    row(
        "DELETE",
        "/api/rest/clusters/{id}/luns/volume_id/{volume_id}",
        Who::Admin,
        200,
        |world, _| {
            let (owner, _) = world.scratch_mapping("clusters");
            call(format!(
                "/api/rest/clusters/{owner}/luns/volume_id/{}",
                world.volume_b
            ))
        },
    ),
    row(
        "GET",
        "/api/rest/replicas",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/replicas?local_cg_id=eq:{}", world.cg_b)),
    ),
    row("GET", "/api/rest/controllers", Who::AnyUser, 200, |_, _| {
        call("/api/rest/controllers")
    }),
    on_controller(row(
        "GET",
        "/api/rest/controllers/{id}",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/controllers/1"),
    )),
    on_controller(row(
        "POST",
        "/api/rest/controllers/{id}/fail",
        Who::Technician,
        200,
        |_, _| call("/api/rest/controllers/2/fail?approved=true"),
    )),
    on_controller(row(
        "POST",
        "/api/rest/controllers/{id}/recover",
        Who::Technician,
        200,
        |world, _| {
            world.fail_controller(3);
            call("/api/rest/controllers/3/recover")
        },
    )),
    row("GET", "/api/rest/components", Who::AnyUser, 200, |_, _| {
        call("/api/rest/components")
    }),
    row(
        "GET",
        "/api/rest/components/enclosures",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/enclosures"),
    ),
    row(
        "GET",
        "/api/rest/components/enclosures/{enclosure}",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/enclosures/1"),
    ),
    row(
        "GET",
        "/api/rest/components/enclosures/{enclosure}/drives",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/enclosures/1/drives"),
    ),
    row(
        "GET",
        "/api/rest/components/enclosures/{enclosure}/drives/{drive}",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/enclosures/1/drives/2"),
    ),
    needs_approval(row(
        "POST",
        "/api/rest/components/enclosures/{enclosure}/drives/{drive}/fail",
        Who::Admin,
        200,
        |_, _| call("/api/rest/components/enclosures/1/drives/2/fail"),
    )),
    active_drive(row(
        "POST",
        "/api/rest/components/enclosures/{enclosure}/drives/{drive}/replace",
        Who::Admin,
        200,
        |world, _| {
            call_with(
                "/api/rest/components/enclosures/1/drives/2/replace",
                json!({"path": world.node.data().join("scratch-drive.img")}),
            )
        },
    )),
    row(
        "GET",
        "/api/rest/components/drives",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/drives"),
    ),
    row(
        "GET",
        "/api/rest/components/rebuild",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/rebuild"),
    ),
    row(
        "PUT",
        "/api/rest/components/rebuild",
        Who::Admin,
        200,
        |_, _| call_with("/api/rest/components/rebuild", json!({"priority": "HIGH"})),
    ),
    row(
        "GET",
        "/api/rest/components/scrub",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/components/scrub"),
    ),
    row(
        "POST",
        "/api/rest/components/scrub/start",
        Who::Technician,
        200,
        |_, _| call("/api/rest/components/scrub/start"),
    ),
    row(
        "POST",
        "/api/rest/components/scrub/stop",
        Who::Technician,
        200,
        |_, _| call("/api/rest/components/scrub/stop"),
    ),
    row(
        "GET",
        "/api/rest/faults",
        Who::Technician,
        200,
        |world, _| {
            world.scratch_fault();
            call("/api/rest/faults")
        },
    ),
    row("POST", "/api/rest/faults", Who::Technician, 201, |_, _| {
        call_with("/api/rest/faults?approved=true", idle_fault())
    }),
    row(
        "DELETE",
        "/api/rest/faults",
        Who::Technician,
        200,
        |world, _| {
            world.scratch_fault();
            call("/api/rest/faults?approved=true")
        },
    ),
    row(
        "GET",
        "/api/rest/faults/log",
        Who::Technician,
        200,
        |_, _| call("/api/rest/faults/log"),
    ),
    row(
        "DELETE",
        "/api/rest/faults/{id}",
        Who::Technician,
        200,
        |world, _| {
            call(format!(
                "/api/rest/faults/{}?approved=true",
                world.scratch_fault()
            ))
        },
    ),
    needs_approval(row(
        "POST",
        "/api/rest/faults/power_cut",
        Who::Technician,
        202,
        |_, _| call_with("/api/rest/faults/power_cut", json!({"seed": 1})),
    )),
    row("GET", "/api/rest/events", Who::AnyUser, 200, |_, _| {
        call("/api/rest/events")
    }),
    row(
        "GET",
        "/api/rest/events/types",
        Who::AnyUser,
        200,
        |_, _| call("/api/rest/events/types"),
    ),
    row(
        "GET",
        "/api/rest/events/{id}",
        Who::AnyUser,
        200,
        |world, _| call(format!("/api/rest/events/{}", world.event_id)),
    ),
    row("GET", "/metrics", Who::AnyUser, 200, |_, _| {
        call("/metrics")
    }),
];

/// Renames, write-protects and shrinks (approved) a scratch volume of `pool`.
fn update_volume(world: &World, pool: u32) -> Call {
    let id = world.scratch_volume(pool);
    call_with(
        format!("/api/rest/volumes/{id}?approved=true"),
        json!({"name": "scratch-vol-renamed", "write_protected": true, "size": 2 * MIB}),
    )
}

/// A snapshot of `volume`.
fn snapshot_of(volume: u32) -> Call {
    call_with(
        "/api/rest/volumes",
        json!({"name": "scratch-snap", "parent_id": volume}),
    )
}

/// A group snapshot of `volume` alone (named `scratch-` + the volume's name).
fn group_snapshot_of(volume: u32) -> Call {
    call_with(
        "/api/rest/volumes/group_snapshot",
        json!({"snap_prefix": "scratch-", "entities": [{"id": volume}]}),
    )
}

/// Restores a scratch volume of `pool` from its snapshot (a bare id, as infinisdk sends).
fn restore_volume(world: &World, pool: u32) -> Call {
    let volume = world.scratch_volume(pool);
    let snapshot = world.scratch_snapshot(volume, "scratch-snap");
    call_with(
        format!("/api/rest/volumes/{volume}/restore?approved=true"),
        json!(snapshot),
    )
}

/// Refreshes a snapshot of a scratch volume of `pool`.
fn refresh_snapshot(world: &World, pool: u32) -> Call {
    let volume = world.scratch_volume(pool);
    let snapshot = world.scratch_snapshot(volume, "scratch-snap");
    call_with(
        format!("/api/rest/volumes/{snapshot}/refresh?approved=true"),
        json!({"source_id": volume}),
    )
}

/// A group snapshot of group `cg`, as infinisdk asks for one.
fn snapgroup_of(cg: u32) -> Call {
    call_with(
        "/api/rest/cgs",
        json!({"snap_prefix": null, "parent_id": cg, "snap_suffix": "-sg", "name": "scratch-sg"}),
    )
}

fn rename_cg(cg: u32) -> Call {
    call_with(
        format!("/api/rest/cgs/{cg}"),
        json!({"name": "scratch-cg-renamed"}),
    )
}

fn delete_cg(cg: u32) -> Call {
    call(format!(
        "/api/rest/cgs/{cg}?delete_members=true&approved=true"
    ))
}

/// Adds a scratch volume of `pool` to a scratch group of `pool`.
fn add_member(world: &World, pool: u32) -> Call {
    let cg = world.scratch_cg(pool);
    let volume = world.scratch_volume(pool);
    call_with(
        format!("/api/rest/cgs/{cg}/members"),
        json!({"dataset_id": volume}),
    )
}

fn remove_member((cg, volume): (u32, u32)) -> Call {
    call(format!("/api/rest/cgs/{cg}/members/{volume}"))
}

/// Restores a scratch group of `pool` from its group snapshot.
fn restore_cg(world: &World, pool: u32) -> Call {
    let (cg, _) = world.scratch_group(pool);
    let snapgroup = world.scratch_snapgroup(cg);
    call_with(
        format!("/api/rest/cgs/{cg}/restore?approved=true"),
        json!({"source_id": snapgroup}),
    )
}

/// Refreshes a group snapshot of a scratch group of `pool`.
fn refresh_snapgroup(world: &World, pool: u32) -> Call {
    let (cg, _) = world.scratch_group(pool);
    let snapgroup = world.scratch_snapgroup(cg);
    call_with(
        format!("/api/rest/cgs/{snapgroup}/refresh?approved=true"),
        json!({"source_id": cg}),
    )
}

/// The node, its users and the fixed objects every row may read.
struct World {
    node: TestNode,
    admin_password: String,
    pool_a: u32,
    pool_b: u32,
    volume_a: u32,
    volume_b: u32,
    /// A snapshot of `volume_b`.
    snapshot_b: u32,
    /// A consistency group in `pool_b` with `volume_b` in it.
    cg_b: u32,
    /// Snapshots of `volume_a` and `volume_b` locked until `lock_until` (a day on).
    locked_a: u32,
    locked_b: u32,
    lock_until: u64,
    event_id: u64,
    users: Vec<(Role, u32)>,
    /// Whether the node lists its controllers.
    has_controllers: bool,
}

impl World {
    fn new() -> World {
        let node = TestNode::start_with_api(ci_model());
        let admin_password = node.admin_password();
        let mut world = World {
            node,
            admin_password,
            pool_a: 0,
            pool_b: 0,
            volume_a: 0,
            volume_b: 0,
            snapshot_b: 0,
            cg_b: 0,
            locked_a: 0,
            locked_b: 0,
            lock_until: 0,
            event_id: 0,
            users: Vec::new(),
            has_controllers: false,
        };
        for role in ROLES {
            let Some(name) = role.user() else { continue };
            let user = world.admin_ok(
                "POST",
                "/api/rest/users",
                Some(
                    json!({"name": name, "password": PASSWORD, "role": role.wire_name(),
                            "email": format!("{name}@example.com")}),
                ),
                201,
            );
            world.users.push((role, id_of(&user)));
        }
        world.pool_a = world.create_pool("pool-a", Some(world.user_id(Role::PoolAdmin)));
        world.pool_b = world.create_pool("pool-b", None);
        world.volume_a = world.create_volume("vol-a", world.pool_a);
        world.volume_b = world.create_volume("vol-b", world.pool_b);
        world.snapshot_b = world.scratch_snapshot(world.volume_b, "snap-b");
        world.cg_b = id_of(&world.admin_ok(
            "POST",
            "/api/rest/cgs",
            Some(json!({"name": "cg-b", "pool_id": world.pool_b})),
            201,
        ));
        world.admin_ok(
            "POST",
            &format!("/api/rest/cgs/{}/members", world.cg_b),
            Some(json!({"dataset_id": world.volume_b})),
            201,
        );
        world.lock_until = now_ms() + 24 * 3_600_000;
        for (volume, name) in [(world.volume_a, "locked-a"), (world.volume_b, "locked-b")] {
            let locked = world.admin_ok(
                "POST",
                "/api/rest/volumes",
                Some(json!({"name": name, "parent_id": volume,
                            "lock_expires_at": world.lock_until})),
                201,
            );
            assert_eq!(locked["lock_state"], "LOCKED", "{locked}");
            if volume == world.volume_a {
                world.locked_a = id_of(&locked);
            } else {
                world.locked_b = id_of(&locked);
            }
        }
        let events = world.admin_ok("GET", "/api/rest/events?page_size=1", None, 200);
        world.event_id = events[0]["id"].as_u64().expect("an event id");
        world.has_controllers = !world.list("controllers").is_empty();
        world
    }

    fn user_id(&self, role: Role) -> u32 {
        self.users
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, id)| *id)
            .expect("a user of every role")
    }

    /// A request as the built-in admin that must answer `status`; its `result`.
    fn admin_ok(&self, method: &str, target: &str, body: Option<Value>, status: u16) -> Value {
        let (got, answer) = self.node.api_json(
            method,
            target,
            Some(("admin", &self.admin_password)),
            body.as_ref(),
        );
        assert_eq!(got, status, "admin {method} {target}: {answer}");
        answer["result"].clone()
    }

    fn create_pool(&self, name: &str, owner: Option<u32>) -> u32 {
        let pool = self.admin_ok(
            "POST",
            "/api/rest/pools",
            Some(json!({"name": name, "physical_capacity": 32 * MIB})),
            201,
        );
        let id = id_of(&pool);
        if let Some(owner) = owner {
            self.admin_ok(
                "PUT",
                &format!("/api/rest/pools/{id}"),
                Some(json!({"owners": [owner]})),
                200,
            );
        }
        id
    }

    fn create_volume(&self, name: &str, pool: u32) -> u32 {
        let volume = self.admin_ok(
            "POST",
            "/api/rest/volumes",
            Some(json!({"name": name, "pool_id": pool, "size": 4 * MIB})),
            201,
        );
        id_of(&volume)
    }

    fn scratch_user(&self, name: &str, role: &str) -> u32 {
        let user = self.admin_ok(
            "POST",
            "/api/rest/users",
            Some(json!({"name": name, "password": PASSWORD, "role": role})),
            201,
        );
        id_of(&user)
    }

    /// A scratch pool, owned by the POOL_ADMIN user if `owned`.
    fn scratch_pool(&self, owned: bool) -> u32 {
        self.create_pool("scratch-pool", owned.then(|| self.user_id(Role::PoolAdmin)))
    }

    fn scratch_volume(&self, pool: u32) -> u32 {
        self.create_volume("scratch-vol", pool)
    }

    fn scratch_snapshot(&self, parent: u32, name: &str) -> u32 {
        let snapshot = self.admin_ok(
            "POST",
            "/api/rest/volumes",
            Some(json!({"name": name, "parent_id": parent})),
            201,
        );
        id_of(&snapshot)
    }

    fn scratch_cg(&self, pool: u32) -> u32 {
        let cg = self.admin_ok(
            "POST",
            "/api/rest/cgs",
            Some(json!({"name": "scratch-cg", "pool_id": pool})),
            201,
        );
        id_of(&cg)
    }

    /// A scratch group of `pool` with one scratch volume in it: (group, volume).
    fn scratch_group(&self, pool: u32) -> (u32, u32) {
        let cg = self.scratch_cg(pool);
        let volume = self.scratch_volume(pool);
        self.admin_ok(
            "POST",
            &format!("/api/rest/cgs/{cg}/members"),
            Some(json!({"dataset_id": volume})),
            201,
        );
        (cg, volume)
    }

    fn scratch_snapgroup(&self, cg: u32) -> u32 {
        let request = snapgroup_of(cg);
        id_of(&self.admin_ok("POST", &request.target, request.body, 201))
    }

    /// Installs [`idle_fault`] as the admin; returns the rule's id.
    fn scratch_fault(&self) -> u64 {
        let rule = self.admin_ok(
            "POST",
            "/api/rest/faults?approved=true",
            Some(idle_fault()),
            201,
        );
        rule["id"].as_u64().expect("a fault rule with an id")
    }

    /// Fails controller `number` as the admin, when the node lists its controllers.
    fn fail_controller(&self, number: u32) {
        if self.has_controllers {
            self.admin_ok(
                "POST",
                &format!("/api/rest/controllers/{number}/fail?approved=true"),
                None,
                200,
            );
        }
    }

    /// Removes every scratch object, so the next cell starts from the fixed state: group
    /// snapshots (with their snapshots) before groups, snapshots before their parents
    /// (a snapshot's id is above its parent's).
    /// A disabled scratch policy with one schedule and no assets.
    fn scratch_policy(&self) -> u32 {
        id_of(&self.admin_ok(
            "POST",
            "/api/rest/snapshot_policies",
            Some(json!({"name": "scratch-policy", "enabled": false,
                        "schedules": [{"name": "hourly", "interval": 3600, "retention": 2}]})),
            201,
        ))
    }

    fn scratch_host(&self) -> u32 {
        let host = self.admin_ok(
            "POST",
            "/api/rest/hosts",
            Some(json!({"name": "scratch-host", "ports": [{"type": "ISCSI", "address": SCRATCH_IQN}]})),
            201,
        );
        id_of(&host)
    }

    fn scratch_cluster(&self) -> u32 {
        let cluster = self.admin_ok(
            "POST",
            "/api/rest/clusters",
            Some(json!({"name": "scratch-cluster"})),
            201,
        );
        id_of(&cluster)
    }

    /// `volume_b` mapped to a scratch host or cluster (`kind`): (its id, the LUN).
    fn scratch_mapping(&self, kind: &str) -> (u32, u64) {
        let owner = if kind == "hosts" {
            self.scratch_host()
        } else {
            self.scratch_cluster()
        };
        let lun = self.admin_ok(
            "POST",
            &format!("/api/rest/{kind}/{owner}/luns"),
            Some(json!({"volume_id": self.volume_b})),
            201,
        );
        (owner, lun["lun"].as_u64().expect("a LUN"))
    }

    fn clean(&self) {
        // Hosts and clusters first: deleting them drops their mappings.
        for kind in ["clusters", "hosts"] {
            for object in self.list(kind) {
                if is_scratch(&object) {
                    self.admin_ok(
                        "DELETE",
                        &format!("/api/rest/{kind}/{}?approved=true", id_of(&object)),
                        None,
                        200,
                    );
                }
            }
        }
        for policy in self.list("snapshot_policies") {
            if is_scratch(&policy) {
                self.admin_ok(
                    "DELETE",
                    &format!(
                        "/api/rest/snapshot_policies/{}?approved=true",
                        id_of(&policy)
                    ),
                    None,
                    200,
                );
            }
        }
        let mut cgs = self.list("cgs");
        cgs.sort_by_key(|cg| cg["parent_id"] == 0);
        for cg in cgs {
            if is_scratch(&cg) {
                self.admin_ok(
                    "DELETE",
                    &format!("/api/rest/cgs/{}?approved=true", id_of(&cg)),
                    None,
                    200,
                );
            }
        }
        let mut volumes = self.list("volumes");
        volumes.sort_by_key(|volume| std::cmp::Reverse(id_of(volume)));
        for volume in volumes {
            if is_scratch(&volume) {
                self.admin_ok(
                    "DELETE",
                    &format!("/api/rest/volumes/{}?approved=true", id_of(&volume)),
                    None,
                    200,
                );
            }
        }
        for pool in self.list("pools") {
            if is_scratch(&pool) {
                self.admin_ok(
                    "DELETE",
                    &format!("/api/rest/pools/{}?approved=true", id_of(&pool)),
                    None,
                    200,
                );
            }
        }
        for user in self.list("users") {
            if is_scratch(&user) {
                self.admin_ok(
                    "DELETE",
                    &format!("/api/rest/users/{}?approved=true", id_of(&user)),
                    None,
                    200,
                );
            }
        }
        if !self.list("faults").is_empty() {
            self.admin_ok("DELETE", "/api/rest/faults?approved=true", None, 200);
        }
        if self.rebuild_priority() != "MEDIUM" {
            self.admin_ok(
                "PUT",
                "/api/rest/components/rebuild",
                Some(json!({"priority": "MEDIUM"})),
                200,
            );
        }
        // One failback runs at a time: recover the failed controllers one by one, each
        // once the previous one is ACTIVE and nothing is re-mirroring.
        for controller in self.list("controllers") {
            if is_failed(&controller) {
                self.wait_until_controllers_settle();
                self.admin_ok(
                    "POST",
                    &format!("/api/rest/controllers/{}/recover", id_of(&controller)),
                    None,
                    200,
                );
            }
        }
        self.wait_until_controllers_settle();
    }

    /// Waits (at most 30 s) until no controller is RECOVERING and none re-mirrors.
    fn wait_until_controllers_settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let busy = self.list("controllers").iter().any(|controller| {
                controller["state"] == "RECOVERING" || !controller["remirror_progress"].is_null()
            });
            if !busy {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "controllers did not settle within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn rebuild_priority(&self) -> Value {
        self.admin_ok("GET", "/api/rest/components/rebuild", None, 200)["priority"].clone()
    }

    fn list(&self, kind: &str) -> Vec<Value> {
        let list = self.admin_ok(
            "GET",
            &format!("/api/rest/{kind}?page_size=1000"),
            None,
            200,
        );
        list.as_array().cloned().expect("a list")
    }

    /// Pools, volumes and users without the fields that change on their own (space used,
    /// login times), and which controllers are FAILED (the others move between
    /// RECOVERING and ACTIVE on their own).
    fn snapshot(&self) -> Value {
        let strip = |mut rows: Vec<Value>, volatile: &[&str]| {
            for row in &mut rows {
                for field in volatile {
                    row.as_object_mut().expect("an object").remove(*field);
                }
            }
            Value::Array(rows)
        };
        json!({
            "pools": strip(self.list("pools"), &["allocated_physical_space", "free_physical_space"]),
            "volumes": strip(self.list("volumes"), &["used", "allocated", "unique_size", "tree_allocated"]),
            "cgs": self.list("cgs"),
            "snapshot_policies": self.list("snapshot_policies"),
            "hosts": self.list("hosts"),
            "clusters": self.list("clusters"),
            "users": strip(self.list("users"), &["last_login"]),
            "faults": strip(self.list("faults"), &["matched", "fired"]),
            "failed_controllers": self.list("controllers").iter()
                .filter(|controller| is_failed(controller))
                .map(id_of)
                .collect::<Vec<_>>(),
            "drives": self.list("components/drives").iter()
                .map(|drive| json!([drive["path"], drive["state"], drive["serial_number"]]))
                .collect::<Vec<_>>(),
            "rebuild_priority": self.rebuild_priority(),
        })
    }
}

fn id_of(object: &Value) -> u32 {
    let id = object["id"].as_u64().expect("an object with an id");
    u32::try_from(id).expect("an id that fits u32")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

fn is_failed(controller: &Value) -> bool {
    controller["state"] == "FAILED"
}

fn is_scratch(object: &Value) -> bool {
    object["name"]
        .as_str()
        .is_some_and(|name| name.starts_with("scratch"))
}

#[test]
fn every_route_admits_exactly_the_roles_the_specification_names() {
    let world = World::new();

    // The specification and the product's description list the same routes.
    let (status, openapi) = world
        .node
        .api_json("GET", "/api/rest/openapi.json", None, None);
    assert_eq!(status, 200, "{openapi}");
    let mut described = BTreeSet::new();
    for (path, operations) in openapi["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            described.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let specified: BTreeSet<(String, String)> = ROWS
        .iter()
        .map(|row| (row.method.to_owned(), row.path.to_owned()))
        .collect();
    assert_eq!(
        described, specified,
        "the API's routes and this matrix differ: add a row for every new route"
    );

    let mut denied = 0;
    for row in ROWS {
        for role in ROLES {
            let request = (row.build)(&world, role);
            let credentials = role.user().map(|user| (user, PASSWORD));
            let what = format!(
                "{role:?} {} {} (row {}, {} pool)",
                row.method,
                request.target,
                row.path,
                if row.owned_pool { "owned" } else { "other" }
            );
            let before = world.snapshot();
            let (status, answer) = world.node.api_json(
                row.method,
                &request.target,
                credentials,
                request.body.as_ref(),
            );
            if row.who.admits(role, row.owned_pool) {
                if row.on_controller && !world.has_controllers {
                    assert_eq!(
                        (status, &answer["error"]["code"]),
                        (404, &json!("CONTROLLER_NOT_FOUND")),
                        "{what} must pass the role check to a node without controllers: {answer}"
                    );
                } else if let Some((want_status, want_code)) = row.refusal {
                    assert_eq!(
                        (status, answer["error"]["code"].as_str()),
                        (want_status, Some(want_code)),
                        "{what} passes the role check but must be refused: {answer}"
                    );
                    assert_eq!(
                        world.snapshot(),
                        before,
                        "{what} was refused but changed the state"
                    );
                } else {
                    assert_eq!(status, row.status, "{what} must be allowed: {answer}");
                }
            } else {
                denied += 1;
                let (want_status, want_code) = match role {
                    Role::Anonymous => (401, "UNAUTHORIZED"),
                    _ => (403, "PERMISSION_DENIED"),
                };
                assert_eq!(status, want_status, "{what} must be denied: {answer}");
                assert_eq!(answer["error"]["code"], want_code, "{what}: {answer}");
                assert_eq!(
                    world.snapshot(),
                    before,
                    "{what} was denied but changed the state"
                );
            }
            world.clean();
        }
    }
    // Guard against a matrix that silently stopped denying anything.
    assert!(denied > 60, "only {denied} denials in the matrix");
}
