//! The snapshot oracle: a seeded sequence of writes (to volumes and writable snapshots),
//! snapshots of volumes and of snapshots, restores, refreshes, deletions and copies by
//! reference inside a family (EXTENDED COPY), run on three
//! controllers over a small real store through the node's own management calls, against
//! an in-memory model. Every dataset must read back exactly as the model says, and the
//! space accounting must match the model's count of distinct written block versions: the
//! pool's allocated space, and each dataset's unique space. At the end the node shuts down
//! and opens again from its media, and everything must still match.
//!
//! `TROIKA_SNAPSHOT_SEED=N` replays one seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::NodeApi;
use crate::cache::Cache;
use crate::controller::{Controllers, routing::Routing};
use crate::hw::HwModel;
use crate::mgmt::api::{PoolCreate, SnapshotCreate, VolumeCreate, VolumeUpdate};
use crate::mgmt::{Management, MgmtError};
use crate::target::BlockTarget;
use crate::testing::{Rng, open_small_store};
use crate::types::BLOCK_SIZE;

const VOLUME_SIZE: u64 = 2 << 20;
const BLOCKS: usize = (VOLUME_SIZE / BLOCK_SIZE as u64) as usize;
const STEPS: usize = 220;

/// What the model knows of one dataset: for each block, the version written there (0:
/// never written), and the parent it was taken of.
#[derive(Clone)]
struct Dataset {
    name: String,
    parent: u32,
    master: bool,
    writable: bool,
    blocks: Vec<u64>,
}

/// The bytes of block version `version` (0 reads as zeroes).
fn version_bytes(version: u64, out: &mut [u8]) {
    if version == 0 {
        out.fill(0);
        return;
    }
    for (index, chunk) in out.chunks_mut(8).enumerate() {
        let word = version
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(index as u64);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

struct Node {
    dir: tempfile::TempDir,
    api: NodeApi,
    cache: Arc<Cache>,
    controllers: Arc<Controllers>,
}

impl Node {
    fn open(dir: tempfile::TempDir) -> Node {
        let (meta, recovered) = open_small_store(dir.path());
        let meta = Arc::new(meta);
        let routing = Arc::new(Routing::new(3));
        let cache = Cache::start(meta.clone(), 3, 8 << 20, recovered, routing.clone());
        let controllers = Controllers::new(cache.clone(), routing, 3);
        let api = NodeApi {
            hw: HwModel::embedded_default(),
            scrub: crate::node::scrub::test_scrubber(&meta, dir.path()),
            meta,
            cache: cache.clone(),
            controllers: controllers.clone(),
            faults: Default::default(),
            started_at: 0,
        };
        Node {
            dir,
            api,
            cache,
            controllers,
        }
    }

    fn target(&self, name: &str, port: usize) -> Arc<dyn BlockTarget> {
        let id = self.controllers.ids()[port];
        self.controllers
            .open_export_on(name, id)
            .unwrap_or_else(|| panic!("no export {name}"))
    }

    /// Waits until nothing is dirty and no dropped tree waits to be reclaimed.
    fn settle(&self) {
        self.cache.drain().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.api.meta.reclaim_pending() > 0 {
            assert!(Instant::now() < deadline, "reclaim did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn shutdown(self) -> tempfile::TempDir {
        self.cache.shutdown().unwrap();
        drop(self.api);
        drop(self.controllers);
        drop(self.cache);
        self.dir
    }
}

struct Oracle {
    node: Option<Node>,
    model: BTreeMap<u32, Dataset>,
    pool: u32,
    next_version: u64,
    rng: Rng,
    seed: u64,
    step: usize,
}

impl Oracle {
    fn node(&self) -> &Node {
        self.node.as_ref().expect("node is open")
    }

    fn start(seed: u64) -> Oracle {
        let node = Node::open(tempfile::tempdir().unwrap());
        let pool = node
            .api
            .create_pool(PoolCreate {
                name: "p".into(),
                physical_capacity: 48 << 20,
                virtual_capacity: Some(1 << 30),
            })
            .unwrap()
            .id;
        let mut oracle = Oracle {
            node: Some(node),
            model: BTreeMap::new(),
            pool,
            next_version: 1,
            rng: Rng(seed | 1),
            seed,
            step: 0,
        };
        for name in ["a", "b"] {
            let volume = oracle
                .node()
                .api
                .create_volume(VolumeCreate {
                    name: name.into(),
                    pool_id: pool,
                    size: VOLUME_SIZE,
                    provtype: None,
                    ssd_enabled: None,
                    write_protected: None,
                })
                .unwrap();
            oracle.model.insert(
                volume.id,
                Dataset {
                    name: name.into(),
                    parent: 0,
                    master: true,
                    writable: true,
                    blocks: vec![0; BLOCKS],
                },
            );
        }
        oracle
    }

    fn context(&self) -> String {
        format!("seed {} step {}", self.seed, self.step)
    }

    fn ids(&self, keep: impl Fn(&Dataset) -> bool) -> Vec<u32> {
        self.model
            .iter()
            .filter(|(_, dataset)| keep(dataset))
            .map(|(id, _)| *id)
            .collect()
    }

    fn write(&mut self) {
        let writable = self.ids(|d| d.writable);
        let id = self.rng.pick(&writable);
        let first = self.rng.below(BLOCKS as u64) as usize;
        let count = (1 + self.rng.below(24) as usize).min(BLOCKS - first);
        let mut data = vec![0u8; count * BLOCK_SIZE];
        for (index, block) in data.chunks_mut(BLOCK_SIZE).enumerate() {
            let version = self.next_version;
            self.next_version += 1;
            version_bytes(version, block);
            self.model.get_mut(&id).unwrap().blocks[first + index] = version;
        }
        let port = self.rng.below(3) as usize;
        let name = self.model[&id].name.clone();
        self.node()
            .target(&name, port)
            .write((first * BLOCK_SIZE) as u64, &data, false)
            .unwrap_or_else(|err| panic!("{}: write to {name}: {err}", self.context()));
    }

    fn snapshot(&mut self) {
        let all = self.ids(|_| true);
        let parent = self.rng.pick(&all);
        let writable = self.rng.below(3) == 0;
        let name = format!("s{}", self.step);
        let taken = self
            .node()
            .api
            .create_snapshots(vec![SnapshotCreate {
                name: Some(name.clone()),
                parent_id: parent,
                write_protected: Some(!writable),
                ..SnapshotCreate::default()
            }])
            .unwrap_or_else(|err| panic!("{}: snapshot of {parent}: {err}", self.context()));
        let blocks = self.model[&parent].blocks.clone();
        self.model.insert(
            taken[0].id,
            Dataset {
                name,
                parent,
                master: false,
                writable,
                blocks,
            },
        );
    }

    /// A family's members: datasets whose chain of parents reaches the same master.
    fn master_of(&self, mut id: u32) -> u32 {
        while self.model[&id].parent != 0 {
            id = self.model[&id].parent;
        }
        id
    }

    fn restore(&mut self) {
        let targets = self.ids(|d| d.master || d.writable);
        let target = self.rng.pick(&targets);
        let family = self.master_of(target);
        let sources: Vec<u32> = self
            .ids(|d| !d.master)
            .into_iter()
            .filter(|id| *id != target && self.master_of(*id) == family)
            .collect();
        if sources.is_empty() {
            return;
        }
        let source = self.rng.pick(&sources);
        self.node()
            .api
            .restore_volume(target, source)
            .unwrap_or_else(|err| {
                panic!("{}: restore {target} from {source}: {err}", self.context())
            });
        let blocks = self.model[&source].blocks.clone();
        self.model.get_mut(&target).unwrap().blocks = blocks;
    }

    fn refresh(&mut self) {
        let snapshots = self.ids(|d| !d.master);
        if snapshots.is_empty() {
            return;
        }
        let id = self.rng.pick(&snapshots);
        self.node()
            .api
            .refresh_snapshot(id)
            .unwrap_or_else(|err| panic!("{}: refresh {id}: {err}", self.context()));
        let parent = self.model[&id].parent;
        let blocks = self.model[&parent].blocks.clone();
        self.model.get_mut(&id).unwrap().blocks = blocks;
    }

    fn delete(&mut self) {
        let snapshots = self.ids(|d| !d.master);
        if snapshots.is_empty() {
            return;
        }
        let id = self.rng.pick(&snapshots);
        let has_children = self.model.values().any(|d| d.parent == id);
        let outcome = self.node().api.delete_volume(id);
        match (has_children, outcome) {
            (false, Ok(_)) => {
                self.model.remove(&id);
            }
            (true, Err(MgmtError { status: 400, .. })) => {}
            (children, outcome) => panic!(
                "{}: delete {id} (has children: {children}): {outcome:?}",
                self.context()
            ),
        }
    }

    fn make_writable(&mut self) {
        let protected = self.ids(|d| !d.writable);
        if protected.is_empty() {
            return;
        }
        let id = self.rng.pick(&protected);
        self.node()
            .api
            .update_volume(
                id,
                VolumeUpdate {
                    write_protected: Some(false),
                    ..VolumeUpdate::default()
                },
            )
            .unwrap();
        self.model.get_mut(&id).unwrap().writable = true;
    }

    /// A copy by reference (EXTENDED COPY inside a family), within one dataset or between
    /// two of one family. Everything is destaged first, so every block is shared and the
    /// copy takes no space (`check_space` counts each version once).
    fn copy(&mut self) {
        let writable = self.ids(|d| d.writable);
        let destination = self.rng.pick(&writable);
        let family = self.master_of(destination);
        let sources: Vec<u32> = self
            .ids(|_| true)
            .into_iter()
            .filter(|id| self.master_of(*id) == family)
            .collect();
        let source = self.rng.pick(&sources);
        let count = 1 + self.rng.below(64) as usize;
        let from = self.rng.below((BLOCKS - count + 1) as u64) as usize;
        let to = self.rng.below((BLOCKS - count + 1) as u64) as usize;
        if source == destination && from < to + count && to < from + count {
            return;
        }
        self.node().settle();
        let (port_a, port_b) = (self.rng.below(3) as usize, self.rng.below(3) as usize);
        let source_target = self.node().target(&self.model[&source].name, port_a);
        let outcome = self
            .node()
            .target(&self.model[&destination].name, port_b)
            .copy_by_reference(
                &*source_target,
                (from * BLOCK_SIZE) as u64,
                (to * BLOCK_SIZE) as u64,
                (count * BLOCK_SIZE) as u64,
            )
            .unwrap_or_else(|err| {
                panic!("{}: copy {source} -> {destination}: {err}", self.context())
            })
            .unwrap_or_else(|| panic!("{}: one family shares blocks", self.context()));
        assert_eq!(outcome.copied, 0, "{}: {outcome:?}", self.context());
        assert_eq!(
            outcome.shared + outcome.released,
            count as u64,
            "{}: {outcome:?}",
            self.context()
        );
        let blocks = self.model[&source].blocks[from..from + count].to_vec();
        self.model.get_mut(&destination).unwrap().blocks[to..to + count].copy_from_slice(&blocks);
    }

    fn check_read(&mut self, id: u32, first: usize, count: usize) {
        let dataset = &self.model[&id];
        let port = self.rng.below(3) as usize;
        let mut got = vec![0u8; count * BLOCK_SIZE];
        self.node()
            .target(&dataset.name, port)
            .read((first * BLOCK_SIZE) as u64, &mut got)
            .unwrap();
        let mut expected = vec![0u8; BLOCK_SIZE];
        for index in 0..count {
            version_bytes(dataset.blocks[first + index], &mut expected);
            assert!(
                got[index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE] == expected[..],
                "{}: {} block {} should hold version {}",
                self.context(),
                dataset.name,
                first + index,
                dataset.blocks[first + index]
            );
        }
    }

    fn check_all(&mut self) {
        let ids = self.ids(|_| true);
        for id in ids {
            self.check_read(id, 0, BLOCKS);
        }
    }

    /// Once destaged and reclaimed, the pool holds exactly the distinct versions some
    /// dataset refers to, and each dataset's unique space is the versions only it has, at
    /// one address (a block copied by reference within a dataset counts as shared).
    fn check_space(&mut self) {
        self.node().settle();
        let mut holders: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
        let mut places: BTreeMap<u64, usize> = BTreeMap::new();
        for (id, dataset) in &self.model {
            for version in dataset.blocks.iter().filter(|v| **v != 0) {
                holders.entry(*version).or_default().insert(*id);
                *places.entry(*version).or_default() += 1;
            }
        }
        let pool = self.node().api.pool(self.pool).unwrap();
        assert_eq!(
            pool.allocated_physical_space,
            holders.len() as u64 * BLOCK_SIZE as u64,
            "{}: pool space",
            self.context()
        );
        for id in self.ids(|_| true) {
            let unique = holders
                .iter()
                .filter(|(version, datasets)| {
                    datasets.len() == 1 && datasets.contains(&id) && places[version] == 1
                })
                .count() as u64;
            let info = self.node().api.volume(id).unwrap();
            assert_eq!(
                info.unique_size,
                unique * BLOCK_SIZE as u64,
                "{}: unique space of {}",
                self.context(),
                info.name
            );
        }
    }

    fn run(&mut self) {
        for step in 0..STEPS {
            self.step = step;
            match self.rng.below(20) {
                0..=8 => self.write(),
                9..=10 => self.snapshot(),
                11 => self.restore(),
                12 => self.refresh(),
                13 => self.delete(),
                14 => self.make_writable(),
                15 => self.check_space(),
                16 => self.copy(),
                _ => {
                    let ids = self.ids(|_| true);
                    let id = self.rng.pick(&ids);
                    let first = self.rng.below(BLOCKS as u64) as usize;
                    let count = (1 + self.rng.below(64) as usize).min(BLOCKS - first);
                    self.check_read(id, first, count);
                }
            }
        }
        self.check_all();
        self.check_space();
        // The maps and the catalog come back from media as they were.
        let node = self.node.take().unwrap();
        let dir = node.shutdown();
        self.node = Some(Node::open(dir));
        self.step = STEPS;
        self.check_all();
        self.check_space();
    }
}

#[test]
fn snapshots_restores_and_deletions_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("TROIKA_SNAPSHOT_SEED") {
        Ok(seed) => vec![seed.parse().expect("TROIKA_SNAPSHOT_SEED is a number")],
        Err(_) => vec![11, 12, 13],
    };
    for seed in seeds {
        let mut oracle = Oracle::start(seed);
        oracle.run();
        assert!(
            oracle.model.values().any(|d| !d.master),
            "seed {seed}: the sequence took no snapshot"
        );
    }
}

#[test]
fn policies_take_snapshots_when_due_and_keep_the_newest() {
    use crate::mgmt::api::{PolicyCreate, ScheduleInfo};
    let oracle = Oracle::start(5);
    let api = &oracle.node().api;
    let volume = *oracle.model.keys().next().unwrap();
    let policy = api
        .create_policy(PolicyCreate {
            name: "minutely".into(),
            enabled: None,
            schedules: vec![ScheduleInfo {
                name: "every-minute".into(),
                interval: 60,
                retention: 2,
                lock_duration: None,
            }],
            assets: Some(vec![volume]),
        })
        .unwrap();
    let start = crate::clock::now_ms();
    let taken: Vec<usize> = [0u64, 10, 60, 61, 120, 180]
        .iter()
        .map(|seconds| {
            let report = api.run_policies(start + seconds * 1000);
            assert!(
                report
                    .events
                    .iter()
                    .all(|(code, _, _)| *code != "SNAPSHOT_POLICY_FAILED"),
                "{:?}",
                report.events
            );
            report.taken.len()
        })
        .collect();
    assert_eq!(taken, [1, 0, 1, 0, 1, 1], "snapshots taken per pass");
    let info = api.policy(policy.id).unwrap();
    assert_eq!(info.snapshots_count, 2, "retention keeps the newest two");
    let names: Vec<String> = api
        .volumes()
        .into_iter()
        .filter(|volume| volume.volume_type == "SNAPSHOT")
        .map(|volume| volume.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A disabled policy takes nothing; a deleted one leaves its snapshots.
    api.update_policy(
        policy.id,
        crate::mgmt::api::PolicyUpdate {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(api.run_policies(start + 600_000).taken.is_empty());
    api.delete_policy(policy.id).unwrap();
    assert_eq!(
        api.volumes()
            .iter()
            .filter(|volume| volume.volume_type == "SNAPSHOT")
            .count(),
        2
    );
}
