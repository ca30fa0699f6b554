//! The SSD read cache through the real binary (issue "Neural Cache"), on a one-controller
//! model whose DRAM (16M) is smaller than its hot sets, with a 64M cache SSD:
//!
//! * [`hot_reads_come_from_the_ssd_and_stay_warm_across_restarts`]: after a warm-up, the
//!   hot set's reads are DRAM or SSD hits; after a clean restart and after kill -9, the
//!   first pass over it is mostly SSD hits, not a re-read from the drives.
//! * [`flipped_bits_in_the_cache_ssd_are_caught`]: bits flipped in cached blocks on the
//!   SSD file are refused by verification (the mismatch counter rises) and every read is
//!   right.
//! * [`a_volume_with_ssd_disabled_never_admits`]: `ssd_enabled: false` keeps a volume out of
//!   the tier; turning it on again lets it in.
//! * [`a_scan_does_not_flush_the_hot_set`]: a sequential read of 10× the SSD cache costs
//!   the hot set fewer than 5 points of hit ratio.
//! * [`a_failing_cache_ssd_costs_only_cache`]: read EIO injected on the cache SSD fails the
//!   tier (event, `failed`), and no host read fails or returns wrong data.
//!
//! Every read is checked against the stamp written (tests/common/stamp.rs).

mod common;
#[path = "common/rest_unix.rs"]
mod rest_unix;
#[path = "common/stamp.rs"]
mod stamp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestNode;
use common::nbd_client::NbdClient;
use stamp::BLOCK;

const TAG: u32 = 17;
const CACHE_SSD: u64 = 64 << 20;

fn model(dir: &Path) -> PathBuf {
    let mut text = String::from(
        "name = \"troika-ssd-cache-test\"\ncontrollers = 1\ndram_per_controller = \"16M\"\n\n\
         [stripe]\ndata = 4\nparity = 2\nunit = \"64K\"\nrows_per_segment = 4\n\n\
         [[ssd]]\nname = \"ssd0\"\npath = \"ssd0.img\"\nsize = \"256M\"\n\n\
         [[ssd]]\nname = \"ssd1\"\npath = \"ssd1.img\"\nsize = \"64M\"\nrole = \"cache\"\n\n",
    );
    for drive in 0..6 {
        text.push_str(&format!(
            "[[nlsas]]\nname = \"nlsas{drive}\"\npath = \"nlsas{drive}.img\"\nsize = \"384M\"\n\n"
        ));
    }
    let path = dir.join("ssd-cache.toml");
    std::fs::write(&path, text).expect("write the model");
    path
}

struct Rig {
    _dir: tempfile::TempDir,
    node: TestNode,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = TestNode::start_with_model(model(dir.path()));
        node.cli_ok(&["pool", "create", "p", "--size", "1000M"]);
        Rig { _dir: dir, node }
    }

    fn volume(&self, name: &str, bytes: u64) {
        self.node.cli_ok(&[
            "vol",
            "create",
            name,
            "--pool",
            "p",
            "--size",
            &format!("{}M", bytes >> 20),
        ]);
    }

    fn client(&self, volume: &str) -> NbdClient {
        NbdClient::connect(&self.node.nbd_socket(), volume).expect("connect")
    }

    /// Writes every block of the first `blocks` of `volume` stamped at version 1.
    fn fill(&self, volume: &str, blocks: u64) {
        let mut client = self.client(volume);
        let mut chunk = vec![0u8; 256 * BLOCK];
        for first in (0..blocks).step_by(256) {
            let count = (blocks - first).min(256);
            for at in 0..count {
                let bytes = &mut chunk[at as usize * BLOCK..(at as usize + 1) * BLOCK];
                stamp::stamp(TAG, first + at, 1, bytes);
            }
            client
                .write(first * BLOCK as u64, &chunk[..count as usize * BLOCK], 0)
                .expect("write");
        }
        client.flush().expect("flush");
        client.disconnect();
    }

    /// Reads every block of the first `blocks` of `volume` once, in a scattered order (no
    /// sequential stream), checking each; returns (DRAM, SSD, drives) blocks of the pass.
    fn random_pass(&self, volume: &str, blocks: u64) -> [u64; 3] {
        let before = self.sources(volume);
        let mut client = self.client(volume);
        let mut buf = vec![0u8; BLOCK];
        // A stride coprime with the count visits every block once, far apart.
        let stride = (0..)
            .map(|k| 7919 + k)
            .find(|s| gcd(*s, blocks) == 1)
            .unwrap();
        for step in 0..blocks {
            let lba = step * stride % blocks;
            client.read(lba * BLOCK as u64, &mut buf).expect("read");
            assert_eq!(
                stamp::version_of(TAG, lba, &buf),
                Ok(1),
                "block {lba} of {volume} reads wrong"
            );
        }
        client.disconnect();
        let after = self.sources(volume);
        [0, 1, 2].map(|at| after[at] - before[at])
    }

    fn sources(&self, volume: &str) -> [u64; 3] {
        let metrics = self.node.metrics();
        ["dram", "ssd", "drives"].map(|source| {
            metrics
                .iter()
                .filter(|(name, _)| {
                    name.starts_with("troika_volume_read_blocks_total{")
                        && name.contains(&format!("volume=\"{volume}\""))
                        && name.contains(&format!("source=\"{source}\""))
                })
                .map(|(_, value)| *value)
                .sum()
        })
    }

    fn ssd_metric(&self, name: &str) -> u64 {
        self.node
            .metrics()
            .iter()
            .filter(|(key, _)| key.starts_with(&format!("{name}{{")) || *key == name)
            .map(|(_, value)| *value)
            .sum()
    }

    /// Waits (at most 30 s) until the tier's admissions stop rising.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = u64::MAX;
        while Instant::now() < deadline {
            let now = self.ssd_metric("troika_ssd_cache_admissions_total");
            if now == last {
                return;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn hit_share(pass: [u64; 3]) -> f64 {
    (pass[0] + pass[1]) as f64 / pass.iter().sum::<u64>().max(1) as f64
}

const HOT_BLOCKS: u64 = (40 << 20) / BLOCK as u64;

fn warmed(rig: &Rig) -> [u64; 3] {
    rig.volume("hot", 40 << 20);
    rig.fill("hot", HOT_BLOCKS);
    rig.random_pass("hot", HOT_BLOCKS);
    rig.settle();
    rig.random_pass("hot", HOT_BLOCKS)
}

#[test]
fn hot_reads_come_from_the_ssd_and_stay_warm_across_restarts() {
    let mut rig = Rig::start();
    let warm = warmed(&rig);
    assert!(
        hit_share(warm) >= 0.9 && warm[1] > HOT_BLOCKS / 4,
        "a warm 40 MiB set over 16M of DRAM reads from DRAM and SSD: {warm:?} (dram, ssd, drives)"
    );
    rig.settle();
    rig.node.stop();
    rig.node.restart();
    let clean = rig.random_pass("hot", HOT_BLOCKS);
    assert!(
        clean[1] >= HOT_BLOCKS * 8 / 10,
        "after a clean restart the set comes from the SSD, not the drives: {clean:?}"
    );
    rig.settle();
    rig.node.kill9();
    rig.node.restart();
    let killed = rig.random_pass("hot", HOT_BLOCKS);
    assert!(
        killed[1] >= HOT_BLOCKS * 8 / 10,
        "after kill -9 the set comes from the SSD, not the drives: {killed:?}"
    );
    assert_eq!(rig.ssd_metric("troika_ssd_cache_mismatches_total"), 0);
    eprintln!(
        "(dram, ssd, drives): warm {warm:?}, after a clean restart {clean:?}, after kill -9 {killed:?}"
    );
}

#[test]
fn flipped_bits_in_the_cache_ssd_are_caught() {
    let mut rig = Rig::start();
    warmed(&rig);
    rig.settle();
    rig.node.stop();
    // Cached blocks are whole stamped 4 KiB pages of the cache SSD's file: flip a bit in
    // the middle of each one found.
    let path = rig.node.data().join("ssd1.img");
    let mut image = std::fs::read(&path).expect("read the cache SSD");
    let mut flipped = 0;
    for page in image.chunks_exact_mut(BLOCK) {
        if page[..4] == stamp_magic() {
            page[BLOCK / 2] ^= 0x10;
            flipped += 1;
        }
    }
    assert!(
        flipped > HOT_BLOCKS / 4,
        "cached blocks found on the SSD: {flipped}"
    );
    assert_eq!(image.len() as u64, CACHE_SSD);
    std::fs::write(&path, image).expect("write the cache SSD back");
    rig.node.restart();
    let pass = rig.random_pass("hot", HOT_BLOCKS);
    let mismatches = rig.ssd_metric("troika_ssd_cache_mismatches_total");
    eprintln!(
        "{flipped} damaged copies on the SSD, {mismatches} refused by verification; pass {pass:?}"
    );
    assert!(
        mismatches > 0 && mismatches >= flipped / 2,
        "{flipped} damaged copies, {mismatches} refused; pass {pass:?}"
    );
}

fn stamp_magic() -> [u8; 4] {
    let mut block = vec![0u8; BLOCK];
    stamp::stamp(TAG, 0, 1, &mut block);
    block[..4].try_into().unwrap()
}

#[test]
fn a_volume_with_ssd_disabled_never_admits() {
    let rig = Rig::start();
    rig.volume("hot", 40 << 20);
    let socket = rig.node.mgmt_socket();
    let id = rest_unix::id_of(&rest_unix::list(&socket, "volumes", "name=hot")[0]);
    rest_unix::ok(
        &socket,
        "PUT",
        &format!("/api/rest/volumes/{id}"),
        Some(r#"{"ssd_enabled": false}"#),
    );
    rig.fill("hot", HOT_BLOCKS);
    for _ in 0..2 {
        let pass = rig.random_pass("hot", HOT_BLOCKS);
        assert_eq!(pass[1], 0, "no SSD hits with ssd_enabled false: {pass:?}");
    }
    rig.settle();
    assert_eq!(rig.ssd_metric("troika_ssd_cache_admissions_total"), 0);
    rest_unix::ok(
        &socket,
        "PUT",
        &format!("/api/rest/volumes/{id}"),
        Some(r#"{"ssd_enabled": true}"#),
    );
    rig.random_pass("hot", HOT_BLOCKS);
    rig.settle();
    let pass = rig.random_pass("hot", HOT_BLOCKS);
    assert!(
        rig.ssd_metric("troika_ssd_cache_admissions_total") > 0 && pass[1] > 0,
        "turned on again, the volume uses the SSD: {pass:?}"
    );
}

#[test]
fn a_scan_does_not_flush_the_hot_set() {
    let rig = Rig::start();
    let hot_blocks = (24 << 20) / BLOCK as u64;
    rig.volume("hot", 24 << 20);
    rig.fill("hot", hot_blocks);
    let scan_bytes = 10 * CACHE_SSD;
    rig.volume("scan", scan_bytes);
    rig.fill("scan", scan_bytes / BLOCK as u64);
    rig.random_pass("hot", hot_blocks);
    rig.settle();
    let before = hit_share(rig.random_pass("hot", hot_blocks));
    // The scan, in 32 MiB stretches of 1 MiB reads, with a pass over the hot set after each.
    let mut during = [0u64; 3];
    let mut scan = rig.client("scan");
    let mut buf = vec![0u8; 1 << 20];
    for stretch in 0..scan_bytes / (32 << 20) {
        for mib in 0..32 {
            scan.read((stretch * 32 + mib) << 20, &mut buf)
                .expect("scan read");
        }
        let pass = rig.random_pass("hot", hot_blocks);
        for at in 0..3 {
            during[at] += pass[at];
        }
    }
    scan.disconnect();
    let during_share = hit_share(during);
    eprintln!(
        "hot set hit ratio {before:.3} before the scan, {during_share:.3} during it ({during:?})"
    );
    assert!(
        rig.ssd_metric("troika_ssd_cache_bypassed_total") > 0,
        "the scan's blocks bypass the SSD cache"
    );
    assert!(
        during_share >= before - 0.05,
        "hot set hit ratio {before:.3} before, {during_share:.3} during a scan of 10x the SSD cache ({during:?})"
    );
}

#[test]
fn a_failing_cache_ssd_costs_only_cache() {
    let rig = Rig::start();
    warmed(&rig);
    rig.settle();
    let socket = rig.node.mgmt_socket();
    rest_unix::inject_fault(
        &socket,
        r#"{"device": "ssd1", "op": "read", "error": "EIO"}"#,
    );
    for _ in 0..2 {
        rig.random_pass("hot", HOT_BLOCKS);
    }
    assert_eq!(rig.ssd_metric("troika_ssd_cache_failed"), 1);
    let events = rest_unix::list(&socket, "events", "code=SSD_CACHE_FAILED");
    assert_eq!(events.len(), 1, "one SSD_CACHE_FAILED event: {events:?}");
    let pass = rig.random_pass("hot", HOT_BLOCKS);
    assert_eq!(pass[1], 0, "a failed tier answers nothing: {pass:?}");
}
