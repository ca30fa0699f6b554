//! Counted device entries, `dram_scale`, the row-summary limit on the unit, and the
//! full-size model that uses them.

use super::*;

const F4300_TOML: &str = include_str!("../../hw/infinibox-f4300.toml");

fn model(text: &str) -> Result<HwModel, String> {
    HwModel::from_toml(text, "test.toml").map_err(|err| err.to_string())
}

/// A small model whose drives are `nlsas` (TOML for the `[[nlsas]]` entries).
fn with_drives(nlsas: &str) -> String {
    format!(
        r#"name = "t"
controllers = 3
dram_per_controller = "32M"

[stripe]
data = 4
parity = 2
unit = "64K"
rows_per_segment = 4

[[ssd]]
name = "ssd0"
path = "ssd0.img"
size = "256M"

{nlsas}
"#
    )
}

#[test]
fn a_counted_entry_stands_for_numbered_drives() {
    let model = model(&with_drives(
        "[[nlsas]]\ncount = 9\nname = \"nlsas{}\"\npath = \"/dev/disk/by-slot/{}\"\nsize = \"96M\"\n\n[[nlsas]]\nname = \"extra\"\npath = \"extra.img\"\nsize = \"96M\"",
    ))
    .unwrap();
    let names: Vec<&str> = model.nlsas.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nlsas0", "nlsas1", "nlsas2", "nlsas3", "nlsas4", "nlsas5", "nlsas6", "nlsas7",
            "nlsas8", "extra"
        ]
    );
    assert_eq!(model.nlsas[8].path, PathBuf::from("/dev/disk/by-slot/8"));
    assert!(model.nlsas.iter().all(|d| d.size == Some(96 << 20)));
    assert_eq!(model.stripe.spare, 2);
    assert!(model.stripe.declustered);
}

#[test]
fn counted_entries_need_the_number_mark_and_a_sane_count() {
    for (entry, detail) in [
        (
            "count = 8\nname = \"nlsas\"\npath = \"nlsas{}.img\"",
            "needs \"{}\" in both",
        ),
        (
            "count = 8\nname = \"nlsas{}\"\npath = \"nlsas.img\"",
            "needs \"{}\" in both",
        ),
        (
            "name = \"nlsas{}\"\npath = \"nlsas{}.img\"",
            "give count = N",
        ),
        (
            "count = 0\nname = \"n{}\"\npath = \"n{}.img\"",
            "must be between 1 and 1024 (got 0)",
        ),
        (
            "count = 99999999999\nname = \"n{}\"\npath = \"n{}.img\"",
            "must be between 1 and 1024",
        ),
    ] {
        let err = model(&with_drives(&format!("[[nlsas]]\n{entry}\nsize = \"96M\""))).unwrap_err();
        assert!(err.contains("nlsas[0].count"), "{err}");
        assert!(err.contains(detail), "{detail:?} not in {err}");
    }
    let err = model(&with_drives(
        "[[nlsas]]\ncount = 600\nname = \"a{}\"\npath = \"a{}.img\"\n\n[[nlsas]]\ncount = 600\nname = \"b{}\"\npath = \"b{}.img\"",
    ))
    .unwrap_err();
    assert!(
        err.contains("at most 1024 [[nlsas]] drives (got 1200)"),
        "{err}"
    );
    let err = model(&with_drives(
        "[[nlsas]]\ncount = 8\nname = \"n{}\"\npath = \"n{}.img\"\n\n[[nlsas]]\nname = \"n3\"\npath = \"x.img\"",
    ))
    .unwrap_err();
    assert!(err.contains("duplicate device name \"n3\""), "{err}");
}

#[test]
fn dram_scale_shrinks_the_cache_not_the_declared_dram() {
    let plain = model(&with_drives(
        "[[nlsas]]\ncount = 6\nname = \"n{}\"\npath = \"n{}.img\"",
    ))
    .unwrap();
    assert_eq!(plain.dram_scale, 1.0);
    assert_eq!(plain.cache_per_controller(), 32 << 20);
    let scaled = with_drives("[[nlsas]]\ncount = 6\nname = \"n{}\"\npath = \"n{}.img\"")
        .replace("\"32M\"", "\"64G\"\ndram_scale = 0.001");
    let scaled = model(&scaled).unwrap();
    assert_eq!(scaled.dram_per_controller, 64 << 30);
    // 64 GiB x 0.001 = 68.7 MB, rounded down to 64K.
    assert_eq!(scaled.cache_per_controller(), 1048 * (64 << 10));
    for (scale, detail) in [
        ("0", "more than 0 and at most 1"),
        ("1.5", "more than 0 and at most 1"),
        ("-0.5", "more than 0 and at most 1"),
        ("0.0001", "the cache needs at least 16M"),
    ] {
        let text = with_drives("[[nlsas]]\ncount = 6\nname = \"n{}\"\npath = \"n{}.img\"")
            .replace("\"32M\"", &format!("\"64G\"\ndram_scale = {scale}"));
        let err = model(&text).unwrap_err();
        assert!(err.contains("dram_scale") && err.contains(detail), "{err}");
    }
}

#[test]
fn a_row_must_fit_its_summary_block() {
    let wide = with_drives("[[nlsas]]\ncount = 16\nname = \"n{}\"\npath = \"n{}.img\"")
        .replace("data = 4", "data = 14");
    assert!(model(&wide).is_err());
    let err = model(&wide).unwrap_err();
    assert!(
        err.contains("stripe.unit") && err.contains("at most 32K with 14 data units"),
        "{err}"
    );
    assert!(model(&wide.replace("\"64K\"", "\"32K\"")).is_ok());
}

#[test]
fn the_full_size_model_is_an_f4300_class_system() {
    let model = HwModel::from_toml(F4300_TOML, "hw/infinibox-f4300.toml").unwrap();
    assert_eq!(model.controllers, 3);
    assert_eq!(model.dram_per_controller, 384 << 30);
    assert_eq!(
        model.cache_per_controller(),
        (384u64 << 30) / 1000 / (64 << 10) * (64 << 10)
    );
    assert_eq!(model.nlsas.len(), 480);
    assert_eq!(model.nlsas[479].name, "nlsas479");
    assert!(model.nlsas.iter().all(|d| d.size == Some(5588 << 30)));
    // Sparse files on ext4 can be at most 16 TiB.
    assert!(
        model
            .ssds
            .iter()
            .chain(&model.nlsas)
            .all(|d| d.size < Some(16 << 40))
    );
    assert_eq!(model.ssds.len(), 13);
    assert_eq!(model.vault_ssd, 0);
    assert_eq!(model.ssd_cache.as_ref().map(|cache| cache.ssd), Some(12));
    assert_eq!((model.stripe.data, model.stripe.parity), (14, 2));
    assert_eq!(model.stripe.spare, 24);
    assert!(model.stripe.declustered);
}
