//! One CLI run: its client and output settings, and the calls every verb shares (one call,
//! a whole paged list, a name resolved to an id, a result rendered as a table or JSON).

use std::io::Write;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{CliCommand, CliError, EventCommand, Settings, SystemCommand, tables};
use crate::mgmt::api::SystemInfo;
use crate::mgmt::client::{Client, ClientError, encode_query_value};
use crate::mgmt::rest::MAX_PAGE_SIZE;

/// A kind of object the CLI names by NAME.
#[derive(Clone, Copy, Debug)]
pub(super) struct Kind {
    /// The collection under `/api/rest/`.
    pub collection: &'static str,
    /// The API's error code for a missing one.
    pub not_found: &'static str,
    /// The word for one, and the CLI command that lists them.
    pub noun: &'static str,
}

pub(super) const POOL: Kind = Kind {
    collection: "pools",
    not_found: "POOL_NOT_FOUND",
    noun: "pool",
};
pub(super) const VOLUME: Kind = Kind {
    collection: "volumes",
    not_found: "VOLUME_NOT_FOUND",
    noun: "vol",
};
pub(super) const USER: Kind = Kind {
    collection: "users",
    not_found: "USER_NOT_FOUND",
    noun: "user",
};

pub(super) struct Session {
    pub client: Client,
    pub settings: Settings,
}

impl Session {
    pub fn new(client: Client, settings: Settings) -> Session {
        Session { client, settings }
    }

    /// Runs the command, writing what it prints to `out`.
    pub fn execute(&self, command: CliCommand, out: &mut dyn Write) -> Result<(), CliError> {
        let text = match command {
            CliCommand::Pool { cmd } => self.pool(cmd)?,
            CliCommand::Vol { cmd } => self.volume(cmd)?,
            CliCommand::User { cmd } => self.user(cmd)?,
            CliCommand::Event { cmd } => return self.event(cmd, out),
            CliCommand::Events {
                follow: true,
                filter,
                stop,
                ..
            } => return self.event(EventCommand::Follow { filter, stop }, out),
            CliCommand::Events {
                follow: false,
                filter,
                limit,
                ..
            } => return self.event(EventCommand::Ls { filter, limit }, out),
            CliCommand::Top { interval, count } => return self.top(interval, count, out),
            CliCommand::Controller { cmd } => self.controller(cmd)?,
            CliCommand::System {
                cmd: SystemCommand::Show,
            } => {
                let system = self.call("GET", "/api/rest/system", None)?;
                self.render(system, |system: SystemInfo| tables::system(&system))?
            }
        };
        out.write_all(text.as_bytes())?;
        Ok(())
    }

    /// With `--json` the raw `result`; otherwise `human` of the typed result.
    pub fn render<T: DeserializeOwned>(
        &self,
        result: Value,
        human: impl FnOnce(T) -> String,
    ) -> Result<String, CliError> {
        if self.settings.json {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default();
            return Ok(text + "\n");
        }
        Ok(human(self.typed(result)?))
    }

    /// The result as the API type it should be.
    pub fn typed<T: DeserializeOwned>(&self, result: Value) -> Result<T, CliError> {
        serde_json::from_value(result).map_err(|error| {
            CliError::Client(ClientError::BadResponse {
                node: self.client.endpoint().to_string(),
                reason: format!("unexpected result: {error}"),
            })
        })
    }

    /// One API call; an error envelope or a non-2xx status becomes a [`CliError`].
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let (status, envelope) = self.client.request(method, path, body)?;
        self.result_of(status, envelope)
    }

    /// Every page of a list (`path` has a query), concatenated.
    pub fn list_all(&self, path: &str) -> Result<Value, CliError> {
        let mut objects = Vec::new();
        let mut page = 1u64;
        loop {
            let paged = format!("{path}&page={page}&page_size={MAX_PAGE_SIZE}");
            let (status, envelope) = self.client.request("GET", &paged, None)?;
            let pages_total = envelope["metadata"]["pages_total"].as_u64().unwrap_or(0);
            match self.result_of(status, envelope)? {
                Value::Array(items) => objects.extend(items),
                other => objects.push(other),
            }
            if page >= pages_total {
                return Ok(Value::Array(objects));
            }
            page += 1;
        }
    }

    /// The id of the `kind` object named `name`.
    pub fn resolve(&self, kind: Kind, name: &str) -> Result<u32, CliError> {
        let path = format!(
            "/api/rest/{}?name=eq:{}&fields=id",
            kind.collection,
            encode_query_value(name)
        );
        let found = self.call("GET", &path, None)?;
        found
            .get(0)
            .and_then(|object| object["id"].as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                let noun = if kind.noun == "vol" {
                    "volume"
                } else {
                    kind.noun
                };
                CliError::api(
                    kind.not_found,
                    format!(
                        "{noun} {name:?} does not exist; `troika {} ls` lists the {noun}s",
                        kind.noun
                    ),
                )
            })
    }

    /// The `result` of an envelope; its `error`, or a non-2xx status, becomes a
    /// [`CliError`]: 401 [`CliError::Unauthorized`], anything else [`CliError::Api`].
    fn result_of(&self, status: u16, mut envelope: Value) -> Result<Value, CliError> {
        let error = envelope.get("error").filter(|error| !error.is_null());
        let code = error.and_then(|error| error["code"].as_str());
        let message = error.and_then(|error| error["message"].as_str());
        if status == 401 {
            return Err(CliError::Unauthorized {
                node: self.client.endpoint().to_string(),
                message: format!(
                    "{}: {}",
                    code.unwrap_or("UNAUTHORIZED"),
                    message.unwrap_or("HTTP status 401")
                ),
            });
        }
        if error.is_some() {
            return Err(CliError::api(
                code.unwrap_or("ERROR"),
                message.unwrap_or("(no message)").to_owned(),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(CliError::api("HTTP_ERROR", format!("HTTP status {status}")));
        }
        Ok(envelope
            .get_mut("result")
            .map(Value::take)
            .unwrap_or_default())
    }

    /// `/metrics` as text; errors as for any call.
    pub fn metrics_text(&self) -> Result<String, CliError> {
        let (status, body) = self.client.request("GET", "/metrics", None)?;
        match body {
            Value::String(text) if status == 200 => Ok(text),
            body if status == 200 => Err(CliError::Client(ClientError::BadResponse {
                node: self.client.endpoint().to_string(),
                reason: format!("/metrics answered JSON instead of text: {body}"),
            })),
            body => self.result_of(status, body).map(|_| String::new()),
        }
    }
}
