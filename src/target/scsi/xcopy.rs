//! EXTENDED COPY (0x83, LID1) with identification (0xE4) CSCD descriptors and
//! block-to-block (0x02) segment descriptors, and RECEIVE COPY RESULTS (0x84: COPY
//! STATUS, OPERATING PARAMETERS).
//!
//! A copy runs to completion inside the command: the whole parameter list is checked
//! first (lengths, counts, descriptor types, that every CSCD is reachable and every
//! segment lies inside its units), then each segment is copied in bounded chunks, the
//! destination's interlock stripes held per chunk. Between datasets of one family (the
//! same volume, its snapshots) a chunk is copied by reference: the destination's map
//! takes the source's blocks and no data is written
//! ([`crate::target::BlockTarget::copy_by_reference`]); otherwise, or for a range that
//! is not in whole 4 KiB blocks, its bytes go through the response buffer. Its result
//! is kept in the unit's [`super::LuShared`] for RECEIVE COPY RESULTS when the list
//! identifier is held (LIST ID USAGE 00b).

use std::sync::Arc;

use super::cdb::{be16, be32, be64, require, sa};
use super::sense::{
    COPY_TARGET_NOT_REACHABLE, CmdResult, Failure, PARAMETER_LIST_LENGTH_ERROR, Sense,
    TOO_MANY_SEGMENT_DESCRIPTORS, TOO_MANY_TARGET_DESCRIPTORS, UNSUPPORTED_SEGMENT_DESCRIPTOR,
    UNSUPPORTED_TARGET_DESCRIPTOR, WRITE_PROTECTED, io_error_sense, key,
};
use super::shared::CopyResult;
use super::{BLOCK_SIZE, CopyPeers, LogicalUnit, Nexus, Response};

/// What this copy manager advertises (VPD 0x8F and OPERATING PARAMETERS) and enforces.
pub(crate) mod limits {
    pub const MAX_TARGET_DESCRIPTORS: u16 = 2;
    pub const MAX_SEGMENT_DESCRIPTORS: u16 = 16;
    /// Large enough for one descriptor over both counts, so the count errors are the
    /// ones reported for too many descriptors.
    pub const MAX_DESCRIPTOR_LIST_LENGTH: u32 = 1024;
    /// A block-to-block segment moves at most 65,535 blocks.
    pub const MAX_SEGMENT_BYTES: u32 = 65_535 * super::BLOCK_SIZE;
    pub const MAX_CONCURRENT_COPIES: u8 = 1;
}

const HEADER_LEN: usize = 16;
const TARGET_DESCRIPTOR_LEN: usize = 32;
const BLOCK_SEGMENT_LEN: usize = 28;
const IDENTIFICATION_DESCRIPTOR: u8 = 0xE4;
const BLOCK_TO_BLOCK: u8 = 0x02;
/// Bytes copied per step.
const COPY_CHUNK: u64 = 1 << 20;

/// A failed copy: COPY ABORTED with no further detail.
const COPY_ABORTED: Sense = Sense::new(key::COPY_ABORTED, 0x00, 0x00);

/// One checked block-to-block segment.
struct Segment {
    source: usize,
    destination: usize,
    blocks: u64,
    source_lba: u64,
    destination_lba: u64,
}

impl LogicalUnit {
    /// EXTENDED COPY (LID1).
    pub(crate) fn extended_copy(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: &[u8],
        peers: &dyn CopyPeers,
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 16)?;
        if cdb[1] & 0x1F != 0 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let list_length = be32(cdb, 10) as usize;
        if list_length == 0 {
            return Ok(());
        }
        let list = &data_out[..data_out.len().min(list_length)];
        if list.len() < HEADER_LEN {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let list_id = list[0];
        let list_id_usage = (list[1] >> 3) & 0x03;
        if list_id_usage == 0x01 || (list_id_usage == 0x03 && list_id != 0) {
            return Err(Sense::bad_param_field(1).into());
        }
        let targets_length = usize::from(be16(list, 2));
        let segments_length = be32(list, 8) as usize;
        let inline_length = be32(list, 12) as usize;
        let described = targets_length
            .checked_add(segments_length)
            .and_then(|sum| sum.checked_add(inline_length));
        let Some(described) = described else {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        };
        if described > limits::MAX_DESCRIPTOR_LIST_LENGTH as usize
            || HEADER_LEN + described > list.len()
        {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        }
        if inline_length != 0 {
            return Err(Sense::bad_param_field(12).into());
        }
        let target_area = &list[HEADER_LEN..HEADER_LEN + targets_length];
        let segment_area = &list[HEADER_LEN + targets_length..HEADER_LEN + described];
        let units = self.copy_targets(target_area, peers)?;
        let segments = self.copy_segments(segment_area, targets_length, &units)?;
        let mut transferred = 0u64;
        let mut processed = 0u16;
        let mut outcome = Ok(());
        for segment in &segments {
            outcome = copy_segment(&units, segment, &mut response.data_in, &mut transferred);
            if outcome.is_err() {
                break;
            }
            processed += 1;
        }
        response.data_in.clear();
        if list_id_usage == 0 {
            self.shared.record_copy(
                nexus,
                CopyResult {
                    list_id,
                    status: if outcome.is_ok() { 0x01 } else { 0x02 },
                    segments_processed: processed,
                    transferred,
                },
            );
        }
        outcome
    }

    /// Resolves the CSCD descriptors to logical units.
    fn copy_targets(
        &self,
        area: &[u8],
        peers: &dyn CopyPeers,
    ) -> Result<Vec<LogicalUnit>, Failure> {
        let mut units = Vec::new();
        let mut at = 0;
        while at < area.len() {
            let kind = area[at];
            if kind != IDENTIFICATION_DESCRIPTOR {
                return Err(UNSUPPORTED_TARGET_DESCRIPTOR.into());
            }
            if units.len() == usize::from(limits::MAX_TARGET_DESCRIPTORS) {
                return Err(TOO_MANY_TARGET_DESCRIPTORS.into());
            }
            let Some(descriptor) = area.get(at..at + TARGET_DESCRIPTOR_LEN) else {
                return Err(PARAMETER_LIST_LENGTH_ERROR.into());
            };
            let field = (HEADER_LEN + at) as u16;
            // Byte 1 bits 7-6 (LU ID TYPE) are ignored since SPC-4: the designator
            // names the logical unit.
            if descriptor[1] & 0x20 != 0 {
                return Err(COPY_TARGET_NOT_REACHABLE.into());
            }
            if descriptor[1] & 0x1F != 0 {
                return Err(UNSUPPORTED_TARGET_DESCRIPTOR.into());
            }
            let designator_length = usize::from(descriptor[7]);
            if descriptor[5] & 0x0F != 0x03 || designator_length > 20 {
                return Err(COPY_TARGET_NOT_REACHABLE.into());
            }
            let designator = &descriptor[8..8 + designator_length];
            let block_length =
                u32::from_be_bytes([0, descriptor[29], descriptor[30], descriptor[31]]);
            if block_length != BLOCK_SIZE {
                return Err(Sense::bad_param_field(field + 29).into());
            }
            let unit = if designator == self.identity.naa {
                self.clone()
            } else {
                peers.by_naa(designator).ok_or(COPY_TARGET_NOT_REACHABLE)?
            };
            units.push(unit);
            at += TARGET_DESCRIPTOR_LEN;
        }
        Ok(units)
    }

    /// Checks the segment descriptors against the resolved units.
    fn copy_segments(
        &self,
        area: &[u8],
        area_offset: usize,
        units: &[LogicalUnit],
    ) -> Result<Vec<Segment>, Failure> {
        let mut segments = Vec::new();
        let mut at = 0;
        while at < area.len() {
            if area[at] != BLOCK_TO_BLOCK {
                return Err(UNSUPPORTED_SEGMENT_DESCRIPTOR.into());
            }
            if segments.len() == usize::from(limits::MAX_SEGMENT_DESCRIPTORS) {
                return Err(TOO_MANY_SEGMENT_DESCRIPTORS.into());
            }
            let Some(descriptor) = area.get(at..at + BLOCK_SEGMENT_LEN) else {
                return Err(PARAMETER_LIST_LENGTH_ERROR.into());
            };
            if usize::from(be16(descriptor, 2)) != BLOCK_SEGMENT_LEN - 4 {
                let field = (HEADER_LEN + area_offset + at + 2) as u16;
                return Err(Sense::bad_param_field(field).into());
            }
            let segment = Segment {
                source: usize::from(be16(descriptor, 4)),
                destination: usize::from(be16(descriptor, 6)),
                blocks: u64::from(be16(descriptor, 10)),
                source_lba: be64(descriptor, 12),
                destination_lba: be64(descriptor, 20),
            };
            let (Some(source), Some(destination)) =
                (units.get(segment.source), units.get(segment.destination))
            else {
                return Err(COPY_TARGET_NOT_REACHABLE.into());
            };
            let inside = |unit: &LogicalUnit, lba: u64| {
                lba.checked_add(segment.blocks)
                    .is_some_and(|end| end <= unit.capacity_blocks())
            };
            if !inside(source, segment.source_lba) || !inside(destination, segment.destination_lba)
            {
                return Err(COPY_ABORTED.into());
            }
            if destination.target.read_only() {
                return Err(WRITE_PROTECTED.into());
            }
            segments.push(segment);
            at += BLOCK_SEGMENT_LEN;
        }
        Ok(segments)
    }

    /// RECEIVE COPY RESULTS: COPY STATUS of a held list identifier, OPERATING PARAMETERS.
    pub(crate) fn receive_copy_results(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 16)?;
        let allocation = be32(cdb, 10) as usize;
        let out = &mut response.data_in;
        out.clear();
        match cdb[1] & 0x1F {
            sa::COPY_STATUS => {
                let Some(result) = self.shared.copy_result(nexus, cdb[2]) else {
                    return Err(Sense::bad_cdb_field(2).into());
                };
                out.extend_from_slice(&8u32.to_be_bytes());
                out.push(result.status);
                out.extend_from_slice(&result.segments_processed.to_be_bytes());
                out.push(0xF1); // transfer count in KiB
                let kib = result.transferred.div_ceil(1024).min(u64::from(u32::MAX)) as u32;
                out.extend_from_slice(&kib.to_be_bytes());
            }
            sa::OPERATING_PARAMETERS => {
                out.resize(46, 0);
                out[0..4].copy_from_slice(&42u32.to_be_bytes());
                out[4] = 0x01; // SNLID
                out[8..10].copy_from_slice(&limits::MAX_TARGET_DESCRIPTORS.to_be_bytes());
                out[10..12].copy_from_slice(&limits::MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
                out[12..16].copy_from_slice(&limits::MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
                out[16..20].copy_from_slice(&limits::MAX_SEGMENT_BYTES.to_be_bytes());
                out[34..36]
                    .copy_from_slice(&u16::from(limits::MAX_CONCURRENT_COPIES).to_be_bytes());
                out[36] = limits::MAX_CONCURRENT_COPIES;
                out[37] = BLOCK_SIZE.trailing_zeros() as u8;
                out[43] = 2;
                out[44] = BLOCK_TO_BLOCK;
                out[45] = IDENTIFICATION_DESCRIPTOR;
            }
            _ => return Err(Sense::bad_cdb_field(1).into()),
        }
        out.truncate(allocation);
        Ok(())
    }
}

/// Copies one segment in chunks through `scratch`.
fn copy_segment(
    units: &[LogicalUnit],
    segment: &Segment,
    scratch: &mut Vec<u8>,
    transferred: &mut u64,
) -> CmdResult {
    let source = &units[segment.source];
    let destination = &units[segment.destination];
    let block = u64::from(BLOCK_SIZE);
    let total = segment.blocks * block;
    // Within one unit, a destination above an overlapping source is copied from the
    // end backwards so no chunk reads what an earlier chunk already overwrote.
    let backwards = Arc::ptr_eq(&source.shared, &destination.shared)
        && segment.destination_lba > segment.source_lba;
    let mut remaining = total;
    while remaining > 0 {
        let step = remaining.min(COPY_CHUNK);
        let done = if backwards {
            remaining - step
        } else {
            total - remaining
        };
        remaining -= step;
        let from = segment.source_lba * block + done;
        let to = segment.destination_lba * block + done;
        let aborted = |error: crate::types::IoError, reading: bool| {
            let cause = io_error_sense(&error, reading);
            Failure::Check(Sense::new(key::COPY_ABORTED, cause.asc, cause.ascq))
        };
        let _interlock = destination.shared.lock_for_write(to / block, step / block);
        // Inside one family the destination takes references to the source's blocks;
        // otherwise the bytes go through the response buffer.
        let by_reference = destination
            .target
            .copy_by_reference(&*source.target, from, to, step)
            .map_err(|error| aborted(error, false))?;
        if by_reference.is_none() {
            scratch.resize(step as usize, 0);
            source
                .target
                .read(from, scratch)
                .map_err(|error| aborted(error, true))?;
            destination
                .target
                .write(to, scratch, false)
                .map_err(|error| aborted(error, false))?;
        }
        *transferred += step;
    }
    Ok(())
}
