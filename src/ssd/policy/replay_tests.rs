//! The acceptance on synthetic traces, through the replay harness: the chosen
//! policy against LRU and ARC on every mix at three sizes, and scan resistance.

use super::chosen;
use super::replay::{distinct_blocks, replay, replay_every_policy};
use super::traces::{Mix, Request, Rng, TraceSpec, Zipf, generate};

/// Cache sizes, in percent of a trace's distinct blocks.
const SIZES_PERCENT: [u64; 3] = [1, 5, 10];

#[test]
fn chosen_policy_beats_lru_and_stays_within_a_point_of_arc_on_every_mix() {
    let chosen_name = chosen(1).name();
    let mut failures = Vec::new();
    for mix in Mix::standard() {
        let spec = TraceSpec {
            mix,
            requests: 200_000,
            universe: 40_000,
            seed: 17,
        };
        let trace = generate(&spec);
        let distinct = distinct_blocks(&trace);
        for percent in SIZES_PERCENT {
            let capacity = (distinct * percent / 100) as u32;
            let results = replay_every_policy(&trace, capacity);
            let ratio = |name: &str| {
                let (_, stats) = results.iter().find(|(each, _)| *each == name).unwrap();
                assert!(
                    stats.reads > 0 && stats.cached > 0,
                    "{name}: replay did nothing"
                );
                stats.hit_ratio() * 100.0
            };
            let (chosen, lru, arc) = (ratio(chosen_name), ratio("lru"), ratio("arc"));
            println!(
                "{mix} {percent}% ({capacity} blocks): {chosen_name} {chosen:.2} \
                 lru {lru:.2} arc {arc:.2}"
            );
            if chosen < lru || chosen < arc - 1.0 {
                failures.push(format!(
                    "{mix} at {percent}%: {chosen_name} {chosen:.2}, lru {lru:.2}, arc {arc:.2}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Hot-set reads (Zipf 1.0 over 80% of the capacity) interleaved one for one with a
/// sequential scan of ten times the capacity, or with nothing: the hot set's hit ratio
/// during the scan must stay within 5 points of the one without it.
#[test]
fn a_scan_ten_times_the_cache_leaves_the_hot_set_its_hit_ratio() {
    const CAPACITY: u32 = 20_000;
    let hot = Zipf::new(u64::from(CAPACITY) * 8 / 10, 1.0);
    let scan_blocks = 10 * u64::from(CAPACITY);
    let run = |with_scan: bool| {
        let mut policy = chosen(CAPACITY);
        let mut rng = Rng::new(3);
        let mut warm = Vec::new();
        for _ in 0..4 * CAPACITY {
            warm.push(Request::block(hot.sample(&mut rng), false));
        }
        replay(policy.as_mut(), &warm);
        let (mut hits, mut reads) = (0u64, 0u64);
        for at in 0..scan_blocks {
            if with_scan {
                let scanned = Request::block(1 << 30 | at, false);
                replay(policy.as_mut(), &[scanned]);
            }
            let stats = replay(
                policy.as_mut(),
                &[Request::block(hot.sample(&mut rng), false)],
            );
            hits += stats.hits;
            reads += stats.reads;
        }
        hits as f64 * 100.0 / reads as f64
    };
    let (quiet, scanned) = (run(false), run(true));
    println!("hot set hit ratio: {quiet:.2} without the scan, {scanned:.2} during it");
    assert!(quiet > 80.0, "the hot set should mostly hit: {quiet:.2}");
    assert!(quiet - scanned < 5.0, "lost {:.2} points", quiet - scanned);
}

/// The harness really counts: LRU with a cache as large as the trace's blocks misses
/// each block once and hits every other read.
#[test]
fn the_replay_counts_hits_misses_and_writes() {
    let trace = generate(&TraceSpec {
        mix: Mix::ReadWrite,
        requests: 20_000,
        universe: 1_000,
        seed: 5,
    });
    let distinct = distinct_blocks(&trace);
    let mut lru = super::Lru::new(distinct as u32);
    let stats = replay(&mut lru, &trace);
    let reads = trace.iter().filter(|request| !request.write).count() as u64;
    assert_eq!(stats.reads, reads);
    assert_eq!(stats.writes, trace.len() as u64 - reads);
    // A miss is a first read or the first read after a write.
    let mut valid = hashbrown::HashSet::new();
    let mut misses = 0;
    for request in &trace {
        let block = request.offset / 4096;
        if request.write {
            valid.remove(&block);
        } else if valid.insert(block) {
            misses += 1;
        }
    }
    assert_eq!(stats.hits, reads - misses);
}
