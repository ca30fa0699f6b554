//! The forest as checkpoint bytes (little-endian): every reachable node once, children
//! before parents, then the roots. Reference counts, mapped counts and the shared-block
//! counts are not stored: loading recomputes them from the structure.
//!
//! ```text
//! nodes u32, then per node: tag u8 (1 leaf, 2 inner) | count u8 | then count times
//!   leaf:  index u8 | phys u64 | checksum u64 | generation u64
//!   inner: level u8 once, then per child: index u8 | child ordinal u32
//! roots u32, then per root: dataset u32 | family u32 | height u8 | node ordinal u32 (MAX: empty)
//! aliases u32, then per block shared to other addresses: phys u64 | count u32 | lba u64 x count
//! ```
//!
//! Checkpoints written before copies by reference existed end after the roots; they are
//! read with `with_aliases` false.

use hashbrown::HashMap;

use super::{Body, FANOUT, Forest, MAX_HEIGHT, MapEntry, NIL, Root, VACANT, is_vacant};

/// The checkpoint's forest section does not describe a valid forest.
#[derive(Debug, thiserror::Error)]
#[error("the checkpoint's map section is damaged: {0}")]
pub struct DecodeError(pub String);

const LEAF: u8 = 1;
const INNER: u8 = 2;

impl Forest {
    /// Appends the forest to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut ordinals: HashMap<u32, u32> = HashMap::new();
        let mut body = Vec::new();
        let mut roots: Vec<(&u32, &Root)> = self.roots.iter().collect();
        roots.sort_by_key(|(dataset, _)| **dataset);
        for (_, root) in &roots {
            self.encode_node(root.node, root.height, &mut ordinals, &mut body);
        }
        out.extend_from_slice(&(ordinals.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&(roots.len() as u32).to_le_bytes());
        for (dataset, root) in roots {
            out.extend_from_slice(&dataset.to_le_bytes());
            out.extend_from_slice(&root.family.to_le_bytes());
            out.push(root.height);
            let ordinal = if root.node == NIL {
                u32::MAX
            } else {
                ordinals[&root.node]
            };
            out.extend_from_slice(&ordinal.to_le_bytes());
        }
        let mut aliases: Vec<(&u64, &Vec<u64>)> = self.aliases.iter().collect();
        aliases.sort_by_key(|(phys, _)| **phys);
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (phys, lbas) in aliases {
            out.extend_from_slice(&phys.to_le_bytes());
            out.extend_from_slice(&(lbas.len() as u32).to_le_bytes());
            for lba in lbas {
                out.extend_from_slice(&lba.to_le_bytes());
            }
        }
    }

    fn encode_node(&self, id: u32, level: u8, ordinals: &mut HashMap<u32, u32>, out: &mut Vec<u8>) {
        if id == NIL || ordinals.contains_key(&id) {
            return;
        }
        match &self.nodes[id as usize].body {
            Body::Leaf(entries) => {
                out.push(LEAF);
                out.push(entries.iter().filter(|entry| !is_vacant(entry)).count() as u8);
                for (index, entry) in entries.iter().enumerate() {
                    if is_vacant(entry) {
                        continue;
                    }
                    out.push(index as u8);
                    out.extend_from_slice(&entry.phys.to_le_bytes());
                    out.extend_from_slice(&entry.checksum.to_le_bytes());
                    out.extend_from_slice(&entry.generation.to_le_bytes());
                }
            }
            Body::Inner(children) => {
                for child in children.iter() {
                    self.encode_node(*child, level - 1, ordinals, out);
                }
                out.push(INNER);
                out.push(children.iter().filter(|child| **child != NIL).count() as u8);
                out.push(level);
                for (index, child) in children.iter().enumerate() {
                    if *child == NIL {
                        continue;
                    }
                    out.push(index as u8);
                    out.extend_from_slice(&ordinals[child].to_le_bytes());
                }
            }
            Body::Free => unreachable!("a reachable node is never free"),
        }
        let ordinal = ordinals.len() as u32;
        ordinals.insert(id, ordinal);
    }

    /// Reads a forest written by [`Forest::encode`] (`with_aliases` false: by a version
    /// without the aliases section); returns it and the bytes used.
    pub fn decode(bytes: &[u8], with_aliases: bool) -> Result<(Forest, usize), DecodeError> {
        let mut reader = Reader { bytes, at: 0 };
        let count = reader.u32()? as usize;
        if count > bytes.len() {
            return Err(DecodeError(format!("{count} nodes cannot fit")));
        }
        let mut forest = Forest::new();
        forest.nodes.reserve(count);
        // Node heights, to refuse a child that is not one level down.
        let mut levels: Vec<u8> = Vec::with_capacity(count);
        for ordinal in 0..count {
            let level = forest.decode_node(&mut reader, ordinal, &levels)?;
            levels.push(level);
            // Every node starts unreferenced; references are counted below.
            forest.nodes[ordinal].refs = 0;
        }
        forest.count_child_references();
        forest.decode_roots(&mut reader, &levels)?;
        if let Some(orphan) = forest.nodes.iter().position(|node| node.refs == 0) {
            return Err(DecodeError(format!("node {orphan} is not referenced")));
        }
        let references = forest.leaf_references();
        forest.shared = references
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(phys, count)| (*phys, count - 1))
            .collect();
        if with_aliases {
            forest.decode_aliases(&mut reader, &references)?;
        }
        Ok((forest, reader.at))
    }

    /// Reads node `ordinal` (its children come before it, with their `levels`) and
    /// returns its level: 0 for a leaf.
    fn decode_node(
        &mut self,
        reader: &mut Reader<'_>,
        ordinal: usize,
        levels: &[u8],
    ) -> Result<u8, DecodeError> {
        let tag = reader.u8()?;
        let children = usize::from(reader.u8()?);
        if children > FANOUT {
            return Err(DecodeError(format!(
                "node {ordinal} has {children} children"
            )));
        }
        match tag {
            LEAF => {
                let mut entries = Box::new([VACANT; FANOUT]);
                for _ in 0..children {
                    let index = usize::from(reader.u8()?);
                    let entry = MapEntry {
                        phys: reader.u64()?,
                        checksum: reader.u64()?,
                        generation: reader.u64()?,
                    };
                    if index >= FANOUT || !is_vacant(&entries[index]) || is_vacant(&entry) {
                        return Err(DecodeError(format!("leaf {ordinal} is malformed")));
                    }
                    entries[index] = entry;
                }
                self.alloc(Body::Leaf(entries), children as u64);
                Ok(0)
            }
            INNER => {
                let mut slots = Box::new([NIL; FANOUT]);
                let mut mapped = 0;
                let level = reader.u8()?;
                for _ in 0..children {
                    let index = usize::from(reader.u8()?);
                    let child = reader.u32()?;
                    if index >= FANOUT
                        || slots[index] != NIL
                        || child as usize >= ordinal
                        || level != levels[child as usize] + 1
                    {
                        return Err(DecodeError(format!("inner node {ordinal} is malformed")));
                    }
                    slots[index] = child;
                    mapped += self.nodes[child as usize].mapped;
                }
                if level == 0 || level > MAX_HEIGHT {
                    return Err(DecodeError(format!("inner node {ordinal} is too high")));
                }
                self.alloc(Body::Inner(slots), mapped);
                Ok(level)
            }
            other => Err(DecodeError(format!("node {ordinal} has tag {other}"))),
        }
    }

    /// Counts, in each node, the inner nodes that name it as a child.
    fn count_child_references(&mut self) {
        for ordinal in 0..self.nodes.len() {
            if let Body::Inner(children) = &self.nodes[ordinal].body {
                let children: Vec<u32> = children.iter().copied().filter(|c| *c != NIL).collect();
                for child in children {
                    self.nodes[child as usize].refs += 1;
                }
            }
        }
    }

    /// Reads the roots section: each dataset's root node (at the height its level says)
    /// and family; a root counts as a reference to its node.
    fn decode_roots(&mut self, reader: &mut Reader<'_>, levels: &[u8]) -> Result<(), DecodeError> {
        let roots = reader.u32()?;
        for _ in 0..roots {
            let dataset = reader.u32()?;
            let family = reader.u32()?;
            let height = reader.u8()?;
            let node = reader.u32()?;
            if height > MAX_HEIGHT
                || (node != u32::MAX
                    && (node as usize >= levels.len() || levels[node as usize] != height))
            {
                return Err(DecodeError(format!(
                    "root of dataset {dataset} is malformed"
                )));
            }
            let node = if node == u32::MAX { NIL } else { node };
            if node != NIL {
                self.nodes[node as usize].refs += 1;
            }
            self.roots.insert(
                dataset,
                Root {
                    node,
                    height,
                    family,
                },
            );
        }
        Ok(())
    }

    /// How many leaf entries name each physical block.
    fn leaf_references(&self) -> HashMap<u64, u32> {
        let mut references: HashMap<u64, u32> = HashMap::new();
        for node in &self.nodes {
            if let Body::Leaf(entries) = &node.body {
                for entry in entries.iter().filter(|entry| !is_vacant(entry)) {
                    *references.entry(entry.phys).or_insert(0) += 1;
                }
            }
        }
        references
    }

    /// Reads the aliases section: for blocks the leaves name (`references`), the LBAs
    /// that alias them.
    fn decode_aliases(
        &mut self,
        reader: &mut Reader<'_>,
        references: &HashMap<u64, u32>,
    ) -> Result<(), DecodeError> {
        let bytes = reader.bytes.len();
        let blocks = reader.u32()? as usize;
        if blocks > bytes {
            return Err(DecodeError(format!("{blocks} aliased blocks cannot fit")));
        }
        for _ in 0..blocks {
            let phys = reader.u64()?;
            let count = reader.u32()? as usize;
            if count == 0 || count > bytes / 8 || !references.contains_key(&phys) {
                return Err(DecodeError(format!(
                    "the aliases of block {phys} are malformed"
                )));
            }
            let lbas = (0..count)
                .map(|_| reader.u64())
                .collect::<Result<Vec<_>, _>>()?;
            self.aliases.insert(phys, lbas);
        }
        Ok(())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| DecodeError(format!("ends early at byte {}", self.at)))?;
        self.at += N;
        Ok(slice.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}
