//! The extents the cache answers block-status questions with. The target ports turn them
//! into wire replies (NBD block status, SCSI GET LBA STATUS); they live here, in the lower
//! layer, so that the cache never has to import the ports.

/// One extent of a block-status answer: `length` bytes with the given allocation state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    /// No storage is allocated for this range (a read returns zeroes).
    pub hole: bool,
    /// A read of this range returns zeroes.
    pub zero: bool,
}

/// One extent of a `troika:changed:<base>` answer: whether the blocks differ from the
/// base dataset's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangedExtent {
    pub length: u64,
    pub changed: bool,
}
