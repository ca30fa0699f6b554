//! The human output: left-aligned tables of the API objects, and one line per followed event.

use std::collections::HashMap;

use super::schedule_spec;
use crate::mgmt::api::{
    CgInfo, ChangedBlocks, ControllerInfo, PolicyInfo, PoolInfo, ReadSourcesInfo, ScheduleInfo,
    SsdCacheInfo, SystemInfo, VolumeInfo,
};
use crate::mgmt::events::Event;
use crate::mgmt::users::UserInfo;
use crate::types::format_size;

/// Left-aligned columns separated by two spaces, no trailing blanks.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|title| title.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

pub fn pools(pools: &[PoolInfo]) -> String {
    let rows: Vec<Vec<String>> = pools
        .iter()
        .map(|pool| {
            vec![
                pool.name.clone(),
                pool.id.to_string(),
                pool.state.clone(),
                format_size(pool.physical_capacity),
                format_size(pool.allocated_physical_space),
                format_size(pool.free_physical_space),
                format_size(pool.virtual_capacity),
                format_size(pool.free_virtual_space),
                format!(
                    "{}%/{}%",
                    pool.physical_capacity_warning, pool.physical_capacity_critical
                ),
                yes_no(pool.ssd_enabled),
                pool.volumes_count.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "STATE",
            "PHYSICAL",
            "USED",
            "FREE",
            "VIRTUAL",
            "VIRTUAL-FREE",
            "WARN/CRIT",
            "SSD",
            "VOLUMES",
        ],
        &rows,
    )
}

pub fn volumes(volumes: &[VolumeInfo]) -> String {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|volume| {
            vec![
                volume.name.clone(),
                volume.id.to_string(),
                format_size(volume.size),
                format_size(volume.used),
                volume.pool_name.clone(),
                volume.provtype.clone(),
                yes_no(volume.write_protected),
                yes_no(volume.ssd_enabled),
                volume.serial.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "SIZE",
            "USED",
            "POOL",
            "PROVTYPE",
            "WRITE-PROTECTED",
            "SSD",
            "SERIAL",
        ],
        &rows,
    )
}

/// Object names by id, for the columns that name another object (a snapshot's parent).
pub type Names = HashMap<u32, String>;

/// The name of `id` if known, else its number; `-` for none (id 0).
fn name_of(names: &Names, id: u32) -> String {
    match (id, names.get(&id)) {
        (0, _) => "-".to_owned(),
        (_, Some(name)) => name.clone(),
        (_, None) => format!("id {id}"),
    }
}

/// A lock as `LOCKED until TIME`, `EXPIRED at TIME` or `UNLOCKED`.
fn lock(state: &str, until: Option<u64>) -> String {
    match until {
        Some(until) if state == "LOCKED" => format!("LOCKED until {}", utc_time(until)),
        Some(until) if state == "EXPIRED" => format!("EXPIRED at {}", utc_time(until)),
        _ => state.to_owned(),
    }
}

pub fn snapshots(snapshots: &[VolumeInfo], names: &Names) -> String {
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|snapshot| {
            vec![
                snapshot.name.clone(),
                snapshot.id.to_string(),
                name_of(names, snapshot.parent_id),
                utc_time(snapshot.created_at),
                format_size(snapshot.used),
                format_size(snapshot.unique_size),
                lock(&snapshot.lock_state, snapshot.lock_expires_at),
                yes_no(!snapshot.write_protected),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "ID", "PARENT", "CREATED", "USED", "UNIQUE", "LOCK", "WRITABLE",
        ],
        &rows,
    )
}

/// The ranges where `name` differs from `base`, in bytes, and their total.
pub fn changed_blocks(diff: &ChangedBlocks, name: &str, base: &str) -> String {
    if diff.ranges.is_empty() {
        return format!("{name:?} and {base:?} hold the same data\n");
    }
    let rows: Vec<Vec<String>> = diff
        .ranges
        .iter()
        .map(|range| {
            vec![
                range.offset.to_string(),
                range.length.to_string(),
                format_size(range.length),
            ]
        })
        .collect();
    let mut text = table(&["OFFSET", "LENGTH", "SIZE"], &rows);
    text.push_str(&format!(
        "{} bytes ({}) of {name:?} differ from {base:?} in {} range{} ({}-byte blocks)\n",
        diff.changed_bytes,
        format_size(diff.changed_bytes),
        diff.ranges.len(),
        if diff.ranges.len() == 1 { "" } else { "s" },
        diff.block_size
    ));
    text
}

pub fn consistency_groups(groups: &[CgInfo], names: &Names) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            vec![
                group.name.clone(),
                group.id.to_string(),
                group.cg_type.clone(),
                name_of(names, group.parent_id),
                group.pool_name.clone(),
                group.members_count.to_string(),
                lock(&group.lock_state, group.lock_expires_at),
                utc_time(group.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "ID", "TYPE", "PARENT", "POOL", "MEMBERS", "LOCK", "CREATED",
        ],
        &rows,
    )
}

/// One group's fields; its members follow in their own table.
pub fn consistency_group(group: &CgInfo, names: &Names) -> String {
    let rows: Vec<Vec<String>> = [
        ("name", group.name.clone()),
        ("id", group.id.to_string()),
        ("type", group.cg_type.clone()),
        ("snapshot of", name_of(names, group.parent_id)),
        ("pool", group.pool_name.clone()),
        ("members", group.members_count.to_string()),
        ("has snapshots", yes_no(group.has_children)),
        ("lock", lock(&group.lock_state, group.lock_expires_at)),
        ("created", utc_time(group.created_at)),
        ("updated", utc_time(group.updated_at)),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect();
    table(&["FIELD", "VALUE"], &rows)
}

/// The policies with their schedules in the `--schedule` form, comma-separated.
pub fn policies(policies: &[PolicyInfo]) -> String {
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|policy| {
            let schedules: Vec<String> = policy.schedules.iter().map(schedule_spec::text).collect();
            vec![
                policy.name.clone(),
                policy.id.to_string(),
                yes_no(policy.enabled),
                schedules.join(","),
                policy.assets_count.to_string(),
                policy.snapshots_count.to_string(),
                utc_time(policy.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "ENABLED",
            "SCHEDULES",
            "VOLUMES",
            "SNAPSHOTS",
            "CREATED",
        ],
        &rows,
    )
}

/// One policy's fields; its schedules and volumes follow in their own tables.
pub fn policy(policy: &PolicyInfo) -> String {
    let rows: Vec<Vec<String>> = [
        ("name", policy.name.clone()),
        ("id", policy.id.to_string()),
        ("enabled", yes_no(policy.enabled)),
        ("volumes", policy.assets_count.to_string()),
        ("snapshots", policy.snapshots_count.to_string()),
        ("created", utc_time(policy.created_at)),
        ("updated", utc_time(policy.updated_at)),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect();
    table(&["FIELD", "VALUE"], &rows)
}

pub fn schedules(schedules: &[ScheduleInfo]) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|schedule| {
            vec![
                schedule.name.clone(),
                schedule_spec::duration_text(schedule.interval),
                schedule.retention.to_string(),
                schedule
                    .lock_duration
                    .map_or_else(|| "-".to_owned(), schedule_spec::duration_text),
            ]
        })
        .collect();
    table(&["SCHEDULE", "EVERY", "KEEP", "LOCK"], &rows)
}

/// Progress from 0.0 to 1.0 as a ten-cell bar and a percentage, `[#####.....] 50%`.
/// Rounded down, so it shows 100% only when done (with a hair of slack for binary
/// fractions: 0.29 is 29%); anything out of range or NaN is clamped.
fn progress_bar(progress: f64) -> String {
    let fraction = if progress >= 0.0 {
        progress.min(1.0)
    } else {
        0.0
    };
    let percent = ((fraction * 100.0 + 1e-9).floor() as usize).min(100);
    let filled = percent / 10;
    format!(
        "[{}{}] {percent}%",
        "#".repeat(filled),
        ".".repeat(10 - filled)
    )
}

/// The re-mirroring and failback under way, or `-`.
fn controller_progress(controller: &ControllerInfo) -> String {
    let under_way: Vec<String> = [
        ("remirror", controller.remirror_progress),
        ("failback", controller.failback_progress),
    ]
    .into_iter()
    .filter_map(|(what, progress)| Some(format!("{what} {}", progress_bar(progress?))))
    .collect();
    if under_way.is_empty() {
        "-".to_owned()
    } else {
        under_way.join(", ")
    }
}

fn share_percent(controller: &ControllerInfo) -> String {
    format!("{:.1}", controller.ownership_share * 100.0)
}

fn ports(controller: &ControllerInfo) -> String {
    if controller.ports.is_empty() {
        "-".to_owned()
    } else {
        controller.ports.join(",")
    }
}

pub fn controllers(controllers: &[ControllerInfo]) -> String {
    let rows: Vec<Vec<String>> = controllers
        .iter()
        .map(|controller| {
            vec![
                controller.id.to_string(),
                controller.state.clone(),
                ports(controller),
                share_percent(controller),
                controller.owned_sections.to_string(),
                format_size(controller.dirty_bytes),
                format_size(controller.mirror_bytes),
                format_size(controller.mirror_lag_bytes),
                controller_progress(controller),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "PORTS", "SHARE %", "OWNED", "DIRTY", "MIRROR", "LAG", "PROGRESS",
        ],
        &rows,
    )
}

pub fn controller(controller: &ControllerInfo) -> String {
    let progress = |progress: Option<f64>| progress.map_or_else(|| "-".to_owned(), progress_bar);
    let rows: Vec<Vec<String>> = [
        ("id", controller.id.to_string()),
        ("name", controller.name.clone()),
        ("state", controller.state.clone()),
        ("ports", ports(controller)),
        ("ownership share %", share_percent(controller)),
        ("owned sections", controller.owned_sections.to_string()),
        ("cache", format_size(controller.cache_bytes)),
        ("dirty", format_size(controller.dirty_bytes)),
        ("mirror (of others)", format_size(controller.mirror_bytes)),
        ("mirror lag", format_size(controller.mirror_lag_bytes)),
        ("remirror", progress(controller.remirror_progress)),
        ("failback", progress(controller.failback_progress)),
        ("failovers", controller.failovers.to_string()),
        ("state changed", utc_time(controller.state_changed_at)),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect();
    table(&["FIELD", "VALUE"], &rows)
}

pub fn users(users: &[UserInfo]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|user| {
            let role = serde_json::to_value(user.role)
                .ok()
                .and_then(|role| role.as_str().map(str::to_owned))
                .unwrap_or_default();
            vec![
                user.name.clone(),
                user.id.to_string(),
                role,
                yes_no(user.enabled),
                user.email.clone(),
                user.last_login.map_or_else(|| "-".to_owned(), utc_time),
                user.failed_logins.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "ROLE",
            "ENABLED",
            "EMAIL",
            "LAST-LOGIN",
            "FAILED-LOGINS",
        ],
        &rows,
    )
}

pub fn events(events: &[Event]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            vec![
                event.id.to_string(),
                utc_time(event.timestamp),
                level(event),
                event.code.clone(),
                event.username.clone().unwrap_or_else(|| "-".to_owned()),
                event.description.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "TIME", "LEVEL", "CODE", "USER", "DESCRIPTION"],
        &rows,
    )
}

/// One followed event: `ID TIME LEVEL CODE description`.
pub fn event_line(event: &Event) -> String {
    format!(
        "{} {} {:<8} {} {}\n",
        event.id,
        utc_time(event.timestamp),
        level(event),
        event.code,
        event.description
    )
}

fn level(event: &Event) -> String {
    serde_json::to_value(event.level)
        .ok()
        .and_then(|level| level.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn system(system: &SystemInfo) -> String {
    let rows: Vec<Vec<String>> = [
        ("name", system.name.clone()),
        ("serial", system.serial.to_string()),
        ("model", system.model.clone()),
        ("version (API level)", system.version.clone()),
        ("troika version", system.troika_version.clone()),
        ("state", system.state.clone()),
        (
            "read-only",
            yes_no(system.operational_state.read_only_system),
        ),
        ("controllers", system.controllers.to_string()),
        ("physical capacity", format_size(system.physical_capacity)),
        (
            "allocated physical",
            format_size(system.allocated_physical_capacity),
        ),
        ("used physical", format_size(system.used_physical_capacity)),
        ("free physical", format_size(system.free_physical_capacity)),
        ("pools", system.pools_count.to_string()),
        ("volumes", system.volumes_count.to_string()),
        ("started", utc_time(system.started_at)),
        ("reads (blocks)", read_sources(&system.reads)),
    ]
    .into_iter()
    .chain(system.ssd_cache.iter().flat_map(ssd_cache_rows))
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect();
    table(&["FIELD", "VALUE"], &rows)
}

/// `12 DRAM (40.0%), 15 SSD (50.0%), 3 drives (10.0%)`, or `none yet`.
fn read_sources(reads: &ReadSourcesInfo) -> String {
    let total = reads.dram_hits + reads.ssd_hits + reads.misses;
    if total == 0 {
        return "none yet".into();
    }
    let share = |count: u64| format!("{count} ({:.1}%)", count as f64 * 100.0 / total as f64);
    format!(
        "{} DRAM, {} SSD, {} drives",
        share(reads.dram_hits),
        share(reads.ssd_hits),
        share(reads.misses)
    )
}

fn ssd_cache_rows(ssd: &SsdCacheInfo) -> Vec<(&'static str, String)> {
    vec![
        ("ssd cache", ssd.state.clone()),
        (
            "ssd cache used",
            format!(
                "{} of {}",
                format_size(ssd.cached_bytes),
                format_size(ssd.capacity)
            ),
        ),
        (
            "ssd cache index",
            format!(
                "{} ({:.1} B per cached block)",
                format_size(ssd.index_bytes),
                ssd.index_bytes_per_block
            ),
        ),
        (
            "ssd cache hits/misses",
            format!(
                "{} / {} ({} refused by verification)",
                ssd.hits, ssd.misses, ssd.mismatches
            ),
        ),
        (
            "ssd cache admitted",
            format!(
                "{} blocks, {} evicted, {} throttled, {} bypassed (sequential), {} written",
                ssd.admissions,
                ssd.evictions,
                ssd.throttled,
                ssd.bypassed,
                format_size(ssd.bytes_written)
            ),
        ),
    ]
}

pub use crate::types::utc_time;

#[cfg(test)]
mod tests {
    use super::{progress_bar, utc_time};

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_709_251_199_999), "2024-02-29 23:59:59");
        assert_eq!(utc_time(4_102_444_800_000), "2100-01-01 00:00:00");
    }

    #[test]
    fn progress_is_a_bar_rounded_down() {
        assert_eq!(progress_bar(0.0), "[..........] 0%");
        assert_eq!(progress_bar(0.5), "[#####.....] 50%");
        assert_eq!(progress_bar(0.29), "[##........] 29%");
        assert_eq!(progress_bar(0.999), "[#########.] 99%");
        assert_eq!(progress_bar(1.0), "[##########] 100%");
        assert_eq!(progress_bar(7.0), "[##########] 100%");
        assert_eq!(progress_bar(-1.0), "[..........] 0%");
        assert_eq!(progress_bar(f64::NAN), "[..........] 0%");
    }
}
