//! Snapshots and consistency groups in the catalog and the maps: creating snapshots (any
//! number at one instant, in one journal record), a dataset taking another's contents
//! (restore, refresh), space figures and changed blocks.
//!
//! Every operation here is O(1) in the size of the volumes involved: a snapshot or a
//! restore points one tree at another's root. The caller (the node) makes the cache agree
//! first: a snapshot's parents have no dirty blocks left in cache, a dataset that takes
//! other contents has had its cached blocks dropped.

use super::datasets::{
    cg_name_taken, check_unlocked, pool_record, refuse_taken_name, validate_name,
    volume_name_taken, volume_record,
};
use super::{MetaError, MetaStore};
use crate::clock::now_ms;
use crate::meta::bounds::{check_lock_duration, check_lock_end, same_name};
use crate::meta::catalog::{CatalogOp, CgRecord, DatasetKind, PolicyRecord, VolumeRecord};
use crate::types::{BLOCK_SIZE, Lba};

/// The longest interval a snapshot schedule may have (10 years).
pub const MAX_INTERVAL_SECS: u64 = 10 * 365 * 86_400;
/// The longest lock a snapshot may have (100 years), on every path that sets one.
pub use crate::meta::bounds::MAX_LOCK_SECS;

/// One snapshot to take.
#[derive(Clone, Debug)]
pub struct SnapshotSpec {
    pub parent: u32,
    pub name: String,
    /// Hosts may not write it (the default for a new snapshot).
    pub write_protected: bool,
    pub lock_expires_at: Option<u64>,
    /// The policy and schedule taking it, if one is, and the time of the schedule's
    /// pass (its `created_at`, so the schedule's clock decides when the next is due).
    pub policy: Option<(u32, String, u64)>,
}

/// A group snapshot to take with the members' snapshots.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The group it is a snapshot of.
    pub parent: u32,
    pub name: String,
    pub lock_expires_at: Option<u64>,
}

impl MetaStore {
    /// Takes the snapshots in `specs` at one instant: one journal record, so after a crash
    /// either all exist or none.
    pub fn create_snapshots(
        &self,
        specs: &[SnapshotSpec],
        group: Option<GroupSpec>,
    ) -> Result<(Vec<VolumeRecord>, Option<CgRecord>), MetaError> {
        let now = now_ms();
        let mut state = self.state_mut();
        let group = match group {
            None => None,
            Some(spec) => {
                validate_name(&spec.name)?;
                if let Some(until) = spec.lock_expires_at {
                    let what = format!("group snapshot {:?}", spec.name);
                    check_lock_end(&what, until, now)?;
                }
                if cg_name_taken(&state, &spec.name, None) {
                    return Err(MetaError::NameConflict {
                        kind: "consistency group",
                        name: spec.name,
                    });
                }
                let parent = cg_record(&state, spec.parent)?;
                Some(CgRecord {
                    id: state.catalog.next_cg_id.max(1),
                    name: spec.name,
                    pool_id: parent.pool_id,
                    parent_id: parent.id,
                    created_at: now,
                    updated_at: now,
                    lock_expires_at: spec.lock_expires_at,
                })
            }
        };
        let first_id = state.catalog.next_volume_id;
        let mut records = Vec::with_capacity(specs.len());
        for (id, spec) in (first_id..).zip(specs) {
            validate_name(&spec.name)?;
            let taken = volume_name_taken(&state, &spec.name, None)
                || records
                    .iter()
                    .any(|r: &VolumeRecord| same_name(&r.name, &spec.name));
            if taken {
                return Err(MetaError::NameConflict {
                    kind: "volume",
                    name: spec.name.clone(),
                });
            }
            let parent = volume_record(&state, spec.parent)?;
            if let Some(until) = spec.lock_expires_at {
                check_lock_end(&format!("snapshot {:?}", spec.name), until, now)?;
            }
            let mut snapshot = VolumeRecord::new(id, &spec.name, parent.pool_id, parent.size, now);
            snapshot.kind = DatasetKind::Snapshot;
            snapshot.parent_id = parent.id;
            snapshot.family_id = parent.family();
            snapshot.write_protected = spec.write_protected;
            snapshot.ssd_enabled = parent.ssd_enabled;
            snapshot.lock_expires_at = spec.lock_expires_at;
            snapshot.cg_id = group.as_ref().map(|cg| cg.id);
            if let Some((policy, schedule, at)) = &spec.policy {
                snapshot.policy = Some((*policy, schedule.clone()));
                snapshot.created_at = *at;
                snapshot.updated_at = *at;
            }
            records.push(snapshot);
        }
        self.log_catalog(
            &mut state,
            CatalogOp::CreateSnapshots {
                snapshots: records.clone(),
                group: group.clone(),
            },
        );
        Ok((records, group))
    }

    /// Checks that `id` may take `from`'s contents: both in one family, the same size,
    /// and `id` not locked. `refresh` names the case of a snapshot taking its parent's.
    pub fn check_take_contents(&self, id: u32, from: u32) -> Result<(), MetaError> {
        let state = self.state();
        let target = volume_record(&state, id)?;
        let source = volume_record(&state, from)?;
        check_unlocked(&target, "overwrite")?;
        if id == from {
            return Err(MetaError::Invalid(format!(
                "{:?} cannot take its own contents",
                target.name
            )));
        }
        if target.family() != source.family() {
            return Err(MetaError::Invalid(format!(
                "{:?} and {:?} are not of one family: a dataset can only be restored from its own snapshots",
                target.name, source.name
            )));
        }
        if target.size != source.size {
            return Err(MetaError::Invalid(format!(
                "{:?} is {} bytes and {:?} is {} bytes; resize {:?} to {} bytes first",
                target.name, target.size, source.name, source.size, target.name, source.size
            )));
        }
        Ok(())
    }

    /// Each `(id, from)`: `id` takes `from`'s current contents (restore a volume from a
    /// snapshot, refresh a snapshot from its parent), all at one instant, in one journal
    /// record. The cache must have dropped the targets' blocks.
    pub fn take_contents(&self, pairs: &[(u32, u32)]) -> Result<(), MetaError> {
        for (id, from) in pairs {
            self.check_take_contents(*id, *from)?;
        }
        let mut state = self.state_mut();
        self.log_catalog(&mut state, CatalogOp::TakeContents(pairs.to_vec()));
        Ok(())
    }

    /// The block ranges `[start, end)` whose contents differ between `a` and `b` (two
    /// datasets of one family), merged and in order.
    pub fn changed_ranges(&self, a: u32, b: u32) -> Result<Vec<(Lba, Lba)>, MetaError> {
        let state = self.state();
        let first = volume_record(&state, a)?;
        let second = volume_record(&state, b)?;
        if first.family() != second.family() {
            return Err(MetaError::Invalid(format!(
                "{:?} and {:?} are not of one family; changed blocks are only known between a volume and its snapshots",
                first.name, second.name
            )));
        }
        let end = first.size.max(second.size) / BLOCK_SIZE as u64;
        let mut ranges: Vec<(Lba, Lba)> = Vec::new();
        state.maps.diff(a, b, &mut |lba| {
            if lba >= end {
                return;
            }
            match ranges.last_mut() {
                Some(last) if last.1 == lba => last.1 = lba + 1,
                _ => ranges.push((lba, lba + 1)),
            }
        });
        Ok(ranges)
    }

    // ---- consistency groups ---------------------------------------------------------

    pub fn create_cg(
        &self,
        name: &str,
        pool_id: u32,
        parent_id: u32,
        lock_expires_at: Option<u64>,
    ) -> Result<CgRecord, MetaError> {
        validate_name(name)?;
        let now = now_ms();
        if let Some(until) = lock_expires_at {
            check_lock_end(&format!("consistency group {name:?}"), until, now)?;
        }
        let mut state = self.state_mut();
        if cg_name_taken(&state, name, None) {
            return Err(MetaError::NameConflict {
                kind: "consistency group",
                name: name.into(),
            });
        }
        pool_record(&state, pool_id)?;
        let cg = CgRecord {
            id: state.catalog.next_cg_id.max(1),
            name: name.into(),
            pool_id,
            parent_id,
            created_at: now,
            updated_at: now,
            lock_expires_at,
        };
        self.log_catalog(&mut state, CatalogOp::CreateCg(cg.clone()));
        Ok(cg)
    }

    pub fn update_cg(&self, cg: CgRecord) -> Result<CgRecord, MetaError> {
        let mut state = self.state_mut();
        let before = cg_record(&state, cg.id)?;
        if cg.name != before.name {
            validate_name(&cg.name)?;
            if cg_name_taken(&state, &cg.name, Some(cg.id)) {
                return Err(MetaError::NameConflict {
                    kind: "consistency group",
                    name: cg.name,
                });
            }
        }
        let mut cg = cg;
        cg.pool_id = before.pool_id;
        cg.parent_id = before.parent_id;
        cg.created_at = before.created_at;
        cg.lock_expires_at = before.lock_expires_at;
        cg.updated_at = now_ms();
        self.log_catalog(&mut state, CatalogOp::UpdateCg(cg.clone()));
        Ok(cg)
    }

    /// Deletes a group; its members stay (they leave the group).
    pub fn delete_cg(&self, id: u32) -> Result<CgRecord, MetaError> {
        let mut state = self.state_mut();
        let cg = cg_record(&state, id)?;
        self.log_catalog(&mut state, CatalogOp::DeleteCg { id });
        Ok(cg)
    }

    /// Puts master volume `volume` into group `cg` (`None`: takes it out).
    pub fn set_volume_cg(&self, volume: u32, cg: Option<u32>) -> Result<VolumeRecord, MetaError> {
        let mut state = self.state_mut();
        let record = volume_record(&state, volume)?;
        if let Some(cg) = cg {
            let group = cg_record(&state, cg)?;
            if group.parent_id != 0 {
                return Err(MetaError::Invalid(format!(
                    "{:?} is a snapshot group; members are added to the group it was taken of",
                    group.name
                )));
            }
            if record.is_snapshot() {
                return Err(MetaError::Invalid(format!(
                    "{:?} is a snapshot; only master volumes join consistency groups",
                    record.name
                )));
            }
            if record.pool_id != group.pool_id {
                return Err(MetaError::Invalid(format!(
                    "volume {:?} is in another pool than group {:?}; a group's members share its pool",
                    record.name, group.name
                )));
            }
            if let Some(current) = record.cg_id.filter(|current| *current != cg) {
                return Err(MetaError::Invalid(format!(
                    "volume {:?} already belongs to consistency group {current}; remove it first",
                    record.name
                )));
            }
        }
        self.log_catalog(&mut state, CatalogOp::SetVolumeCg { id: volume, cg });
        Ok(state.catalog.volumes[&volume].clone())
    }
}

impl MetaStore {
    /// Checks a policy (a unique valid name, schedules with unique names, intervals of at
    /// least a second, retention of at least one, assets that are master volumes) and
    /// stores it as new (`id` 0) or in place of policy `id`.
    pub fn save_policy(&self, mut policy: PolicyRecord) -> Result<PolicyRecord, MetaError> {
        validate_name(&policy.name)?;
        let mut state = self.state_mut();
        let others = (state.catalog.policies.values()).map(|other| (other.id, other.name.as_str()));
        refuse_taken_name("snapshot policy", &policy.name, policy.id, others)?;
        let mut names = std::collections::BTreeSet::new();
        for schedule in &policy.schedules {
            validate_name(&schedule.name)?;
            if !names.insert(schedule.name.as_str()) {
                return Err(MetaError::Invalid(format!(
                    "snapshot policy {:?} has two schedules named {:?}",
                    policy.name, schedule.name
                )));
            }
            if schedule.interval_secs > MAX_INTERVAL_SECS {
                return Err(MetaError::Invalid(format!(
                    "schedule {:?} of snapshot policy {:?}: the interval may be at most {MAX_INTERVAL_SECS} s (10 years)",
                    schedule.name, policy.name
                )));
            }
            if let Some(secs) = schedule.lock_secs {
                let what = format!(
                    "schedule {:?} of snapshot policy {:?}",
                    schedule.name, policy.name
                );
                check_lock_duration(&what, secs)?;
            }
            if schedule.interval_secs == 0 || schedule.retention == 0 {
                return Err(MetaError::Invalid(format!(
                    "schedule {:?} of snapshot policy {:?}: interval must be at least 1 second and retention at least 1 snapshot (got {} s, {})",
                    schedule.name, policy.name, schedule.interval_secs, schedule.retention
                )));
            }
        }
        policy.assets.sort_unstable();
        policy.assets.dedup();
        for asset in &policy.assets {
            let volume = volume_record(&state, *asset)?;
            if volume.is_snapshot() {
                return Err(MetaError::Invalid(format!(
                    "{:?} is a snapshot; snapshot policies take snapshots of master volumes",
                    volume.name
                )));
            }
        }
        let now = now_ms();
        policy.updated_at = now;
        let op = if policy.id == 0 {
            policy.id = state.catalog.next_policy_id.max(1);
            policy.created_at = now;
            CatalogOp::CreatePolicy(policy.clone())
        } else {
            let before = state.catalog.policies.get(&policy.id).ok_or_else(|| {
                MetaError::Invalid(format!("snapshot policy {} does not exist", policy.id))
            })?;
            policy.created_at = before.created_at;
            CatalogOp::UpdatePolicy(policy.clone())
        };
        self.log_catalog(&mut state, op);
        Ok(policy)
    }

    pub fn delete_policy(&self, id: u32) -> Result<PolicyRecord, MetaError> {
        let mut state = self.state_mut();
        let policy =
            state.catalog.policies.get(&id).cloned().ok_or_else(|| {
                MetaError::Invalid(format!("snapshot policy {id} does not exist"))
            })?;
        self.log_catalog(&mut state, CatalogOp::DeletePolicy { id });
        Ok(policy)
    }
}

pub(super) fn cg_record(state: &super::MetaState, id: u32) -> Result<CgRecord, MetaError> {
    state
        .catalog
        .cgs
        .get(&id)
        .cloned()
        .ok_or_else(|| MetaError::CgNotFound(id.to_string()))
}
