//! Scrubbing: reading every unit of a row, verifying it, and repairing what is damaged.
//!
//! A row is *consistent* when P and Q recomputed from its data units equal the stored P and
//! Q, and, if its summary block decodes, every used slot matches its checksum. A row whose
//! summary does not decode was never written (or was written before its segment was
//! reused); with consistent parity it is left alone.
//!
//! Repair treats damage as erasures. Units on failed drives, and units whose read failed,
//! are always erased; slots failing their checksum name their data unit. Damage the
//! checksums cannot place (an unused slot, the summary, P or Q) is located by trying each
//! unit as the erasure and keeping the one that makes the row consistent: with two parity
//! units, one bad unit is found and rebuilt while the other parity still checks the result.
//! When no redundancy is left to check with (as many erasures as parity units), a result
//! is accepted only when the summary decodes and every rebuilt data unit holds a used slot
//! or the summary, so the checksums vouch for it.
//!
//! Only the repaired units are written, to the cells they are read from now; units on
//! failed drives are the heal's to rebuild. The drives written are synced and the
//! rewritten cells read back and compared. The caller holds the row's segment (see
//! `guard`), so no row write races the repair.

use std::io;
use std::sync::Arc;

use super::Array;
use crate::io::{AlignedBuf, Device, IoRing};
use crate::layout::geometry::Geometry;
use crate::layout::parity::ParityCodec;
use crate::layout::summary::{EMPTY_SLOT, SlotIdentity, block_checksum, decode_summary};
use crate::types::{BLOCK_SIZE, VolumeId};

/// Units repaired, by what they held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubRepairs {
    /// Data units where a used slot (a user block) was wrong or unreadable.
    pub data: u64,
    /// P or Q units.
    pub parity: u64,
    /// Data units where only the summary or unused slots were wrong.
    pub other: u64,
}

impl ScrubRepairs {
    pub fn total(&self) -> u64 {
        self.data + self.parity + self.other
    }

    pub fn add(&mut self, other: &ScrubRepairs) {
        self.data += other.data;
        self.parity += other.parity;
        self.other += other.other;
    }
}

/// What scrubbing one row found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowScrub {
    /// Consistent as read.
    Clean,
    /// Damaged, repaired and read back.
    Repaired(ScrubRepairs),
    /// More damage than parity can locate and rebuild; nothing was written.
    Unrepairable,
}

/// The figures of a scrubbed stretch of rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubTally {
    pub rows: u64,
    /// Bytes read (every unit of every row).
    pub bytes: u64,
    pub repairs: ScrubRepairs,
    pub unrepairable_rows: u64,
    /// The first row found unrepairable.
    pub first_unrepairable: Option<u64>,
}

impl ScrubTally {
    pub fn add(&mut self, other: &ScrubTally) {
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.repairs.add(&other.repairs);
        self.unrepairable_rows += other.unrepairable_rows;
        if self.first_unrepairable.is_none() {
            self.first_unrepairable = other.first_unrepairable;
        }
    }
}

/// Buffers a scrub reuses from row to row.
pub struct ScrubBuffers {
    /// The row as read.
    read: AlignedBuf,
    /// A candidate repair.
    work: AlignedBuf,
    /// P and Q recomputed, then a rewritten cell read back.
    scratch: AlignedBuf,
    codec: ParityCodec,
    identities: Vec<SlotIdentity>,
}

/// What checking a row's bytes found.
struct RowCheck {
    parity_ok: bool,
    summary_valid: bool,
    /// Data units holding a used slot that fails its checksum, ascending.
    bad_units: Vec<usize>,
}

impl RowCheck {
    fn consistent(&self) -> bool {
        self.parity_ok && self.bad_units.is_empty()
    }
}

impl Array {
    /// Buffers for [`Array::scrub_segment`].
    pub fn scrub_buffers(&self) -> ScrubBuffers {
        let unit = self.geometry.unit as usize;
        ScrubBuffers {
            read: AlignedBuf::new(self.row_buffer_len()),
            work: AlignedBuf::new(self.row_buffer_len()),
            scratch: AlignedBuf::new(2 * unit),
            codec: ParityCodec::new(self.geometry.data, unit)
                .expect("a codec for the array's own geometry"),
            identities: Vec::new(),
        }
    }

    /// Scrubs every row of `segment`, holding it against row writes meanwhile. Fails only
    /// when a repair write or sync fails (the drive is failed first).
    pub fn scrub_segment(
        &self,
        ring: &mut IoRing,
        buffers: &mut ScrubBuffers,
        segment: u64,
    ) -> io::Result<ScrubTally> {
        let _held = self.guard.hold(segment);
        let rows = self.geometry.rows_per_segment;
        let mut tally = ScrubTally::default();
        for row in segment * rows..(segment + 1) * rows {
            let outcome = self.scrub_row(ring, buffers, row)?;
            tally.rows += 1;
            tally.bytes += self.row_buffer_len() as u64;
            match outcome {
                RowScrub::Clean => {}
                RowScrub::Repaired(repairs) => tally.repairs.add(&repairs),
                RowScrub::Unrepairable => {
                    tally.unrepairable_rows += 1;
                    tally.first_unrepairable.get_or_insert(row);
                }
            }
        }
        Ok(tally)
    }

    /// Scrubs one row (see the module doc). The caller holds the row's segment.
    pub(super) fn scrub_row(
        &self,
        ring: &mut IoRing,
        buffers: &mut ScrubBuffers,
        row: u64,
    ) -> io::Result<RowScrub> {
        let parity = self.placement.width() - self.geometry.data;
        let failed = self.read_row(ring, row, &mut buffers.read);
        if failed.len() > parity {
            return Ok(RowScrub::Unrepairable);
        }
        let check = check_row(
            &self.geometry,
            &mut buffers.codec,
            &mut buffers.scratch,
            &mut buffers.identities,
            row,
            &buffers.read,
        );
        if failed.is_empty() && check.consistent() {
            return Ok(RowScrub::Clean);
        }
        let Some(erased) = self.locate_damage(buffers, row, &failed, &check.bad_units) else {
            return Ok(RowScrub::Unrepairable);
        };
        // `work` holds the repaired row and `identities` its summary. A unit is repaired
        // when it is read from a live drive and was unreadable or differs.
        let unit = self.geometry.unit as usize;
        let repaired: Vec<usize> = erased
            .into_iter()
            .filter(|&u| self.read_cell(row, u).is_some())
            .filter(|&u| {
                let range = u * unit..(u + 1) * unit;
                failed.contains(&u) || buffers.read[range.clone()] != buffers.work[range]
            })
            .collect();
        let repairs = self.classify(buffers, row, &repaired, &failed);
        if repaired.is_empty() {
            return Ok(RowScrub::Clean);
        }
        if !self.rewrite_units(ring, buffers, row, &repaired)? {
            return Ok(RowScrub::Unrepairable);
        }
        Ok(RowScrub::Repaired(repairs))
    }

    /// Finds the erasures that make the row consistent, trying the fewest first; leaves
    /// the repaired row in `buffers.work`. `None` when no set of at most `parity`
    /// erasures does.
    fn locate_damage(
        &self,
        buffers: &mut ScrubBuffers,
        row: u64,
        failed: &[usize],
        bad_units: &[usize],
    ) -> Option<Vec<usize>> {
        let width = self.placement.width();
        let parity = width - self.geometry.data;
        let unit = self.geometry.unit as usize;
        let with = |base: &[usize], extra: &[usize]| {
            let mut set: Vec<usize> = base.iter().chain(extra).copied().collect();
            set.sort_unstable();
            set.dedup();
            set
        };
        let named = with(failed, bad_units);
        let mut candidates = vec![failed.to_vec(), named.clone()];
        candidates.extend((0..width).map(|u| with(&named, &[u])));
        candidates.extend((0..width).map(|u| with(failed, &[u])));
        candidates.retain(|set| !set.is_empty() && set.len() <= parity);
        // Fewest erasures first (most redundancy left to check with); stable, so sets
        // the checksums named come before guesses of the same size.
        candidates.sort_by_key(Vec::len);
        candidates.dedup();
        // Units on failed drives are not written here: rebuilding only those needs no
        // vouching, it only lets the checksums check the rest.
        let out_of_service: Vec<usize> = failed
            .iter()
            .copied()
            .filter(|&u| self.read_cell(row, u).is_none())
            .collect();
        for erased in candidates {
            buffers.work.copy_from_slice(&buffers.read);
            {
                let mut units: Vec<&mut [u8]> = buffers.work.chunks_mut(unit).collect();
                if buffers.codec.rebuild(&mut units, &erased).is_err() {
                    continue;
                }
            }
            // The codec recomputes both parity units when it rebuilds either: check the
            // result against the stored units that were not erased.
            for u in (0..width).filter(|u| !erased.contains(u)) {
                buffers.work[u * unit..(u + 1) * unit]
                    .copy_from_slice(&buffers.read[u * unit..(u + 1) * unit]);
            }
            let check = check_row(
                &self.geometry,
                &mut buffers.codec,
                &mut buffers.scratch,
                &mut buffers.identities,
                row,
                &buffers.work,
            );
            let trusted = erased.iter().all(|u| out_of_service.contains(u))
                || self.vouched_for(&check, &buffers.identities, &erased);
            if check.consistent() && trusted {
                return Some(erased);
            }
        }
        None
    }

    /// Whether a consistent repair can be trusted: with redundancy left, parity checked
    /// it; without, the summary must decode and every rebuilt data unit must hold a used
    /// slot or the summary (checked by the checksums).
    fn vouched_for(&self, check: &RowCheck, identities: &[SlotIdentity], erased: &[usize]) -> bool {
        let parity = self.placement.width() - self.geometry.data;
        if erased.len() < parity {
            return true;
        }
        if !check.summary_valid {
            return false;
        }
        let per_unit = self.geometry.blocks_per_unit();
        let summary_unit = (self.geometry.summary_slot() / per_unit) as usize;
        erased
            .iter()
            .filter(|&&u| u < self.geometry.data)
            .all(|&u| {
                u == summary_unit
                    || identities.iter().enumerate().any(|(slot, id)| {
                        id.volume != EMPTY_SLOT && slot as u64 / per_unit == u as u64
                    })
            })
    }

    /// Counts the repaired units by what they held: parity; data when a used slot
    /// differs (or the unit was unreadable and holds one); else summary or unused.
    fn classify(
        &self,
        buffers: &ScrubBuffers,
        row: u64,
        repaired: &[usize],
        failed: &[usize],
    ) -> ScrubRepairs {
        let unit = self.geometry.unit as usize;
        let mut repairs = ScrubRepairs::default();
        for &u in repaired {
            if u >= self.geometry.data {
                repairs.parity += 1;
                continue;
            }
            let user_block_hit = buffers.identities.iter().enumerate().any(|(slot, id)| {
                let at = self
                    .geometry
                    .offset_in_row(self.geometry.phys(row, slot as u64));
                id.volume != EMPTY_SLOT
                    && at / unit == u
                    && (failed.contains(&u)
                        || buffers.read[at..at + BLOCK_SIZE] != buffers.work[at..at + BLOCK_SIZE])
            });
            if user_block_hit {
                repairs.data += 1;
            } else {
                repairs.other += 1;
            }
        }
        repairs
    }

    /// Writes the repaired units to the cells they are read from, syncs, and reads them
    /// back. Returns false when a cell does not read back what was written.
    fn rewrite_units(
        &self,
        ring: &mut IoRing,
        buffers: &mut ScrubBuffers,
        row: u64,
        units: &[usize],
    ) -> io::Result<bool> {
        let unit = self.geometry.unit as usize;
        let devices: Vec<Arc<Device>> = (0..self.drives.len()).map(|d| self.device(d)).collect();
        let targets: Vec<(usize, crate::layout::placement::Cell)> = units
            .iter()
            .filter_map(|&u| Some((u, self.read_cell(row, u)?)))
            .collect();
        let mut touched = Vec::new();
        self.write_units(
            ring,
            &devices,
            &buffers.work,
            &targets,
            "scrub repair",
            &mut touched,
        )?;
        self.sync_drives(ring, &devices, &touched, "scrub repair")?;
        for &(u, cell) in &targets {
            let back = &mut buffers.scratch[..unit];
            let read = ring.read_at(&devices[cell.drive], self.byte_offset(cell), back);
            if read.is_err() || *back != buffers.work[u * unit..(u + 1) * unit] {
                crate::say!(
                    "troika: scrub: row {row} unit {u} on drive {} does not read back what was written",
                    cell.drive
                );
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Checks a row's bytes (see the module doc); leaves its summary in `identities` (empty
/// when the summary does not decode).
fn check_row(
    geometry: &Geometry,
    codec: &mut ParityCodec,
    scratch: &mut [u8],
    identities: &mut Vec<SlotIdentity>,
    row: u64,
    units: &[u8],
) -> RowCheck {
    let unit = geometry.unit as usize;
    let data_len = unit * geometry.data;
    let parity_ok = {
        let data: Vec<&[u8]> = units[..data_len].chunks(unit).collect();
        let (p, q) = scratch[..2 * unit].split_at_mut(unit);
        codec.encode(&data, p, q).is_ok()
            && scratch[..2 * unit] == units[data_len..data_len + 2 * unit]
    };
    let at = geometry.offset_in_row(geometry.phys(row, geometry.summary_slot()));
    let summary_valid = decode_summary(row, &units[at..at + BLOCK_SIZE], identities).is_some()
        && identities.len() as u64 <= geometry.data_slots_per_row();
    if !summary_valid {
        identities.clear();
    }
    let mut bad_units: Vec<usize> = identities
        .iter()
        .enumerate()
        .filter(|(_, id)| id.volume != EMPTY_SLOT)
        .filter_map(|(slot, id)| {
            let at = geometry.offset_in_row(geometry.phys(row, slot as u64));
            let block = &units[at..at + BLOCK_SIZE];
            (block_checksum(VolumeId(id.volume), id.lba, block) != id.checksum).then_some(at / unit)
        })
        .collect();
    bad_units.dedup();
    RowCheck {
        parity_ok,
        summary_valid,
        bad_units,
    }
}
