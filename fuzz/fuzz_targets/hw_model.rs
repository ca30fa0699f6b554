//! Hardware model files: any text through `HwModel::from_toml`. No input may panic, and an
//! accepted model must satisfy what the rest of troika assumes of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troika::hw::HwModel;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = HwModel::from_toml(text, "fuzz.toml") else {
        return;
    };
    assert!((1..=8).contains(&model.controllers));
    assert!(!model.ssds.is_empty());
    assert_eq!(model.nlsas.len(), model.stripe.data + model.stripe.parity);
    assert!(model.stripe.unit.is_power_of_two());
});
