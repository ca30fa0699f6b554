//! LRU: one list from least to most recently used; a hit moves its slot to the end, and
//! the slot at the front is evicted. A baseline for the replay (a scan flushes it).

use super::list::List;
use super::slots::Slots;
use super::{Admission, CachePolicy, Key, SlotId};

/// The state byte of a resident slot.
const RESIDENT: u8 = 1;

/// See the module doc.
pub struct Lru {
    slots: Slots,
    order: List,
}

impl Lru {
    pub fn new(capacity: u32) -> Lru {
        Lru {
            slots: Slots::new(capacity),
            order: List::default(),
        }
    }

    fn place(&mut self, slot: SlotId, key: Key) {
        self.slots.fill(slot, key, RESIDENT);
        self.order.push_back(&mut self.slots.links, slot);
    }
}

impl CachePolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }

    fn capacity(&self) -> u32 {
        self.slots.capacity
    }

    fn len(&self) -> u32 {
        self.slots.len()
    }

    fn get(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.slots.find(key)?;
        self.order.unlink(&mut self.slots.links, slot);
        self.order.push_back(&mut self.slots.links, slot);
        Some(slot)
    }

    fn peek(&self, key: Key) -> Option<SlotId> {
        self.slots.find(key)
    }

    fn admit(&mut self, key: Key) -> Admission {
        if self.slots.capacity == 0 || self.slots.find(key).is_some() {
            return Admission::Rejected;
        }
        let (slot, evicted) = match self.slots.take_free() {
            Some(slot) => (slot, None),
            None => {
                let Some(slot) = self.order.pop_front(&mut self.slots.links) else {
                    return Admission::Rejected;
                };
                (slot, Some(self.slots.evict(slot)))
            }
        };
        self.place(slot, key);
        Admission::Into { slot, evicted }
    }

    fn remove(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.slots.find(key)?;
        self.order.unlink(&mut self.slots.links, slot);
        self.slots.release(slot);
        Some(slot)
    }

    fn restore(&mut self, key: Key, slot: SlotId) -> bool {
        if slot >= self.slots.capacity
            || self.slots.find(key).is_some()
            || !self.slots.claim_for_restore(slot)
        {
            return false;
        }
        self.place(slot, key);
        true
    }

    fn for_each_resident(&self, visit: &mut dyn FnMut(Key, SlotId)) {
        self.slots.for_each_resident(visit);
    }

    fn index_bytes(&self) -> usize {
        self.slots.bytes()
    }
}
