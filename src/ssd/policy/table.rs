//! The compact index every policy shares: an open-addressing hash table of `u32` ids
//! (slots, or ghost entries) whose keys live outside it, in the owner's per-id key array.
//!
//! What it promises:
//! - **4 bytes a bucket**, nothing else: the key of a bucket's id is asked of the owner
//!   (`key_of`), so the table costs 4 B / load factor per entry (at most 0.75 full, and
//!   never more buckets than `limit / 0.75`: about 5.3 B per entry when the owner is full).
//! - **Grows with what it holds, not with the capacity:** it starts empty and doubles
//!   (capped at the limit's size) when it passes three quarters full.
//! - **No tombstones:** a removal shifts the following run back (linear probing's
//!   backward-shift deletion), so lookups never slow down with churn.
//! - No allocation on a lookup, insert or removal once it has grown to size.

use super::Key;

/// An empty bucket.
const EMPTY: u32 = u32::MAX;

/// Mixes a key into 64 well-spread bits (the finalizer of SplitMix64).
pub fn mix(key: Key) -> u64 {
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// See the module doc.
pub struct IdTable {
    buckets: Vec<u32>,
    len: usize,
    /// The most entries it will ever be asked to hold (the owner's capacity).
    limit: usize,
}

impl IdTable {
    pub fn new(limit: u32) -> IdTable {
        IdTable {
            buckets: Vec::new(),
            len: 0,
            limit: limit as usize,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Allocated bytes.
    pub fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<u32>()
    }

    /// The bucket a hash starts probing at (multiply-shift range reduction, so any table
    /// size works, not only powers of two).
    fn home(&self, hash: u64) -> usize {
        (((hash >> 32) * self.buckets.len() as u64) >> 32) as usize
    }

    fn next(&self, at: usize) -> usize {
        if at + 1 == self.buckets.len() {
            0
        } else {
            at + 1
        }
    }

    /// The id whose key is `key`, if any.
    pub fn find(&self, key: Key, key_of: impl Fn(u32) -> Key) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.home(mix(key));
        loop {
            let id = self.buckets[at];
            if id == EMPTY {
                return None;
            }
            if key_of(id) == key {
                return Some(id);
            }
            at = self.next(at);
        }
    }

    /// Adds `id`, whose key (`key_of(id)`) must not be in the table yet.
    pub fn insert(&mut self, id: u32, key_of: impl Fn(u32) -> Key) {
        debug_assert_ne!(id, EMPTY);
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow(&key_of);
        }
        self.place(id, mix(key_of(id)));
        self.len += 1;
    }

    fn place(&mut self, id: u32, hash: u64) {
        let mut at = self.home(hash);
        while self.buckets[at] != EMPTY {
            at = self.next(at);
        }
        self.buckets[at] = id;
    }

    fn grow(&mut self, key_of: &impl Fn(u32) -> Key) {
        // Enough buckets for the limit at three quarters full, and never more.
        let most = (self.limit * 4).div_ceil(3).max(8);
        let size = (self.buckets.len() * 2).clamp(8, most.max(self.buckets.len() + 1));
        let old = std::mem::take(&mut self.buckets);
        let mut fresh = Vec::new();
        fresh.reserve_exact(size);
        fresh.resize(size, EMPTY);
        self.buckets = fresh;
        for id in old.into_iter().filter(|id| *id != EMPTY) {
            self.place(id, mix(key_of(id)));
        }
    }

    /// Removes the entry whose key is `key`; returns its id.
    pub fn remove(&mut self, key: Key, key_of: impl Fn(u32) -> Key) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.home(mix(key));
        loop {
            let id = self.buckets[at];
            if id == EMPTY {
                return None;
            }
            if key_of(id) == key {
                self.shift_back(at, &key_of);
                self.len -= 1;
                return Some(id);
            }
            at = self.next(at);
        }
    }

    /// Empties bucket `hole` and moves later members of its run back so that every entry
    /// stays reachable from its home without passing an empty bucket.
    fn shift_back(&mut self, mut hole: usize, key_of: &impl Fn(u32) -> Key) {
        let size = self.buckets.len();
        let mut at = self.next(hole);
        loop {
            let id = self.buckets[at];
            if id == EMPTY {
                break;
            }
            let home = self.home(mix(key_of(id)));
            // The entry may fill the hole when its home is not cyclically in (hole, at].
            let distance_to_at = (at + size - home) % size;
            let distance_to_hole = (hole + size - home) % size;
            if distance_to_hole <= distance_to_at {
                self.buckets[hole] = id;
                hole = at;
            }
            at = self.next(at);
        }
        self.buckets[hole] = EMPTY;
    }
}

/// A multiset of 32-bit fingerprints in the same compact form (a ghost's membership test):
/// 4 bytes a bucket, the fingerprint itself is the entry.
pub struct FingerprintTable {
    buckets: Vec<u32>,
    len: usize,
    limit: usize,
}

/// An empty fingerprint bucket (a real fingerprint of 0 is stored as 1).
const NO_PRINT: u32 = 0;

/// A key's fingerprint: 32 bits of a hash independent of the one that places slots.
pub fn fingerprint(key: Key) -> u32 {
    let print = (mix(key ^ 0x5851_F42D_4C95_7F2D) >> 7) as u32;
    if print == NO_PRINT { 1 } else { print }
}

impl FingerprintTable {
    pub fn new(limit: u32) -> FingerprintTable {
        FingerprintTable {
            buckets: Vec::new(),
            len: 0,
            limit: limit as usize,
        }
    }

    pub fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<u32>()
    }

    fn home(&self, print: u32) -> usize {
        ((print.wrapping_mul(0x9E37_79B9) as u64 * self.buckets.len() as u64) >> 32) as usize
    }

    fn next(&self, at: usize) -> usize {
        if at + 1 == self.buckets.len() {
            0
        } else {
            at + 1
        }
    }

    fn position(&self, print: u32) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.home(print);
        loop {
            match self.buckets[at] {
                NO_PRINT => return None,
                found if found == print => return Some(at),
                _ => at = self.next(at),
            }
        }
    }

    /// Adds one instance of `print`.
    pub fn insert(&mut self, print: u32) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.place(print);
        self.len += 1;
    }

    fn place(&mut self, print: u32) {
        let mut at = self.home(print);
        while self.buckets[at] != NO_PRINT {
            at = self.next(at);
        }
        self.buckets[at] = print;
    }

    fn grow(&mut self) {
        let most = (self.limit * 4).div_ceil(3).max(8);
        let size = (self.buckets.len() * 2).clamp(8, most.max(self.buckets.len() + 1));
        let old = std::mem::take(&mut self.buckets);
        let mut fresh = Vec::new();
        fresh.reserve_exact(size);
        fresh.resize(size, NO_PRINT);
        self.buckets = fresh;
        for print in old.into_iter().filter(|print| *print != NO_PRINT) {
            self.place(print);
        }
    }

    /// Removes one instance of `print`; false when there was none.
    pub fn remove(&mut self, print: u32) -> bool {
        let Some(mut hole) = self.position(print) else {
            return false;
        };
        let size = self.buckets.len();
        let mut at = self.next(hole);
        while self.buckets[at] != NO_PRINT {
            let home = self.home(self.buckets[at]);
            if (hole + size - home) % size <= (at + size - home) % size {
                self.buckets[hole] = self.buckets[at];
                hole = at;
            }
            at = self.next(at);
        }
        self.buckets[hole] = NO_PRINT;
        self.len -= 1;
        true
    }
}
