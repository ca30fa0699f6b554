//! `[[ssd]] role`, `cache_share` and `[ssd_cache]`: every default and every refusal.

use super::*;

/// A small model without any `[[ssd]]`; each test appends its SSDs and tables.
const BASE: &str = r#"
name = "roles"
controllers = 2
dram_per_controller = "32M"

[stripe]
data = 4
parity = 2
unit = "64K"
rows_per_segment = 4

[[nlsas]]
count = 6
name = "nlsas{}"
path = "nlsas{}.img"
size = "128M"
"#;

fn ssd(name: &str, extra: &str) -> String {
    format!("\n[[ssd]]\nname = \"{name}\"\npath = \"{name}.img\"\nsize = \"1G\"\n{extra}\n")
}

fn model(tail: &str) -> HwModel {
    let text = format!("{BASE}{tail}");
    HwModel::from_toml(&text, "roles.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn refused(tail: &str, field: &str, detail: &str) {
    let text = format!("{BASE}{tail}");
    let message = HwModel::from_toml(&text, "roles.toml")
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("roles.toml: "), "{message}");
    assert!(
        message.contains(&format!("`{field}`")),
        "{message} does not name {field}"
    );
    assert!(message.contains(detail), "{message} does not say {detail}");
}

#[test]
fn an_ssd_without_a_role_is_the_vault_and_there_is_no_cache() {
    let one = model(&ssd("ssd0", ""));
    assert_eq!(one.vault_ssd, 0);
    assert_eq!(one.ssds[0].role, Some(SsdRole::Vault));
    assert!(one.ssd_cache.is_none());
    // Only the first SSD without a role is the vault; the others stay unused.
    let two = model(&format!("{}{}", ssd("ssd0", ""), ssd("ssd1", "")));
    assert_eq!(two.vault_ssd, 0);
    assert_eq!(two.ssds[1].role, None);
    assert!(two.ssd_cache.is_none());
}

#[test]
fn a_cache_ssd_gets_the_defaults() {
    let m = model(&format!(
        "{}{}",
        ssd("ssd0", ""),
        ssd("ssd1", "role = \"cache\"")
    ));
    assert_eq!(m.vault_ssd, 0);
    assert_eq!(m.ssds[1].role, Some(SsdRole::Cache));
    let cache = m.ssd_cache.clone().unwrap();
    assert_eq!(cache.ssd, 1);
    assert_eq!(cache.cache_share, None);
    assert_eq!(cache.write_bytes_per_sec, 200_000_000);
    assert_eq!(cache.sequential_cutoff, 1 << 20);
    let whole = cache.split(1 << 30).unwrap();
    assert_eq!((whole.cache_offset, whole.cache_len), (0, 1 << 30));
}

#[test]
fn a_cache_first_leaves_the_vault_to_the_next_ssd() {
    let m = model(&format!(
        "{}{}",
        ssd("ssd0", "role = \"cache\""),
        ssd("ssd1", "")
    ));
    assert_eq!(m.vault_ssd, 1);
    assert_eq!(m.ssd_cache.unwrap().ssd, 0);
}

#[test]
fn ssd_cache_table_is_read() {
    let m = model(&format!(
        "{}{}\n[ssd_cache]\nwrite_mb_per_s = 50\nsequential_cutoff = \"256K\"\n",
        ssd("ssd0", "role = \"vault\""),
        ssd("ssd1", "role = \"cache\"")
    ));
    let cache = m.ssd_cache.unwrap();
    assert_eq!(cache.write_bytes_per_sec, 50_000_000);
    assert_eq!(cache.sequential_cutoff, 256 << 10);
}

#[test]
fn both_splits_the_device_and_the_vault_keeps_the_head() {
    let m = model(&ssd("ssd0", "role = \"both\"\ncache_share = \"25%\""));
    assert_eq!(m.vault_ssd, 0);
    let cache = m.ssd_cache.clone().unwrap();
    assert_eq!(cache.ssd, 0);
    assert_eq!(cache.cache_share, Some(25.0));
    let split = cache.split(1 << 30).unwrap();
    assert_eq!(split.cache_len, 256 << 20);
    assert_eq!(split.vault_len, 768 << 20);
    assert_eq!(split.cache_offset, split.vault_len);
    assert_eq!(split.cache_offset + split.cache_len, 1 << 30);
}

#[test]
fn a_role_must_be_known() {
    refused(
        &ssd("ssd0", "role = \"spare\""),
        "ssd[0].role",
        "must be \"vault\", \"cache\" or \"both\" (got \"spare\")",
    );
}

#[test]
fn exactly_one_vault() {
    refused(
        &format!(
            "{}{}",
            ssd("ssd0", "role = \"vault\""),
            ssd("ssd1", "role = \"both\"\ncache_share = \"10%\"")
        ),
        "ssd[1].role",
        "exactly one [[ssd]] holds the write vault",
    );
    refused(
        &ssd("ssd0", "role = \"cache\""),
        "ssd",
        "no [[ssd]] holds the write vault",
    );
}

#[test]
fn at_most_one_cache() {
    refused(
        &format!(
            "{}{}{}",
            ssd("ssd0", ""),
            ssd("ssd1", "role = \"cache\""),
            ssd("ssd2", "role = \"cache\"")
        ),
        "ssd[2].role",
        "at most one [[ssd]] holds the read cache",
    );
}

#[test]
fn cache_share_is_required_with_both_and_refused_otherwise() {
    refused(
        &ssd("ssd0", "role = \"both\""),
        "ssd[0].cache_share",
        "needs cache_share",
    );
    refused(
        &format!(
            "{}{}",
            ssd("ssd0", ""),
            ssd("ssd1", "role = \"cache\"\ncache_share = \"25%\"")
        ),
        "ssd[1].cache_share",
        "applies only to an SSD with role = \"both\"",
    );
    for bad in ["0%", "96%", "25", "a quarter"] {
        refused(
            &ssd("ssd0", &format!("role = \"both\"\ncache_share = \"{bad}\"")),
            "ssd[0].cache_share",
            "must be a share of the device",
        );
    }
    // 99% of 1G would leave the vault less than 64M.
    refused(
        &ssd("ssd0", "role = \"both\"\ncache_share = \"95%\""),
        "ssd[0].cache_share",
        "leaves the vault",
    );
}

#[test]
fn roles_are_refused_on_nlsas() {
    let text = format!("{BASE}{}", ssd("ssd0", "")).replacen(
        "size = \"128M\"",
        "size = \"128M\"\nrole = \"cache\"",
        1,
    );
    let message = HwModel::from_toml(&text, "roles.toml")
        .unwrap_err()
        .to_string();
    assert!(message.contains("`nlsas[0].role`"), "{message}");
}

#[test]
fn ssd_cache_table_is_checked() {
    refused(
        &format!("{}\n[ssd_cache]\nwrite_mb_per_s = 50\n", ssd("ssd0", "")),
        "ssd_cache",
        "needs an [[ssd]] with role = \"cache\" or \"both\"",
    );
    let with_cache = format!("{}{}", ssd("ssd0", ""), ssd("ssd1", "role = \"cache\""));
    for bad in ["0", "-5", "100001"] {
        refused(
            &format!("{with_cache}\n[ssd_cache]\nwrite_mb_per_s = {bad}\n"),
            "ssd_cache.write_mb_per_s",
            "must be between 1 and 100000 MB per second",
        );
    }
    for bad in ["\"2K\"", "\"2G\""] {
        refused(
            &format!("{with_cache}\n[ssd_cache]\nsequential_cutoff = {bad}\n"),
            "ssd_cache.sequential_cutoff",
            "must be between 4K and 1G",
        );
    }
    refused(
        &format!("{with_cache}\n[ssd_cache]\nsequential_cutoff = \"lots\"\n"),
        "ssd_cache.sequential_cutoff",
        "not a size",
    );
    refused(
        &format!("{with_cache}\n[ssd_cache]\nspeed = 1\n"),
        "speed",
        "unknown field",
    );
}
