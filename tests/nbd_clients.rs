//! Real NBD clients against the real binary: nbdinfo (export metadata, list, block-status
//! map), fio's nbd engine with verification, nbdcopy round trips, and several connections of
//! the test client at once. Each test skips, saying why, when its tool is not installed.

mod common;
#[path = "common/testdata.rs"]
mod testdata;

use std::process::{Command, Output};
use std::sync::Arc;

use common::TestNode;
use common::nbd_client::NbdClient;
use serde_json::Value;
use testdata::XorShift;

const MIB: u64 = 1 << 20;

fn skip_without(tool: &common::tools::Tool) -> bool {
    !common::tools::present(&[tool])
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run_ok(node: &TestNode, program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}\nnode log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The URI of the server itself, without an export (for `nbdinfo --list`).
fn server_uri(node: &TestNode) -> String {
    format!("nbd+unix://?socket={}", node.nbd_socket().display())
}

fn nbdinfo_json(node: &TestNode, args: &[&str]) -> Value {
    let text = run_ok(node, "nbdinfo", args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("nbdinfo {args:?} printed bad JSON ({e}):\n{text}"))
}

#[test]
fn nbdinfo_reports_the_export() {
    if skip_without(&common::tools::NBDINFO) {
        return;
    }
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let info = nbdinfo_json(&node, &["--json", &node.uri("V")]);
    let exports = info["exports"].as_array().expect("exports array");
    assert_eq!(exports.len(), 1, "{info:#}");
    let export = &exports[0];
    assert_eq!(export["export-name"], "V", "{export:#}");
    assert_eq!(export["export-size"], 64 * MIB, "{export:#}");
    for capability in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
        "can_fast_zero",
        "can_cache",
    ] {
        assert_eq!(export[capability], true, "{capability} in {export:#}");
    }
    assert_eq!(export["is_read_only"], false, "{export:#}");
    assert_eq!(export["block_size_minimum"], 512, "{export:#}");
    assert_eq!(export["block_size_preferred"], 4096, "{export:#}");
    let maximum = export["block_size_maximum"]
        .as_u64()
        .expect("block_size_maximum");
    assert!(
        maximum >= 4096 && maximum.is_multiple_of(4096),
        "block_size_maximum {maximum}"
    );
}

#[test]
fn nbdinfo_lists_every_volume() {
    if skip_without(&common::tools::NBDINFO) {
        return;
    }
    let node = TestNode::start();
    node.cli_ok(&["pool", "create", "P", "--size", "200M"]);
    let names = ["alpha", "beta", "gamma-1", "d.e_f"];
    for name in names {
        node.cli_ok(&["vol", "create", name, "--pool", "P", "--size", "16M"]);
    }
    let list = nbdinfo_json(&node, &["--list", "--json", &server_uri(&node)]);
    let mut listed: Vec<String> = list["exports"]
        .as_array()
        .expect("exports array")
        .iter()
        .map(|e| e["export-name"].as_str().expect("export-name").to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "{list:#}");
    for export in list["exports"].as_array().unwrap() {
        assert_eq!(export["export-size"], 16 * MIB, "{export:#}");
    }

    // A deleted volume disappears from the list.
    node.cli_ok(&["vol", "delete", "beta"]);
    let list = nbdinfo_json(&node, &["--list", "--json", &server_uri(&node)]);
    let listed: Vec<&str> = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert!(
        !listed.contains(&"beta"),
        "deleted volume still listed: {listed:?}"
    );
    assert_eq!(listed.len(), 3, "{listed:?}");
}

/// `nbdinfo --map --json` extents as (offset, length, type).
fn map(node: &TestNode, export: &str) -> Vec<(u64, u64, u64)> {
    let map = nbdinfo_json(node, &["--map", "--json", &node.uri(export)]);
    map.as_array()
        .expect("map is an array")
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().expect("offset"),
                e["length"].as_u64().expect("length"),
                e["type"].as_u64().expect("type"),
            )
        })
        .collect()
}

/// The block-status type of the extent holding `offset`.
fn type_at(extents: &[(u64, u64, u64)], offset: u64) -> u64 {
    extents
        .iter()
        .find(|(start, len, _)| (*start..start + len).contains(&offset))
        .unwrap_or_else(|| panic!("no extent covers {offset}: {extents:?}"))
        .2
}

#[test]
fn nbdinfo_map_shows_holes_and_data() {
    if skip_without(&common::tools::NBDINFO) {
        return;
    }
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");

    let extents = map(&node, "V");
    let covered: u64 = extents.iter().map(|e| e.1).sum();
    assert_eq!(
        covered,
        64 * MIB,
        "map does not cover the export: {extents:?}"
    );
    for (offset, len, kind) in &extents {
        // NBD_STATE_HOLE | NBD_STATE_ZERO
        assert_eq!(
            *kind, 3,
            "unwritten volume has a non-hole extent at {offset}+{len}: {extents:?}"
        );
    }

    let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
    let data = XorShift::new(7).bytes(MIB as usize);
    client.write(8 * MIB, &data, 0).expect("write");
    client.flush().expect("flush");
    client.disconnect();

    let extents = map(&node, "V");
    let covered: u64 = extents.iter().map(|e| e.1).sum();
    assert_eq!(
        covered,
        64 * MIB,
        "map does not cover the export: {extents:?}"
    );
    assert_eq!(
        type_at(&extents, 8 * MIB) & 1,
        0,
        "written range reported as a hole: {extents:?}"
    );
    assert_eq!(
        type_at(&extents, 9 * MIB - 4096) & 1,
        0,
        "written range reported as a hole: {extents:?}"
    );
    assert_eq!(
        type_at(&extents, 0) & 1,
        1,
        "unwritten start is not a hole: {extents:?}"
    );
    assert_eq!(
        type_at(&extents, 32 * MIB) & 1,
        1,
        "unwritten middle is not a hole: {extents:?}"
    );
}

fn fio(node: &TestNode, uri: &str, job: &[&str]) {
    // fio writes its verify state files into the working directory: keep them in the
    // node's temporary directory, not in the source tree.
    let mut args = vec![
        "--ioengine=nbd".to_string(),
        format!("--uri={uri}"),
        format!("--directory={}", node.data().display()),
        "--verify_state_save=0".to_string(),
    ];
    args.extend(job.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("fio", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fio {args:?} failed ({}):\n{text}\nnode log:\n{}",
        out.status,
        node.log_text()
    );
    let lower = text.to_lowercase();
    assert!(
        !lower.contains("verify:")
            && !lower.contains("bad magic")
            && !lower.contains("crc32c: verify"),
        "fio {args:?} reported verify errors:\n{text}"
    );
    for line in lower.lines().filter(|l| l.contains("err=")) {
        assert!(
            line.contains("err= 0"),
            "fio {args:?} reported an error:\n{text}"
        );
    }
}

#[test]
fn fio_verifies_random_sequential_and_mixed_io() {
    if skip_without(&common::tools::FIO_NBD) {
        return;
    }
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let uri = node.uri("V");
    fio(
        &node,
        &uri,
        &[
            "--name=randwrite",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=64M",
            "--verify=crc32c",
            "--do_verify=1",
            "--end_fsync=1",
        ],
    );
    fio(
        &node,
        &uri,
        &[
            "--name=seq",
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            "--size=64M",
            "--verify=crc32c",
            "--do_verify=1",
            "--end_fsync=1",
        ],
    );
    fio(
        &node,
        &uri,
        &[
            "--name=mix",
            "--rw=randrw",
            "--rwmixread=50",
            "--bs=64k",
            "--iodepth=16",
            "--size=32M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_backlog=64",
            "--end_fsync=1",
        ],
    );
    assert!(
        testdata::node_alive(node.data()),
        "node died:\n{}",
        node.log_text()
    );
}

/// 48 MiB of seeded random data with a 4 MiB hole of zeros in the middle.
fn random_image(path: &std::path::Path) -> Vec<u8> {
    let mut data = XorShift::new(48).bytes(48 * MIB as usize);
    data[(22 * MIB) as usize..(26 * MIB) as usize].fill(0);
    // A zero run that is not block aligned, too.
    data[(30 * MIB + 1000) as usize..(30 * MIB + 70_000) as usize].fill(0);
    std::fs::write(path, &data).expect("write source file");
    data
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn nbdcopy_round_trip(connections: Option<&str>) {
    if skip_without(&common::tools::NBDCOPY) {
        return;
    }
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "48M");
    let uri = node.uri("V");
    let source = node.data().join("source.bin");
    let copy = node.data().join("copy.bin");
    let data = random_image(&source);

    let source_arg = source.to_str().unwrap();
    let copy_arg = copy.to_str().unwrap();
    let mut upload = vec!["--flush"];
    let mut download = vec![];
    if let Some(c) = connections {
        upload.push(c);
        download.push(c);
    }
    upload.extend([source_arg, uri.as_str()]);
    download.extend([uri.as_str(), copy_arg]);
    run_ok(&node, "nbdcopy", &upload);
    run_ok(&node, "nbdcopy", &download);

    let back = std::fs::read(&copy).expect("read copy");
    if let Some(at) = first_difference(&data, &back) {
        panic!(
            "nbdcopy round trip differs at byte {at} (lengths {} and {})",
            data.len(),
            back.len()
        );
    }
}

#[test]
fn nbdcopy_round_trip_one_connection() {
    nbdcopy_round_trip(None);
}

#[test]
fn nbdcopy_round_trip_four_connections() {
    nbdcopy_round_trip(Some("--connections=4"));
}

#[test]
fn concurrent_connections_keep_their_regions() {
    let node = Arc::new(TestNode::start());
    node.pool_and_volume("P", "200M", "V", "64M");
    const REGION: u64 = 8 * MIB;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let node = Arc::clone(&node);
            std::thread::spawn(move || {
                let mut client = NbdClient::connect(&node.nbd_socket(), "V").expect("connect");
                assert_eq!(client.size, 64 * MIB);
                let base = t * REGION;
                let mut rng = XorShift::new(100 + t);
                let mut model = vec![0u8; REGION as usize];
                for round in 0..64 {
                    let len = 4096 * (1 + rng.below(32)) as usize;
                    let offset = 4096 * rng.below((REGION - len as u64) / 4096 + 1);
                    let data = rng.bytes(len);
                    let flags = if round % 8 == 0 {
                        common::nbd_client::FLAG_FUA
                    } else {
                        0
                    };
                    client.write(base + offset, &data, flags).expect("write");
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
                client.flush().expect("flush");
                let mut back = vec![0u8; REGION as usize];
                for (i, chunk) in back.chunks_mut(MIB as usize).enumerate() {
                    client.read(base + i as u64 * MIB, chunk).expect("read");
                }
                if let Some(at) = first_difference(&model, &back) {
                    panic!("connection {t}: region differs at byte {at}");
                }
                client.disconnect();
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
}

#[test]
fn a_write_on_one_connection_is_visible_on_another() {
    let node = TestNode::start();
    node.pool_and_volume("P", "200M", "V", "64M");
    let mut writer = NbdClient::connect(&node.nbd_socket(), "V").expect("connect writer");
    let mut reader = NbdClient::connect(&node.nbd_socket(), "V").expect("connect reader");
    let mut rng = XorShift::new(5);
    // The reader warms the block in its path first, so a stale cached copy would show.
    for i in 0..200u64 {
        let offset = 4096 * rng.below(64 * MIB / 4096 - 16);
        let len = 4096 * (1 + rng.below(16)) as usize;
        let mut before = vec![0u8; len];
        reader.read(offset, &mut before).expect("read before");
        let data = rng.bytes(len);
        writer.write(offset, &data, 0).expect("write");
        let mut after = vec![0u8; len];
        reader.read(offset, &mut after).expect("read after");
        assert!(
            after == data,
            "round {i}: write at {offset}+{len} not visible on the other connection"
        );
        // Sub-block writes too.
        let small_offset = offset + 512 * rng.below(8);
        let small = rng.bytes(512);
        reader.write(small_offset, &small, 0).expect("small write");
        let mut seen = vec![0u8; 512];
        writer.read(small_offset, &mut seen).expect("small read");
        assert!(
            seen == small,
            "round {i}: 512-byte write at {small_offset} not visible"
        );
    }
    writer.disconnect();
    reader.disconnect();
}
