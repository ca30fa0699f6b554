//! The resident half of a policy: which key each slot holds, the compact index from keys
//! to slots, the free slots, and one state byte per slot that the policy defines (0 means
//! free). The policies put their queues in `links`; the free slots are a list there too.
//!
//! What it promises (the contract of the module doc, for every policy built on it):
//! - a key is in at most one slot (the index refuses a second), a slot at most one key;
//! - slots are handed out from 0 upward; a freed slot is reused before a new one is taken,
//!   so a cache that is not full has touched only its first `len()` slots (until a
//!   `restore` leaves gaps, which are free slots);
//! - every array grows with the slots handed out (doubling, capped at the capacity), never
//!   with the capacity alone.

use super::list::{Links, List, reserve_doubling};
use super::table::IdTable;
use super::{Key, SlotId};

/// The state byte of a free slot.
pub const FREE: u8 = 0;

/// See the module doc.
pub struct Slots {
    pub capacity: u32,
    pub keys: Vec<Key>,
    pub state: Vec<u8>,
    pub links: Links,
    free: List,
    index: IdTable,
}

impl Slots {
    pub fn new(capacity: u32) -> Slots {
        Slots {
            capacity,
            keys: Vec::new(),
            state: Vec::new(),
            links: Links::default(),
            free: List::default(),
            index: IdTable::new(capacity),
        }
    }

    /// Calls `visit(key, slot)` for every slot holding a key.
    pub fn for_each_resident(&self, visit: &mut dyn FnMut(Key, SlotId)) {
        for (slot, state) in self.state.iter().enumerate() {
            if *state != FREE {
                visit(self.keys[slot], slot as SlotId);
            }
        }
    }

    /// Keys resident.
    pub fn len(&self) -> u32 {
        self.index.len() as u32
    }

    pub fn find(&self, key: Key) -> Option<SlotId> {
        let keys = &self.keys;
        self.index.find(key, |slot| keys[slot as usize])
    }

    /// A slot to fill without evicting: a freed one first, else the next never used;
    /// `None` when every slot holds a key.
    pub fn take_free(&mut self) -> Option<SlotId> {
        if let Some(slot) = self.free.pop_front(&mut self.links) {
            return Some(slot);
        }
        let used = self.keys.len() as u32;
        if used >= self.capacity {
            return None;
        }
        self.extend_to(used as usize + 1);
        Some(used)
    }

    fn extend_to(&mut self, slots: usize) {
        let limit = self.capacity as usize;
        reserve_doubling(&mut self.keys, slots, limit);
        reserve_doubling(&mut self.state, slots, limit);
        self.keys.resize(slots, 0);
        self.state.resize(slots, FREE);
        self.links.extend_to(slots, limit);
    }

    /// Puts `key` (not resident) into `slot` (taken from [`Slots::take_free`] or emptied
    /// by [`Slots::evict`]) with the policy's `state` (not `FREE`).
    pub fn fill(&mut self, slot: SlotId, key: Key, state: u8) {
        debug_assert_ne!(state, FREE);
        debug_assert!(self.find(key).is_none(), "key {key} is resident already");
        let at = slot as usize;
        self.keys[at] = key;
        self.state[at] = state;
        let keys = &self.keys;
        self.index.insert(slot, |slot| keys[slot as usize]);
    }

    /// Takes `slot`'s key out of the index (the slot is to be filled again at once, so it
    /// does not go to the free list); returns the key. The caller has unlinked the slot.
    pub fn evict(&mut self, slot: SlotId) -> Key {
        let at = slot as usize;
        let key = self.keys[at];
        let keys = &self.keys;
        let removed = self.index.remove(key, |slot| keys[slot as usize]);
        debug_assert_eq!(removed, Some(slot));
        self.state[at] = FREE;
        key
    }

    /// Empties `slot` (unlinked by the caller) and puts it on the free list.
    pub fn release(&mut self, slot: SlotId) {
        self.evict(slot);
        self.free.push_back(&mut self.links, slot);
    }

    /// Makes `slot` (in range) available to `restore`: gaps below it become free slots,
    /// and the slot leaves the free list. False when the slot holds a key.
    pub fn claim_for_restore(&mut self, slot: SlotId) -> bool {
        let at = slot as usize;
        let used = self.keys.len();
        if at >= used {
            self.extend_to(at + 1);
            for gap in used..at {
                self.free.push_back(&mut self.links, gap as SlotId);
            }
            return true;
        }
        if self.state[at] != FREE {
            return false;
        }
        self.free.unlink(&mut self.links, slot);
        true
    }

    /// Allocated bytes of every table.
    pub fn bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<Key>()
            + self.state.capacity()
            + self.links.bytes()
            + self.index.bytes()
    }
}
