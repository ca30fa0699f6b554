use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;
use crate::controller::{ControllerId, Controllers};
use crate::meta::Provisioning;
use crate::stats::{BUCKETS, IoStats};

/// One parsed sample line, checked strictly.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses `name{a="x",b="y"} value` per the text format, rejecting anything else.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..name_end];
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        return Err(format!("bad metric name in {line:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            let start = chars.peek().map(|&(at, _)| at).ok_or("open labels")?;
            if after[start..].starts_with('}') {
                rest = &after[start + 1..];
                break;
            }
            let eq = after[start..].find('=').ok_or("label without =")? + start;
            let key = after[start..eq].to_string();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            while chars.next_if(|&(at, _)| at <= eq).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other} in {line:?}")),
                    },
                    '\n' => return Err("raw newline in label value".into()),
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.peek() {
                Some((_, ',')) => {
                    chars.next();
                }
                Some((_, '}')) => {}
                _ => return Err(format!("bad label separator in {line:?}")),
            }
        }
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before value in {line:?}"))?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        text => text
            .parse()
            .map_err(|_| format!("bad value {text:?} in {line:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Checks the structure a Prometheus parser relies on: every family has exactly one HELP
/// and one TYPE before its samples; every sample belongs to the family declared last (so
/// a family's samples are contiguous); histogram buckets are cumulative, end with `+Inf`
/// and that bucket equals `_count`.
fn validate_exposition(text: &str) -> Result<(), String> {
    let mut helps = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    // Per histogram series (name + labels without le): buckets seen, and the count.
    let mut buckets: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("").to_string();
            if !helps.insert(name.clone()) {
                return Err(format!("second HELP for {name}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or("").to_string();
            let kind = words.next().unwrap_or("").to_string();
            if !["counter", "gauge", "histogram"].contains(&kind.as_str()) {
                return Err(format!("unknown type {kind:?} for {name}"));
            }
            if !helps.contains(&name) {
                return Err(format!("TYPE before HELP for {name}"));
            }
            if types.insert(name.clone(), kind).is_some() {
                return Err(format!("second TYPE for {name}"));
            }
            current = Some(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line {line:?}"));
        }
        let sample = parse_sample(line)?;
        let family = current
            .as_deref()
            .ok_or_else(|| format!("sample before any TYPE: {line:?}"))?;
        let kind = types[family].as_str();
        if kind == "histogram" {
            let series = |labels: &[(String, String)]| {
                let mut key = family.to_string();
                for (name, value) in labels.iter().filter(|(name, _)| name != "le") {
                    key.push_str(&format!("|{name}={value}"));
                }
                key
            };
            if sample.name == format!("{family}_bucket") {
                let le = sample
                    .labels
                    .iter()
                    .find(|(name, _)| name == "le")
                    .ok_or_else(|| format!("bucket without le: {line:?}"))?;
                buckets
                    .entry(series(&sample.labels))
                    .or_default()
                    .push((le.1.clone(), sample.value));
            } else if sample.name == format!("{family}_count") {
                counts.insert(series(&sample.labels), sample.value);
            } else if sample.name != format!("{family}_sum") {
                return Err(format!("{} is not part of histogram {family}", sample.name));
            }
        } else if sample.name != family {
            return Err(format!("{} sampled under family {family}", sample.name));
        }
    }
    if helps.len() != types.len() {
        return Err("a HELP without a TYPE".into());
    }
    for (series, series_buckets) in &buckets {
        let mut previous = (f64::NEG_INFINITY, 0.0);
        for (le, count) in series_buckets {
            let bound: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("bad le {le:?}"))?
            };
            if bound <= previous.0 || *count < previous.1 {
                return Err(format!("{series}: buckets not increasing at le={le}"));
            }
            previous = (bound, *count);
        }
        if series_buckets.last().map(|(le, _)| le.as_str()) != Some("+Inf") {
            return Err(format!("{series}: no +Inf bucket"));
        }
        if counts.get(series) != Some(&previous.1) {
            return Err(format!("{series}: +Inf bucket differs from _count"));
        }
    }
    if counts.len() != buckets.len() {
        return Err("a histogram _count without buckets".into());
    }
    Ok(())
}

fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label_value("plain"), "plain");
    assert_eq!(
        escape_label_value("a\\b\"c\nd"),
        "a\\\\b\\\"c\\nd".to_string()
    );
}

#[test]
fn io_families_parse_with_hostile_names() {
    let stats = IoStats::default();
    stats.record_read(4096, Duration::from_micros(40));
    stats.record_read(4096, Duration::from_millis(3));
    stats.record_write(65536, Duration::from_secs(10));
    stats.record_flush(Duration::from_micros(900));
    stats.record_error();
    let rows = vec![
        (volume_labels("v\"1\\\nx", 7), stats.snapshot()),
        (volume_labels("plain", 8), IoSnapshot::default()),
    ];
    let mut out = String::new();
    io_families(
        &mut Exposition { out: &mut out },
        "troika_volume",
        "volume",
        &rows,
    );
    validate_exposition(&out).unwrap_or_else(|err| panic!("{err}\n{out}"));
    let labels = r#"volume="v\"1\\\nx",id="7""#;
    assert_eq!(
        value_of(&out, &format!("troika_volume_read_ops_total{{{labels}}}")),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &out,
            &format!("troika_volume_read_latency_seconds_bucket{{{labels},le=\"0.00005\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &out,
            &format!("troika_volume_write_latency_seconds_bucket{{{labels},le=\"5\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        value_of(
            &out,
            &format!("troika_volume_write_latency_seconds_count{{{labels}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &out,
            &format!("troika_volume_write_latency_seconds_sum{{{labels}}}")
        ),
        Some(10.0)
    );
    assert_eq!(
        out.matches("troika_volume_read_latency_seconds_bucket{volume=\"plain\"")
            .count(),
        BUCKETS
    );
}

#[test]
fn the_validator_rejects_broken_text() {
    for broken in [
        "x 1\n",
        "# HELP a h\n# TYPE a counter\nb 1\n",
        "# HELP a h\n# TYPE a counter\n# HELP a h\n# TYPE a counter\na 1\n",
        "# HELP a h\n# TYPE a counter\na{l=\"unterminated} 1\n",
        "# HELP a h\n# TYPE a counter\na{l=\"x\"} one\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
    ] {
        assert!(validate_exposition(broken).is_err(), "{broken}");
    }
}

/// A small real node: metadata store, cache and controllers over sparse files.
struct SmallNode {
    _dir: tempfile::TempDir,
    meta: Arc<MetaStore>,
    cache: Arc<Cache>,
    controllers: Arc<Controllers>,
}

impl SmallNode {
    fn start() -> SmallNode {
        let dir = tempfile::tempdir().unwrap();
        let (meta, recovered) = crate::testing::open_small_store(dir.path());
        let meta = Arc::new(meta);
        let routing = Arc::new(crate::controller::routing::Routing::new(3));
        let cache = Cache::start(meta.clone(), 3, 8 << 20, recovered, routing.clone());
        let controllers = Controllers::new(cache.clone(), routing, 3);
        SmallNode {
            _dir: dir,
            meta,
            cache,
            controllers,
        }
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        render_node_metrics(&mut out, &self.meta, &self.cache, self.controllers.stats());
        validate_exposition(&out).unwrap_or_else(|err| panic!("{err}\n{out}"));
        out
    }
}

impl Drop for SmallNode {
    fn drop(&mut self) {
        let _ = self.cache.shutdown();
    }
}

#[test]
fn node_metrics_count_requests_per_volume_and_controller() {
    let node = SmallNode::start();
    let pool = node.meta.create_pool("pool-1", 64 << 20, 1 << 30).unwrap();
    let volume = node
        .meta
        .create_volume("vol.a", pool.id, 16 << 20, Provisioning::Thin)
        .unwrap();
    let target = node
        .controllers
        .open_export_on("vol.a", ControllerId::new(0, 3).unwrap())
        .unwrap();
    let mut buf = vec![0u8; 8192];
    target.write(0, &[7u8; 8192], false).unwrap();
    target.write(8192, &[7u8; 4096], true).unwrap();
    target.read(0, &mut buf).unwrap();
    target.flush().unwrap();
    target.trim(0, 4096, false).unwrap();
    assert!(target.read(16 << 20, &mut buf).is_err());

    let text = node.metrics();
    let labels = format!("volume=\"vol.a\",id=\"{}\"", volume.id);
    let of = |series: String| value_of(&text, &series).unwrap_or_else(|| panic!("{series}"));
    assert_eq!(
        of(format!("troika_volume_write_ops_total{{{labels}}}")),
        2.0
    );
    assert_eq!(
        of(format!("troika_volume_write_bytes_total{{{labels}}}")),
        12288.0
    );
    assert_eq!(of(format!("troika_volume_read_ops_total{{{labels}}}")), 1.0);
    assert_eq!(
        of(format!("troika_volume_read_bytes_total{{{labels}}}")),
        8192.0
    );
    assert_eq!(
        of(format!("troika_volume_flush_ops_total{{{labels}}}")),
        1.0
    );
    assert_eq!(of(format!("troika_volume_trim_ops_total{{{labels}}}")), 1.0);
    assert_eq!(of(format!("troika_volume_errors_total{{{labels}}}")), 1.0);
    assert_eq!(
        of(format!(
            "troika_volume_write_latency_seconds_bucket{{{labels},le=\"+Inf\"}}"
        )),
        2.0
    );
    assert_eq!(
        of("troika_controller_write_ops_total{controller=\"1\"}".into()),
        2.0
    );
    assert_eq!(
        of("troika_controller_errors_total{controller=\"1\"}".into()),
        1.0
    );
    assert_eq!(
        of("troika_controller_write_ops_total{controller=\"3\"}".into()),
        0.0
    );
    let pool_labels = format!("pool=\"pool-1\",id=\"{}\"", pool.id);
    assert_eq!(
        of(format!(
            "troika_pool_physical_capacity_bytes{{{pool_labels}}}"
        )),
        (64 << 20) as f64
    );
    assert_eq!(
        of(format!(
            "troika_pool_virtual_capacity_bytes{{{pool_labels}}}"
        )),
        (1u64 << 30) as f64
    );
    let used = of(format!("troika_pool_used_bytes{{{pool_labels}}}"));
    let free = of(format!("troika_pool_free_bytes{{{pool_labels}}}"));
    assert_eq!(used + free, (64 << 20) as f64);
    let ratio = of("troika_cache_hit_ratio".into());
    assert!((0.0..=1.0).contains(&ratio));
    for unlabelled in [
        "troika_checksum_repairs_total",
        "troika_host_blocks_written_total",
        "troika_cache_dirty_bytes",
        "troika_destage_bytes_total",
        "troika_segments_free",
        "troika_journal_used_bytes",
    ] {
        assert!(value_of(&text, unlabelled).is_some(), "{unlabelled}");
    }

    // A deleted volume leaves the output; one recreated under its name starts at zero.
    drop(target);
    node.meta.delete_volume(volume.id).unwrap();
    assert!(!node.metrics().contains("vol.a"));
    assert_eq!(node.controllers.stats().tracked_volumes(), 0);
    let again = node
        .meta
        .create_volume("vol.a", pool.id, 16 << 20, Provisioning::Thin)
        .unwrap();
    let target = node
        .controllers
        .open_export_on("vol.a", ControllerId::new(0, 3).unwrap())
        .unwrap();
    target.write(0, &[1u8; 4096], false).unwrap();
    let text = node.metrics();
    let labels = format!("volume=\"vol.a\",id=\"{}\"", again.id);
    assert_eq!(
        value_of(&text, &format!("troika_volume_write_ops_total{{{labels}}}")),
        Some(1.0)
    );
    assert_eq!(text.matches("troika_volume_write_ops_total{").count(), 1);
    assert_eq!(
        value_of(&text, "troika_controller_write_ops_total{controller=\"1\"}"),
        Some(3.0)
    );
}

#[test]
fn exports_open_on_the_controller_asked_for() {
    let node = SmallNode::start();
    let pool = node.meta.create_pool("p", 64 << 20, 1 << 30).unwrap();
    node.meta
        .create_volume("v", pool.id, 1 << 20, Provisioning::Thin)
        .unwrap();
    let second = ControllerId::new(1, 3).unwrap();
    let target = node.controllers.open_export_on("v", second).unwrap();
    target.write(0, &[1u8; 4096], false).unwrap();
    let text = node.metrics();
    assert_eq!(
        value_of(&text, "troika_controller_write_ops_total{controller=\"2\"}"),
        Some(1.0)
    );
    assert_eq!(
        value_of(&text, "troika_controller_write_ops_total{controller=\"1\"}"),
        Some(0.0)
    );
}

#[test]
fn top_reads_what_the_node_renders() {
    let stats = IoStats::default();
    stats.record_read(4096, Duration::from_micros(100));
    stats.record_write(8192, Duration::from_micros(300));
    let rows = vec![(volume_labels("we\"ird\\", 4), stats.snapshot())];
    let mut out = String::new();
    io_families(
        &mut Exposition { out: &mut out },
        "troika_volume",
        "volume",
        &rows,
    );
    let sample = crate::cli::top::NodeSample::from_text(&out);
    let key = crate::cli::top::VolumeKey {
        name: "we\"ird\\".into(),
        id: "4".into(),
    };
    let counters = sample.volumes[&key];
    assert_eq!((counters.read_ops, counters.read_bytes), (1.0, 4096.0));
    assert_eq!((counters.write_ops, counters.write_bytes), (1.0, 8192.0));
    assert!((counters.write_latency_sum - 0.0003).abs() < 1e-12);
    assert_eq!(counters.write_latency_count, 1.0);
}
