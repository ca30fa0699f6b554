//! infinisdk, InfiniBox's own Python SDK, manages a running node over TCP: logs in, creates
//! pools and volumes, lists them with filters and paging, resizes, renames, reads events,
//! and is refused what READ_ONLY and POOL_ADMIN users may not do. The scenario is
//! `tests/infinisdk/test_infinisdk.py`; NOTES.md beside it says what infinisdk sends.
//!
//! The Python interpreter with infinisdk comes from `TROIKA_INFINISDK_PYTHON` or the venv
//! `.ci/run` builds at `target/infinisdk-venv`. Without either the test says so and
//! passes, unless `TROIKA_REQUIRE_INFINISDK=1` (set by `.ci/run`) makes it fail.

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

#[test]
fn infinisdk_manages_the_node_over_tcp() {
    let Some(python) = infinisdk_python() else {
        assert!(
            std::env::var("TROIKA_REQUIRE_INFINISDK").as_deref() != Ok("1"),
            "infinisdk is required but neither TROIKA_INFINISDK_PYTHON nor target/infinisdk-venv exists; run .ci/run's venv step"
        );
        eprintln!("skipping: no Python with infinisdk (see tests/infinisdk.rs)");
        return;
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw/api.toml");
    let mut node = TestNode::start_with_api(model);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/infinisdk/test_infinisdk.py");
    let output = Command::new(&python)
        .arg(&script)
        .env("TROIKA_URL_HOST", "127.0.0.1")
        .env(
            "TROIKA_URL_PORT",
            node.api_port.expect("api port").to_string(),
        )
        .env("TROIKA_ADMIN_PASSWORD", node.admin_password())
        .env_remove("TROIKA_INFINISDK_BULK")
        .output()
        .expect("run the infinisdk scenario");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the infinisdk scenario failed ({}):\n{stdout}\n{stderr}\nnode log:\n{}",
        output.status,
        node.log_text()
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    node.stop();
}
