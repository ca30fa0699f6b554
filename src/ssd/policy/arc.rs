//! ARC (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST'03):
//! resident keys seen once lately (T1) and more than once (T2), each with a ghost list of
//! keys it evicted (B1, B2; full keys, up to the capacity in all), and a target size `p`
//! for T1 that a B1 ghost hit raises and a B2 ghost hit lowers. A baseline for the replay.
//!
//! Slots come from the shared [`Slots`]: when a removal (an invalidated key) left a free
//! slot, an admission uses it instead of replacing; the ghost bookkeeping follows the paper.

use super::list::{Links, List, reserve_doubling};
use super::slots::Slots;
use super::table::IdTable;
use super::{Admission, CachePolicy, Key, SlotId};

/// Which list a resident slot (state byte) or a ghost entry is in.
const ONCE: u8 = 1;
const OFTEN: u8 = 2;

/// The ghost lists B1 (`ONCE`) and B2 (`OFTEN`), with their own ids, keys and index.
struct Ghosts {
    capacity: u32,
    keys: Vec<Key>,
    which: Vec<u8>,
    links: Links,
    index: IdTable,
    free: List,
    once: List,
    often: List,
}

impl Ghosts {
    fn new(capacity: u32) -> Ghosts {
        Ghosts {
            capacity,
            keys: Vec::new(),
            which: Vec::new(),
            links: Links::default(),
            index: IdTable::new(capacity),
            free: List::default(),
            once: List::default(),
            often: List::default(),
        }
    }

    fn find(&self, key: Key) -> Option<(u32, u8)> {
        let keys = &self.keys;
        let id = self.index.find(key, |id| keys[id as usize])?;
        Some((id, self.which[id as usize]))
    }

    fn drop_id(&mut self, id: u32) {
        let at = id as usize;
        if self.which[at] == ONCE {
            self.once.unlink(&mut self.links, id);
        } else {
            self.often.unlink(&mut self.links, id);
        }
        let keys = &self.keys;
        self.index.remove(keys[at], |id| keys[id as usize]);
        self.which[at] = 0;
        self.free.push_back(&mut self.links, id);
    }

    fn drop_oldest(&mut self, which: u8) {
        let list = if which == ONCE { self.once } else { self.often };
        if let Some(id) = list.head() {
            self.drop_id(id);
        }
    }

    fn add(&mut self, key: Key, which: u8) {
        if self.capacity == 0 {
            return;
        }
        if self.once.len() + self.often.len() >= self.capacity {
            // The paper's bookkeeping keeps B1 + B2 within the capacity; with removals in
            // the mix this keeps it so.
            self.drop_oldest(if self.often.is_empty() { ONCE } else { OFTEN });
        }
        let id = match self.free.pop_front(&mut self.links) {
            Some(id) => id,
            None => {
                let id = self.keys.len();
                let limit = self.capacity as usize;
                reserve_doubling(&mut self.keys, id + 1, limit);
                reserve_doubling(&mut self.which, id + 1, limit);
                self.keys.push(0);
                self.which.push(0);
                self.links.extend_to(id + 1, limit);
                id as u32
            }
        };
        let at = id as usize;
        self.keys[at] = key;
        self.which[at] = which;
        let keys = &self.keys;
        self.index.insert(id, |id| keys[id as usize]);
        if which == ONCE {
            self.once.push_back(&mut self.links, id);
        } else {
            self.often.push_back(&mut self.links, id);
        }
    }

    fn bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<Key>()
            + self.which.capacity()
            + self.links.bytes()
            + self.index.bytes()
    }
}

/// See the module doc.
pub struct Arc {
    slots: Slots,
    once: List,
    often: List,
    ghosts: Ghosts,
    /// The target size of T1 (`p` in the paper).
    target_once: u32,
}

impl Arc {
    pub fn new(capacity: u32) -> Arc {
        Arc {
            slots: Slots::new(capacity),
            once: List::default(),
            often: List::default(),
            ghosts: Ghosts::new(capacity),
            target_once: 0,
        }
    }

    /// The paper's REPLACE: evicts from T1 when it is over its target (or at it, for a key
    /// found in B2), else from T2; the evicted key becomes a ghost of its list.
    fn replace(&mut self, found_in_often_ghost: bool) -> Option<(SlotId, Key)> {
        let t1 = self.once.len();
        let from_once = t1 >= 1
            && ((found_in_often_ghost && t1 == self.target_once) || t1 > self.target_once)
            || self.often.is_empty();
        let (slot, which) = if from_once {
            (self.once.pop_front(&mut self.slots.links)?, ONCE)
        } else {
            (self.often.pop_front(&mut self.slots.links)?, OFTEN)
        };
        let key = self.slots.evict(slot);
        self.ghosts.add(key, which);
        Some((slot, key))
    }

    /// A free slot, or one made by REPLACE.
    fn make_room(&mut self, found_in_often_ghost: bool) -> Option<(SlotId, Option<Key>)> {
        if let Some(slot) = self.slots.take_free() {
            return Some((slot, None));
        }
        let (slot, key) = self.replace(found_in_often_ghost)?;
        Some((slot, Some(key)))
    }

    /// Case IV of the paper: a key in no list.
    fn room_for_new_key(&mut self) -> Option<(SlotId, Option<Key>)> {
        let capacity = self.slots.capacity;
        let t1 = self.once.len();
        if t1 + self.ghosts.once.len() >= capacity {
            if t1 < capacity {
                self.ghosts.drop_oldest(ONCE);
                return self.make_room(false);
            }
            // T1 fills the cache and B1 is empty: evict T1's oldest, no ghost.
            let slot = self.once.pop_front(&mut self.slots.links)?;
            let key = self.slots.evict(slot);
            return Some((slot, Some(key)));
        }
        let total = t1 + self.often.len() + self.ghosts.once.len() + self.ghosts.often.len();
        if total >= 2 * capacity {
            self.ghosts.drop_oldest(OFTEN);
        }
        self.make_room(false)
    }

    fn place(&mut self, slot: SlotId, key: Key, which: u8) {
        self.slots.fill(slot, key, which);
        if which == ONCE {
            self.once.push_back(&mut self.slots.links, slot);
        } else {
            self.often.push_back(&mut self.slots.links, slot);
        }
    }

    fn unlink(&mut self, slot: SlotId) {
        if self.slots.state[slot as usize] == ONCE {
            self.once.unlink(&mut self.slots.links, slot);
        } else {
            self.often.unlink(&mut self.slots.links, slot);
        }
    }
}

impl CachePolicy for Arc {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn capacity(&self) -> u32 {
        self.slots.capacity
    }

    fn len(&self) -> u32 {
        self.slots.len()
    }

    fn get(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.slots.find(key)?;
        self.unlink(slot);
        self.slots.state[slot as usize] = OFTEN;
        self.often.push_back(&mut self.slots.links, slot);
        Some(slot)
    }

    fn peek(&self, key: Key) -> Option<SlotId> {
        self.slots.find(key)
    }

    fn admit(&mut self, key: Key) -> Admission {
        let capacity = self.slots.capacity;
        if capacity == 0 || self.slots.find(key).is_some() {
            return Admission::Rejected;
        }
        let room = match self.ghosts.find(key) {
            Some((id, ONCE)) => {
                let step = (self.ghosts.often.len() / self.ghosts.once.len()).max(1);
                self.target_once = (self.target_once + step).min(capacity);
                self.ghosts.drop_id(id);
                self.make_room(false).map(|room| (room, OFTEN))
            }
            Some((id, _)) => {
                let step = (self.ghosts.once.len() / self.ghosts.often.len()).max(1);
                self.target_once = self.target_once.saturating_sub(step);
                self.ghosts.drop_id(id);
                self.make_room(true).map(|room| (room, OFTEN))
            }
            None => self.room_for_new_key().map(|room| (room, ONCE)),
        };
        let Some(((slot, evicted), which)) = room else {
            return Admission::Rejected;
        };
        self.place(slot, key, which);
        Admission::Into { slot, evicted }
    }

    fn remove(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.slots.find(key)?;
        self.unlink(slot);
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
        self.place(slot, key, ONCE);
        true
    }

    fn for_each_resident(&self, visit: &mut dyn FnMut(Key, SlotId)) {
        self.slots.for_each_resident(visit);
    }

    fn index_bytes(&self) -> usize {
        self.slots.bytes() + self.ghosts.bytes()
    }
}
