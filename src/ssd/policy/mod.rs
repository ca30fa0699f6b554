//! Replacement policies for the SSD read cache, behind one interface so that the tier and
//! the trace replay (`troika-cache-replay`) run the very same code.
//!
//! A policy owns the index of what is cached: keys (physical block numbers) to slots
//! (4 KiB places in the cache region, numbered from 0 up to its capacity). It decides
//! what is admitted and what is evicted; it never does I/O.
//!
//! The contract every policy keeps (the tests in `policy_tests.rs` check it for each one):
//! - a key is in at most one slot and a slot holds at most one key;
//! - slots are handed out from 0 upward before any is reused, so a cache that is not
//!   full has touched only its first `len()` slots;
//! - `admit` of a key already resident is a caller error and returns `Rejected`;
//! - memory grows with the number of cached blocks, never with the capacity alone;
//!   `index_bytes` is what the index really holds (its tables' allocated bytes).

mod clock;

pub use clock::Clock;

/// A cached block's key: its physical block number on the array.
pub type Key = u64;
/// A 4 KiB place in the cache region.
pub type SlotId = u32;

/// The outcome of offering a key for admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Write the block into `slot`; `evicted` is the key that slot held before, if any
    /// (the caller's copy of it is gone from the index already).
    Into { slot: SlotId, evicted: Option<Key> },
    /// The policy does not take this key now.
    Rejected,
}

/// See the module doc.
pub trait CachePolicy: Send {
    /// Short name for reports (`clock`, `s3-fifo`, `lru`, `arc`).
    fn name(&self) -> &'static str;
    /// Slots the policy may use.
    fn capacity(&self) -> u32;
    /// Keys resident now.
    fn len(&self) -> u32;
    /// True when nothing is cached.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Looks a key up and records the access (a hit); `None` on a miss. A miss also
    /// tells policies that keep history (ghosts) that the key was wanted.
    fn get(&mut self, key: Key) -> Option<SlotId>;
    /// Looks a key up without recording anything.
    fn peek(&self, key: Key) -> Option<SlotId>;
    /// Offers a key that is not resident: the policy takes it into a slot (evicting
    /// another key when full) or rejects it.
    fn admit(&mut self, key: Key) -> Admission;
    /// Forgets a key (its meaning changed); its slot becomes free. Returns the slot.
    fn remove(&mut self, key: Key) -> Option<SlotId>;
    /// Puts back a key found on media at start in the slot it was found in. Returns false
    /// (and changes nothing) when the key or the slot is taken or the slot is out of range.
    fn restore(&mut self, key: Key, slot: SlotId) -> bool;
    /// Moves a resident key to a new key in the same slot (the block it names moved, its
    /// bytes did not). Returns false (and changes nothing) when `old` is not resident or
    /// `new` is.
    fn rekey(&mut self, old: Key, new: Key) -> bool {
        if self.peek(new).is_some() {
            return false;
        }
        let Some(slot) = self.remove(old) else {
            return false;
        };
        self.restore(new, slot)
    }
    /// Calls `visit(key, slot)` for every resident key (any order): the tier's scan when it
    /// forgets a range of keys larger than what is cached.
    fn for_each_resident(&self, visit: &mut dyn FnMut(Key, SlotId));
    /// Bytes the index and the policy's own state hold in DRAM.
    fn index_bytes(&self) -> usize;
}

/// The policy the tier runs (chosen by the trace replay; see the README's SSD cache section).
pub fn chosen(capacity: u32) -> Box<dyn CachePolicy> {
    Box::new(Clock::new(capacity))
}
