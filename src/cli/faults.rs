//! `fault`: install, list and remove fault rules on the node's devices, show the faults that
//! fired, and cut the power (ADMIN or TECHNICIAN). Rules are named by the id `fault ls`
//! shows.

use serde_json::{Value, json};

use super::session::Session;
use super::tables::table;
use super::{CliError, FaultCommand};
use crate::mgmt::rest::faults::{FaultInfo, FiredFaultInfo};

impl Session {
    pub(super) fn fault(&self, command: FaultCommand) -> Result<String, CliError> {
        match command {
            FaultCommand::Inject {
                device,
                op,
                error,
                delay_ms,
                stall_ms,
                tear,
                nth,
                probability,
                seed,
            } => {
                let mut body = json!({"device": device, "op": op});
                let fields = [
                    ("error", error.map(Value::from)),
                    ("delay_ms", delay_ms.map(Value::from)),
                    ("stall_ms", stall_ms.map(Value::from)),
                    ("tear", tear.then_some(Value::Bool(true))),
                    ("nth", nth.map(Value::from)),
                    ("probability", probability.map(Value::from)),
                    ("seed", seed.map(Value::from)),
                ];
                for (field, value) in fields {
                    if let Some(value) = value {
                        body[field] = value;
                    }
                }
                let rule = self.call("POST", "/api/rest/faults?approved=true", Some(&body))?;
                self.render(rule, |rule: FaultInfo| faults(&[rule]))
            }
            FaultCommand::Ls => {
                let rules = self.list_all("/api/rest/faults?sort=id")?;
                self.render(rules, |rules: Vec<FaultInfo>| faults(&rules))
            }
            FaultCommand::Log => {
                let fired = self.list_all("/api/rest/faults/log?")?;
                self.render(fired, |fired: Vec<FiredFaultInfo>| fired_faults(&fired))
            }
            FaultCommand::Clear { id: Some(id) } => {
                let path = format!("/api/rest/faults/{id}?approved=true");
                let rule = self.call("DELETE", &path, None)?;
                self.render(rule, |rule: FaultInfo| faults(&[rule]))
            }
            FaultCommand::Clear { id: None } => {
                let cleared = self.call("DELETE", "/api/rest/faults?approved=true", None)?;
                self.render(cleared, |cleared: Value| {
                    format!("removed {} fault rule(s)\n", cleared["cleared"])
                })
            }
            FaultCommand::PowerCut { seed } => {
                let body = seed.map(|seed| json!({"seed": seed}));
                let path = "/api/rest/faults/power_cut?approved=true";
                let answer = self.call("POST", path, body.as_ref())?;
                self.render(answer, |answer: Value| {
                    format!(
                        "power cut (seed {}): the node is gone; start it again to see it \
                         recover\n",
                        answer["seed"]
                    )
                })
            }
        }
    }
}

fn trigger(rule: &FaultInfo) -> String {
    match (rule.nth, rule.probability) {
        (Some(n), _) => format!("nth {n}"),
        (None, Some(p)) if p >= 1.0 => "every".to_owned(),
        (None, Some(p)) => format!("p={p}"),
        (None, None) => "-".to_owned(),
    }
}

fn faults(rules: &[FaultInfo]) -> String {
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|rule| {
            vec![
                rule.id.to_string(),
                rule.device.clone(),
                rule.op.clone(),
                rule.effect.clone(),
                trigger(rule),
                rule.seed.to_string(),
                rule.matched.to_string(),
                rule.fired.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "DEVICE", "OP", "EFFECT", "TRIGGER", "SEED", "MATCHED", "FIRED",
        ],
        &rows,
    )
}

fn fired_faults(fired: &[FiredFaultInfo]) -> String {
    let rows: Vec<Vec<String>> = fired
        .iter()
        .map(|fault| {
            vec![
                fault.rule.to_string(),
                fault.device.clone(),
                fault.op.clone(),
                fault.sequence.to_string(),
                fault.offset.to_string(),
                fault.len.to_string(),
                fault.effect.clone(),
            ]
        })
        .collect();
    table(
        &["RULE", "DEVICE", "OP", "SEQ", "OFFSET", "LEN", "EFFECT"],
        &rows,
    )
}
