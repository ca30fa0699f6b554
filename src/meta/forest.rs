//! The redirect-on-write maps of every dataset (volume or snapshot): logical block → where
//! its copy lives on the array, the checksum that copy must match and the generation of the
//! write that produced it.
//!
//! All maps live in one arena as radix trees of 64-way nodes: a leaf holds the entries of
//! 64 consecutive blocks, an inner node 64 children, and a dataset's root covers
//! `64^(height+1)` blocks. Nodes are shared between datasets and reference-counted, so:
//!
//! - a snapshot, a restore or a refresh points one dataset's root at another's node: O(1)
//!   whatever the size of the volume;
//! - a write copies the nodes on its path that are shared (copy-on-write of metadata, at
//!   most `height + 1` nodes) and then changes its own copy; a lookup walks `height + 1`
//!   nodes, independent of how many snapshots exist;
//! - a physical block referenced from more than one leaf is counted in `shared`, and is
//!   handed back (in `freed`) only when its last reference goes;
//! - dropping a dataset only drops its root's reference: nodes whose count falls to zero
//!   wait in a queue that [`Forest::reclaim`] works through in bounded steps;
//! - two datasets of a family are compared by walking both trees and skipping the nodes
//!   they share, so the changed blocks cost what changed, not the volume's size;
//! - a block can also be shared at another address of its family (a copy by reference,
//!   [`Forest::share_block`]): such a block keeps, in `aliases`, every other address it
//!   was shared to, so the cleaner, which knows a block only by the address it was
//!   written for, finds and moves every reference to it.
//!
//! The forest is plain data under the metadata lock; it does no I/O.

use hashbrown::{HashMap, HashSet};

use crate::layout::PhysBlock;
use crate::types::Lba;

mod codec;
mod diff;
#[cfg(test)]
mod tests;

pub use codec::DecodeError;

const FANOUT_BITS: u32 = 6;
const FANOUT: usize = 1 << FANOUT_BITS;
const NIL: u32 = u32::MAX;
/// A root of this height covers 2^48 blocks (1 EiB): more than any volume may have.
const MAX_HEIGHT: u8 = 7;
/// Blocks a dataset can map: every LBA the forest holds is below this.
pub const MAX_BLOCKS: u64 = 1 << (FANOUT_BITS * (MAX_HEIGHT as u32 + 1));

/// Where a block lives and how to prove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub phys: PhysBlock,
    pub checksum: u64,
    pub generation: u64,
}

const VACANT: MapEntry = MapEntry {
    phys: u64::MAX,
    checksum: 0,
    generation: 0,
};

fn is_vacant(entry: &MapEntry) -> bool {
    entry.phys == VACANT.phys
}

enum Body {
    Leaf(Box<[MapEntry; FANOUT]>),
    Inner(Box<[u32; FANOUT]>),
    Free,
}

struct Node {
    /// Roots and inner nodes pointing here.
    refs: u32,
    /// Mapped blocks below.
    mapped: u64,
    body: Body,
}

/// A dataset's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    node: u32,
    height: u8,
    /// The family whose blocks the tree refers to (space is charged to it).
    pub family: u32,
}

/// A physical block whose last reference went, with the family it was charged to.
pub type Freed = (PhysBlock, u32);

/// Memory and sharing figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForestStats {
    pub nodes: u64,
    pub leaves: u64,
    pub bytes: u64,
    pub shared_blocks: u64,
    pub pending_nodes: u64,
}

/// See the module doc.
#[derive(Default)]
pub struct Forest {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    roots: HashMap<u32, Root>,
    /// References beyond the first to a physical block (only blocks with two or more).
    shared: HashMap<PhysBlock, u32>,
    /// Nodes no longer referenced, with the family their blocks are charged to.
    pending: Vec<(u32, u32)>,
    /// Addresses, other than the one it was written for, that a block was shared to
    /// (entries may be stale: the address was overwritten since). Dropped with the block.
    aliases: HashMap<PhysBlock, Vec<Lba>>,
    leaves: u64,
}

/// Blocks one node at `level` spans (level 0 is a leaf).
fn span(level: u8) -> u64 {
    1u64 << (FANOUT_BITS * (u32::from(level) + 1))
}

fn index_at(lba: Lba, level: u8) -> usize {
    ((lba >> (FANOUT_BITS * u32::from(level))) as usize) & (FANOUT - 1)
}

/// The lowest height whose root covers `blocks` blocks.
pub fn height_for(blocks: u64) -> u8 {
    let mut height = 0;
    while height < MAX_HEIGHT && span(height) < blocks {
        height += 1;
    }
    height
}

impl Forest {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- datasets -------------------------------------------------------------------

    /// Adds an empty dataset covering `blocks` blocks, charged to `family`.
    pub fn create(&mut self, dataset: u32, family: u32, blocks: u64) {
        self.roots.entry(dataset).or_insert(Root {
            node: NIL,
            height: height_for(blocks),
            family,
        });
    }

    pub fn contains(&self, dataset: u32) -> bool {
        self.roots.contains_key(&dataset)
    }

    pub fn root(&self, dataset: u32) -> Option<Root> {
        self.roots.get(&dataset).copied()
    }

    /// Makes `to` a dataset with `from`'s contents (a snapshot, a restore, a refresh): O(1).
    /// `to`'s previous tree, if any, is dropped.
    pub fn share(&mut self, from: u32, to: u32) -> bool {
        let Some(source) = self.roots.get(&from).copied() else {
            return false;
        };
        self.share_all(&[(to, Some(source))]);
        true
    }

    /// Makes each `(to, root)` dataset's tree `root` (taken with [`Forest::root`] before
    /// any of them changed, so the changes happen at one instant); `None` is skipped.
    pub fn share_all(&mut self, pairs: &[(u32, Option<Root>)]) {
        for (_, root) in pairs {
            if let Some(root) = root
                && root.node != NIL
            {
                self.nodes[root.node as usize].refs += 1;
            }
        }
        for (to, root) in pairs {
            let Some(root) = root else { continue };
            if let Some(before) = self.roots.insert(*to, *root) {
                self.release_node(before.node, before.family);
                self.ensure_height(*to, before.height);
            }
        }
    }

    /// Drops a dataset; its nodes are reclaimed by [`Forest::reclaim`].
    pub fn drop_dataset(&mut self, dataset: u32) -> bool {
        let Some(root) = self.roots.remove(&dataset) else {
            return false;
        };
        self.release_node(root.node, root.family);
        true
    }

    /// Lets `dataset`'s root cover at least `blocks` blocks (a volume grew).
    pub fn cover(&mut self, dataset: u32, blocks: u64) {
        self.ensure_height(dataset, height_for(blocks));
    }

    fn ensure_height(&mut self, dataset: u32, height: u8) {
        let Some(mut root) = self.roots.get(&dataset).copied() else {
            return;
        };
        while root.height < height {
            if root.node != NIL {
                let mapped = self.nodes[root.node as usize].mapped;
                let mut children = Box::new([NIL; FANOUT]);
                children[0] = root.node;
                root.node = self.alloc(Body::Inner(children), mapped);
            }
            root.height += 1;
        }
        self.roots.insert(dataset, root);
    }

    // ---- lookups ----------------------------------------------------------------------

    pub fn get(&self, dataset: u32, lba: Lba) -> Option<MapEntry> {
        let root = self.roots.get(&dataset)?;
        if lba >= span(root.height) {
            return None;
        }
        let mut id = root.node;
        let mut level = root.height;
        loop {
            if id == NIL {
                return None;
            }
            match &self.nodes[id as usize].body {
                Body::Inner(children) => {
                    id = children[index_at(lba, level)];
                    level -= 1;
                }
                Body::Leaf(entries) => {
                    let entry = entries[index_at(lba, 0)];
                    return (!is_vacant(&entry)).then_some(entry);
                }
                Body::Free => unreachable!("a reachable node is never free"),
            }
        }
    }

    /// Mapped blocks in `dataset`.
    pub fn len(&self, dataset: u32) -> u64 {
        self.roots
            .get(&dataset)
            .filter(|root| root.node != NIL)
            .map_or(0, |root| self.nodes[root.node as usize].mapped)
    }

    /// Every mapped block of `dataset` in `[start, end)`, in order, until `visit` returns
    /// false.
    pub fn visit_range(
        &self,
        dataset: u32,
        start: Lba,
        end: Lba,
        visit: &mut dyn FnMut(Lba, MapEntry) -> bool,
    ) {
        let Some(root) = self.roots.get(&dataset) else {
            return;
        };
        let end = end.min(span(root.height));
        if start < end {
            self.visit_in(root.node, root.height, 0, start, end, visit);
        }
    }

    fn visit_in(
        &self,
        id: u32,
        level: u8,
        base: Lba,
        start: Lba,
        end: Lba,
        visit: &mut dyn FnMut(Lba, MapEntry) -> bool,
    ) -> bool {
        if id == NIL || self.nodes[id as usize].mapped == 0 {
            return true;
        }
        match &self.nodes[id as usize].body {
            Body::Leaf(entries) => {
                for (index, entry) in entries.iter().enumerate() {
                    let lba = base + index as u64;
                    if lba >= start && lba < end && !is_vacant(entry) && !visit(lba, *entry) {
                        return false;
                    }
                }
                true
            }
            Body::Inner(children) => {
                let child_span = span(level - 1);
                for (index, child) in children.iter().enumerate() {
                    let child_base = base + index as u64 * child_span;
                    if child_base >= end || child_base + child_span <= start {
                        continue;
                    }
                    if !self.visit_in(*child, level - 1, child_base, start, end, visit) {
                        return false;
                    }
                }
                true
            }
            Body::Free => unreachable!("a reachable node is never free"),
        }
    }

    /// Every mapped block of `dataset`, in order.
    pub fn entries(&self, dataset: u32) -> Vec<(Lba, MapEntry)> {
        let mut out = Vec::with_capacity(self.len(dataset) as usize);
        self.visit_range(dataset, 0, u64::MAX, &mut |lba, entry| {
            out.push((lba, entry));
            true
        });
        out
    }

    // ---- changes ----------------------------------------------------------------------

    /// Sets the entry of `lba` in `dataset`, copying shared nodes on the way; returns the
    /// entry it replaces. A replaced block no other leaf refers to is pushed to `freed`.
    pub fn set(
        &mut self,
        dataset: u32,
        lba: Lba,
        entry: MapEntry,
        freed: &mut Vec<Freed>,
    ) -> Option<MapEntry> {
        debug_assert!(!is_vacant(&entry));
        let root = self.roots.get(&dataset).copied()?;
        if lba >= span(root.height) {
            self.ensure_height(dataset, height_for(lba + 1));
        }
        let leaf = self.unique_path(dataset, lba, true)?;
        let root = self.roots[&dataset];
        let Body::Leaf(entries) = &mut self.nodes[leaf as usize].body else {
            unreachable!("the path ends at a leaf");
        };
        let slot = &mut entries[index_at(lba, 0)];
        let old = std::mem::replace(slot, entry);
        if is_vacant(&old) {
            self.add_mapped_along(root, lba, 1);
            None
        } else {
            self.release_phys(old.phys, root.family, freed);
            Some(old)
        }
    }

    /// Removes every entry of `dataset` in `[start, end)` whose generation is at most
    /// `generation`, calling `removed` for each.
    pub fn remove_range(
        &mut self,
        dataset: u32,
        start: Lba,
        end: Lba,
        generation: u64,
        freed: &mut Vec<Freed>,
        removed: &mut dyn FnMut(Lba, MapEntry),
    ) {
        let Some(root) = self.roots.get(&dataset).copied() else {
            return;
        };
        let end = end.min(span(root.height));
        if start >= end || !self.any_removable(root.node, root.height, 0, start, end, generation) {
            return;
        }
        let id = self.unique_root(dataset, false);
        let mut range = RemoveRange {
            start,
            end,
            generation,
            family: root.family,
            freed,
            removed,
        };
        self.remove_in(id, root.height, 0, &mut range);
        if self.nodes[id as usize].mapped == 0 {
            self.free_slot(id);
            if let Some(root) = self.roots.get_mut(&dataset) {
                root.node = NIL;
            }
        }
    }

    fn any_removable(
        &self,
        id: u32,
        level: u8,
        base: Lba,
        start: Lba,
        end: Lba,
        generation: u64,
    ) -> bool {
        if id == NIL || self.nodes[id as usize].mapped == 0 {
            return false;
        }
        match &self.nodes[id as usize].body {
            Body::Leaf(entries) => entries.iter().enumerate().any(|(index, entry)| {
                let lba = base + index as u64;
                lba >= start && lba < end && !is_vacant(entry) && entry.generation <= generation
            }),
            Body::Inner(children) => {
                let child_span = span(level - 1);
                children.iter().enumerate().any(|(index, child)| {
                    let child_base = base + index as u64 * child_span;
                    child_base < end
                        && child_base + child_span > start
                        && self.any_removable(*child, level - 1, child_base, start, end, generation)
                })
            }
            Body::Free => false,
        }
    }

    /// `id` is unique to the dataset being changed. Returns the entries removed below it.
    fn remove_in(&mut self, id: u32, level: u8, base: Lba, range: &mut RemoveRange<'_>) -> u64 {
        let mut removed = 0;
        if level == 0 {
            let mut gone = Vec::new();
            if let Body::Leaf(entries) = &mut self.nodes[id as usize].body {
                for (index, slot) in entries.iter_mut().enumerate() {
                    let lba = base + index as u64;
                    if lba >= range.start
                        && lba < range.end
                        && !is_vacant(slot)
                        && slot.generation <= range.generation
                    {
                        gone.push((lba, std::mem::replace(slot, VACANT)));
                    }
                }
            }
            for (lba, entry) in gone {
                (range.removed)(lba, entry);
                self.release_phys(entry.phys, range.family, range.freed);
                removed += 1;
            }
        } else {
            let child_span = span(level - 1);
            for index in 0..FANOUT {
                let child_base = base + index as u64 * child_span;
                if child_base >= range.end || child_base + child_span <= range.start {
                    continue;
                }
                let child = self.child(id, index);
                if !self.any_removable(
                    child,
                    level - 1,
                    child_base,
                    range.start,
                    range.end,
                    range.generation,
                ) {
                    continue;
                }
                let child = self.unique_child(id, index, level - 1 == 0);
                removed += self.remove_in(child, level - 1, child_base, range);
                if self.nodes[child as usize].mapped == 0 {
                    self.free_slot(child);
                    if let Body::Inner(children) = &mut self.nodes[id as usize].body {
                        children[index] = NIL;
                    }
                }
            }
        }
        self.nodes[id as usize].mapped -= removed;
        removed
    }

    /// Points every reference to `old` at `new` (the cleaner moved the block): the
    /// entries of `lba`, and of every address `old` was shared to, in `datasets` whose
    /// block is `old`. Works through the reclaim queue first, so no unreachable leaf still
    /// names `old`. Returns false when nothing referred to `old` any more.
    pub fn relocate(
        &mut self,
        datasets: &[u32],
        lba: Lba,
        old: PhysBlock,
        new: PhysBlock,
        freed: &mut Vec<Freed>,
    ) -> bool {
        self.reclaim(usize::MAX, freed);
        let mut moved = self.relocate_at(datasets, lba, old, new);
        if let Some(aliases) = self.aliases.get(&old).cloned() {
            for alias in aliases.into_iter().filter(|alias| *alias != lba) {
                moved |= self.relocate_at(datasets, alias, old, new);
            }
        }
        if moved {
            if let Some(count) = self.shared.remove(&old) {
                self.shared.insert(new, count);
            }
            if let Some(aliases) = self.aliases.remove(&old) {
                self.aliases.insert(new, aliases);
            }
        }
        moved
    }

    /// Points the entries of `place` in `datasets` that name `old` at `new`; each leaf is
    /// changed once however many datasets share it.
    fn relocate_at(
        &mut self,
        datasets: &[u32],
        place: Lba,
        old: PhysBlock,
        new: PhysBlock,
    ) -> bool {
        let mut visited: HashSet<u32> = HashSet::new();
        let mut moved = false;
        for dataset in datasets {
            let Some(leaf) = self.leaf_of(*dataset, place) else {
                continue;
            };
            if !visited.insert(leaf) {
                continue;
            }
            if let Body::Leaf(entries) = &mut self.nodes[leaf as usize].body {
                let slot = &mut entries[index_at(place, 0)];
                if slot.phys == old {
                    slot.phys = new;
                    moved = true;
                }
            }
        }
        moved
    }

    /// Addresses other than the one it was written for that `phys` was shared to (some
    /// may no longer name it).
    pub fn aliases(&self, phys: PhysBlock) -> &[Lba] {
        self.aliases.get(&phys).map_or(&[], Vec::as_slice)
    }

    /// Makes `lba` of `dataset` refer to a block another entry of the same family already
    /// refers to (a copy by reference): `entry` names that block, with the checksum it
    /// has at `lba`; `home` is an address the block is known by (where it was read from).
    /// The previous entry of `lba` is replaced as by [`Forest::set`].
    pub fn share_block(
        &mut self,
        dataset: u32,
        lba: Lba,
        home: Lba,
        entry: MapEntry,
        freed: &mut Vec<Freed>,
    ) -> Option<MapEntry> {
        if !self.roots.contains_key(&dataset) {
            return None;
        }
        *self.shared.entry(entry.phys).or_insert(0) += 1;
        if lba != home {
            let aliases = self.aliases.entry(entry.phys).or_default();
            if !aliases.contains(&lba) {
                aliases.push(lba);
            }
        }
        self.set(dataset, lba, entry, freed)
    }

    fn leaf_of(&self, dataset: u32, lba: Lba) -> Option<u32> {
        let root = self.roots.get(&dataset)?;
        if lba >= span(root.height) {
            return None;
        }
        let mut id = root.node;
        let mut level = root.height;
        while level > 0 && id != NIL {
            id = self.child(id, index_at(lba, level));
            level -= 1;
        }
        (id != NIL).then_some(id)
    }

    // ---- reclaiming -------------------------------------------------------------------

    /// Frees up to `budget` unreferenced nodes; blocks whose last reference goes are
    /// pushed to `freed`. Returns the nodes freed.
    pub fn reclaim(&mut self, budget: usize, freed: &mut Vec<Freed>) -> usize {
        let mut done = 0;
        while done < budget {
            let Some((id, family)) = self.pending.pop() else {
                break;
            };
            let body = std::mem::replace(&mut self.nodes[id as usize].body, Body::Free);
            match &body {
                Body::Leaf(entries) => {
                    for entry in entries.iter().filter(|entry| !is_vacant(entry)) {
                        self.release_phys(entry.phys, family, freed);
                    }
                }
                Body::Inner(children) => {
                    for child in children.iter() {
                        self.release_node(*child, family);
                    }
                }
                Body::Free => {}
            }
            self.nodes[id as usize].body = body;
            self.free_slot(id);
            done += 1;
        }
        done
    }

    /// Frees every node waiting to be reclaimed, forgetting the blocks it frees: at start,
    /// before live space is counted from the roots.
    pub fn reclaim_all(&mut self) {
        let mut freed = Vec::new();
        while self.reclaim(4096, &mut freed) > 0 {
            freed.clear();
        }
    }

    /// Nodes waiting to be reclaimed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    // ---- space ------------------------------------------------------------------------

    /// Blocks only `dataset` refers to: what deleting it would free. Exact when nothing
    /// waits to be reclaimed; until then blocks still named by dropped nodes count as
    /// shared.
    pub fn unique_blocks(&self, dataset: u32) -> u64 {
        let Some(root) = self.roots.get(&dataset) else {
            return 0;
        };
        self.unique_in(root.node)
    }

    fn unique_in(&self, id: u32) -> u64 {
        if id == NIL || self.nodes[id as usize].refs != 1 {
            return 0;
        }
        match &self.nodes[id as usize].body {
            Body::Leaf(entries) => entries
                .iter()
                .filter(|entry| !is_vacant(entry) && !self.shared.contains_key(&entry.phys))
                .count() as u64,
            Body::Inner(children) => children.iter().map(|child| self.unique_in(*child)).sum(),
            Body::Free => 0,
        }
    }

    /// Every block referenced from some dataset, once, with the family it is charged to.
    pub fn live_blocks(&self) -> Vec<Freed> {
        let mut seen_nodes: HashSet<u32> = HashSet::new();
        let mut seen_shared: HashSet<PhysBlock> = HashSet::new();
        let mut out = Vec::new();
        let mut stack: Vec<(u32, u32)> = self
            .roots
            .values()
            .filter(|root| root.node != NIL)
            .map(|root| (root.node, root.family))
            .collect();
        while let Some((id, family)) = stack.pop() {
            if !seen_nodes.insert(id) {
                continue;
            }
            match &self.nodes[id as usize].body {
                Body::Leaf(entries) => {
                    for entry in entries.iter().filter(|entry| !is_vacant(entry)) {
                        if self.shared.contains_key(&entry.phys) && !seen_shared.insert(entry.phys)
                        {
                            continue;
                        }
                        out.push((entry.phys, family));
                    }
                }
                Body::Inner(children) => stack.extend(
                    children
                        .iter()
                        .filter(|child| **child != NIL)
                        .map(|child| (*child, family)),
                ),
                Body::Free => {}
            }
        }
        out
    }

    pub fn stats(&self) -> ForestStats {
        let nodes = (self.nodes.len() - self.free_nodes.len()) as u64;
        let inner = nodes - self.leaves;
        ForestStats {
            nodes,
            leaves: self.leaves,
            bytes: self.leaves * (std::mem::size_of::<[MapEntry; FANOUT]>() as u64 + 24)
                + inner * (std::mem::size_of::<[u32; FANOUT]>() as u64 + 24)
                + self.shared.len() as u64 * 24
                + self
                    .aliases
                    .values()
                    .map(|a| 48 + a.len() as u64 * 8)
                    .sum::<u64>()
                + self.roots.len() as u64 * 32,
            shared_blocks: self.shared.len() as u64,
            pending_nodes: self.pending.len() as u64,
        }
    }

    // ---- arena ------------------------------------------------------------------------

    fn alloc(&mut self, body: Body, mapped: u64) -> u32 {
        if matches!(body, Body::Leaf(_)) {
            self.leaves += 1;
        }
        let node = Node {
            refs: 1,
            mapped,
            body,
        };
        if let Some(id) = self.free_nodes.pop() {
            self.nodes[id as usize] = node;
            id
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn free_slot(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize];
        if matches!(node.body, Body::Leaf(_)) {
            self.leaves -= 1;
        }
        node.body = Body::Free;
        node.refs = 0;
        node.mapped = 0;
        self.free_nodes.push(id);
    }

    fn child(&self, id: u32, index: usize) -> u32 {
        match &self.nodes[id as usize].body {
            Body::Inner(children) => children[index],
            _ => NIL,
        }
    }

    fn release_node(&mut self, id: u32, family: u32) {
        if id == NIL {
            return;
        }
        let node = &mut self.nodes[id as usize];
        node.refs -= 1;
        if node.refs == 0 {
            self.pending.push((id, family));
        }
    }

    fn release_phys(&mut self, phys: PhysBlock, family: u32, freed: &mut Vec<Freed>) {
        match self.shared.get_mut(&phys) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.shared.remove(&phys);
            }
            None => {
                self.aliases.remove(&phys);
                freed.push((phys, family));
            }
        }
    }

    /// A copy of a shared node, owned by one referrer: its children gain a reference, its
    /// blocks a sharer.
    fn copy_node(&mut self, id: u32) -> u32 {
        let mapped = self.nodes[id as usize].mapped;
        let body = match &self.nodes[id as usize].body {
            Body::Leaf(entries) => Body::Leaf(entries.clone()),
            Body::Inner(children) => Body::Inner(children.clone()),
            Body::Free => unreachable!("a referenced node is never free"),
        };
        match &body {
            Body::Leaf(entries) => {
                for entry in entries.iter().filter(|entry| !is_vacant(entry)) {
                    *self.shared.entry(entry.phys).or_insert(0) += 1;
                }
            }
            Body::Inner(children) => {
                for child in children.iter().filter(|child| **child != NIL) {
                    self.nodes[*child as usize].refs += 1;
                }
            }
            Body::Free => {}
        }
        self.alloc(body, mapped)
    }

    fn empty_body(leaf: bool) -> Body {
        if leaf {
            Body::Leaf(Box::new([VACANT; FANOUT]))
        } else {
            Body::Inner(Box::new([NIL; FANOUT]))
        }
    }

    /// The dataset's root node, made its own (copied when shared, created when empty).
    fn unique_root(&mut self, dataset: u32, create: bool) -> u32 {
        let root = self.roots[&dataset];
        let id = if root.node == NIL {
            debug_assert!(create);
            self.alloc(Self::empty_body(root.height == 0), 0)
        } else if self.nodes[root.node as usize].refs > 1 {
            let copy = self.copy_node(root.node);
            self.nodes[root.node as usize].refs -= 1;
            copy
        } else {
            root.node
        };
        self.roots.get_mut(&dataset).expect("exists").node = id;
        id
    }

    /// Child `index` of the dataset's own node `parent`, made its own too.
    fn unique_child(&mut self, parent: u32, index: usize, leaf: bool) -> u32 {
        let child = self.child(parent, index);
        let id = if child == NIL {
            self.alloc(Self::empty_body(leaf), 0)
        } else if self.nodes[child as usize].refs > 1 {
            let copy = self.copy_node(child);
            self.nodes[child as usize].refs -= 1;
            copy
        } else {
            return child;
        };
        if let Body::Inner(children) = &mut self.nodes[parent as usize].body {
            children[index] = id;
        }
        id
    }

    /// Makes every node from the root to `lba`'s leaf the dataset's own; returns the leaf.
    fn unique_path(&mut self, dataset: u32, lba: Lba, create: bool) -> Option<u32> {
        let root = self.roots[&dataset];
        let mut id = self.unique_root(dataset, create);
        let mut level = root.height;
        while level > 0 {
            id = self.unique_child(id, index_at(lba, level), level == 1);
            level -= 1;
        }
        Some(id)
    }

    fn add_mapped_along(&mut self, root: Root, lba: Lba, count: u64) {
        let mut id = root.node;
        let mut level = root.height;
        loop {
            self.nodes[id as usize].mapped += count;
            if level == 0 {
                break;
            }
            id = self.child(id, index_at(lba, level));
            level -= 1;
        }
    }
}

struct RemoveRange<'a> {
    start: Lba,
    end: Lba,
    generation: u64,
    family: u32,
    freed: &'a mut Vec<Freed>,
    removed: &'a mut dyn FnMut(Lba, MapEntry),
}
