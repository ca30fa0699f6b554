//! The device layer on a real block device: a loop device over a 64 MiB file.
//!
//! Needs root and a working `losetup`; anywhere else it prints why it was skipped and passes.
//! The bytes written through io_uring on /dev/loopN are checked with a plain read of the
//! backing file after the loop device is detached.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use troika::io::{ALIGN, AlignedBuf, Device, IoKind, IoRequest, IoRing};

const SIZE: u64 = 64 << 20;

/// Detaches the loop device when dropped, also when the test fails half-way.
struct LoopDevice {
    path: Option<PathBuf>,
}

impl LoopDevice {
    fn attach(backing: &Path) -> Result<LoopDevice, String> {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "losetup --find --show failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !path.starts_with("/dev/loop") {
            return Err(format!(
                "losetup printed an unexpected device name {path:?}"
            ));
        }
        Ok(LoopDevice {
            path: Some(PathBuf::from(path)),
        })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().expect("attached")
    }

    fn detach(&mut self) {
        if let Some(path) = self.path.take() {
            let status = Command::new("losetup").arg("-d").arg(&path).status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("warning: losetup -d {} failed: {status:?}", path.display());
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        self.detach();
    }
}

fn pattern(seed: u8, len: usize) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len);
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8;
    }
    buf
}

#[test]
fn io_ring_on_a_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("loop-backing.img");
    File::create(&backing).unwrap().set_len(SIZE).unwrap();
    let mut loop_device = match LoopDevice::attach(&backing) {
        Ok(device) => device,
        Err(reason) => {
            println!("skipped: io_loop_device needs root and losetup: {reason}");
            return;
        }
    };

    // Offsets spread over the device, including its last block.
    let writes: Vec<(u64, AlignedBuf)> = vec![
        (0, pattern(1, 64 << 10)),
        (1 << 20, pattern(2, 4 * ALIGN)),
        (17 << 20, pattern(3, 256 << 10)),
        (SIZE - ALIGN as u64, pattern(4, ALIGN)),
    ];
    {
        let device = Device::open(loop_device.path(), None, None).unwrap();
        assert!(device.is_block_device());
        assert_eq!(device.size(), SIZE);

        let mut ring = IoRing::new(16).unwrap();
        let mut requests: Vec<IoRequest<'_>> = writes
            .iter()
            .map(|(offset, buf)| IoRequest {
                device: &device,
                offset: *offset,
                kind: IoKind::Write(buf),
            })
            .collect();
        requests.push(IoRequest {
            device: &device,
            offset: 0,
            kind: IoKind::Sync,
        });
        let mut results = Vec::new();
        ring.execute(&mut requests, &mut results);
        for (result, (_, buf)) in results.iter().zip(&writes) {
            assert_eq!(*result.as_ref().unwrap(), buf.len());
        }
        assert_eq!(*results[writes.len()].as_ref().unwrap(), 0);

        let extra = pattern(5, 8 * ALIGN);
        ring.write_at(&device, 40 << 20, &extra).unwrap();
        ring.sync(&device).unwrap();

        for (offset, buf) in writes.iter().chain([(40 << 20, extra)].iter()) {
            let mut back = AlignedBuf::new(buf.len());
            ring.read_at(&device, *offset, &mut back).unwrap();
            assert!(back[..] == buf[..], "read back at {offset} differs");
        }

        // Reading past the end of a block device is a short read, not data.
        let mut tail = AlignedBuf::new(2 * ALIGN);
        assert!(
            ring.read_at(&device, SIZE - ALIGN as u64, &mut tail)
                .is_err()
        );
    }

    loop_device.detach();
    let plain = File::open(&backing).unwrap();
    for (offset, buf) in &writes {
        let mut back = vec![0u8; buf.len()];
        plain.read_exact_at(&mut back, *offset).unwrap();
        assert!(back[..] == buf[..], "backing file differs at {offset}");
    }
    let mut back = vec![0u8; 8 * ALIGN];
    plain.read_exact_at(&mut back, 40 << 20).unwrap();
    assert!(back[..] == pattern(5, 8 * ALIGN)[..]);
}
