//! `scrub start|stop|status`: the background scrub of the NL-SAS array.

use super::session::Session;
use super::tables::table;
use super::{CliError, ScrubCommand};
use crate::mgmt::api::ScrubInfo;
use crate::types::{format_size, utc_time};

const SCRUB_PATH: &str = "/api/rest/components/scrub";

impl Session {
    pub(super) fn scrub(&self, command: ScrubCommand) -> Result<String, CliError> {
        let (method, path) = match command {
            ScrubCommand::Status => ("GET", SCRUB_PATH.to_owned()),
            ScrubCommand::Start => ("POST", format!("{SCRUB_PATH}/start")),
            ScrubCommand::Stop => ("POST", format!("{SCRUB_PATH}/stop")),
        };
        let scrub = self.call(method, &path, None)?;
        self.render(scrub, |scrub: ScrubInfo| scrub_table(&scrub))
    }
}

/// The scrub as a FIELD/VALUE table.
fn scrub_table(scrub: &ScrubInfo) -> String {
    let time = |at: Option<u64>| at.map_or_else(|| "-".to_owned(), utc_time);
    let figures = if scrub.state == "RUNNING" {
        "this pass"
    } else {
        "last pass"
    };
    let rows: Vec<Vec<String>> = [
        ("state", scrub.state.clone()),
        ("rate", format!("{}/s", format_size(scrub.rate))),
        ("interval", format!("{} s", scrub.interval_seconds)),
        (
            "progress",
            format!(
                "{:.1}% (segment {} of {})",
                scrub.progress_percent, scrub.segment, scrub.segments
            ),
        ),
        ("started", time(scrub.started_at)),
        ("figures of", figures.to_owned()),
        ("rows", scrub.rows.to_string()),
        ("read", format_size(scrub.bytes)),
        ("seconds", format!("{:.1}", scrub.seconds)),
        ("data repairs", scrub.data_repairs.to_string()),
        ("parity repairs", scrub.parity_repairs.to_string()),
        ("summary/unused repairs", scrub.other_repairs.to_string()),
        ("unrepairable rows", scrub.unrepairable_rows.to_string()),
        ("passes completed", scrub.passes_completed.to_string()),
        ("last completed", time(scrub.last_completed_at)),
        ("next run", time(scrub.next_run_at)),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect();
    table(&["FIELD", "VALUE"], &rows)
}
