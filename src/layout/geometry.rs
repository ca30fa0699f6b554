//! Where a physical block lives: the arithmetic of rows, units, slots and segments.
//!
//! A *row* is one stripe of `data` data units and two parity units (P and Q), `unit` bytes
//! each, on distinct drives (where: see `placement`). The data units of a row are
//! cut into 4 KiB *slots*; the last slot of every row is the row's summary block (identity
//! and checksum of every other slot), so a row carries `slots_per_row - 1` user blocks.
//! A *segment* is `rows_per_segment` consecutive rows: the unit of allocation and cleaning.
//! A physical block address ([`PhysBlock`]) is `row * slots_per_row + slot`.

use crate::types::BLOCK_SIZE;

/// A physical block address on the array (see the module doc).
pub type PhysBlock = u64;

/// The stripe arithmetic of one array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Data devices per row.
    pub data: usize,
    /// Parity devices per row (always 2: P and Q).
    pub parity: usize,
    /// Bytes per device per row.
    pub unit: u64,
    /// Rows in the whole array (limited by the smallest device).
    pub rows: u64,
    /// Rows per segment.
    pub rows_per_segment: u64,
}

impl Geometry {
    /// Builds the geometry for devices of `device_size` bytes, leaving out a partial
    /// segment at the end.
    pub fn new(
        data: usize,
        parity: usize,
        unit: u64,
        rows_per_segment: u64,
        device_size: u64,
    ) -> Self {
        let rows = device_size / unit;
        let rows = rows - rows % rows_per_segment;
        Geometry {
            data,
            parity,
            unit,
            rows,
            rows_per_segment,
        }
    }

    /// Blocks per device unit.
    pub fn blocks_per_unit(&self) -> u64 {
        self.unit / BLOCK_SIZE as u64
    }

    /// Slots per row, the summary slot included.
    pub fn slots_per_row(&self) -> u64 {
        self.blocks_per_unit() * self.data as u64
    }

    /// User blocks a row carries.
    pub fn data_slots_per_row(&self) -> u64 {
        self.slots_per_row() - 1
    }

    /// The summary slot of every row.
    pub fn summary_slot(&self) -> u64 {
        self.slots_per_row() - 1
    }

    /// Number of segments.
    pub fn segments(&self) -> u64 {
        self.rows / self.rows_per_segment
    }

    /// User blocks a segment carries.
    pub fn data_blocks_per_segment(&self) -> u64 {
        self.data_slots_per_row() * self.rows_per_segment
    }

    /// User blocks the whole array carries.
    pub fn data_blocks(&self) -> u64 {
        self.data_slots_per_row() * self.rows
    }

    /// The address of `slot` in `row`.
    pub fn phys(&self, row: u64, slot: u64) -> PhysBlock {
        row * self.slots_per_row() + slot
    }

    /// The row of a physical block.
    pub fn row_of(&self, phys: PhysBlock) -> u64 {
        phys / self.slots_per_row()
    }

    /// The slot of a physical block inside its row.
    pub fn slot_of(&self, phys: PhysBlock) -> u64 {
        phys % self.slots_per_row()
    }

    /// The segment of a physical block.
    pub fn segment_of(&self, phys: PhysBlock) -> u64 {
        self.row_of(phys) / self.rows_per_segment
    }

    /// Which data unit of its row holds a physical block, and at what byte offset inside
    /// the unit. Where the unit lives on the drives is the placement's business.
    pub fn unit_of(&self, phys: PhysBlock) -> (usize, u64) {
        let slot = self.slot_of(phys);
        let unit = (slot / self.blocks_per_unit()) as usize;
        let within = (slot % self.blocks_per_unit()) * BLOCK_SIZE as u64;
        (unit, within)
    }

    /// Where a block sits inside a buffer of its row's units (data units first).
    pub fn offset_in_row(&self, phys: PhysBlock) -> usize {
        let (unit, within) = self.unit_of(phys);
        unit * self.unit as usize + within as usize
    }

    /// True when `phys` names a user slot inside the array.
    pub fn is_data_block(&self, phys: PhysBlock) -> bool {
        self.row_of(phys) < self.rows && self.slot_of(phys) != self.summary_slot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Geometry {
        Geometry::new(4, 2, 64 * 1024, 4, 128 << 20)
    }

    #[test]
    fn addresses_round_trip_and_never_hit_parity() {
        let g = small();
        assert_eq!(g.slots_per_row(), 64);
        assert_eq!(g.rows, 2048);
        for row in [0, 1, 7, g.rows - 1] {
            for slot in 0..g.slots_per_row() {
                let phys = g.phys(row, slot);
                assert_eq!(g.row_of(phys), row);
                assert_eq!(g.slot_of(phys), slot);
                let (unit, within) = g.unit_of(phys);
                assert!(unit < g.data);
                assert!(within < g.unit);
            }
        }
    }

    #[test]
    fn distinct_slots_map_to_distinct_device_offsets() {
        let g = small();
        let mut seen = std::collections::HashSet::new();
        for row in 0..8 {
            for slot in 0..g.slots_per_row() {
                assert!(seen.insert((row, g.offset_in_row(g.phys(row, slot)))));
            }
        }
    }

    #[test]
    fn partial_segments_are_left_out() {
        let g = Geometry::new(4, 2, 64 * 1024, 16, (64 << 10) * 40);
        assert_eq!(g.rows, 32);
        assert_eq!(g.segments(), 2);
    }
}
