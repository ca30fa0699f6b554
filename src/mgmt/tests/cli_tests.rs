//! The CLI against a live server, and its argument parsing.

use super::*;

/// The binary's command line, as far as the management commands go.
#[derive(Debug, clap::Parser)]
struct TestCli {
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CliCommand,
}

fn parse_cli(args: &[&str]) -> Result<TestCli, clap::Error> {
    TestCli::try_parse_from(std::iter::once("troika").chain(args.iter().copied()))
}

/// Runs a command line against the socket; returns exit code, stdout, stderr.
fn run_cli(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let cli = parse_cli(args).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run_with(cli.command, socket, cli.json, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn sizes_are_parsed_by_clap() {
    let cli = parse_cli(&[
        "pool",
        "create",
        "p",
        "--size",
        "10G",
        "--virtual-size",
        "1T",
    ])
    .unwrap();
    assert_eq!(
        cli.command,
        CliCommand::Pool {
            cmd: PoolCommand::Create {
                name: "p".into(),
                size: 10 * GIB,
                virtual_size: Some(1 << 40),
            }
        }
    );
    let cli = parse_cli(&["vol", "resize", "v", "512M"]).unwrap();
    assert_eq!(
        cli.command,
        CliCommand::Vol {
            cmd: VolCommand::Resize {
                name: "v".into(),
                size: 512 << 20
            }
        }
    );
    let error = parse_cli(&["pool", "create", "p", "--size", "10X"]).unwrap_err();
    assert_eq!(error.exit_code(), cli::EXIT_USAGE);
    let message = error.to_string();
    assert!(message.contains("--size"), "{message}");
    assert!(message.contains("10X"), "{message}");
    let error = parse_cli(&["vol", "resize", "v", "lots"]).unwrap_err();
    assert!(error.to_string().contains("SIZE"), "{error}");
    assert!(parse_cli(&["vol", "create", "v", "--size", "1G"]).is_err());
}

#[test]
fn cli_manages_pools_and_volumes_by_name() {
    let server = TestServer::start();
    let socket = server.socket.as_path();

    let (code, out, err) = run_cli(socket, &["pool", "create", "gold pool", "--size", "100G"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("gold pool"), "{out}");
    assert!(out.contains("100.0 GiB"), "{out}");

    let (code, _, err) = run_cli(socket, &["pool", "create", "gold pool", "--size", "1G"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert!(err.starts_with("troika: error: NAME_CONFLICT: "), "{err}");

    run_cli(socket, &["pool", "create", "silver", "--size", "1G"]);
    let (code, out, _) = run_cli(
        socket,
        &[
            "vol",
            "create",
            "db",
            "--pool",
            "gold pool",
            "--size",
            "10G",
            "--thick",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("THICK") && out.contains("gold pool"), "{out}");
    let (code, _, _) = run_cli(
        socket,
        &[
            "vol", "create", "logs", "--pool", "silver", "--size", "512M",
        ],
    );
    assert_eq!(code, 0);

    let (code, out, _) = run_cli(socket, &["vol", "ls"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NAME  ID  SIZE"), "{out}");
    assert!(lines[1].starts_with("db  "), "{out}");
    assert!(lines[2].starts_with("logs"), "{out}");
    // Columns line up.
    let size_column = lines[0].find("SIZE").unwrap();
    assert_eq!(&lines[1][size_column..size_column + 8], "10.0 GiB");

    let (code, out, _) = run_cli(socket, &["vol", "ls", "--pool", "silver"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("logs") && !out.contains("db"), "{out}");

    let (code, _, err) = run_cli(socket, &["vol", "ls", "--pool", "bronze"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert_eq!(
        err,
        "troika: error: POOL_NOT_FOUND: pool \"bronze\" does not exist; `troika pool ls` lists the pools\n"
    );

    let (code, out, _) = run_cli(socket, &["vol", "resize", "db", "5G"]);
    assert_eq!(code, 0);
    assert!(out.contains("5.0 GiB"), "{out}");

    let (code, out, _) = run_cli(socket, &["--json", "pool", "ls"]);
    assert_eq!(code, 0);
    let pools: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 2);
    assert_eq!(pools[0]["name"], "gold pool");
    assert_eq!(pools[0]["volumes_count"], 1);

    let (code, _, err) = run_cli(socket, &["pool", "delete", "gold pool"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert!(err.contains("POOL_NOT_EMPTY"), "{err}");
    let (code, out, _) = run_cli(socket, &["vol", "delete", "db"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted volume \"db\""), "{out}");
    let (code, _, err) = run_cli(socket, &["vol", "delete", "db"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert_eq!(
        err,
        "troika: error: VOLUME_NOT_FOUND: volume \"db\" does not exist; `troika vol ls` lists the volumes\n"
    );
    let (code, _, _) = run_cli(socket, &["pool", "delete", "gold pool"]);
    assert_eq!(code, 0);

    let (code, out, _) = run_cli(socket, &["pool", "ls"]);
    assert_eq!(code, 0);
    assert!(!out.contains("gold") && out.contains("silver"), "{out}");

    let (code, out, _) = run_cli(socket, &["system", "show"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("troika-test") && out.contains("1.0 TiB"),
        "{out}"
    );
    let (code, out, _) = run_cli(socket, &["--json", "system", "show"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["serial"], 4242);
}

#[test]
fn cli_lists_every_page() {
    let server = TestServer::start();
    let pool = server.create_pool("p", 1 << 40);
    let count = crate::mgmt::rest::MAX_PAGE_SIZE + 5;
    for index in 0..count {
        let create = VolumeCreate {
            name: format!("v{index:05}"),
            pool_id: pool,
            size: 1024,
            provtype: None,
            ssd_enabled: None,
            write_protected: None,
        };
        server.api().create_volume(create).unwrap();
    }
    let (code, out, _) = run_cli(&server.socket, &["--json", "vol", "ls"]);
    assert_eq!(code, 0);
    let volumes: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(volumes.as_array().unwrap().len(), count);
}

#[test]
fn cli_reports_an_unreachable_node() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let (code, out, err) = run_cli(&socket, &["pool", "ls"]);
    assert_eq!(code, cli::EXIT_UNREACHABLE);
    assert!(out.is_empty());
    let expected = format!(
        "troika: error: cannot reach the troika node at {}: ",
        socket.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(
        err.contains("is `troika serve` running with this data dir?"),
        "{err}"
    );
}

#[test]
fn controller_numbers_are_parsed_by_clap() {
    let cli = parse_cli(&["controller", "fail", "2"]).unwrap();
    assert_eq!(
        cli.command,
        CliCommand::Controller {
            cmd: ControllerCommand::Fail { number: 2 }
        }
    );
    let cli = parse_cli(&["--json", "controller", "show", "3"]).unwrap();
    assert!(cli.json);
    for args in [
        &["controller", "fail", "two"][..],
        &["controller", "recover", "-1"],
        &["controller", "show"],
        &["controller", "fail", "2", "--force"],
    ] {
        let error = parse_cli(args).unwrap_err();
        assert_eq!(error.exit_code(), cli::EXIT_USAGE, "{args:?}");
    }
}

#[test]
fn cli_lists_fails_and_recovers_controllers() {
    let server = TestServer::start();
    let socket = server.socket.as_path();

    let (code, out, err) = run_cli(socket, &["controller", "ls"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with(
            "ID  STATE   PORTS                  SHARE %  OWNED  DIRTY    MIRROR   LAG  PROGRESS"
        ),
        "{out}"
    );
    assert_eq!(
        lines[2],
        "2   ACTIVE  nbd://127.0.0.1:10810  33.3     1024   4.0 MiB  4.0 MiB  0 B  -"
    );

    let (code, out, err) = run_cli(socket, &["controller", "fail", "2"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines().nth(1).unwrap().starts_with("2   FAILED  -  "),
        "{out}"
    );

    server.api().advance_controllers(0.5);
    let (_, out, _) = run_cli(socket, &["controller", "ls"]);
    let survivor = out.lines().nth(1).unwrap();
    assert!(survivor.starts_with("1   ACTIVE  "), "{out}");
    assert!(survivor.ends_with("  remirror [#####.....] 50%"), "{out}");
    assert!(survivor.contains("  50.0  "), "{out}");

    let (code, out, err) = run_cli(socket, &["controller", "fail", "2"]);
    assert_eq!((code, out.as_str()), (cli::EXIT_API_ERROR, ""));
    assert!(
        err.starts_with("troika: error: CONTROLLER_STATE: controller 2 is FAILED"),
        "{err}"
    );
    let (code, _, err) = run_cli(socket, &["controller", "recover", "9"]);
    assert_eq!(code, cli::EXIT_API_ERROR);
    assert_eq!(
        err,
        "troika: error: CONTROLLER_NOT_FOUND: controller 9 does not exist\n"
    );

    let (code, out, _) = run_cli(socket, &["controller", "recover", "2"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().nth(1).unwrap().contains("RECOVERING")
            && out.contains("failback [..........] 0%"),
        "{out}"
    );
    server.api().advance_controllers(0.3);
    let (code, out, _) = run_cli(socket, &["controller", "show", "2"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("FIELD"), "{out}");
    for line in [
        "name                controller-2",
        "state               RECOVERING",
        "failback            [###.......] 30%",
        "remirror            -",
        "failovers           1",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }

    let (code, out, _) = run_cli(socket, &["--json", "controller", "ls"]);
    assert_eq!(code, 0);
    let controllers: Value = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = controllers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ACTIVE", "RECOVERING", "ACTIVE"]);
    let (code, out, _) = run_cli(socket, &["--json", "controller", "show", "2"]);
    assert_eq!(code, 0);
    let controller: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(controller["failback_progress"], 0.3);
    let (code, out, _) = run_cli(socket, &["--json", "controller", "fail", "1"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "FAILED"
    );
}
