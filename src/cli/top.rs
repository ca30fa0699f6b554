//! `troika top`: a live per-volume view of the node's `/metrics`.
//!
//! Each interval the caller's closure fetches the Prometheus text; the `troika_volume_*`
//! counters and latency sums of two consecutive samples give each volume's read and write
//! IOPS, MB/s and average latency (Δsum / Δcount) over the interval, and the cache counters
//! give the hit ratio of the blocks read in it. The parser is tolerant: a line it does not
//! understand is skipped, never a panic, so a newer node with more metrics still works.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Moves the cursor home and clears the terminal.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Longest volume name shown before it is cut.
const NAME_WIDTH: usize = 24;

/// One sample line of the text format.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricLine {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl MetricLine {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses one line `name{label="value",...} value [timestamp]`; `None` for comments, blank
/// lines and anything malformed.
pub fn parse_line(line: &str) -> Option<MetricLine> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    if name_end == 0 {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([' ', ',']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=')?;
            let key = inner[..eq].trim();
            if key.is_empty() {
                return None;
            }
            let quoted = inner[eq + 1..].trim_start().strip_prefix('"')?;
            let (value, consumed) = unescape_label_value(quoted)?;
            labels.push((key.to_string(), value));
            inner = &quoted[consumed..];
        }
    }
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    if value.is_nan() {
        return None;
    }
    Some(MetricLine {
        name: line[..name_end].to_string(),
        labels,
        value,
    })
}

/// Reads a label value up to its closing quote; returns it and the bytes consumed
/// (including the quote).
fn unescape_label_value(quoted: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut escaped = false;
    for (at, c) in quoted.char_indices() {
        if escaped {
            value.push(if c == 'n' { '\n' } else { c });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some((value, at + 1));
        } else {
            value.push(c);
        }
    }
    None
}

/// Which volume a series belongs to: its name and id labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeKey {
    pub name: String,
    pub id: String,
}

/// A volume's cumulative counters as `/metrics` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VolumeCounters {
    pub read_ops: f64,
    pub write_ops: f64,
    pub read_bytes: f64,
    pub write_bytes: f64,
    pub read_latency_sum: f64,
    pub read_latency_count: f64,
    pub write_latency_sum: f64,
    pub write_latency_count: f64,
}

/// What `top` needs from one fetch of `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSample {
    pub volumes: BTreeMap<VolumeKey, VolumeCounters>,
    pub cache_read_hits: f64,
    pub cache_read_misses: f64,
    /// Blocks read over every controller, by where they were found: DRAM, SSD, drives.
    pub read_sources: [f64; 3],
    pub dirty_bytes: f64,
    /// Lines that fed one of the fields above (0: the text is not troika's metrics).
    pub recognized: usize,
}

impl NodeSample {
    pub fn from_text(text: &str) -> NodeSample {
        let mut sample = NodeSample::default();
        for line in text.lines().filter_map(parse_line) {
            if sample.take(&line) {
                sample.recognized += 1;
            }
        }
        sample
    }

    /// Stores `line` if it is one `top` uses; `true` when it was.
    fn take(&mut self, line: &MetricLine) -> bool {
        let node_field = match line.name.as_str() {
            "troika_cache_read_hits_total" => Some(&mut self.cache_read_hits),
            "troika_cache_read_misses_total" => Some(&mut self.cache_read_misses),
            "troika_cache_dirty_bytes" => Some(&mut self.dirty_bytes),
            _ => None,
        };
        if let Some(field) = node_field {
            *field = line.value;
            return true;
        }
        if line.name == "troika_controller_read_blocks_total" {
            let Some(at) = ["dram", "ssd", "drives"]
                .iter()
                .position(|source| line.label("source") == Some(*source))
            else {
                return false;
            };
            self.read_sources[at] += line.value;
            return true;
        }
        let Some(suffix) = line.name.strip_prefix("troika_volume_") else {
            return false;
        };
        let field: fn(&mut VolumeCounters) -> &mut f64 = match suffix {
            "read_ops_total" => |v| &mut v.read_ops,
            "write_ops_total" => |v| &mut v.write_ops,
            "read_bytes_total" => |v| &mut v.read_bytes,
            "write_bytes_total" => |v| &mut v.write_bytes,
            "read_latency_seconds_sum" => |v| &mut v.read_latency_sum,
            "read_latency_seconds_count" => |v| &mut v.read_latency_count,
            "write_latency_seconds_sum" => |v| &mut v.write_latency_sum,
            "write_latency_seconds_count" => |v| &mut v.write_latency_count,
            _ => return false,
        };
        let (Some(name), Some(id)) = (line.label("volume"), line.label("id")) else {
            return false;
        };
        let key = VolumeKey {
            name: name.to_string(),
            id: id.to_string(),
        };
        *field(self.volumes.entry(key).or_default()) = line.value;
        true
    }
}

/// One volume's activity between two samples.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeRates {
    pub name: String,
    pub id: String,
    pub read_iops: f64,
    pub write_iops: f64,
    pub read_mb_per_s: f64,
    pub write_mb_per_s: f64,
    /// Average over the interval, in seconds; `None` without completed requests.
    pub read_latency: Option<f64>,
    pub write_latency: Option<f64>,
}

impl VolumeRates {
    pub fn total_iops(&self) -> f64 {
        self.read_iops + self.write_iops
    }
}

/// Everything one screen shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Busiest first.
    pub volumes: Vec<VolumeRates>,
    /// Share of blocks read in the interval that hit the cache; `None` without reads.
    pub cache_hit_ratio: Option<f64>,
    /// Shares of blocks read in the interval found in DRAM and in the SSD read cache;
    /// `None` without reads.
    pub dram_ssd_ratios: Option<(f64, f64)>,
    pub dirty_bytes: f64,
    pub seconds: f64,
}

impl Frame {
    /// The rates between `previous` and `current`, taken `seconds` apart. A volume new in
    /// `current` counts from zero; a counter that went down (node restarted) counts as 0.
    pub fn between(previous: &NodeSample, current: &NodeSample, seconds: f64) -> Frame {
        let seconds = if seconds > 0.0 { seconds } else { f64::EPSILON };
        let delta = |now: f64, before: f64| (now - before).max(0.0);
        let mut volumes: Vec<VolumeRates> = current
            .volumes
            .iter()
            .map(|(key, now)| {
                let before = previous.volumes.get(key).copied().unwrap_or_default();
                let average = |sum_now, sum_before, count_now, count_before| {
                    let count = delta(count_now, count_before);
                    (count > 0.0).then(|| delta(sum_now, sum_before) / count)
                };
                VolumeRates {
                    name: key.name.clone(),
                    id: key.id.clone(),
                    read_iops: delta(now.read_ops, before.read_ops) / seconds,
                    write_iops: delta(now.write_ops, before.write_ops) / seconds,
                    read_mb_per_s: delta(now.read_bytes, before.read_bytes) / 1e6 / seconds,
                    write_mb_per_s: delta(now.write_bytes, before.write_bytes) / 1e6 / seconds,
                    read_latency: average(
                        now.read_latency_sum,
                        before.read_latency_sum,
                        now.read_latency_count,
                        before.read_latency_count,
                    ),
                    write_latency: average(
                        now.write_latency_sum,
                        before.write_latency_sum,
                        now.write_latency_count,
                        before.write_latency_count,
                    ),
                }
            })
            .collect();
        volumes.sort_by(|a, b| {
            b.total_iops()
                .total_cmp(&a.total_iops())
                .then_with(|| a.name.cmp(&b.name))
        });
        let hits = delta(current.cache_read_hits, previous.cache_read_hits);
        let misses = delta(current.cache_read_misses, previous.cache_read_misses);
        let sources: Vec<f64> = (0..3)
            .map(|at| delta(current.read_sources[at], previous.read_sources[at]))
            .collect();
        let reads: f64 = sources.iter().sum();
        Frame {
            volumes,
            cache_hit_ratio: (hits + misses > 0.0).then(|| hits / (hits + misses)),
            dram_ssd_ratios: (reads > 0.0).then(|| (sources[0] / reads, sources[1] / reads)),
            dirty_bytes: current.dirty_bytes,
            seconds,
        }
    }

    /// Writes the frame as a table.
    pub fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let hit = self
            .cache_hit_ratio
            .map_or_else(|| "-".to_string(), |ratio| format!("{:.1}%", ratio * 100.0));
        let tiers = self.dram_ssd_ratios.map_or_else(
            || "-".to_string(),
            |(dram, ssd)| format!("DRAM {:.1}% SSD {:.1}%", dram * 100.0, ssd * 100.0),
        );
        writeln!(
            out,
            "troika top   interval {:.1} s   volumes {}   cache hit {hit}   reads from {tiers}   dirty {}",
            self.seconds,
            self.volumes.len(),
            human_bytes(self.dirty_bytes)
        )?;
        writeln!(
            out,
            "{:<NAME_WIDTH$} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "VOLUME", "ID", "R IOPS", "W IOPS", "R MB/s", "W MB/s", "R LAT ms", "W LAT ms"
        )?;
        let millis = |latency: Option<f64>| {
            latency.map_or_else(|| "-".to_string(), |s| format!("{:.3}", s * 1e3))
        };
        for volume in &self.volumes {
            writeln!(
                out,
                "{:<NAME_WIDTH$} {:>6} {:>10.1} {:>10.1} {:>9.2} {:>9.2} {:>9} {:>9}",
                printable_name(&volume.name),
                printable_name(&volume.id),
                volume.read_iops,
                volume.write_iops,
                volume.read_mb_per_s,
                volume.write_mb_per_s,
                millis(volume.read_latency),
                millis(volume.write_latency),
            )?;
        }
        Ok(())
    }
}

/// A name from the node, safe to print on a terminal (no control characters) and cut to
/// the column width.
fn printable_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(NAME_WIDTH)
        .collect()
}

fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Runs `troika top`: fetches the metrics text now and then every `interval`, printing a
/// frame per interval (`iterations` frames, or until an error when `None`), clearing the
/// screen before each frame when `clear_screen`. A closed pipe ends it quietly with `Ok`.
pub fn run_top(
    fetch: &mut dyn FnMut() -> Result<String, String>,
    out: &mut dyn Write,
    interval: Duration,
    iterations: Option<u64>,
    clear_screen: bool,
) -> Result<(), String> {
    let sample = |fetch: &mut dyn FnMut() -> Result<String, String>| {
        let text = fetch()?;
        let taken = Instant::now();
        let sample = NodeSample::from_text(&text);
        if sample.recognized == 0 {
            return Err("the node's /metrics answer holds no troika metrics".to_string());
        }
        Ok::<_, String>((sample, taken))
    };
    let (mut previous, mut previous_at) = sample(fetch)?;
    let mut frames = 0u64;
    while iterations.is_none_or(|limit| frames < limit) {
        std::thread::sleep(interval);
        let (current, current_at) = sample(fetch)?;
        let seconds = current_at.duration_since(previous_at).as_secs_f64();
        let frame = Frame::between(&previous, &current, seconds);
        let written = (|| {
            if clear_screen {
                out.write_all(CLEAR_SCREEN.as_bytes())?;
            }
            frame.write_to(out)?;
            out.flush()
        })();
        match written {
            // The reader is gone (`troika top | head`): it has what it wanted.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            written => written.map_err(|err| format!("cannot write to the terminal: {err}"))?,
        }
        (previous, previous_at) = (current, current_at);
        frames += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FIXTURE: &str = r#"# HELP troika_cache_read_hits_total Blocks read from the DRAM cache.
# TYPE troika_cache_read_hits_total counter
troika_cache_read_hits_total 100
# HELP troika_cache_read_misses_total Blocks read from the array.
# TYPE troika_cache_read_misses_total counter
troika_cache_read_misses_total 100
# HELP troika_cache_dirty_bytes Bytes written to cache and not yet destaged.
# TYPE troika_cache_dirty_bytes gauge
troika_cache_dirty_bytes 1048576
# HELP troika_volume_read_ops_total Read requests completed, per volume.
# TYPE troika_volume_read_ops_total counter
troika_volume_read_ops_total{volume="a",id="1"} 1000
troika_volume_read_ops_total{volume="odd \"name\\\n",id="2"} 5
# HELP troika_volume_write_ops_total Write requests completed, per volume.
# TYPE troika_volume_write_ops_total counter
troika_volume_write_ops_total{volume="a",id="1"} 10
troika_volume_write_ops_total{volume="odd \"name\\\n",id="2"} 0
troika_volume_read_bytes_total{volume="a",id="1"} 4096000
troika_volume_write_bytes_total{volume="a",id="1"} 40960
troika_volume_read_latency_seconds_bucket{volume="a",id="1",le="+Inf"} 1000
troika_volume_read_latency_seconds_sum{volume="a",id="1"} 0.5
troika_volume_read_latency_seconds_count{volume="a",id="1"} 1000
troika_volume_write_latency_seconds_sum{volume="a",id="1"} 0.01
troika_volume_write_latency_seconds_count{volume="a",id="1"} 10
troika_controller_read_ops_total{controller="1"} 1005
# HELP troika_controller_read_blocks_total Blocks read by each controller, by where they were found.
# TYPE troika_controller_read_blocks_total counter
troika_controller_read_blocks_total{controller="1",source="dram"} 60
troika_controller_read_blocks_total{controller="1",source="ssd"} 30
troika_controller_read_blocks_total{controller="1",source="drives"} 10
troika_controller_read_blocks_total{controller="2",source="dram"} 40
troika_controller_read_blocks_total{controller="2",source="ssd"} 50
troika_controller_read_blocks_total{controller="2",source="drives"} 10
troika_controller_read_blocks_total{controller="2",source="tape"} 10
"#;

    fn key(name: &str, id: &str) -> VolumeKey {
        VolumeKey {
            name: name.into(),
            id: id.into(),
        }
    }

    #[test]
    fn parses_lines_with_labels_escapes_and_timestamps() {
        let line = parse_line(r#"m{a="x\"y",b="\\"} 2.5 1700000000"#).unwrap();
        assert_eq!(line.name, "m");
        assert_eq!(
            line.labels,
            vec![("a".into(), "x\"y".into()), ("b".into(), "\\".into())]
        );
        assert_eq!(line.value, 2.5);
        assert_eq!(parse_line("plain 7").unwrap().value, 7.0);
        assert_eq!(
            parse_line("m{le=\"+Inf\"} +Inf").unwrap().value,
            f64::INFINITY
        );
        for bad in [
            "",
            "# HELP m x",
            "{a=\"b\"} 1",
            "m{a=\"b} 1",
            "m{a} 1",
            "m",
            "m x",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_sample_holds_volumes_and_cache_counters() {
        let sample = NodeSample::from_text(FIXTURE);
        assert_eq!(sample.volumes.len(), 2);
        let a = sample.volumes[&key("a", "1")];
        assert_eq!(a.read_ops, 1000.0);
        assert_eq!(a.write_bytes, 40960.0);
        assert_eq!(a.read_latency_sum, 0.5);
        assert_eq!(a.write_latency_count, 10.0);
        assert_eq!(sample.volumes[&key("odd \"name\\\n", "2")].read_ops, 5.0);
        assert_eq!(sample.cache_read_hits, 100.0);
        assert_eq!(sample.dirty_bytes, 1048576.0);
        assert_eq!(
            sample.read_sources,
            [100.0, 80.0, 20.0],
            "summed over controllers"
        );
    }

    #[test]
    fn a_frame_shows_where_reads_were_found() {
        let before = NodeSample::default();
        let after = NodeSample::from_text(FIXTURE);
        let frame = Frame::between(&before, &after, 1.0);
        assert_eq!(frame.dram_ssd_ratios, Some((0.5, 0.4)));
        let mut text = Vec::new();
        frame.write_to(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("reads from DRAM 50.0% SSD 40.0%"), "{text}");
        assert_eq!(Frame::between(&after, &after, 1.0).dram_ssd_ratios, None);
    }

    #[test]
    fn garbage_gives_an_empty_sample() {
        let sample = NodeSample::from_text(
            "<html>\n\u{0}{}}{\"\ntroika_volume_read_ops_total{volume=\"x\"} 1\n",
        );
        assert_eq!(sample.recognized, 0);
        assert!(sample.volumes.is_empty());
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panic(text in "\\PC*", line in "[a-z_{}=\",\\\\ 0-9.+-]*") {
            let _ = NodeSample::from_text(&text);
            let _ = parse_line(&line);
        }
    }

    #[test]
    fn two_samples_give_rates_and_latency() {
        let before = NodeSample::from_text(FIXTURE);
        let mut after = before.clone();
        let a = after.volumes.get_mut(&key("a", "1")).unwrap();
        a.read_ops += 2000.0;
        a.read_bytes += 2000.0 * 4096.0;
        a.read_latency_sum += 0.2;
        a.read_latency_count += 2000.0;
        a.write_ops += 100.0;
        a.write_bytes += 100.0 * 1_000_000.0;
        after.cache_read_hits += 300.0;
        after.cache_read_misses += 100.0;
        after.volumes.insert(
            key("b", "3"),
            VolumeCounters {
                write_ops: 50_000.0,
                ..Default::default()
            },
        );
        let frame = Frame::between(&before, &after, 2.0);
        assert_eq!(frame.volumes[0].name, "b", "busiest first");
        assert_eq!(frame.volumes[0].write_iops, 25_000.0);
        let a = &frame.volumes[1];
        assert_eq!(a.read_iops, 1000.0);
        assert_eq!(a.write_iops, 50.0);
        assert!((a.read_mb_per_s - 4.096).abs() < 1e-9);
        assert!((a.write_mb_per_s - 50.0).abs() < 1e-9);
        assert!((a.read_latency.unwrap() - 0.0001).abs() < 1e-12);
        assert_eq!(a.write_latency, None, "no write latency reported");
        assert_eq!(frame.volumes[2].total_iops(), 0.0);
        assert_eq!(frame.cache_hit_ratio, Some(0.75));

        // A restarted node (counters went down) shows zero, not negative rates.
        let frame = Frame::between(&after, &before, 1.0);
        assert!(
            frame
                .volumes
                .iter()
                .all(|v| v.read_iops == 0.0 && v.write_iops == 0.0)
        );
        assert_eq!(frame.cache_hit_ratio, None);
    }

    #[test]
    fn run_top_prints_frames_from_fetched_text() {
        let mut fetches = 0;
        let mut fetch = || {
            fetches += 1;
            Ok(FIXTURE.replace("} 1000\n", &format!("}} {}\n", 1000 * fetches)))
        };
        let mut out = Vec::new();
        run_top(&mut fetch, &mut out, Duration::ZERO, Some(2), true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches(CLEAR_SCREEN).count(), 2);
        assert_eq!(text.matches("troika top").count(), 2);
        assert!(text.contains("odd \"name\\?"), "{text}");
    }

    #[test]
    fn run_top_reports_fetch_errors_and_foreign_text() {
        let mut out = Vec::new();
        let mut failing = || Err("connection refused".to_string());
        assert_eq!(
            run_top(&mut failing, &mut out, Duration::ZERO, Some(1), false),
            Err("connection refused".to_string())
        );
        let mut foreign = || Ok("<html>not metrics</html>".to_string());
        assert!(run_top(&mut foreign, &mut out, Duration::ZERO, Some(1), false).is_err());
        let mut fine = || Ok(FIXTURE.to_string());
        run_top(&mut fine, &mut out, Duration::ZERO, Some(0), false).unwrap();
        assert!(out.is_empty());
    }
}
