//! Every host, cluster and mapping route through the REST layer in process, over a real
//! node on a small store: what each answers, its refusals, the events, the volume's
//! `mapped` flag, and that the catalog the iSCSI target reads agrees.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::super::api::NodeApi;
use crate::cache::Cache;
use crate::controller::{Controllers, routing::Routing};
use crate::hw::HwModel;
use crate::mgmt::events::EventLog;
use crate::mgmt::http::Request;
use crate::mgmt::rest::{Mgmt, Origin, handle};
use crate::mgmt::users::{UserCreate, UserStore};
use crate::testing::open_small_store;

const IQN_A: &str = "iqn.2000-01.com.example:host-a";
const IQN_B: &str = "iqn.2000-01.com.example:host-b";

struct Rig {
    _dir: tempfile::TempDir,
    api: Arc<NodeApi>,
    cache: Arc<Cache>,
    mgmt: Mgmt,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (meta, recovered) = open_small_store(dir.path());
        let meta = Arc::new(meta);
        let routing = Arc::new(Routing::new(1));
        let cache = Cache::start(meta.clone(), 1, 4 << 20, recovered, routing.clone());
        let controllers = Controllers::new(cache.clone(), routing, 1);
        let api = Arc::new(NodeApi {
            hw: HwModel::embedded_default(),
            scrub: crate::node::scrub::test_scrubber(&meta, dir.path()),
            meta,
            cache: cache.clone(),
            controllers,
            faults: Default::default(),
            started_at: 0,
        });
        let (users, _) = UserStore::open(dir.path()).unwrap();
        let events = EventLog::open(dir.path()).unwrap();
        let mgmt = Mgmt {
            api: api.clone(),
            users: Arc::new(users),
            events,
            limiter: Arc::new(crate::mgmt::login_limit::LoginLimiter::new(
                crate::mgmt::login_limit::DEFAULT_LOCKOUT,
            )),
            tls_fingerprint: None,
        };
        Rig {
            _dir: dir,
            api,
            cache,
            mgmt,
        }
    }

    fn send(&self, method: &str, target: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = Request::new(method, target);
        if let Some(body) = body {
            request.body = body.to_string().into_bytes();
            (request.fields).push(("content-type".into(), "application/json".into()));
        }
        let response = handle(&self.mgmt, &request, Origin::Local);
        let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, body)
    }

    fn ok(&self, method: &str, target: &str, body: Option<Value>, status: u16) -> Value {
        let (got, answer) = self.send(method, target, body);
        assert_eq!(got, status, "{method} {target}: {answer}");
        answer["result"].clone()
    }

    fn refused(&self, method: &str, target: &str, body: Option<Value>, status: u16, code: &str) {
        let (got, answer) = self.send(method, target, body);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {target}: {answer}"
        );
    }

    fn last_event(&self) -> (String, String) {
        let events = self.ok("GET", "/api/rest/events?sort=-id&page_size=1", None, 200);
        (
            events[0]["code"].as_str().unwrap().to_owned(),
            events[0]["description"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.cache.shutdown();
    }
}

#[test]
fn every_host_route_answers_and_refuses() {
    let rig = Rig::new();
    let pool = rig.ok(
        "POST",
        "/api/rest/pools",
        Some(json!({"name": "p", "physical_capacity": 32 << 20, "virtual_capacity": 1 << 30})),
        201,
    )["id"]
        .clone();
    let volume = |name: &str| {
        rig.ok(
            "POST",
            "/api/rest/volumes",
            Some(json!({"name": name, "pool_id": pool, "size": 1 << 20})),
            201,
        )["id"]
            .as_u64()
            .unwrap()
    };
    let (v1, v2) = (volume("v1"), volume("v2"));

    // Hosts: create with a port and CHAP; secrets never come back.
    let host = rig.ok(
        "POST",
        "/api/rest/hosts",
        Some(
            json!({"name": "h1", "ports": [{"type": "iscsi", "address": IQN_A}],
            "security_method": "CHAP", "security_chap_inbound_username": "u1",
            "security_chap_inbound_secret": "secret-123456"}),
        ),
        201,
    );
    let h1 = host["id"].as_u64().unwrap();
    assert_eq!(host["ports"], json!([{"type": "ISCSI", "address": IQN_A}]));
    assert_eq!(host["security_method"], "CHAP");
    assert_eq!(host["security_chap_has_inbound_secret"], true);
    assert!(!host.to_string().contains("secret-123456"));
    let (code, description) = rig.last_event();
    assert_eq!(code, "HOST_CREATED");
    assert!(!description.contains("secret-123456"));
    rig.refused(
        "POST",
        "/api/rest/hosts",
        Some(json!({"name": "h1"})),
        409,
        "NAME_CONFLICT",
    );
    rig.refused(
        "POST",
        "/api/rest/hosts",
        Some(json!({"name": "bad", "security_method": "CHAP",
            "security_chap_inbound_username": "u", "security_chap_inbound_secret": "short"})),
        400,
        "INVALID_CHAP_SETTINGS",
    );
    rig.refused(
        "POST",
        "/api/rest/hosts",
        Some(json!({"name": "bad", "ports": [{"type": "ISCSI", "address": "not-an-iqn"}]})),
        400,
        "INVALID_PORT_ADDRESS",
    );
    rig.refused(
        "POST",
        "/api/rest/hosts",
        Some(json!({"name": "bad", "ports": [{"type": "ISCSI", "address": IQN_A.to_uppercase()}]})),
        409,
        "PORT_ALREADY_BELONGS_TO_HOST",
    );
    let h2 = rig.ok("POST", "/api/rest/hosts", Some(json!({"name": "h2"})), 201)["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        rig.ok("GET", "/api/rest/hosts", None, 200)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        rig.ok("GET", &format!("/api/rest/hosts/{h1}"), None, 200)["name"],
        "h1"
    );
    rig.refused("GET", "/api/rest/hosts/999", None, 404, "HOST_NOT_FOUND");

    // Ports.
    let with_port = rig.ok(
        "POST",
        &format!("/api/rest/hosts/{h2}/ports"),
        Some(json!({"type": "ISCSI", "address": IQN_B})),
        201,
    );
    assert_eq!(with_port["ports_count"], 1);
    rig.refused(
        "POST",
        &format!("/api/rest/hosts/{h2}/ports"),
        Some(json!({"type": "ISCSI", "address": IQN_A})),
        409,
        "PORT_ALREADY_BELONGS_TO_HOST",
    );
    rig.refused(
        "DELETE",
        &format!("/api/rest/hosts/{h2}/ports/ISCSI/iqn.2000-01.com.example:none"),
        None,
        404,
        "PORT_NOT_FOUND",
    );
    rig.ok(
        "DELETE",
        &format!("/api/rest/hosts/{h2}/ports/iscsi/{IQN_B}"),
        None,
        200,
    );
    assert_eq!(rig.last_event().0, "HOST_PORT_REMOVED");

    // Update: mutual CHAP needs distinct secrets.
    rig.refused(
        "PUT",
        &format!("/api/rest/hosts/{h1}"),
        Some(
            json!({"security_method": "MUTUAL_CHAP", "security_chap_outbound_username": "t",
            "security_chap_outbound_secret": "secret-123456"}),
        ),
        400,
        "INVALID_CHAP_SETTINGS",
    );
    let mutual = rig.ok(
        "PUT",
        &format!("/api/rest/hosts/{h1}"),
        Some(
            json!({"security_method": "MUTUAL_CHAP", "security_chap_outbound_username": "t",
            "security_chap_outbound_secret": "target-secret1"}),
        ),
        200,
    );
    assert_eq!(mutual["security_chap_has_outbound_secret"], true);

    // Mappings.
    let lun = rig.ok(
        "POST",
        &format!("/api/rest/hosts/{h1}/luns"),
        Some(json!({"volume_id": v1})),
        201,
    );
    assert_eq!(
        (lun["lun"].as_u64(), lun["host_id"].as_u64()),
        (Some(1), Some(h1))
    );
    assert_eq!(lun["clustered"], false);
    assert_eq!(rig.last_event().0, "LUN_MAPPED");
    rig.refused(
        "POST",
        &format!("/api/rest/hosts/{h1}/luns"),
        Some(json!({"volume_id": v1})),
        409,
        "VOLUME_ALREADY_MAPPED",
    );
    rig.refused(
        "POST",
        &format!("/api/rest/hosts/{h1}/luns"),
        Some(json!({"volume_id": v2, "lun": 1})),
        409,
        "LUN_ALREADY_IN_USE",
    );
    rig.refused(
        "POST",
        &format!("/api/rest/hosts/{h1}/luns"),
        Some(json!({"volume_id": 999})),
        404,
        "VOLUME_NOT_FOUND",
    );
    assert_eq!(
        rig.ok("GET", &format!("/api/rest/volumes/{v1}"), None, 200)["mapped"],
        true
    );
    assert_eq!(
        rig.ok("GET", &format!("/api/rest/volumes/{v2}"), None, 200)["mapped"],
        false
    );
    let (status, answer) = rig.send(
        "DELETE",
        &format!("/api/rest/volumes/{v1}?approved=true"),
        None,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unmap it first")
    );
    assert_eq!(
        rig.ok("GET", &format!("/api/rest/hosts/{h1}/luns/1"), None, 200)["volume_id"],
        v1
    );
    rig.refused(
        "GET",
        &format!("/api/rest/hosts/{h1}/luns/7"),
        None,
        404,
        "LUN_NOT_FOUND",
    );

    // Clusters: LUNs from 11, shared by members, no clash with a member's own.
    let cluster = rig.ok(
        "POST",
        "/api/rest/clusters",
        Some(json!({"name": "c1"})),
        201,
    );
    let c1 = cluster["id"].as_u64().unwrap();
    rig.ok(
        "POST",
        &format!("/api/rest/clusters/{c1}/hosts"),
        Some(json!({"id": h1})),
        201,
    );
    rig.refused(
        "POST",
        &format!("/api/rest/clusters/{c1}/hosts"),
        Some(json!({"id": h1})),
        409,
        "HOST_ALREADY_IN_CLUSTER",
    );
    let shared = rig.ok(
        "POST",
        &format!("/api/rest/clusters/{c1}/luns"),
        Some(json!({"volume_id": v2})),
        201,
    );
    assert_eq!(
        (shared["lun"].as_u64(), shared["host_id"].as_u64()),
        (Some(11), Some(0))
    );
    assert_eq!(shared["clustered"], true);
    rig.refused(
        "POST",
        &format!("/api/rest/clusters/{c1}/luns"),
        Some(json!({"volume_id": v1, "lun": 1})),
        409,
        "VOLUME_ALREADY_MAPPED",
    );
    let seen = rig.ok("GET", &format!("/api/rest/hosts/{h1}/luns"), None, 200);
    assert_eq!(seen.as_array().unwrap().len(), 2);
    {
        let state = rig.api.meta.state();
        let host = state
            .catalog
            .host_by_initiator(&IQN_A.to_uppercase())
            .unwrap();
        assert_eq!(host.id as u64, h1);
        assert_eq!(
            state.catalog.luns_of_host(host.id),
            vec![(1, v1 as u32), (11, v2 as u32)]
        );
    }
    rig.ok(
        "PUT",
        &format!("/api/rest/clusters/{c1}"),
        Some(json!({"name": "c2"})),
        200,
    );
    let listed = rig.ok("GET", "/api/rest/clusters", None, 200);
    assert_eq!(listed[0]["hosts"][0]["id"].as_u64(), Some(h1));
    assert_eq!(
        rig.ok(
            "GET",
            &format!("/api/rest/clusters/{c1}/luns/11"),
            None,
            200
        )["volume_id"],
        v2
    );
    rig.refused(
        "DELETE",
        &format!("/api/rest/clusters/{c1}/hosts/{h2}"),
        None,
        409,
        "HOST_NOT_IN_CLUSTER",
    );
    rig.ok(
        "DELETE",
        &format!("/api/rest/clusters/{c1}/luns/volume_id/{v2}"),
        None,
        200,
    );
    assert_eq!(rig.last_event().0, "LUN_UNMAPPED");
    rig.ok(
        "DELETE",
        &format!("/api/rest/clusters/{c1}/hosts/{h1}"),
        None,
        200,
    );
    rig.refused(
        "DELETE",
        &format!("/api/rest/clusters/{c1}"),
        None,
        403,
        "APPROVAL_REQUIRED",
    );
    rig.ok(
        "DELETE",
        &format!("/api/rest/clusters/{c1}?approved=true"),
        None,
        200,
    );
    rig.refused(
        "GET",
        &format!("/api/rest/clusters/{c1}"),
        None,
        404,
        "CLUSTER_NOT_FOUND",
    );

    // Unmapping by LUN, then the volume may go; deleting a host drops its mappings.
    rig.refused(
        "DELETE",
        &format!("/api/rest/hosts/{h1}/luns/lun/5"),
        None,
        404,
        "LUN_NOT_FOUND",
    );
    rig.ok(
        "DELETE",
        &format!("/api/rest/hosts/{h1}/luns/lun/1"),
        None,
        200,
    );
    rig.ok(
        "DELETE",
        &format!("/api/rest/volumes/{v1}?approved=true"),
        None,
        200,
    );
    rig.ok(
        "POST",
        &format!("/api/rest/hosts/{h2}/luns"),
        Some(json!({"volume_id": v2})),
        201,
    );
    rig.refused(
        "DELETE",
        &format!("/api/rest/hosts/{h2}"),
        None,
        403,
        "APPROVAL_REQUIRED",
    );
    rig.ok(
        "DELETE",
        &format!("/api/rest/hosts/{h2}?approved=true"),
        None,
        200,
    );
    assert_eq!(
        rig.ok("GET", &format!("/api/rest/volumes/{v2}"), None, 200)["mapped"],
        false
    );
    let generation = rig.api.meta.catalog_generation();
    rig.ok(
        "DELETE",
        &format!("/api/rest/hosts/{h1}?approved=true"),
        None,
        200,
    );
    assert!(rig.api.meta.catalog_generation() > generation);
}

#[test]
fn only_admins_change_hosts() {
    let rig = Rig::new();
    rig.mgmt
        .users
        .create(UserCreate {
            name: "viewer".into(),
            password: "correct horse".into(),
            role: "READ_ONLY".into(),
            email: None,
            enabled: None,
        })
        .unwrap();
    let send = |method: &str, target: &str, body: Value| {
        let mut request = Request::new(method, target);
        request.body = body.to_string().into_bytes();
        (request.fields).push(("content-type".into(), "application/json".into()));
        request.authorization = Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("viewer:correct horse")
        ));
        handle(&rig.mgmt, &request, Origin::Network).status
    };
    assert_eq!(send("POST", "/api/rest/hosts", json!({"name": "h"})), 403);
    assert_eq!(
        send("POST", "/api/rest/clusters", json!({"name": "c"})),
        403
    );
    assert_eq!(send("GET", "/api/rest/hosts", Value::Null), 200);
}
