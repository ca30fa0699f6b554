//! Handlers of the fault injection routes: list, install and remove rules on the node's
//! devices, list the faults that fired, and cut the power (see [`crate::io::faults`] for
//! what each does to the devices).
//!
//! Every change raises an event naming the caller: `FAULT_INJECTED` (with the rule and its
//! seed, so a run can be replayed), `FAULT_CLEARED`, and `POWER_CUT`, which is synced to
//! the event log file before the cut starts. Rules are named by their id, a `u64` the
//! plane hands out from 1. A node without a fault plane (the in-memory test fake) answers
//! 409 `FAULTS_UNAVAILABLE` on every route.
//!
//! The power cut answers first and cuts afterwards: the handler cannot see its response
//! reach the socket, so a thread waits [`POWER_CUT_GRACE`] (the server writes a small
//! answer in far less) and then calls [`FaultPlane::power_cut`], which itself stops new
//! device operations for 200 ms before the SIGKILL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use super::list::list_response;
use super::openapi::{FAULT, FIRED_FAULT, field_names};
use super::{Call, Mgmt};
use crate::hw::faults::RawFaultRule;
use crate::io::faults::{
    FaultEffect, FaultError, FaultPlane, FaultRule, FaultTrigger, FiredFault, random_seed,
};
use crate::mgmt::api::{Management, MgmtError};
use crate::mgmt::http::Response;

/// How long the power cut waits after answering before it starts.
const POWER_CUT_GRACE: Duration = Duration::from_millis(100);

/// Set by the first power cut: a second one would undo the first one's cache writes again.
static POWER_CUT_STARTED: AtomicBool = AtomicBool::new(false);

/// An installed rule as the API shows it (schema `Fault`): the effect both as text and as
/// the body field that asks for it, the trigger as `nth` or `probability`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultInfo {
    pub id: u64,
    pub device: String,
    /// `read`, `write` or `fsync`.
    pub op: String,
    /// `EIO`, `delay 40 ms`, `stall 500 ms` or `torn write`.
    pub effect: String,
    /// `EIO` when the effect is an error.
    pub error: Option<String>,
    pub delay_ms: Option<u64>,
    pub stall_ms: Option<u64>,
    pub tear: bool,
    /// Fires once, on the Nth matching operation.
    pub nth: Option<u64>,
    /// Fires on each matching operation with this probability (1 for a rule given no
    /// trigger: every operation).
    pub probability: Option<f64>,
    pub seed: u64,
    /// Matching operations seen so far.
    pub matched: u64,
    /// Times it fired.
    pub fired: u64,
}

impl From<&FaultRule> for FaultInfo {
    fn from(rule: &FaultRule) -> FaultInfo {
        let spec = &rule.spec;
        let (nth, probability) = match spec.trigger {
            FaultTrigger::Nth(n) => (Some(n), None),
            FaultTrigger::Probability(p) => (None, Some(p)),
        };
        FaultInfo {
            id: rule.id,
            device: spec.device.clone(),
            op: spec.op.name().to_owned(),
            effect: spec.effect.describe(),
            error: (spec.effect == FaultEffect::Eio).then(|| "EIO".to_owned()),
            delay_ms: match spec.effect {
                FaultEffect::DelayMs(ms) => Some(ms),
                _ => None,
            },
            stall_ms: match spec.effect {
                FaultEffect::StallMs(ms) => Some(ms),
                _ => None,
            },
            tear: spec.effect == FaultEffect::Tear,
            nth,
            probability,
            seed: spec.seed,
            matched: rule.matched,
            fired: rule.fired,
        }
    }
}

/// One fault that fired (schema `FiredFault`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FiredFaultInfo {
    /// The id of the rule that fired.
    pub rule: u64,
    pub device: String,
    pub op: String,
    /// The rule's count of matching operations when it fired (1-based).
    pub sequence: u64,
    pub offset: u64,
    pub len: u64,
    pub effect: String,
}

impl From<&FiredFault> for FiredFaultInfo {
    fn from(fault: &FiredFault) -> FiredFaultInfo {
        FiredFaultInfo {
            rule: fault.rule,
            device: fault.device.clone(),
            op: fault.op.name().to_owned(),
            sequence: fault.sequence,
            offset: fault.offset,
            len: fault.len,
            effect: fault.effect.clone(),
        }
    }
}

/// The body of `POST /faults` (schema `FaultCreate`): a rule as a model writes it, with
/// the device it acts on, which is required here.
#[derive(Debug)]
pub struct FaultCreate {
    pub device: String,
    pub rule: RawFaultRule,
}

impl<'de> Deserialize<'de> for FaultCreate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FaultCreate, D::Error> {
        let mut rule = RawFaultRule::deserialize(deserializer)?;
        let device = rule
            .device
            .take()
            .ok_or_else(|| serde::de::Error::missing_field("device"))?;
        Ok(FaultCreate { device, rule })
    }
}

/// The optional body of `POST /faults/power_cut` (schema `PowerCutOptions`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCutOptions {
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The wire form of the plane's refusals.
fn fault_error(error: FaultError) -> MgmtError {
    let message = error.to_string();
    match error {
        FaultError::UnknownDevice(..) => MgmtError::new("DEVICE_NOT_FOUND", 404, message),
        FaultError::UnknownRule(_) => MgmtError::new("FAULT_NOT_FOUND", 404, message),
        FaultError::Invalid(_) => MgmtError::bad_request(message),
    }
}

fn plane(mgmt: &Mgmt) -> Result<&FaultPlane, MgmtError> {
    mgmt.api.fault_plane().ok_or_else(|| {
        MgmtError::new(
            "FAULTS_UNAVAILABLE",
            409,
            "this node has no devices to inject faults into",
        )
    })
}

fn raise(mgmt: &Mgmt, call: &Call, code: &str, rule: Option<u64>, description: String) {
    mgmt.events
        .raise(code, description, rule, Some(call.caller.name.as_str()));
}

pub fn list_faults(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let rules: Vec<FaultInfo> = plane(mgmt)?.rules().iter().map(FaultInfo::from).collect();
    list_response(&rules, &field_names(&FAULT), &call.query)
}

/// Oldest first; the plane keeps the newest 10,000.
pub fn fault_log(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let fired: Vec<FiredFaultInfo> = plane(mgmt)?
        .log()
        .iter()
        .map(FiredFaultInfo::from)
        .collect();
    list_response(&fired, &field_names(&FIRED_FAULT), &call.query)
}

/// A rule given no seed gets a random one, reported in the answer and the event.
pub fn inject_fault(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let plane = plane(mgmt)?;
    call.require_approval("injecting a fault (the device's operations will fail or stall)")?;
    let FaultCreate { device, rule } = call.body()?;
    let spec = rule
        .into_spec(device, random_seed())
        .map_err(MgmtError::bad_request)?;
    let rule = FaultInfo::from(&plane.inject(spec).map_err(fault_error)?);
    let trigger = match (rule.nth, rule.probability) {
        (Some(n), _) => format!("on matching operation {n}"),
        (None, Some(p)) if p >= 1.0 => "on every matching operation".to_owned(),
        (None, Some(p)) => format!("with probability {p}"),
        (None, None) => String::new(),
    };
    raise(
        mgmt,
        call,
        "FAULT_INJECTED",
        Some(rule.id),
        format!(
            "Fault rule {} was installed on device {}: {} {}, {trigger}, seed {}",
            rule.id, rule.device, rule.op, rule.effect, rule.seed
        ),
    );
    call.object(201, &rule)
}

pub fn remove_fault(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let plane = plane(mgmt)?;
    let text = call.params.first().copied().unwrap_or("");
    let id: u64 = text.parse().map_err(|_| {
        MgmtError::new(
            "FAULT_NOT_FOUND",
            404,
            format!("no fault rule with id {text:?}"),
        )
    })?;
    call.require_approval("removing a fault rule")?;
    let rule = FaultInfo::from(&plane.remove(id).map_err(fault_error)?);
    raise(
        mgmt,
        call,
        "FAULT_CLEARED",
        Some(rule.id),
        format!(
            "Fault rule {} on device {} was removed ({} {}; fired {} times)",
            rule.id, rule.device, rule.op, rule.effect, rule.fired
        ),
    );
    call.object(200, &rule)
}

/// Removes every rule and ends every stall; answers `{"cleared": N}`.
pub fn clear_faults(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    let plane = plane(mgmt)?;
    call.require_approval("removing every fault rule")?;
    let cleared = plane.clear();
    raise(
        mgmt,
        call,
        "FAULT_CLEARED",
        None,
        format!("Every fault rule was removed ({cleared} rules)"),
    );
    call.object(200, &json!({ "cleared": cleared }))
}

/// Answers 202 `{"seed": S}`, then the process dies as if the power went.
pub fn power_cut(mgmt: &Mgmt, call: &Call) -> Result<Response, MgmtError> {
    plane(mgmt)?;
    call.require_approval("cutting the power (the node dies without clean-up)")?;
    let options: PowerCutOptions = if call.request.body.iter().all(u8::is_ascii_whitespace) {
        PowerCutOptions::default()
    } else {
        call.body()?
    };
    if POWER_CUT_STARTED.swap(true, Ordering::AcqRel) {
        return Err(MgmtError::new(
            "POWER_CUT_UNDER_WAY",
            409,
            "a power cut is already under way",
        ));
    }
    let seed = options.seed.unwrap_or_else(random_seed);
    // The thread exists before the event is raised, so a node that cannot start it raises
    // no POWER_CUT; it starts counting once the event is durable.
    let (event_durable, wait_for_event) = std::sync::mpsc::channel::<()>();
    let api: Arc<dyn Management> = Arc::clone(&mgmt.api);
    let spawned = std::thread::Builder::new()
        .name("power-cut".to_owned())
        .spawn(move || {
            if wait_for_event.recv().is_ok() {
                std::thread::sleep(POWER_CUT_GRACE);
                if let Some(plane) = api.fault_plane() {
                    plane.power_cut(seed);
                }
            }
        });
    if let Err(error) = spawned {
        POWER_CUT_STARTED.store(false, Ordering::Release);
        return Err(MgmtError::internal(format!(
            "cannot start the power cut: {error}"
        )));
    }
    raise(
        mgmt,
        call,
        "POWER_CUT",
        None,
        format!("A power cut (seed {seed}) stops the node now, without clean-up"),
    );
    // The event must survive the cut: the log file is not part of the simulation, but a
    // rig may cut real power right after.
    mgmt.events.sync();
    // The receiver lives until this send: the thread only returns after receiving.
    let _ = event_durable.send(());
    call.object(202, &json!({ "seed": seed }))
}
