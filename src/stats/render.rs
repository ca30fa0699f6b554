//! The node's metrics as Prometheus text (exposition format 0.0.4): one `# HELP` and one
//! `# TYPE` line per family, then all of its samples together; label values escaped.

use std::fmt::{Display, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BUCKET_LABELS, HistogramSnapshot, IoSnapshot, StatsRegistry};
use crate::cache::Cache;
use crate::meta::{MetaState, MetaStore, VolumeHandle};
use crate::types::BLOCK_SIZE;

mod controllers;
mod drives;
mod ssd;
pub use controllers::{ControllerGauges, render_controller_gauges};

/// Escapes a label value: backslash, double quote and newline, as the text format asks.
pub fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Appends everything `/metrics` shows: media, cache and journal counters, pool capacity,
/// per-volume and per-controller I/O counters and latency histograms, and the drives'
/// states and the heal's progress.
pub fn render_node_metrics(
    out: &mut String,
    meta: &MetaStore,
    cache: &Cache,
    stats: &StatsRegistry,
) {
    let mut text = Exposition { out };
    let hits = load(&cache.counters.read_hits);
    let misses = load(&cache.counters.read_misses);
    for single in media_and_map_figures(meta)
        .into_iter()
        .chain(cache_and_journal_figures(cache, meta, hits, misses))
    {
        text.family(single.name, single.help, single.kind);
        text.sample(single.name, "", single.value);
    }
    text.family(
        "troika_cache_hit_ratio",
        "Share of blocks read that were found in the DRAM cache since start (0 before any read).",
        "gauge",
    );
    text.sample("troika_cache_hit_ratio", "", hit_ratio(hits, misses));

    let (segments_free, pools, volumes) = {
        let state = meta.state();
        ssd::render_read_sources_and_ssd(text.out, cache, &state, stats.controllers.len());
        let volumes = volume_rows(&state, stats);
        (state.alloc.free_segments(), pool_rows(&state), volumes)
    };
    text.family(
        "troika_segments_free",
        "Free segments on the array.",
        "gauge",
    );
    text.sample("troika_segments_free", "", segments_free);
    pool_families(&mut text, &pools);

    io_families(&mut text, "troika_volume", "volume", &volumes);
    let controllers: Vec<(String, IoSnapshot)> = stats
        .controllers
        .iter()
        .map(|(id, controller)| (format!("controller=\"{id}\""), controller.snapshot()))
        .collect();
    io_families(&mut text, "troika_controller", "controller", &controllers);
    drives::render_drive_metrics(text.out, meta);
}

fn load(atomic: &AtomicU64) -> u64 {
    atomic.load(Ordering::Relaxed)
}

/// A family with one unlabelled sample.
struct Single {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: u64,
}

const fn counter(name: &'static str, help: &'static str, value: u64) -> Single {
    Single {
        name,
        help,
        kind: "counter",
        value,
    }
}

const fn gauge(name: &'static str, help: &'static str, value: u64) -> Single {
    Single {
        name,
        help,
        kind: "gauge",
        value,
    }
}

/// The media counters and the redirect-on-write maps' size, in `/metrics` order.
fn media_and_map_figures(meta: &MetaStore) -> [Single; 9] {
    let maps = meta.state().maps.stats();
    let counters = &meta.counters;
    [
        counter(
            "troika_checksum_repairs_total",
            "Blocks that failed their checksum and were rebuilt from parity.",
            load(&counters.checksum_repairs),
        ),
        counter(
            "troika_unrecoverable_reads_total",
            "Blocks that failed their checksum and could not be rebuilt.",
            load(&counters.unrecoverable_reads),
        ),
        counter(
            "troika_checkpoints_total",
            "Metadata checkpoints written.",
            load(&counters.checkpoints),
        ),
        counter(
            "troika_media_blocks_written_total",
            "User blocks written to the NL-SAS array (destage and cleaning).",
            load(&counters.media_blocks_written),
        ),
        counter(
            "troika_media_rows_written_total",
            "Whole rows (stripes with P and Q) written to the NL-SAS array.",
            load(&counters.media_rows_written),
        ),
        gauge(
            "troika_map_nodes",
            "Nodes of the redirect-on-write maps (shared between a volume and its snapshots).",
            maps.nodes,
        ),
        gauge(
            "troika_map_bytes",
            "Memory the redirect-on-write maps hold.",
            maps.bytes,
        ),
        gauge(
            "troika_map_shared_blocks",
            "Physical blocks referred to from more than one map leaf.",
            maps.shared_blocks,
        ),
        gauge(
            "troika_reclaim_pending_nodes",
            "Map nodes of deleted snapshots and replaced contents not reclaimed yet.",
            maps.pending_nodes,
        ),
    ]
}

/// The cache's counters and gauges and the journal's use, in `/metrics` order.
fn cache_and_journal_figures(
    cache: &Cache,
    meta: &MetaStore,
    hits: u64,
    misses: u64,
) -> [Single; 12] {
    let counters = &cache.counters;
    let destaged = load(&counters.blocks_destaged);
    [
        counter(
            "troika_host_blocks_written_total",
            "4 KiB blocks written by hosts into the cache.",
            load(&counters.blocks_written),
        ),
        counter(
            "troika_cache_read_hits_total",
            "Blocks read from the DRAM cache.",
            hits,
        ),
        counter(
            "troika_cache_read_misses_total",
            "Blocks read from the array.",
            misses,
        ),
        counter(
            "troika_cache_destaged_blocks_total",
            "Dirty blocks destaged.",
            destaged,
        ),
        counter(
            "troika_destage_bytes_total",
            "Bytes destaged from the cache to the array.",
            destaged.saturating_mul(BLOCK_SIZE as u64),
        ),
        counter(
            "troika_cache_vaulted_blocks_total",
            "Dirty blocks copied to the SSD vault by flushes.",
            load(&counters.blocks_vaulted),
        ),
        counter(
            "troika_cleaner_relocated_blocks_total",
            "Live blocks moved by segment cleaning.",
            load(&counters.blocks_relocated),
        ),
        counter(
            "troika_flushes_total",
            "Flush requests served.",
            load(&counters.flushes),
        ),
        counter(
            "troika_console_lost_messages_total",
            "Operator messages that could not be written to stderr (closed pipe, full disk).",
            crate::console::lost_messages(),
        ),
        gauge(
            "troika_cache_dirty_bytes",
            "Bytes written to cache and not yet destaged.",
            cache.dirty_bytes(),
        ),
        gauge(
            "troika_cache_capacity_bytes",
            "DRAM cache size.",
            cache.capacity_bytes(),
        ),
        gauge(
            "troika_journal_used_bytes",
            "Journal bytes still needed by recovery.",
            meta.journal().used(),
        ),
    ]
}

/// Each pool's capacity and use, labelled with its name and id.
fn pool_rows(state: &MetaState) -> Vec<PoolRow> {
    state
        .catalog
        .pools
        .values()
        .map(|record| {
            let usage = state.pools.get(&record.id);
            let physical = usage.map_or(record.physical_capacity, |usage| {
                usage.capacity_blocks.load(Ordering::Acquire) * BLOCK_SIZE as u64
            });
            PoolRow {
                labels: format!(
                    "pool=\"{}\",id=\"{}\"",
                    escape_label_value(&record.name),
                    record.id
                ),
                physical,
                used: usage.map_or(0, |usage| usage.used_bytes()),
                virtual_capacity: record.virtual_capacity,
            }
        })
        .collect()
}

/// Each live volume's labels and I/O figures.
fn volume_rows(state: &MetaState, stats: &StatsRegistry) -> Vec<(String, IoSnapshot)> {
    let live: Vec<(&str, &Arc<VolumeHandle>)> = state
        .catalog
        .volumes
        .values()
        .filter_map(|record| Some((record.name.as_str(), state.volumes.get(&record.id)?)))
        .collect();
    let handles: Vec<&Arc<VolumeHandle>> = live.iter().map(|(_, handle)| *handle).collect();
    live.iter()
        .map(|(name, handle)| volume_labels(name, handle.id.0))
        .zip(stats.volume_snapshots(&handles))
        .collect()
}

/// The labels that name a volume's series.
fn volume_labels(name: &str, id: u32) -> String {
    format!("volume=\"{}\",id=\"{id}\"", escape_label_value(name))
}

fn hit_ratio(hits: u64, misses: u64) -> f64 {
    let total = hits.saturating_add(misses);
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

struct PoolRow {
    labels: String,
    physical: u64,
    used: u64,
    virtual_capacity: u64,
}

type PoolField = (&'static str, &'static str, fn(&PoolRow) -> u64);

const POOL_GAUGES: [PoolField; 4] = [
    (
        "troika_pool_physical_capacity_bytes",
        "Physical capacity of the pool.",
        |pool| pool.physical,
    ),
    (
        "troika_pool_used_bytes",
        "Physical bytes used in the pool.",
        |pool| pool.used,
    ),
    (
        "troika_pool_free_bytes",
        "Physical bytes still free in the pool.",
        |pool| pool.physical.saturating_sub(pool.used),
    ),
    (
        "troika_pool_virtual_capacity_bytes",
        "Virtual capacity of the pool (the most its volumes' sizes may add up to).",
        |pool| pool.virtual_capacity,
    ),
];

/// The pool gauge families, each with a sample per pool.
fn pool_families(text: &mut Exposition<'_>, pools: &[PoolRow]) {
    for (name, help, value) in POOL_GAUGES {
        text.family(name, help, "gauge");
        for pool in pools {
            text.sample(name, &pool.labels, value(pool));
        }
    }
}

type CounterField = (&'static str, &'static str, fn(&IoSnapshot) -> u64);
type HistogramField = (
    &'static str,
    &'static str,
    fn(&IoSnapshot) -> &HistogramSnapshot,
);

const IO_COUNTERS: [CounterField; 8] = [
    ("read_ops_total", "Read requests completed", |s| s.read_ops),
    ("write_ops_total", "Write requests completed", |s| {
        s.write_ops
    }),
    ("flush_ops_total", "Flush requests completed", |s| {
        s.flush_ops
    }),
    ("trim_ops_total", "Trim (unmap) requests completed", |s| {
        s.trim_ops
    }),
    (
        "write_zeroes_ops_total",
        "Write-zeroes requests completed",
        |s| s.write_zeroes_ops,
    ),
    ("read_bytes_total", "Bytes read by hosts", |s| s.read_bytes),
    ("write_bytes_total", "Bytes written by hosts", |s| {
        s.write_bytes
    }),
    ("errors_total", "Requests that failed", |s| s.errors),
];

const IO_HISTOGRAMS: [HistogramField; 3] = [
    ("read_latency_seconds", "Latency of completed reads", |s| {
        &s.read_latency
    }),
    (
        "write_latency_seconds",
        "Latency of completed writes (FUA writes include their flush)",
        |s| &s.write_latency,
    ),
    (
        "flush_latency_seconds",
        "Latency of completed flushes",
        |s| &s.flush_latency,
    ),
];

/// The I/O counter and histogram families of one scope (`volume` or `controller`), each
/// family with a sample per row.
fn io_families(
    text: &mut Exposition<'_>,
    prefix: &str,
    scope: &str,
    rows: &[(String, IoSnapshot)],
) {
    for (suffix, help, field) in IO_COUNTERS {
        let name = format!("{prefix}_{suffix}");
        text.family(&name, &format!("{help}, per {scope}."), "counter");
        for (labels, snapshot) in rows {
            text.sample(&name, labels, field(snapshot));
        }
    }
    for (suffix, help, field) in IO_HISTOGRAMS {
        let name = format!("{prefix}_{suffix}");
        text.family(&name, &format!("{help}, per {scope}."), "histogram");
        for (labels, snapshot) in rows {
            text.histogram(&name, labels, field(snapshot));
        }
    }
}

/// Writes families and samples into the text.
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; `labels` is already escaped (`a="x",b="y"`) or empty.
    fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, labels: &str, histogram: &HistogramSnapshot) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (le, count) in BUCKET_LABELS.iter().zip(histogram.cumulative()) {
            let _ = writeln!(
                self.out,
                "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {count}"
            );
        }
        let seconds = histogram.sum_nanos as f64 / 1e9;
        self.sample(&format!("{name}_sum"), labels, seconds);
        self.sample(&format!("{name}_count"), labels, histogram.count());
    }
}

#[cfg(test)]
mod tests;
