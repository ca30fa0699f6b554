//! Snapshot policies: their management calls, and the scheduler that runs them.
//!
//! Once a second the scheduler looks at every enabled policy's schedules and assets. A
//! schedule is due for an asset when its newest snapshot of that asset (found in the
//! catalog, so a restart loses nothing) is `interval` old, or there is none. Due snapshots
//! are taken together, at one instant, like any snapshot. Then each schedule keeps the
//! newest `retention` of its snapshots of each asset and deletes the older ones; a locked
//! snapshot, or one with snapshots of its own, stays and is reported once. Every snapshot
//! taken or deleted, and every failure, raises an event.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::api::{NodeApi, mgmt_error};
use crate::clock::now_ms;
use crate::meta::store::snapshots::SnapshotSpec;
use crate::meta::{PolicyRecord, ScheduleRecord, VolumeRecord};
use crate::mgmt::MgmtError;
use crate::mgmt::api::{PolicyCreate, PolicyInfo, PolicyUpdate, ScheduleInfo};
use crate::mgmt::events::EventLog;
use crate::types::utc_time;

const PERIOD: Duration = Duration::from_secs(1);

fn schedule_record(info: &ScheduleInfo) -> ScheduleRecord {
    ScheduleRecord {
        name: info.name.clone(),
        interval_secs: info.interval,
        retention: info.retention,
        lock_secs: info.lock_duration,
    }
}

fn schedule_info(record: &ScheduleRecord) -> ScheduleInfo {
    ScheduleInfo {
        name: record.name.clone(),
        interval: record.interval_secs,
        retention: record.retention,
        lock_duration: record.lock_secs,
    }
}

/// A failure's policy and the snapshot it concerns (empty: taking snapshots).
pub type FailureKey = (u32, String);

/// What one scheduler pass did, for events (and tests).
#[derive(Debug, Default)]
pub struct PassReport {
    pub taken: Vec<String>,
    pub deleted: Vec<String>,
    /// Event code and description of what it did and what failed; a failure also names
    /// its policy and snapshot, so the scheduler reports a repeating one once.
    pub events: Vec<(&'static str, String, Option<FailureKey>)>,
}

impl NodeApi {
    fn policy_info(&self, policy: &PolicyRecord) -> PolicyInfo {
        let state = self.meta.state();
        let snapshots_count = state
            .catalog
            .volumes
            .values()
            .filter(|volume| {
                volume
                    .policy
                    .as_ref()
                    .is_some_and(|(id, _)| *id == policy.id)
            })
            .count() as u64;
        PolicyInfo {
            id: policy.id,
            name: policy.name.clone(),
            enabled: policy.enabled,
            schedules: policy.schedules.iter().map(schedule_info).collect(),
            assets: policy.assets.clone(),
            assets_count: policy.assets.len() as u64,
            snapshots_count,
            created_at: policy.created_at,
            updated_at: policy.updated_at,
        }
    }

    fn policy_record(&self, id: u32) -> Result<PolicyRecord, MgmtError> {
        self.meta
            .state()
            .catalog
            .policies
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::policy_not_found(id))
    }

    pub(super) fn all_policies(&self) -> Vec<PolicyInfo> {
        let policies: Vec<PolicyRecord> = self
            .meta
            .state()
            .catalog
            .policies
            .values()
            .cloned()
            .collect();
        policies
            .iter()
            .map(|policy| self.policy_info(policy))
            .collect()
    }

    pub(super) fn one_policy(&self, id: u32) -> Result<PolicyInfo, MgmtError> {
        let policy = self.policy_record(id)?;
        Ok(self.policy_info(&policy))
    }

    pub(super) fn new_policy(&self, request: PolicyCreate) -> Result<PolicyInfo, MgmtError> {
        let policy = PolicyRecord {
            id: 0,
            name: request.name,
            enabled: request.enabled.unwrap_or(true),
            schedules: request.schedules.iter().map(schedule_record).collect(),
            assets: request.assets.unwrap_or_default(),
            created_at: 0,
            updated_at: 0,
        };
        let saved = self.meta.save_policy(policy).map_err(mgmt_error)?;
        Ok(self.policy_info(&saved))
    }

    pub(super) fn change_policy(
        &self,
        id: u32,
        update: PolicyUpdate,
    ) -> Result<PolicyInfo, MgmtError> {
        let mut policy = self.policy_record(id)?;
        if let Some(name) = update.name {
            policy.name = name;
        }
        if let Some(enabled) = update.enabled {
            policy.enabled = enabled;
        }
        if let Some(schedules) = update.schedules {
            policy.schedules = schedules.iter().map(schedule_record).collect();
        }
        let saved = self.meta.save_policy(policy).map_err(mgmt_error)?;
        Ok(self.policy_info(&saved))
    }

    pub(super) fn remove_policy(&self, id: u32) -> Result<PolicyInfo, MgmtError> {
        let info = self.one_policy(id)?;
        self.meta.delete_policy(id).map_err(mgmt_error)?;
        Ok(info)
    }

    pub(super) fn policy_asset(
        &self,
        id: u32,
        volume: u32,
        add: bool,
    ) -> Result<PolicyInfo, MgmtError> {
        let mut policy = self.policy_record(id)?;
        let present = policy.assets.contains(&volume);
        match (add, present) {
            (true, true) => {
                return Err(MgmtError::new(
                    "ASSET_ALREADY_ASSIGNED",
                    409,
                    format!(
                        "volume {volume} is already an asset of snapshot policy {:?}",
                        policy.name
                    ),
                ));
            }
            (false, false) => {
                return Err(MgmtError::bad_request(format!(
                    "volume {volume} is not an asset of snapshot policy {:?}",
                    policy.name
                )));
            }
            (true, false) => policy.assets.push(volume),
            (false, true) => policy.assets.retain(|asset| *asset != volume),
        }
        let saved = self.meta.save_policy(policy).map_err(mgmt_error)?;
        Ok(self.policy_info(&saved))
    }

    /// One scheduler pass at time `now` (ms since the epoch): takes the due snapshots,
    /// then retires those past their schedules' retention.
    pub fn run_policies(&self, now: u64) -> PassReport {
        let mut report = PassReport::default();
        let (policies, volumes): (Vec<PolicyRecord>, Vec<VolumeRecord>) = {
            let state = self.meta.state();
            (
                state
                    .catalog
                    .policies
                    .values()
                    .filter(|policy| policy.enabled)
                    .cloned()
                    .collect(),
                state.catalog.volumes.values().cloned().collect(),
            )
        };
        // Each policy's due snapshots are taken at one instant; one policy's failure does
        // not hold up the others.
        for policy in &policies {
            let mut specs = Vec::new();
            for schedule in &policy.schedules {
                for asset in &policy.assets {
                    let Some(volume) = volumes.iter().find(|volume| volume.id == *asset) else {
                        continue;
                    };
                    let newest = own_snapshots(&volumes, policy.id, &schedule.name, *asset)
                        .map(|snapshot| snapshot.created_at)
                        .max();
                    let interval = schedule.interval_secs.saturating_mul(1000);
                    if newest.is_some_and(|at| now.saturating_sub(at) < interval) {
                        continue;
                    }
                    specs.push(SnapshotSpec {
                        parent: *asset,
                        name: snapshot_name(&volume.name, policy.id, &schedule.name, now),
                        write_protected: true,
                        lock_expires_at: schedule
                            .lock_secs
                            .map(|secs| now.saturating_add(secs.saturating_mul(1000))),
                        policy: Some((policy.id, schedule.name.clone(), now)),
                    });
                }
            }
            if specs.is_empty() {
                continue;
            }
            let parents: Vec<u32> = specs.iter().map(|spec| spec.parent).collect();
            let outcome = self.controllers.at_one_instant(
                || self.cache.any_dirty(&parents),
                || Ok(self.meta.create_snapshots(&specs, None)),
            );
            let failure = match outcome {
                Ok(Ok((records, _))) => {
                    for record in records {
                        report.events.push((
                            "SNAPSHOT_POLICY_SNAPSHOT_CREATED",
                            format!(
                                "snapshot policy {:?} took snapshot {:?}",
                                policy.name, record.name
                            ),
                            None,
                        ));
                        report.taken.push(record.name);
                    }
                    continue;
                }
                Ok(Err(err)) => err.to_string(),
                Err(err) => err.to_string(),
            };
            report.events.push((
                "SNAPSHOT_POLICY_FAILED",
                format!(
                    "snapshot policy {:?} could not take its snapshots: {failure}; it tries again every second",
                    policy.name
                ),
                Some((policy.id, String::new())),
            ));
        }
        self.retire(&policies, now, &mut report);
        report
    }

    /// Deletes each schedule's snapshots of each asset beyond its retention, oldest first.
    fn retire(&self, policies: &[PolicyRecord], now: u64, report: &mut PassReport) {
        let volumes: Vec<VolumeRecord> = self
            .meta
            .state()
            .catalog
            .volumes
            .values()
            .cloned()
            .collect();
        for policy in policies {
            for schedule in &policy.schedules {
                for asset in &policy.assets {
                    let mut own: Vec<&VolumeRecord> =
                        own_snapshots(&volumes, policy.id, &schedule.name, *asset).collect();
                    own.sort_by_key(|snapshot| (snapshot.created_at, snapshot.id));
                    let excess = own.len().saturating_sub(schedule.retention as usize);
                    for snapshot in own.into_iter().take(excess) {
                        if snapshot.is_locked(now) {
                            continue;
                        }
                        match self.delete_volume_now(snapshot.id) {
                            Ok(_) => {
                                report.deleted.push(snapshot.name.clone());
                                report.events.push((
                                    "SNAPSHOT_POLICY_SNAPSHOT_DELETED",
                                    format!(
                                        "snapshot policy {:?} deleted snapshot {:?} (schedule {:?} keeps {})",
                                        policy.name, snapshot.name, schedule.name, schedule.retention
                                    ),
                                    None,
                                ));
                            }
                            Err(err) => report.events.push((
                                "SNAPSHOT_POLICY_FAILED",
                                format!(
                                    "snapshot policy {:?} cannot delete snapshot {:?} past its retention: {}",
                                    policy.name, snapshot.name, err.message
                                ),
                                Some((policy.id, snapshot.name.clone())),
                            )),
                        }
                    }
                }
            }
        }
    }
}

/// `<volume>.p<policy>.<schedule>.<YYYY-MM-DD-HH-MM-SS>`, the front cut so the whole fits a
/// name's 64 characters; distinct for two policies with a schedule of the same name.
fn snapshot_name(volume: &str, policy: u32, schedule: &str, now: u64) -> String {
    let stamp = utc_time(now).replace([' ', ':'], "-");
    let mut front = format!("{volume}.p{policy}.{schedule}");
    let room = 64 - 1 - stamp.len();
    if front.len() > room {
        let cut = (0..=room)
            .rev()
            .find(|at| front.is_char_boundary(*at))
            .unwrap_or(0);
        front.truncate(cut);
    }
    format!("{front}.{stamp}")
}

/// The snapshots `policy`'s schedule `schedule` took of `asset`.
fn own_snapshots<'a>(
    volumes: &'a [VolumeRecord],
    policy: u32,
    schedule: &'a str,
    asset: u32,
) -> impl Iterator<Item = &'a VolumeRecord> + 'a {
    volumes.iter().filter(move |volume| {
        volume.parent_id == asset
            && volume
                .policy
                .as_ref()
                .is_some_and(|(id, name)| *id == policy && name == schedule)
    })
}

/// Starts the scheduler thread. A problem that repeats is reported once until it clears.
pub fn spawn(
    api: Arc<NodeApi>,
    events: Arc<EventLog>,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("snapshot-policies".into())
        .spawn(move || {
            let mut reported: BTreeSet<(u32, String)> = BTreeSet::new();
            while !shutdown.load(Ordering::Acquire) {
                let report = api.run_policies(now_ms());
                let mut now_failing = BTreeSet::new();
                for (code, description, key) in report.events {
                    if let Some(key) = key {
                        let repeated = reported.contains(&key);
                        now_failing.insert(key);
                        if repeated {
                            continue;
                        }
                    }
                    events.raise(code, description, None, None);
                }
                reported = now_failing;
                let mut slept = Duration::ZERO;
                while slept < PERIOD && !shutdown.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(50));
                    slept += Duration::from_millis(50);
                }
            }
        })
        .expect("the node needs a snapshot policy thread; the process is out of threads")
}
