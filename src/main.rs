//! The `troika` binary: `troika serve` runs the node; every other command is a client of
//! the running node's management API, on its unix socket or, with `--url`, over TCP.
//!
//! Nothing written to stdout or stderr can end the process: messages go through
//! `troika::say!`, which counts a failed write instead of panicking, and the CLI ends
//! quietly when the reader of its output goes away. `serve` catches SIGINT and SIGTERM
//! before it starts the node, so that either always leads to the clean stop
//! (`troika::node::stop`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use troika::cli::{self, CliCommand};
use troika::hw::HwModel;
use troika::node::stop::StopSignals;
use troika::node::{NbdTlsOptions, Node, NodeOptions};
use troika::target::nbd::{NbdAccessConfig, NbdTlsMode};

/// troika: a three-controller storage array in one process.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The node's data directory (backing files, sockets, metadata).
    #[arg(long, global = true, default_value = "./troika-data")]
    data: PathBuf,
    /// The management socket (default: DATA/troika.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The node's REST API over TCP, e.g. https://127.0.0.1:8080 (default: env TROIKA_URL,
    /// else the unix socket). http:// only for a node started with --mgmt-tls off.
    #[arg(long, global = true, value_name = "https://HOST:PORT")]
    url: Option<String>,
    /// The PEM certificate (or CA) that verifies an https:// --url (default: env TROIKA_CA,
    /// else DATA/tls/server-cert.pem, the node's own certificate).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The user for --url (default: env TROIKA_USER); the password comes from env
    /// TROIKA_PASSWORD or is asked on the terminal.
    #[arg(long, global = true)]
    user: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node in the foreground until SIGINT, SIGTERM or SIGHUP (each stops it cleanly).
    Serve {
        /// Hardware model (default: the embedded hw/dev.toml).
        #[arg(long)]
        hw: Option<PathBuf>,
        /// NBD TCP addresses: the first of one port per controller (10809, 10810, 10811), a
        /// comma-separated list (controller 1 first), or `none` for DATA/nbd.sock only.
        #[arg(long, default_value = "127.0.0.1:10809")]
        nbd_listen: String,
        /// REST API TCP address (authenticated); `none` to serve only DATA/troika.sock.
        #[arg(long, default_value = "127.0.0.1:8080")]
        mgmt_listen: String,
        /// `on`: the TCP REST API speaks HTTPS with DATA/tls/server-cert.pem (made
        /// self-signed on the first start). `off`: plain HTTP, for tests only.
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        mgmt_tls: String,
        /// Seconds a user name or client address is locked out after repeated failed
        /// logins (5 per name, 20 per address, within 5 minutes).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        mgmt_login_lockout: u64,
        /// iSCSI portals: one address, the first of consecutive ports, one per controller
        /// (3260, 3261, 3262 by default); a comma-separated list (controller 1 first); or
        /// `none`.
        #[arg(long, default_value = "127.0.0.1:3260")]
        iscsi_listen: String,
        /// TLS on the NBD TCP ports: `require` (nothing is served before STARTTLS), `on`
        /// (offered, plain clients served too) or `off`. Credentials: DATA/tls/server-cert.pem
        /// and server-key.pem (x509) and/or a PSK key file. Default `require`; with
        /// --nbd-open, `on` when there are credentials, else `off`.
        #[arg(long, value_name = "off|on|require")]
        nbd_tls: Option<NbdTlsMode>,
        /// TLS on the NBD unix socket DATA/nbd.sock (same values as --nbd-tls).
        #[arg(long, default_value = "off", value_name = "off|on|require")]
        nbd_unix_tls: NbdTlsMode,
        /// The CA certificate (PEM) that NBD client certificates are verified against
        /// (default DATA/tls/nbd-ca.pem when it exists); a verified certificate's subject
        /// CN is the client's TLS identity.
        #[arg(long, value_name = "FILE")]
        nbd_tls_ca: Option<PathBuf>,
        /// The NBD pre-shared keys, psktool format `identity:hexkey` per line, mode 0600
        /// (default DATA/tls/nbd-psk.keys when it exists).
        #[arg(long, value_name = "FILE")]
        nbd_tls_psk: Option<PathBuf>,
        /// Serve every volume and snapshot to any NBD client on the TCP ports that proves
        /// no TLS identity, plain TCP included (see --nbd-tls): for benchmarking on a
        /// trusted machine only (logged, and raises the warning event NBD_OPEN_EXPORTS).
        /// A client with a TLS identity still sees only its host's mappings. Without it a
        /// TCP client without a TLS identity sees no export.
        #[arg(long)]
        nbd_open: bool,
        /// Make DATA/nbd.sock mode 0660 owned by this group (name or gid) instead of 0600.
        /// Peers are still admitted only by uid (see --nbd-allow-uid).
        #[arg(long, value_name = "GROUP")]
        nbd_socket_group: Option<String>,
        /// Also admit this uid on DATA/nbd.sock (the node's own uid and root always are);
        /// repeat for several.
        #[arg(long = "nbd-allow-uid", value_name = "UID")]
        nbd_allow_uids: Vec<u32>,
    },
    #[command(flatten)]
    Manage(CliCommand),
}

/// `ADDR` or `none`.
fn listen_address(flag: &str, value: &str, example: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "none" {
        return Ok(None);
    }
    value.parse::<SocketAddr>().map(Some).map_err(|err| {
        anyhow::anyhow!("--{flag} {value:?} is not an address like {example} or none: {err}")
    })
}

/// `--nbd-listen` / `--iscsi-listen`: `none`; one address, the first of consecutive
/// ports, one per controller; or a comma-separated list, controller 1 first.
fn port_addresses(
    flag: &str,
    value: &str,
    example: &str,
    controllers: usize,
) -> anyhow::Result<Vec<SocketAddr>> {
    if value.contains(',') {
        return value
            .split(',')
            .map(|item| {
                listen_address(flag, item.trim(), example)?
                    .ok_or_else(|| anyhow::anyhow!("--{flag}: `none` cannot be in a list"))
            })
            .collect();
    }
    let Some(first) = listen_address(flag, value, example)? else {
        return Ok(Vec::new());
    };
    (0..controllers)
        .map(|index| {
            let port = u16::try_from(usize::from(first.port()) + index).map_err(|_| {
                anyhow::anyhow!(
                    "--{flag} {value}: controller {} would need a port past 65535",
                    index + 1
                )
            })?;
            Ok(SocketAddr::new(first.ip(), port))
        })
        .collect()
}

/// Where `troika serve` listens, and who may use NBD, as given on its command line.
struct Listen<'a> {
    nbd: &'a str,
    mgmt: &'a str,
    iscsi: &'a str,
    /// `--mgmt-tls on`.
    mgmt_tls: bool,
    /// `--mgmt-login-lockout`, seconds.
    login_lockout: u64,
    nbd_tls: NbdTlsOptions,
    nbd_open: bool,
    nbd_socket_group: Option<&'a str>,
    nbd_allow_uids: &'a [u32],
}

fn serve(data: PathBuf, hw: Option<PathBuf>, listen: &Listen) -> anyhow::Result<()> {
    // First, so that no signal from here on can end the node before its clean stop.
    let signals = StopSignals::install()?;
    let model = match hw {
        Some(path) => HwModel::load(&path).map_err(|err| anyhow::anyhow!("{err}"))?,
        None => HwModel::embedded_default(),
    };
    let nbd_tcp = port_addresses(
        "nbd-listen",
        listen.nbd,
        "127.0.0.1:10809",
        model.controllers,
    )?;
    let iscsi_tcp = port_addresses(
        "iscsi-listen",
        listen.iscsi,
        "127.0.0.1:3260",
        model.controllers,
    )?;
    let mgmt_tcp = listen_address("mgmt-listen", listen.mgmt, "127.0.0.1:8080")?;
    let nbd_socket_group = listen
        .nbd_socket_group
        .map(troika::node::nbd_access::group_id)
        .transpose()?;
    let node = Node::start(
        model,
        &NodeOptions {
            data_dir: data,
            nbd_tcp: nbd_tcp.clone(),
            mgmt_tcp,
            mgmt_tls: listen.mgmt_tls,
            login_lockout: std::time::Duration::from_secs(listen.login_lockout),
            iscsi_tcp: iscsi_tcp.clone(),
            nbd_tls: listen.nbd_tls.clone(),
            nbd_access: NbdAccessConfig {
                open: listen.nbd_open,
                allowed_uids: listen.nbd_allow_uids.to_vec(),
            },
            nbd_socket_group,
        },
    )?;
    troika::say!(
        "troika: serving; management on the data directory's troika.sock{}, NBD on nbd.sock{}",
        mgmt_tcp
            .map(|a| format!(
                " and {}://{a}",
                if listen.mgmt_tls { "https" } else { "http" }
            ))
            .unwrap_or_default(),
        nbd_tcp
            .iter()
            .enumerate()
            .map(|(index, address)| format!(" and {address} (controller {})", index + 1))
            .collect::<String>()
    );
    if !iscsi_tcp.is_empty() {
        troika::say!(
            "troika: iSCSI target {} on {}",
            troika::node::iscsi::target_name(node.serial()),
            iscsi_tcp
                .iter()
                .enumerate()
                .map(|(index, address)| format!("{address} (controller {})", index + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    node.run_until_signal(&signals)
}

/// An environment variable's value, unless it is unset or empty.
fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            hw,
            nbd_listen,
            mgmt_listen,
            mgmt_tls,
            mgmt_login_lockout,
            iscsi_listen,
            nbd_tls,
            nbd_unix_tls,
            nbd_tls_ca,
            nbd_tls_psk,
            nbd_open,
            nbd_socket_group,
            nbd_allow_uids,
        } => match serve(
            cli.data,
            hw,
            &Listen {
                nbd: &nbd_listen,
                mgmt: &mgmt_listen,
                iscsi: &iscsi_listen,
                mgmt_tls: mgmt_tls == "on",
                login_lockout: mgmt_login_lockout,
                nbd_tls: NbdTlsOptions {
                    tcp: nbd_tls,
                    unix: nbd_unix_tls,
                    ca: nbd_tls_ca,
                    psk: nbd_tls_psk,
                },
                nbd_open,
                nbd_socket_group: nbd_socket_group.as_deref(),
                nbd_allow_uids: &nbd_allow_uids,
            },
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                troika::say!("troika: error: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Manage(command) => {
            let url = cli.url.or_else(|| non_empty_env("TROIKA_URL"));
            if url.is_none() && cli.user.is_some() {
                troika::say!(
                    "troika: error: --user applies to --url (or TROIKA_URL); on the unix socket \
                     the CLI is always the local admin"
                );
                return ExitCode::from(cli::EXIT_USAGE as u8);
            }
            let target = cli::Target {
                socket: cli.socket.unwrap_or_else(|| cli.data.join("troika.sock")),
                url,
                user: cli.user.or_else(|| non_empty_env("TROIKA_USER")),
                ca: cli
                    .ca
                    .or_else(|| non_empty_env("TROIKA_CA").map(PathBuf::from))
                    .unwrap_or_else(|| cli.data.join("tls/server-cert.pem")),
            };
            let code = cli::run(command, &target, cli.json);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}
