//! The per-request cost of I/O statistics: what a `VolumeTarget` adds to every read and
//! write (ops, bytes and a latency histogram, into the volume's and the controller's stats).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use troika::stats::IoStats;

fn record(c: &mut Criterion) {
    let volume = IoStats::default();
    let controller = IoStats::default();
    let latencies: Vec<Duration> = (0..64u64)
        .map(|i| Duration::from_nanos(20_000 + i * i * 50_000))
        .collect();
    let mut next = 0;
    c.bench_function("io_stats_record_write", |b| {
        b.iter(|| {
            let latency = latencies[next % latencies.len()];
            next += 1;
            volume.record_write(black_box(4096), black_box(latency));
        })
    });
    c.bench_function("io_stats_record_write_volume_and_controller", |b| {
        b.iter(|| {
            let latency = latencies[next % latencies.len()];
            next += 1;
            volume.record_write(black_box(4096), black_box(latency));
            controller.record_write(black_box(4096), black_box(latency));
        })
    });
    c.bench_function("io_stats_record_flush", |b| {
        b.iter(|| {
            let latency = latencies[next % latencies.len()];
            next += 1;
            volume.record_flush(black_box(latency));
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
