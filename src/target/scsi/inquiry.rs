//! INQUIRY: standard data and the vital product data pages, and the limits this unit
//! advertises in them (the handlers enforce the same constants).

use super::cdb::{be16, require};
use super::sense::{CmdResult, Sense};
use super::{LogicalUnit, Response};

/// MAXIMUM TRANSFER LENGTH (blocks) of one READ/WRITE/VERIFY (VPD 0xB0).
pub(crate) const MAX_TRANSFER_BLOCKS: u32 = 16_384;
/// OPTIMAL TRANSFER LENGTH (blocks).
const OPTIMAL_TRANSFER_BLOCKS: u32 = 2_048;
/// OPTIMAL TRANSFER LENGTH GRANULARITY and OPTIMAL UNMAP GRANULARITY: 4 KiB.
pub(crate) const GRANULARITY_BLOCKS: u32 = 8;
/// MAXIMUM COMPARE AND WRITE LENGTH (blocks).
pub(crate) const MAX_COMPARE_AND_WRITE_BLOCKS: u32 = 64;
/// MAXIMUM UNMAP LBA COUNT.
pub(crate) const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// MAXIMUM WRITE SAME LENGTH (blocks), also the bound of NUMBER OF LOGICAL BLOCKS 0 (to
/// the end of the medium).
pub(crate) const MAX_WRITE_SAME_BLOCKS: u64 = 1 << 15;

const VENDOR: &[u8; 8] = b"TROIKA  ";
const PRODUCT: &[u8; 16] = b"TROIKA VOLUME   ";
const REVISION: &[u8; 4] = b"0001";

/// The VPD pages served, in the order of page 0x00.
const VPD_PAGES: [u8; 8] = [0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2];

/// Peripheral qualifier 0, direct access block device.
const PERIPHERAL: u8 = 0x00;

/// Writes the standard INQUIRY data of a unit (peripheral byte given) into `out`.
pub(crate) fn standard_inquiry(peripheral: u8, out: &mut Vec<u8>) {
    out.clear();
    out.resize(96, 0);
    out[0] = peripheral;
    out[2] = 0x06; // SPC-4 / SPC-5
    out[3] = 0x12; // HiSup, response data format 2
    out[4] = (96 - 5) as u8;
    out[5] = 0x18; // TPGS = 01b (implicit ALUA), 3PC
    out[6] = 0x10; // MultiP
    out[7] = 0x02; // CmdQue
    out[8..16].copy_from_slice(VENDOR);
    out[16..32].copy_from_slice(PRODUCT);
    out[32..36].copy_from_slice(REVISION);
    // Version descriptors: SAM-5, SPC-4, SBC-3, iSCSI.
    for (slot, version) in [0x00A0u16, 0x0460, 0x04C0, 0x0960].iter().enumerate() {
        out[58 + 2 * slot..60 + 2 * slot].copy_from_slice(&version.to_be_bytes());
    }
}

/// Appends a designation descriptor.
fn push_designator(out: &mut Vec<u8>, code_set: u8, piv_assoc_type: u8, designator: &[u8]) {
    out.push(code_set);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(designator.len() as u8);
    out.extend_from_slice(designator);
}

/// Appends a SCSI name string designator (UTF-8, null terminated, padded to 4 bytes).
fn push_name(out: &mut Vec<u8>, piv_assoc_type: u8, name: &str) {
    let bytes = &name.as_bytes()[..name.len().min(250)];
    let padded = (bytes.len() + 1).div_ceil(4) * 4;
    out.extend_from_slice(&[0x53, piv_assoc_type, 0, padded as u8]);
    out.extend_from_slice(bytes);
    out.resize(out.len() + padded - bytes.len(), 0);
}

impl LogicalUnit {
    /// INQUIRY (0x12).
    pub(crate) fn inquiry(
        &self,
        nexus_port: u16,
        cdb: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 6)?;
        let evpd = cdb[1] & 0x01 != 0;
        if cdb[1] & 0x02 != 0 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let page = cdb[2];
        let allocation = usize::from(be16(cdb, 3));
        let out = &mut response.data_in;
        if !evpd {
            if page != 0 {
                return Err(Sense::bad_cdb_field(2).into());
            }
            standard_inquiry(PERIPHERAL, out);
        } else {
            out.clear();
            out.extend_from_slice(&[PERIPHERAL, page, 0, 0]);
            match page {
                0x00 => out.extend_from_slice(&VPD_PAGES),
                0x80 => out.extend_from_slice(self.identity.serial.as_bytes()),
                0x83 => self.device_identification(nexus_port, out),
                0x86 => extended_inquiry(out),
                0x8F => third_party_copy(out),
                0xB0 => block_limits(out),
                0xB1 => {
                    out.resize(64, 0);
                    out[5] = 0x01; // non-rotating medium
                }
                0xB2 => out.extend_from_slice(&[
                    0x00, 0xE6, // LBPU LBPWS LBPWS10 LBPRZ=1 ANC_SUP
                    0x02, // provisioning type: thin
                    0x00,
                ]),
                _ => return Err(Sense::bad_cdb_field(2).into()),
            }
            let length = (out.len() - 4).min(usize::from(u16::MAX)) as u16;
            out[2..4].copy_from_slice(&length.to_be_bytes());
        }
        out.truncate(allocation);
        Ok(())
    }

    /// VPD 0x83: the LU's NAA designator, the relative target port, its target port
    /// group, the target port's and the target device's SCSI names.
    fn device_identification(&self, relative_port: u16, out: &mut Vec<u8>) {
        push_designator(out, 0x01, 0x03, &self.identity.naa);
        let mut port = [0u8; 4];
        port[2..].copy_from_slice(&relative_port.to_be_bytes());
        push_designator(out, 0x51, 0x94, &port);
        push_designator(out, 0x51, 0x95, &port);
        push_name(out, 0x98, &self.ports.target_port_name(relative_port));
        push_name(out, 0xA8, &self.ports.target_name());
    }
}

/// VPD 0x86: HEADSUP ORDSUP SIMPSUP, V_SUP.
fn extended_inquiry(out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + 60, 0);
    out[start + 1] = 0x07;
    out[start + 2] = 0x01;
}

/// VPD 0xB0: the limits the handlers enforce.
fn block_limits(out: &mut Vec<u8>) {
    let start = out.len() - 4;
    out.resize(start + 64, 0);
    let page = &mut out[start..];
    page[4] = 0x00; // WSNZ 0: WRITE SAME with NUMBER OF BLOCKS 0 runs to the end
    page[5] = MAX_COMPARE_AND_WRITE_BLOCKS as u8;
    page[6..8].copy_from_slice(&(GRANULARITY_BLOCKS as u16).to_be_bytes());
    page[8..12].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
    page[12..16].copy_from_slice(&OPTIMAL_TRANSFER_BLOCKS.to_be_bytes());
    page[16..20].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
    page[20..24].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
    page[24..28].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
    page[28..32].copy_from_slice(&GRANULARITY_BLOCKS.to_be_bytes());
    page[36..44].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
}

/// VPD 0x8F: the EXTENDED COPY (LID1) capabilities, the same values RECEIVE COPY
/// RESULTS / OPERATING PARAMETERS reports.
fn third_party_copy(out: &mut Vec<u8>) {
    use super::xcopy::limits;
    // Supported commands: EXTENDED COPY (LID1), RECEIVE COPY RESULTS (status, params).
    let commands: [u8; 7] = [0x83, 1, 0x00, 0x84, 2, 0x00, 0x03];
    push_tpc_descriptor(out, 0x0001, |body| {
        body.push(commands.len() as u8);
        body.extend_from_slice(&commands);
    });
    // Parameter data.
    push_tpc_descriptor(out, 0x0008, |body| {
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&limits::MAX_TARGET_DESCRIPTORS.to_be_bytes());
        body.extend_from_slice(&limits::MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
        body.extend_from_slice(&limits::MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
        body.extend_from_slice(&limits::MAX_SEGMENT_BYTES.to_be_bytes());
        body.extend_from_slice(&[0; 16]);
    });
    // Supported descriptors: block-to-block segment, identification target descriptor.
    push_tpc_descriptor(out, 0x0004, |body| {
        body.extend_from_slice(&[2, 0x02, 0xE4]);
    });
    // Supported CSCD IDs: none beyond the descriptors themselves.
    push_tpc_descriptor(out, 0x000C, |body| {
        body.extend_from_slice(&[0, 0]);
    });
    // General copy operations.
    push_tpc_descriptor(out, 0x8001, |body| {
        body.extend_from_slice(&u32::from(limits::MAX_CONCURRENT_COPIES).to_be_bytes());
        body.extend_from_slice(&u32::from(limits::MAX_CONCURRENT_COPIES).to_be_bytes());
        body.extend_from_slice(&limits::MAX_SEGMENT_BYTES.to_be_bytes());
        body.push(9); // data segment granularity: 512 bytes (log2)
        body.push(0);
        body.extend_from_slice(&[0; 18]);
    });
}

/// Appends one third-party copy descriptor: type, length, body padded to 4 bytes.
fn push_tpc_descriptor(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    body(out);
    let padded = (out.len() - start).div_ceil(4) * 4;
    out.resize(start + padded, 0);
    let length = (padded - 4) as u16;
    out[start + 2..start + 4].copy_from_slice(&length.to_be_bytes());
}
