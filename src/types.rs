//! Plain types shared by every layer: identifiers, sizes and the error a data-path
//! request can end with. Nothing here does I/O or holds state.

use std::fmt;
use std::sync::atomic::AtomicU64;

/// Size of a logical block: the unit of the redirect-on-write map, of checksums and of
/// cache validity. Requests of any byte alignment are accepted above this layer and turned
/// into whole-block operations (read-modify-write) by the cache.
pub const BLOCK_SIZE: usize = 4096;
/// Blocks a row may carry besides its summary block: what one 4 KiB summary can describe
/// (`layout::summary` checks its own arithmetic against this; the hardware model refuses
/// rows with more).
pub const MAX_ROW_DATA_BLOCKS: usize = 127;
/// log2 of [`BLOCK_SIZE`].
pub const BLOCK_SHIFT: u32 = 12;
/// Size of a cache section: the unit of ownership, mirroring and DRAM cache residency.
pub const SECTION_SIZE: usize = 64 * 1024;
/// Blocks per section.
pub const BLOCKS_PER_SECTION: usize = SECTION_SIZE / BLOCK_SIZE;

/// Identifies a pool for its whole life; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u32);

/// Identifies a volume (a dataset) for its whole life; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(pub u32);

/// A logical block address inside a volume, in units of [`BLOCK_SIZE`].
pub type Lba = u64;

/// A section index inside a volume, in units of [`SECTION_SIZE`].
pub type SectionIndex = u64;

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Most controllers a node can have (the hardware model allows 1 to 8): a set of live
/// controllers is one byte.
pub const MAX_CONTROLLERS: usize = 8;

/// Names one controller of the node. Checked when made, from the hardware model's count
/// or from an operator's number, so indexing per-controller state with it cannot go out of
/// range. Inside it is 0-based; operators (REST ids, the CLI, messages, metrics labels)
/// see it 1-based, which is what `Display` and [`ControllerId::number`] give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ControllerId(u8);

impl ControllerId {
    /// Controller `index` (0-based) of a node with `count`; `None` out of range.
    pub const fn new(index: usize, count: usize) -> Option<ControllerId> {
        if index < count && index < MAX_CONTROLLERS {
            Some(ControllerId(index as u8))
        } else {
            None
        }
    }

    /// The controller an operator calls `number` (1-based, as REST and the CLI show it)
    /// on a node with `count`; `None` when the node has no such controller.
    pub fn from_number(number: u32, count: usize) -> Option<ControllerId> {
        let index = usize::try_from(number).ok()?.checked_sub(1)?;
        ControllerId::new(index, count)
    }

    /// Its 0-based position, for packing into bits and for seeds.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Its 1-based number, as operators see it.
    pub fn number(self) -> u32 {
        u32::from(self.0) + 1
    }

    /// Every controller of a node with `count`, in order.
    pub fn all(count: usize) -> impl Iterator<Item = ControllerId> + Clone {
        (0..count.min(MAX_CONTROLLERS)).map(|index| ControllerId(index as u8))
    }
}

/// A 0-based index that names no controller any node can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("controller index {0} is out of range (a node has at most {MAX_CONTROLLERS} controllers)")]
pub struct NoSuchController(pub usize);

impl TryFrom<usize> for ControllerId {
    type Error = NoSuchController;

    /// A 0-based index checked only against [`MAX_CONTROLLERS`] (for bit sets; use
    /// [`ControllerId::new`] where the node's count is known).
    fn try_from(index: usize) -> Result<ControllerId, NoSuchController> {
        ControllerId::new(index, MAX_CONTROLLERS).ok_or(NoSuchController(index))
    }
}

impl fmt::Display for ControllerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// One `T` per controller of the node, indexed by [`ControllerId`]: the typed form of a
/// per-controller array. Its length is the hardware model's controller count, fixed when
/// it is made (never grown, so a reference into it stays valid).
pub struct PerController<T>(Box<[T]>);

impl<T> PerController<T> {
    /// `make(id)` for every controller of a node with `count` (at most
    /// [`MAX_CONTROLLERS`]).
    pub fn new(count: usize, make: impl FnMut(ControllerId) -> T) -> PerController<T> {
        PerController(ControllerId::all(count).map(make).collect())
    }

    /// How many controllers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Controller `id`'s value; `None` when this node has no such controller.
    pub fn get(&self, id: ControllerId) -> Option<&T> {
        self.0.get(id.index())
    }

    /// Every controller's id, in order.
    pub fn ids(&self) -> impl Iterator<Item = ControllerId> + Clone + use<T> {
        ControllerId::all(self.0.len())
    }

    /// Every controller with its value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (ControllerId, &T)> {
        self.ids().zip(self.0.iter())
    }

    /// Every controller's value, in order.
    pub fn values(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// Every controller's value, mutable, in order.
    pub fn values_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.0.iter_mut()
    }
}

impl<T> std::ops::Index<ControllerId> for PerController<T> {
    type Output = T;

    fn index(&self, id: ControllerId) -> &T {
        &self.0[id.index()]
    }
}

impl<T> std::ops::IndexMut<ControllerId> for PerController<T> {
    fn index_mut(&mut self, id: ControllerId) -> &mut T {
        &mut self.0[id.index()]
    }
}

impl<T: fmt::Debug> fmt::Debug for PerController<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// How a data-path request failed. Each front end maps these to its wire errors once
/// (NBD errno, SCSI sense); the message is for the log and the operator.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IoError {
    /// The byte range lies (partly) outside the dataset.
    #[error("range {offset}+{len} is outside the volume of {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// The pool has no physical space left for new blocks of this volume.
    #[error("pool {pool} is out of physical space; free space or grow the pool")]
    NoSpace { pool: String },
    /// The dataset is write-protected (read-only export, snapshot, locked pool).
    #[error("volume {volume} is write-protected")]
    ReadOnly { volume: String },
    /// A media error that could not be repaired from parity.
    #[error("unrecoverable media error on volume {volume}: {detail}")]
    Media { volume: String, detail: String },
    /// The volume was deleted while the request was in flight.
    #[error("volume {volume} no longer exists")]
    VolumeGone { volume: String },
    /// The node is shutting down and takes no new work.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Section ownership changed while the request waited inside the cache; the cache
    /// retries it once the change is done (hosts never see this).
    #[error("the request met an ownership change and must be retried")]
    Paused,
    /// The request cannot be done fast, and the caller asked for fast or nothing.
    #[error("operation cannot be done fast")]
    NotFast,
}

/// Parses a human size: `4096`, `512K`, `512M`, `10G`, `1T` (binary multiples; an optional
/// trailing `B` or `iB` is accepted). Returns `None` for anything else or on overflow.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let trimmed = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match trimmed.chars().last()? {
        'K' => (&trimmed[..trimmed.len() - 1], 10),
        'M' => (&trimmed[..trimmed.len() - 1], 20),
        'G' => (&trimmed[..trimmed.len() - 1], 30),
        'T' => (&trimmed[..trimmed.len() - 1], 40),
        'P' => (&trimmed[..trimmed.len() - 1], 50),
        c if c.is_ascii_digit() => (trimmed, 0),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    value.checked_mul(1u64 << shift)
}

/// Formats a byte count with the largest binary unit that keeps it exact to one decimal.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc_time(epoch_ms: u64) -> String {
    let seconds = epoch_ms / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Milliseconds since the epoch as an operator reads them: `2024-05-01 12:00:00 UTC`.
pub fn format_time(epoch_ms: u64) -> String {
    format!("{} UTC", utc_time(epoch_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
    }

    #[test]
    fn controller_ids_are_checked_and_shown_one_based() {
        assert!(ControllerId::new(2, 3).is_some());
        assert!(ControllerId::new(3, 3).is_none());
        assert_eq!(ControllerId::new(0, 3).unwrap().to_string(), "1");
        assert_eq!(
            ControllerId::from_number(3, 3).map(ControllerId::index),
            Some(2)
        );
        assert_eq!(ControllerId::from_number(0, 3), None);
        assert_eq!(ControllerId::from_number(4, 3), None);
        assert_eq!(ControllerId::try_from(7).map(ControllerId::number), Ok(8));
        assert_eq!(ControllerId::try_from(8), Err(NoSuchController(8)));
    }

    #[test]
    fn per_controller_values_are_indexed_by_id() {
        let mut per = PerController::new(3, |id| id.number() * 10);
        let second = ControllerId::new(1, 3).unwrap();
        per[second] += 1;
        assert_eq!(per[second], 21);
        let seen: Vec<(u32, u32)> = per
            .iter()
            .map(|(id, value)| (id.number(), *value))
            .collect();
        assert_eq!(seen, [(1, 10), (2, 21), (3, 30)]);
        assert_eq!(per.get(ControllerId::new(5, 8).unwrap()), None);
        assert_eq!(PerController::new(12, |_| ()).len(), MAX_CONTROLLERS);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            "",
            "G",
            "-1G",
            "1.5G",
            "10X",
            "99999999999999999999",
            "16777216T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}

/// Where block reads were served from, for a volume or a controller: the DRAM cache, the
/// SSD read cache, or the drives. Each read block counts once.
#[derive(Debug, Default)]
pub struct ReadSources {
    pub dram_hits: AtomicU64,
    pub ssd_hits: AtomicU64,
    pub misses: AtomicU64,
}
