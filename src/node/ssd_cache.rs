//! The node's SSD read-cache tier: which SSD (or which part of one) holds it, opening it
//! with one partition per controller, and the event raised when it fails.
//!
//! Promises: the vault SSD is opened exactly as before roles existed unless the model
//! gives it a role; with role `both` the vault sees only the head of the device (a
//! [`Device::limited_view`]) and the cache the tail. A cache that cannot be opened or
//! later fails costs only cache: the node serves from the NL-SAS drives and says so
//! (`SSD_CACHE_FAILED`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::start::open_device;
use crate::cache::Cache;
use crate::hw::HwModel;
use crate::io::{Device, FaultPlane};
use crate::meta::MetaStore;
use crate::mgmt::events::EventLog;
use crate::ssd::{CacheRegion, SsdCache, SsdCacheSettings};

/// Opens the vault SSD, and the cache SSD's region when the model has a cache tier.
pub(super) fn open_ssds(
    hw: &HwModel,
    data_dir: &Path,
    faults: &FaultPlane,
) -> anyhow::Result<(Device, Option<CacheRegion>)> {
    let vault_spec = &hw.ssds[hw.vault_ssd];
    let vault = open_device(hw, vault_spec, data_dir, faults)
        .with_context(|| format!("cannot open the vault SSD {:?}", vault_spec.name))?;
    let Some(model) = &hw.ssd_cache else {
        return Ok((vault, None));
    };
    let spec = &hw.ssds[model.ssd];
    let device = if model.ssd == hw.vault_ssd {
        None
    } else {
        Some(
            open_device(hw, spec, data_dir, faults)
                .with_context(|| format!("cannot open the cache SSD {:?}", spec.name))?,
        )
    };
    let size = device.as_ref().unwrap_or(&vault).size();
    let split = model
        .split(size)
        .map_err(|reason| anyhow::anyhow!("SSD {:?} ({} bytes): {reason}", spec.name, size))?;
    let (vault, device) = match device {
        Some(device) => (vault, device),
        // Role `both`: the vault gets a view of the head, the cache the whole device.
        None => {
            let head = vault
                .limited_view(split.vault_len)
                .with_context(|| format!("cannot open a second handle on SSD {:?}", spec.name))?;
            (head, vault)
        }
    };
    let region = CacheRegion {
        device: Arc::new(device),
        offset: split.cache_offset,
        len: split.cache_len,
    };
    Ok((vault, Some(region)))
}

/// Opens the SSD read cache on `region` (one partition per controller) and puts it under
/// `meta`'s verified reads (before the cache starts, so that recovery's writes already
/// tell it what they reuse); [`Cache::attach_ssd`] follows once the cache is up. A failure
/// to open costs only the cache: the node runs without it.
pub(super) fn open_ssd_cache(
    hw: &HwModel,
    region: CacheRegion,
    meta: &MetaStore,
    events: &Arc<EventLog>,
) -> Option<Arc<SsdCache>> {
    let model = hw.ssd_cache.as_ref()?;
    let name = hw.ssds[model.ssd].name.clone();
    let (offset, len) = (region.offset, region.len);
    let failure_events = events.clone();
    let failed_name = name.clone();
    let settings = SsdCacheSettings {
        partitions: hw.controllers,
        write_bytes_per_sec: model.write_bytes_per_sec,
        on_failure: Box::new(move |detail| {
            let text = failure_text(&failed_name, &detail);
            crate::say!("troika: {text}");
            failure_events.raise("SSD_CACHE_FAILED", text, None, None);
        }),
    };
    match SsdCache::open(region, settings) {
        Ok((ssd, report)) => {
            crate::say!(
                "troika: SSD read cache on {name} ({} MiB at offset {} MiB, {} partitions): {} in {} ms: {} cached blocks restored, {} dropped as uncertain",
                len >> 20,
                offset >> 20,
                hw.controllers,
                if report.formatted {
                    "formatted"
                } else {
                    "opened"
                },
                report.elapsed.as_millis(),
                report.restored,
                report.dropped
            );
            meta.attach_read_cache(ssd.clone());
            Some(ssd)
        }
        Err(detail) => {
            let text = failure_text(&name, &detail);
            crate::say!("troika: {text}");
            events.raise("SSD_CACHE_FAILED", text, None, None);
            None
        }
    }
}

/// Puts the opened tier under the started cache, with the model's sequential cutoff.
pub(super) fn attach_ssd_cache(hw: &HwModel, ssd: Option<Arc<SsdCache>>, cache: &Cache) {
    if let (Some(ssd), Some(model)) = (ssd, &hw.ssd_cache) {
        cache.set_sequential_cutoff(model.sequential_cutoff);
        cache.attach_ssd(ssd);
    }
}

fn failure_text(ssd: &str, detail: &str) -> String {
    format!(
        "The SSD read cache on {ssd} failed ({detail}). Only cache was lost: all data is safe on the NL-SAS drives, and reads are served from them. Replace SSD {ssd} to get the read cache back"
    )
}
