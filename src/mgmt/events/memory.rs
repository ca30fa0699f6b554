//! The newest events in memory, stored compactly: a ring of fixed 64-byte records, with
//! the description in its own exact-size allocation, code, reporter and visibility as
//! 16-bit symbols, and usernames shared between the events that name the same user.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::{Event, Level};

/// A string interned in [`Symbols`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Symbol(u16);

/// Small-cardinality strings (codes, reporters, visibilities), interned for the life of
/// the log. They only come from the registry and from our own file, so the table stays
/// small; if it ever filled up, further strings would read back as `UNKNOWN`.
struct Symbols {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, Symbol>,
}

const OVERFLOW_SYMBOL: Symbol = Symbol(0);

impl Symbols {
    fn new() -> Symbols {
        let mut symbols = Symbols {
            names: Vec::new(),
            index: HashMap::new(),
        };
        symbols.intern("UNKNOWN");
        symbols
    }

    fn intern(&mut self, name: &str) -> Symbol {
        if let Some(&symbol) = self.index.get(name) {
            return symbol;
        }
        let Ok(next) = u16::try_from(self.names.len()) else {
            return OVERFLOW_SYMBOL;
        };
        self.names.push(name.into());
        self.index.insert(name.into(), Symbol(next));
        Symbol(next)
    }

    fn name(&self, symbol: Symbol) -> &str {
        &self.names[usize::from(symbol.0)]
    }
}

/// Usernames shared by the events that carry them. Usernames of failed logins are chosen
/// by whoever tries, so names no retained event uses any more are dropped whenever the
/// set has doubled since the last sweep.
struct Usernames {
    names: HashSet<Arc<str>>,
    sweep_at: usize,
}

const MIN_USERNAME_SWEEP: usize = 1024;

impl Usernames {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return Arc::clone(shared);
        }
        if self.names.len() >= self.sweep_at {
            self.names.retain(|shared| Arc::strong_count(shared) > 1);
            self.sweep_at = (self.names.len() * 2).max(MIN_USERNAME_SWEEP);
        }
        let shared: Arc<str> = name.into();
        self.names.insert(Arc::clone(&shared));
        shared
    }
}

/// One retained event (64 bytes plus its description).
struct Stored {
    id: u64,
    timestamp: u64,
    affected_entity_id: u64,
    description: Box<str>,
    username: Option<Arc<str>>,
    code: Symbol,
    reporter: Symbol,
    visibility: Symbol,
    level: Level,
    has_affected_entity: bool,
}

/// The newest `keep` events, oldest first, ids strictly increasing.
pub(super) struct Retained {
    ring: VecDeque<Stored>,
    keep: usize,
    symbols: Symbols,
    usernames: Usernames,
}

impl Retained {
    pub(super) fn new(keep: usize) -> Retained {
        Retained {
            ring: VecDeque::new(),
            keep,
            symbols: Symbols::new(),
            usernames: Usernames {
                names: HashSet::new(),
                sweep_at: MIN_USERNAME_SWEEP,
            },
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Id of the newest retained event, if any.
    pub(super) fn newest_id(&self) -> Option<u64> {
        self.ring.back().map(|stored| stored.id)
    }

    /// Adds `event`, whose id must be above every retained id, and forgets the oldest
    /// event beyond `keep`.
    pub(super) fn push(&mut self, event: Event) {
        debug_assert!(self.newest_id().is_none_or(|newest| newest < event.id));
        let stored = Stored {
            id: event.id,
            timestamp: event.timestamp,
            affected_entity_id: event.affected_entity_id.unwrap_or(0),
            description: event.description.into_boxed_str(),
            username: event.username.map(|name| self.usernames.intern(&name)),
            code: self.symbols.intern(&event.code),
            reporter: self.symbols.intern(&event.reporter),
            visibility: self.symbols.intern(&event.visibility),
            level: event.level,
            has_affected_entity: event.affected_entity_id.is_some(),
        };
        self.ring.push_back(stored);
        while self.ring.len() > self.keep {
            self.ring.pop_front();
        }
    }

    /// Up to `limit` events with ids above `after_id`, oldest first.
    pub(super) fn after(&self, after_id: u64, limit: usize) -> Vec<Event> {
        let start = self.ring.partition_point(|stored| stored.id <= after_id);
        self.ring
            .range(start..)
            .take(limit)
            .map(|stored| self.to_event(stored))
            .collect()
    }

    /// Walks the events once (newest first or oldest first), counting those `filter`
    /// accepts and returning the accepted ones in `skip..skip + take` of that order. The
    /// filter sees one reused scratch `Event`, so rejected events are never allocated.
    pub(super) fn query(
        &self,
        filter: &dyn Fn(&Event) -> bool,
        newest_first: bool,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<Event>) {
        let order: Box<dyn Iterator<Item = &Stored>> = if newest_first {
            Box::new(self.ring.iter().rev())
        } else {
            Box::new(self.ring.iter())
        };
        let mut scratch = blank_event();
        let mut matching = 0;
        let mut page = Vec::new();
        for stored in order {
            self.fill(stored, &mut scratch);
            if filter(&scratch) {
                if matching >= skip && page.len() < take {
                    page.push(scratch.clone());
                }
                matching += 1;
            }
        }
        (matching, page)
    }

    fn to_event(&self, stored: &Stored) -> Event {
        let mut event = blank_event();
        self.fill(stored, &mut event);
        event
    }

    /// Overwrites `event` with `stored`, reusing its string buffers.
    fn fill(&self, stored: &Stored, event: &mut Event) {
        fn set(target: &mut String, value: &str) {
            target.clear();
            target.push_str(value);
        }
        event.id = stored.id;
        event.seq_num = stored.id;
        set(&mut event.code, self.symbols.name(stored.code));
        event.level = stored.level;
        set(&mut event.description, &stored.description);
        event.timestamp = stored.timestamp;
        set(&mut event.reporter, self.symbols.name(stored.reporter));
        event.affected_entity_id = stored
            .has_affected_entity
            .then_some(stored.affected_entity_id);
        match (&stored.username, &mut event.username) {
            (None, username) => *username = None,
            (Some(name), Some(username)) => set(username, name),
            (Some(name), username) => *username = Some(name.to_string()),
        }
        set(&mut event.visibility, self.symbols.name(stored.visibility));
    }
}

fn blank_event() -> Event {
    Event {
        id: 0,
        code: String::new(),
        level: Level::Info,
        description: String::new(),
        timestamp: 0,
        reporter: String::new(),
        affected_entity_id: None,
        username: None,
        visibility: String::new(),
        seq_num: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retained_event_is_64_bytes_plus_its_description() {
        assert_eq!(std::mem::size_of::<Stored>(), 64);
    }
}
