//! SCSI CDBs: the first byte picks the CDB length (0..=32), then the CDB, then the rest
//! is Data-Out. Every command against a small in-memory unit must answer a status, with
//! sense on CHECK CONDITION, and never panic. Reservation commands are skipped until
//! `pr.rs` can be driven without a store (they go to its own tests).
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use troika::target::scsi::{
    AluaState, CopyPeers, LogicalUnit, LuIdentity, LuRegistry, Nexus, PortGroup, PortGroups,
    PrStore, Response, status,
};
use troika::target::{BlockTarget, Extent};
use troika::types::IoError;

const SIZE: u64 = 64 * 512;

struct Memory(Mutex<Vec<u8>>);

impl Memory {
    fn check(&self, offset: u64, len: u64) -> Result<(), IoError> {
        if offset.checked_add(len).is_none_or(|end| end > SIZE) {
            return Err(IoError::OutOfRange {
                offset,
                len,
                size: SIZE,
            });
        }
        Ok(())
    }
}

impl BlockTarget for Memory {
    fn name(&self) -> &str {
        "fuzz"
    }
    fn size(&self) -> u64 {
        SIZE
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(offset, buf.len() as u64)?;
        let data = self.0.lock().unwrap();
        buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write(&self, offset: u64, bytes: &[u8], _fua: bool) -> Result<(), IoError> {
        self.check(offset, bytes.len() as u64)?;
        let mut data = self.0.lock().unwrap();
        data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<(), IoError> {
        self.write_zeroes(offset, len, false, false, false)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        _: bool,
        _: bool,
        _: bool,
    ) -> Result<(), IoError> {
        self.check(offset, len)?;
        self.0.lock().unwrap()[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn prefetch(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.check(offset, len)
    }
    fn block_status(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), IoError> {
        self.check(offset, len)?;
        out.push(Extent {
            length: len,
            hole: false,
            zero: false,
        });
        Ok(())
    }
}

struct Ports;

impl PortGroups for Ports {
    fn groups(&self) -> Vec<PortGroup> {
        vec![PortGroup {
            id: 1,
            state: AluaState::ActiveOptimized,
            relative_ports: vec![1],
        }]
    }
    fn target_port_name(&self, relative_port: u16) -> String {
        format!("iqn.2025-01.io.troika:fuzz,t,0x{relative_port:04x}")
    }
    fn target_name(&self) -> String {
        "iqn.2025-01.io.troika:fuzz".into()
    }
}

struct NoStore;

impl PrStore for NoStore {
    fn load(&self, _: u32) -> std::io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn location(&self, _: u32) -> String {
        "nowhere (fuzzing)".into()
    }
    fn save(&self, _: u32, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn remove(&self, _: u32) {}
}

struct NoPeers;

impl CopyPeers for NoPeers {
    fn by_naa(&self, _: &[u8]) -> Option<LogicalUnit> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let cdb_len = usize::from(selector % 33).min(rest.len());
    let (cdb, data_out) = rest.split_at(cdb_len);
    if matches!(cdb.first(), Some(0x16 | 0x17 | 0x56 | 0x57 | 0x5E | 0x5F)) {
        return;
    }
    let registry = LuRegistry::new(Arc::new(NoStore), Arc::new(Ports));
    let unit = LogicalUnit {
        target: Arc::new(Memory(Mutex::new(vec![0; SIZE as usize]))),
        identity: Arc::new(LuIdentity {
            dataset_id: 1,
            naa: [0x60; 16],
            serial: "FUZZ".into(),
            name: "fuzz".into(),
        }),
        shared: registry
            .shared(1)
            .expect("a store that holds nothing loads nothing"),
        ports: registry.ports(),
    };
    let nexus = Nexus {
        initiator_port: "iqn.fuzz,i,0x000000000001".into(),
        initiator_name: "iqn.fuzz".into(),
        relative_port: 1,
    };
    let mut response = Response::default();
    // The first command meets the power-on unit attention; the second one runs.
    for _ in 0..2 {
        unit.execute(&nexus, cdb, data_out, &NoPeers, &mut response);
        assert!(matches!(
            response.status,
            status::GOOD | status::CHECK_CONDITION | status::CONDITION_MET
        ));
        if response.status == status::CHECK_CONDITION {
            assert!(response.sense.len() >= 18);
        }
    }
});
