//! Cost of the NBD parsers on the hot path: every request header goes through
//! `parse_request` and `validate_request`; every handshake option through `parse_option`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use troika::target::nbd::proto::{
    self, BASE_ALLOCATION, INFO_BLOCK_SIZE, Negotiated, OPT_GO, OPT_SET_META_CONTEXT,
};

fn request_header(command: u16, offset: u64, length: u32) -> [u8; proto::REQUEST_HEADER_LEN] {
    let mut header = [0u8; proto::REQUEST_HEADER_LEN];
    header[0..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
    header[6..8].copy_from_slice(&command.to_be_bytes());
    header[8..16].copy_from_slice(&0x1234_5678u64.to_be_bytes());
    header[16..24].copy_from_slice(&offset.to_be_bytes());
    header[24..28].copy_from_slice(&length.to_be_bytes());
    header
}

fn bench_requests(c: &mut Criterion) {
    let negotiated = Negotiated {
        size: 1 << 40,
        read_only: false,
        structured: true,
        base_allocation: true,
        changed: false,
        block_size_negotiated: true,
        min_block: 512,
        max_payload: 32 << 20,
    };
    let read = request_header(0, 1 << 30, 4096);
    let bad = {
        let mut h = request_header(1, (1 << 40) - 512, 4096);
        h[4] = 0x80;
        h
    };
    c.bench_function("nbd parse+validate read header", |b| {
        b.iter(|| {
            let request = proto::parse_request(black_box(&read)).unwrap();
            proto::validate_request(&request, black_box(&negotiated))
        })
    });
    c.bench_function("nbd parse+validate rejected header", |b| {
        b.iter(|| {
            let request = proto::parse_request(black_box(&bad)).unwrap();
            proto::validate_request(&request, black_box(&negotiated))
        })
    });
}

fn bench_options(c: &mut Criterion) {
    let name = b"volume-0001";
    let mut go = Vec::new();
    go.extend_from_slice(&(name.len() as u32).to_be_bytes());
    go.extend_from_slice(name);
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    let mut meta = Vec::new();
    meta.extend_from_slice(&(name.len() as u32).to_be_bytes());
    meta.extend_from_slice(name);
    meta.extend_from_slice(&2u32.to_be_bytes());
    for query in ["qemu:dirty-bitmap:b0", BASE_ALLOCATION] {
        meta.extend_from_slice(&(query.len() as u32).to_be_bytes());
        meta.extend_from_slice(query.as_bytes());
    }
    c.bench_function("nbd parse GO option", |b| {
        b.iter(|| proto::parse_option(black_box(OPT_GO), black_box(&go)))
    });
    c.bench_function("nbd parse SET_META_CONTEXT option", |b| {
        b.iter(|| proto::parse_option(black_box(OPT_SET_META_CONTEXT), black_box(&meta)))
    });
}

criterion_group!(benches, bench_requests, bench_options);
criterion_main!(benches);
