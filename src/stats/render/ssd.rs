//! The read-source and SSD-cache families of `/metrics`: where each controller's and each
//! volume's block reads were served from (DRAM cache, SSD read cache, NL-SAS drives), as
//! counters and as shares since start, and the SSD tier's size, index, traffic and state
//! per controller partition.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::escape_label_value;
use crate::cache::Cache;
use crate::meta::MetaState;
use crate::ssd::SsdCacheStats;
use crate::types::{ControllerId, ReadSources};

const SOURCES: [&str; 3] = ["dram", "ssd", "drives"];

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counts(sources: &ReadSources) -> [u64; 3] {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    [
        load(&sources.dram_hits),
        load(&sources.ssd_hits),
        load(&sources.misses),
    ]
}

/// Appends one counter family and one share family over `rows` (labels, counts).
fn read_source_families(out: &mut String, prefix: &str, what: &str, rows: &[(String, [u64; 3])]) {
    let total_name = format!("{prefix}_read_blocks_total");
    family(
        out,
        &total_name,
        &format!(
            "Blocks read by each {what}, by where they were found: dram (the DRAM cache), ssd (the SSD read cache) or drives (NL-SAS)."
        ),
        "counter",
    );
    for (labels, values) in rows {
        for (source, value) in SOURCES.iter().zip(values) {
            let _ = writeln!(out, "{total_name}{{{labels},source=\"{source}\"}} {value}");
        }
    }
    let ratio_name = format!("{prefix}_read_source_ratio");
    family(
        out,
        &ratio_name,
        &format!(
            "Share of each {what}'s blocks read since start found in dram, ssd or on the drives (0 before any read)."
        ),
        "gauge",
    );
    for (labels, values) in rows {
        let total: u64 = values.iter().sum();
        for (source, value) in SOURCES.iter().zip(values) {
            let share = if total == 0 {
                0.0
            } else {
                *value as f64 / total as f64
            };
            let _ = writeln!(out, "{ratio_name}{{{labels},source=\"{source}\"}} {share}");
        }
    }
}

/// Appends the read-source families for every controller and live volume, and the SSD
/// tier's families when the node has one.
pub fn render_read_sources_and_ssd(
    out: &mut String,
    cache: &Cache,
    state: &MetaState,
    controllers: usize,
) {
    let controller_rows: Vec<(String, [u64; 3])> = ControllerId::all(controllers)
        .map(|id| {
            (
                format!("controller=\"{id}\""),
                counts(&cache.counters.reads_by_controller[id.index()]),
            )
        })
        .collect();
    read_source_families(out, "troika_controller", "controller", &controller_rows);
    let volume_rows: Vec<(String, [u64; 3])> = state
        .catalog
        .volumes
        .values()
        .filter_map(|record| {
            let handle = state.volumes.get(&record.id)?;
            Some((
                format!(
                    "volume=\"{}\",id=\"{}\"",
                    escape_label_value(&record.name),
                    record.id
                ),
                counts(&handle.reads),
            ))
        })
        .collect();
    read_source_families(out, "troika_volume", "volume", &volume_rows);
    if let Some(ssd) = cache.ssd() {
        let (total, partitions) = ssd.stats();
        render_ssd_cache(out, cache, &total, &partitions);
    }
}

type Field = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SsdCacheStats) -> u64,
);

const PARTITION_FIELDS: [Field; 12] = [
    (
        "troika_ssd_cache_capacity_bytes",
        "Bytes of SSD each controller's partition of the read cache holds at most.",
        "gauge",
        |s| s.capacity_bytes,
    ),
    (
        "troika_ssd_cache_cached_bytes",
        "Bytes cached in each controller's partition of the SSD read cache.",
        "gauge",
        |s| s.cached_bytes,
    ),
    (
        "troika_ssd_cache_index_bytes",
        "DRAM the index of each controller's SSD cache partition holds.",
        "gauge",
        |s| s.index_bytes,
    ),
    (
        "troika_ssd_cache_hits_total",
        "Block reads answered by the SSD read cache, verified.",
        "counter",
        |s| s.hits,
    ),
    (
        "troika_ssd_cache_misses_total",
        "Block reads the SSD read cache could not answer.",
        "counter",
        |s| s.misses,
    ),
    (
        "troika_ssd_cache_mismatches_total",
        "SSD cache copies refused by verification (identity or checksum): counted as misses, never served.",
        "counter",
        |s| s.mismatches,
    ),
    (
        "troika_ssd_cache_admissions_total",
        "Blocks written into the SSD read cache.",
        "counter",
        |s| s.admissions,
    ),
    (
        "troika_ssd_cache_evictions_total",
        "Blocks evicted from the SSD read cache to make room.",
        "counter",
        |s| s.evictions,
    ),
    (
        "troika_ssd_cache_throttled_total",
        "Blocks offered to the SSD read cache but dropped: over the write budget or staging full.",
        "counter",
        |s| s.throttled,
    ),
    (
        "troika_ssd_cache_written_bytes_total",
        "Bytes written to the SSD read cache (data and its index).",
        "counter",
        |s| s.bytes_written,
    ),
    (
        "troika_ssd_cache_cached_blocks",
        "Blocks cached in each controller's partition of the SSD read cache.",
        "gauge",
        |s| s.cached_blocks,
    ),
    (
        "troika_ssd_cache_failed",
        "1 once an I/O error on the cache SSD failed the tier (cache lost, data safe), else 0.",
        "gauge",
        |s| u64::from(s.failed),
    ),
];

fn render_ssd_cache(
    out: &mut String,
    cache: &Cache,
    total: &SsdCacheStats,
    partitions: &[SsdCacheStats],
) {
    for (name, help, kind, value) in PARTITION_FIELDS {
        family(out, name, help, kind);
        for (index, partition) in partitions.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{controller=\"{}\"}} {}",
                index + 1,
                value(partition)
            );
        }
    }
    family(
        out,
        "troika_ssd_cache_index_bytes_per_block",
        "DRAM index bytes of the SSD read cache divided by the blocks it caches (0 when empty).",
        "gauge",
    );
    let per_block = if total.cached_blocks == 0 {
        0.0
    } else {
        total.index_bytes as f64 / total.cached_blocks as f64
    };
    let _ = writeln!(out, "troika_ssd_cache_index_bytes_per_block {per_block}");
    family(
        out,
        "troika_ssd_cache_bypassed_total",
        "Blocks kept out of the SSD read cache because a long sequential read brought them in.",
        "counter",
    );
    let _ = writeln!(
        out,
        "troika_ssd_cache_bypassed_total {}",
        cache.counters.ssd_bypassed.load(Ordering::Relaxed)
    );
}
