//! The role matrix of the REST API, against the real binary over TCP.
//!
//! [`ROWS`] is the specification, written here independently of the product's route table:
//! every method and path, who may call it, and a plausible request. The test checks that
//! `GET /api/rest/openapi.json` lists exactly these method+path pairs (so a new route
//! without a row fails), then sends every row as every role and as an anonymous caller.
//! An allowed request must succeed with the row's status; a denied one must answer 403
//! `PERMISSION_DENIED` (401 `UNAUTHORIZED` when anonymous) and change nothing: pools,
//! volumes, users and which controllers are FAILED, as an admin reads them, are compared
//! before and after.
//!
//! Each cell starts from the same state: objects a row changes are scratch objects
//! (named `scratch...`) made by the admin just before the request and removed after it,
//! and a controller a row fails is recovered after it, so the order of cells does not
//! matter.
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

/// The node, its users and the fixed objects every row may read.
struct World {
    node: TestNode,
    admin_password: String,
    pool_a: u32,
    pool_b: u32,
    volume_b: u32,
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
            volume_b: 0,
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
        world.create_volume("vol-a", world.pool_a);
        world.volume_b = world.create_volume("vol-b", world.pool_b);
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

    /// Removes every scratch object, so the next cell starts from the fixed state.
    fn clean(&self) {
        for volume in self.list("volumes") {
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
            "volumes": strip(self.list("volumes"), &["used", "allocated"]),
            "users": strip(self.list("users"), &["last_login"]),
            "failed_controllers": self.list("controllers").iter()
                .filter(|controller| is_failed(controller))
                .map(id_of)
                .collect::<Vec<_>>(),
        })
    }
}

fn id_of(object: &Value) -> u32 {
    let id = object["id"].as_u64().expect("an object with an id");
    u32::try_from(id).expect("an id that fits u32")
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
