//! Doubly linked lists threaded through per-id arrays (`Links`), so that a policy's queues
//! hold ids (slots) and cost 8 bytes an id however many lists there are: an id is in at
//! most one list at a time, and moving it between lists never moves what the id names.
//! Every operation is O(1) and allocates nothing.

/// No id (the end of a list).
pub const NIL: u32 = u32::MAX;

/// The previous and next id of each id, for whichever list it is in.
#[derive(Default)]
pub struct Links {
    prev: Vec<u32>,
    next: Vec<u32>,
}

/// One list's ends and length; its members' links live in a shared [`Links`].
#[derive(Clone, Copy)]
pub struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for List {
    fn default() -> List {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl List {
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The oldest member (the next to leave a FIFO or an LRU list).
    pub fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Appends `id` (not in any list) as the newest member.
    pub fn push_back(&mut self, links: &mut Links, id: u32) {
        let at = id as usize;
        links.prev[at] = self.tail;
        links.next[at] = NIL;
        if self.tail == NIL {
            self.head = id;
        } else {
            links.next[self.tail as usize] = id;
        }
        self.tail = id;
        self.len += 1;
    }

    /// Removes and returns the oldest member.
    pub fn pop_front(&mut self, links: &mut Links) -> Option<u32> {
        let id = self.head()?;
        self.unlink(links, id);
        Some(id)
    }

    /// Takes `id`, a member of this list, out of it.
    pub fn unlink(&mut self, links: &mut Links, id: u32) {
        let at = id as usize;
        let (prev, next) = (links.prev[at], links.next[at]);
        if prev == NIL {
            debug_assert_eq!(self.head, id, "id {id} is not in this list");
            self.head = next;
        } else {
            links.next[prev as usize] = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            links.prev[next as usize] = prev;
        }
        links.prev[at] = NIL;
        links.next[at] = NIL;
        self.len -= 1;
    }
}

impl Links {
    /// Makes room for ids up to `ids` (exclusive), growing by doubling but never past
    /// `limit`.
    pub fn extend_to(&mut self, ids: usize, limit: usize) {
        if ids <= self.next.len() {
            return;
        }
        reserve_doubling(&mut self.prev, ids, limit);
        reserve_doubling(&mut self.next, ids, limit);
        self.prev.resize(ids, NIL);
        self.next.resize(ids, NIL);
    }

    /// Allocated bytes.
    pub fn bytes(&self) -> usize {
        (self.prev.capacity() + self.next.capacity()) * std::mem::size_of::<u32>()
    }
}

/// Reserves room in `vec` for `wanted` elements: doubling (so pushes are amortized O(1)),
/// capped at `limit` (so a policy never holds room for more slots than its capacity).
pub fn reserve_doubling<T>(vec: &mut Vec<T>, wanted: usize, limit: usize) {
    if wanted <= vec.capacity() {
        return;
    }
    let target = (vec.capacity() * 2).max(16).min(limit).max(wanted);
    vec.reserve_exact(target - vec.len());
}
