//! `event ls`, `event follow` (and the `events` alias), and `top`.
//!
//! `follow` first asks for the newest event id, then polls `id=gt:LAST` every
//! [`FOLLOW_POLL`], printing each new event on its own line (a JSON object per line with
//! `--json`) and flushing, so a pipe sees events as they come.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::session::Session;
use super::{CliError, EventCommand, EventFilter, FollowStop, tables};
use crate::cli::client::encode_query_value;
use crate::cli::top::run_top;
use crate::mgmt::events::Event;
use crate::mgmt::rest::MAX_PAGE_SIZE;

/// How often `follow` asks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

impl EventFilter {
    /// The filter as query parameters, each starting with `&`.
    fn query(&self) -> String {
        let mut query = String::new();
        if let Some(level) = &self.level {
            query.push_str(&format!("&level=eq:{}", encode_query_value(level)));
        }
        if let Some(code) = &self.code {
            query.push_str(&format!("&code=eq:{}", encode_query_value(code)));
        }
        query
    }
}

impl Session {
    pub(super) fn event(&self, command: EventCommand, out: &mut dyn Write) -> Result<(), CliError> {
        match command {
            EventCommand::Ls { filter, limit } => {
                let text = self.newest_events(&filter, limit)?;
                out.write_all(text.as_bytes())?;
                Ok(())
            }
            EventCommand::Follow { filter, stop } => self.follow(&filter, &stop, out),
        }
    }

    /// The newest `limit` events that pass `filter`, oldest first.
    fn newest_events(&self, filter: &EventFilter, limit: u64) -> Result<String, CliError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page_size = limit.min(MAX_PAGE_SIZE);
        let mut events = Vec::new();
        for page in 1u64.. {
            let path = format!(
                "/api/rest/events?sort=-id&page={page}&page_size={page_size}{}",
                filter.query()
            );
            let batch: Vec<Value> = self.typed(self.call("GET", &path, None)?)?;
            let last_page = batch.len() < page_size;
            events.extend(batch.into_iter().take(limit - events.len()));
            if last_page || events.len() >= limit {
                break;
            }
        }
        events.reverse();
        self.render(Value::Array(events), |events: Vec<Event>| {
            tables::events(&events)
        })
    }

    fn follow(
        &self,
        filter: &EventFilter,
        stop: &FollowStop,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let started = Instant::now();
        let deadline = stop
            .timeout
            .map(|seconds| started + Duration::from_secs_f64(seconds));
        let newest = self.call(
            "GET",
            "/api/rest/events?sort=-id&page_size=1&fields=id",
            None,
        )?;
        let mut last = newest
            .get(0)
            .and_then(|event| event["id"].as_u64())
            .unwrap_or(0);
        let mut printed = 0u64;
        loop {
            let path = format!(
                "/api/rest/events?id=gt:{last}&sort=id&page_size={MAX_PAGE_SIZE}{}",
                filter.query()
            );
            let batch: Vec<Value> = self.typed(self.call("GET", &path, None)?)?;
            let full = batch.len() == MAX_PAGE_SIZE;
            for raw in batch {
                let event: Event = self.typed(raw.clone())?;
                last = last.max(event.id);
                let line = if self.settings.json {
                    raw.to_string() + "\n"
                } else {
                    tables::event_line(&event)
                };
                out.write_all(line.as_bytes())?;
                out.flush()?;
                printed += 1;
                if stop.count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            if full {
                continue;
            }
            let now = Instant::now();
            if let Some(deadline) = deadline.filter(|&deadline| now >= deadline) {
                return match stop.count {
                    Some(count) => Err(CliError::Failed(format!(
                        "timed out after {:.1} s with {printed} of {count} events",
                        deadline.duration_since(started).as_secs_f64()
                    ))),
                    None => Ok(()),
                };
            }
            let pause = deadline.map_or(FOLLOW_POLL, |deadline| {
                FOLLOW_POLL.min(deadline.saturating_duration_since(now))
            });
            std::thread::sleep(pause);
        }
    }

    /// `troika top`: frames from two `/metrics` samples `interval` seconds apart.
    pub(super) fn top(
        &self,
        interval: f64,
        count: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        // run_top reports failures as text; keep the typed error for its exit code.
        let mut failure = None;
        let mut fetch = || {
            self.metrics_text().map_err(|error| {
                let text = error.to_string();
                failure = Some(error);
                text
            })
        };
        let result = run_top(
            &mut fetch,
            out,
            Duration::from_secs_f64(interval),
            count,
            self.settings.stdout_is_terminal,
        );
        result.map_err(|text| failure.take().unwrap_or(CliError::Failed(text)))
    }
}
