//! The table of supported commands, REPORT SUPPORTED OPERATION CODES (0xA3/0x0C) built
//! from it, and REPORT TARGET PORT GROUPS (0xA3/0x0A).
//!
//! The table is the single source of truth for "is this opcode supported": dispatch
//! answers INVALID COMMAND OPERATION CODE for anything not in it, and each entry's CDB
//! usage data is what the handler actually looks at.

use super::cdb::{be16, be32, op, require, sa};
use super::sense::{CmdResult, Sense};
use super::{LogicalUnit, Response};

/// One supported command: opcode, service action (when the opcode has them) and the CDB
/// usage data (byte 0 the opcode, then a mask of the bits the target looks at).
pub(crate) struct Command {
    pub opcode: u8,
    pub service_action: Option<u8>,
    pub usage: &'static [u8],
}

const fn cmd(opcode: u8, usage: &'static [u8]) -> Command {
    Command {
        opcode,
        service_action: None,
        usage,
    }
}

const fn cmd_sa(opcode: u8, service_action: u8, usage: &'static [u8]) -> Command {
    Command {
        opcode,
        service_action: Some(service_action),
        usage,
    }
}

const FF: u8 = 0xFF;

/// Every command this layer executes, in opcode order.
pub(crate) static COMMANDS: &[Command] = &[
    cmd(op::TEST_UNIT_READY, &[0x00, 0, 0, 0, 0, 0]),
    cmd(op::REQUEST_SENSE, &[0x03, 0x01, 0, 0, FF, 0]),
    cmd(op::READ_6, &[0x08, 0x1F, FF, FF, FF, 0]),
    cmd(op::WRITE_6, &[0x0A, 0x1F, FF, FF, FF, 0]),
    cmd(op::INQUIRY, &[0x12, 0x01, FF, FF, FF, 0]),
    cmd(op::MODE_SELECT_6, &[0x15, 0x11, 0, 0, FF, 0]),
    cmd(op::RESERVE_6, &[0x16, 0, 0, 0, 0, 0]),
    cmd(op::RELEASE_6, &[0x17, 0, 0, 0, 0, 0]),
    cmd(op::MODE_SENSE_6, &[0x1A, 0x08, FF, 0, FF, 0]),
    cmd(op::START_STOP_UNIT, &[0x1B, 0x01, 0, 0x0F, 0xF7, 0]),
    cmd(op::READ_CAPACITY_10, &[0x25, 0, FF, FF, FF, FF, 0, 0, 0, 0]),
    cmd(op::READ_10, &[0x28, 0x18, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(op::WRITE_10, &[0x2A, 0x18, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(
        op::WRITE_AND_VERIFY_10,
        &[0x2E, 0x12, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    cmd(op::VERIFY_10, &[0x2F, 0x16, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(
        op::PRE_FETCH_10,
        &[0x34, 0x02, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    cmd(
        op::SYNCHRONIZE_CACHE_10,
        &[0x35, 0x02, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    cmd(
        op::WRITE_SAME_10,
        &[0x41, 0x08, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    cmd(op::UNMAP, &[0x42, 0x01, 0, 0, 0, 0, 0, FF, FF, 0]),
    cmd(op::MODE_SELECT_10, &[0x55, 0x11, 0, 0, 0, 0, 0, FF, FF, 0]),
    cmd(op::RESERVE_10, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    cmd(op::RELEASE_10, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    cmd(op::MODE_SENSE_10, &[0x5A, 0x18, FF, 0, 0, 0, 0, FF, FF, 0]),
    cmd_sa(
        op::PERSISTENT_RESERVE_IN,
        0x00,
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_IN,
        0x01,
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_IN,
        0x02,
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_IN,
        0x03,
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x00,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x01,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x02,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x03,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x04,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x05,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x06,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::PERSISTENT_RESERVE_OUT,
        0x07,
        &[0x5F, 0x1F, FF, 0, 0, FF, FF, FF, FF, 0],
    ),
    cmd_sa(
        op::EXTENDED_COPY,
        0x00,
        &[0x83, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
    ),
    cmd_sa(
        op::RECEIVE_COPY_RESULTS,
        sa::COPY_STATUS,
        &[0x84, 0x1F, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
    ),
    cmd_sa(
        op::RECEIVE_COPY_RESULTS,
        sa::OPERATING_PARAMETERS,
        &[0x84, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
    ),
    cmd(
        op::READ_16,
        &[
            0x88, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::COMPARE_AND_WRITE,
        &[
            0x89, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, 0, FF, 0, 0,
        ],
    ),
    cmd(
        op::WRITE_16,
        &[
            0x8A, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::ORWRITE_16,
        &[
            0x8B, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::WRITE_AND_VERIFY_16,
        &[
            0x8E, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::VERIFY_16,
        &[
            0x8F, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::PRE_FETCH_16,
        &[
            0x90, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::SYNCHRONIZE_CACHE_16,
        &[
            0x91, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::WRITE_SAME_16,
        &[
            0x93, 0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd_sa(
        op::SERVICE_ACTION_IN_16,
        sa::READ_CAPACITY_16,
        &[0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
    ),
    cmd_sa(
        op::SERVICE_ACTION_IN_16,
        sa::GET_LBA_STATUS,
        &[
            0x9E, 0x1F, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
    ),
    cmd(
        op::REPORT_LUNS,
        &[0xA0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0],
    ),
    cmd_sa(
        op::MAINTENANCE_IN,
        sa::REPORT_TARGET_PORT_GROUPS,
        &[0xA3, 0xFF, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
    ),
    cmd_sa(
        op::MAINTENANCE_IN,
        sa::REPORT_SUPPORTED_OPCODES,
        &[0xA3, 0x1F, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
    cmd(
        op::READ_12,
        &[0xA8, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
    cmd(
        op::WRITE_12,
        &[0xAA, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
    cmd(
        op::WRITE_AND_VERIFY_12,
        &[0xAE, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
    cmd(
        op::VERIFY_12,
        &[0xAF, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
];

/// Whether `opcode` is in the table (with any service action).
pub(crate) fn opcode_supported(opcode: u8) -> bool {
    COMMANDS.iter().any(|command| command.opcode == opcode)
}

fn has_service_actions(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|command| command.opcode == opcode && command.service_action.is_some())
}

/// Nominal and recommended command timeouts reported with RCTD, in seconds.
const NOMINAL_TIMEOUT: u32 = 10;
const RECOMMENDED_TIMEOUT: u32 = 60;

fn push_timeouts(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x0A, 0x00, 0x00]);
    out.extend_from_slice(&NOMINAL_TIMEOUT.to_be_bytes());
    out.extend_from_slice(&RECOMMENDED_TIMEOUT.to_be_bytes());
}

impl LogicalUnit {
    /// REPORT SUPPORTED OPERATION CODES: every reporting option (0 all, 1 opcode, 2 opcode
    /// and service action, 3 either), with command timeouts when RCTD is set.
    pub(crate) fn report_supported_opcodes(
        &self,
        cdb: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 12)?;
        let rctd = cdb[2] & 0x80 != 0;
        let option = cdb[2] & 0x07;
        let opcode = cdb[3];
        let service_action = be16(cdb, 4);
        let allocation = be32(cdb, 6) as usize;
        let out = &mut response.data_in;
        out.clear();
        match option {
            0 => {
                out.extend_from_slice(&[0; 4]);
                for command in COMMANDS {
                    out.push(command.opcode);
                    out.push(0);
                    out.extend_from_slice(
                        &u16::from(command.service_action.unwrap_or(0)).to_be_bytes(),
                    );
                    out.push(0);
                    let mut flags = 0;
                    if command.service_action.is_some() {
                        flags |= 0x01;
                    }
                    if rctd {
                        flags |= 0x02;
                    }
                    out.push(flags);
                    out.extend_from_slice(&(command.usage.len() as u16).to_be_bytes());
                    if rctd {
                        push_timeouts(out);
                    }
                }
                let length = (out.len() - 4) as u32;
                out[..4].copy_from_slice(&length.to_be_bytes());
            }
            1..=3 => {
                let with_sa = match option {
                    1 => {
                        if has_service_actions(opcode) {
                            return Err(Sense::bad_cdb_field(3).into());
                        }
                        false
                    }
                    2 => {
                        if opcode_supported(opcode) && !has_service_actions(opcode) {
                            return Err(Sense::bad_cdb_field(4).into());
                        }
                        true
                    }
                    _ => has_service_actions(opcode),
                };
                if with_sa && service_action > 0x1F {
                    return Err(Sense::bad_cdb_field(4).into());
                }
                let found = COMMANDS.iter().find(|command| {
                    command.opcode == opcode
                        && (!with_sa || command.service_action == Some(service_action as u8))
                });
                let ctdp = if rctd { 0x80 } else { 0 };
                match found {
                    Some(command) => {
                        out.extend_from_slice(&[0, ctdp | 0x03]);
                        out.extend_from_slice(&(command.usage.len() as u16).to_be_bytes());
                        out.extend_from_slice(command.usage);
                        if rctd {
                            push_timeouts(out);
                        }
                    }
                    None => out.extend_from_slice(&[0, 0x01, 0, 0]),
                }
            }
            _ => return Err(Sense::bad_cdb_field(2).into()),
        }
        out.truncate(allocation);
        Ok(())
    }

    /// REPORT TARGET PORT GROUPS: one descriptor per port group, length-only or extended
    /// header as the PARAMETER DATA FORMAT field asks.
    pub(crate) fn report_target_port_groups(
        &self,
        cdb: &[u8],
        response: &mut Response,
    ) -> CmdResult {
        require(cdb, 12)?;
        let extended = match cdb[1] >> 5 {
            0 => false,
            1 => true,
            _ => return Err(Sense::bad_cdb_field(1).into()),
        };
        let allocation = be32(cdb, 6) as usize;
        let out = &mut response.data_in;
        out.clear();
        out.extend_from_slice(&[0; 4]);
        if extended {
            // FORMAT TYPE 1, implicit transition time 0 (unspecified).
            out.extend_from_slice(&[0x10, 0, 0, 0]);
        }
        for group in self.ports.groups() {
            out.push(group.state as u8);
            // T_SUP O_SUP U_SUP S_SUP AN_SUP AO_SUP.
            out.push(0xCF);
            out.extend_from_slice(&group.id.to_be_bytes());
            out.push(0);
            out.push(0x02); // status: altered by implicit ALUA behaviour
            out.push(0);
            out.push(group.relative_ports.len().min(255) as u8);
            for port in group.relative_ports.iter().take(255) {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
        let length = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&length.to_be_bytes());
        out.truncate(allocation);
        Ok(())
    }
}
