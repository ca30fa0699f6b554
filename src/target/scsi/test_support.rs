//! Test helpers: an in-memory [`BlockTarget`] that tracks 4 KiB allocation, fake port
//! groups, reservation store and copy peers, and a rig that runs CDBs against a unit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::sense::SENSE_LEN;
use super::{
    AluaState, CopyPeers, LogicalUnit, LuIdentity, LuRegistry, Nexus, PortGroup, PortGroups,
    PrStore, Response,
};
use crate::target::{BlockTarget, Extent};
use crate::types::IoError;

/// Allocation granularity of [`MemTarget`].
pub const MEM_BLOCK: u64 = 4096;

/// A dataset in memory.
pub struct MemTarget {
    read_only: bool,
    state: Mutex<(Vec<u8>, Vec<bool>)>,
    pub flushes: AtomicUsize,
    pub trims: AtomicUsize,
    /// Reads pause after copying, to widen read-modify-write windows.
    pub slow_reads: AtomicBool,
}

impl MemTarget {
    pub fn new(size: u64, read_only: bool) -> MemTarget {
        MemTarget {
            read_only,
            state: Mutex::new((
                vec![0; size as usize],
                vec![false; size.div_ceil(MEM_BLOCK) as usize],
            )),
            flushes: AtomicUsize::new(0),
            trims: AtomicUsize::new(0),
            slow_reads: AtomicBool::new(false),
        }
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), IoError> {
        if write && self.read_only {
            return Err(IoError::ReadOnly {
                volume: "mem".into(),
            });
        }
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(IoError::OutOfRange { offset, len, size });
        }
        Ok(())
    }

    /// A copy of `len` bytes at `offset`.
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let state = self.state.lock();
        state.0[offset as usize..offset as usize + len].to_vec()
    }

    fn release(&self, offset: u64, len: u64, allocate: bool) {
        let mut state = self.state.lock();
        state.0[offset as usize..(offset + len) as usize].fill(0);
        let first = offset.div_ceil(MEM_BLOCK);
        let end = (offset + len) / MEM_BLOCK;
        for block in first..end {
            state.1[block as usize] = allocate;
        }
    }
}

impl BlockTarget for MemTarget {
    fn name(&self) -> &str {
        "mem"
    }
    fn size(&self) -> u64 {
        self.state.lock().0.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(offset, buf.len() as u64, false)?;
        {
            let state = self.state.lock();
            buf.copy_from_slice(&state.0[offset as usize..offset as usize + buf.len()]);
        }
        if self.slow_reads.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> Result<(), IoError> {
        self.check(offset, data.len() as u64, true)?;
        let mut state = self.state.lock();
        state.0[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        if !data.is_empty() {
            let last = (offset + data.len() as u64 - 1) / MEM_BLOCK;
            for block in offset / MEM_BLOCK..=last {
                state.1[block as usize] = true;
            }
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), IoError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<(), IoError> {
        self.check(offset, len, true)?;
        self.trims.fetch_add(1, Ordering::Relaxed);
        self.release(offset, len, false);
        Ok(())
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        _fast_only: bool,
        _fua: bool,
    ) -> Result<(), IoError> {
        self.check(offset, len, true)?;
        self.release(offset, len, no_hole);
        Ok(())
    }
    fn prefetch(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.check(offset, len, false)
    }
    fn block_status(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), IoError> {
        self.check(offset, len, false)?;
        let state = self.state.lock();
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let block_end = ((at / MEM_BLOCK) + 1) * MEM_BLOCK;
            let step = block_end.min(end) - at;
            let hole = !state.1[(at / MEM_BLOCK) as usize];
            match out.last_mut() {
                Some(last) if last.hole == hole => last.length += step,
                _ => out.push(Extent {
                    length: step,
                    hole,
                    zero: hole,
                }),
            }
            at += step;
        }
        Ok(())
    }
}

/// Two controllers: group 1 active/optimized, group 2 active/non-optimized.
pub struct FakePorts;

impl PortGroups for FakePorts {
    fn groups(&self) -> Vec<PortGroup> {
        vec![
            PortGroup {
                id: 1,
                state: AluaState::ActiveOptimized,
                relative_ports: vec![1],
            },
            PortGroup {
                id: 2,
                state: AluaState::ActiveNonOptimized,
                relative_ports: vec![2],
            },
        ]
    }
    fn target_port_name(&self, relative_port: u16) -> String {
        format!("iqn.2025-01.io.troika:test,t,0x{relative_port:04x}")
    }
    fn target_name(&self) -> String {
        "iqn.2025-01.io.troika:test".into()
    }
}

/// Keeps saved reservation state in memory; `fail` makes saves fail.
#[derive(Default)]
pub struct FakePrStore {
    pub saved: Mutex<HashMap<u32, Vec<u8>>>,
    pub removed: Mutex<Vec<u32>>,
}

impl PrStore for FakePrStore {
    fn load(&self, dataset_id: u32) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.saved.lock().get(&dataset_id).cloned())
    }
    fn location(&self, dataset_id: u32) -> String {
        format!("memory (dataset {dataset_id})")
    }
    fn save(&self, dataset_id: u32, state: &[u8]) -> std::io::Result<()> {
        self.saved.lock().insert(dataset_id, state.to_vec());
        Ok(())
    }
    fn remove(&self, dataset_id: u32) {
        self.removed.lock().push(dataset_id);
    }
}

/// Copy peers by NAA.
#[derive(Default)]
pub struct FakePeers {
    pub units: Vec<LogicalUnit>,
}

impl CopyPeers for FakePeers {
    fn by_naa(&self, naa: &[u8]) -> Option<LogicalUnit> {
        self.units
            .iter()
            .find(|unit| unit.identity.naa == naa)
            .cloned()
    }
}

/// The NAA designator of test dataset `id`.
pub fn naa(id: u32) -> [u8; 16] {
    let mut naa = [0u8; 16];
    naa[0] = 0x60;
    naa[1] = 0x01;
    naa[12..].copy_from_slice(&id.to_be_bytes());
    naa
}

/// One unit over a [`MemTarget`], and the registry it lives in.
pub struct Rig {
    pub target: Arc<MemTarget>,
    pub unit: LogicalUnit,
    pub registry: Arc<LuRegistry>,
    pub peers: FakePeers,
}

/// Blocks of the default rig: 1 MiB.
pub const RIG_BLOCKS: u64 = 2048;

impl Rig {
    pub fn new() -> Rig {
        Rig::with(RIG_BLOCKS * 512, false)
    }

    pub fn with(size: u64, read_only: bool) -> Rig {
        let registry = LuRegistry::new(Arc::new(FakePrStore::default()), Arc::new(FakePorts));
        Rig::in_registry(registry, 7, size, read_only)
    }

    pub fn in_registry(registry: Arc<LuRegistry>, id: u32, size: u64, read_only: bool) -> Rig {
        let target = Arc::new(MemTarget::new(size, read_only));
        let unit = LogicalUnit {
            target: target.clone(),
            identity: Arc::new(LuIdentity {
                dataset_id: id,
                naa: naa(id),
                serial: format!("SERIAL{id:04}"),
                name: format!("vol{id}"),
            }),
            shared: registry.shared(id).expect("reservations load"),
            ports: registry.ports(),
        };
        Rig {
            target,
            unit,
            registry,
            peers: FakePeers::default(),
        }
    }

    /// Runs `cdb` from `nexus`.
    pub fn run_as(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> Response {
        let mut response = Response::default();
        self.unit
            .execute(nexus, cdb, data_out, &self.peers, &mut response);
        if response.status == super::status::CHECK_CONDITION {
            assert!(response.sense.len() >= SENSE_LEN);
        }
        response
    }

    /// Runs `cdb` from the default nexus, its power-on attention already cleared.
    pub fn run(&self, cdb: &[u8], data_out: &[u8]) -> Response {
        let nexus = nexus(1);
        self.unit.shared.attention(&nexus, true);
        self.run_as(&nexus, cdb, data_out)
    }
}

/// Test nexus number `n` on target port 1.
pub fn nexus(n: u32) -> Nexus {
    Nexus {
        initiator_port: format!("iqn.1994-05.com.example:host{n},i,0x000000000001"),
        initiator_name: format!("iqn.1994-05.com.example:host{n}"),
        relative_port: 1,
    }
}

/// (sense key, ASC, ASCQ) of a CHECK CONDITION response.
pub fn sense_of(response: &Response) -> (u8, u8, u8) {
    assert_eq!(
        response.status,
        super::status::CHECK_CONDITION,
        "{response:?}"
    );
    (
        response.sense[2] & 0x0F,
        response.sense[12],
        response.sense[13],
    )
}

/// A 16-byte CDB with LBA at 2..10 and length at 10..14.
pub fn cdb16(opcode: u8, flags: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = opcode;
    cdb[1] = flags;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// A 10-byte CDB with LBA at 2..6 and length at 7..9.
pub fn cdb10(opcode: u8, flags: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = opcode;
    cdb[1] = flags;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}
