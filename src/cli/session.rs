//! One CLI run: its client and output settings, and the calls every verb shares (one call,
//! a whole paged list, a name resolved to an id, a result rendered as a table or JSON).

use std::io::Write;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{CliCommand, CliError, EventCommand, Settings, SystemCommand, tables};
use crate::cli::client::{Client, ClientError, encode_query_value};
use crate::mgmt::api::SystemInfo;
use crate::mgmt::rest::MAX_PAGE_SIZE;

/// A kind of object the CLI names by NAME.
#[derive(Clone, Copy, Debug)]
pub(super) struct Kind {
    /// The collection under `/api/rest/`.
    pub collection: &'static str,
    /// A filter (`&field=op:value`) that picks this kind out of a collection it shares
    /// with others (a snapshot is a volume of type SNAPSHOT); empty for none.
    pub only: &'static str,
    /// The API's error code for a missing one.
    pub not_found: &'static str,
    /// The word for one.
    pub noun: &'static str,
    /// The word for several.
    pub plural: &'static str,
    /// The CLI command that lists them.
    pub command: &'static str,
}

impl Kind {
    /// A kind that has its own collection (nothing else is listed there).
    pub(super) const fn own(
        collection: &'static str,
        not_found: &'static str,
        noun: &'static str,
        plural: &'static str,
        command: &'static str,
    ) -> Kind {
        Kind {
            collection,
            only: "",
            not_found,
            noun,
            plural,
            command,
        }
    }
}

pub(super) const POOL: Kind = Kind::own("pools", "POOL_NOT_FOUND", "pool", "pools", "pool");
/// A master volume or a snapshot: anything a host can read.
pub(super) const VOLUME: Kind =
    Kind::own("volumes", "VOLUME_NOT_FOUND", "volume", "volumes", "vol");
pub(super) const SNAPSHOT: Kind = Kind {
    only: "&type=eq:SNAPSHOT",
    noun: "snapshot",
    plural: "snapshots",
    command: "snap",
    ..VOLUME
};
pub(super) const USER: Kind = Kind::own("users", "USER_NOT_FOUND", "user", "users", "user");
pub(super) const CONSISTENCY_GROUP: Kind = Kind {
    collection: "cgs",
    only: "&type=eq:MASTER",
    not_found: "CONS_GROUP_NOT_FOUND",
    noun: "consistency group",
    plural: "consistency groups",
    command: "cg",
};
/// A consistency group or a group snapshot.
pub(super) const ANY_GROUP: Kind = Kind {
    only: "",
    ..CONSISTENCY_GROUP
};
pub(super) const GROUP_SNAPSHOT: Kind = Kind {
    only: "&type=eq:SNAPSHOT",
    noun: "group snapshot",
    plural: "group snapshots",
    ..CONSISTENCY_GROUP
};
pub(super) const POLICY: Kind = Kind::own(
    "snapshot_policies",
    "SNAPSHOT_POLICY_NOT_FOUND",
    "snapshot policy",
    "snapshot policies",
    "policy",
);

/// What `--json` prints: the value, pretty, and a newline.
pub(super) fn json_text(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

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
            CliCommand::Drive { cmd } => self.drive(cmd)?,
            CliCommand::Fault { cmd } => self.fault(cmd)?,
            CliCommand::Scrub { cmd } => self.scrub(cmd)?,
            CliCommand::Snap { cmd } => self.snapshot(cmd)?,
            CliCommand::Cg { cmd } => self.consistency_group(cmd)?,
            CliCommand::Policy { cmd } => self.policy(cmd)?,
            CliCommand::Host { cmd } => self.host(cmd)?,
            CliCommand::Cluster { cmd } => self.cluster(cmd)?,
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
            return Ok(json_text(&result));
        }
        Ok(human(self.typed(result)?))
    }

    /// Names of the datasets (volumes and snapshots) by id for a human table; none with
    /// `--json`, which shows ids only.
    pub fn dataset_names(&self) -> Result<tables::Names, CliError> {
        self.names("/api/rest/volumes?fields=id,name")
    }

    /// Names of the consistency groups and group snapshots by id, as [`Self::dataset_names`].
    pub fn group_names(&self) -> Result<tables::Names, CliError> {
        self.names("/api/rest/cgs?fields=id,name")
    }

    fn names(&self, path: &str) -> Result<tables::Names, CliError> {
        if self.settings.json {
            return Ok(tables::Names::new());
        }
        let objects = self.list_all(path)?;
        Ok(objects
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|object| {
                let id = u32::try_from(object["id"].as_u64()?).ok()?;
                Some((id, object["name"].as_str()?.to_owned()))
            })
            .collect())
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
        if let Some(id) = self.find_id(kind.collection, kind.only, name)? {
            return Ok(id);
        }
        let noun = kind.noun;
        let listing = format!("`troika {} ls` lists the {}", kind.command, kind.plural);
        let other_kind =
            !kind.only.is_empty() && self.find_id(kind.collection, "", name)?.is_some();
        let message = if other_kind {
            format!("{name:?} is not a {noun}; {listing}")
        } else {
            format!("{noun} {name:?} does not exist; {listing}")
        };
        Err(CliError::api(kind.not_found, message))
    }

    /// The id of the object named `name` in `collection` that passes the `only` filter.
    fn find_id(&self, collection: &str, only: &str, name: &str) -> Result<Option<u32>, CliError> {
        let path = format!(
            "/api/rest/{collection}?name=eq:{}{only}&fields=id",
            encode_query_value(name)
        );
        let found = self.call("GET", &path, None)?;
        Ok(found
            .get(0)
            .and_then(|object| object["id"].as_u64())
            .and_then(|id| u32::try_from(id).ok()))
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
