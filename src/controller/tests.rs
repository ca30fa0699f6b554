//! The fake-controller harness: three controllers over a small real store (files in a
//! temporary directory), driven by a seeded sequence of writes, reads, flushes, destage
//! batches, failures and recoveries, against an in-memory model of the volume. Writes and
//! destage batches can be cut short at each of their steps (`cache::tests::FaultPoint`), as
//! if the controller doing them lost power there; the controller then fails. Every read,
//! and a full read of the volume after every ownership change, must match the model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::tests::FaultPoint;
use crate::meta::Provisioning;
use crate::testing::{Rng, open_small_store};
use crate::types::BLOCK_SIZE;

#[test]
fn controller_ids_are_checked() {
    assert!(ControllerId::new(2, 3).is_some());
    assert!(ControllerId::new(3, 3).is_none());
    assert_eq!(ControllerId::new(0, 3).unwrap().to_string(), "1");
}

const VOLUME_SIZE: u64 = 8 << 20;

/// Three controllers over a small real store in `dir`, with 16 MiB of cache each (16
/// slots per shard: a small volume's sections and their mirror copies fit even when all
/// are dirty) destaged only when a test asks, and a thin volume "v" of `volume_size` in a
/// pool of `pool_size`.
pub(super) fn small_node(
    dir: &std::path::Path,
    pool_size: u64,
    volume_size: u64,
) -> (Arc<Cache>, Arc<Controllers>) {
    let (meta, recovered) = open_small_store(dir);
    let meta = Arc::new(meta);
    let routing = Arc::new(routing::Routing::new(3));
    let cache = Cache::start(meta.clone(), 3, 16 << 20, recovered, routing.clone());
    cache.set_manual_destage(true);
    let controllers = Controllers::new(cache.clone(), routing, 3);
    let pool = meta.create_pool("pool", pool_size, 1 << 30).unwrap();
    meta.create_volume("v", pool.id, volume_size, Provisioning::Thin)
        .unwrap();
    (cache, controllers)
}

struct Harness {
    _dir: tempfile::TempDir,
    cache: Arc<Cache>,
    controllers: Arc<Controllers>,
    targets: Vec<Arc<dyn BlockTarget>>,
    model: Vec<u8>,
    rng: Rng,
    seed: u64,
    failovers: usize,
}

impl Harness {
    fn start(seed: u64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (cache, controllers) = small_node(dir.path(), 64 << 20, VOLUME_SIZE);
        let targets = controllers
            .ids()
            .iter()
            .map(|id| controllers.open_export_on("v", *id).unwrap())
            .collect();
        Harness {
            _dir: dir,
            cache,
            controllers,
            targets,
            model: vec![0; VOLUME_SIZE as usize],
            rng: Rng(seed | 1),
            seed,
            failovers: 0,
        }
    }

    fn live_ports(&self) -> Vec<usize> {
        self.controllers
            .ids()
            .iter()
            .filter(|id| self.controllers.state(**id).ports_open())
            .map(|id| id.index())
            .collect()
    }

    fn any_port(&mut self) -> usize {
        let live = self.live_ports();
        live[self.rng.below(live.len() as u64) as usize]
    }

    fn random_range(&mut self) -> (u64, usize) {
        let len = match self.rng.below(4) {
            0 => 1 + self.rng.below(3 * BLOCK_SIZE as u64) as usize,
            1 => BLOCK_SIZE,
            2 => BLOCK_SIZE * (1 + self.rng.below(20) as usize),
            _ => 1 + self.rng.below(200_000) as usize,
        };
        let aligned = self.rng.below(2) == 0;
        let mut offset = self.rng.below(VOLUME_SIZE - len as u64);
        if aligned {
            offset -= offset % BLOCK_SIZE as u64;
        }
        (offset, len)
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        let tag = self.rng.next();
        (0..len)
            .map(|index| (tag.wrapping_add(index as u64 / 7) >> (index % 8)) as u8)
            .collect()
    }

    fn write(&mut self) {
        let (offset, len) = self.random_range();
        let data = self.data(len);
        let port = self.any_port();
        self.targets[port]
            .write(offset, &data, false)
            .unwrap_or_else(|err| panic!("seed {}: write failed: {err}", self.seed));
        self.model[offset as usize..offset as usize + len].copy_from_slice(&data);
    }

    fn read_check(&mut self, port: usize, offset: u64, len: usize) {
        let mut buf = vec![0u8; len];
        self.targets[port]
            .read(offset, &mut buf)
            .unwrap_or_else(|err| panic!("seed {}: read failed: {err}", self.seed));
        if buf != self.model[offset as usize..offset as usize + len] {
            let first = buf
                .iter()
                .zip(&self.model[offset as usize..])
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "seed {}: byte {} reads {:#x}, the model says {:#x} (read {offset}+{len} on controller {})",
                self.seed,
                offset as usize + first,
                buf[first],
                self.model[offset as usize + first],
                port + 1
            );
        }
    }

    fn read(&mut self) {
        let (offset, len) = self.random_range();
        let port = self.any_port();
        self.read_check(port, offset, len);
    }

    fn check_everything(&mut self) {
        let port = self.any_port();
        let mut offset = 0;
        while offset < VOLUME_SIZE {
            self.read_check(port, offset, 1 << 20);
            offset += 1 << 20;
        }
    }

    /// A write cut short at `point`: not acknowledged, so each block it touched reads back
    /// whole-old or whole-new afterwards; the model takes whichever it is.
    fn cut_write(&mut self, point: FaultPoint) {
        let (offset, len) = self.random_range();
        let data = self.data(len);
        let port = self.any_port();
        self.cache.arm_fault(point);
        let outcome = self.targets[port].write(offset, &data, false);
        assert!(
            outcome.is_err() || self.cache.fault_pending(),
            "seed {}: the write passed {point:?} without stopping",
            self.seed
        );
        // Disarm if the write never reached the point (e.g. no mirror).
        let _ = self.cache.fault_point(point);
        self.fail_someone(false);
        self.settle_uncertain(offset, len, &data);
        // The host saw an error and writes again, as hosts do.
        let port = self.any_port();
        self.targets[port]
            .write(offset, &data, false)
            .unwrap_or_else(|err| panic!("seed {}: retried write failed: {err}", self.seed));
        self.model[offset as usize..offset as usize + len].copy_from_slice(&data);
    }

    fn settle_uncertain(&mut self, offset: u64, len: usize, new: &[u8]) {
        let port = self.any_port();
        let mut buf = vec![0u8; len];
        self.targets[port].read(offset, &mut buf).unwrap();
        let start_block = offset as usize / BLOCK_SIZE;
        let end_block = (offset as usize + len).div_ceil(BLOCK_SIZE);
        for block in start_block..end_block {
            let from = (block * BLOCK_SIZE).max(offset as usize);
            let to = ((block + 1) * BLOCK_SIZE).min(offset as usize + len);
            let got = &buf[from - offset as usize..to - offset as usize];
            let old = &self.model[from..to];
            let fresh = &new[from - offset as usize..to - offset as usize];
            assert!(
                got == old || got == fresh,
                "seed {}: block {block} of an interrupted write is neither old nor new",
                self.seed
            );
        }
        self.model[offset as usize..offset as usize + len].copy_from_slice(&buf);
    }

    fn destage(&mut self, cut: Option<FaultPoint>) {
        let domain = self.live_ports()[0];
        if let Some(point) = cut {
            self.cache.arm_fault(point);
        }
        self.cache
            .destage_now(domain)
            .unwrap_or_else(|err| panic!("seed {}: destage failed: {err}", self.seed));
        if let Some(point) = cut {
            let hit = !self.cache.fault_pending();
            let _ = self.cache.fault_point(point);
            if hit {
                // The controller that was destaging lost power at that step.
                self.fail(ControllerId::new(domain, 3).unwrap(), true);
            }
        }
    }

    fn wait_for_redundancy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cache.unmirrored_blocks() > 0 {
            assert!(
                Instant::now() < deadline,
                "seed {}: re-mirroring stuck",
                self.seed
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Fails `id`; `check`: read the whole volume against the model afterwards.
    fn fail(&mut self, id: ControllerId, check: bool) {
        if self.live_ports().len() < 2 {
            return;
        }
        self.wait_for_redundancy();
        self.controllers
            .fail(id, failover::FailReason::Injected)
            .unwrap_or_else(|err| panic!("seed {}: fail {id}: {err}", self.seed));
        self.failovers += 1;
        if check {
            self.check_everything();
        }
    }

    fn fail_someone(&mut self, check: bool) {
        let live = self.live_ports();
        if live.len() >= 2 {
            let victim = live[self.rng.below(live.len() as u64) as usize];
            self.fail(ControllerId::new(victim, 3).unwrap(), check);
        }
    }

    fn recover_all(&mut self) {
        for id in self.controllers.ids().to_vec() {
            if self.controllers.state(id) == state::ControllerState::Failed {
                self.controllers.recover(id).unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                while self.controllers.state(id) != state::ControllerState::Active {
                    assert!(
                        Instant::now() < deadline,
                        "seed {}: failback stuck",
                        self.seed
                    );
                    // Host I/O goes on during failback; destage makes room for the
                    // sections moving back.
                    self.write();
                    self.read();
                    for domain in self.live_ports() {
                        self.cache.destage_now(domain).unwrap();
                    }
                }
                self.check_everything();
            }
        }
    }

    fn step(&mut self) {
        let choice = self.rng.below(100);
        if std::env::var_os("TROIKA_HARNESS_TRACE").is_some() {
            eprintln!("op {choice}");
        }
        match choice {
            0..=44 => self.write(),
            45..=69 => self.read(),
            70..=74 => {
                let port = self.any_port();
                self.targets[port].flush().unwrap();
            }
            75..=84 => self.destage(None),
            85..=87 => self.cut_write(FaultPoint::AfterPrimary),
            88..=89 => self.cut_write(FaultPoint::AfterMirror),
            90 => self.destage(Some(FaultPoint::DestageBeforeCommit)),
            91 => self.destage(Some(FaultPoint::DestageAfterCommit)),
            92..=95 => self.fail_someone(true),
            _ => self.recover_all(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cache.set_manual_destage(false);
        let _ = self.cache.shutdown();
    }
}

#[test]
fn seeded_failovers_lose_no_acknowledged_write() {
    let seeds: Vec<u64> = match std::env::var("TROIKA_HARNESS_SEED") {
        Ok(seed) => vec![seed.parse().expect("TROIKA_HARNESS_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let mut harness = Harness::start(seed);
        for step in 0..400 {
            harness.step();
            harness.wait_for_redundancy();
            if let Err(err) = harness
                .cache
                .check_counters()
                .and_then(|()| harness.cache.check_mirrors())
            {
                panic!("seed {seed}, step {step}: {err}");
            }
        }
        harness.recover_all();
        harness.check_everything();
        // Everything destaged and checked once more from the array.
        harness.cache.set_manual_destage(false);
        harness.cache.drain().unwrap();
        harness.check_everything();
        assert!(
            harness.failovers >= 5,
            "seed {seed}: only {} failovers",
            harness.failovers
        );
    }
}

#[test]
fn a_write_is_in_two_domains_before_it_is_acknowledged() {
    let harness = Harness::start(9);
    harness.targets[0].write(0, &[0xAB; 65536], false).unwrap();
    let mut owners = 0;
    let mut mirrors = 0;
    for id in harness.controllers.ids() {
        let (dirty, mirror, unmirrored, _) = harness.cache.domain_figures(*id);
        owners += dirty;
        mirrors += mirror;
        assert_eq!(unmirrored, 0);
    }
    assert_eq!(owners, 65536);
    assert_eq!(mirrors, 65536);
}

#[test]
fn one_controller_left_writes_through_to_the_vault() {
    let harness = Harness::start(11);
    let ids = harness.controllers.ids().to_vec();
    harness
        .controllers
        .fail(ids[0], failover::FailReason::Injected)
        .unwrap();
    harness.wait_for_redundancy();
    harness
        .controllers
        .fail(ids[1], failover::FailReason::Injected)
        .unwrap();
    let refused = harness
        .controllers
        .fail(ids[2], failover::FailReason::Injected)
        .unwrap_err();
    assert_eq!(refused, ControllerError::LastLive { id: ids[2] });
    let vaulted = harness
        .cache
        .counters
        .blocks_vaulted
        .load(std::sync::atomic::Ordering::Relaxed);
    harness.targets[2].write(4096, &[1; 8192], false).unwrap();
    let after = harness
        .cache
        .counters
        .blocks_vaulted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(after >= vaulted + 2, "{vaulted} -> {after}");
    // Requests on a failed controller's port are refused.
    assert!(harness.targets[0].write(0, &[1; 4096], false).is_err());
}

/// Controller 1 fails, its sections' mirror copies become primaries with no second copy
/// yet, the host flushes, and controller 2 fails by a fault (an injected failure is
/// refused then) before re-mirroring copies them: every flushed write still reads back,
/// through the last controller.
#[test]
fn flushed_writes_survive_a_fault_on_a_second_controller_while_re_mirroring() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, controllers) = small_node(dir.path(), 64 << 20, VOLUME_SIZE);
    cache.set_remirror_held(true);
    let ids = controllers.ids().to_vec();
    let targets: Vec<_> = ids
        .iter()
        .map(|id| controllers.open_export_on("v", *id).unwrap())
        .collect();
    let len = 4 << 20;
    let mut model: Vec<u8> = (0..len)
        .map(|at| (at / 4096 * 7 + at % 251) as u8)
        .collect();
    targets[2].write(0, &model, false).unwrap();
    controllers
        .fail(ids[0], failover::FailReason::Injected)
        .unwrap();
    assert!(
        cache.unmirrored_blocks() > 0,
        "nothing waits for re-mirroring"
    );
    targets[2].flush().unwrap();
    // Acknowledged after the flush and mirrored: survives by its mirror copy.
    let late = vec![0xC3u8; 3 * BLOCK_SIZE];
    targets[2].write(1 << 20, &late, false).unwrap();
    model[1 << 20..(1 << 20) + late.len()].copy_from_slice(&late);
    assert!(matches!(
        controllers.fail(ids[1], failover::FailReason::Injected),
        Err(ControllerError::StillRemirroring { .. })
    ));
    controllers
        .fail(ids[1], failover::FailReason::Panic)
        .unwrap();
    let mut buf = vec![0u8; len];
    targets[2].read(0, &mut buf).unwrap();
    let wrong = (0..len / BLOCK_SIZE)
        .filter(|block| {
            buf[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
                != model[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
        })
        .count();
    assert_eq!(wrong, 0, "{wrong} flushed blocks do not read back");
    cache.set_remirror_held(false);
    cache.set_manual_destage(false);
    cache.shutdown().unwrap();
}
