//! Small helpers shared by the NBD client, corruption and hostile-input tests: a seeded
//! xorshift generator (deterministic data without a rand dependency) and a check that the
//! node process is still alive.
//!
//! Included with `#[path = "common/testdata.rs"] mod testdata;` so `common/mod.rs` stays as is.
#![allow(dead_code)]

use std::path::Path;

/// xorshift64*: fast, seeded, good enough for test data and test choices.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // A zero state would stay zero forever.
        XorShift((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.fill(&mut buf);
        buf
    }
}

/// The pid the node wrote into `DATA/troika.lock`.
pub fn node_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("troika.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// True when the node process whose pid is in the data dir's lock file is running (not
/// gone, not a zombie waiting to be reaped by the test harness).
pub fn node_alive(data: &Path) -> bool {
    let Some(pid) = node_pid(data) else {
        return false;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some(Some('Z')) | Some(Some('X')) | None)
}
