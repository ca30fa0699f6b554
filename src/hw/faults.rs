//! Fault rules as the hardware model, the REST API and tests write them; the io layer
//! ([`crate::io::faults`]) carries them out.
//!
//! In a model, a device lists its rules inline:
//!
//! ```toml
//! [[nlsas]]
//! name = "nlsas3"
//! path = "nlsas3.img"
//! write_cache = "64M"
//! faults = [
//!   { op = "write", error = "eio", nth = 500 },
//!   { op = "read", delay_ms = 40, probability = 0.01, seed = 7 },
//! ]
//! ```
//!
//! A rule has one `op` (`read`, `write`, `fsync`), exactly one effect (`error = "eio"`,
//! `delay_ms`, `stall_ms`, `tear = true`), at most one trigger (`nth`, 1-based, or
//! `probability`; neither means every matching operation) and an optional `seed` (default 0
//! in a model; the REST API picks one and reports it).

use serde::Deserialize;

/// The operation a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultOp {
    Read,
    Write,
    Fsync,
}

impl FaultOp {
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Read => "read",
            FaultOp::Write => "write",
            FaultOp::Fsync => "fsync",
        }
    }

    /// Parses `read`, `write` or `fsync`.
    pub fn parse(text: &str) -> Option<FaultOp> {
        match text {
            "read" => Some(FaultOp::Read),
            "write" => Some(FaultOp::Write),
            "fsync" => Some(FaultOp::Fsync),
            _ => None,
        }
    }
}

/// What happens to an operation a rule fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEffect {
    /// The operation fails with EIO and is not performed.
    Eio,
    /// The operation completes, `ms` milliseconds late.
    DelayMs(u64),
    /// The device answers nothing for `ms` milliseconds from this operation on.
    StallMs(u64),
    /// A write lands only a prefix of its 512-byte sectors and fails with EIO.
    Tear,
}

impl FaultEffect {
    pub fn describe(self) -> String {
        match self {
            FaultEffect::Eio => "EIO".to_string(),
            FaultEffect::DelayMs(ms) => format!("delay {ms} ms"),
            FaultEffect::StallMs(ms) => format!("stall {ms} ms"),
            FaultEffect::Tear => "torn write".to_string(),
        }
    }
}

/// When a rule fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultTrigger {
    /// Once, on the Nth matching operation (1-based) after the rule was added.
    Nth(u64),
    /// On each matching operation with this probability (0 < p ≤ 1), drawn from the seed.
    Probability(f64),
}

/// A rule as given by the model, the REST API or a test.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    pub device: String,
    pub op: FaultOp,
    pub effect: FaultEffect,
    pub trigger: FaultTrigger,
    pub seed: u64,
}

impl FaultSpec {
    /// Checks the combination; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self.trigger {
            FaultTrigger::Nth(0) => return Err("nth: must be at least 1".to_string()),
            FaultTrigger::Probability(p) if !(p > 0.0 && p <= 1.0) => {
                return Err(format!(
                    "probability: must be above 0 and at most 1 (got {p})"
                ));
            }
            _ => {}
        }
        match self.effect {
            FaultEffect::Tear if self.op != FaultOp::Write => {
                Err("tear: only a write can be torn (give op write)".to_string())
            }
            FaultEffect::DelayMs(ms) | FaultEffect::StallMs(ms) if ms == 0 || ms > 600_000 => Err(
                format!("delay_ms/stall_ms: must be between 1 and 600000 (got {ms})"),
            ),
            _ => Ok(()),
        }
    }
}

/// A rule as written in a model or a REST body (the device comes from around it in a
/// model, from the body in the API).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaultRule {
    #[serde(default)]
    pub device: Option<String>,
    pub op: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub stall_ms: Option<u64>,
    #[serde(default)]
    pub tear: Option<bool>,
    #[serde(default)]
    pub nth: Option<u64>,
    #[serde(default)]
    pub probability: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl RawFaultRule {
    /// The rule for `device`, with `default_seed` when none is given; the error names the
    /// field.
    pub fn into_spec(self, device: String, default_seed: u64) -> Result<FaultSpec, String> {
        let op = FaultOp::parse(&self.op)
            .ok_or_else(|| format!("op: must be read, write or fsync (got {:?})", self.op))?;
        let mut effects = Vec::new();
        if let Some(error) = &self.error {
            if !error.eq_ignore_ascii_case("eio") {
                return Err(format!(
                    "error: only \"eio\" can be injected (got {error:?})"
                ));
            }
            effects.push(FaultEffect::Eio);
        }
        if let Some(ms) = self.delay_ms {
            effects.push(FaultEffect::DelayMs(ms));
        }
        if let Some(ms) = self.stall_ms {
            effects.push(FaultEffect::StallMs(ms));
        }
        if self.tear == Some(true) {
            effects.push(FaultEffect::Tear);
        }
        let effect = match effects.as_slice() {
            [one] => *one,
            [] => {
                return Err(
                    "give one effect: error = \"eio\", delay_ms, stall_ms or tear = true"
                        .to_string(),
                );
            }
            _ => {
                return Err(
                    "give only one effect of error, delay_ms, stall_ms and tear".to_string()
                );
            }
        };
        let trigger = match (self.nth, self.probability) {
            (Some(_), Some(_)) => return Err("give nth or probability, not both".to_string()),
            (Some(n), None) => FaultTrigger::Nth(n),
            (None, Some(p)) => FaultTrigger::Probability(p),
            (None, None) => FaultTrigger::Probability(1.0),
        };
        let spec = FaultSpec {
            device,
            op,
            effect,
            trigger,
            seed: self.seed.unwrap_or(default_seed),
        };
        spec.validate()?;
        Ok(spec)
    }
}
