//! Cost of the per-block data-integrity work: every block written or read is checksummed
//! (`block_checksum`, xxh3 seeded with the block's identity), and every destaged row of
//! 4 data units of 64 KiB gets P and Q computed in DRAM (`ParityCodec::encode`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troika::layout::{ParityCodec, block_checksum};
use troika::types::{BLOCK_SIZE, VolumeId};

const DATA_UNITS: usize = 4;
const UNIT: usize = 64 * 1024;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn bench_checksum(c: &mut Criterion) {
    let block = pattern(BLOCK_SIZE, 42);
    let mut group = c.benchmark_group("checksum");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    group.bench_function("block_checksum_4k", |b| {
        let mut lba = 0u64;
        b.iter(|| {
            lba += 1;
            block_checksum(black_box(VolumeId(3)), black_box(lba), black_box(&block))
        })
    });
    group.finish();
}

fn bench_parity(c: &mut Criterion) {
    let units: Vec<Vec<u8>> = (0..DATA_UNITS)
        .map(|i| pattern(UNIT, i as u64 + 7))
        .collect();
    let refs: Vec<&[u8]> = units.iter().map(Vec::as_slice).collect();
    let mut p = vec![0u8; UNIT];
    let mut q = vec![0u8; UNIT];
    let mut codec = ParityCodec::new(DATA_UNITS, UNIT).expect("4+2 codec of 64 KiB units");

    let mut group = c.benchmark_group("parity");
    // Throughput is the user data protected per row (4 × 64 KiB).
    group.throughput(Throughput::Bytes((DATA_UNITS * UNIT) as u64));
    group.bench_function("encode_4+2_64k", |b| {
        b.iter(|| {
            codec
                .encode(black_box(&refs), &mut p, &mut q)
                .expect("encode");
            black_box((p[0], q[0]))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_checksum, bench_parity);
criterion_main!(benches);
