//! The hardware model: what one troika node is made of.
//!
//! A model names the number of controllers, the DRAM cache each one has, the SSD devices
//! (write vault and read cache), the NL-SAS drives that hold the striped data, the stripe
//! geometry, and optionally a latency model per device for simulated (hardware-in-the-loop)
//! rigs. It is read from a TOML file (`hw/*.toml`); `hw/dev.toml` is compiled in as the
//! default.
//!
//! What this module promises: a [`HwModel`] that exists has passed every check below, so the
//! layers above may rely on them without re-checking. A bad file is refused as a whole with
//! an [`HwError`] naming the file, the field and the reason, e.g.
//! `hw/ci.toml: field `stripe.data`: must be between 2 and 30 (got 1)`.
//!
//! Checks: unknown fields are refused; `controllers` is 1..=8; `dram_per_controller` is at
//! least 16M and a multiple of 64K; `stripe.parity` is 2 (P+Q); `stripe.data` is 2..=30;
//! `stripe.unit` is a power of two between 16K and 1M, small enough that a row's blocks fit
//! its 4 KiB summary (at most 128 blocks of 4K per row: 32K units for 14 data units, 64K
//! for 4); `stripe.rows_per_segment` is at least
//! 1; there is at least one `[[ssd]]` and at least `data + parity + spare` `[[nlsas]]` drives
//! (at most 1024), where the spare space is `stripe.spare_drives` or `stripe.spare` (a share
//! such as `"5%"`, rounded up to whole drives' worth) or by default two drives' worth when
//! there are more drives than a row is wide (none when exactly as many: the straight layout
//! of earlier builds); `stripe.drive_timeout_ms` (default 30000: an NL-SAS I/O slower than
//! this fails its drive) is 100..=600000; every
//! device has a non-empty name (unique across the node) and a path; a size, when given, is a
//! multiple of the stripe unit and at least 64 units (NL-SAS) or 64M (SSD); latency numbers
//! are within physical reason (rpm 3600..=20000, times at most 100 ms); `write_cache` is a
//! multiple of 4K up to 1G; every fault rule is whole (see [`faults`]); the optional
//! `[scrub]` table has a rate of 1M to 100G per second and an interval of 1 second to 365
//! days (see [`scrub`]); each `[[ssd]]` has a role (`vault`, `cache` or `both` with a
//! `cache_share`): exactly one holds the vault, at most one the read cache, and the optional
//! `[ssd_cache]` table needs a cache SSD (see [`ssd_roles`]).
//!
//! Sizes are written as integers (bytes) or strings with binary units (`"64K"`, `"1G"`).
//!
//! Large inventories are written compactly: an `[[nlsas]]` (or `[[ssd]]`) entry with
//! `count = N` stands for N alike devices, numbered from 0 where `{}` appears in its name
//! and path (`name = "nlsas{}"`, `path = "nlsas{}.img"` gives `nlsas0` at `nlsas0.img` up to
//! `nlsas479`); such an entry needs `{}` in both, `{}` needs a count, and N is 1..=1024.
//! Errors name the expanded device (`nlsas[37].size`).
//!
//! DRAM is declared as the real machine has it (`dram_per_controller`); `dram_scale`
//! (more than 0, at most 1; 1 when absent) is the one setting that fits it to a smaller
//! host: each controller's cache gets `dram_per_controller × dram_scale`, rounded down to
//! 64K, which must still be at least 16M ([`HwModel::cache_per_controller`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::types::{BLOCK_SIZE, MAX_ROW_DATA_BLOCKS as MAX_SUMMARY_ENTRIES, parse_size};

#[cfg(test)]
mod compact_tests;
mod devices;
pub mod faults;
pub mod scrub;
mod ssd_roles;
#[cfg(test)]
mod ssd_roles_tests;
#[cfg(test)]
mod tests;

use devices::{RawDevice, check_device_size, expand_counted, validate_devices};
use faults::FaultSpec;
pub use scrub::ScrubSettings;
pub use ssd_roles::{MIN_CACHE_REGION, SsdCacheModel, SsdRole, SsdSplit};

/// The embedded default model.
const DEV_TOML: &str = include_str!("../../hw/dev.toml");

/// Largest time a latency model may name, in microseconds (100 ms).
const MAX_LATENCY_US: u64 = 100_000;
/// Smallest SSD a model may name.
const MIN_SSD_SIZE: u64 = 64 << 20;
/// Largest simulated write cache a device may have.
const MAX_WRITE_CACHE: u64 = 1 << 30;
/// How slow an NL-SAS I/O may be before its drive is failed, unless the model says.
const DEFAULT_DRIVE_TIMEOUT_MS: i64 = 30_000;
/// Most NL-SAS drives a model may name.
const MAX_NLSAS: usize = 1024;
/// Smallest NL-SAS drive a model may name, in stripe units.
const MIN_NLSAS_UNITS: u64 = 64;

/// One node's inventory, validated.
#[derive(Clone, Debug)]
pub struct HwModel {
    /// The model's name, for logs and the system API.
    pub name: String,
    /// Number of controllers (each with its own DRAM cache and reactor).
    pub controllers: usize,
    /// DRAM per controller as the model declares it (the real machine's), in bytes.
    pub dram_per_controller: u64,
    /// What share of the declared DRAM this host gives the cache (`dram_scale`, 1 unless
    /// set): see [`HwModel::cache_per_controller`].
    pub dram_scale: f64,
    /// SSD devices: write vault and read-cache tier (each with its `role`).
    pub ssds: Vec<DeviceSpec>,
    /// Index in `ssds` of the SSD that holds the write vault (role `vault` or `both`).
    pub vault_ssd: usize,
    /// The SSD read-cache tier, when an SSD has role `cache` or `both`.
    pub ssd_cache: Option<SsdCacheModel>,
    /// NL-SAS drives: one per stripe column (`stripe.data + stripe.parity` of them).
    pub nlsas: Vec<DeviceSpec>,
    /// How data is striped across the NL-SAS drives.
    pub stripe: StripeGeometry,
    /// How fast and how often the background scrub runs (`[scrub]`).
    pub scrub: ScrubSettings,
}

/// One device of the model.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// Unique name within the node (`ssd0`, `nlsas3`).
    pub name: String,
    /// Where the device is: an absolute path (a block device or a file) or a path relative to
    /// the node's data directory (see [`HwModel::resolve_path`]).
    pub path: PathBuf,
    /// Size in bytes to create a backing file with; `None` uses the existing device's size.
    pub size: Option<u64>,
    /// Simulated latency, for hardware-in-the-loop rigs; `None` for real speed.
    pub latency: Option<LatencyModel>,
    /// Bytes of simulated volatile write cache (0: none; writes are durable when they
    /// complete). A flush makes cached writes durable; a power cut loses some of the rest.
    pub write_cache: u64,
    /// Fault rules active from start (see [`faults`]).
    pub faults: Vec<FaultSpec>,
    /// What an SSD is for (`None` for NL-SAS drives and for SSDs the model leaves unused).
    pub role: Option<SsdRole>,
}

/// Stripe geometry on the NL-SAS drives.
#[derive(Clone, Debug)]
pub struct StripeGeometry {
    /// Data columns per stripe.
    pub data: usize,
    /// Parity columns per stripe (always 2: P and Q).
    pub parity: usize,
    /// Bytes per column per stripe row.
    pub unit: u64,
    /// Stripe rows per segment (the unit of allocation and cleaning).
    pub rows_per_segment: u64,
    /// Drives' worth of spare cells spread over every drive (0 for the straight layout).
    pub spare: usize,
    /// Rows are declustered over the drives (false only for the straight layout: exactly
    /// `data + parity` drives and no spare).
    pub declustered: bool,
    /// An NL-SAS I/O slower than this fails its drive.
    pub drive_timeout: std::time::Duration,
}

/// A simulated device's service time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LatencyModel {
    /// A rotating drive: full-stroke seek time and spindle speed.
    Hdd { seek_us: u64, rpm: u64 },
    /// A flash device: per-operation read and program times.
    Ssd { read_us: u64, write_us: u64 },
}

/// Why a hardware model was refused.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    /// The file could not be read.
    #[error("cannot read hardware model {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the model's shape.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// A field has a value the node cannot run with.
    #[error("{file}: field `{field}`: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

impl HwModel {
    /// Parses and validates a model; `source` names the file in error messages.
    pub fn from_toml(text: &str, source: &str) -> Result<HwModel, HwError> {
        let raw: RawModel = toml::from_str(text).map_err(|e| HwError::Syntax {
            file: source.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        raw.validate().map_err(|e| HwError::Invalid {
            file: source.to_string(),
            field: e.field,
            reason: e.reason,
        })
    }

    /// Reads, parses and validates the model at `path`.
    pub fn load(path: &Path) -> Result<HwModel, HwError> {
        let text = std::fs::read_to_string(path).map_err(|source| HwError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        HwModel::from_toml(&text, &path.display().to_string())
    }

    /// The compiled-in default model (`hw/dev.toml`).
    pub fn embedded_default() -> HwModel {
        match HwModel::from_toml(DEV_TOML, "hw/dev.toml") {
            Ok(model) => model,
            // A unit test parses the embedded file, so this is a build defect, not input.
            Err(e) => panic!("the embedded hw/dev.toml is invalid: {e}"),
        }
    }

    /// DRAM cache per controller on this host: `dram_per_controller × dram_scale`, rounded
    /// down to 64K (validation made sure it is at least 16M).
    pub fn cache_per_controller(&self) -> u64 {
        scaled_dram(self.dram_per_controller, self.dram_scale)
    }

    /// Where `spec`'s device is: relative paths are under `data_dir`, absolute ones as given.
    pub fn resolve_path(&self, spec: &DeviceSpec, data_dir: &Path) -> PathBuf {
        if spec.path.is_absolute() {
            spec.path.clone()
        } else {
            data_dir.join(&spec.path)
        }
    }
}

/// A size as written in the file: bytes, or a string with a binary unit.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    controllers: i64,
    dram_per_controller: RawSize,
    dram_scale: Option<f64>,
    stripe: RawStripe,
    #[serde(default)]
    ssd: Vec<RawDevice>,
    #[serde(default)]
    nlsas: Vec<RawDevice>,
    scrub: Option<scrub::RawScrub>,
    ssd_cache: Option<ssd_roles::RawSsdCache>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStripe {
    data: i64,
    parity: i64,
    unit: RawSize,
    rows_per_segment: i64,
    /// Drives' worth of distributed spare space.
    spare_drives: Option<i64>,
    /// Spare space as a share of the drives (`"5%"`), rounded up to whole drives' worth.
    spare: Option<String>,
    /// An NL-SAS I/O slower than this fails its drive (ms).
    drive_timeout_ms: Option<i64>,
}

/// A validation failure before the file name is attached.
struct FieldError {
    field: String,
    reason: String,
}

impl FieldError {
    fn new(field: impl fmt::Display, reason: impl fmt::Display) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn size_field(field: &str, raw: &RawSize) -> Result<u64, FieldError> {
    match raw {
        RawSize::Bytes(bytes) => Ok(*bytes),
        RawSize::Text(text) => parse_size(text).ok_or_else(|| {
            FieldError::new(
                field,
                format!("not a size (got {text:?}; write e.g. 65536, \"64K\", \"256M\", \"1G\")"),
            )
        }),
    }
}

fn int_in_range(field: &str, value: i64, low: i64, high: i64) -> Result<i64, FieldError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(FieldError::new(
            field,
            format!("must be between {low} and {high} (got {value})"),
        ))
    }
}

fn scaled_dram(declared: u64, scale: f64) -> u64 {
    ((declared as f64 * scale) as u64) / (64 << 10) * (64 << 10)
}

fn latency_us(field: &str, value: i64) -> Result<u64, FieldError> {
    int_in_range(field, value, 0, MAX_LATENCY_US as i64).map(|v| v as u64)
}

impl RawModel {
    fn validate(self) -> Result<HwModel, FieldError> {
        if self.name.trim().is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        let controllers = int_in_range("controllers", self.controllers, 1, 8)? as usize;
        let dram = size_field("dram_per_controller", &self.dram_per_controller)?;
        if dram < 16 << 20 || !dram.is_multiple_of(64 << 10) {
            return Err(FieldError::new(
                "dram_per_controller",
                format!("must be at least 16M and a multiple of 64K (got {dram} bytes)"),
            ));
        }
        let dram_scale = self.dram_scale.unwrap_or(1.0);
        if !(dram_scale > 0.0 && dram_scale <= 1.0) {
            return Err(FieldError::new(
                "dram_scale",
                format!("must be more than 0 and at most 1 (got {dram_scale})"),
            ));
        }
        let cache = scaled_dram(dram, dram_scale);
        if cache < 16 << 20 {
            return Err(FieldError::new(
                "dram_scale",
                format!(
                    "leaves {cache} bytes of the declared {dram} per controller; the cache needs at least 16M: raise dram_scale"
                ),
            ));
        }
        let stripe = self.stripe.validate()?;
        let ssd = expand_counted("ssd", self.ssd)?;
        let nlsas = expand_counted("nlsas", self.nlsas)?;
        if ssd.is_empty() {
            return Err(FieldError::new(
                "ssd",
                "at least one [[ssd]] device is needed (the write vault)",
            ));
        }
        let columns = stripe.stripe.data + stripe.stripe.parity;
        let stripe = stripe.with_spare(nlsas.len())?;
        if nlsas.len() < columns + stripe.spare {
            return Err(FieldError::new(
                "nlsas",
                format!(
                    "need at least stripe.data + stripe.parity + spare = {} [[nlsas]] drives (got {})",
                    columns + stripe.spare,
                    nlsas.len()
                ),
            ));
        }
        if nlsas.len() > MAX_NLSAS {
            return Err(FieldError::new(
                "nlsas",
                format!("at most {MAX_NLSAS} [[nlsas]] drives (got {})", nlsas.len()),
            ));
        }
        let mut ssds = validate_devices("ssd", ssd.clone(), |size| {
            check_device_size(size, stripe.unit, MIN_SSD_SIZE, "64M")
        })?;
        let sizes: Vec<Option<u64>> = ssds.iter().map(|spec| spec.size).collect();
        let ssd_roles::Roles {
            vault: vault_ssd,
            roles,
            cache: ssd_cache,
        } = ssd_roles::assign_roles(&ssd, &sizes, self.ssd_cache)?;
        for (spec, role) in ssds.iter_mut().zip(roles) {
            spec.role = role;
        }
        let min_nlsas = stripe.unit * MIN_NLSAS_UNITS;
        let nlsas = validate_devices("nlsas", nlsas, |size| {
            check_device_size(size, stripe.unit, min_nlsas, "64 stripe units")
        })?;
        let mut names: Vec<(&str, String)> = Vec::new();
        for (section, devices) in [("ssd", &ssds), ("nlsas", &nlsas)] {
            for (index, device) in devices.iter().enumerate() {
                let field = format!("{section}[{index}].name");
                if let Some((_, first)) = names.iter().find(|(n, _)| *n == device.name) {
                    return Err(FieldError::new(
                        field,
                        format!("duplicate device name {:?} (also {first})", device.name),
                    ));
                }
                names.push((&device.name, field));
            }
        }
        let scrub = scrub::RawScrub::validate(self.scrub)?;
        Ok(HwModel {
            name: self.name,
            controllers,
            dram_per_controller: dram,
            dram_scale,
            ssds,
            vault_ssd,
            ssd_cache,
            nlsas,
            stripe,
            scrub,
        })
    }
}

impl RawStripe {
    fn validate(self) -> Result<RawSpare, FieldError> {
        if self.parity != 2 {
            return Err(FieldError::new(
                "stripe.parity",
                format!("must be 2 (P and Q) (got {})", self.parity),
            ));
        }
        let data = int_in_range("stripe.data", self.data, 2, 30)? as usize;
        let unit = size_field("stripe.unit", &self.unit)?;
        if !unit.is_power_of_two() || !(16 << 10..=1 << 20).contains(&unit) {
            return Err(FieldError::new(
                "stripe.unit",
                format!("must be a power of two between 16K and 1M (got {unit} bytes)"),
            ));
        }
        // The row's summary block names every other block of the row in one 4 KiB block.
        let slots = data as u64 * unit / BLOCK_SIZE as u64;
        if slots > MAX_SUMMARY_ENTRIES as u64 + 1 {
            let fits = (MAX_SUMMARY_ENTRIES as u64 + 1) * BLOCK_SIZE as u64 / data as u64;
            let largest = 1u64 << (63 - fits.leading_zeros());
            return Err(FieldError::new(
                "stripe.unit",
                format!(
                    "a row of {data} data units of {unit} bytes has {slots} blocks, but its 4 KiB summary describes at most {MAX_SUMMARY_ENTRIES} besides itself; use a unit of at most {}K with {data} data units",
                    largest >> 10
                ),
            ));
        }
        if self.rows_per_segment < 1 {
            return Err(FieldError::new(
                "stripe.rows_per_segment",
                format!("must be at least 1 (got {})", self.rows_per_segment),
            ));
        }
        Ok(RawSpare {
            stripe: StripeGeometry {
                data,
                parity: 2,
                unit,
                rows_per_segment: self.rows_per_segment as u64,
                spare: 0,
                declustered: false,
                drive_timeout: std::time::Duration::from_millis(int_in_range(
                    "stripe.drive_timeout_ms",
                    self.drive_timeout_ms.unwrap_or(DEFAULT_DRIVE_TIMEOUT_MS),
                    100,
                    600_000,
                )? as u64),
            },
            spare_drives: self.spare_drives,
            spare_share: self.spare,
        })
    }
}

/// A stripe whose spare space is known once the drives are counted.
struct RawSpare {
    stripe: StripeGeometry,
    spare_drives: Option<i64>,
    spare_share: Option<String>,
}

impl RawSpare {
    /// The stripe over `drives` drives: `spare_drives`, or `spare` as a share rounded up,
    /// or by default 2 drives' worth when the drives leave room (none when there are exactly
    /// `data + parity`: the straight layout of earlier builds).
    fn with_spare(self, drives: usize) -> Result<StripeGeometry, FieldError> {
        let width = self.stripe.data + self.stripe.parity;
        let spare = match (self.spare_drives, &self.spare_share) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "stripe.spare",
                    "give either spare_drives or spare, not both",
                ));
            }
            (Some(count), None) => {
                int_in_range("stripe.spare_drives", count, 0, drives as i64)? as usize
            }
            (None, Some(share)) => {
                let percent = share
                    .strip_suffix('%')
                    .and_then(|number| number.trim().parse::<f64>().ok())
                    .filter(|percent| (0.0..=50.0).contains(percent))
                    .ok_or_else(|| {
                        FieldError::new(
                            "stripe.spare",
                            format!("must be a share of the drives from \"0%\" to \"50%\" (got {share:?})"),
                        )
                    })?;
                (drives as f64 * percent / 100.0).ceil() as usize
            }
            (None, None) => drives.saturating_sub(width).min(2),
        };
        Ok(StripeGeometry {
            spare,
            declustered: drives != width || spare != 0,
            ..self.stripe
        })
    }
}
