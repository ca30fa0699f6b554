use std::time::{Duration, Instant};

use super::*;
use crate::io::{ALIGN, AlignedBuf, Device, IoRing};

const DEVICE_SIZE: u64 = 4 << 20;

/// A plane with one device `dev0` of 4 MiB in a temporary directory.
struct Rig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    plane: FaultPlane,
    device: Device,
    ring: IoRing,
}

impl Rig {
    fn new(write_cache: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev0.img");
        let device = Device::open(&path, Some(DEVICE_SIZE), None).unwrap();
        let plane = FaultPlane::new();
        let faults = plane.attach("dev0", &path, write_cache).unwrap();
        Rig {
            _dir: dir,
            path,
            plane,
            device: device.with_faults(faults),
            ring: IoRing::new(32).unwrap(),
        }
    }

    fn rule(&self, op: FaultOp, effect: FaultEffect, trigger: FaultTrigger, seed: u64) -> u64 {
        self.plane
            .inject(FaultSpec {
                device: "dev0".to_string(),
                op,
                effect,
                trigger,
                seed,
            })
            .unwrap()
            .id
    }

    fn write_block(&mut self, block: u64, fill: u8) -> std::io::Result<()> {
        let mut buf = AlignedBuf::new(ALIGN);
        buf.fill(fill);
        self.ring.write_at(&self.device, block * ALIGN as u64, &buf)
    }

    fn file_block(&self, block: u64) -> Vec<u8> {
        let data = std::fs::read(&self.path).unwrap();
        let at = (block as usize) * ALIGN;
        data[at..at + ALIGN].to_vec()
    }
}

#[test]
fn the_nth_write_fails_with_eio_once_and_is_not_performed() {
    let mut rig = Rig::new(0);
    rig.rule(FaultOp::Write, FaultEffect::Eio, FaultTrigger::Nth(3), 0);
    for block in 0..5u64 {
        let result = rig.write_block(block, 0x11 + block as u8);
        if block == 2 {
            let err = result.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "write #3 fails");
            assert!(
                rig.file_block(block).iter().all(|&b| b == 0),
                "not performed"
            );
        } else {
            result.unwrap();
            assert!(
                rig.file_block(block)
                    .iter()
                    .all(|&b| b == 0x11 + block as u8)
            );
        }
    }
    let rules = rig.plane.rules();
    assert_eq!((rules[0].matched, rules[0].fired), (5, 1));
    let log = rig.plane.log();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].sequence, log[0].offset), (3, 2 * ALIGN as u64));
    // Reads are not matched by a write rule; fsync rules fail syncs.
    rig.rule(FaultOp::Fsync, FaultEffect::Eio, FaultTrigger::Nth(1), 0);
    let mut buf = AlignedBuf::new(ALIGN);
    rig.ring.read_at(&rig.device, 0, &mut buf).unwrap();
    assert_eq!(
        rig.ring.sync(&rig.device).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    rig.ring.sync(&rig.device).unwrap();
    assert_eq!(rig.plane.clear(), 2);
    assert!(
        !rig.device.faults().active(),
        "no rule, no cache: off again"
    );
}

/// The fired faults of a seeded probability rule over a fixed sequence of operations.
fn fired_with_seed(seed: u64) -> Vec<(u64, u64)> {
    let mut rig = Rig::new(0);
    rig.rule(
        FaultOp::Read,
        FaultEffect::Eio,
        FaultTrigger::Probability(0.2),
        seed,
    );
    let mut buf = AlignedBuf::new(ALIGN);
    for i in 0..400u64 {
        let _ = rig
            .ring
            .read_at(&rig.device, (i % 64) * ALIGN as u64, &mut buf);
    }
    rig.plane
        .log()
        .iter()
        .map(|f| (f.sequence, f.offset))
        .collect()
}

#[test]
fn a_seed_replays_the_same_faults() {
    let first = fired_with_seed(42);
    let second = fired_with_seed(42);
    assert_eq!(first, second, "same seed, same faults");
    assert!(
        (40..=120).contains(&first.len()),
        "p = 0.2 over 400 reads fired {} times",
        first.len()
    );
    assert_ne!(first, fired_with_seed(43), "another seed, other faults");
}

#[test]
fn a_torn_write_lands_a_prefix_of_its_sectors_and_fails() {
    let mut rig = Rig::new(0);
    rig.write_block(7, 0xAA).unwrap();
    rig.write_block(8, 0xAA).unwrap();
    rig.rule(FaultOp::Write, FaultEffect::Tear, FaultTrigger::Nth(1), 9);
    let mut buf = AlignedBuf::new(2 * ALIGN);
    buf.fill(0x55);
    let err = rig
        .ring
        .write_at(&rig.device, 7 * ALIGN as u64, &buf)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let data = std::fs::read(&rig.path).unwrap();
    let range = &data[7 * ALIGN..9 * ALIGN];
    let landed = range.iter().take_while(|&&b| b == 0x55).count();
    assert_eq!(landed % SECTOR, 0, "cut at a sector boundary");
    assert!(landed < 2 * ALIGN, "not all of it landed");
    assert!(
        range[landed..].iter().all(|&b| b == 0xAA),
        "the rest is old"
    );
    // The ring reads what landed (O_DIRECT after a buffered write).
    let mut back = AlignedBuf::new(2 * ALIGN);
    rig.ring
        .read_at(&rig.device, 7 * ALIGN as u64, &mut back)
        .unwrap();
    assert_eq!(&back[..], range);
}

#[test]
fn delays_and_stalls_hold_completions_back() {
    let mut rig = Rig::new(0);
    rig.rule(
        FaultOp::Read,
        FaultEffect::DelayMs(60),
        FaultTrigger::Nth(2),
        0,
    );
    let mut buf = AlignedBuf::new(ALIGN);
    let mut timed = |rig: &mut Rig| {
        let start = Instant::now();
        rig.ring.read_at(&rig.device, 0, &mut buf).unwrap();
        start.elapsed()
    };
    timed(&mut rig);
    assert!(
        timed(&mut rig) >= Duration::from_millis(60),
        "read #2 delayed"
    );
    rig.plane.clear();
    rig.rule(
        FaultOp::Write,
        FaultEffect::StallMs(80),
        FaultTrigger::Nth(1),
        0,
    );
    let start = Instant::now();
    rig.write_block(1, 1).unwrap();
    // A read, which no rule matches, waits out the device's stall too.
    rig.ring.read_at(&rig.device, 0, &mut buf).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(80));
}

#[test]
fn a_power_cut_keeps_flushed_writes_and_leaves_each_other_block_old_new_or_torn() {
    for seed in 0..20u64 {
        let mut rig = Rig::new(1 << 20);
        for block in 0..32u64 {
            rig.write_block(block, 0x10).unwrap();
        }
        rig.ring.sync(&rig.device).unwrap();
        assert_eq!(
            rig.device.faults().cached_bytes(),
            0,
            "a sync empties the cache"
        );
        for block in 0..32u64 {
            rig.write_block(block, 0x20).unwrap();
        }
        // Block 0 is written twice after the sync: old, first or second write, or torn.
        rig.write_block(0, 0x30).unwrap();
        assert_eq!(rig.device.faults().cached_bytes(), 33 * ALIGN as u64);
        rig.plane.lose_volatile_writes(seed);
        let mut torn = 0;
        let mut lost = 0;
        for block in 0..32u64 {
            let data = rig.file_block(block);
            let sectors: Vec<u8> = data.chunks(SECTOR).map(|s| s[0]).collect();
            for sector in data.chunks(SECTOR) {
                assert!(sector.iter().all(|&b| b == sector[0]), "sectors are whole");
            }
            if sectors.iter().all(|&s| s == sectors[0]) {
                assert!([0x10, 0x20, 0x30].contains(&sectors[0]));
                lost += usize::from(sectors[0] == 0x10);
            } else {
                torn += 1;
            }
        }
        assert!(torn <= 1, "seed {seed}: {torn} torn blocks");
        assert!(
            lost > 0 && lost < 32,
            "seed {seed}: a random subset is lost ({lost})"
        );
    }
}

#[test]
fn writes_flushed_before_a_cut_all_survive_and_a_full_cache_retires_its_oldest() {
    let mut rig = Rig::new(64 * ALIGN as u64);
    for block in 0..200u64 {
        rig.write_block(block, 0x40).unwrap();
    }
    assert_eq!(
        rig.device.faults().cached_bytes(),
        64 * ALIGN as u64,
        "the cache holds at most its size"
    );
    rig.ring.sync(&rig.device).unwrap();
    rig.plane.lose_volatile_writes(5);
    for block in 0..200u64 {
        assert!(
            rig.file_block(block).iter().all(|&b| b == 0x40),
            "block {block}"
        );
    }
}

#[test]
fn rules_are_checked_and_name_what_is_wrong() {
    let rig = Rig::new(0);
    let bad = |op, effect, trigger| {
        rig.plane
            .inject(FaultSpec {
                device: "dev0".to_string(),
                op,
                effect,
                trigger,
                seed: 0,
            })
            .unwrap_err()
            .to_string()
    };
    assert!(bad(FaultOp::Read, FaultEffect::Tear, FaultTrigger::Nth(1)).contains("tear"));
    assert!(bad(FaultOp::Read, FaultEffect::Eio, FaultTrigger::Nth(0)).contains("nth"));
    assert!(
        bad(
            FaultOp::Read,
            FaultEffect::Eio,
            FaultTrigger::Probability(1.5)
        )
        .contains("probability")
    );
    let unknown = rig
        .plane
        .inject(FaultSpec {
            device: "nlsas9".to_string(),
            op: FaultOp::Read,
            effect: FaultEffect::Eio,
            trigger: FaultTrigger::Nth(1),
            seed: 0,
        })
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("nlsas9") && unknown.contains("dev0"),
        "{unknown}"
    );
}
