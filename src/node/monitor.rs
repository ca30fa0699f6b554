//! The node's watcher: once a second it compares pool usage with the pools' thresholds and
//! the repair counters with their last values, and raises the events an operator must see
//! (capacity warning, critical/LIMITED, LOCKED and back; blocks repaired from parity or
//! lost). It also syncs the event log every few seconds so events survive power loss, not
//! only a crash of the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::meta::{CapacityLevel, MetaStore};
use crate::mgmt::events::EventLog;

const PERIOD: Duration = Duration::from_secs(1);
const SYNC_PERIOD: Duration = Duration::from_secs(5);

/// The events for a pool going from `before` to `now`.
fn transition_events(before: CapacityLevel, now: CapacityLevel) -> Vec<&'static str> {
    use CapacityLevel::*;
    let mut codes = Vec::new();
    if now > before {
        if before < Warning && now >= Warning {
            codes.push("POOL_CAPACITY_WARNING");
        }
        if before < Critical && now >= Critical {
            codes.push("POOL_CAPACITY_CRITICAL");
            codes.push("POOL_LIMITED");
        }
        if now == Locked {
            codes.push("POOL_LOCKED");
        }
    } else if now < before {
        if before == Locked {
            codes.push("POOL_UNLOCKED");
        }
        if now == Normal {
            codes.push("POOL_CAPACITY_NORMAL");
        }
    }
    codes
}

pub fn spawn(
    meta: Arc<MetaStore>,
    events: Arc<EventLog>,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("monitor".into())
        .spawn(move || watch(&meta, &events, &shutdown))
        .expect("the node needs a monitor thread; the process is out of threads")
}

fn watch(meta: &MetaStore, events: &EventLog, shutdown: &AtomicBool) {
    let mut levels: HashMap<u32, CapacityLevel> = HashMap::new();
    let mut repairs = meta.counters.checksum_repairs.load(Ordering::Relaxed);
    let mut lost = meta.counters.unrecoverable_reads.load(Ordering::Relaxed);
    let mut last_sync = Instant::now();
    while !shutdown.load(Ordering::Acquire) {
        check_pools(meta, events, &mut levels);
        let now_repairs = meta.counters.checksum_repairs.load(Ordering::Relaxed);
        if now_repairs > repairs {
            events.raise(
                "DATA_REPAIRED",
                format!(
                    "{} block(s) failed their checksum and were rebuilt from parity and rewritten; check the NL-SAS devices' health",
                    now_repairs - repairs
                ),
                None,
                None,
            );
            repairs = now_repairs;
        }
        let now_lost = meta.counters.unrecoverable_reads.load(Ordering::Relaxed);
        if now_lost > lost {
            let named = std::mem::take(&mut *meta.counters.lost_blocks.lock());
            events.raise(
                "DATA_UNRECOVERABLE",
                format!(
                    "{} read(s) found a block that neither its copy nor parity could give back; hosts got a media error for exactly those blocks ({}). Replace failed devices and restore the affected data",
                    now_lost - lost,
                    named.join(", ")
                ),
                None,
                None,
            );
            lost = now_lost;
        }
        if last_sync.elapsed() >= SYNC_PERIOD {
            events.sync();
            last_sync = Instant::now();
        }
        let deadline = Instant::now() + PERIOD;
        while Instant::now() < deadline && !shutdown.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn check_pools(meta: &MetaStore, events: &EventLog, levels: &mut HashMap<u32, CapacityLevel>) {
    let mut raised = Vec::new();
    {
        let state = meta.state();
        levels.retain(|id, _| state.catalog.pools.contains_key(id));
        for pool in state.catalog.pools.values() {
            let allocated = state
                .pools
                .get(&pool.id)
                .map_or(0, |usage| usage.allocated_bytes());
            let now = pool.capacity_level(allocated);
            let before = levels.insert(pool.id, now).unwrap_or(CapacityLevel::Normal);
            for code in transition_events(before, now) {
                raised.push((
                    code,
                    format!(
                        "pool {:?}: {allocated} of {} bytes allocated ({}%; warning at {}%, critical at {}%)",
                        pool.name,
                        pool.physical_capacity,
                        allocated * 100 / pool.physical_capacity.max(1),
                        pool.physical_capacity_warning,
                        pool.physical_capacity_critical
                    ),
                    pool.id,
                ));
            }
        }
    }
    // Raised outside the metadata lock: the event log does file I/O.
    for (code, description, pool) in raised {
        events.raise(code, description, Some(u64::from(pool)), None);
    }
}

#[cfg(test)]
mod tests {
    use super::CapacityLevel::*;
    use super::*;

    #[test]
    fn transitions_raise_each_crossing_once() {
        assert_eq!(
            transition_events(Normal, Locked),
            [
                "POOL_CAPACITY_WARNING",
                "POOL_CAPACITY_CRITICAL",
                "POOL_LIMITED",
                "POOL_LOCKED"
            ]
        );
        assert_eq!(
            transition_events(Warning, Critical),
            ["POOL_CAPACITY_CRITICAL", "POOL_LIMITED"]
        );
        assert_eq!(transition_events(Locked, Warning), ["POOL_UNLOCKED"]);
        assert_eq!(
            transition_events(Critical, Normal),
            ["POOL_CAPACITY_NORMAL"]
        );
        assert!(transition_events(Warning, Warning).is_empty());
    }
}
