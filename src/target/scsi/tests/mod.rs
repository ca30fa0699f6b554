//! Unit tests of the SCSI command set, against an in-memory target.

mod commands;
mod fuzz;
mod io;
mod xcopy;
