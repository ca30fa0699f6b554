//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23): a
//! small FIFO of about a tenth of the slots where new keys wait to prove themselves, a main
//! FIFO that gives a key another round for each access (a frequency capped at 3), and a
//! ghost of the keys the small FIFO evicted (as many as the main FIFO holds); a key the
//! ghost remembers goes straight to the main FIFO.
//!
//! Why it suits the SSD tier: a key read once (a backup scan, a sequential stream) passes
//! through the small FIFO and leaves, so it cannot push the hot set out; hits only bump a
//! 2-bit counter (no list surgery on the read path); and the index is small: per slot its
//! key (8 B), two links (8 B), a state byte, the index table (about 5.3 B when full) and
//! the ghost's share (about 8.4 B), about 31 B per cached block in all.
//!
//! Slots are fixed places: the queues hold slot ids, and a key moving from the small to
//! the main queue keeps its slot.

use super::ghost::Ghost;
use super::list::List;
use super::slots::{FREE, Slots};
use super::{Admission, CachePolicy, Key, SlotId};

/// The queue a slot is in: the state byte's low two bits (0 is [`FREE`]).
const SMALL: u8 = 1;
const MAIN: u8 = 2;
const QUEUE_MASK: u8 = 0b11;
/// The access frequency: the state byte's next two bits.
const FREQ_SHIFT: u8 = 2;
const FREQ_MAX: u8 = 3;

fn queue_of(state: u8) -> u8 {
    state & QUEUE_MASK
}

fn freq_of(state: u8) -> u8 {
    state >> FREQ_SHIFT
}

fn with_freq(queue: u8, freq: u8) -> u8 {
    queue | (freq << FREQ_SHIFT)
}

/// See the module doc.
pub struct S3Fifo {
    slots: Slots,
    small: List,
    main: List,
    /// The small queue's share of the slots: it is evicted from while it holds this many.
    small_target: u32,
    ghost: Ghost,
}

impl S3Fifo {
    pub fn new(capacity: u32) -> S3Fifo {
        let small_target = (capacity / 10).max(1);
        S3Fifo {
            slots: Slots::new(capacity),
            small: List::default(),
            main: List::default(),
            small_target,
            ghost: Ghost::new(capacity - small_target.min(capacity)),
        }
    }

    /// Frees a slot when every slot is taken: from the small queue while it holds its
    /// share (its keys accessed again move to main, the others are evicted to the ghost),
    /// else from the main queue (its keys accessed again go round once more, a frequency
    /// point less). Amortized O(1): every pass either evicts or spends an access.
    fn evict(&mut self) -> Option<(SlotId, Key)> {
        loop {
            if !self.small.is_empty()
                && (self.small.len() >= self.small_target || self.main.is_empty())
            {
                let slot = self.small.pop_front(&mut self.slots.links)?;
                let at = slot as usize;
                if freq_of(self.slots.state[at]) > 0 {
                    self.slots.state[at] = with_freq(MAIN, 0);
                    self.main.push_back(&mut self.slots.links, slot);
                    continue;
                }
                let key = self.slots.evict(slot);
                self.ghost.remember(key);
                return Some((slot, key));
            }
            let slot = self.main.pop_front(&mut self.slots.links)?;
            let at = slot as usize;
            let freq = freq_of(self.slots.state[at]);
            if freq > 0 {
                self.slots.state[at] = with_freq(MAIN, freq - 1);
                self.main.push_back(&mut self.slots.links, slot);
                continue;
            }
            let key = self.slots.evict(slot);
            return Some((slot, key));
        }
    }

    fn place(&mut self, slot: SlotId, key: Key, queue: u8) {
        self.slots.fill(slot, key, with_freq(queue, 0));
        let links = &mut self.slots.links;
        if queue == SMALL {
            self.small.push_back(links, slot);
        } else {
            self.main.push_back(links, slot);
        }
    }
}

impl CachePolicy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3-fifo"
    }

    fn capacity(&self) -> u32 {
        self.slots.capacity
    }

    fn len(&self) -> u32 {
        self.slots.len()
    }

    fn get(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.slots.find(key)?;
        let state = &mut self.slots.state[slot as usize];
        let freq = freq_of(*state);
        if freq < FREQ_MAX {
            *state = with_freq(queue_of(*state), freq + 1);
        }
        Some(slot)
    }

    fn peek(&self, key: Key) -> Option<SlotId> {
        self.slots.find(key)
    }

    fn admit(&mut self, key: Key) -> Admission {
        if self.slots.capacity == 0 || self.slots.find(key).is_some() {
            return Admission::Rejected;
        }
        let queue = if self.ghost.take(key) { MAIN } else { SMALL };
        let (slot, evicted) = match self.slots.take_free() {
            Some(slot) => (slot, None),
            None => match self.evict() {
                Some((slot, old)) => (slot, Some(old)),
                None => return Admission::Rejected,
            },
        };
        self.place(slot, key, queue);
        Admission::Into { slot, evicted }
    }

    fn remove(&mut self, key: Key) -> Option<SlotId> {
        let slot = self.slots.find(key)?;
        let state = self.slots.state[slot as usize];
        let queue = queue_of(state);
        debug_assert_ne!(queue, FREE);
        if queue == MAIN || freq_of(state) > 0 {
            // A block proven hot and then rewritten (or moved) stays wanted: the ghost sends
            // it straight back to main when it is admitted again.
            self.ghost.remember(key);
        }
        let links = &mut self.slots.links;
        if queue == SMALL {
            self.small.unlink(links, slot);
        } else {
            self.main.unlink(links, slot);
        }
        self.slots.release(slot);
        Some(slot)
    }

    fn restore(&mut self, key: Key, slot: SlotId) -> bool {
        if slot >= self.slots.capacity || self.slots.find(key).is_some() {
            return false;
        }
        if !self.slots.claim_for_restore(slot) {
            return false;
        }
        // It was cached before the restart: it has earned the main queue.
        self.place(slot, key, MAIN);
        true
    }

    fn for_each_resident(&self, visit: &mut dyn FnMut(Key, SlotId)) {
        self.slots.for_each_resident(visit);
    }

    fn index_bytes(&self) -> usize {
        self.slots.bytes() + self.ghost.bytes()
    }
}
