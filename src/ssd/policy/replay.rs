//! The trace replay harness: runs a trace through any [`CachePolicy`] the way the tier
//! would see it, the same code for every policy (the tests and `troika-cache-replay` both
//! use it).
//!
//! A read of a block is a lookup (`get`); a miss is then offered for admission (`admit`).
//! A write invalidates the block's cached copy (`remove`): on the array a rewrite goes to
//! a new physical block, so the old copy can never be asked for again.

use hashbrown::HashSet;

use super::traces::Request;
use super::{CachePolicy, every_policy};

/// What one replay counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayStats {
    /// Block reads (lookups).
    pub reads: u64,
    pub hits: u64,
    /// Block writes (invalidations).
    pub writes: u64,
    /// Keys cached and the index's bytes at the end.
    pub cached: u32,
    pub index_bytes: usize,
}

impl ReplayStats {
    /// Hits per block read, 0 to 1.
    pub fn hit_ratio(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.hits as f64 / self.reads as f64
        }
    }

    /// Index bytes per cached block at the end (0 when empty).
    pub fn bytes_per_block(&self) -> f64 {
        if self.cached == 0 {
            0.0
        } else {
            self.index_bytes as f64 / f64::from(self.cached)
        }
    }
}

/// Replays `trace` through `policy`.
pub fn replay(policy: &mut dyn CachePolicy, trace: &[Request]) -> ReplayStats {
    let mut stats = ReplayStats::default();
    for request in trace {
        for block in request.blocks() {
            if request.write {
                stats.writes += 1;
                policy.remove(block);
            } else {
                stats.reads += 1;
                if policy.get(block).is_some() {
                    stats.hits += 1;
                } else {
                    policy.admit(block);
                }
            }
        }
    }
    stats.cached = policy.len();
    stats.index_bytes = policy.index_bytes();
    stats
}

/// Replays `trace` through every policy at `capacity` slots: (policy name, stats), in
/// [`every_policy`]'s order.
pub fn replay_every_policy(trace: &[Request], capacity: u32) -> Vec<(&'static str, ReplayStats)> {
    every_policy(capacity)
        .into_iter()
        .map(|mut policy| {
            let stats = replay(policy.as_mut(), trace);
            (policy.name(), stats)
        })
        .collect()
}

/// Distinct blocks the trace touches (the base of cache sizes given in percent).
pub fn distinct_blocks(trace: &[Request]) -> u64 {
    let mut seen = HashSet::new();
    for request in trace {
        seen.extend(request.blocks());
    }
    seen.len() as u64
}
