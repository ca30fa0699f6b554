//! The flush oracle of the crash tests (DESIGN.md invariant 2): writers that stamp every
//! block with its address and a version, remember per block the version of the last
//! completed flush and every version sent since, and a check after a restart that each
//! block reads back as one of those, whole, never torn, never another block's bytes.
//!
//! Writers go through any [`BlockPort`]: an NBD connection or an iSCSI session. Included
//! with `#[path = "common/flush_oracle.rs"] mod flush_oracle;` beside `mod common;` and
//! `#[path = "common/iscsi_client.rs"] mod iscsi_client;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::nbd_client::NbdClient;
use crate::iscsi_client::{Session, write10};

pub const BLOCK: usize = 4096;
const MAGIC: u32 = 0x7472_6b61;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The bytes of block `lba` at version `seq` (seq 0: zeroes).
pub fn pattern(lba: u64, seq: u64, out: &mut [u8]) {
    if seq == 0 {
        out.fill(0);
        return;
    }
    let mut rng = Rng(lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq ^ 0xDEAD_BEEF);
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
    }
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&lba.to_le_bytes());
    out[12..20].copy_from_slice(&seq.to_le_bytes());
}

/// Which version a block holds, if it is a whole, valid one.
pub fn decode(lba: u64, bytes: &[u8]) -> Option<u64> {
    if bytes.iter().all(|&b| b == 0) {
        return Some(0);
    }
    if u32::from_le_bytes(bytes[0..4].try_into().unwrap()) != MAGIC
        || u64::from_le_bytes(bytes[4..12].try_into().unwrap()) != lba
    {
        return None;
    }
    let seq = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let mut expected = vec![0u8; BLOCK];
    pattern(lba, seq, &mut expected);
    (expected == bytes).then_some(seq)
}

/// Per block: the version at the last completed flush, and every version written since.
#[derive(Default, Clone)]
pub struct BlockModel {
    pub flushed: u64,
    pub since: Vec<u64>,
}

/// A way to write blocks of one volume. `false`: the node went away.
pub trait BlockPort {
    fn write(&mut self, lba: u64, data: &[u8]) -> bool;
    /// Trims (reads back as zeroes) `count` blocks; ports without it write zeroes.
    fn trim(&mut self, lba: u64, count: u64) -> bool;
    fn flush(&mut self) -> bool;
    /// Most blocks one write may carry.
    fn max_blocks(&self) -> u64;
}

impl BlockPort for NbdClient {
    fn write(&mut self, lba: u64, data: &[u8]) -> bool {
        NbdClient::write(self, lba * BLOCK as u64, data, 0).is_ok()
    }
    fn trim(&mut self, lba: u64, count: u64) -> bool {
        NbdClient::trim(self, lba * BLOCK as u64, (count as usize * BLOCK) as u32).is_ok()
    }
    fn flush(&mut self) -> bool {
        NbdClient::flush(self).is_ok()
    }
    fn max_blocks(&self) -> u64 {
        16
    }
}

/// An iSCSI session on one LUN of 512-byte logical blocks.
pub struct IscsiPort {
    pub session: Session,
    pub lun: u64,
}

impl BlockPort for IscsiPort {
    fn write(&mut self, lba: u64, data: &[u8]) -> bool {
        let sectors = (data.len() / 512) as u16;
        let cdb = write10((lba * (BLOCK as u64 / 512)) as u32, sectors);
        matches!(self.session.try_command(self.lun, &cdb, data, 0), Ok(r) if r.status == 0)
    }
    fn trim(&mut self, lba: u64, count: u64) -> bool {
        let zeros = vec![0u8; count as usize * BLOCK];
        BlockPort::write(self, lba, &zeros)
    }
    fn flush(&mut self) -> bool {
        let cdb = [0x35u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        matches!(self.session.try_command(self.lun, &cdb, &[], 0), Ok(r) if r.status == 0)
    }
    fn max_blocks(&self) -> u64 {
        8
    }
}

/// One writer's blocks and what it knows of them.
pub struct Writer {
    pub first_lba: u64,
    pub blocks: u64,
    pub model: Arc<Mutex<HashMap<u64, BlockModel>>>,
}

impl Writer {
    pub fn new(first_lba: u64, blocks: u64) -> Arc<Writer> {
        Arc::new(Writer {
            first_lba,
            blocks,
            model: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Writes (and now and then trims and flushes) until `stop` or until the port fails;
    /// versions start after `next_seq`. Returns the last version used.
    pub fn run(
        &self,
        port: &mut dyn BlockPort,
        seed: u64,
        next_seq: u64,
        stop: &AtomicBool,
    ) -> u64 {
        let mut rng = Rng(seed | 1);
        let mut seq = next_seq;
        let max = port.max_blocks();
        let mut buf = vec![0u8; max as usize * BLOCK];
        let mut writes = 0;
        while !stop.load(Ordering::Acquire) {
            let count = if rng.below(4) == 0 {
                1 + rng.below(max)
            } else {
                1
            };
            let lba = self.first_lba + rng.below(self.blocks - count + 1);
            let trim = rng.below(40) == 0;
            seq += 1;
            {
                // Record before sending: an in-flight write may or may not survive.
                let mut model = self.model.lock().unwrap();
                for block in lba..lba + count {
                    model
                        .entry(block)
                        .or_default()
                        .since
                        .push(if trim { 0 } else { seq });
                }
            }
            let sent = if trim {
                port.trim(lba, count)
            } else {
                for i in 0..count {
                    pattern(
                        lba + i,
                        seq,
                        &mut buf[i as usize * BLOCK..(i as usize + 1) * BLOCK],
                    );
                }
                port.write(lba, &buf[..count as usize * BLOCK])
            };
            if !sent {
                break;
            }
            writes += 1;
            if writes % 150 == 0 && rng.below(2) == 0 {
                // Go quiet for a while: the node destages in the background, so crashes
                // also land in the middle of destage and map commits.
                std::thread::sleep(Duration::from_millis(550 + rng.below(300)));
            }
            if writes % 12 == 0 {
                // Everything acknowledged before the flush is sent must survive once it
                // completes: remember the latest acknowledged version of each block.
                let snapshot: HashMap<u64, u64> = self
                    .model
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|(lba, m)| m.since.last().map(|v| (*lba, *v)))
                    .collect();
                if !port.flush() {
                    break;
                }
                let mut model = self.model.lock().unwrap();
                for (lba, version) in snapshot {
                    let entry = model.get_mut(&lba).unwrap();
                    entry.flushed = version;
                    let keep_from = entry
                        .since
                        .iter()
                        .position(|v| *v == version)
                        .map_or(0, |p| p + 1);
                    entry.since.drain(..keep_from);
                }
            }
        }
        seq
    }

    /// Reads every block this writer touched through `client` and checks it against the
    /// model; on success the versions found become the flushed ones. `Err` describes the
    /// first block that reads back wrong.
    pub fn verify(&self, client: &mut NbdClient) -> Result<usize, String> {
        let mut buf = vec![0u8; BLOCK];
        let mut model = self.model.lock().unwrap();
        let mut checked = 0;
        for (lba, block) in model.iter_mut() {
            client
                .read(lba * BLOCK as u64, &mut buf)
                .map_err(|e| format!("read of block {lba} after restart: {e}"))?;
            let found = decode(*lba, &buf);
            let acceptable = |v: u64| v == block.flushed || block.since.contains(&v);
            match found {
                Some(version) if acceptable(version) => {
                    block.flushed = version;
                    block.since.clear();
                    checked += 1;
                }
                other => {
                    return Err(format!(
                        "block {lba} reads as {other:?} (None = torn or foreign bytes); \
                         last flushed version {}, written since {:?}",
                        block.flushed, block.since
                    ));
                }
            }
        }
        Ok(checked)
    }
}
