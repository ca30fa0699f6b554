use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::hw::LatencyModel;
use crate::testing::Rng;

fn temp_device(size: u64) -> (tempfile::TempDir, PathBuf, Device) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.img");
    let device = Device::open(&path, Some(size), None).unwrap();
    (dir, path, device)
}

fn file_contents(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn probe_finds_io_uring() {
    probe().unwrap();
}

#[test]
fn aligned_buf_is_aligned_and_zeroed() {
    let buf = AlignedBuf::new(3 * ALIGN);
    assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
    assert_eq!(buf.len(), 3 * ALIGN);
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
#[should_panic(expected = "not a positive multiple")]
fn aligned_buf_refuses_odd_lengths() {
    AlignedBuf::new(1000);
}

/// Random aligned reads and writes through one IoRing, checked against a model and against
/// plain pread/pwrite on the same file. Batches of 300 on a 32-entry ring exercise
/// back-pressure; within a batch requests touch disjoint ranges (their order is not defined),
/// and each batch has a Sync in the middle.
#[test]
fn ring_matches_plain_pread_pwrite() {
    const SLOTS: usize = 300;
    const SLOT_BLOCKS: usize = 6;
    let size = (SLOTS * SLOT_BLOCKS * ALIGN) as u64 + 16 * ALIGN as u64;
    let (_dir, path, device) = temp_device(size);
    let plain = File::options().read(true).write(true).open(&path).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut ring = IoRing::new(32).unwrap();
    let mut rng = Rng(0x7e57_0001);
    let mut buffers = AlignedBuf::new(SLOTS * SLOT_BLOCKS * ALIGN);
    let mut results = Vec::new();

    for round in 0..8 {
        // A plain pwrite the ring must see.
        let block = rng.below(size / ALIGN as u64) as usize;
        let stamp = vec![round as u8 ^ 0xA5; ALIGN];
        plain.write_all_at(&stamp, (block * ALIGN) as u64).unwrap();
        model[block * ALIGN..(block + 1) * ALIGN].copy_from_slice(&stamp);

        let mut order: Vec<usize> = (0..SLOTS).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut plan = Vec::with_capacity(SLOTS);
        for (chunk, &slot) in buffers.chunks_mut(SLOT_BLOCKS * ALIGN).zip(&order) {
            let blocks = 1 + rng.below(SLOT_BLOCKS as u64) as usize;
            let offset = (slot * SLOT_BLOCKS * ALIGN) as u64 + rng.below(2) * ALIGN as u64;
            let blocks = blocks.min(SLOT_BLOCKS - (offset as usize / ALIGN) % SLOT_BLOCKS);
            let is_write = rng.below(2) == 0;
            let buf = &mut chunk[..blocks * ALIGN];
            if is_write {
                for byte in buf.iter_mut() {
                    *byte = rng.next() as u8;
                }
            } else {
                buf.fill(0xEE);
            }
            plan.push((offset, is_write, buf));
        }
        let mut requests: Vec<IoRequest<'_>> = Vec::with_capacity(SLOTS + 1);
        for (offset, is_write, buf) in plan.iter_mut() {
            let kind = if *is_write {
                IoKind::Write(buf)
            } else {
                IoKind::Read(buf)
            };
            requests.push(IoRequest {
                device: &device,
                offset: *offset,
                kind,
            });
            if requests.len() == SLOTS / 2 {
                requests.push(IoRequest {
                    device: &device,
                    offset: 0,
                    kind: IoKind::Sync,
                });
            }
        }
        ring.execute(&mut requests, &mut results);
        assert_eq!(results.len(), SLOTS + 1);
        drop(requests);

        let mut result = results.iter();
        for (i, (offset, is_write, buf)) in plan.iter().enumerate() {
            if i == SLOTS / 2 {
                assert_eq!(result.next().unwrap().as_ref().unwrap(), &0, "sync");
            }
            let done = *result.next().unwrap().as_ref().unwrap();
            assert_eq!(done, buf.len(), "round {round} request {i}");
            let range = *offset as usize..*offset as usize + buf.len();
            if *is_write {
                model[range].copy_from_slice(buf);
            } else {
                assert!(model[range] == buf[..], "round {round}: read {i} differs");
            }
        }
        let mut on_disk = vec![0u8; size as usize];
        plain.read_exact_at(&mut on_disk, 0).unwrap();
        assert!(
            on_disk == model,
            "round {round}: file differs from the model"
        );
    }
}

#[test]
fn misaligned_requests_fail_without_touching_the_file() {
    let (_dir, path, device) = temp_device(1 << 20);
    let mut ring = IoRing::new(8).unwrap();
    let mut buf = AlignedBuf::new(4 * ALIGN);
    buf.fill(0x5A);
    let before = file_contents(&path);

    let einval = |r: &std::io::Result<usize>| match r {
        Err(e) => e.raw_os_error() == Some(libc::EINVAL),
        Ok(_) => false,
    };
    let mut results = Vec::new();
    let (good, rest) = buf.split_at_mut(ALIGN);
    let mut requests = [
        IoRequest {
            device: &device,
            offset: 0,
            kind: IoKind::Write(&rest[512..512 + ALIGN]),
        },
        IoRequest {
            device: &device,
            offset: 100,
            kind: IoKind::Write(&rest[..ALIGN]),
        },
        IoRequest {
            device: &device,
            offset: 0,
            kind: IoKind::Write(&rest[..1000]),
        },
        IoRequest {
            device: &device,
            offset: 8192 + 512,
            kind: IoKind::Read(good),
        },
    ];
    ring.execute(&mut requests, &mut results);
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(einval), "{results:?}");
    assert_eq!(file_contents(&path), before);

    assert!(einval(&Err(ring
        .write_at(&device, 0, &buf[1..4097])
        .unwrap_err())));
    assert_eq!(file_contents(&path), before);
}

#[test]
fn a_misaligned_request_does_not_stop_the_others() {
    let (_dir, path, device) = temp_device(1 << 20);
    let mut ring = IoRing::new(8).unwrap();
    let mut buf = AlignedBuf::new(2 * ALIGN);
    buf.fill(7);
    let mut results = Vec::new();
    let mut requests = [
        IoRequest {
            device: &device,
            offset: 4096,
            kind: IoKind::Write(&buf[..ALIGN]),
        },
        IoRequest {
            device: &device,
            offset: 1,
            kind: IoKind::Write(&buf[..ALIGN]),
        },
    ];
    ring.execute(&mut requests, &mut results);
    assert_eq!(*results[0].as_ref().unwrap(), ALIGN);
    assert!(results[1].is_err());
    let contents = file_contents(&path);
    assert!(contents[4096..8192].iter().all(|&b| b == 7));
    assert!(contents[..4096].iter().all(|&b| b == 0));
}

#[test]
fn reads_stop_at_the_end_of_the_device() {
    let size = 64 * ALIGN as u64;
    let (_dir, _path, device) = temp_device(size);
    let mut ring = IoRing::new(4).unwrap();
    let mut buf = AlignedBuf::new(2 * ALIGN);
    let mut results = Vec::new();
    let mut requests = [IoRequest {
        device: &device,
        offset: size - ALIGN as u64,
        kind: IoKind::Read(&mut buf),
    }];
    ring.execute(&mut requests, &mut results);
    assert_eq!(*results[0].as_ref().unwrap(), ALIGN);
    let err = ring
        .read_at(&device, size - ALIGN as u64, &mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("dev.img"), "{err}");
}

#[test]
fn single_request_helpers_round_trip() {
    let (_dir, path, device) = temp_device(1 << 20);
    let mut buf = AlignedBuf::new(2 * ALIGN);
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    with_thread_ring(|ring| {
        ring.write_at(&device, 3 * ALIGN as u64, &buf).unwrap();
        ring.sync(&device).unwrap();
        let mut back = AlignedBuf::new(2 * ALIGN);
        // A nested call gets a ring of its own.
        with_thread_ring(|inner| inner.read_at(&device, 3 * ALIGN as u64, &mut back)).unwrap();
        assert!(back[..] == buf[..]);
    });
    assert!(file_contents(&path)[3 * ALIGN..5 * ALIGN] == buf[..]);
}

#[test]
fn open_creates_and_extends_sparse_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.img");
    let device = Device::open(&path, Some(8 << 20), None).unwrap();
    assert_eq!(device.size(), 8 << 20);
    assert!(!device.is_block_device());
    assert_eq!(device.path(), path);
    assert_eq!(device.latency(), None);
    drop(device);
    let device = Device::open(&path, Some(16 << 20), None).unwrap();
    assert_eq!(device.size(), 16 << 20);
    drop(device);
    let device = Device::open(&path, Some(1 << 20), None).unwrap();
    assert_eq!(device.size(), 16 << 20, "never shrunk");
    let device = Device::open(&path, None, None).unwrap();
    assert_eq!(device.size(), 16 << 20);
}

#[test]
fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let err = Device::open(&missing, None, None).unwrap_err();
    assert!(matches!(err, DeviceError::Missing { .. }));
    assert!(err.to_string().contains("missing.img"), "{err}");
    let err = Device::open(dir.path(), None, None).unwrap_err();
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
}

#[test]
fn simulated_ssd_takes_at_least_its_read_time() {
    let dir = tempfile::tempdir().unwrap();
    let latency = LatencyModel::Ssd {
        read_us: 20_000,
        write_us: 5_000,
    };
    let device = Device::open(&dir.path().join("ssd.img"), Some(64 << 20), Some(latency)).unwrap();
    assert_eq!(device.latency(), Some(latency));
    let mut ring = IoRing::new(8).unwrap();
    let mut buf = AlignedBuf::new(ALIGN);
    let start = Instant::now();
    ring.read_at(&device, 0, &mut buf).unwrap();
    assert!(start.elapsed() >= Duration::from_micros(20_000));
    let start = Instant::now();
    ring.write_at(&device, 0, &buf).unwrap();
    assert!(start.elapsed() >= Duration::from_micros(5_000));
}

#[test]
fn simulated_hdd_serves_one_request_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let latency = LatencyModel::Hdd {
        seek_us: 8_000,
        rpm: 7200,
    };
    let device = Device::open(&dir.path().join("hdd.img"), Some(64 << 20), Some(latency)).unwrap();
    let mut ring = IoRing::new(8).unwrap();
    let mut bufs = AlignedBuf::new(4 * ALIGN);
    let mut requests: Vec<IoRequest<'_>> = bufs
        .chunks_mut(ALIGN)
        .enumerate()
        .map(|(i, chunk)| IoRequest {
            device: &device,
            offset: (i as u64) * (16 << 20),
            kind: IoKind::Read(chunk),
        })
        .collect();
    let mut results = Vec::new();
    let start = Instant::now();
    ring.execute(&mut requests, &mut results);
    assert!(results.iter().all(|r| r.is_ok()));
    // Four half rotations (4166 us each at 7200 rpm) back to back, plus seeks.
    assert!(start.elapsed() >= Duration::from_micros(4 * 4_166));
}

#[test]
fn pool_take_blocks_until_a_buffer_returns() {
    let pool = BufferPool::new(2, 2 * ALIGN);
    assert_eq!(pool.buf_len(), 2 * ALIGN);
    assert_eq!(pool.available(), 2);
    let first = pool.take();
    let mut second = pool.take();
    assert_eq!(second.len(), 2 * ALIGN);
    assert_eq!(second.as_ptr() as usize % ALIGN, 0);
    second[0] = 9;
    assert_eq!(pool.available(), 0);
    assert!(pool.try_take().is_none());

    let (sender, receiver) = mpsc::channel();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let buf = pool.take();
            sender.send(()).unwrap();
            drop(buf);
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        receiver.try_recv().is_err(),
        "take returned while the pool was empty"
    );
    drop(first);
    receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    waiter.join().unwrap();
    drop(second);
    assert_eq!(
        pool.available(),
        2,
        "every buffer came back, no more were made"
    );
}

#[test]
fn pool_stays_bounded_under_contention() {
    let pool = BufferPool::new(3, ALIGN);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let mut buf = pool.take();
                    buf[0] = (t + i) as u8;
                    assert!(pool.available() <= 2);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(pool.available(), 3);
}

#[test]
fn thread_safety_is_as_documented() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<AlignedBuf>();
    send_sync::<BufferPool>();
    send_sync::<PooledBuf>();
    send_sync::<Device>();
    send::<IoRing>();
}
