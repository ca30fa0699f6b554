//! Snapshots, restores, refreshes and consistency groups on the live node.
//!
//! Each change that must catch one instant (a snapshot of one volume or of every member
//! of a group, a restore, a refresh) runs inside [`Controllers::at_one_instant`]: host
//! I/O on every controller is paused, the cache's dirty blocks are on the array, and the
//! catalog change (one journal record) is made before hosts resume. A write acknowledged
//! before the pause is in the snapshot; one admitted after it is not. The changed-blocks
//! diff reads the maps in such a pause too, so it sees every acknowledged write. A dataset that takes
//! other contents has its cached blocks dropped in the same pause, so hosts read the new
//! contents at once.

use std::collections::HashSet;

use super::api::{NodeApi, lock_state, mgmt_error, volume_info};
use crate::clock::now_ms;
use crate::meta::store::snapshots::{GroupSpec, SnapshotSpec};
use crate::meta::{CgRecord, MetaState, VolumeRecord};
use crate::mgmt::api::{
    CgCreate, CgInfo, CgUpdate, ChangedBlocks, ChangedRange, SnapshotCreate, VolumeInfo,
};
use crate::mgmt::{Management, MgmtError};
use crate::types::{BLOCK_SIZE, IoError};

fn io_error(err: IoError) -> MgmtError {
    MgmtError::internal(format!(
        "the cache could not settle before the change: {err}"
    ))
}

pub(super) fn cg_info(state: &MetaState, cg: &CgRecord) -> CgInfo {
    let members_count = state
        .catalog
        .volumes
        .values()
        .filter(|volume| volume.cg_id == Some(cg.id))
        .count() as u64;
    CgInfo {
        id: cg.id,
        name: cg.name.clone(),
        pool_id: cg.pool_id,
        pool_name: state
            .catalog
            .pools
            .get(&cg.pool_id)
            .map(|pool| pool.name.clone())
            .unwrap_or_default(),
        cg_type: if cg.parent_id == 0 {
            "MASTER"
        } else {
            "SNAPSHOT"
        }
        .into(),
        parent_id: cg.parent_id,
        members_count,
        has_children: state
            .catalog
            .cgs
            .values()
            .any(|other| other.parent_id == cg.id),
        lock_expires_at: cg.lock_expires_at,
        lock_state: lock_state(cg.lock_expires_at).into(),
        is_replicated: false,
        created_at: cg.created_at,
        updated_at: cg.updated_at.max(cg.created_at),
    }
}

impl NodeApi {
    fn record(&self, id: u32) -> Result<VolumeRecord, MgmtError> {
        self.meta
            .state()
            .catalog
            .volumes
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }

    fn cg_record(&self, id: u32) -> Result<CgRecord, MgmtError> {
        self.meta
            .state()
            .catalog
            .cgs
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::cg_not_found(id))
    }

    fn volume_infos(&self, ids: &[u32]) -> Vec<VolumeInfo> {
        let state = self.meta.state();
        let serial = self.meta.serial();
        ids.iter()
            .filter_map(|id| state.catalog.volumes.get(id))
            .map(|volume| volume_info(&state, serial, volume))
            .collect()
    }

    pub(super) fn take_snapshots(
        &self,
        requests: Vec<SnapshotCreate>,
    ) -> Result<Vec<VolumeInfo>, MgmtError> {
        let now = now_ms();
        let mut specs = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            let parent = self.record(request.parent_id)?;
            let name = match &request.name {
                Some(name) => name.clone(),
                None => format!(
                    "{}.snap-{now}{}",
                    parent.name,
                    suffix(index, requests.len())
                ),
            };
            specs.push(SnapshotSpec {
                parent: parent.id,
                name,
                write_protected: request.write_protected.unwrap_or(true),
                lock_expires_at: request.lock_expires_at,
                policy: None,
            });
        }
        let parents: Vec<u32> = specs.iter().map(|spec| spec.parent).collect();
        let (records, _) = self
            .controllers
            .at_one_instant(
                || self.cache.any_dirty(&parents),
                || Ok(self.meta.create_snapshots(&specs, None)),
            )
            .map_err(io_error)?
            .map_err(mgmt_error)?;
        for (record, request) in records.iter().zip(&requests) {
            if let Some(ssd) = request.ssd_enabled {
                self.meta
                    .update_volume(record.id, |volume| volume.ssd_enabled = ssd)
                    .map_err(mgmt_error)?;
            }
        }
        let ids: Vec<u32> = records.iter().map(|record| record.id).collect();
        Ok(self.volume_infos(&ids))
    }

    /// Each `(target, source)`: the target drops its cached blocks and takes the source's
    /// contents, all at one instant.
    fn take_contents(&self, pairs: &[(u32, u32)]) -> Result<(), MgmtError> {
        for (id, from) in pairs {
            self.meta
                .check_take_contents(*id, *from)
                .map_err(mgmt_error)?;
        }
        let sources: Vec<u32> = pairs.iter().map(|(_, from)| *from).collect();
        self.controllers
            .at_one_instant(
                || self.cache.any_dirty(&sources),
                || {
                    for (id, _) in pairs {
                        self.cache.forget_volume(*id);
                    }
                    Ok(self.meta.take_contents(pairs))
                },
            )
            .map_err(io_error)?
            .map_err(mgmt_error)
    }

    pub(super) fn restore(&self, id: u32, source: u32) -> Result<VolumeInfo, MgmtError> {
        let snapshot = self.record(source)?;
        if !snapshot.is_snapshot() {
            return Err(MgmtError::bad_request(format!(
                "{:?} is not a snapshot; a volume is restored from one of its snapshots",
                snapshot.name
            )));
        }
        self.take_contents(&[(id, source)])?;
        self.volume(id)
    }

    pub(super) fn refresh(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let snapshot = self.record(id)?;
        if !snapshot.is_snapshot() {
            return Err(MgmtError::bad_request(format!(
                "{:?} is not a snapshot; only a snapshot can be refreshed from its parent",
                snapshot.name
            )));
        }
        self.take_contents(&[(id, snapshot.parent_id)])?;
        self.volume(id)
    }

    /// The blocks whose contents differ between `id` and `base`. The maps lack what is
    /// still dirty in the cache, so the diff runs at one instant like a snapshot: every
    /// write acknowledged before the call is in the answer.
    pub(super) fn diff(&self, id: u32, base: u32) -> Result<ChangedBlocks, MgmtError> {
        // The maps' differences plus the blocks written to either and not destaged yet:
        // every acknowledged write counts, without pausing hosts.
        let mut ranges = self.meta.changed_ranges(base, id).map_err(mgmt_error)?;
        let mut dirty = self.cache.dirty_blocks(id);
        dirty.extend(self.cache.dirty_blocks(base));
        if !dirty.is_empty() {
            dirty.extend(ranges.iter().flat_map(|(start, end)| *start..*end));
            dirty.sort_unstable();
            dirty.dedup();
            let size = self.record(id)?.size.max(self.record(base)?.size) / BLOCK_SIZE as u64;
            ranges.clear();
            for lba in dirty.into_iter().filter(|lba| *lba < size) {
                match ranges.last_mut() {
                    Some(last) if last.1 == lba => last.1 = lba + 1,
                    _ => ranges.push((lba, lba + 1)),
                }
            }
        }
        let block = BLOCK_SIZE as u64;
        let ranges: Vec<ChangedRange> = ranges
            .into_iter()
            .map(|(start, end)| ChangedRange {
                offset: start * block,
                length: (end - start) * block,
            })
            .collect();
        Ok(ChangedBlocks {
            volume_id: id,
            base_id: base,
            block_size: block,
            changed_bytes: ranges.iter().map(|range| range.length).sum(),
            ranges,
        })
    }

    pub(super) fn all_cgs(&self) -> Vec<CgInfo> {
        let state = self.meta.state();
        state
            .catalog
            .cgs
            .values()
            .map(|cg| cg_info(&state, cg))
            .collect()
    }

    pub(super) fn one_cg(&self, id: u32) -> Result<CgInfo, MgmtError> {
        let state = self.meta.state();
        let cg = state
            .catalog
            .cgs
            .get(&id)
            .ok_or_else(|| MgmtError::cg_not_found(id))?;
        Ok(cg_info(&state, cg))
    }

    fn members(&self, cg: u32) -> Vec<VolumeRecord> {
        self.meta
            .state()
            .catalog
            .volumes
            .values()
            .filter(|volume| volume.cg_id == Some(cg))
            .cloned()
            .collect()
    }

    pub(super) fn new_cg(&self, request: CgCreate) -> Result<CgInfo, MgmtError> {
        let now = now_ms();
        if let Some(parent_id) = request.parent_id {
            let parent = self.cg_record(parent_id)?;
            if parent.parent_id != 0 {
                return Err(MgmtError::bad_request(format!(
                    "{:?} is a group snapshot; take group snapshots of the group itself",
                    parent.name
                )));
            }
            let name = request
                .name
                .clone()
                .unwrap_or_else(|| format!("{}.snap-{now}", parent.name));
            let prefix = request.snap_prefix.clone().unwrap_or_default();
            let suffix = request.snap_suffix.clone().unwrap_or_else(|| {
                if prefix.is_empty() {
                    format!("-{name}")
                } else {
                    String::new()
                }
            });
            let members = self.members(parent_id);
            if members.is_empty() {
                return Err(MgmtError::bad_request(format!(
                    "consistency group {:?} has no members to snapshot; add volumes first",
                    parent.name
                )));
            }
            let specs: Vec<SnapshotSpec> = members
                .iter()
                .map(|member| SnapshotSpec {
                    parent: member.id,
                    name: format!("{prefix}{}{suffix}", member.name),
                    write_protected: request.write_protected.unwrap_or(true),
                    lock_expires_at: request.lock_expires_at,
                    policy: None,
                })
                .collect();
            let group = GroupSpec {
                parent: parent_id,
                name,
                lock_expires_at: request.lock_expires_at,
            };
            let parents: Vec<u32> = specs.iter().map(|spec| spec.parent).collect();
            let (_, group) = self
                .controllers
                .at_one_instant(
                    || self.cache.any_dirty(&parents),
                    || Ok(self.meta.create_snapshots(&specs, Some(group))),
                )
                .map_err(io_error)?
                .map_err(mgmt_error)?;
            let group = group.expect("a group snapshot was asked for");
            return self.one_cg(group.id);
        }
        let pool_id = request.pool_id.ok_or_else(|| {
            MgmtError::bad_request(
                "a consistency group needs pool_id (or parent_id for a group snapshot)",
            )
        })?;
        let name = request
            .name
            .ok_or_else(|| MgmtError::bad_request("a consistency group needs a name"))?;
        let cg = self
            .meta
            .create_cg(&name, pool_id, 0, None)
            .map_err(mgmt_error)?;
        self.one_cg(cg.id)
    }

    pub(super) fn change_cg(&self, id: u32, update: CgUpdate) -> Result<CgInfo, MgmtError> {
        let mut cg = self.cg_record(id)?;
        if let Some(name) = update.name {
            cg.name = name;
        }
        self.meta.update_cg(cg).map_err(mgmt_error)?;
        self.one_cg(id)
    }

    pub(super) fn remove_cg(&self, id: u32, delete_members: bool) -> Result<CgInfo, MgmtError> {
        let info = self.one_cg(id)?;
        let cg = self.cg_record(id)?;
        if cg.lock_expires_at.is_some_and(|until| until > now_ms()) {
            return Err(MgmtError::new(
                "SNAPSHOT_LOCKED",
                409,
                format!(
                    "group snapshot {:?} is locked until {}; nobody can delete it before then",
                    cg.name,
                    crate::types::format_time(cg.lock_expires_at.unwrap_or(0))
                ),
            ));
        }
        let snapgroups: Vec<String> = self
            .meta
            .state()
            .catalog
            .cgs
            .values()
            .filter(|other| other.parent_id == id)
            .map(|other| other.name.clone())
            .collect();
        if !snapgroups.is_empty() {
            return Err(MgmtError::bad_request(format!(
                "consistency group {:?} has group snapshots ({}); delete them first",
                cg.name,
                snapgroups.join(", ")
            )));
        }
        if delete_members || cg.parent_id != 0 {
            let members = self.members(id);
            // Check every member first so a refusal deletes nothing.
            for member in &members {
                if cg.parent_id != 0 || delete_members {
                    self.meta.check_delete(member.id).map_err(mgmt_error)?;
                }
            }
            for member in members {
                self.delete_volume_now(member.id)?;
            }
        }
        self.meta.delete_cg(id).map_err(mgmt_error)?;
        Ok(info)
    }

    pub(super) fn cg_member_infos(&self, id: u32) -> Result<Vec<VolumeInfo>, MgmtError> {
        self.cg_record(id)?;
        let ids: Vec<u32> = self.members(id).iter().map(|volume| volume.id).collect();
        Ok(self.volume_infos(&ids))
    }

    pub(super) fn join_cg(&self, cg: u32, volume: u32) -> Result<VolumeInfo, MgmtError> {
        self.meta
            .set_volume_cg(volume, Some(cg))
            .map_err(mgmt_error)?;
        self.volume(volume)
    }

    pub(super) fn leave_cg(&self, cg: u32, volume: u32) -> Result<VolumeInfo, MgmtError> {
        let record = self.record(volume)?;
        if record.cg_id != Some(cg) {
            return Err(MgmtError::bad_request(format!(
                "volume {:?} is not a member of consistency group {cg}",
                record.name
            )));
        }
        self.meta.set_volume_cg(volume, None).map_err(mgmt_error)?;
        self.volume(volume)
    }

    /// Every member of group `id` takes the contents of its snapshot in group snapshot
    /// `source`; members without one are refused.
    pub(super) fn restore_group(&self, id: u32, source: u32) -> Result<CgInfo, MgmtError> {
        let group = self.cg_record(id)?;
        let snapgroup = self.cg_record(source)?;
        if snapgroup.parent_id != id {
            return Err(MgmtError::bad_request(format!(
                "{:?} is not a group snapshot of {:?}",
                snapgroup.name, group.name
            )));
        }
        let snapshots = self.members(source);
        let members: HashSet<u32> = self.members(id).iter().map(|volume| volume.id).collect();
        let pairs: Vec<(u32, u32)> = snapshots
            .iter()
            .filter(|snapshot| members.contains(&snapshot.parent_id))
            .map(|snapshot| (snapshot.parent_id, snapshot.id))
            .collect();
        if pairs.len() != members.len() {
            return Err(MgmtError::bad_request(format!(
                "group snapshot {:?} holds {} of the {} members of {:?}; restore members one by one",
                snapgroup.name,
                pairs.len(),
                members.len(),
                group.name
            )));
        }
        self.take_contents(&pairs)?;
        self.one_cg(id)
    }

    pub(super) fn refresh_group(&self, id: u32) -> Result<CgInfo, MgmtError> {
        let group = self.cg_record(id)?;
        if group.parent_id == 0 {
            return Err(MgmtError::bad_request(format!(
                "{:?} is a group, not a group snapshot; only group snapshots are refreshed",
                group.name
            )));
        }
        let pairs: Vec<(u32, u32)> = self
            .members(id)
            .iter()
            .map(|snapshot| (snapshot.id, snapshot.parent_id))
            .collect();
        self.take_contents(&pairs)?;
        self.one_cg(id)
    }
}

fn suffix(index: usize, count: usize) -> String {
    if count > 1 {
        format!("-{index}")
    } else {
        String::new()
    }
}
