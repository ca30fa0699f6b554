//! An in-memory [`Directory`] and [`CommandSink`] for the loopback tests: LUNs 0 and 1 of
//! 1 MiB each, serving TEST UNIT READY, INQUIRY, REPORT LUNS, READ(10) and WRITE(10).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::target::iscsi::session::{CommandSink, Directory};
use crate::target::iscsi::{Authentication, ChapCredentials, IscsiConfig, Portal, server};
use crate::target::scsi::{Nexus, Response, status};

pub const TARGET: &str = "iqn.2025-01.io.troika:test";
pub const OPEN: &str = "iqn.1994-05.com.example:open";
pub const CHAP: &str = "iqn.1994-05.com.example:chap";
pub const MUTUAL: &str = "iqn.1994-05.com.example:mutual";
pub const DISK: usize = 1 << 20;

#[derive(Default)]
pub struct Disks {
    pub luns: Mutex<HashMap<u64, Vec<u8>>>,
    pub resets: AtomicUsize,
    pub lost: Mutex<Vec<Nexus>>,
    pub executing: AtomicUsize,
    /// When set, commands on LUN 1 wait until it clears (to test aborts).
    pub hold_lun1: AtomicBool,
}

pub struct FakeDirectory {
    pub disks: Arc<Disks>,
    pub portal: SocketAddr,
}

impl Directory for FakeDirectory {
    fn target_name(&self) -> String {
        TARGET.to_owned()
    }
    fn portals(&self) -> Vec<Portal> {
        vec![Portal {
            address: self.portal,
            tpgt: 1,
        }]
    }
    fn authentication(&self, initiator: &str) -> Option<Authentication> {
        let creds = |user: &str, secret: &str| ChapCredentials {
            user: user.to_owned(),
            secret: secret.to_owned(),
        };
        match initiator {
            OPEN => Some(Authentication::None),
            _ if initiator.starts_with("iqn.2007-10.com.github:sahlberg:libiscsi") => {
                Some(Authentication::None)
            }
            CHAP => Some(Authentication::Chap {
                inbound: creds("alice", "alice-secret-1"),
                outbound: None,
            }),
            MUTUAL => Some(Authentication::Chap {
                inbound: creds("alice", "alice-secret-1"),
                outbound: Some(creds("target", "target-secret-2")),
            }),
            _ => None,
        }
    }
    fn open_session(&self, _initiator: &str, _tpgt: u16) -> Box<dyn CommandSink> {
        Box::new(FakeSink(Arc::clone(&self.disks)))
    }
}

struct FakeSink(Arc<Disks>);

fn check(response: &mut Response, key: u8, asc: u8) {
    response.status = status::CHECK_CONDITION;
    response
        .sense
        .extend_from_slice(&crate::target::iscsi::respond::sense(key, asc, 0));
}

impl CommandSink for FakeSink {
    fn execute(
        &self,
        _nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) {
        self.0.executing.fetch_add(1, Ordering::AcqRel);
        if lun == 1 {
            while self.0.hold_lun1.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let mut luns = self.0.luns.lock().unwrap();
        if cdb[0] == 0xa0 {
            let mut list: Vec<u64> = luns.keys().copied().collect();
            list.sort();
            response
                .data_in
                .extend_from_slice(&((list.len() * 8) as u32).to_be_bytes());
            response.data_in.extend_from_slice(&[0; 4]);
            for l in list {
                response
                    .data_in
                    .extend_from_slice(&[0, l as u8, 0, 0, 0, 0, 0, 0]);
            }
        } else if let Some(disk) = luns.get_mut(&lun) {
            match cdb[0] {
                0x00 => {}
                0x12 => {
                    let mut inq = [0u8; 36];
                    inq[4] = 31;
                    inq[8..16].copy_from_slice(b"TROIKA  ");
                    response.data_in.extend_from_slice(&inq);
                }
                0x25 => {
                    let last = (disk.len() / 512 - 1) as u32;
                    response.data_in.extend_from_slice(&last.to_be_bytes());
                    response.data_in.extend_from_slice(&512u32.to_be_bytes());
                }
                0x9e if cdb[1] & 0x1f == 0x10 => {
                    let last = (disk.len() / 512 - 1) as u64;
                    response.data_in.extend_from_slice(&last.to_be_bytes());
                    response.data_in.extend_from_slice(&512u32.to_be_bytes());
                    response.data_in.resize(32, 0);
                }
                0x28 | 0x2a | 0x88 | 0x8a => {
                    let (lba, len) = if cdb[0] & 0x80 == 0 && cdb.len() >= 10 {
                        let lba = u32::from_be_bytes(cdb[2..6].try_into().unwrap()) as usize;
                        (lba, u16::from_be_bytes([cdb[7], cdb[8]]) as usize * 512)
                    } else if cdb.len() >= 16 {
                        let lba = u64::from_be_bytes(cdb[2..10].try_into().unwrap()) as usize;
                        (
                            lba,
                            u32::from_be_bytes(cdb[10..14].try_into().unwrap()) as usize * 512,
                        )
                    } else {
                        (usize::MAX / 2, 0)
                    };
                    let start = lba.saturating_mul(512);
                    if start.saturating_add(len) > disk.len() {
                        check(response, 0x05, 0x21);
                    } else if cdb[0] & 0x0f == 0x08 {
                        response
                            .data_in
                            .extend_from_slice(&disk[start..start + len]);
                    } else {
                        // Short data (EDTL below the CDB's length): write what came.
                        let n = len.min(data_out.len());
                        disk[start..start + n].copy_from_slice(&data_out[..n]);
                    }
                }
                _ => check(response, 0x05, 0x20),
            }
        } else {
            check(response, 0x05, 0x25);
        }
        self.0.executing.fetch_sub(1, Ordering::AcqRel);
    }

    fn lun_reset(&self, _nexus: &Nexus, lun: u64) -> bool {
        self.0.resets.fetch_add(1, Ordering::AcqRel);
        self.0.luns.lock().unwrap().contains_key(&lun)
    }

    fn luns(&self) -> Vec<u64> {
        let mut list: Vec<u64> = self.0.luns.lock().unwrap().keys().copied().collect();
        list.sort();
        list
    }

    fn nexus_lost(&self, nexus: &Nexus) {
        self.0.lost.lock().unwrap().push(nexus.clone());
    }
}

/// A running portal on 127.0.0.1 with the fake backend.
pub struct Portal1 {
    pub addr: SocketAddr,
    pub disks: Arc<Disks>,
    pub shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

pub fn config() -> IscsiConfig {
    IscsiConfig {
        queue_depth: 16,
        workers_per_connection: 2,
        max_recv_data_segment_length: 8192,
        max_burst_length: 65536,
        first_burst_length: 16384,
    }
}

impl Portal1 {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let disks = Arc::new(Disks::default());
        {
            let mut luns = disks.luns.lock().unwrap();
            luns.insert(0, vec![0; DISK]);
            luns.insert(1, vec![0; DISK]);
        }
        let dir = Arc::new(FakeDirectory {
            disks: Arc::clone(&disks),
            portal: addr,
        });
        let shutdown = Arc::new(AtomicBool::new(false));
        let handle = server::spawn(listener, 1, dir, config(), Arc::clone(&shutdown));
        Portal1 {
            addr,
            disks,
            shutdown,
            handle: Some(handle),
        }
    }
}

impl Drop for Portal1 {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
