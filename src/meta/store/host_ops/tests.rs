//! The store's host rules, and hosts surviving a crash and a checkpoint.

use super::*;
use crate::meta::Provisioning;
use crate::testing::open_small_store;

fn iscsi(address: &str) -> HostPort {
    HostPort {
        kind: PortKind::Iscsi,
        address: address.into(),
    }
}

fn new_host(name: &str, ports: Vec<HostPort>, chap: ChapSettings) -> HostRecord {
    HostRecord {
        id: 0,
        name: name.into(),
        ports,
        chap,
        cluster_id: None,
        host_type: "linux".into(),
        optimized: true,
        created_at: 0,
        updated_at: 0,
    }
}

fn refused_code(result: Result<impl std::fmt::Debug, HostError>) -> &'static str {
    match result {
        Err(HostError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Hosts, ports, CHAP, a cluster and mappings survive a crash (journal replay) and a
/// checkpoint; the generation moves with every change; the rules hold.
#[test]
fn hosts_and_mappings_survive_replay_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let chap = ChapSettings {
        method: ChapMethod::MutualChap,
        inbound_user: "in".into(),
        inbound_secret: "inbound-secret".into(),
        outbound_user: "out".into(),
        outbound_secret: "outbound-secret".into(),
    };
    let expected = {
        let (meta, _) = open_small_store(dir.path());
        let pool = meta.create_pool("p", 32 << 20, 1 << 30).unwrap();
        let volume = meta
            .create_volume("v", pool.id, 1 << 20, Provisioning::Thin)
            .unwrap();
        let other = meta
            .create_volume("w", pool.id, 1 << 20, Provisioning::Thin)
            .unwrap();
        let before = meta.catalog_generation();
        let host = meta
            .save_host(new_host(
                "h1",
                vec![iscsi("iqn.2000-01.com.example:one")],
                chap.clone(),
            ))
            .unwrap();
        assert!(meta.catalog_generation() > before);
        let taken = meta.save_host(new_host(
            "h2",
            vec![iscsi("IQN.2000-01.com.example:ONE")],
            ChapSettings::default(),
        ));
        assert_eq!(refused_code(taken), "PORT_ALREADY_BELONGS_TO_HOST");
        let second = meta
            .save_host(new_host("h2", Vec::new(), ChapSettings::default()))
            .unwrap();
        meta.add_host_port(second.id, iscsi("iqn.2000-01.com.example:two"))
            .unwrap();
        let cluster = meta
            .save_cluster(ClusterRecord {
                id: 0,
                name: "c".into(),
                created_at: 0,
                updated_at: 0,
            })
            .unwrap();
        let own = meta
            .map_lun(LunOwner::Host(host.id), volume.id, None)
            .unwrap();
        assert_eq!(own.lun, FIRST_HOST_LUN);
        let shared = meta
            .map_lun(LunOwner::Cluster(cluster.id), other.id, None)
            .unwrap();
        assert_eq!(shared.lun, FIRST_CLUSTER_LUN);
        assert_eq!(
            refused_code(meta.map_lun(LunOwner::Host(host.id), volume.id, None)),
            "VOLUME_ALREADY_MAPPED"
        );
        assert_eq!(
            refused_code(meta.map_lun(LunOwner::Host(second.id), other.id, Some(300))),
            "LUN_OUT_OF_RANGE"
        );
        // h2 maps LUN 11 itself: it may not join a cluster that uses 11.
        meta.map_lun(LunOwner::Host(second.id), volume.id, Some(11))
            .unwrap();
        let mut joining = meta.host_record(second.id).unwrap();
        joining.cluster_id = Some(cluster.id);
        assert_eq!(
            refused_code(meta.save_host(joining.clone())),
            "LUN_CONFLICT"
        );
        meta.unmap_lun(LunOwner::Host(second.id), 11, false)
            .unwrap();
        meta.save_host(joining).unwrap();
        assert_eq!(
            refused_code(meta.map_lun(LunOwner::Host(second.id), other.id, None)),
            "VOLUME_ALREADY_MAPPED"
        );
        assert!(meta.check_delete(volume.id).is_err(), "mapped volumes stay");
        let catalog = meta.state().catalog.clone();
        assert_eq!(catalog.luns_of_host(second.id), vec![(11, other.id)]);
        catalog
    };
    // A crash: nothing checkpointed since the changes; the journal brings them back.
    let (meta, _) = open_small_store(dir.path());
    {
        let state = meta.state();
        assert_eq!(state.catalog.hosts, expected.hosts);
        assert_eq!(state.catalog.clusters, expected.clusters);
        assert_eq!(state.catalog.luns, expected.luns);
        let host = state
            .catalog
            .host_by_initiator("iqn.2000-01.COM.example:one")
            .unwrap();
        assert_eq!(host.chap, chap);
    }
    meta.checkpoint(|| u64::MAX).unwrap();
    drop(meta);
    let (meta, _) = open_small_store(dir.path());
    let state = meta.state();
    assert_eq!(state.catalog.hosts, expected.hosts);
    assert_eq!(state.catalog.luns, expected.luns);
    assert_eq!(state.catalog.next_lun_id, expected.next_lun_id);
}

#[test]
fn initiator_names_are_checked() {
    for good in [
        "iqn.1994-05.com.redhat:abc123",
        "IQN.2001-04.COM.EXAMPLE",
        "iqn.2016-12.org.troika:host-1.a_b",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "naa.52004567BA64678D52004567BA64678D",
    ] {
        assert!(validate_port(PortKind::Iscsi, good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "iqn.",
        "iqn.1994-13.com.x",
        "iqn.94-05.com.x",
        "iqn.1994-05.",
        "iqn.1994-05.com x",
        "eui.123",
        "naa.0123456789abcdeg",
        "host1",
    ] {
        assert!(validate_port(PortKind::Iscsi, bad).is_err(), "{bad}");
    }
    assert!(validate_port(PortKind::Fc, "50:01:43:80:12:34:56:78").is_ok());
    assert!(validate_port(PortKind::Fc, "5001").is_err());
}

#[test]
fn nbd_identities_are_checked() {
    for good in [
        "client1",
        "CN=backup host,O=lab",
        "é-utf8",
        &"x".repeat(255),
    ] {
        assert!(validate_port(PortKind::Nbd, good).is_ok(), "{good}");
    }
    for bad in ["", "a:b", "tab\there", "nl\n", &"x".repeat(256)] {
        assert!(validate_port(PortKind::Nbd, bad).is_err(), "{bad:?}");
    }
}

#[test]
fn chap_settings_are_checked() {
    let mut chap = ChapSettings {
        method: ChapMethod::Chap,
        inbound_user: "user".into(),
        inbound_secret: "secret123456".into(),
        ..Default::default()
    };
    assert!(validate_chap(&chap).is_ok());
    chap.inbound_secret = "short".into();
    assert!(validate_chap(&chap).is_err());
    chap.inbound_secret = "secret1234567890x".into();
    assert!(validate_chap(&chap).is_err());
    chap.inbound_secret = "secret123456".into();
    chap.method = ChapMethod::MutualChap;
    assert!(validate_chap(&chap).is_err());
    chap.outbound_user = "target".into();
    chap.outbound_secret = "secret123456".into();
    assert!(validate_chap(&chap).is_err(), "same secret both ways");
    chap.outbound_secret = "other-secret1".into();
    assert!(validate_chap(&chap).is_ok());
    assert!(validate_chap(&ChapSettings::default()).is_ok());
}
