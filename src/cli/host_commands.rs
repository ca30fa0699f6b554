//! `host` and `cluster`: the initiators the iSCSI target admits and the NBD clients the
//! NBD ports admit (by TLS identity, `--nbd-identity`), how they authenticate, and which
//! volumes and snapshots they see as which LUN, all by name.
//!
//! A host is created with its iSCSI names (`--iqn`, repeatable) and CHAP settings; `host
//! chap` changes them later. `host map` and `cluster map` present a volume or snapshot as
//! a LUN (the node picks a free one unless `--lun`); a host in a cluster sees the cluster's
//! LUNs too. CHAP secrets go to the node only; nothing here prints them.

use serde_json::{Value, json};

use super::CliError;
use super::objects::changes;
use super::session::{Kind, Session, VOLUME, json_text};
use super::tables::{self, Names, table, utc_time};
use crate::mgmt::api::{ClusterInfo, HostInfo, LunInfo};

pub(super) const HOST: Kind = Kind::own("hosts", "HOST_NOT_FOUND", "host", "hosts", "host");
pub(super) const CLUSTER: Kind = Kind::own(
    "clusters",
    "CLUSTER_NOT_FOUND",
    "host cluster",
    "host clusters",
    "cluster",
);

/// CHAP methods as the CLI spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChapArg {
    None,
    Chap,
    Mutual,
}

/// CHAP credentials given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct ChapArgs {
    /// The user name the initiator logs in with (CHAP).
    #[arg(long, value_name = "USER")]
    pub chap_user: Option<String>,
    /// The secret the initiator proves (12 to 16 characters).
    #[arg(long, value_name = "SECRET", requires = "chap_user")]
    pub chap_secret: Option<String>,
    /// The user name the target answers with (mutual CHAP).
    #[arg(long, value_name = "USER")]
    pub mutual_user: Option<String>,
    /// The secret the target proves (12 to 16 characters, not the initiator's).
    #[arg(long, value_name = "SECRET", requires = "mutual_user")]
    pub mutual_secret: Option<String>,
}

/// One host port on the command line: an iSCSI name, or an NBD identity.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PortArg {
    /// An iSCSI initiator name (iqn.…, eui.… or naa.…).
    #[arg(value_name = "IQN")]
    pub iqn: Option<String>,
    /// An NBD client's TLS identity (PSK identity or certificate subject): 1 to 255
    /// printable characters without ':'.
    #[arg(long, value_name = "ID")]
    pub nbd_identity: Option<String>,
}

impl PortArg {
    /// `(type, address, what to call it)`.
    fn parts(self) -> (&'static str, String, &'static str) {
        match (self.nbd_identity, self.iqn) {
            (Some(identity), _) => ("NBD", identity, "NBD identity"),
            (None, iqn) => ("ISCSI", iqn.unwrap_or_default(), "initiator"),
        }
    }
}

/// Percent-encodes everything but unreserved characters, for one path segment.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum HostCommand {
    /// Create a host with its iSCSI initiator names and CHAP settings (CHAP when
    /// --chap-user is given, mutual CHAP with --mutual-user too).
    Create {
        name: String,
        /// An initiator name (iqn.…, eui.… or naa.…); repeat for several.
        #[arg(long = "iqn", value_name = "IQN")]
        iqns: Vec<String>,
        #[command(flatten)]
        chap: ChapArgs,
    },
    /// List the hosts.
    Ls,
    /// Show a host, its ports and the LUNs it sees.
    Show { name: String },
    /// Add an iSCSI initiator name, or with --nbd-identity an NBD client's TLS identity,
    /// to a host.
    AddPort {
        name: String,
        #[command(flatten)]
        port: PortArg,
    },
    /// Remove an iSCSI initiator name, or with --nbd-identity an NBD identity, from a host.
    RemovePort {
        name: String,
        #[command(flatten)]
        port: PortArg,
    },
    /// Change how a host's initiators authenticate.
    Chap {
        name: String,
        #[arg(long, value_enum)]
        method: ChapArg,
        #[command(flatten)]
        chap: ChapArgs,
    },
    /// Present a volume or snapshot to the host as a LUN.
    Map {
        name: String,
        volume: String,
        /// The LUN number (default: the lowest free one from 1).
        #[arg(long)]
        lun: Option<u32>,
    },
    /// Stop presenting a volume or snapshot to the host.
    Unmap { name: String, volume: String },
    /// Delete a host and its own LUN mappings.
    Delete { name: String },
}

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create an empty host cluster.
    Create { name: String },
    /// List the host clusters.
    Ls,
    /// Show a cluster, its hosts and its LUNs.
    Show { name: String },
    /// Add a host to a cluster (its own LUNs must not clash with the cluster's).
    Add { cluster: String, host: String },
    /// Take a host out of a cluster.
    Remove { cluster: String, host: String },
    /// Present a volume or snapshot to every host of the cluster as a LUN.
    Map {
        cluster: String,
        volume: String,
        /// The LUN number (default: the lowest free one from 11).
        #[arg(long)]
        lun: Option<u32>,
    },
    /// Stop presenting a volume or snapshot to the cluster.
    Unmap { cluster: String, volume: String },
    /// Delete a cluster and its LUN mappings (its hosts stay).
    Delete { name: String },
}

fn chap_body(method: Option<ChapArg>, chap: ChapArgs) -> Value {
    let method = method.unwrap_or(match (&chap.mutual_user, &chap.chap_user) {
        (Some(_), _) => ChapArg::Mutual,
        (None, Some(_)) => ChapArg::Chap,
        (None, None) => ChapArg::None,
    });
    let method = match method {
        ChapArg::None => "NONE",
        ChapArg::Chap => "CHAP",
        ChapArg::Mutual => "MUTUAL_CHAP",
    };
    changes(&[
        ("security_method", Some(Value::from(method))),
        (
            "security_chap_inbound_username",
            chap.chap_user.map(Value::from),
        ),
        (
            "security_chap_inbound_secret",
            chap.chap_secret.map(Value::from),
        ),
        (
            "security_chap_outbound_username",
            chap.mutual_user.map(Value::from),
        ),
        (
            "security_chap_outbound_secret",
            chap.mutual_secret.map(Value::from),
        ),
    ])
}

fn hosts_table(hosts: &[HostInfo], clusters: &Names) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|host| {
            vec![
                host.name.clone(),
                host.id.to_string(),
                host.ports.len().to_string(),
                nbd_identities(host),
                host.security_method.clone(),
                cluster_name(clusters, host.host_cluster_id),
                host.luns_count.to_string(),
                utc_time(host.created_at),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "PORTS",
            "NBD IDENTITIES",
            "SECURITY",
            "CLUSTER",
            "LUNS",
            "CREATED",
        ],
        &rows,
    )
}

/// A host's NBD identities, comma-separated; `-` for none.
fn nbd_identities(host: &HostInfo) -> String {
    let identities: Vec<&str> = host
        .ports
        .iter()
        .filter(|port| port.port_type.eq_ignore_ascii_case("NBD"))
        .map(|port| port.address.as_str())
        .collect();
    if identities.is_empty() {
        "-".into()
    } else {
        identities.join(", ")
    }
}

fn cluster_name(clusters: &Names, id: u32) -> String {
    if id == 0 {
        "-".into()
    } else {
        clusters.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }
}

fn luns_table(luns: &[LunInfo], volumes: &Names) -> String {
    let rows: Vec<Vec<String>> = luns
        .iter()
        .map(|lun| {
            vec![
                lun.lun.to_string(),
                volumes
                    .get(&lun.volume_id)
                    .cloned()
                    .unwrap_or_else(|| lun.volume_id.to_string()),
                if lun.clustered { "cluster" } else { "host" }.to_owned(),
            ]
        })
        .collect();
    table(&["LUN", "VOLUME", "VIA"], &rows)
}

impl Session {
    fn cluster_names(&self) -> Result<Names, CliError> {
        let all = self.list_all("/api/rest/clusters?fields=id,name")?;
        Ok(all
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["id"].as_u64()? as u32, c["name"].as_str()?.to_owned())))
            .collect())
    }

    fn show_host(&self, host: Value) -> Result<String, CliError> {
        if self.settings.json {
            return Ok(json_text(&host));
        }
        let host: HostInfo = self.typed(host)?;
        let clusters = self.cluster_names()?;
        let ports: Vec<String> = host
            .ports
            .iter()
            .map(|p| format!("{} ({})", p.address, p.port_type))
            .collect();
        let rows: Vec<Vec<String>> = [
            ("name", host.name.clone()),
            ("id", host.id.to_string()),
            ("ports", ports.join(", ")),
            ("security", host.security_method.clone()),
            ("chap user", host.security_chap_inbound_username.clone()),
            ("mutual user", host.security_chap_outbound_username.clone()),
            ("cluster", cluster_name(&clusters, host.host_cluster_id)),
            ("type", host.host_type.clone()),
            ("created", utc_time(host.created_at)),
        ]
        .into_iter()
        .map(|(field, value)| vec![field.to_owned(), value])
        .collect();
        let mut text = table(&["FIELD", "VALUE"], &rows);
        text.push('\n');
        text.push_str(&luns_table(&host.luns, &self.dataset_names()?));
        Ok(text)
    }

    fn show_cluster(&self, cluster: Value) -> Result<String, CliError> {
        if self.settings.json {
            return Ok(json_text(&cluster));
        }
        let cluster: ClusterInfo = self.typed(cluster)?;
        let hosts: Vec<String> = cluster.hosts.iter().map(|h| h.name.clone()).collect();
        let rows: Vec<Vec<String>> = [
            ("name", cluster.name.clone()),
            ("id", cluster.id.to_string()),
            ("hosts", hosts.join(", ")),
            ("created", utc_time(cluster.created_at)),
        ]
        .into_iter()
        .map(|(field, value)| vec![field.to_owned(), value])
        .collect();
        let mut text = table(&["FIELD", "VALUE"], &rows);
        text.push('\n');
        text.push_str(&luns_table(&cluster.luns, &self.dataset_names()?));
        Ok(text)
    }

    fn mapped(&self, lun: Value, volume: &str, to: &str) -> Result<String, CliError> {
        self.render(lun, |lun: LunInfo| {
            format!("mapped {volume:?} to {to} as LUN {}\n", lun.lun)
        })
    }

    pub(super) fn host(&self, command: HostCommand) -> Result<String, CliError> {
        match command {
            HostCommand::Create { name, iqns, chap } => {
                let mut body = chap_body(None, chap);
                body["name"] = Value::from(name);
                body["ports"] = iqns
                    .iter()
                    .map(|iqn| json!({"type": "ISCSI", "address": iqn}))
                    .collect();
                let host = self.call("POST", "/api/rest/hosts", Some(&body))?;
                self.show_host(host)
            }
            HostCommand::Ls => {
                let hosts = self.list_all("/api/rest/hosts?sort=name")?;
                if self.settings.json {
                    return Ok(json_text(&hosts));
                }
                let hosts: Vec<HostInfo> = self.typed(hosts)?;
                Ok(hosts_table(&hosts, &self.cluster_names()?))
            }
            HostCommand::Show { name } => {
                let id = self.resolve(HOST, &name)?;
                let host = self.call("GET", &format!("/api/rest/hosts/{id}"), None)?;
                self.show_host(host)
            }
            HostCommand::AddPort { name, port } => {
                let id = self.resolve(HOST, &name)?;
                let (kind, address, what) = port.parts();
                let body = json!({"type": kind, "address": address});
                let host =
                    self.call("POST", &format!("/api/rest/hosts/{id}/ports"), Some(&body))?;
                self.render(host, |_: HostInfo| {
                    format!("added {what} {address} to host {name:?}\n")
                })
            }
            HostCommand::RemovePort { name, port } => {
                let id = self.resolve(HOST, &name)?;
                let (kind, address, what) = port.parts();
                let path = format!(
                    "/api/rest/hosts/{id}/ports/{kind}/{}",
                    path_segment(&address)
                );
                let host = self.call("DELETE", &path, None)?;
                self.render(host, |_: HostInfo| {
                    format!("removed {what} {address} from host {name:?}\n")
                })
            }
            HostCommand::Chap { name, method, chap } => {
                let id = self.resolve(HOST, &name)?;
                let body = chap_body(Some(method), chap);
                let host = self.call("PUT", &format!("/api/rest/hosts/{id}"), Some(&body))?;
                self.render(host, |host: HostInfo| {
                    format!(
                        "host {:?} now authenticates with {}\n",
                        host.name, host.security_method
                    )
                })
            }
            HostCommand::Map { name, volume, lun } => {
                let id = self.resolve(HOST, &name)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let body = changes(&[
                    ("volume_id", Some(Value::from(volume_id))),
                    ("lun", lun.map(Value::from)),
                ]);
                let mapped =
                    self.call("POST", &format!("/api/rest/hosts/{id}/luns"), Some(&body))?;
                self.mapped(mapped, &volume, &format!("host {name:?}"))
            }
            HostCommand::Unmap { name, volume } => {
                let id = self.resolve(HOST, &name)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let path = format!("/api/rest/hosts/{id}/luns/volume_id/{volume_id}");
                let lun = self.call("DELETE", &path, None)?;
                self.render(lun, |lun: LunInfo| {
                    format!("unmapped {volume:?} (LUN {}) from host {name:?}\n", lun.lun)
                })
            }
            HostCommand::Delete { name } => {
                let id = self.resolve(HOST, &name)?;
                let path = format!("/api/rest/hosts/{id}?approved=true");
                let host = self.call("DELETE", &path, None)?;
                self.render(host, |host: HostInfo| {
                    format!("deleted host {:?} (id {})\n", host.name, host.id)
                })
            }
        }
    }

    pub(super) fn cluster(&self, command: ClusterCommand) -> Result<String, CliError> {
        match command {
            ClusterCommand::Create { name } => {
                let body = json!({ "name": name });
                let cluster = self.call("POST", "/api/rest/clusters", Some(&body))?;
                self.show_cluster(cluster)
            }
            ClusterCommand::Ls => {
                let clusters = self.list_all("/api/rest/clusters?sort=name")?;
                self.render(clusters, |clusters: Vec<ClusterInfo>| {
                    let rows: Vec<Vec<String>> = clusters
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.id.to_string(),
                                c.hosts_count.to_string(),
                                c.luns_count.to_string(),
                                tables::utc_time(c.created_at),
                            ]
                        })
                        .collect();
                    table(&["NAME", "ID", "HOSTS", "LUNS", "CREATED"], &rows)
                })
            }
            ClusterCommand::Show { name } => {
                let id = self.resolve(CLUSTER, &name)?;
                let cluster = self.call("GET", &format!("/api/rest/clusters/{id}"), None)?;
                self.show_cluster(cluster)
            }
            ClusterCommand::Add { cluster, host } => {
                let id = self.resolve(CLUSTER, &cluster)?;
                let host_id = self.resolve(HOST, &host)?;
                let body = json!({ "id": host_id });
                let path = format!("/api/rest/clusters/{id}/hosts");
                let result = self.call("POST", &path, Some(&body))?;
                self.render(result, |_: ClusterInfo| {
                    format!("added host {host:?} to cluster {cluster:?}\n")
                })
            }
            ClusterCommand::Remove { cluster, host } => {
                let id = self.resolve(CLUSTER, &cluster)?;
                let host_id = self.resolve(HOST, &host)?;
                let path = format!("/api/rest/clusters/{id}/hosts/{host_id}");
                let result = self.call("DELETE", &path, None)?;
                self.render(result, |_: ClusterInfo| {
                    format!("removed host {host:?} from cluster {cluster:?}\n")
                })
            }
            ClusterCommand::Map {
                cluster,
                volume,
                lun,
            } => {
                let id = self.resolve(CLUSTER, &cluster)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let body = changes(&[
                    ("volume_id", Some(Value::from(volume_id))),
                    ("lun", lun.map(Value::from)),
                ]);
                let path = format!("/api/rest/clusters/{id}/luns");
                let mapped = self.call("POST", &path, Some(&body))?;
                self.mapped(mapped, &volume, &format!("cluster {cluster:?}"))
            }
            ClusterCommand::Unmap { cluster, volume } => {
                let id = self.resolve(CLUSTER, &cluster)?;
                let volume_id = self.resolve(VOLUME, &volume)?;
                let path = format!("/api/rest/clusters/{id}/luns/volume_id/{volume_id}");
                let lun = self.call("DELETE", &path, None)?;
                self.render(lun, |lun: LunInfo| {
                    format!(
                        "unmapped {volume:?} (LUN {}) from cluster {cluster:?}\n",
                        lun.lun
                    )
                })
            }
            ClusterCommand::Delete { name } => {
                let id = self.resolve(CLUSTER, &name)?;
                let path = format!("/api/rest/clusters/{id}?approved=true");
                let cluster = self.call("DELETE", &path, None)?;
                self.render(cluster, |cluster: ClusterInfo| {
                    format!(
                        "deleted host cluster {:?} (id {})\n",
                        cluster.name, cluster.id
                    )
                })
            }
        }
    }
}
