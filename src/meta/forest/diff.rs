//! Comparing two datasets' trees: the blocks whose entries differ, found by walking both
//! trees together and skipping the subtrees they share (the cost is what changed, not the
//! volume's size). Trees of different heights are compared as if the shorter one sat under
//! child 0 of inner nodes that hold nothing else.

use super::{Body, FANOUT, Forest, MapEntry, NIL, Root, is_vacant, span};
use crate::types::Lba;

impl Forest {
    /// The blocks whose entries differ between datasets `a` and `b` (mapped in one and not
    /// the other, or mapped to different copies), in order; shared subtrees are skipped.
    pub fn diff(&self, a: u32, b: u32, visit: &mut dyn FnMut(Lba)) {
        self.diff_range(a, b, 0, u64::MAX, visit);
    }

    /// [`Forest::diff`] limited to the blocks in `[start, end)`.
    pub fn diff_range(&self, a: u32, b: u32, start: Lba, end: Lba, visit: &mut dyn FnMut(Lba)) {
        let (Some(ra), Some(rb)) = (self.root(a), self.root(b)) else {
            return;
        };
        let height = ra.height.max(rb.height);
        let (na, nb) = (self.lift(ra, height), self.lift(rb, height));
        let mut range = DiffRange { start, end, visit };
        self.diff_in(na, nb, height, 0, &mut range);
    }

    /// The node standing for `root` at `height`: its own node, or, for a shorter tree,
    /// the node it would sit under child 0 of (inner nodes that would only add NILs are
    /// modelled by `Lifted`).
    fn lift(&self, root: Root, height: u8) -> Lifted {
        Lifted {
            node: root.node,
            below: height - root.height,
        }
    }

    fn diff_in(&self, a: Lifted, b: Lifted, level: u8, base: Lba, range: &mut DiffRange<'_>) {
        if a.below == b.below && a.node == b.node {
            return;
        }
        if a.is_empty() && b.is_empty() {
            return;
        }
        if base >= range.end || base.saturating_add(span(level)) <= range.start {
            return;
        }
        if level == 0 {
            for index in 0..FANOUT {
                let ea = self.leaf_entry(a, index);
                let eb = self.leaf_entry(b, index);
                let differ = match (ea, eb) {
                    (None, None) => false,
                    (Some(x), Some(y)) => x.phys != y.phys || x.checksum != y.checksum,
                    _ => true,
                };
                let lba = base + index as u64;
                if differ && lba >= range.start && lba < range.end {
                    (range.visit)(lba);
                }
            }
            return;
        }
        let child_span = span(level - 1);
        for index in 0..FANOUT {
            let ca = self.lifted_child(a, index);
            let cb = self.lifted_child(b, index);
            self.diff_in(ca, cb, level - 1, base + index as u64 * child_span, range);
        }
    }

    fn lifted_child(&self, at: Lifted, index: usize) -> Lifted {
        if at.below > 0 {
            return if index == 0 {
                Lifted {
                    node: at.node,
                    below: at.below - 1,
                }
            } else {
                Lifted::EMPTY
            };
        }
        if at.node == NIL {
            return Lifted::EMPTY;
        }
        Lifted {
            node: self.child(at.node, index),
            below: 0,
        }
    }

    fn leaf_entry(&self, at: Lifted, index: usize) -> Option<MapEntry> {
        if at.below > 0 || at.node == NIL {
            return None;
        }
        match &self.nodes[at.node as usize].body {
            Body::Leaf(entries) => Some(entries[index]).filter(|entry| !is_vacant(entry)),
            _ => None,
        }
    }
}

struct DiffRange<'a> {
    start: Lba,
    end: Lba,
    visit: &'a mut dyn FnMut(Lba),
}

/// A node seen from a taller tree: `below` levels of would-be inner nodes whose only
/// child is at index 0 sit above it.
#[derive(Clone, Copy)]
struct Lifted {
    node: u32,
    below: u8,
}

impl Lifted {
    const EMPTY: Lifted = Lifted {
        node: NIL,
        below: 0,
    };

    fn is_empty(&self) -> bool {
        self.node == NIL
    }
}
