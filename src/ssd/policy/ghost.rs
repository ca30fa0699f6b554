//! A ghost FIFO of recently evicted keys, kept as 32-bit fingerprints: a ring in eviction
//! order plus a compact table to ask "was this key evicted lately?". About 9.3 bytes per
//! remembered key at most (4 in the ring, 4 / 0.75 in the table); both grow with what is
//! remembered, up to `capacity` entries. A false "yes" needs a 32-bit collision among the
//! remembered keys: harmless, it only admits a key straight to the main queue.

use super::Key;
use super::list::reserve_doubling;
use super::table::{FingerprintTable, fingerprint};

/// See the module doc.
pub struct Ghost {
    capacity: usize,
    ring: Vec<u32>,
    /// Where the next fingerprint goes once the ring is full (the oldest entry).
    oldest: usize,
    members: FingerprintTable,
}

impl Ghost {
    pub fn new(capacity: u32) -> Ghost {
        Ghost {
            capacity: capacity as usize,
            ring: Vec::new(),
            oldest: 0,
            members: FingerprintTable::new(capacity),
        }
    }

    /// Remembers `key`, forgetting the oldest key when full.
    pub fn remember(&mut self, key: Key) {
        if self.capacity == 0 {
            return;
        }
        let print = fingerprint(key);
        if self.ring.len() < self.capacity {
            let wanted = self.ring.len() + 1;
            reserve_doubling(&mut self.ring, wanted, self.capacity);
            self.ring.push(print);
        } else {
            let old = std::mem::replace(&mut self.ring[self.oldest], print);
            // Absent when a hit took it out already.
            self.members.remove(old);
            self.oldest = (self.oldest + 1) % self.capacity;
        }
        self.members.insert(print);
    }

    /// True when `key` was remembered (and not asked for since); forgets it.
    pub fn take(&mut self, key: Key) -> bool {
        self.members.remove(fingerprint(key))
    }

    pub fn bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<u32>() + self.members.bytes()
    }
}
