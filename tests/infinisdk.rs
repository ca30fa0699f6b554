//! infinisdk, InfiniBox's own Python SDK, manages a running node over TCP. Three scenarios,
//! each against its own node:
//!
//! * `tests/infinisdk/test_infinisdk.py`: logs in, creates pools and volumes, lists them
//!   with filters and paging, resizes, renames, reads events, and is refused what
//!   READ_ONLY and POOL_ADMIN users may not do;
//! * `tests/infinisdk/test_snapshots.py`: snapshots, group snapshots, restores, refreshes,
//!   consistency groups and snapshot locks, with infinisdk's own calls;
//! * `tests/infinisdk/test_hosts.py`: hosts, iSCSI ports, CHAP, LUN mappings and host
//!   clusters (`map_volume`, `get_luns`, `unmap_volume`, `add_host`);
//! * `tests/infinisdk/test_components.py`, on `hw/ci-raid.toml`: `system.components`
//!   enclosures and drives with their fields, and a drive failed through the API.
//!
//! NOTES.md beside them says what infinisdk sends.
//!
//! The Python interpreter with infinisdk comes from `TROIKA_INFINISDK_PYTHON` or the venv
//! `./test.sh` builds at `target/infinisdk-venv`. Without either a test says so and passes,
//! unless `TROIKA_REQUIRE_TOOLS=1` (set by `./test.sh`) or `TROIKA_REQUIRE_INFINISDK=1`
//! makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestNode;

fn infinisdk_python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TROIKA_INFINISDK_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/infinisdk-venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs `tests/infinisdk/<script>` against a fresh node with the REST API on TCP over
/// HTTPS (infinisdk's `use_ssl=True`; python requests verifies the node's self-signed
/// certificate through `REQUESTS_CA_BUNDLE`); the script must exit 0 and report no failed
/// step. The node runs `hw/api.toml`.
fn run_scenario(script: &str) {
    run_scenario_on(script, "hw/api.toml");
}

/// [`run_scenario`] on the hardware model at `model` (relative to the crate).
fn run_scenario_on(script: &str, model: &str) {
    let Some(python) = infinisdk_python() else {
        assert!(
            std::env::var("TROIKA_REQUIRE_INFINISDK").as_deref() != Ok("1")
                && !common::tools::required(),
            "infinisdk is required but neither TROIKA_INFINISDK_PYTHON nor target/infinisdk-venv exists; ./test.sh makes the venv"
        );
        common::tools::skipped(
            &format!("{script} needs a Python with infinisdk"),
            "./test.sh (which makes target/infinisdk-venv), or set TROIKA_INFINISDK_PYTHON",
        );
        return;
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join(model);
    let mut node = TestNode::start_with_https_api(model, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/infinisdk")
        .join(script);
    let output = Command::new(&python)
        .arg(&script)
        .env("TROIKA_URL_HOST", "127.0.0.1")
        .env(
            "TROIKA_URL_PORT",
            node.api_port.expect("api port").to_string(),
        )
        .env("TROIKA_ADMIN_PASSWORD", node.admin_password())
        .env("TROIKA_USE_SSL", "1")
        .env("REQUESTS_CA_BUNDLE", node.tls_cert_path())
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("TROIKA_INFINISDK_BULK")
        .output()
        .expect("run the infinisdk scenario");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the infinisdk scenario {} failed ({}):\n{stdout}\n{stderr}\nnode log:\n{}",
        script.display(),
        output.status,
        node.log_text()
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    node.stop();
}

#[test]
fn infinisdk_manages_the_node_over_tcp() {
    run_scenario("test_infinisdk.py");
}

#[test]
fn infinisdk_manages_snapshots_and_consistency_groups() {
    run_scenario("test_snapshots.py");
}

#[test]
fn infinisdk_manages_hosts_clusters_and_mappings() {
    run_scenario("test_hosts.py");
}

#[test]
fn infinisdk_reads_enclosures_and_drives() {
    run_scenario_on("test_components.py", "hw/ci-raid.toml");
}
