//! State shared by every path to one dataset.
//! SKELETON: the scsi helper owns this file.

pub(crate) struct Inner {}
