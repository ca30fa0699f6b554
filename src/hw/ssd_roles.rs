//! What each `[[ssd]]` is for, and the optional `[ssd_cache]` table.
//!
//! ```toml
//! [[ssd]]
//! name = "ssd0"
//! path = "ssd0.img"
//! role = "both"          # "vault" | "cache" | "both"
//! cache_share = "25%"    # only with "both": the cache takes this share at the device's tail
//!
//! [ssd_cache]
//! write_mb_per_s = 200        # the tier's writer budget (MB/s = 10^6 bytes/s), 1..=100000
//! sequential_cutoff = "1M"    # a read stream longer than this bypasses the SSD cache
//! ```
//!
//! Promises: exactly one SSD holds the write vault (`vault` or `both`); at most one holds
//! the read cache (`cache` or `both`). An SSD without a role is the vault when it is the
//! first such SSD and no SSD names the vault explicitly (so every model written before
//! roles existed means what it meant); any other SSD without a role is unused. With
//! `both`, the vault sees only the device's head (`Device::limit_len`) and the cache the
//! tail: the vault never sees the cache's bytes. `cache_share` is required with `both`
//! and refused otherwise. `[ssd_cache]` needs a cache SSD.

use serde::Deserialize;

use super::devices::RawDevice;
use super::{FieldError, MIN_SSD_SIZE, RawSize, size_field};

/// The writer's budget unless the model says.
const DEFAULT_WRITE_MB_PER_S: u64 = 200;
/// Largest writer budget, MB/s.
const MAX_WRITE_MB_PER_S: i64 = 100_000;
/// The sequential cutoff unless the model says.
const DEFAULT_SEQUENTIAL_CUTOFF: u64 = 1 << 20;
/// Largest sequential cutoff (1 GiB).
const MAX_SEQUENTIAL_CUTOFF: u64 = 1 << 30;
/// Smallest cache region: a cache of fewer blocks is not worth an index.
pub const MIN_CACHE_REGION: u64 = 16 << 20;
/// Largest `cache_share` in percent (the vault keeps the rest).
const MAX_CACHE_SHARE: f64 = 95.0;

/// What an SSD is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsdRole {
    /// The write vault (metadata, journal, flushed cache blocks).
    Vault,
    /// The SSD read-cache tier.
    Cache,
    /// The vault at the head, the read cache at the tail.
    Both,
}

/// The read-cache tier as the model describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct SsdCacheModel {
    /// Index in [`HwModel::ssds`](super::HwModel::ssds) of the SSD that holds the cache.
    pub ssd: usize,
    /// With role `both`: the cache's share of the device, in percent (0 < share ≤ 95).
    pub cache_share: Option<f64>,
    /// The writer's budget, bytes per second.
    pub write_bytes_per_sec: u64,
    /// A read that continues a sequential stream beyond this many bytes bypasses the cache.
    pub sequential_cutoff: u64,
}

/// Where the vault and the cache lie on a device of `device_len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdSplit {
    /// Bytes the vault may use, from offset 0.
    pub vault_len: u64,
    /// The cache region: first byte and length (4 KiB aligned).
    pub cache_offset: u64,
    pub cache_len: u64,
}

impl SsdCacheModel {
    /// How a device of `device_len` bytes is split between the vault (head) and the cache
    /// (tail, rounded to 1 MiB). Without a share the cache has the whole device. Refuses a
    /// split that leaves the vault under 64M or the cache under 16M.
    pub fn split(&self, device_len: u64) -> Result<SsdSplit, String> {
        let Some(share) = self.cache_share else {
            let cache_len = device_len / 4096 * 4096;
            if cache_len < MIN_CACHE_REGION {
                return Err(format!(
                    "the cache SSD has {device_len} bytes; the SSD read cache needs at least 16M"
                ));
            }
            return Ok(SsdSplit {
                vault_len: 0,
                cache_offset: 0,
                cache_len,
            });
        };
        let align = 1u64 << 20;
        let cache_len = ((device_len as f64 * share / 100.0) as u64) / align * align;
        let cache_offset = (device_len - cache_len) / align * align;
        let cache_len = (device_len - cache_offset) / 4096 * 4096;
        if cache_offset < MIN_SSD_SIZE || cache_len < MIN_CACHE_REGION {
            return Err(format!(
                "cache_share {share}% of {device_len} bytes leaves the vault {cache_offset} bytes (at least 64M) and the cache {cache_len} bytes (at least 16M); change cache_share or give the SSD more space"
            ));
        }
        Ok(SsdSplit {
            vault_len: cache_offset,
            cache_offset,
            cache_len,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsdCache {
    write_mb_per_s: Option<i64>,
    sequential_cutoff: Option<RawSize>,
}

/// What [`assign_roles`] found.
pub(super) struct Roles {
    /// Index of the vault SSD.
    pub vault: usize,
    /// Each SSD's role (`None`: unused).
    pub roles: Vec<Option<SsdRole>>,
    pub cache: Option<SsdCacheModel>,
}

/// The roles of the (expanded) `[[ssd]]` entries: the vault's index, each SSD's role, and
/// the cache tier if one SSD holds it. `sizes` are the SSDs' declared sizes.
pub(super) fn assign_roles(
    ssds: &[RawDevice],
    sizes: &[Option<u64>],
    table: Option<RawSsdCache>,
) -> Result<Roles, FieldError> {
    let mut roles = Vec::with_capacity(ssds.len());
    for (index, ssd) in ssds.iter().enumerate() {
        let field = format!("ssd[{index}].role");
        let role = match ssd.role.as_deref() {
            None => None,
            Some("vault") => Some(SsdRole::Vault),
            Some("cache") => Some(SsdRole::Cache),
            Some("both") => Some(SsdRole::Both),
            Some(other) => {
                return Err(FieldError::new(
                    field,
                    format!("must be \"vault\", \"cache\" or \"both\" (got {other:?})"),
                ));
            }
        };
        roles.push(role);
    }
    let explicit_vaults: Vec<usize> = (0..roles.len())
        .filter(|&i| matches!(roles[i], Some(SsdRole::Vault | SsdRole::Both)))
        .collect();
    let vault = match explicit_vaults.as_slice() {
        [one] => *one,
        [] => match roles.iter().position(Option::is_none) {
            Some(first) => {
                roles[first] = Some(SsdRole::Vault);
                first
            }
            None => {
                return Err(FieldError::new(
                    "ssd",
                    "no [[ssd]] holds the write vault; give one role = \"vault\" (or \"both\")",
                ));
            }
        },
        [first, second, ..] => {
            return Err(FieldError::new(
                format!("ssd[{second}].role"),
                format!(
                    "exactly one [[ssd]] holds the write vault, but ssd[{first}] ({:?}) and ssd[{second}] ({:?}) both do; make one of them role = \"cache\"",
                    ssds[*first].name, ssds[*second].name
                ),
            ));
        }
    };
    let caches: Vec<usize> = (0..roles.len())
        .filter(|&i| matches!(roles[i], Some(SsdRole::Cache | SsdRole::Both)))
        .collect();
    if let [first, second, ..] = caches.as_slice() {
        return Err(FieldError::new(
            format!("ssd[{second}].role"),
            format!(
                "at most one [[ssd]] holds the read cache, but ssd[{first}] ({:?}) and ssd[{second}] ({:?}) both do",
                ssds[*first].name, ssds[*second].name
            ),
        ));
    }
    let cache_share = cache_shares(ssds, &roles)?;
    let Some(&cache) = caches.first() else {
        if table.is_some() {
            return Err(FieldError::new(
                "ssd_cache",
                "an [ssd_cache] table needs an [[ssd]] with role = \"cache\" or \"both\" to hold the cache; add one or remove the table",
            ));
        }
        return Ok(Roles {
            vault,
            roles,
            cache: None,
        });
    };
    let (write_bytes_per_sec, sequential_cutoff) = ssd_cache_settings(table)?;
    let model = SsdCacheModel {
        ssd: cache,
        cache_share,
        write_bytes_per_sec,
        sequential_cutoff,
    };
    if let Some(size) = sizes[cache] {
        model
            .split(size)
            .map_err(|reason| FieldError::new(format!("ssd[{cache}].cache_share"), reason))?;
    }
    Ok(Roles {
        vault,
        roles,
        cache: Some(model),
    })
}

/// `cache_share` of the `both` SSD (required there, refused on every other SSD).
fn cache_shares(ssds: &[RawDevice], roles: &[Option<SsdRole>]) -> Result<Option<f64>, FieldError> {
    let mut found = None;
    for (index, (ssd, role)) in ssds.iter().zip(roles).enumerate() {
        let field = format!("ssd[{index}].cache_share");
        match (role, ssd.cache_share.as_deref()) {
            (Some(SsdRole::Both), None) => {
                return Err(FieldError::new(
                    field,
                    "an SSD with role = \"both\" needs cache_share (the read cache's share of the device, at its tail, e.g. \"25%\")",
                ));
            }
            (Some(SsdRole::Both), Some(share)) => {
                let percent = share
                    .strip_suffix('%')
                    .and_then(|number| number.trim().parse::<f64>().ok())
                    .filter(|percent| *percent > 0.0 && *percent <= MAX_CACHE_SHARE)
                    .ok_or_else(|| {
                        FieldError::new(
                            &field,
                            format!(
                                "must be a share of the device above \"0%\" and at most \"{MAX_CACHE_SHARE}%\" (got {share:?})"
                            ),
                        )
                    })?;
                found = Some(percent);
            }
            (_, Some(_)) => {
                return Err(FieldError::new(
                    field,
                    "cache_share applies only to an SSD with role = \"both\"; remove it or set role = \"both\"",
                ));
            }
            (_, None) => {}
        }
    }
    Ok(found)
}

fn ssd_cache_settings(table: Option<RawSsdCache>) -> Result<(u64, u64), FieldError> {
    let Some(table) = table else {
        return Ok((
            DEFAULT_WRITE_MB_PER_S * 1_000_000,
            DEFAULT_SEQUENTIAL_CUTOFF,
        ));
    };
    let write_mb = match table.write_mb_per_s {
        None => DEFAULT_WRITE_MB_PER_S,
        Some(mb) if (1..=MAX_WRITE_MB_PER_S).contains(&mb) => mb as u64,
        Some(mb) => {
            return Err(FieldError::new(
                "ssd_cache.write_mb_per_s",
                format!(
                    "must be between 1 and {MAX_WRITE_MB_PER_S} MB per second (got {mb}); it bounds how fast the read cache is filled"
                ),
            ));
        }
    };
    let cutoff = match &table.sequential_cutoff {
        None => DEFAULT_SEQUENTIAL_CUTOFF,
        Some(raw) => {
            let bytes = size_field("ssd_cache.sequential_cutoff", raw)?;
            if !(4096..=MAX_SEQUENTIAL_CUTOFF).contains(&bytes) {
                return Err(FieldError::new(
                    "ssd_cache.sequential_cutoff",
                    format!("must be between 4K and 1G (got {bytes} bytes)"),
                ));
            }
            bytes
        }
    };
    Ok((write_mb * 1_000_000, cutoff))
}
