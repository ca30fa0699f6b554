//! Snapshots, restores, refreshes, changed blocks, consistency groups and snapshot locks
//! through the REST API of the real binary, in the shapes InfiniBox's API (and infinisdk)
//! use.
//!
//! * [`every_snapshot_route_answers`] calls each snapshot and consistency-group route,
//!   checks the status and the fields that say what happened, and the refusals: a restore
//!   from another family, a refresh of a master volume, deleting a volume with snapshots,
//!   changed blocks without a base, an unknown group, a restore without approval, a
//!   snapshot of a volume that does not exist, a shortened lock, a locked snapshot.
//! * [`every_snapshot_policy_route_answers`] calls each snapshot policy route with its
//!   refusals (an unknown policy, a schedule every 0 s, keeping none or named twice, a
//!   snapshot as asset, an asset added twice, a delete without approval, READ_ONLY and
//!   POOL_ADMIN changing one), and sees an enabled policy take its snapshots, with events,
//!   and those snapshots outlive it.
//! * [`snapshots_hold_their_data`] writes through NBD (qemu-io) and reads back with
//!   nbdcopy: a snapshot keeps the old data after the volume is overwritten, a restore
//!   brings it back, a refresh moves a snapshot forward, changed blocks lists exactly the
//!   blocks written since the snapshot, and a group restore rewinds every member.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestNode;
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;
const KIB: u64 = 1024;
const BLOCK: u64 = 4096;
/// An id no object has.
const MISSING: u32 = 987_654;

/// A node with the REST API on TCP, called as the built-in admin.
struct Api {
    node: TestNode,
    password: String,
}

impl Api {
    fn start() -> Api {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/api.toml");
        let node = TestNode::start_with_api(model);
        let password = node.admin_password();
        Api { node, password }
    }

    fn call(&self, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
        self.node.api_json(
            method,
            target,
            Some(("admin", &self.password)),
            body.as_ref(),
        )
    }

    /// A request that must answer `status`; its `result`.
    fn ok(&self, method: &str, target: &str, body: Option<Value>, status: u16) -> Value {
        let (got, answer) = self.call(method, target, body);
        assert_eq!(got, status, "{method} {target}: {answer}");
        assert!(answer["error"].is_null(), "{method} {target}: {answer}");
        answer["result"].clone()
    }

    /// A request that must be refused with `status` and error `code`.
    /// A request that must be refused with `status` and error `code`; the message.
    fn refused(
        &self,
        method: &str,
        target: &str,
        body: Option<Value>,
        status: u16,
        code: &str,
    ) -> String {
        let (got, answer) = self.call(method, target, body);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {target} must be refused with {status} {code}: {answer}"
        );
        answer["error"]["message"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }

    fn get(&self, target: &str) -> Value {
        self.ok("GET", target, None, 200)
    }

    fn pool(&self, name: &str) -> u32 {
        let pool = self.ok(
            "POST",
            "/api/rest/pools",
            Some(json!({"name": name, "physical_capacity": 1024 * MIB})),
            201,
        );
        id_of(&pool)
    }

    fn volume(&self, name: &str, pool: u32, size: u64) -> u32 {
        let volume = self.ok(
            "POST",
            "/api/rest/volumes",
            Some(json!({"name": name, "pool_id": pool, "size": size, "provtype": "THIN"})),
            201,
        );
        id_of(&volume)
    }

    fn snapshot(&self, parent: u32, name: &str) -> Value {
        self.ok(
            "POST",
            "/api/rest/volumes",
            Some(json!({"name": name, "parent_id": parent})),
            201,
        )
    }

    fn exists(&self, collection: &str, id: u32) -> bool {
        let (status, answer) = self.call("GET", &format!("/api/rest/{collection}/{id}"), None);
        assert!(status == 200 || status == 404, "{answer}");
        status == 200
    }

    fn changed(&self, volume: u32, base: u32) -> Value {
        self.get(&format!(
            "/api/rest/volumes/{volume}/changed_blocks?base_id={base}"
        ))
    }
}

fn id_of(object: &Value) -> u32 {
    let id = object["id"].as_u64().expect("an object with an id");
    u32::try_from(id).expect("an id that fits u32")
}

fn ids(list: &Value) -> Vec<u32> {
    let mut ids: Vec<u32> = list.as_array().expect("a list").iter().map(id_of).collect();
    ids.sort_unstable();
    ids
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

#[test]
fn every_snapshot_route_answers() {
    let mut api = Api::start();
    let pool = api.pool("P");
    let other_pool = api.pool("Q");
    let v1 = api.volume("v1", pool, 16 * MIB);
    let v2 = api.volume("v2", pool, 16 * MIB);
    let v3 = api.volume("v3", pool, 8 * MIB);
    let elsewhere = api.volume("elsewhere", other_pool, 8 * MIB);

    // POST /api/rest/volumes with parent_id: a snapshot.
    let s1 = api.snapshot(v1, "v1.s1");
    assert_eq!(s1["type"], "SNAPSHOT", "{s1}");
    assert_eq!(s1["dataset_type"], "VOLUME", "{s1}");
    assert_eq!(s1["parent_id"], v1, "{s1}");
    assert_eq!(s1["family_id"], v1, "{s1}");
    assert_eq!(s1["pool_id"], pool, "{s1}");
    assert_eq!(s1["size"], 16 * MIB, "{s1}");
    assert_eq!(s1["write_protected"], true, "{s1}");
    assert_eq!(
        (&s1["lock_state"], &s1["lock_expires_at"]),
        (&json!("UNLOCKED"), &Value::Null),
        "{s1}"
    );
    let s1 = id_of(&s1);
    let unnamed = api.ok(
        "POST",
        "/api/rest/volumes",
        Some(json!({"parent_id": v1, "write_protected": false})),
        201,
    );
    assert!(
        unnamed["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("v1")),
        "a generated name starts with the parent's: {unnamed}"
    );
    assert_eq!(unnamed["write_protected"], false, "{unnamed}");
    let unnamed = id_of(&unnamed);
    let nested = api.snapshot(s1, "v1.s1.s");
    assert_eq!(
        (&nested["parent_id"], &nested["family_id"]),
        (&json!(s1), &json!(v1)),
        "{nested}"
    );
    let nested = id_of(&nested);
    api.refused(
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "ghost.s", "parent_id": MISSING})),
        404,
        "VOLUME_NOT_FOUND",
    );
    api.refused(
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "v1.s1", "parent_id": v1})),
        409,
        "NAME_CONFLICT",
    );
    let master = api.get(&format!("/api/rest/volumes/{v1}"));
    assert_eq!(
        (&master["type"], &master["has_children"]),
        (&json!("MASTER"), &json!(true)),
        "{master}"
    );
    let snapshots = api.get(&format!(
        "/api/rest/volumes?parent_id=eq:{v1}&type=eq:SNAPSHOT"
    ));
    assert_eq!(ids(&snapshots), vec![s1, unnamed]);

    // POST /api/rest/volumes/group_snapshot: one instant, one snapshot per volume.
    let group = api.ok(
        "POST",
        "/api/rest/volumes/group_snapshot",
        Some(json!({"snap_prefix": "gs_", "entities": [{"id": v1}, {"id": v2}]})),
        201,
    );
    let group = group.as_array().expect("a list of snapshots").clone();
    assert_eq!(group.len(), 2);
    for (snapshot, (parent, name)) in group.iter().zip([(v1, "gs_v1"), (v2, "gs_v2")]) {
        assert_eq!(
            (&snapshot["parent_id"], &snapshot["name"], &snapshot["type"]),
            (&json!(parent), &json!(name), &json!("SNAPSHOT")),
            "{snapshot}"
        );
    }
    api.refused(
        "POST",
        "/api/rest/volumes/group_snapshot",
        Some(json!({"snap_prefix": "x_", "entities": []})),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        "/api/rest/volumes/group_snapshot",
        Some(json!({"entities": [{"id": v1}]})),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        "/api/rest/volumes/group_snapshot",
        Some(json!({"snap_prefix": "x_", "entities": [{"id": v1}, {"id": MISSING}]})),
        404,
        "VOLUME_NOT_FOUND",
    );
    assert!(
        api.get("/api/rest/volumes?name=eq:x_v1")
            .as_array()
            .is_some_and(Vec::is_empty),
        "a refused group snapshot took a snapshot anyway"
    );
    for snapshot in &group {
        api.ok(
            "DELETE",
            &format!("/api/rest/volumes/{}?approved=true", id_of(snapshot)),
            None,
            200,
        );
    }

    // POST /api/rest/volumes/{id}/restore: a bare id (infinisdk) or {"source_id"}.
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{v1}/restore"),
        Some(json!(s1)),
        403,
        "APPROVAL_REQUIRED",
    );
    let restored = api.ok(
        "POST",
        &format!("/api/rest/volumes/{v1}/restore?approved=true"),
        Some(json!(s1)),
        200,
    );
    assert_eq!(
        (id_of(&restored), &restored["type"]),
        (v1, &json!("MASTER")),
        "{restored}"
    );
    api.ok(
        "POST",
        &format!("/api/rest/volumes/{v1}/restore?approved=true"),
        Some(json!({"source_id": unnamed})),
        200,
    );
    api.ok(
        "POST",
        &format!("/api/rest/volumes/{nested}/restore?approved=true"),
        Some(json!(unnamed)),
        200,
    );
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{v2}/restore?approved=true"),
        Some(json!(s1)),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{s1}/restore?approved=true"),
        Some(json!(v1)),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{v1}/restore?approved=true"),
        None,
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{MISSING}/restore?approved=true"),
        Some(json!(s1)),
        404,
        "VOLUME_NOT_FOUND",
    );

    // POST /api/rest/volumes/{id}/refresh: a snapshot takes its parent's contents.
    let refreshed = api.ok(
        "POST",
        &format!("/api/rest/volumes/{s1}/refresh?approved=true"),
        Some(json!({"source_id": v1})),
        200,
    );
    assert_eq!(
        (id_of(&refreshed), &refreshed["parent_id"]),
        (s1, &json!(v1)),
        "{refreshed}"
    );
    api.ok(
        "POST",
        &format!("/api/rest/volumes/{s1}/refresh?approved=true"),
        None,
        200,
    );
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{s1}/refresh"),
        Some(json!({"source_id": v1})),
        403,
        "APPROVAL_REQUIRED",
    );
    for body in [None, Some(json!({"source_id": v1}))] {
        let message = api.refused(
            "POST",
            &format!("/api/rest/volumes/{v1}/refresh?approved=true"),
            body,
            400,
            "BAD_REQUEST",
        );
        assert!(message.contains("is not a snapshot"), "{message}");
    }
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{s1}/refresh?approved=true"),
        Some(json!({"source_id": v2})),
        400,
        "BAD_REQUEST",
    );

    // GET /api/rest/volumes/{id}/changed_blocks?base_id=N (data: see the other test).
    let changed = api.changed(v1, s1);
    assert_eq!(
        (
            &changed["volume_id"],
            &changed["base_id"],
            &changed["block_size"],
            &changed["changed_bytes"],
            &changed["ranges"]
        ),
        (&json!(v1), &json!(s1), &json!(BLOCK), &json!(0), &json!([])),
        "{changed}"
    );
    let target = format!("/api/rest/volumes/{v1}/changed_blocks");
    api.refused("GET", &target, None, 400, "BAD_REQUEST");
    api.refused(
        "GET",
        &format!("{target}?base_id=s1"),
        None,
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "GET",
        &format!("{target}?base_id={v2}"),
        None,
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "GET",
        &format!("{target}?base_id={MISSING}"),
        None,
        404,
        "VOLUME_NOT_FOUND",
    );

    // A volume with snapshots stays.
    api.refused(
        "DELETE",
        &format!("/api/rest/volumes/{v1}?approved=true"),
        None,
        400,
        "BAD_REQUEST",
    );
    assert!(api.exists("volumes", v1));

    // GET /api/rest/replicas: none (infinisdk lists them before adding a member).
    let (status, replicas) = api.call("GET", "/api/rest/replicas?local_cg_id=eq:1", None);
    assert_eq!(status, 200, "{replicas}");
    assert_eq!(
        (
            &replicas["result"],
            &replicas["metadata"]["number_of_objects"]
        ),
        (&json!([]), &json!(0)),
        "{replicas}"
    );

    // POST /api/rest/cgs with pool_id: a consistency group.
    let cg = api.ok(
        "POST",
        "/api/rest/cgs",
        Some(json!({"name": "cg1", "pool_id": pool})),
        201,
    );
    assert_eq!(
        (
            &cg["type"],
            &cg["pool_id"],
            &cg["parent_id"],
            &cg["members_count"]
        ),
        (&json!("MASTER"), &json!(pool), &json!(0), &json!(0)),
        "{cg}"
    );
    let cg = id_of(&cg);
    api.refused(
        "POST",
        "/api/rest/cgs",
        Some(json!({"name": "cg1", "pool_id": pool})),
        409,
        "NAME_CONFLICT",
    );
    api.refused(
        "POST",
        "/api/rest/cgs",
        Some(json!({"name": "nopool"})),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        "/api/rest/cgs",
        Some(json!({"parent_id": cg, "name": "empty"})),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        "/api/rest/cgs",
        Some(json!({"parent_id": MISSING})),
        404,
        "CONS_GROUP_NOT_FOUND",
    );

    // An unknown group, on every route that names one.
    let member_path = format!("/members/{v1}");
    for (method, suffix) in [
        ("GET", ""),
        ("PUT", ""),
        ("DELETE", "?approved=true"),
        ("GET", "/members"),
        ("POST", "/members"),
        ("DELETE", member_path.as_str()),
        ("POST", "/restore?approved=true"),
        ("POST", "/refresh?approved=true"),
    ] {
        let body = match (method, suffix) {
            ("PUT", _) => Some(json!({"name": "ghost"})),
            ("POST", "/members") => Some(json!({"dataset_id": v1})),
            ("POST", _) => Some(json!({"source_id": cg})),
            _ => None,
        };
        api.refused(
            method,
            &format!("/api/rest/cgs/{MISSING}{suffix}"),
            body,
            404,
            "CONS_GROUP_NOT_FOUND",
        );
    }

    // POST /api/rest/cgs/{id}/members: master volumes of the group's pool.
    for volume in [v1, v2] {
        let member = api.ok(
            "POST",
            &format!("/api/rest/cgs/{cg}/members"),
            Some(json!({"dataset_id": volume})),
            201,
        );
        assert_eq!(
            (id_of(&member), &member["cg_id"]),
            (volume, &json!(cg)),
            "{member}"
        );
    }
    for (volume, status, code) in [
        (s1, 400, "BAD_REQUEST"),
        (elsewhere, 400, "BAD_REQUEST"),
        (MISSING, 404, "VOLUME_NOT_FOUND"),
    ] {
        api.refused(
            "POST",
            &format!("/api/rest/cgs/{cg}/members"),
            Some(json!({"dataset_id": volume})),
            status,
            code,
        );
    }

    // GET /api/rest/cgs/{id}/members, GET /api/rest/cgs/{id}, PUT /api/rest/cgs/{id}.
    let members = api.get(&format!("/api/rest/cgs/{cg}/members"));
    assert_eq!(ids(&members), vec![v1, v2]);
    assert!(
        members
            .as_array()
            .expect("members")
            .iter()
            .all(|member| member["dataset_type"] == "VOLUME"),
        "{members}"
    );
    assert_eq!(api.get(&format!("/api/rest/cgs/{cg}"))["members_count"], 2);
    let renamed = api.ok(
        "PUT",
        &format!("/api/rest/cgs/{cg}"),
        Some(json!({"name": "cg1-renamed"})),
        200,
    );
    assert_eq!(renamed["name"], "cg1-renamed", "{renamed}");
    api.refused(
        "PUT",
        &format!("/api/rest/cgs/{cg}"),
        Some(json!({"pool_id": other_pool})),
        400,
        "BAD_REQUEST",
    );

    // POST /api/rest/cgs with parent_id: a group snapshot, as infinisdk sends it.
    let sg = api.ok(
        "POST",
        "/api/rest/cgs",
        Some(json!({"snap_prefix": null, "parent_id": cg, "snap_suffix": "_sg1", "name": "sg1"})),
        201,
    );
    assert_eq!(
        (&sg["type"], &sg["parent_id"], &sg["members_count"]),
        (&json!("SNAPSHOT"), &json!(cg), &json!(2)),
        "{sg}"
    );
    let sg = id_of(&sg);
    let sg_members = api.get(&format!("/api/rest/cgs/{sg}/members"));
    let mut parents: Vec<(u64, String)> = sg_members
        .as_array()
        .expect("members")
        .iter()
        .map(|member| {
            assert_eq!(
                (&member["type"], &member["cg_id"]),
                (&json!("SNAPSHOT"), &json!(sg)),
                "{member}"
            );
            (
                member["parent_id"].as_u64().expect("a parent"),
                member["name"].as_str().expect("a name").to_owned(),
            )
        })
        .collect();
    parents.sort();
    assert_eq!(
        parents,
        vec![
            (u64::from(v1), "v1_sg1".to_owned()),
            (u64::from(v2), "v2_sg1".to_owned())
        ]
    );
    let sg_snapshots = ids(&sg_members);
    assert_eq!(
        ids(&api.get(&format!("/api/rest/cgs?parent_id=eq:{cg}"))),
        vec![sg]
    );
    assert_eq!(
        api.get(&format!("/api/rest/cgs/{cg}"))["has_children"],
        true
    );
    let all = api.get("/api/rest/cgs");
    assert_eq!(ids(&all), vec![cg, sg]);
    api.refused(
        "POST",
        "/api/rest/cgs",
        Some(json!({"parent_id": sg, "name": "sg-of-sg"})),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        &format!("/api/rest/cgs/{sg}/members"),
        Some(json!({"dataset_id": v3})),
        400,
        "BAD_REQUEST",
    );

    // POST /api/rest/cgs/{id}/restore and /refresh.
    api.refused(
        "POST",
        &format!("/api/rest/cgs/{cg}/restore"),
        Some(json!({"source_id": sg})),
        403,
        "APPROVAL_REQUIRED",
    );
    let restored = api.ok(
        "POST",
        &format!("/api/rest/cgs/{cg}/restore?approved=true"),
        Some(json!({"source_id": sg})),
        200,
    );
    assert_eq!(id_of(&restored), cg, "{restored}");
    api.refused(
        "POST",
        &format!("/api/rest/cgs/{cg}/restore?approved=true"),
        None,
        400,
        "BAD_REQUEST",
    );
    let cg2 = id_of(&api.ok(
        "POST",
        "/api/rest/cgs",
        Some(json!({"name": "cg2", "pool_id": pool})),
        201,
    ));
    api.ok(
        "POST",
        &format!("/api/rest/cgs/{cg2}/members"),
        Some(json!({"dataset_id": v3})),
        201,
    );
    api.refused(
        "POST",
        &format!("/api/rest/cgs/{cg2}/restore?approved=true"),
        Some(json!({"source_id": sg})),
        400,
        "BAD_REQUEST",
    );
    let refreshed = api.ok(
        "POST",
        &format!("/api/rest/cgs/{sg}/refresh?approved=true"),
        Some(json!({"source_id": cg})),
        200,
    );
    assert_eq!(
        (id_of(&refreshed), &refreshed["members_count"]),
        (sg, &json!(2)),
        "{refreshed}"
    );
    api.refused(
        "POST",
        &format!("/api/rest/cgs/{sg}/refresh"),
        Some(json!({"source_id": cg})),
        403,
        "APPROVAL_REQUIRED",
    );
    api.refused(
        "POST",
        &format!("/api/rest/cgs/{cg}/refresh?approved=true"),
        None,
        400,
        "BAD_REQUEST",
    );

    // DELETE /api/rest/cgs/{id}/members/{volume_id}.
    let left = api.ok(
        "DELETE",
        &format!("/api/rest/cgs/{cg}/members/{v2}?approved=true"),
        None,
        200,
    );
    assert_eq!((id_of(&left), &left["cg_id"]), (v2, &Value::Null), "{left}");
    api.refused(
        "DELETE",
        &format!("/api/rest/cgs/{cg}/members/{v2}?approved=true"),
        None,
        400,
        "BAD_REQUEST",
    );
    assert_eq!(
        ids(&api.get(&format!("/api/rest/cgs/{cg}/members"))),
        vec![v1]
    );

    // DELETE /api/rest/cgs/{id}: a group snapshot goes with its snapshots; a group with
    // delete_members=true takes its members, refusing (and deleting nothing) while a
    // member has snapshots.
    api.refused(
        "DELETE",
        &format!("/api/rest/cgs/{sg}"),
        None,
        403,
        "APPROVAL_REQUIRED",
    );
    api.refused(
        "DELETE",
        &format!("/api/rest/cgs/{cg}?delete_members=true&approved=true"),
        None,
        400,
        "BAD_REQUEST",
    );
    assert!(api.exists("cgs", cg) && api.exists("volumes", v1));
    api.ok(
        "DELETE",
        &format!("/api/rest/cgs/{sg}?approved=true"),
        None,
        200,
    );
    assert!(!api.exists("cgs", sg));
    for snapshot in sg_snapshots {
        assert!(
            !api.exists("volumes", snapshot),
            "snapshot {snapshot} outlived its group snapshot"
        );
    }
    for snapshot in [nested, s1, unnamed] {
        api.ok(
            "DELETE",
            &format!("/api/rest/volumes/{snapshot}?approved=true"),
            None,
            200,
        );
    }
    api.ok(
        "DELETE",
        &format!("/api/rest/cgs/{cg}?delete_members=true&approved=true"),
        None,
        200,
    );
    assert!(!api.exists("cgs", cg) && !api.exists("volumes", v1));
    assert!(
        api.exists("volumes", v2),
        "a volume that left the group went with it"
    );
    api.ok(
        "DELETE",
        &format!("/api/rest/cgs/{cg2}?approved=true"),
        None,
        200,
    );
    let kept = api.get(&format!("/api/rest/volumes/{v3}"));
    assert_eq!(kept["cg_id"], Value::Null, "{kept}");

    // Locks: PUT /api/rest/volumes/{id} {"lock_expires_at"} extends, never shortens.
    let until = now_ms() + 3_600_000;
    let locked = api.ok(
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "v2.locked", "parent_id": v2, "lock_expires_at": until})),
        201,
    );
    assert_eq!(
        (&locked["lock_state"], &locked["lock_expires_at"]),
        (&json!("LOCKED"), &json!(until)),
        "{locked}"
    );
    let locked = id_of(&locked);
    let target = format!("/api/rest/volumes/{locked}?approved=true");
    api.refused(
        "PUT",
        &target,
        Some(json!({"lock_expires_at": until - 60_000})),
        409,
        "SNAPSHOT_LOCKED",
    );
    let extended = api.ok(
        "PUT",
        &target,
        Some(json!({"lock_expires_at": until + 60_000})),
        200,
    );
    assert_eq!(extended["lock_expires_at"], until + 60_000, "{extended}");
    api.refused("DELETE", &target, None, 409, "SNAPSHOT_LOCKED");
    api.refused(
        "PUT",
        &target,
        Some(json!({"name": "v2.unlocked"})),
        409,
        "SNAPSHOT_LOCKED",
    );
    api.refused(
        "POST",
        &format!("/api/rest/volumes/{locked}/refresh?approved=true"),
        None,
        409,
        "SNAPSHOT_LOCKED",
    );
    api.refused(
        "PUT",
        &format!("/api/rest/volumes/{v2}?approved=true"),
        Some(json!({"lock_expires_at": until})),
        400,
        "BAD_REQUEST",
    );
    api.refused(
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "v2.past", "parent_id": v2, "lock_expires_at": now_ms() - 1000})),
        400,
        "BAD_REQUEST",
    );
    assert!(api.exists("volumes", locked));
    api.node
        .stop_within(std::time::Duration::from_secs(30))
        .expect("a clean stop");
}

/// The password of the users [`every_snapshot_policy_route_answers`] creates.
const USER_PASSWORD: &str = "policy-test-password";

/// A schedule as the API takes it.
fn schedule(name: &str, interval: u64, retention: u32) -> Value {
    json!({"name": name, "interval": interval, "retention": retention})
}

#[test]
fn every_snapshot_policy_route_answers() {
    let mut api = Api::start();
    let pool = api.pool("P");
    let v1 = api.volume("v1", pool, 8 * MIB);
    let v2 = api.volume("v2", pool, 8 * MIB);
    let s1 = id_of(&api.snapshot(v1, "v1.s1"));
    let policies = "/api/rest/snapshot_policies";

    // POST /api/rest/snapshot_policies: 201 with the policy as given (assets sorted),
    // disabled here so nothing is taken until it is enabled below.
    let before = now_ms();
    let daily = json!({"name": "daily", "interval": 86_400, "retention": 7,
                       "lock_duration": 3_600});
    let created = api.ok(
        "POST",
        policies,
        Some(json!({"name": "pol", "enabled": false,
                    "schedules": [schedule("hourly", 3_600, 24), daily],
                    "assets": [v2, v1]})),
        201,
    );
    let id = id_of(&created);
    assert_eq!(
        (
            &created["name"],
            &created["enabled"],
            &created["assets"],
            &created["assets_count"],
            &created["snapshots_count"]
        ),
        (
            &json!("pol"),
            &json!(false),
            &json!([v1, v2]),
            &json!(2),
            &json!(0)
        ),
        "{created}"
    );
    assert_eq!(
        created["schedules"],
        json!([{"name": "hourly", "interval": 3_600, "retention": 24, "lock_duration": null},
               daily]),
        "{created}"
    );
    for field in ["created_at", "updated_at"] {
        let at = created[field].as_u64().expect("a time");
        assert!(at >= before && at <= now_ms(), "{field} {at}: {created}");
    }
    let minimal = api.ok(
        "POST",
        policies,
        Some(json!({"name": "minimal", "schedules": [schedule("s", 60, 1)]})),
        201,
    );
    assert_eq!(
        (&minimal["enabled"], &minimal["assets"]),
        (&json!(true), &json!([])),
        "enabled, without assets, unless told: {minimal}"
    );
    let minimal = id_of(&minimal);

    // Refusals: a bad schedule, a snapshot or unknown volume as asset, a taken name, a
    // field the API does not know.
    for (body, status, code) in [
        (
            json!({"name": "bad", "schedules": [schedule("s", 0, 1)]}),
            400,
            "BAD_REQUEST",
        ),
        (
            json!({"name": "bad", "schedules": [schedule("s", 60, 0)]}),
            400,
            "BAD_REQUEST",
        ),
        (
            json!({"name": "bad", "schedules": [schedule("s", 60, 1), schedule("s", 120, 2)]}),
            400,
            "BAD_REQUEST",
        ),
        (
            json!({"name": "bad", "schedules": [schedule("s", 60, 1)], "assets": [s1]}),
            400,
            "BAD_REQUEST",
        ),
        (
            json!({"name": "bad", "schedules": [schedule("s", 60, 1)], "assets": [MISSING]}),
            404,
            "VOLUME_NOT_FOUND",
        ),
        (
            json!({"name": "pol", "schedules": [schedule("s", 60, 1)]}),
            409,
            "NAME_CONFLICT",
        ),
        (
            json!({"name": "bad", "schedules": [schedule("s", 60, 1)], "pool_id": pool}),
            400,
            "BAD_REQUEST",
        ),
        (json!({"name": "bad"}), 400, "BAD_REQUEST"),
    ] {
        api.refused("POST", policies, Some(body), status, code);
    }

    // Only an ADMIN changes policies; everyone signed in reads them.
    for (user, role) in [("reader", "READ_ONLY"), ("owner", "POOL_ADMIN")] {
        api.ok(
            "POST",
            "/api/rest/users",
            Some(json!({"name": user, "password": USER_PASSWORD, "role": role})),
            201,
        );
        let as_user = |method: &str, target: &str, body: Option<Value>| {
            api.node
                .api_json(method, target, Some((user, USER_PASSWORD)), body.as_ref())
        };
        let (status, answer) = as_user(
            "POST",
            policies,
            Some(json!({"name": "mine", "schedules": [schedule("s", 60, 1)]})),
        );
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("PERMISSION_DENIED")),
            "{role} creating a policy: {answer}"
        );
        let (status, answer) = as_user(
            "PUT",
            &format!("{policies}/{id}"),
            Some(json!({"enabled": true})),
        );
        assert_eq!(status, 403, "{role} enabling a policy: {answer}");
        let (status, answer) = as_user("GET", &format!("{policies}/{id}"), None);
        assert_eq!(status, 200, "{role} reading a policy: {answer}");
    }
    let (status, answer) = api.node.api_json("GET", policies, None, None);
    assert_eq!(status, 401, "an anonymous caller: {answer}");

    // GET /api/rest/snapshot_policies (filtered like every list) and GET .../{id}.
    assert_eq!(ids(&api.get(policies)), vec![id, minimal]);
    let found = api.get(&format!("{policies}?name=eq:pol"));
    assert_eq!(ids(&found), vec![id]);
    assert_eq!(found[0], created, "the list shows the object as created");
    assert_eq!(api.get(&format!("{policies}/{id}")), created);

    // An unknown policy, on every route that names one.
    let asset_path = format!("/assets/{v1}");
    for (method, suffix, body) in [
        ("GET", "", None),
        ("PUT", "", Some(json!({"enabled": true}))),
        ("DELETE", "?approved=true", None),
        ("POST", "/assets", Some(json!({"entity_id": v1}))),
        ("DELETE", asset_path.as_str(), None),
    ] {
        api.refused(
            method,
            &format!("{policies}/{MISSING}{suffix}"),
            body,
            404,
            "SNAPSHOT_POLICY_NOT_FOUND",
        );
    }

    // DELETE .../{id}/assets/{volume} and POST .../{id}/assets.
    let target = format!("{policies}/{id}");
    let removed = api.ok("DELETE", &format!("{target}/assets/{v2}"), None, 200);
    assert_eq!(
        (&removed["assets"], &removed["assets_count"]),
        (&json!([v1]), &json!(1)),
        "{removed}"
    );
    api.refused(
        "DELETE",
        &format!("{target}/assets/{v2}"),
        None,
        400,
        "BAD_REQUEST",
    );
    let added = api.ok(
        "POST",
        &format!("{target}/assets"),
        Some(json!({"entity_id": v2})),
        201,
    );
    assert_eq!(added["assets"], json!([v1, v2]), "{added}");
    for (body, status, code) in [
        (json!({"entity_id": v2}), 409, "ASSET_ALREADY_ASSIGNED"),
        (json!({"entity_id": s1}), 400, "BAD_REQUEST"),
        (json!({"entity_id": MISSING}), 404, "VOLUME_NOT_FOUND"),
        (json!({"volume": v2}), 400, "BAD_REQUEST"),
    ] {
        api.refused(
            "POST",
            &format!("{target}/assets"),
            Some(body),
            status,
            code,
        );
    }
    assert_eq!(api.get(&target)["assets"], json!([v1, v2]));

    // PUT .../{id}: schedules are replaced and checked like new ones; enabling it makes the
    // node take one snapshot of each asset (the schedule is hourly).
    for body in [
        json!({"schedules": [schedule("s", 0, 1)]}),
        json!({"schedules": [schedule("s", 60, 1), schedule("s", 60, 1)]}),
        json!({"assets": [v1]}),
    ] {
        api.refused("PUT", &target, Some(body), 400, "BAD_REQUEST");
    }
    api.refused(
        "PUT",
        &target,
        Some(json!({"name": "minimal"})),
        409,
        "NAME_CONFLICT",
    );
    let updated = api.ok(
        "PUT",
        &target,
        Some(json!({"name": "pol2", "enabled": true,
                    "schedules": [schedule("hourly", 3_600, 2)]})),
        200,
    );
    assert_eq!(
        (&updated["name"], &updated["enabled"], &updated["schedules"]),
        (
            &json!("pol2"),
            &json!(true),
            &json!([{"name": "hourly", "interval": 3_600, "retention": 2,
                     "lock_duration": null}])
        ),
        "{updated}"
    );
    assert_eq!(updated["created_at"], created["created_at"], "{updated}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let taken = loop {
        let taken = api.get("/api/rest/events?code=eq:SNAPSHOT_POLICY_SNAPSHOT_CREATED");
        if api.get(&target)["snapshots_count"] == 2
            && taken.as_array().is_some_and(|t| t.len() == 2)
        {
            break taken;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the enabled policy took no snapshots of v1 and v2 in 10 s: {}\n{taken}",
            api.get(&target)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut policy_snapshots = Vec::new();
    for (volume, name) in [(v1, "v1"), (v2, "v2")] {
        let own = api.get(&format!(
            "/api/rest/volumes?parent_id=eq:{volume}&name=like:{name}.p{id}.hourly."
        ));
        let own = own.as_array().expect("a list");
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(
            (&own[0]["type"], &own[0]["write_protected"]),
            (&json!("SNAPSHOT"), &json!(true)),
            "{own:?}"
        );
        let snapshot_name = own[0]["name"].as_str().expect("a name");
        assert!(
            taken.to_string().contains(snapshot_name),
            "no event for {snapshot_name}: {taken}"
        );
        policy_snapshots.push(id_of(&own[0]));
    }
    assert!(
        !api.get("/api/rest/events?code=eq:SNAPSHOT_POLICY_UPDATED")
            .as_array()
            .expect("events")
            .is_empty()
    );

    // DELETE .../{id}: only approved; the policy's snapshots stay.
    api.refused("DELETE", &target, None, 403, "APPROVAL_REQUIRED");
    assert!(api.exists("snapshot_policies", id));
    let deleted = api.ok("DELETE", &format!("{target}?approved=true"), None, 200);
    assert_eq!(
        (
            id_of(&deleted),
            &deleted["name"],
            &deleted["snapshots_count"]
        ),
        (id, &json!("pol2"), &json!(2)),
        "{deleted}"
    );
    assert!(!api.exists("snapshot_policies", id));
    api.refused(
        "DELETE",
        &format!("{target}?approved=true"),
        None,
        404,
        "SNAPSHOT_POLICY_NOT_FOUND",
    );
    for snapshot in policy_snapshots {
        assert!(
            api.exists("volumes", snapshot),
            "snapshot {snapshot} went with its policy"
        );
    }
    let events = api.get("/api/rest/events?code=eq:SNAPSHOT_POLICY_DELETED");
    assert!(
        events.to_string().contains("\\\"pol2\\\" deleted"),
        "{events}"
    );
    assert_eq!(ids(&api.get(policies)), vec![minimal]);
    api.node
        .stop_within(std::time::Duration::from_secs(30))
        .expect("a clean stop");
}

// ---- data through NBD ---------------------------------------------------------------

/// Runs a tool that must succeed.
fn run_ok(api: &Api, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}\nnode log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        api.node.log_text()
    );
}

/// Writes `length` bytes of `pattern` at `offset` of export `name` with qemu-io.
fn write_pattern(api: &Api, name: &str, pattern: u8, offset: u64, length: u64) {
    let command = format!("write -P {pattern:#x} {offset} {length}");
    run_ok(
        api,
        "qemu-io",
        &["-f", "raw", "-c", &command, &api.node.uri(name)],
    );
}

/// The whole export `name`, read with nbdcopy.
fn read_export(api: &Api, name: &str) -> Vec<u8> {
    let file = api.node.data().join(format!("{name}.read"));
    let _ = std::fs::remove_file(&file);
    run_ok(
        api,
        "nbdcopy",
        &[&api.node.uri(name), file.to_str().expect("a UTF-8 path")],
    );
    std::fs::read(&file).expect("read the copy")
}

/// What a host should read: `image` with the writes of [`write_pattern`] applied.
fn with_writes(mut image: Vec<u8>, writes: &[(u8, u64, u64)]) -> Vec<u8> {
    for &(pattern, offset, length) in writes {
        image[offset as usize..(offset + length) as usize].fill(pattern);
    }
    image
}

fn assert_reads(api: &Api, name: &str, want: &[u8], what: &str) {
    let got = read_export(api, name);
    assert_eq!(got.len(), want.len(), "{what}: export {name} size");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: export {name} differs at byte {at}: {:#x}, want {:#x}",
            got[at], want[at]
        );
    }
}

/// The `[offset, length]` pairs of a changed_blocks answer.
fn ranges(changed: &Value) -> Vec<(u64, u64)> {
    changed["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .map(|range| {
            (
                range["offset"].as_u64().expect("an offset"),
                range["length"].as_u64().expect("a length"),
            )
        })
        .collect()
}

#[test]
fn snapshots_hold_their_data() {
    if !common::tools::present(&[
        &common::tools::QEMU_IO,
        &common::tools::NBDCOPY,
        &common::tools::NBDINFO,
    ]) {
        return;
    }
    let mut api = Api::start();
    let pool = api.pool("P");
    let size = 16 * MIB;
    let data = api.volume("data", pool, size);
    write_pattern(&api, "data", 0x11, 0, size);
    let before = id_of(&api.snapshot(data, "data.before"));
    let original = vec![0x11u8; size as usize];
    assert_eq!(
        ranges(&api.changed(data, before)),
        vec![],
        "nothing written yet"
    );

    // Writes after the snapshot, one of them 100 bytes inside a block.
    let writes = [
        (0xab, MIB, 64 * KIB),
        (0xcd, 5 * MIB + 4 * KIB, 8 * KIB),
        (0x77, 9 * MIB + 100, 100),
        (0xef, 12 * MIB, MIB),
    ];
    for (pattern, offset, length) in writes {
        write_pattern(&api, "data", pattern, offset, length);
    }
    let overwritten = with_writes(original.clone(), &writes);
    assert_reads(&api, "data", &overwritten, "the volume after the writes");
    assert_reads(
        &api,
        "data.before",
        &original,
        "the snapshot after the writes",
    );

    // Changed blocks: exactly the blocks written, either way round.
    let expected = vec![
        (MIB, 64 * KIB),
        (5 * MIB + 4 * KIB, 8 * KIB),
        (9 * MIB, BLOCK),
        (12 * MIB, MIB),
    ];
    let changed = api.changed(data, before);
    assert_eq!(ranges(&changed), expected, "{changed}");
    assert_eq!(
        changed["changed_bytes"],
        expected.iter().map(|(_, length)| length).sum::<u64>(),
        "{changed}"
    );
    assert_eq!(ranges(&api.changed(before, data)), expected);

    // A write-protected snapshot is a read-only export: qemu-io cannot open it to write.
    let info = Command::new("nbdinfo")
        .args(["--json", &api.node.uri("data.before")])
        .output()
        .expect("run nbdinfo");
    let info: Value = serde_json::from_slice(&info.stdout).expect("nbdinfo's JSON");
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info:#}");
    let refused = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x55 0 4k"])
        .arg(api.node.uri("data.before"))
        .output()
        .expect("run qemu-io");
    assert!(
        !refused.status.success(),
        "a write to a write-protected snapshot went through: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    assert_reads(&api, "data.before", &original, "the protected snapshot");

    // Restore: the volume reads the snapshot's data again.
    api.ok(
        "POST",
        &format!("/api/rest/volumes/{data}/restore?approved=true"),
        Some(json!(before)),
        200,
    );
    assert_reads(&api, "data", &original, "the volume after the restore");
    assert_eq!(ranges(&api.changed(data, before)), vec![]);

    // Refresh: the snapshot moves to the volume's current data.
    let later = [(0x5a, 2 * MIB, 128 * KIB)];
    write_pattern(&api, "data", 0x5a, 2 * MIB, 128 * KIB);
    assert_eq!(
        ranges(&api.changed(data, before)),
        vec![(2 * MIB, 128 * KIB)]
    );
    api.ok(
        "POST",
        &format!("/api/rest/volumes/{before}/refresh?approved=true"),
        Some(json!({"source_id": data})),
        200,
    );
    let current = with_writes(original.clone(), &later);
    assert_reads(
        &api,
        "data.before",
        &current,
        "the snapshot after the refresh",
    );
    assert_eq!(ranges(&api.changed(data, before)), vec![]);

    // A writable snapshot takes writes of its own; the volume does not see them.
    let writable = id_of(&api.ok(
        "POST",
        "/api/rest/volumes",
        Some(json!({"name": "data.rw", "parent_id": data, "write_protected": false})),
        201,
    ));
    write_pattern(&api, "data.rw", 0x66, 3 * MIB, 4 * KIB);
    let diverged = with_writes(current.clone(), &[(0x66, 3 * MIB, 4 * KIB)]);
    assert_reads(&api, "data.rw", &diverged, "the writable snapshot");
    assert_reads(
        &api,
        "data",
        &current,
        "the volume beside its writable snapshot",
    );
    assert_eq!(ranges(&api.changed(writable, data)), vec![(3 * MIB, BLOCK)]);

    // A group restore rewinds every member to the group snapshot's instant.
    let log = api.volume("log", pool, 8 * MIB);
    write_pattern(&api, "log", 0x22, 0, 8 * MIB);
    let cg = id_of(&api.ok(
        "POST",
        "/api/rest/cgs",
        Some(json!({"name": "db", "pool_id": pool})),
        201,
    ));
    for volume in [data, log] {
        api.ok(
            "POST",
            &format!("/api/rest/cgs/{cg}/members"),
            Some(json!({"dataset_id": volume})),
            201,
        );
    }
    let sg = id_of(&api.ok(
        "POST",
        "/api/rest/cgs",
        Some(json!({"parent_id": cg, "name": "db.sg", "snap_suffix": ".sg"})),
        201,
    ));
    write_pattern(&api, "data", 0x99, 0, 64 * KIB);
    write_pattern(&api, "log", 0x98, 4 * MIB, 4 * KIB);
    let log_original = vec![0x22u8; (8 * MIB) as usize];
    assert_reads(&api, "log.sg", &log_original, "the log's group snapshot");
    api.ok(
        "POST",
        &format!("/api/rest/cgs/{cg}/restore?approved=true"),
        Some(json!({"source_id": sg})),
        200,
    );
    assert_reads(&api, "data", &current, "data after the group restore");
    assert_reads(&api, "log", &log_original, "log after the group restore");
    api.node
        .stop_within(std::time::Duration::from_secs(30))
        .expect("a clean stop");
}
