//! The store keeps the bounds of [`crate::meta::bounds`] on every path: locks, byte counts
//! and names unique without regard to case; a refused change changes nothing; a catalog
//! written before names were compared without case still loads.

use super::snapshots::{GroupSpec, SnapshotSpec};
use super::*;
use crate::clock::now_ms;
use crate::meta::bounds::{MAX_BYTE_COUNT, MAX_LOCK_MS, MAX_LOCK_SECS};
use crate::meta::catalog::{CatalogOp, PolicyRecord, Provisioning, ScheduleRecord, VolumeRecord};
use crate::meta::host_records::{ChapSettings, ClusterRecord, HostRecord};
use crate::meta::store::host_ops::HostError;
use crate::testing::open_small_store;

fn out_of_range_code<T: std::fmt::Debug>(result: Result<T, MetaError>) -> &'static str {
    match result {
        Err(MetaError::OutOfRange(refused)) => refused.code,
        other => panic!("expected an out-of-range refusal, got {other:?}"),
    }
}

fn is_name_conflict<T: std::fmt::Debug>(result: Result<T, MetaError>) -> bool {
    matches!(result, Err(MetaError::NameConflict { .. }))
}

fn host_name_conflict<T: std::fmt::Debug>(result: Result<T, HostError>) -> bool {
    matches!(result, Err(HostError::Meta(MetaError::NameConflict { .. })))
}

fn snapshot_of(parent: u32, name: &str, lock: Option<u64>) -> SnapshotSpec {
    SnapshotSpec {
        parent,
        name: name.into(),
        write_protected: true,
        lock_expires_at: lock,
        policy: None,
    }
}

fn volume_names(meta: &MetaStore) -> Vec<String> {
    let state = meta.state();
    let mut names: Vec<String> = (state.catalog.volumes.values())
        .map(|volume| volume.name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn locks_past_100_years_are_refused_on_every_path_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = open_small_store(dir.path());
    let pool = meta.create_pool("p", 32 << 20, 1 << 30).unwrap();
    let volume = meta
        .create_volume("v", pool.id, 1 << 20, Provisioning::Thin)
        .unwrap();
    let now = now_ms();
    let far = now + MAX_LOCK_MS + 60_000;
    for lock in [far, u64::MAX] {
        let spec = snapshot_of(volume.id, "s", Some(lock));
        let code = out_of_range_code(meta.create_snapshots(&[spec], None));
        assert_eq!(code, "LOCK_OUT_OF_RANGE");
    }
    assert_eq!(volume_names(&meta), ["v"], "a refused snapshot was created");

    // A snapshot with a lock within the bound; extending it past the bound is refused.
    let within = now + 3_600_000;
    let (snapshots, _) = meta
        .create_snapshots(&[snapshot_of(volume.id, "s", Some(within))], None)
        .unwrap();
    let snapshot = snapshots[0].id;
    for lock in [far, u64::MAX] {
        let change = meta.check_volume_change(snapshot, None, None, Some(lock));
        assert_eq!(out_of_range_code(change), "LOCK_OUT_OF_RANGE");
        let update = meta.update_volume(snapshot, |v| v.lock_expires_at = Some(lock));
        assert_eq!(out_of_range_code(update), "LOCK_OUT_OF_RANGE");
    }
    let record = meta.state().catalog.volumes[&snapshot].clone();
    assert_eq!(record.lock_expires_at, Some(within));
    meta.check_volume_change(snapshot, None, None, Some(within + 1))
        .unwrap();

    // Consistency groups and group snapshots.
    let code = out_of_range_code(meta.create_cg("g", pool.id, 0, Some(u64::MAX)));
    assert_eq!(code, "LOCK_OUT_OF_RANGE");
    assert!(meta.state().catalog.cgs.is_empty());
    let group = meta.create_cg("g", pool.id, 0, None).unwrap();
    let spec = GroupSpec {
        parent: group.id,
        name: "g-snap".into(),
        lock_expires_at: Some(far),
    };
    let code = out_of_range_code(meta.create_snapshots(&[], Some(spec)));
    assert_eq!(code, "LOCK_OUT_OF_RANGE");
    assert_eq!(meta.state().catalog.cgs.len(), 1);

    // Policies: the same bound as a duration.
    let policy = |lock_secs| PolicyRecord {
        id: 0,
        name: "daily".into(),
        enabled: true,
        schedules: vec![ScheduleRecord {
            name: "d".into(),
            interval_secs: 86_400,
            retention: 3,
            lock_secs: Some(lock_secs),
        }],
        assets: vec![volume.id],
        created_at: 0,
        updated_at: 0,
    };
    for (lock_secs, code) in [
        (0, "BAD_REQUEST"),
        (MAX_LOCK_SECS + 1, "LOCK_OUT_OF_RANGE"),
        (u64::MAX, "LOCK_OUT_OF_RANGE"),
    ] {
        assert_eq!(out_of_range_code(meta.save_policy(policy(lock_secs))), code);
    }
    assert!(meta.state().catalog.policies.is_empty());
    meta.save_policy(policy(MAX_LOCK_SECS)).unwrap();
}

#[test]
fn byte_counts_past_2_pow_53_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = open_small_store(dir.path());
    for (physical, virtual_capacity) in [
        (32 << 20, u64::MAX),
        (32 << 20, MAX_BYTE_COUNT + 4096),
        (u64::MAX - 4095, u64::MAX - 4095),
    ] {
        let code = out_of_range_code(meta.create_pool("p", physical, virtual_capacity));
        assert_eq!(code, "PARAM_OUT_OF_RANGE");
    }
    assert!(meta.state().catalog.pools.is_empty());
    let pool = meta.create_pool("p", 32 << 20, 1 << 30).unwrap();
    let grown = meta.update_pool(pool.id, |pool| pool.virtual_capacity = u64::MAX);
    assert_eq!(out_of_range_code(grown), "PARAM_OUT_OF_RANGE");
    assert_eq!(
        meta.state().catalog.pools[&pool.id].virtual_capacity,
        1 << 30
    );

    for size in [MAX_BYTE_COUNT + 4096, (1 << 50) + 4096, u64::MAX - 4095] {
        let created = meta.create_volume("v", pool.id, size, Provisioning::Thin);
        assert_eq!(out_of_range_code(created), "PARAM_OUT_OF_RANGE", "{size}");
    }
    let volume = meta
        .create_volume("v", pool.id, 1 << 20, Provisioning::Thin)
        .unwrap();
    let resized = meta.check_volume_change(volume.id, None, Some(u64::MAX - 4095), None);
    assert_eq!(out_of_range_code(resized), "PARAM_OUT_OF_RANGE");
}

fn host(name: &str) -> HostRecord {
    HostRecord {
        id: 0,
        name: name.into(),
        ports: Vec::new(),
        chap: ChapSettings::default(),
        cluster_id: None,
        host_type: "linux".into(),
        optimized: true,
        created_at: 0,
        updated_at: 0,
    }
}

fn cluster(id: u32, name: &str) -> ClusterRecord {
    ClusterRecord {
        id,
        name: name.into(),
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn names_differing_only_in_case_are_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = open_small_store(dir.path());
    let pool = meta.create_pool("poolA", 16 << 20, 1 << 30).unwrap();
    assert!(is_name_conflict(meta.create_pool(
        "POOLA",
        16 << 20,
        1 << 30
    )));
    let other = meta.create_pool("poolB", 8 << 20, 1 << 30).unwrap();
    let renamed = meta.update_pool(other.id, |pool| pool.name = "PoolA".into());
    assert!(is_name_conflict(renamed));
    // An object may change the case of its own name.
    meta.update_pool(pool.id, |pool| pool.name = "POOLA".into())
        .unwrap();

    let volume = meta
        .create_volume("volA", pool.id, 1 << 20, Provisioning::Thin)
        .unwrap();
    let again = meta.create_volume("VOLA", pool.id, 1 << 20, Provisioning::Thin);
    assert!(is_name_conflict(again));
    let snapshot = snapshot_of(volume.id, "vola", None);
    assert!(is_name_conflict(meta.create_snapshots(&[snapshot], None)));
    let twins = [
        snapshot_of(volume.id, "snap", None),
        snapshot_of(volume.id, "SNAP", None),
    ];
    assert!(is_name_conflict(meta.create_snapshots(&twins, None)));
    let w = meta
        .create_volume("w", pool.id, 1 << 20, Provisioning::Thin)
        .unwrap();
    assert!(is_name_conflict(meta.check_volume_change(
        w.id,
        Some("VolA"),
        None,
        None
    )));
    assert!(is_name_conflict(
        meta.update_volume(w.id, |v| v.name = "VolA".into())
    ));
    meta.update_volume(volume.id, |v| v.name = "VOLA".into())
        .unwrap();
    assert_eq!(volume_names(&meta), ["VOLA", "w"]);

    let group = meta.create_cg("cgA", pool.id, 0, None).unwrap();
    assert!(is_name_conflict(meta.create_cg("CGA", pool.id, 0, None)));
    let mut recased = meta.state().catalog.cgs[&group.id].clone();
    recased.name = "CGa".into();
    meta.update_cg(recased).unwrap();

    meta.save_host(host("hostA")).unwrap();
    assert!(host_name_conflict(meta.save_host(host("HOSTa"))));
    meta.save_cluster(cluster(0, "clusterA")).unwrap();
    assert!(host_name_conflict(
        meta.save_cluster(cluster(0, "CLUSTERA"))
    ));

    let policy = |name: &str| PolicyRecord {
        id: 0,
        name: name.into(),
        enabled: true,
        schedules: Vec::new(),
        assets: Vec::new(),
        created_at: 0,
        updated_at: 0,
    };
    meta.save_policy(policy("hourly")).unwrap();
    assert!(is_name_conflict(meta.save_policy(policy("HOURLY"))));
}

/// A catalog journaled before names were compared without case may hold `volA` and
/// `VOLA`: both load and keep working; a third spelling is refused.
#[test]
fn an_old_catalog_with_names_differing_in_case_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (meta, _) = open_small_store(dir.path());
        let pool = meta.create_pool("p", 32 << 20, 1 << 30).unwrap();
        meta.create_volume("volA", pool.id, 1 << 20, Provisioning::Thin)
            .unwrap();
        // As an older node wrote it: straight to the journal, past today's name check.
        let mut state = meta.state_mut();
        let id = state.catalog.next_volume_id;
        let twin = VolumeRecord::new(id, "VOLA", pool.id, 1 << 20, now_ms());
        meta.log_catalog(&mut state, CatalogOp::CreateVolume(twin));
    }
    let (meta, _) = open_small_store(dir.path());
    assert_eq!(volume_names(&meta), ["VOLA", "volA"]);
    let pool = meta.state().catalog.pool_by_name("p").unwrap().id;
    let third = meta.create_volume("Vola", pool, 1 << 20, Provisioning::Thin);
    assert!(is_name_conflict(third));
    // Each still answers to its own exact name and can be renamed apart or deleted.
    let upper = meta.state().catalog.volume_by_name("VOLA").unwrap().id;
    meta.update_volume(upper, |v| v.name = "volB".into())
        .unwrap();
    let lower = meta.state().catalog.volume_by_name("volA").unwrap().id;
    meta.delete_volume(lower).unwrap();
    assert_eq!(volume_names(&meta), ["volB"]);
}
