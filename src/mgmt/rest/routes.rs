//! The route table: every method and path the API answers, who may call it, its handler
//! and what the OpenAPI description says of it. Dispatch, role checks and
//! `/api/rest/openapi.json` all read this one table.

use super::auth::Access;
use super::{Call, Mgmt, accounts, controllers, hosts, objects, openapi, policies, snapshots};
use crate::mgmt::api::MgmtError;
use crate::mgmt::http::Response;

/// A handler: runs one request for an already identified and role-checked caller.
pub type Handler = fn(&Mgmt, &Call) -> Result<Response, MgmtError>;

/// What a route answers, for the OpenAPI description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// One object of the named schema in the envelope.
    Object(&'static str),
    /// A paged list of objects of the named schema in the envelope.
    List(&'static str),
    /// Prometheus text.
    Metrics,
    /// A JSON document that is not an envelope (the OpenAPI description itself).
    Document,
}

/// One row of the table.
pub struct Route {
    pub method: &'static str,
    /// Segments separated by `/`; `{name}` matches any one segment.
    pub path: &'static str,
    pub access: Access,
    /// The status of a success.
    pub status: u16,
    pub summary: &'static str,
    /// The schema of the JSON body, when the route takes one.
    pub body: Option<&'static str>,
    pub answer: Answer,
    /// Query parameters beyond the list ones, for the description.
    pub approval: bool,
    pub handler: Handler,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    answer: Answer,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        access,
        status: 200,
        summary,
        body: None,
        answer,
        approval: false,
        handler,
    }
}

const fn with_body(mut route: Route, schema: &'static str, status: u16) -> Route {
    route.body = Some(schema);
    route.status = status;
    route
}

const fn approved(mut route: Route) -> Route {
    route.approval = true;
    route
}

use Access::{Admin, Authenticated, PoolAdmin, Public, Technician};
use Answer::{Document, List, Metrics, Object};

/// Every route, in the order the OpenAPI description lists them.
pub static ROUTES: &[Route] = &[
    route(
        "GET",
        "/api/rest/system",
        Authenticated,
        "The system: name, serial, version, model, capacity and state.",
        Object("System"),
        objects::get_system,
    ),
    route(
        "GET",
        "/api/rest/_features",
        Public,
        "The API features this node implements, with their versions.",
        List("Feature"),
        objects::get_features,
    ),
    route(
        "GET",
        "/api/rest/openapi.json",
        Public,
        "This description.",
        Document,
        openapi::get_openapi,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/users/login",
            Public,
            "Logs in with a user name and password; answers the user and sets the session cookie.",
            Object("User"),
            accounts::login,
        ),
        "Login",
        200,
    ),
    route(
        "POST",
        "/api/rest/users/logout",
        Authenticated,
        "Ends the session of the cookie sent.",
        Object("User"),
        accounts::logout,
    ),
    route(
        "GET",
        "/api/rest/users/current",
        Authenticated,
        "The user making the request.",
        Object("User"),
        accounts::current_user,
    ),
    route(
        "GET",
        "/api/rest/users",
        Admin,
        "Lists the local users.",
        List("User"),
        accounts::list_users,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/users",
            Admin,
            "Creates a local user.",
            Object("User"),
            accounts::create_user,
        ),
        "UserCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/users/{id}",
        Admin,
        "One user.",
        Object("User"),
        accounts::get_user,
    ),
    with_body(
        route(
            "PUT",
            "/api/rest/users/{id}",
            Admin,
            "Changes a user's name, password, role, email or enabled flag.",
            Object("User"),
            accounts::update_user,
        ),
        "UserUpdate",
        200,
    ),
    approved(route(
        "DELETE",
        "/api/rest/users/{id}",
        Admin,
        "Deletes a user and ends its sessions.",
        Object("User"),
        accounts::delete_user,
    )),
    route(
        "GET",
        "/api/rest/pools",
        Authenticated,
        "Lists the pools.",
        List("Pool"),
        objects::list_pools,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/pools",
            Admin,
            "Creates a pool.",
            Object("Pool"),
            objects::create_pool,
        ),
        "PoolCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/pools/{id}",
        Authenticated,
        "One pool.",
        Object("Pool"),
        objects::get_pool,
    ),
    with_body(
        route(
            "PUT",
            "/api/rest/pools/{id}",
            Admin,
            "Renames a pool, changes its capacities, thresholds, SSD use or owners.",
            Object("Pool"),
            objects::update_pool,
        ),
        "PoolUpdate",
        200,
    ),
    approved(route(
        "DELETE",
        "/api/rest/pools/{id}",
        Admin,
        "Deletes an empty pool.",
        Object("Pool"),
        objects::delete_pool,
    )),
    route(
        "GET",
        "/api/rest/pools/{id}/owners",
        Authenticated,
        "The POOL_ADMIN users who manage the pool.",
        List("User"),
        objects::list_pool_owners,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/pools/{id}/owners",
            Admin,
            "Makes a POOL_ADMIN user an owner of the pool.",
            Object("Pool"),
            objects::add_pool_owner,
        ),
        "PoolOwner",
        201,
    ),
    route(
        "DELETE",
        "/api/rest/pools/{id}/owners/{user_id}",
        Admin,
        "Removes an owner from the pool.",
        Object("Pool"),
        objects::remove_pool_owner,
    ),
    route(
        "GET",
        "/api/rest/volumes",
        Authenticated,
        "Lists the volumes.",
        List("Volume"),
        objects::list_volumes,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/volumes",
            PoolAdmin,
            "Creates a volume in a pool.",
            Object("Volume"),
            objects::create_volume,
        ),
        "VolumeCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/volumes/{id}",
        Authenticated,
        "One volume.",
        Object("Volume"),
        objects::get_volume,
    ),
    approved(with_body(
        route(
            "PUT",
            "/api/rest/volumes/{id}",
            PoolAdmin,
            "Renames, resizes (shrinking needs approval), write-protects a volume or changes its SSD use.",
            Object("Volume"),
            objects::update_volume,
        ),
        "VolumeUpdate",
        200,
    )),
    approved(route(
        "DELETE",
        "/api/rest/volumes/{id}",
        PoolAdmin,
        "Deletes a volume and frees its space.",
        Object("Volume"),
        objects::delete_volume,
    )),
    with_body(
        route(
            "POST",
            "/api/rest/volumes/group_snapshot",
            PoolAdmin,
            "Takes snapshots of several volumes at one instant; each is named snap_prefix + volume + snap_suffix.",
            List("Volume"),
            snapshots::create_group_snapshot,
        ),
        "GroupSnapshot",
        201,
    ),
    approved(with_body(
        route(
            "POST",
            "/api/rest/volumes/{id}/restore",
            PoolAdmin,
            "Restores a volume (or snapshot) to the contents of a snapshot of its family: the body is the snapshot's id, bare or as source_id. Hosts see the restored data at once.",
            Object("Volume"),
            snapshots::restore_volume,
        ),
        "Source",
        200,
    )),
    approved(with_body(
        route(
            "POST",
            "/api/rest/volumes/{id}/refresh",
            PoolAdmin,
            "A snapshot takes its parent's current contents.",
            Object("Volume"),
            snapshots::refresh_snapshot,
        ),
        "Source",
        200,
    )),
    route(
        "GET",
        "/api/rest/volumes/{id}/changed_blocks",
        Authenticated,
        "The byte ranges whose contents differ between a dataset and base_id (a snapshot or volume of its family).",
        Object("ChangedBlocks"),
        snapshots::changed_blocks,
    ),
    route(
        "GET",
        "/api/rest/cgs",
        Authenticated,
        "Lists consistency groups and group snapshots.",
        List("ConsistencyGroup"),
        snapshots::list_cgs,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/cgs",
            PoolAdmin,
            "Creates a consistency group (pool_id), or snapshots every member of group parent_id at one instant.",
            Object("ConsistencyGroup"),
            snapshots::create_cg,
        ),
        "CgCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/cgs/{id}",
        Authenticated,
        "One consistency group or group snapshot.",
        Object("ConsistencyGroup"),
        snapshots::get_cg,
    ),
    with_body(
        route(
            "PUT",
            "/api/rest/cgs/{id}",
            PoolAdmin,
            "Renames a consistency group.",
            Object("ConsistencyGroup"),
            snapshots::update_cg,
        ),
        "CgUpdate",
        200,
    ),
    approved(route(
        "DELETE",
        "/api/rest/cgs/{id}",
        PoolAdmin,
        "Deletes a group (its volumes leave it; delete_members=true deletes them) or a group snapshot with its snapshots.",
        Object("ConsistencyGroup"),
        snapshots::delete_cg,
    )),
    route(
        "GET",
        "/api/rest/cgs/{id}/members",
        Authenticated,
        "The volumes of a group, or the snapshots of a group snapshot.",
        List("Volume"),
        snapshots::list_cg_members,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/cgs/{id}/members",
            PoolAdmin,
            "Adds a master volume of the group's pool to the group.",
            Object("Volume"),
            snapshots::add_cg_member,
        ),
        "CgMember",
        201,
    ),
    route(
        "DELETE",
        "/api/rest/cgs/{id}/members/{volume_id}",
        PoolAdmin,
        "Takes a volume out of the group.",
        Object("Volume"),
        snapshots::remove_cg_member,
    ),
    approved(with_body(
        route(
            "POST",
            "/api/rest/cgs/{id}/restore",
            PoolAdmin,
            "Restores every member of a group from a group snapshot of it, at one instant.",
            Object("ConsistencyGroup"),
            snapshots::restore_cg,
        ),
        "Source",
        200,
    )),
    approved(route(
        "POST",
        "/api/rest/cgs/{id}/refresh",
        PoolAdmin,
        "A group snapshot takes its group's current contents, at one instant.",
        Object("ConsistencyGroup"),
        snapshots::refresh_cg,
    )),
    route(
        "GET",
        "/api/rest/snapshot_policies",
        Authenticated,
        "Lists snapshot policies: schedules that snapshot their assets every interval and keep the newest.",
        List("SnapshotPolicy"),
        policies::list_policies,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/snapshot_policies",
            Admin,
            "Creates a snapshot policy with its schedules (name, interval in seconds, retention, optional lock_duration) and assets.",
            Object("SnapshotPolicy"),
            policies::create_policy,
        ),
        "PolicyCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/snapshot_policies/{id}",
        Authenticated,
        "One snapshot policy.",
        Object("SnapshotPolicy"),
        policies::get_policy,
    ),
    with_body(
        route(
            "PUT",
            "/api/rest/snapshot_policies/{id}",
            Admin,
            "Renames, enables or disables a snapshot policy or replaces its schedules.",
            Object("SnapshotPolicy"),
            policies::update_policy,
        ),
        "PolicyUpdate",
        200,
    ),
    approved(route(
        "DELETE",
        "/api/rest/snapshot_policies/{id}",
        Admin,
        "Deletes a snapshot policy; the snapshots it took stay.",
        Object("SnapshotPolicy"),
        policies::delete_policy,
    )),
    with_body(
        route(
            "POST",
            "/api/rest/snapshot_policies/{id}/assets",
            Admin,
            "Makes a master volume an asset of the policy.",
            Object("SnapshotPolicy"),
            policies::add_asset,
        ),
        "PolicyAsset",
        201,
    ),
    route(
        "DELETE",
        "/api/rest/snapshot_policies/{id}/assets/{entity_id}",
        Admin,
        "Stops the policy snapshotting a volume.",
        Object("SnapshotPolicy"),
        policies::remove_asset,
    ),
    route(
        "GET",
        "/api/rest/hosts",
        Authenticated,
        "Lists hosts: their initiator ports, CHAP method (never secrets), cluster and LUNs.",
        List("Host"),
        hosts::list_hosts,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/hosts",
            Admin,
            "Creates a host with optional ports ({type, address}) and CHAP settings (secrets 12 to 16 characters).",
            Object("Host"),
            hosts::create_host,
        ),
        "HostCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/hosts/{id}",
        Authenticated,
        "One host.",
        Object("Host"),
        hosts::get_host,
    ),
    with_body(
        route(
            "PUT",
            "/api/rest/hosts/{id}",
            Admin,
            "Renames a host or changes its type or CHAP settings.",
            Object("Host"),
            hosts::update_host,
        ),
        "HostUpdate",
        200,
    ),
    approved(route(
        "DELETE",
        "/api/rest/hosts/{id}",
        Admin,
        "Deletes a host with its own LUN mappings.",
        Object("Host"),
        hosts::delete_host,
    )),
    with_body(
        route(
            "POST",
            "/api/rest/hosts/{id}/ports",
            Admin,
            "Adds an initiator port (an iSCSI name belongs to one host only).",
            Object("Host"),
            hosts::add_port,
        ),
        "HostPort",
        201,
    ),
    route(
        "DELETE",
        "/api/rest/hosts/{id}/ports/{type}/{address}",
        Admin,
        "Removes an initiator port.",
        Object("Host"),
        hosts::remove_port,
    ),
    route(
        "GET",
        "/api/rest/hosts/{id}/luns",
        Authenticated,
        "Lists the LUN mappings the host sees.",
        List("Lun"),
        hosts::list_luns,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/hosts/{id}/luns",
            Admin,
            "Maps a volume or snapshot ({volume_id[, lun]}; free LUNs from 1).",
            Object("Lun"),
            hosts::map_lun,
        ),
        "LunCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/hosts/{id}/luns/{lun}",
        Authenticated,
        "One LUN mapping by its number.",
        Object("Lun"),
        hosts::get_lun,
    ),
    route(
        "DELETE",
        "/api/rest/hosts/{id}/luns/lun/{lun}",
        Admin,
        "Unmaps a LUN by its number.",
        Object("Lun"),
        hosts::unmap_by_lun,
    ),
    route(
        "DELETE",
        "/api/rest/hosts/{id}/luns/volume_id/{volume_id}",
        Admin,
        "Unmaps a volume.",
        Object("Lun"),
        hosts::unmap_by_volume,
    ),
    route(
        "GET",
        "/api/rest/clusters",
        Authenticated,
        "Lists host clusters: their hosts and the LUNs they share.",
        List("HostCluster"),
        hosts::list_clusters,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/clusters",
            Admin,
            "Creates a host cluster.",
            Object("HostCluster"),
            hosts::create_cluster,
        ),
        "ClusterCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/clusters/{id}",
        Authenticated,
        "One host cluster.",
        Object("HostCluster"),
        hosts::get_cluster,
    ),
    with_body(
        route(
            "PUT",
            "/api/rest/clusters/{id}",
            Admin,
            "Renames a host cluster.",
            Object("HostCluster"),
            hosts::update_cluster,
        ),
        "ClusterUpdate",
        200,
    ),
    approved(route(
        "DELETE",
        "/api/rest/clusters/{id}",
        Admin,
        "Deletes a host cluster with its LUN mappings; its hosts stay.",
        Object("HostCluster"),
        hosts::delete_cluster,
    )),
    with_body(
        route(
            "POST",
            "/api/rest/clusters/{id}/hosts",
            Admin,
            "Adds a host ({id}) to the cluster; its own LUNs must not clash with the cluster's.",
            Object("HostCluster"),
            hosts::add_cluster_host,
        ),
        "ClusterHost",
        201,
    ),
    route(
        "DELETE",
        "/api/rest/clusters/{id}/hosts/{host_id}",
        Admin,
        "Takes a host out of the cluster.",
        Object("HostCluster"),
        hosts::remove_cluster_host,
    ),
    route(
        "GET",
        "/api/rest/clusters/{id}/luns",
        Authenticated,
        "Lists the LUN mappings the cluster sees.",
        List("Lun"),
        hosts::list_luns,
    ),
    with_body(
        route(
            "POST",
            "/api/rest/clusters/{id}/luns",
            Admin,
            "Maps a volume or snapshot ({volume_id[, lun]}; free LUNs from 11).",
            Object("Lun"),
            hosts::map_lun,
        ),
        "LunCreate",
        201,
    ),
    route(
        "GET",
        "/api/rest/clusters/{id}/luns/{lun}",
        Authenticated,
        "One LUN mapping by its number.",
        Object("Lun"),
        hosts::get_lun,
    ),
    route(
        "DELETE",
        "/api/rest/clusters/{id}/luns/lun/{lun}",
        Admin,
        "Unmaps a LUN by its number.",
        Object("Lun"),
        hosts::unmap_by_lun,
    ),
    route(
        "DELETE",
        "/api/rest/clusters/{id}/luns/volume_id/{volume_id}",
        Admin,
        "Unmaps a volume.",
        Object("Lun"),
        hosts::unmap_by_volume,
    ),
    route(
        "GET",
        "/api/rest/replicas",
        Authenticated,
        "Lists replicas (none: replication comes later).",
        List("Replica"),
        snapshots::list_replicas,
    ),
    route(
        "GET",
        "/api/rest/controllers",
        Authenticated,
        "Lists the controllers with their state, ports, ownership, cache and failover progress.",
        List("Controller"),
        controllers::list_controllers,
    ),
    route(
        "GET",
        "/api/rest/controllers/{id}",
        Authenticated,
        "One controller.",
        Object("Controller"),
        controllers::get_controller,
    ),
    approved(route(
        "POST",
        "/api/rest/controllers/{id}/fail",
        Technician,
        "Fails a controller as a hardware fault would: its ports close, its cache is discarded and the others take over its sections.",
        Object("Controller"),
        controllers::fail_controller,
    )),
    route(
        "POST",
        "/api/rest/controllers/{id}/recover",
        Technician,
        "Brings a failed controller back; its sections move back to it gradually.",
        Object("Controller"),
        controllers::recover_controller,
    ),
    route(
        "GET",
        "/api/rest/events",
        Authenticated,
        "Lists events, oldest first by default.",
        List("Event"),
        objects::list_events,
    ),
    route(
        "GET",
        "/api/rest/events/types",
        Authenticated,
        "Every event code the node raises, the levels, visibilities and reporters.",
        Object("EventTypes"),
        objects::list_event_types,
    ),
    route(
        "GET",
        "/api/rest/events/{id}",
        Authenticated,
        "One event.",
        Object("Event"),
        objects::get_event,
    ),
    route(
        "GET",
        "/metrics",
        Authenticated,
        "Counters, gauges and latency histograms in Prometheus text format.",
        Metrics,
        objects::get_metrics,
    ),
];

/// What a method and path lead to.
pub enum Found<'a> {
    Route(&'static Route, Vec<&'a str>),
    /// The path exists with other methods, listed for the `Allow` header.
    MethodNotAllowed(String),
    NotFound,
}

/// Finds the route for `method` and `path` (a trailing `/` is ignored). A literal segment
/// wins over a `{param}` one, so `/users/login` is not user `login`.
pub fn find<'a>(method: &str, path: &'a str) -> Found<'a> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let mut best: Option<(&'static Route, Vec<&'a str>, usize)> = None;
    let mut allowed: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        let Some((params, literals)) = match_path(route.path, path) else {
            continue;
        };
        if route.method != method {
            // A path that some literal route claims is not a `{param}` route's too.
            allowed.push(route.method);
            continue;
        }
        if best.as_ref().is_none_or(|(_, _, most)| literals > *most) {
            best = Some((route, params, literals));
        }
    }
    match best {
        Some((route, params, literals)) => {
            // `POST /users/login` must not be shadowed, and `GET /users/login` must not
            // fall through to `GET /users/{id}`: a more literal match on another method
            // means this path belongs to that route.
            let shadowed = ROUTES.iter().any(|other| {
                other.method != method
                    && match_path(other.path, path).is_some_and(|(_, l)| l > literals)
            });
            if shadowed {
                Found::MethodNotAllowed(literal_methods(path))
            } else {
                Found::Route(route, params)
            }
        }
        None if allowed.is_empty() => Found::NotFound,
        None => {
            allowed.dedup();
            Found::MethodNotAllowed(allowed.join(", "))
        }
    }
}

/// The methods of the most literal routes matching `path`.
fn literal_methods(path: &str) -> String {
    let most = ROUTES
        .iter()
        .filter_map(|route| match_path(route.path, path).map(|(_, literals)| literals))
        .max()
        .unwrap_or(0);
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|route| match_path(route.path, path).is_some_and(|(_, l)| l == most))
        .map(|route| route.method)
        .collect();
    methods.dedup();
    methods.join(", ")
}

/// The parameters of `path` under `pattern` and how many segments matched literally.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<(Vec<&'a str>, usize)> {
    let mut params = Vec::new();
    let mut literals = 0;
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some((params, literals)),
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with('}') && !h.is_empty() => {
                params.push(h);
            }
            (Some(w), Some(h)) if w == h => literals += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(method: &str, path: &str) -> Option<(&'static str, Vec<String>)> {
        match find(method, path) {
            Found::Route(route, params) => {
                Some((route.path, params.into_iter().map(str::to_owned).collect()))
            }
            _ => None,
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(
            route_of("POST", "/api/rest/users/login"),
            Some(("/api/rest/users/login", vec![]))
        );
        assert_eq!(
            route_of("GET", "/api/rest/users/7"),
            Some(("/api/rest/users/{id}", vec!["7".to_owned()]))
        );
        assert_eq!(
            route_of("GET", "/api/rest/events/types/"),
            Some(("/api/rest/events/types", vec![]))
        );
        assert!(matches!(
            find("GET", "/api/rest/users/login"),
            Found::MethodNotAllowed(allow) if allow == "POST"
        ));
        assert!(matches!(
            find("PATCH", "/api/rest/volumes/3"),
            Found::MethodNotAllowed(allow) if allow == "GET, PUT, DELETE"
        ));
        assert_eq!(
            route_of("POST", "/api/rest/controllers/2/fail"),
            Some(("/api/rest/controllers/{id}/fail", vec!["2".to_owned()]))
        );
        assert!(matches!(
            find("GET", "/api/rest/controllers/2/recover"),
            Found::MethodNotAllowed(allow) if allow == "POST"
        ));
        assert!(matches!(find("GET", "/api/rest/nothing"), Found::NotFound));
        assert!(matches!(
            find("GET", "/api/rest/volumes//"),
            Found::NotFound
        ));
        assert!(matches!(find("GET", ""), Found::NotFound));
    }

    #[test]
    fn every_route_is_unique() {
        for (index, route) in ROUTES.iter().enumerate() {
            for other in &ROUTES[index + 1..] {
                assert!(
                    !(route.method == other.method && route.path == other.path),
                    "{} {} is in the table twice",
                    route.method,
                    route.path
                );
            }
        }
    }
}
