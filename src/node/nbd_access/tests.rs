//! The NBD filter over a real node on a small store: an identity reaches what is mapped to
//! its host (own and cluster mappings) and nothing else, answered as for a missing name;
//! snapshots and write-protected volumes stay read-only; anonymous clients and unknown
//! identities reach nothing; the local administrator and `--nbd-open` reach everything.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{CatalogAccess, nbd_view};
use crate::cache::Cache;
use crate::controller::access::ExportView;
use crate::controller::{ControllerPort, Controllers, routing::Routing};
use crate::hw::HwModel;
use crate::mgmt::Management;
use crate::mgmt::api::{
    ClusterCreate, HostCreate, HostManagement, HostPortInfo, LunCreate, MappingTarget, PoolCreate,
    VolumeCreate,
};
use crate::mgmt::snapshot_api::SnapshotCreate;
use crate::node::api::NodeApi;
use crate::target::{ExportProvider, NbdClient};
use crate::testing::open_small_store;

struct Rig {
    _dir: tempfile::TempDir,
    api: NodeApi,
    cache: Arc<Cache>,
    port: Arc<ControllerPort>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.cache.shutdown();
    }
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (meta, recovered) = open_small_store(dir.path());
    let meta = Arc::new(meta);
    let routing = Arc::new(Routing::new(1));
    let cache = Cache::start(meta.clone(), 1, 4 << 20, recovered, routing.clone());
    let controllers = Controllers::new(cache.clone(), routing, 1);
    controllers.set_export_access(CatalogAccess::new(meta.clone()));
    let port = ControllerPort::new(controllers.clone(), controllers.ids()[0]);
    let api = NodeApi {
        hw: HwModel::embedded_default(),
        scrub: crate::node::scrub::test_scrubber(&meta, dir.path()),
        meta,
        cache: cache.clone(),
        controllers,
        faults: Default::default(),
        started_at: 0,
    };
    Rig {
        _dir: dir,
        api,
        cache,
        port,
    }
}

impl Rig {
    fn volume(&self, pool: u32, name: &str, write_protected: bool) -> u32 {
        self.api
            .create_volume(VolumeCreate {
                name: name.into(),
                pool_id: pool,
                size: 1 << 20,
                provtype: None,
                ssd_enabled: None,
                write_protected: Some(write_protected),
            })
            .unwrap()
            .id
    }

    fn host(&self, name: &str, identity: &str) -> u32 {
        self.api
            .create_host(HostCreate {
                name: name.into(),
                ports: Some(vec![HostPortInfo {
                    port_type: "nbd".into(),
                    address: identity.into(),
                }]),
                host_type: None,
                optimized: None,
                security_method: None,
                security_chap_inbound_username: None,
                security_chap_inbound_secret: None,
                security_chap_outbound_username: None,
                security_chap_outbound_secret: None,
            })
            .unwrap()
            .id
    }

    fn map(&self, target: MappingTarget, volume_id: u32) {
        self.api
            .map_lun(
                target,
                LunCreate {
                    volume_id,
                    lun: None,
                },
            )
            .unwrap();
    }

    fn listed(&self, client: &NbdClient) -> Vec<(String, bool)> {
        self.port
            .list_exports(client)
            .into_iter()
            .map(|export| (export.name, export.read_only))
            .collect()
    }
}

#[test]
fn identified_clients_reach_only_their_hosts_mappings() {
    let rig = rig();
    let pool = rig
        .api
        .create_pool(PoolCreate {
            name: "p".into(),
            physical_capacity: 32 << 20,
            virtual_capacity: Some(1 << 30),
        })
        .unwrap()
        .id;
    let mapped = rig.volume(pool, "mapped", false);
    let _unmapped = rig.volume(pool, "unmapped", false);
    let protected = rig.volume(pool, "protected", true);
    let shared = rig.volume(pool, "shared", false);
    let snapshot = rig
        .api
        .create_snapshots(vec![SnapshotCreate {
            name: Some("mapped.snap".into()),
            parent_id: mapped,
            write_protected: None,
            lock_expires_at: None,
            ssd_enabled: None,
        }])
        .unwrap()[0]
        .id;
    let h1 = rig.host("h1", "client-one");
    let h2 = rig.host("h2", "client-two");
    let cluster = rig
        .api
        .create_cluster(ClusterCreate {
            name: "c".into(),
            host_type: None,
        })
        .unwrap()
        .id;
    rig.api.set_host_cluster(h1, Some(cluster)).unwrap();
    rig.map(MappingTarget::Host(h1), mapped);
    rig.map(MappingTarget::Host(h1), snapshot);
    rig.map(MappingTarget::Host(h1), protected);
    rig.map(MappingTarget::Cluster(cluster), shared);

    let one = NbdClient::Identified("client-one".into());
    assert_eq!(
        rig.listed(&one),
        [
            ("mapped".to_owned(), false),
            ("protected".to_owned(), true),
            ("shared".to_owned(), false),
            ("mapped.snap".to_owned(), true),
        ]
    );
    for name in ["mapped", "shared"] {
        let target = rig.port.open_export(&one, name).expect(name);
        assert!(!target.read_only(), "{name}");
    }
    for name in ["protected", "mapped.snap"] {
        let target = rig.port.open_export(&one, name).expect(name);
        assert!(target.read_only(), "{name} must stay read-only");
    }
    // Unmapped, and missing: the same answer.
    assert!(rig.port.open_export(&one, "unmapped").is_none());
    assert!(rig.port.open_export(&one, "missing").is_none());

    // h2 has nothing mapped; identities are exact; strangers and anonymous see nothing.
    for client in [
        NbdClient::Identified("client-two".into()),
        NbdClient::Identified("CLIENT-ONE".into()),
        NbdClient::Identified("nobody".into()),
        NbdClient::Anonymous,
    ] {
        assert!(rig.listed(&client).is_empty(), "{client:?}");
        assert!(rig.port.open_export(&client, "mapped").is_none());
    }
    // Mapping to h2 shows up at the next lookup.
    rig.map(MappingTarget::Host(h2), _unmapped);
    let two = NbdClient::Identified("client-two".into());
    assert_eq!(rig.listed(&two), [("unmapped".to_owned(), false)]);

    for client in [NbdClient::LocalAdmin, NbdClient::Open] {
        assert_eq!(rig.listed(&client).len(), 5, "{client:?}");
        assert!(rig.port.open_export(&client, "unmapped").is_some());
    }
    let protected_target = rig
        .port
        .open_export(&NbdClient::LocalAdmin, "protected")
        .unwrap();
    assert!(protected_target.read_only());
}

#[test]
fn the_view_is_computed_from_an_identity_string_alone() {
    let rig = rig();
    let pool = rig
        .api
        .create_pool(PoolCreate {
            name: "p".into(),
            physical_capacity: 32 << 20,
            virtual_capacity: Some(1 << 30),
        })
        .unwrap()
        .id;
    let volume = rig.volume(pool, "v", false);
    let host = rig.host("h", "CN=backup,O=lab");
    rig.map(MappingTarget::Host(host), volume);
    let state = rig.api.meta.state();
    let catalog = &state.catalog;
    let view = |identity: &str| nbd_view(catalog, &NbdClient::Identified(identity.into()));
    assert_eq!(
        view("CN=backup,O=lab"),
        ExportView::Datasets(BTreeSet::from([volume]))
    );
    assert_eq!(view("CN=other"), ExportView::Datasets(BTreeSet::new()));
    assert_eq!(
        nbd_view(catalog, &NbdClient::LocalAdmin),
        ExportView::Everything
    );
    // An NBD identity is never taken for an iSCSI initiator name.
    assert!(catalog.host_by_initiator("CN=backup,O=lab").is_none());
    assert_eq!(
        catalog
            .host_by_nbd_identity("CN=backup,O=lab")
            .map(|h| h.id),
        Some(host)
    );
}
