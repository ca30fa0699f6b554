//! The drive table on disk: which drives are failed or being replaced, the spare column
//! each uses, per-segment rebuild and copy-back progress, and the paths of replacement
//! drives. One JSON file in the data directory (0600), replaced atomically, so a crash or a
//! power cut leaves the previous or the new table whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::drives::{DriveTable, Failure, SegmentBits};
use super::geometry::Geometry;
use super::placement::Placement;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "drives.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StoredTable {
    version: u32,
    drives: usize,
    segments: u64,
    failures: Vec<StoredFailure>,
    /// Drive index to the path of the device that replaced the model's.
    #[serde(default)]
    replacements: BTreeMap<usize, String>,
    /// The heal priority an operator set (`LOW`, `MEDIUM`, `HIGH`); absent: MEDIUM.
    #[serde(default)]
    priority: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredFailure {
    drive: usize,
    spare: Option<usize>,
    reason: String,
    failed_at_ms: u64,
    rebuilt: String,
    copied: Option<String>,
}

/// Where the drive table is kept.
pub struct DriveStore {
    path: PathBuf,
    replacements: parking_lot::Mutex<BTreeMap<usize, String>>,
    priority: parking_lot::Mutex<Option<String>>,
}

impl DriveStore {
    /// The store in `data_dir`; reads the replacement paths it holds (an unreadable file is
    /// an error naming it).
    pub fn open(data_dir: &Path) -> Result<DriveStore, String> {
        let path = data_dir.join(FILE_NAME);
        let (replacements, priority) = match read(&path)? {
            Some(stored) => (stored.replacements, stored.priority),
            None => (BTreeMap::new(), None),
        };
        Ok(DriveStore {
            path,
            replacements: parking_lot::Mutex::new(replacements),
            priority: parking_lot::Mutex::new(priority),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device path that replaced drive `index`, if one did.
    pub fn replacement(&self, index: usize) -> Option<PathBuf> {
        self.replacements.lock().get(&index).map(PathBuf::from)
    }

    /// Records that `path` now holds drive `index` (saved with the next table).
    pub fn set_replacement(&self, index: usize, path: &Path) {
        self.replacements
            .lock()
            .insert(index, path.display().to_string());
    }

    /// The heal priority saved by an operator (`LOW`, `MEDIUM` or `HIGH`), if any.
    pub fn priority(&self) -> Option<String> {
        self.priority.lock().clone()
    }

    /// Records the heal priority (saved with the next table).
    pub fn set_priority(&self, priority: &str) {
        *self.priority.lock() = Some(priority.to_string());
    }

    /// The table saved for an array of this shape, `None` when none was saved. A file for
    /// another shape, or damaged, is an error naming it.
    pub fn load(
        &self,
        placement: &Placement,
        geometry: &Geometry,
    ) -> Result<Option<DriveTable>, String> {
        let Some(stored) = read(&self.path)? else {
            return Ok(None);
        };
        let damaged = |what: &str| {
            format!(
                "{} is damaged ({what}); restore it, or remove it only if every drive it names as failed has been replaced",
                self.path.display()
            )
        };
        if stored.drives != placement.drives() || stored.segments != geometry.segments() {
            return Err(format!(
                "{} describes {} drives and {} segments, but the array has {} drives and {} segments; use the hardware model the node was formatted with",
                self.path.display(),
                stored.drives,
                stored.segments,
                placement.drives(),
                geometry.segments()
            ));
        }
        let mut table = DriveTable::new(
            placement.drives(),
            geometry.segments(),
            geometry.rows_per_segment,
        );
        let bits = |text: &str| -> Result<SegmentBits, String> {
            let bytes = STANDARD.decode(text).map_err(|_| damaged("a bitmap"))?;
            let words = bytes
                .chunks_exact(8)
                .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
                .collect();
            SegmentBits::from_words(words, geometry.segments())
                .ok_or_else(|| damaged("a bitmap's length"))
        };
        let mut failures = Vec::new();
        for failure in &stored.failures {
            if failure.drive >= placement.drives()
                || failure
                    .spare
                    .is_some_and(|spare| spare >= placement.spare())
            {
                return Err(damaged("a drive or spare index"));
            }
            failures.push(Failure {
                drive: failure.drive,
                spare: failure.spare,
                rebuilt: bits(&failure.rebuilt)?,
                copied: failure.copied.as_deref().map(bits).transpose()?,
                reason: failure.reason.clone(),
                failed_at_ms: failure.failed_at_ms,
            });
        }
        table.restore(failures);
        Ok(Some(table))
    }

    /// Saves `table` atomically.
    pub fn save(&self, table: &DriveTable) -> std::io::Result<()> {
        let encode = |bits: &SegmentBits| {
            let bytes: Vec<u8> = bits.words().iter().flat_map(|w| w.to_le_bytes()).collect();
            STANDARD.encode(bytes)
        };
        let stored = StoredTable {
            version: VERSION,
            drives: table.drives(),
            segments: table.segments(),
            failures: table
                .failures()
                .iter()
                .map(|f| StoredFailure {
                    drive: f.drive,
                    spare: f.spare,
                    reason: f.reason.clone(),
                    failed_at_ms: f.failed_at_ms,
                    rebuilt: encode(&f.rebuilt),
                    copied: f.copied.as_ref().map(encode),
                })
                .collect(),
            replacements: self.replacements.lock().clone(),
            priority: self.priority.lock().clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        let mut temporary = self.path.as_os_str().to_os_string();
        temporary.push(".tmp");
        let _ = std::fs::remove_file(&temporary);
        crate::private_files::write_atomically(&self.path, &bytes)
    }
}

fn read(path: &Path) -> Result<Option<StoredTable>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let stored: StoredTable = serde_json::from_slice(&bytes).map_err(|err| {
        format!(
            "{} is damaged ({err}); restore it, or remove it only if every drive it names as failed has been replaced",
            path.display()
        )
    })?;
    if stored.version != VERSION {
        return Err(format!(
            "{} is of version {}, which this build does not know",
            path.display(),
            stored.version
        ));
    }
    Ok(Some(stored))
}
