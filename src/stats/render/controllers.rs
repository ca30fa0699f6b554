//! The per-controller gauges of `/metrics`, from figures the node reads off the
//! controllers (this module sits below them and never asks them itself).

use std::fmt::Write;

/// What the gauges show of one controller.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerGauges {
    /// As operators count: 1, 2, 3.
    pub id: u32,
    /// The controller serves (ACTIVE or RECOVERING).
    pub up: bool,
    pub dirty_bytes: u64,
    pub mirror_bytes: u64,
    pub mirror_lag_bytes: u64,
    pub failovers: u64,
}

/// A per-controller gauge: name, help text, and how to read it.
type Gauge = (&'static str, &'static str, fn(&ControllerGauges) -> f64);

/// Appends the per-controller gauges (and the failover counter) for `controllers`.
pub fn render_controller_gauges(out: &mut String, controllers: &[ControllerGauges]) {
    let gauges: [Gauge; 5] = [
        (
            "troika_controller_up",
            "1 while the controller serves (ACTIVE or RECOVERING).",
            |c| f64::from(u8::from(c.up)),
        ),
        (
            "troika_controller_dirty_bytes",
            "Dirty bytes the controller owns.",
            |c| c.dirty_bytes as f64,
        ),
        (
            "troika_controller_mirror_bytes",
            "Mirror copies of other controllers' dirty data it holds.",
            |c| c.mirror_bytes as f64,
        ),
        (
            "troika_controller_mirror_lag_bytes",
            "Dirty bytes it owns without a second copy yet.",
            |c| c.mirror_lag_bytes as f64,
        ),
        (
            "troika_controller_failovers_total",
            "Times the controller failed since the node started.",
            |c| c.failovers as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for controller in controllers {
            let _ = writeln!(
                out,
                "{name}{{controller=\"{}\"}} {}",
                controller.id,
                value(controller)
            );
        }
    }
}
