use std::path::Path;

use super::faults::{FaultEffect, FaultOp, FaultTrigger};
use super::*;

const CI_TOML: &str = include_str!("../../hw/ci.toml");
const SIM_HIL_TOML: &str = include_str!("../../hw/sim-hil.toml");

#[test]
fn embedded_default_is_the_small_dev_node() {
    let model = HwModel::embedded_default();
    assert_eq!(model.name, "troika-dev");
    assert_eq!(model.controllers, 3);
    assert_eq!(model.dram_per_controller, 256 << 20);
    assert_eq!(model.ssds.len(), 2);
    assert_eq!(model.ssds[0].size, Some(2 << 30));
    assert_eq!(model.vault_ssd, 0);
    // The read-cache SSD: about 100 times the DRAM.
    assert_eq!(model.ssds[1].size, Some(75 << 30));
    assert_eq!(model.ssds[1].role, Some(SsdRole::Cache));
    let cache = model.ssd_cache.clone().unwrap();
    assert_eq!(cache.ssd, 1);
    assert_eq!(cache.write_bytes_per_sec, 200_000_000);
    assert_eq!(cache.sequential_cutoff, 1 << 20);
    assert_eq!(model.nlsas.len(), 6);
    assert!(model.nlsas.iter().all(|d| d.size == Some(1 << 30)));
    assert_eq!(model.stripe.data, 4);
    assert_eq!(model.stripe.parity, 2);
    assert_eq!(model.stripe.unit, 64 << 10);
    assert_eq!(model.stripe.rows_per_segment, 16);
    assert!(
        model
            .ssds
            .iter()
            .chain(&model.nlsas)
            .all(|d| d.latency.is_none())
    );
}

#[test]
fn ci_model_is_small() {
    let model = HwModel::from_toml(CI_TOML, "hw/ci.toml").unwrap();
    assert_eq!(model.controllers, 3);
    assert_eq!(model.dram_per_controller, 32 << 20);
    assert_eq!(model.ssds[0].size, Some(256 << 20));
    assert_eq!(model.nlsas.len(), 6);
    assert!(model.nlsas.iter().all(|d| d.size == Some(128 << 20)));
    assert_eq!(model.stripe.rows_per_segment, 4);
}

#[test]
fn sim_hil_model_has_latency_on_every_device() {
    let model = HwModel::from_toml(SIM_HIL_TOML, "hw/sim-hil.toml").unwrap();
    assert_eq!(
        model.ssds[0].latency,
        Some(LatencyModel::Ssd {
            read_us: 80,
            write_us: 30
        })
    );
    assert_eq!(model.nlsas.len(), 6);
    for device in &model.nlsas {
        assert_eq!(
            device.latency,
            Some(LatencyModel::Hdd {
                seek_us: 4000,
                rpm: 7200
            })
        );
    }
}

#[test]
fn shipped_files_load_from_disk() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw");
    for file in [
        "dev.toml",
        "ci.toml",
        "ci-raid.toml",
        "api.toml",
        "sim-hil.toml",
        "bench-1ctl.toml",
        "bench-snap.toml",
        "infinibox-f4300.toml",
    ] {
        let model = HwModel::load(&dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
        // Every shipped model has an SSD read cache of about 100 times its DRAM (the
        // host's share of it where the declared size would not fit a sparse file).
        let cache = model
            .ssd_cache
            .as_ref()
            .unwrap_or_else(|| panic!("{file} has no SSD read cache"));
        let size = model.ssds[cache.ssd].size.unwrap();
        let dram = model.cache_per_controller() * model.controllers as u64;
        assert!(
            (90 * dram..=110 * dram).contains(&size),
            "{file}: cache SSD {size} bytes for {dram} bytes of DRAM"
        );
    }
}

/// The controllers bench compares dev.toml with a one-controller model of the same total DRAM
/// and the same devices; only the controller count and its DRAM split may differ.
#[test]
fn bench_one_controller_model_matches_dev_but_for_controllers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw");
    let dev = HwModel::load(&dir.join("dev.toml")).unwrap();
    let one = HwModel::load(&dir.join("bench-1ctl.toml")).unwrap();
    assert_eq!(one.controllers, 1);
    assert_eq!(
        one.dram_per_controller * one.controllers as u64,
        dev.dram_per_controller * dev.controllers as u64
    );
    assert_eq!(format!("{:?}", one.stripe), format!("{:?}", dev.stripe));
    assert_eq!(format!("{:?}", one.ssds), format!("{:?}", dev.ssds));
    assert_eq!(format!("{:?}", one.nlsas), format!("{:?}", dev.nlsas));
}

#[test]
fn missing_file_names_the_path() {
    let err = HwModel::load(Path::new("/nonexistent/troika.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/troika.toml"),
        "{err}"
    );
}

#[test]
fn paths_resolve_under_the_data_dir_unless_absolute() {
    let mut model = HwModel::embedded_default();
    model.nlsas[0].path = "/dev/loop0".into();
    let data = Path::new("/var/lib/troika");
    assert_eq!(
        model.resolve_path(&model.ssds[0], data),
        Path::new("/var/lib/troika/ssd0.img")
    );
    assert_eq!(
        model.resolve_path(&model.nlsas[0], data),
        Path::new("/dev/loop0")
    );
}

#[test]
fn sizes_may_be_plain_integers() {
    let text = CI_TOML.replace("\"32M\"", &(32u64 << 20).to_string());
    let model = HwModel::from_toml(&text, "t.toml").unwrap();
    assert_eq!(model.dram_per_controller, 32 << 20);
}

#[test]
fn devices_without_size_use_the_device() {
    let text = CI_TOML.replace("size = \"128M\"\n", "");
    let model = HwModel::from_toml(&text, "t.toml").unwrap();
    assert!(model.nlsas.iter().all(|d| d.size.is_none()));
}

/// Applies `edit` to ci.toml and asserts the result is refused with a message that names
/// the file and `field`, and contains `detail`.
#[track_caller]
fn refused(edit: impl FnOnce(&str) -> String, field: &str, detail: &str) {
    let text = edit(CI_TOML);
    assert_ne!(text, CI_TOML, "the edit for {field} changed nothing");
    let err = HwModel::from_toml(&text, "hw/ci.toml").unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("hw/ci.toml: "), "{message}");
    assert!(message.contains(field), "{message} does not name {field}");
    assert!(message.contains(detail), "{message} does not say {detail}");
}

fn replace(from: &'static str, to: &'static str) -> impl FnOnce(&str) -> String {
    move |text| text.replacen(from, to, 1)
}

#[test]
fn message_format_names_file_field_and_value() {
    let text = CI_TOML.replace("data = 4", "data = 1");
    let err = HwModel::from_toml(&text, "hw/ci.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "hw/ci.toml: field `stripe.data`: must be between 2 and 30 (got 1)"
    );
}

#[test]
fn unknown_fields_are_refused() {
    refused(
        replace("controllers = 3", "controllers = 3\ncolour = \"blue\""),
        "colour",
        "unknown field",
    );
    refused(
        replace("parity = 2", "parity = 2\nwidth = 3"),
        "width",
        "unknown field",
    );
    refused(
        replace("path = \"ssd0.img\"", "path = \"ssd0.img\"\nspeed = 1"),
        "speed",
        "unknown field",
    );
    refused(
        replace(
            "size = \"256M\"",
            "size = \"256M\"\nlatency = { kind = \"ssd\", read_us = 1, write_us = 1, erase_us = 3 }",
        ),
        "erase_us",
        "unknown field",
    );
}

#[test]
fn controllers_must_be_one_to_eight() {
    refused(
        replace("controllers = 3", "controllers = 0"),
        "`controllers`",
        "between 1 and 8",
    );
    refused(
        replace("controllers = 3", "controllers = 9"),
        "`controllers`",
        "(got 9)",
    );
}

#[test]
fn dram_must_be_large_and_aligned() {
    refused(
        replace("\"32M\"", "\"8M\""),
        "`dram_per_controller`",
        "at least 16M",
    );
    refused(
        replace("\"32M\"", "\"33000K\""),
        "`dram_per_controller`",
        "multiple of 64K",
    );
    refused(
        replace("\"32M\"", "\"lots\""),
        "`dram_per_controller`",
        "not a size",
    );
}

#[test]
fn parity_must_be_two() {
    refused(
        replace("parity = 2", "parity = 1"),
        "`stripe.parity`",
        "must be 2",
    );
}

#[test]
fn data_columns_must_be_two_to_thirty() {
    refused(
        replace("data = 4", "data = 31"),
        "`stripe.data`",
        "between 2 and 30",
    );
}

#[test]
fn nlsas_count_must_match_the_stripe() {
    refused(
        replace("data = 4", "data = 8"),
        "`nlsas`",
        "need at least stripe.data + stripe.parity + spare = 10 [[nlsas]] drives (got 6)",
    );
}

#[test]
fn an_ssd_is_required() {
    refused(
        // Every [[ssd]] table (with its comment) goes.
        |text| {
            text.split("\n\n")
                .filter(|chunk| !chunk.contains("[[ssd]]"))
                .collect::<Vec<_>>()
                .join("\n\n")
        },
        "`ssd`",
        "at least one",
    );
}

#[test]
fn unit_must_be_a_power_of_two_in_range() {
    refused(
        replace("unit = \"64K\"", "unit = \"8K\""),
        "`stripe.unit`",
        "power of two",
    );
    refused(
        replace("unit = \"64K\"", "unit = \"2M\""),
        "`stripe.unit`",
        "between 16K and 1M",
    );
    refused(
        replace("unit = \"64K\"", "unit = \"96K\""),
        "`stripe.unit`",
        "power of two",
    );
}

#[test]
fn rows_per_segment_must_be_positive() {
    refused(
        replace("rows_per_segment = 4", "rows_per_segment = 0"),
        "`stripe.rows_per_segment`",
        "at least 1",
    );
}

#[test]
fn every_device_needs_a_path() {
    refused(
        replace("path = \"nlsas2.img\"\n", ""),
        "`nlsas[2].path`",
        "needs a path",
    );
    refused(
        replace("path = \"ssd0.img\"", "path = \"\""),
        "`ssd[0].path`",
        "needs a path",
    );
}

#[test]
fn device_sizes_must_fit_the_stripe() {
    refused(
        replace("size = \"128M\"", "size = \"130000K\""),
        "`nlsas[0].size`",
        "multiple of the stripe unit",
    );
    refused(
        replace("size = \"128M\"", "size = \"2M\""),
        "`nlsas[0].size`",
        "at least 64 stripe units",
    );
    refused(
        replace("size = \"256M\"", "size = \"32M\""),
        "`ssd[0].size`",
        "at least 64M",
    );
    refused(
        replace("size = \"256M\"", "size = \"1Q\""),
        "`ssd[0].size`",
        "not a size",
    );
}

#[test]
fn device_names_must_be_unique() {
    refused(
        replace("name = \"nlsas3\"", "name = \"ssd0\""),
        "`nlsas[3].name`",
        "duplicate device name \"ssd0\"",
    );
    refused(
        replace("name = \"nlsas1\"", "name = \"\""),
        "`nlsas[1].name`",
        "must not be empty",
    );
}

#[test]
fn latency_values_must_be_sane() {
    let hdd = |rpm: &'static str, seek: &'static str| {
        move |text: &str| {
            text.replacen(
                "size = \"128M\"",
                &format!(
                    "size = \"128M\"\nlatency = {{ kind = \"hdd\", seek_us = {seek}, rpm = {rpm} }}"
                ),
                1,
            )
        }
    };
    refused(
        hdd("1000", "4000"),
        "`nlsas[0].latency.rpm`",
        "between 3600 and 20000",
    );
    refused(
        hdd("30000", "4000"),
        "`nlsas[0].latency.rpm`",
        "(got 30000)",
    );
    refused(
        hdd("7200", "-5"),
        "`nlsas[0].latency.seek_us`",
        "between 0 and 100000",
    );
    refused(
        replace(
            "size = \"256M\"",
            "size = \"256M\"\nlatency = { kind = \"ssd\", read_us = 80, write_us = 999999 }",
        ),
        "`ssd[0].latency.write_us`",
        "between 0 and 100000",
    );
    refused(
        replace(
            "size = \"256M\"",
            "size = \"256M\"\nlatency = { kind = \"tape\", read_us = 80, write_us = 30 }",
        ),
        "tape",
        "unknown variant",
    );
}

/// The CI model with `extra` lines added to the `[[nlsas]]` named nlsas2.
fn ci_with_nlsas2(extra: &str) -> String {
    CI_TOML.replacen(
        "path = \"nlsas2.img\"",
        &format!("path = \"nlsas2.img\"\n{extra}"),
        1,
    )
}

#[test]
fn write_cache_and_fault_rules_are_read_per_device() {
    let text = ci_with_nlsas2(
        "write_cache = \"64M\"\nfaults = [\n  { op = \"write\", error = \"eio\", nth = 500 },\n  \
         { op = \"read\", delay_ms = 40, probability = 0.01, seed = 7 },\n  \
         { op = \"write\", tear = true },\n]",
    );
    let model = HwModel::from_toml(&text, "m.toml").unwrap();
    let drive = &model.nlsas[2];
    assert_eq!(drive.write_cache, 64 << 20);
    assert_eq!(
        drive.faults,
        vec![
            FaultSpec {
                device: "nlsas2".into(),
                op: FaultOp::Write,
                effect: FaultEffect::Eio,
                trigger: FaultTrigger::Nth(500),
                seed: 0,
            },
            FaultSpec {
                device: "nlsas2".into(),
                op: FaultOp::Read,
                effect: FaultEffect::DelayMs(40),
                trigger: FaultTrigger::Probability(0.01),
                seed: 7,
            },
            FaultSpec {
                device: "nlsas2".into(),
                op: FaultOp::Write,
                effect: FaultEffect::Tear,
                trigger: FaultTrigger::Probability(1.0),
                seed: 0,
            },
        ]
    );
    assert!(model.nlsas[0].faults.is_empty() && model.nlsas[0].write_cache == 0);
}

#[test]
fn bad_fault_rules_and_caches_name_the_field() {
    let cases = [
        ("write_cache = \"3000\"", "nlsas[2].write_cache"),
        ("write_cache = \"2G\"", "nlsas[2].write_cache"),
        (
            "faults = [{ op = \"trim\", error = \"eio\" }]",
            "op: must be read, write or fsync",
        ),
        ("faults = [{ op = \"read\" }]", "give one effect"),
        (
            "faults = [{ op = \"read\", error = \"eio\", delay_ms = 5 }]",
            "only one effect",
        ),
        (
            "faults = [{ op = \"read\", error = \"enospc\" }]",
            "only \"eio\"",
        ),
        (
            "faults = [{ op = \"read\", tear = true }]",
            "only a write can be torn",
        ),
        (
            "faults = [{ op = \"read\", error = \"eio\", nth = 0 }]",
            "nth: must be at least 1",
        ),
        (
            "faults = [{ op = \"read\", error = \"eio\", nth = 2, probability = 0.5 }]",
            "not both",
        ),
        (
            "faults = [{ op = \"read\", error = \"eio\", probability = 2.0 }]",
            "probability",
        ),
        ("faults = [{ op = \"read\", stall_ms = 0 }]", "stall_ms"),
        (
            "faults = [{ device = \"nlsas1\", op = \"read\", error = \"eio\" }]",
            "remove device",
        ),
        (
            "faults = [{ op = \"read\", error = \"eio\", when = 3 }]",
            "unknown field",
        ),
    ];
    for (extra, expected) in cases {
        let err = HwModel::from_toml(&ci_with_nlsas2(extra), "m.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{extra}: {err}");
        assert!(err.starts_with("m.toml"), "{extra}: {err}");
    }
}

fn ci_with_scrub(table: &str) -> String {
    format!("{CI_TOML}\n[scrub]\n{table}\n")
}

#[test]
fn scrub_settings_default_and_parse() {
    let model = HwModel::from_toml(CI_TOML, "hw/ci.toml").unwrap();
    assert_eq!(model.scrub, ScrubSettings::DEFAULT);
    assert_eq!(ScrubSettings::DEFAULT.rate, 200 << 20);
    assert_eq!(ScrubSettings::DEFAULT.interval_seconds, 7 * 86_400);
    let model = HwModel::from_toml(
        &ci_with_scrub("rate = \"50M\"\ninterval = \"12h\""),
        "hw/ci.toml",
    )
    .unwrap();
    assert_eq!(
        model.scrub,
        ScrubSettings {
            rate: 50 << 20,
            interval_seconds: 12 * 3600
        }
    );
    let model = HwModel::from_toml(&ci_with_scrub("interval = 90"), "hw/ci.toml").unwrap();
    assert_eq!(model.scrub.interval_seconds, 90);
    assert_eq!(model.scrub.rate, ScrubSettings::DEFAULT.rate);
    for (text, seconds) in [
        ("45s", 45),
        ("30m", 1800),
        ("7d", 604_800),
        ("2w", 1_209_600),
    ] {
        assert_eq!(super::scrub::parse_interval(text), Some(seconds), "{text}");
    }
    for bad in ["", "d", "7x", "-1d", "1.5h"] {
        assert_eq!(super::scrub::parse_interval(bad), None, "{bad}");
    }
}

#[test]
fn scrub_settings_out_of_range_name_the_field() {
    for (table, field, detail) in [
        ("rate = \"512K\"", "scrub.rate", "between 1M and 100G"),
        ("rate = \"1T\"", "scrub.rate", "between 1M and 100G"),
        ("rate = \"fast\"", "scrub.rate", "not a size"),
        (
            "interval = \"0s\"",
            "scrub.interval",
            "from 1 second to 365 days",
        ),
        (
            "interval = \"400d\"",
            "scrub.interval",
            "from 1 second to 365 days",
        ),
        (
            "interval = -5",
            "scrub.interval",
            "from 1 second to 365 days",
        ),
        ("interval = \"weekly\"", "scrub.interval", "\"weekly\""),
        ("speed = 1", "speed", "unknown field"),
    ] {
        let err = HwModel::from_toml(&ci_with_scrub(table), "hw/ci.toml").unwrap_err();
        let message = err.to_string();
        assert!(message.contains(field), "{table}: {message}");
        assert!(message.contains(detail), "{table}: {message}");
    }
}
