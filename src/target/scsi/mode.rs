//! MODE SENSE (6/10) and MODE SELECT (6/10) over three pages: caching (0x08, WCE=1),
//! control (0x0A, SWP mirrors the dataset's write protection) and informational
//! exceptions (0x1C). No field is changeable and saved values are not supported: MODE
//! SELECT accepts the current values back and refuses any change.

use super::cdb::{be16, require};
use super::sense::{CmdResult, PARAMETER_LIST_LENGTH_ERROR, SAVING_NOT_SUPPORTED, Sense};
use super::{BLOCK_SIZE, LogicalUnit, Response};

/// The pages served, in page-code order (what page 0x3F returns).
const PAGES: [u8; 3] = [0x08, 0x0A, 0x1C];

/// Page control of MODE SENSE.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PageControl {
    Current,
    Changeable,
    Default,
}

/// Appends one mode page as `control` asks.
fn push_page(out: &mut Vec<u8>, page: u8, control: PageControl, read_only: bool) {
    let start = out.len();
    match page {
        0x08 => {
            out.extend_from_slice(&[0x08, 0x12]);
            out.resize(start + 20, 0);
            if control != PageControl::Changeable {
                out[start + 2] = 0x04; // WCE
            }
        }
        0x0A => {
            out.extend_from_slice(&[0x0A, 0x0A]);
            out.resize(start + 12, 0);
            if control != PageControl::Changeable {
                out[start + 3] = 0x10; // unrestricted reordering, QERR 0
                if read_only && control == PageControl::Current {
                    out[start + 4] = 0x08; // SWP
                }
                out[start + 8] = 0xFF; // busy timeout: unlimited
                out[start + 9] = 0xFF;
            }
        }
        _ => {
            out.extend_from_slice(&[0x1C, 0x0A]);
            out.resize(start + 12, 0);
            if control != PageControl::Changeable {
                out[start + 2] = 0x08; // DEXCPT: no exception reporting
            }
        }
    }
}

impl LogicalUnit {
    /// MODE SENSE (6) and (10).
    pub(crate) fn mode_sense(&self, cdb: &[u8], response: &mut Response) -> CmdResult {
        let ten = cdb.first() == Some(&super::cdb::op::MODE_SENSE_10);
        require(cdb, if ten { 10 } else { 6 })?;
        let disable_block_descriptors = cdb[1] & 0x08 != 0;
        let long_lba = ten && cdb[1] & 0x10 != 0;
        let control = match cdb[2] >> 6 {
            0 => PageControl::Current,
            1 => PageControl::Changeable,
            2 => PageControl::Default,
            _ => return Err(SAVING_NOT_SUPPORTED.into()),
        };
        let page = cdb[2] & 0x3F;
        let subpage = cdb[3];
        let allocation = if ten {
            usize::from(be16(cdb, 7))
        } else {
            usize::from(cdb[4])
        };
        if !(subpage == 0 || (subpage == 0xFF && page == 0x3F)) {
            return Err(Sense::bad_cdb_field(3).into());
        }
        if page != 0x3F && !PAGES.contains(&page) {
            return Err(Sense::bad_cdb_field(2).into());
        }
        let read_only = self.target.read_only();
        let out = &mut response.data_in;
        out.clear();
        let header = if ten { 8 } else { 4 };
        out.resize(header, 0);
        let device_specific = 0x10 | if read_only { 0x80 } else { 0 }; // DPOFUA, WP
        out[if ten { 3 } else { 2 }] = device_specific;
        if !disable_block_descriptors {
            let blocks = self.capacity_blocks();
            if long_lba {
                out[4] = 0x01;
                out[7] = 16;
                out.extend_from_slice(&blocks.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
            } else {
                out[if ten { 7 } else { 3 }] = 8;
                let short = u32::try_from(blocks).unwrap_or(u32::MAX);
                out.extend_from_slice(&short.to_be_bytes());
                out.push(0);
                out.extend_from_slice(&BLOCK_SIZE.to_be_bytes()[1..]);
            }
        }
        for candidate in PAGES {
            if page == 0x3F || page == candidate {
                push_page(out, candidate, control, read_only);
            }
        }
        if ten {
            let length = (out.len() - 2) as u16;
            out[0..2].copy_from_slice(&length.to_be_bytes());
        } else {
            out[0] = (out.len() - 1).min(255) as u8;
        }
        out.truncate(allocation);
        Ok(())
    }

    /// MODE SELECT (6) and (10): the current values are accepted back, nothing else.
    pub(crate) fn mode_select(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        let ten = cdb.first() == Some(&super::cdb::op::MODE_SELECT_10);
        require(cdb, if ten { 10 } else { 6 })?;
        if cdb[1] & 0x01 != 0 {
            return Err(Sense::bad_cdb_field(1).into());
        }
        let list_length = if ten {
            usize::from(be16(cdb, 7))
        } else {
            usize::from(cdb[4])
        };
        if list_length == 0 {
            return Ok(());
        }
        let header = if ten { 8 } else { 4 };
        let Some(list) = data_out.get(..list_length) else {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        };
        if list.len() < header {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let descriptors = if ten {
            usize::from(be16(list, 6))
        } else {
            usize::from(list[3])
        };
        let pages_at = header + descriptors;
        if pages_at > list.len() {
            return Err(PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let descriptor_size = if ten && list[4] & 0x01 != 0 { 16 } else { 8 };
        let mut at = header;
        while at + descriptor_size <= pages_at {
            let length_at = at + descriptor_size - 3;
            let block_length =
                u32::from_be_bytes([0, list[length_at], list[length_at + 1], list[length_at + 2]]);
            if block_length != BLOCK_SIZE {
                return Err(Sense::bad_param_field(length_at as u16).into());
            }
            at += descriptor_size;
        }
        let read_only = self.target.read_only();
        let current = &mut response.data_in;
        let mut at = pages_at;
        while at < list.len() {
            if list.len() - at < 2 {
                return Err(PARAMETER_LIST_LENGTH_ERROR.into());
            }
            let page = list[at] & 0x3F;
            if list[at] & 0x40 != 0 || !PAGES.contains(&page) {
                return Err(Sense::bad_param_field(at as u16).into());
            }
            current.clear();
            push_page(current, page, PageControl::Current, read_only);
            let length = usize::from(list[at + 1]) + 2;
            if length != current.len() {
                return Err(Sense::bad_param_field((at + 1) as u16).into());
            }
            let Some(sent) = list.get(at..at + length) else {
                return Err(PARAMETER_LIST_LENGTH_ERROR.into());
            };
            if let Some(index) = (2..length).find(|&i| sent[i] != current[i]) {
                return Err(Sense::bad_param_field((at + index) as u16).into());
            }
            at += length;
        }
        current.clear();
        Ok(())
    }
}
