//! The connection slots of one management listener: how many connections are served at
//! once, which class each is in, and which one gives way when a new one arrives.
//!
//! Classes: a connection starts *unauthenticated* (TCP) and becomes *authenticated* once
//! one of its requests proved a user (credentials, session cookie or a login); unix-socket
//! connections are authenticated from the start. Limits:
//! - at most [`MAX_UNAUTHENTICATED`] unauthenticated connections, and at most
//!   [`MAX_PER_ADDRESS`] of them from one client address;
//! - at most [`MAX_AUTHENTICATED`] authenticated ones: this room is reserved, no
//!   unauthenticated connection can take it;
//! - at most [`MAX_CONNECTIONS`] in all, counting connections that were told to close and
//!   have not finished closing (so threads are bounded too).
//!
//! A new connection over a limit does not wait and is not refused while an older
//! connection of its class (and address, for the per-address limit) can give way: one is
//! closed to make room (`shutdown(2)` on its socket, which wakes its thread at once). The
//! order in which connections give way, each group oldest first:
//! 1. silent ones: not one byte received [`SILENT_GRACE`] after being accepted, so a flood
//!    of connections that are opened and left (and reopened when closed) pushes out its
//!    own;
//! 2. those whose last answer refused their credentials (401 or 429), even in the middle
//!    of a request, so password guessers push out each other rather than a user;
//! 3. new silent ones still within their grace;
//! 4. the others that are not in the middle of answering a request, by the time of their
//!    last answer: a client that trickles a request head in (slowloris) goes before one
//!    that was just answered, and the header timeout closes it anyway.
//!
//! Only when every connection of the class is busy answering is the new one refused.
//!
//! What this does not cover: an attacker on the *same* address as a user that also sends
//! bytes on each of its connections competes with the user's new connections by age. The
//! per-address limit is what separates attackers from users on other addresses, and a
//! user's authenticated keep-alive connection is never pushed out by unauthenticated ones.

use std::net::{IpAddr, Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most unauthenticated connections at once.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// Most unauthenticated connections from one client address.
pub const MAX_PER_ADDRESS: usize = 32;
/// Room reserved for connections that authenticated.
pub const MAX_AUTHENTICATED: usize = 64;
/// A new connection that has not spoken yet is not taken for an idle one before this.
pub const SILENT_GRACE: Duration = Duration::from_millis(500);
/// Connections told to close may still be finishing; this much room is kept for them.
const CLOSING_HEADROOM: usize = 32;
/// Most connections (and connection threads) at once.
pub const MAX_CONNECTIONS: usize = MAX_UNAUTHENTICATED + MAX_AUTHENTICATED + CLOSING_HEADROOM;

/// A handle that can close a connection's socket from another thread.
pub enum Closer {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Closer {
    fn close(&self) {
        let _ = match self {
            Closer::Tcp(stream) => stream.shutdown(Shutdown::Both),
            Closer::Unix(stream) => stream.shutdown(Shutdown::Both),
        };
    }
}

struct Slot {
    id: u64,
    peer: Option<IpAddr>,
    authenticated: bool,
    busy: bool,
    /// The client has sent at least one byte.
    spoke: bool,
    /// The last answer refused the client's credentials.
    refused: bool,
    /// When the connection last finished an answer (or was accepted).
    idle_since: Instant,
    /// Told to close; no longer counted in its class.
    closing: bool,
    closer: Closer,
}

impl Slot {
    /// The order in which connections give way (lowest first), see the module doc.
    fn give_way_rank(&self) -> u8 {
        match (self.spoke, self.refused) {
            (false, _) if self.idle_since.elapsed() >= SILENT_GRACE => 0,
            (true, true) => 1,
            (false, _) => 2,
            (true, false) => 3,
        }
    }
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    next_id: u64,
}

impl Table {
    fn live(&self, authenticated: bool, peer: Option<Option<IpAddr>>) -> usize {
        self.slots
            .iter()
            .filter(|slot| !slot.closing && slot.authenticated == authenticated)
            .filter(|slot| peer.is_none_or(|peer| slot.peer == peer))
            .count()
    }

    /// Closes the connection idle the longest in the class (and of the address); false if
    /// every one of them is busy.
    fn close_oldest_idle(&mut self, authenticated: bool, peer: Option<Option<IpAddr>>) -> bool {
        let oldest = self
            .slots
            .iter_mut()
            .filter(|slot| !slot.closing && slot.authenticated == authenticated)
            // A connection whose credentials were refused may go even mid-request.
            .filter(|slot| !slot.busy || slot.refused)
            .filter(|slot| peer.is_none_or(|peer| slot.peer == peer))
            .min_by_key(|slot| (slot.give_way_rank(), slot.idle_since));
        match oldest {
            Some(slot) => {
                slot.closing = true;
                slot.closer.close();
                true
            }
            None => false,
        }
    }

    /// Makes room in the class for one more; false if it cannot.
    fn make_room(&mut self, authenticated: bool, peer: Option<IpAddr>) -> bool {
        if authenticated {
            return self.live(true, None) < MAX_AUTHENTICATED || self.close_oldest_idle(true, None);
        }
        if peer.is_some() && self.live(false, Some(peer)) >= MAX_PER_ADDRESS {
            return self.close_oldest_idle(false, Some(peer));
        }
        self.live(false, None) < MAX_UNAUTHENTICATED || self.close_oldest_idle(false, None)
    }
}

/// See the module doc.
#[derive(Default)]
pub struct Slots {
    table: Mutex<Table>,
}

impl Slots {
    pub fn new() -> Arc<Slots> {
        Arc::new(Slots::default())
    }

    /// Takes a slot for a new connection, closing an idle one if needed; `None` when the
    /// connection must be refused.
    pub fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        authenticated: bool,
        closer: Closer,
    ) -> Option<SlotGuard> {
        let mut table = self.table.lock();
        if table.slots.len() >= MAX_CONNECTIONS || !table.make_room(authenticated, peer) {
            return None;
        }
        let id = table.next_id;
        table.next_id += 1;
        table.slots.push(Slot {
            id,
            peer,
            authenticated,
            busy: false,
            spoke: false,
            refused: false,
            idle_since: Instant::now(),
            closing: false,
            closer,
        });
        Some(SlotGuard {
            slots: Arc::clone(self),
            id,
        })
    }

    fn with_slot(&self, id: u64, change: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self
            .table
            .lock()
            .slots
            .iter_mut()
            .find(|slot| slot.id == id)
        {
            change(slot);
        }
    }

    /// Counts of live (not closing) connections: (unauthenticated, authenticated).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let table = self.table.lock();
        (table.live(false, None), table.live(true, None))
    }
}

/// A connection's slot; dropping it frees the slot.
pub struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
}

impl SlotGuard {
    /// The connection is answering a request (not to be closed for room) or done with it.
    pub fn set_busy(&self, busy: bool) {
        self.slots.with_slot(self.id, |slot| {
            slot.busy = busy;
            if !busy {
                slot.idle_since = Instant::now();
            }
        });
    }

    /// Whether the last answer refused the client's credentials (401 or 429): such
    /// connections give way before others that spoke.
    pub fn set_refused(&self, refused: bool) {
        self.slots.with_slot(self.id, |slot| slot.refused = refused);
    }

    /// The client sent its first byte: the connection is no longer among the silent ones
    /// that are closed first.
    pub fn spoke(&self) {
        self.slots.with_slot(self.id, |slot| slot.spoke = true);
    }

    /// The connection proved a user: move it to the reserved room if there is (or can be
    /// made) space; otherwise it stays where it is.
    pub fn promote(&self) {
        let mut table = self.slots.table.lock();
        let already = table
            .slots
            .iter()
            .find(|slot| slot.id == self.id)
            .is_none_or(|slot| slot.authenticated || slot.closing);
        if already || !table.make_room(true, None) {
            return;
        }
        if let Some(slot) = table.slots.iter_mut().find(|slot| slot.id == self.id) {
            slot.authenticated = true;
        }
    }

    /// Whether the connection was told to close to make room.
    pub fn closing(&self) -> bool {
        let table = self.slots.table.lock();
        table
            .slots
            .iter()
            .find(|slot| slot.id == self.id)
            .is_none_or(|slot| slot.closing)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots
            .table
            .lock()
            .slots
            .retain(|slot| slot.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn new_connections_push_out_the_longest_idle_and_spare_the_authenticated() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let slots = Slots::new();
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let mut kept = Vec::new();
        let (client, server) = pair(&listener);
        let first = slots
            .admit(local, false, Closer::Tcp(server.try_clone().unwrap()))
            .unwrap();
        first.promote();
        kept.push((client, server, first));
        for index in 0..MAX_PER_ADDRESS + 5 {
            if index == MAX_PER_ADDRESS {
                // Past their grace, the silent ones are the first to go.
                std::thread::sleep(SILENT_GRACE);
            }
            let (client, server) = pair(&listener);
            let guard = slots
                .admit(local, false, Closer::Tcp(server.try_clone().unwrap()))
                .expect("an idle connection makes room");
            if index == 1 {
                guard.spoke();
            }
            kept.push((client, server, guard));
        }
        assert_eq!(slots.counts(), (MAX_PER_ADDRESS, 1));
        // The promoted one was not closed, nor the one that spoke; the oldest silent
        // unauthenticated ones were.
        assert!(!kept[0].2.closing());
        assert!(kept[1].2.closing());
        assert!(!kept[2].2.closing());
        assert!(kept[3].2.closing());
        // A closed connection's peer sees the end of the stream.
        let mut buf = [0u8; 1];
        use std::io::Read;
        assert_eq!((&kept[1].0).read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_class_of_busy_connections_refuses_newcomers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let slots = Slots::new();
        let mut kept = Vec::new();
        for index in 0..MAX_UNAUTHENTICATED {
            let (client, server) = pair(&listener);
            let peer = Some(IpAddr::from([
                10,
                0,
                (index / 200) as u8,
                (index % 200) as u8,
            ]));
            let guard = slots
                .admit(peer, false, Closer::Tcp(server.try_clone().unwrap()))
                .unwrap();
            guard.set_busy(true);
            kept.push((client, server, guard));
        }
        let (_client, server) = pair(&listener);
        let refused = slots.admit(
            Some(IpAddr::from([10, 1, 1, 1])),
            false,
            Closer::Tcp(server.try_clone().unwrap()),
        );
        assert!(refused.is_none());
        // The reserved room is still open to the unix socket's (authenticated) class.
        assert!(slots.admit(None, true, Closer::Tcp(server)).is_some());
    }
}
