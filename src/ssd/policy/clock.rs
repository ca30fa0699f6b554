//! CLOCK (second chance): one reference bit per slot, a hand sweeping for a slot whose bit
//! is clear. A baseline for the replay and the tier's first policy.

use hashbrown::HashMap;

use super::{Admission, CachePolicy, Key, SlotId};

/// See the module doc.
pub struct Clock {
    capacity: u32,
    index: HashMap<Key, SlotId>,
    keys: Vec<Key>,
    referenced: Vec<bool>,
    occupied: Vec<bool>,
    free: Vec<SlotId>,
    hand: u32,
}

impl Clock {
    pub fn new(capacity: u32) -> Clock {
        Clock {
            capacity,
            index: HashMap::new(),
            keys: Vec::new(),
            referenced: Vec::new(),
            occupied: Vec::new(),
            free: Vec::new(),
            hand: 0,
        }
    }

    fn victim(&mut self) -> Option<SlotId> {
        let used = self.keys.len() as u32;
        for _ in 0..2 * used {
            let slot = self.hand;
            self.hand = (self.hand + 1) % used;
            let at = slot as usize;
            if !self.occupied[at] {
                continue;
            }
            if self.referenced[at] {
                self.referenced[at] = false;
                continue;
            }
            return Some(slot);
        }
        None
    }
}

impl CachePolicy for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn len(&self) -> u32 {
        self.index.len() as u32
    }

    fn get(&mut self, key: Key) -> Option<SlotId> {
        let slot = *self.index.get(&key)?;
        self.referenced[slot as usize] = true;
        Some(slot)
    }

    fn peek(&self, key: Key) -> Option<SlotId> {
        self.index.get(&key).copied()
    }

    fn admit(&mut self, key: Key) -> Admission {
        if self.capacity == 0 || self.index.contains_key(&key) {
            return Admission::Rejected;
        }
        let (slot, evicted) = if let Some(slot) = self.free.pop() {
            (slot, None)
        } else if (self.keys.len() as u32) < self.capacity {
            self.keys.push(0);
            self.referenced.push(false);
            self.occupied.push(false);
            ((self.keys.len() - 1) as SlotId, None)
        } else {
            let Some(slot) = self.victim() else {
                return Admission::Rejected;
            };
            let old = self.keys[slot as usize];
            self.index.remove(&old);
            (slot, Some(old))
        };
        let at = slot as usize;
        self.keys[at] = key;
        self.referenced[at] = false;
        self.occupied[at] = true;
        self.index.insert(key, slot);
        Admission::Into { slot, evicted }
    }

    fn remove(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.index.remove(&key)?;
        self.occupied[slot as usize] = false;
        self.free.push(slot);
        Some(slot)
    }

    fn restore(&mut self, key: Key, slot: SlotId) -> bool {
        if slot >= self.capacity || self.index.contains_key(&key) {
            return false;
        }
        let at = slot as usize;
        while self.keys.len() <= at {
            self.free.push(self.keys.len() as SlotId);
            self.keys.push(0);
            self.referenced.push(false);
            self.occupied.push(false);
        }
        if self.occupied[at] {
            return false;
        }
        self.free.retain(|free| *free != slot);
        self.keys[at] = key;
        self.occupied[at] = true;
        self.index.insert(key, slot);
        true
    }

    fn for_each_resident(&self, visit: &mut dyn FnMut(Key, SlotId)) {
        for (slot, key) in self.keys.iter().enumerate() {
            if self.occupied[slot] {
                visit(*key, slot as SlotId);
            }
        }
    }

    fn index_bytes(&self) -> usize {
        self.index.allocation_size()
            + self.keys.capacity() * std::mem::size_of::<Key>()
            + self.referenced.capacity()
            + self.occupied.capacity()
            + self.free.capacity() * std::mem::size_of::<SlotId>()
    }
}
