//! Opening the store at start, in three steps: read the vault device (format a blank one,
//! or check a found superblock against the hardware model and the node key, load its
//! newest checkpoint and replay the journal), rebuild the in-memory state from the maps
//! (garbage trees reclaimed first, then the segment table and the per-family accounts),
//! and seal a catalog whose secrets were kept plain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};

use super::datasets::{family_table, rebuild_handles};
use super::{MetaCounters, MetaError, MetaState, MetaStore, OpenReport};
use crate::clock::now_secs;
use crate::io::{Device, IoRing};
use crate::layout::{Array, Geometry, PlacementKind, SegmentAllocator};
use crate::meta::catalog::Catalog;
use crate::meta::checkpoint::{
    RecordedPlacement, SsdLayout, Superblock, SuperblockState, build_checkpoint, read_checkpoint,
    read_superblock, write_checkpoint, write_superblock,
};
use crate::meta::forest::Forest;
use crate::meta::journal::Journal;
use crate::meta::replay::RecoveredBlock;
use crate::meta::replay::{Replay, VaultCopies};
use crate::secrets::NodeKey;

/// What the vault device held once read: its superblock and what the checkpoint and the
/// journal rebuilt.
struct Loaded {
    superblock: Superblock,
    catalog: Catalog,
    maps: Forest,
    /// The generation the next write gets.
    next_generation: u64,
    recovered: Vec<RecoveredBlock>,
    /// Where the journal's next record goes.
    end_lsn: u64,
}

/// A failed read or write of the vault device, naming it.
fn media(ssd: &Device, err: std::io::Error) -> MetaError {
    MetaError::Media(format!("{}: {err}", ssd.path().display()))
}

impl MetaStore {
    /// Opens the node's metadata: formats a blank vault device, or loads the newest
    /// checkpoint and replays the journal. Returns the flushed blocks that still need to
    /// be destaged. `key` seals and opens the catalog's secrets; a vault whose secrets
    /// were sealed with another key is refused ([`MetaError::WrongKey`]), and one of
    /// format 1 (plain secrets) is rewritten sealed by a checkpoint before this returns.
    pub fn open(
        ssd: Device,
        array: Array,
        key: Arc<NodeKey>,
    ) -> Result<(MetaStore, Vec<RecoveredBlock>, OpenReport), MetaError> {
        let started = Instant::now();
        let mut ring = IoRing::new(64).map_err(|err| media(&ssd, err))?;
        let geometry = *array.geometry();
        let placement = RecordedPlacement::of(array.placement());
        let mut report = OpenReport::default();
        let found = read_superblock(&mut ring, &ssd).map_err(|err| media(&ssd, err))?;
        let loaded = match found {
            SuperblockState::Blank => {
                let loaded = format_blank(&mut ring, &ssd, &geometry, placement, &key)?;
                report.formatted = true;
                loaded
            }
            SuperblockState::Unreadable => {
                return Err(MetaError::Media(format!(
                    "{} holds data but no valid troika superblock; it is damaged or belongs to something else. Point the hardware model at the right device, or wipe it to start a new node",
                    ssd.path().display()
                )));
            }
            SuperblockState::Found(superblock) => {
                check_placement(&ssd, &superblock, placement)?;
                load_found(&mut ring, &ssd, superblock, &geometry, &key, &mut report)?
            }
        };
        report.recovered_blocks = loaded.recovered.len() as u64;
        let Loaded {
            superblock,
            catalog,
            maps,
            next_generation,
            recovered,
            end_lsn,
        } = loaded;
        let state = rebuild_state(catalog, maps, geometry);
        let ssd = Arc::new(ssd);
        let journal = Journal::new(
            ssd.clone(),
            superblock.layout.log_start,
            superblock.layout.log_len,
            end_lsn,
            superblock.replay_from,
        )
        .map_err(|err| media(&ssd, err))?;
        let data_blocks = geometry.data_blocks();
        let reserve = (data_blocks / 8).max(6 * geometry.data_blocks_per_segment());
        let families = family_table(&state);
        let plain_secrets = superblock.key_id.is_none();
        let replay_from = superblock.replay_from;
        let store = MetaStore {
            array,
            ssd,
            journal,
            state: RwLock::new(state),
            superblock: Mutex::new(Superblock {
                key_id: Some(key.id()),
                ..superblock
            }),
            key,
            generation: AtomicU64::new(next_generation),
            map_version: AtomicU64::new(0),
            catalog_generation: AtomicU64::new(0),
            usable_blocks: data_blocks.saturating_sub(reserve),
            failed: AtomicBool::new(false),
            families: RwLock::new(families),
            read_cache: std::sync::OnceLock::new(),
            counters: MetaCounters::default(),
        };
        if plain_secrets {
            // Twice, so that both checkpoint slots hold the sealed catalog. Every vault
            // record replay may still need stays: the floor is the old one.
            store.checkpoint(|| replay_from)?;
            store.checkpoint(|| replay_from)?;
            report.sealed_plain_secrets = true;
        }
        report.elapsed = started.elapsed();
        Ok((store, recovered, report))
    }
}

/// Formats a blank vault device: a first checkpoint of an empty catalog, then the
/// superblock that points at it (so a crash in between leaves the device blank).
fn format_blank(
    ring: &mut IoRing,
    ssd: &Device,
    geometry: &Geometry,
    placement: RecordedPlacement,
    key: &Arc<NodeKey>,
) -> Result<Loaded, MetaError> {
    let layout = SsdLayout::plan(ssd.size(), geometry.data_blocks()).map_err(MetaError::Invalid)?;
    let serial = now_secs() ^ u64::from(std::process::id()) << 32;
    let catalog = Catalog::new(serial);
    let image = build_checkpoint(
        0,
        1,
        &catalog,
        &Forest::new(),
        layout.checkpoint_slot_len,
        key,
    )
    .map_err(|err| media(ssd, err))?;
    write_checkpoint(ring, ssd, &layout, 0, &image).map_err(|err| media(ssd, err))?;
    let superblock = Superblock {
        sequence: 2,
        serial,
        data_devices: geometry.data as u64,
        unit: geometry.unit,
        rows_per_segment: geometry.rows_per_segment,
        rows: geometry.rows,
        layout,
        checkpoint_slot: 0,
        checkpoint_len: image.len,
        checkpoint_sum: image.sum,
        checkpoint_lsn: 0,
        replay_from: 0,
        key_id: Some(key.id()),
        placement,
    };
    write_superblock(ring, ssd, &superblock).map_err(|err| media(ssd, err))?;
    Ok(Loaded {
        superblock,
        catalog,
        maps: Forest::new(),
        next_generation: 1,
        recovered: Vec::new(),
        end_lsn: 0,
    })
}

/// Refuses a model whose placement of rows on the drives is not the one the array was
/// formatted with: its rows would be read from the wrong cells.
fn check_placement(
    ssd: &Device,
    superblock: &Superblock,
    model: RecordedPlacement,
) -> Result<(), MetaError> {
    let recorded = superblock.placement;
    if recorded == model {
        return Ok(());
    }
    let how = match recorded.kind {
        PlacementKind::Straight => format!(
            "exactly {} [[nlsas]] drives and no spare (no spare_drives or spare in [stripe])",
            recorded.drives
        ),
        PlacementKind::Declustered { .. } => format!(
            "{} [[nlsas]] drives and spare_drives = {}",
            recorded.drives, recorded.spare
        ),
    };
    Err(MetaError::Invalid(format!(
        "the data in {} was laid out as {recorded}, but the hardware model describes {model}; start the node with the model it was formatted with ({how}). To move the data to another layout, copy the volumes to a node formatted with the new model (README, Upgrading)",
        ssd.path().display()
    )))
}

/// Loads a vault device that holds a troika superblock: refuses one written with another
/// geometry or sealed under another key, then loads its newest checkpoint and replays the
/// journal from `replay_from` (counted in `report`).
fn load_found(
    ring: &mut IoRing,
    ssd: &Device,
    superblock: Superblock,
    geometry: &Geometry,
    key: &Arc<NodeKey>,
    report: &mut OpenReport,
) -> Result<Loaded, MetaError> {
    if !superblock.matches(geometry) {
        return Err(MetaError::Invalid(format!(
            "the data in {} was written with a different array geometry ({}+2, unit {}, {} rows, {} rows per segment) than the hardware model describes; use the model it was created with",
            ssd.path().display(),
            superblock.data_devices,
            superblock.unit,
            superblock.rows,
            superblock.rows_per_segment
        )));
    }
    if let Some(recorded) = superblock.key_id
        && recorded != key.id()
    {
        return Err(MetaError::WrongKey {
            ssd: ssd.path().display().to_string(),
            recorded,
            given: key.id(),
        });
    }
    let loaded = read_checkpoint(ring, ssd, &superblock, key).map_err(|err| media(ssd, err))?;
    let mut replay = Replay {
        catalog: loaded.catalog,
        maps: loaded.forest,
        vault: VaultCopies::all(),
        max_generation: loaded.generation,
        checkpoint_lsn: superblock.checkpoint_lsn,
        key: key.clone(),
    };
    let summary = Journal::replay(
        ssd,
        superblock.layout.log_start,
        superblock.layout.log_len,
        superblock.replay_from,
        |lsn, kind, body| replay.apply(lsn, kind, body),
    )
    .map_err(|err| media(ssd, err))?;
    report.replayed_batches = summary.batches;
    report.replayed_records = summary.records;
    let recovered = replay.finish();
    Ok(Loaded {
        superblock,
        catalog: replay.catalog,
        maps: replay.maps,
        next_generation: replay.max_generation + 1,
        recovered,
        end_lsn: summary.end_lsn,
    })
}

/// The in-memory state over the loaded catalog and maps: the segment table from the live
/// blocks, the dataset handles, and each family's block count.
fn rebuild_state(catalog: Catalog, mut maps: Forest, geometry: Geometry) -> MetaState {
    // Trees dropped by replayed deletions and restores still name their blocks; they are
    // garbage, so they go now, before live space is counted (reclaimed later, they would
    // be taken off accounts that never counted them).
    maps.reclaim_all();
    let live = maps.live_blocks();
    let alloc = SegmentAllocator::rebuild(geometry, live.iter().map(|(phys, _)| *phys));
    let mut state = MetaState {
        catalog,
        maps,
        alloc,
        pools: HashMap::new(),
        volumes: HashMap::new(),
        family_accounts: HashMap::new(),
        children: HashMap::new(),
    };
    rebuild_handles(&mut state);
    let mut per_family: HashMap<u32, u64> = HashMap::new();
    for (_, family) in &live {
        *per_family.entry(*family).or_default() += 1;
    }
    for (family, blocks) in per_family {
        if let Some(account) = state.family_accounts.get(&family) {
            account.add(blocks);
        }
    }
    state
}
