//! Cost of the redirect-on-write map on the I/O path: every read looks a block up
//! (`get`), every destaged block replaces its entry (`set`), every trim or volume delete
//! drops a range (`remove_range`). The map is filled with 1M entries (4 GiB of written
//! blocks) so lookups run against a table much larger than the CPU caches.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use troika::meta::forest::Freed;
use troika::meta::{Forest, MapEntry};

/// One dataset of the forest of maps, as the I/O path uses it.
struct BlockMap {
    forest: Forest,
    freed: Vec<Freed>,
}

impl BlockMap {
    fn new() -> Self {
        let mut forest = Forest::new();
        forest.create(1, 1, 1 << 40);
        BlockMap {
            forest,
            freed: Vec::new(),
        }
    }

    fn get(&self, lba: u64) -> Option<MapEntry> {
        self.forest.get(1, lba)
    }

    fn set(&mut self, lba: u64, entry: MapEntry) -> Option<MapEntry> {
        self.freed.clear();
        self.forest.set(1, lba, entry, &mut self.freed)
    }

    fn remove_range(
        &mut self,
        start: u64,
        end: u64,
        generation: u64,
        mut removed: impl FnMut(u64, MapEntry),
    ) {
        self.freed.clear();
        self.forest
            .remove_range(1, start, end, generation, &mut self.freed, &mut removed);
    }

    fn iter(&self) -> impl Iterator<Item = (u64, MapEntry)> {
        self.forest.entries(1).into_iter()
    }
}

const ENTRIES: u64 = 1 << 20;
/// Lookups per measured iteration, so the per-iteration overhead of criterion is amortised.
const BATCH: u64 = 1024;

/// splitmix64: a deterministic, dependency-free stream of well-mixed numbers.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn entry(lba: u64, generation: u64) -> MapEntry {
    MapEntry {
        phys: lba.wrapping_mul(7) & 0xFFFF_FFFF,
        checksum: lba ^ 0xDEAD_BEEF,
        generation,
    }
}

/// A map holding blocks `0..ENTRIES` (dense, like a fully written 4 GiB volume).
fn filled() -> BlockMap {
    let mut map = BlockMap::new();
    for lba in 0..ENTRIES {
        map.set(lba, entry(lba, 1));
    }
    map
}

/// Random LBAs: `0..ENTRIES` for hits, beyond the written range for misses.
fn lbas(seed: u64, base: u64) -> Vec<u64> {
    let mut mix = Mix(seed);
    (0..BATCH).map(|_| base + mix.next() % ENTRIES).collect()
}

fn bench_get(c: &mut Criterion) {
    let map = filled();
    let hits = lbas(1, 0);
    let misses = lbas(2, ENTRIES * 4);
    // Misses inside chunks that exist but whose slot is vacant: holes in a sparse volume.
    let mut sparse = BlockMap::new();
    for lba in (0..ENTRIES * 2).step_by(2) {
        sparse.set(lba, entry(lba, 1));
    }
    let holes: Vec<u64> = lbas(3, 0)
        .into_iter()
        .map(|lba| (lba * 2 + 1) % (ENTRIES * 2))
        .collect();

    let mut group = c.benchmark_group("map/get");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("hit_random_1M", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &lba in &hits {
                sum = sum.wrapping_add(map.get(black_box(lba)).map_or(0, |e| e.phys));
            }
            sum
        })
    });
    group.bench_function("hit_sequential_1M", |b| {
        let mut next = 0u64;
        b.iter(|| {
            let mut sum = 0u64;
            for _ in 0..BATCH {
                sum = sum.wrapping_add(map.get(black_box(next)).map_or(0, |e| e.phys));
                next = (next + 1) % ENTRIES;
            }
            sum
        })
    });
    // The same lookups on a volume with 1,000 snapshots taken, then 1,024 random blocks
    // rewritten: the live volume's paths were copied, the snapshots share the rest.
    let mut snapshotted = filled();
    for snapshot in 2..1002 {
        snapshotted.forest.share(1, snapshot);
    }
    for &lba in &lbas(6, 0) {
        snapshotted.set(lba, entry(lba, 2));
    }
    group.bench_function("hit_random_1M_1000_snapshots", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &lba in &hits {
                sum = sum.wrapping_add(snapshotted.get(black_box(lba)).map_or(0, |e| e.phys));
            }
            sum
        })
    });
    group.bench_function("miss_no_chunk_1M", |b| {
        b.iter(|| {
            let mut found = 0u64;
            for &lba in &misses {
                found += u64::from(map.get(black_box(lba)).is_some());
            }
            found
        })
    });
    group.bench_function("miss_vacant_slot_1M", |b| {
        b.iter(|| {
            let mut found = 0u64;
            for &lba in &holes {
                found += u64::from(sparse.get(black_box(lba)).is_some());
            }
            found
        })
    });
    group.finish();
}

fn bench_set(c: &mut Criterion) {
    let mut map = filled();
    let targets = lbas(4, 0);
    let mut generation = 2u64;

    let mut group = c.benchmark_group("map/set");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("update_random_1M", |b| {
        b.iter(|| {
            generation += 1;
            let mut replaced = 0u64;
            for &lba in &targets {
                replaced += u64::from(map.set(black_box(lba), entry(lba, generation)).is_some());
            }
            replaced
        })
    });
    group.bench_function("insert_fresh_sequential", |b| {
        b.iter_batched_ref(
            BlockMap::new,
            |fresh| {
                for lba in 0..BATCH {
                    fresh.set(black_box(lba), entry(lba, 1));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_remove_range(c: &mut Criterion) {
    let mut group = c.benchmark_group("map/remove_range");
    // Trimming 1 MiB (256 blocks) out of a 1M-entry map; the timed body also refills the
    // 256 blocks (256 `set`s) so the map stays at 1M entries.
    let base = filled();
    let mut map = base_clone(&base);
    let mut mix = Mix(5);
    group.throughput(Throughput::Elements(256));
    group.bench_function("trim_then_refill_256_of_1M", |b| {
        b.iter(|| {
            let start = (mix.next() % (ENTRIES / 256)) * 256;
            let mut removed = 0u64;
            map.remove_range(start, start + 256, u64::MAX, |_, _| removed += 1);
            for lba in start..start + 256 {
                map.set(lba, entry(lba, 1));
            }
            removed
        })
    });
    // Dropping a whole 64K-block range (256 MiB) from a fresh 64K-entry map.
    group.throughput(Throughput::Elements(1 << 16));
    group.bench_function("drop_all_64K", |b| {
        b.iter_batched_ref(
            || {
                let mut small = BlockMap::new();
                for lba in 0..1u64 << 16 {
                    small.set(lba, entry(lba, 1));
                }
                small
            },
            |small| {
                let mut removed = 0u64;
                small.remove_range(0, 1 << 16, u64::MAX, |_, _| removed += 1);
                removed
            },
            BatchSize::LargeInput,
        )
    });
    // A range over an empty region of a 1M-entry map: the "nothing to do" cost.
    group.throughput(Throughput::Elements(256));
    group.bench_function("trim_unmapped_256_of_1M", |b| {
        b.iter(|| {
            let mut removed = 0u64;
            map.remove_range(
                black_box(ENTRIES * 8),
                ENTRIES * 8 + 256,
                u64::MAX,
                |_, _| removed += 1,
            );
            removed
        })
    });
    group.finish();
}

fn base_clone(map: &BlockMap) -> BlockMap {
    let mut copy = BlockMap::new();
    for (lba, e) in map.iter() {
        copy.set(lba, e);
    }
    copy
}

criterion_group!(benches, bench_get, bench_set, bench_remove_range);
criterion_main!(benches);
