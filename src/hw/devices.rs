//! The `[[ssd]]` and `[[nlsas]]` entries of a model: one device each, or with `count` a run
//! of alike devices (see the parent module doc), checked into [`DeviceSpec`]s.

use std::path::PathBuf;

use serde::Deserialize;

use super::faults::RawFaultRule;
use super::{
    DeviceSpec, FieldError, LatencyModel, MAX_NLSAS, MAX_WRITE_CACHE, RawSize, int_in_range,
    latency_us, size_field,
};

/// Where a counted entry's name and path take the device's number.
const NUMBER_MARK: &str = "{}";

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    /// With `count`: how many drives this entry stands for.
    count: Option<i64>,
    pub(super) name: String,
    path: Option<String>,
    size: Option<RawSize>,
    latency: Option<RawLatency>,
    write_cache: Option<RawSize>,
    #[serde(default)]
    faults: Vec<RawFaultRule>,
    /// `[[ssd]]` only: what the SSD is for (see `ssd_roles`).
    pub(super) role: Option<String>,
    /// `[[ssd]]` with role `both` only: the read cache's share of the device.
    pub(super) cache_share: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawLatency {
    Hdd { seek_us: i64, rpm: i64 },
    Ssd { read_us: i64, write_us: i64 },
}

pub(super) fn check_device_size(
    size: u64,
    unit: u64,
    min: u64,
    min_text: &str,
) -> Result<(), String> {
    if !size.is_multiple_of(unit) {
        Err(format!(
            "must be a multiple of the stripe unit {unit} (got {size} bytes)"
        ))
    } else if size < min {
        Err(format!("must be at least {min_text} (got {size} bytes)"))
    } else {
        Ok(())
    }
}

pub(super) fn validate_devices(
    section: &str,
    raw: Vec<RawDevice>,
    check_size: impl Fn(u64) -> Result<(), String>,
) -> Result<Vec<DeviceSpec>, FieldError> {
    let mut devices = Vec::with_capacity(raw.len());
    for (index, device) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("{section}[{index}].{name}");
        if device.name.trim().is_empty() {
            return Err(FieldError::new(field("name"), "must not be empty"));
        }
        let path = match device.path {
            Some(path) if !path.trim().is_empty() => PathBuf::from(path),
            _ => {
                return Err(FieldError::new(
                    field("path"),
                    format!(
                        "device {:?} needs a path (a file under the data directory or a block device)",
                        device.name
                    ),
                ));
            }
        };
        let size = match &device.size {
            Some(raw) => {
                let size = size_field(&field("size"), raw)?;
                check_size(size).map_err(|reason| FieldError::new(field("size"), reason))?;
                Some(size)
            }
            None => None,
        };
        let latency = match device.latency {
            None => None,
            Some(RawLatency::Hdd { seek_us, rpm }) => Some(LatencyModel::Hdd {
                seek_us: latency_us(&field("latency.seek_us"), seek_us)?,
                rpm: int_in_range(&field("latency.rpm"), rpm, 3600, 20_000)? as u64,
            }),
            Some(RawLatency::Ssd { read_us, write_us }) => Some(LatencyModel::Ssd {
                read_us: latency_us(&field("latency.read_us"), read_us)?,
                write_us: latency_us(&field("latency.write_us"), write_us)?,
            }),
        };
        let write_cache = match &device.write_cache {
            None => 0,
            Some(raw) => {
                let bytes = size_field(&field("write_cache"), raw)?;
                if bytes == 0 || bytes > MAX_WRITE_CACHE || !bytes.is_multiple_of(4096) {
                    return Err(FieldError::new(
                        field("write_cache"),
                        format!("must be a multiple of 4K between 4K and 1G (got {bytes} bytes)"),
                    ));
                }
                bytes
            }
        };
        let mut faults = Vec::with_capacity(device.faults.len());
        for (rule_index, rule) in device.faults.into_iter().enumerate() {
            if rule.device.is_some() {
                return Err(FieldError::new(
                    field(&format!("faults[{rule_index}].device")),
                    "a model's rule applies to the device it is listed under; remove device",
                ));
            }
            let spec = rule.into_spec(device.name.clone(), 0).map_err(|reason| {
                FieldError::new(field(&format!("faults[{rule_index}]")), reason)
            })?;
            faults.push(spec);
        }
        if section != "ssd" {
            if device.role.is_some() {
                return Err(FieldError::new(
                    field("role"),
                    "a role applies only to [[ssd]] devices (vault, cache or both); remove it",
                ));
            }
            if device.cache_share.is_some() {
                return Err(FieldError::new(
                    field("cache_share"),
                    "cache_share applies only to an [[ssd]] with role = \"both\"; remove it",
                ));
            }
        }
        devices.push(DeviceSpec {
            role: None,
            name: device.name,
            path,
            size,
            latency,
            write_cache,
            faults,
        });
    }
    Ok(devices)
}

/// The entries of `section` with every counted one expanded: `count = N` with `{}` in the
/// name and path stands for N devices numbered from 0 in both. Refuses a count outside
/// 1..=1024, a counted entry without `{}`, and `{}` without a count.
pub(super) fn expand_counted(
    section: &str,
    raw: Vec<RawDevice>,
) -> Result<Vec<RawDevice>, FieldError> {
    let mut devices = Vec::with_capacity(raw.len());
    for (index, entry) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("{section}[{index}].{name}");
        let marked_path = entry
            .path
            .as_deref()
            .is_some_and(|path| path.contains(NUMBER_MARK));
        let Some(count) = entry.count else {
            if entry.name.contains(NUMBER_MARK) || marked_path {
                return Err(FieldError::new(
                    field("count"),
                    format!(
                        "{NUMBER_MARK:?} in a name or path stands for a device's number; give count = N to list N devices"
                    ),
                ));
            }
            devices.push(entry);
            continue;
        };
        let count = int_in_range(&field("count"), count, 1, MAX_NLSAS as i64)? as usize;
        if !entry.name.contains(NUMBER_MARK) || !marked_path {
            return Err(FieldError::new(
                field("count"),
                format!(
                    "a counted entry needs {NUMBER_MARK:?} in both name and path where each device's number goes (e.g. name = \"nlsas{{}}\", path = \"nlsas{{}}.img\")"
                ),
            ));
        }
        if devices.len() + count > MAX_NLSAS * 2 {
            return Err(FieldError::new(
                field("count"),
                format!(
                    "the [[{section}]] entries list more than {} devices",
                    MAX_NLSAS * 2
                ),
            ));
        }
        for number in 0..count {
            let number = number.to_string();
            devices.push(RawDevice {
                count: None,
                name: entry.name.replace(NUMBER_MARK, &number),
                path: entry
                    .path
                    .as_ref()
                    .map(|path| path.replace(NUMBER_MARK, &number)),
                ..entry.clone()
            });
        }
    }
    Ok(devices)
}
