//! The node: opens the devices the hardware model names, recovers the metadata, starts the
//! cache, the controllers and the ports, serves until SIGINT/SIGTERM, and shuts down
//! cleanly (destage, checkpoint, close). Also the `Management` implementation the REST
//! server calls.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cache::Cache;
use crate::controller::Controllers;
use crate::hw::HwModel;
use crate::io::{self, Device};
use crate::layout::Array;
use crate::meta::{MetaError, MetaStore, PoolRecord, VolumeRecord};
use crate::mgmt::{
    self, Management, MgmtError, PoolCreate, PoolInfo, SystemInfo, VolumeCreate, VolumeInfo,
};
use crate::target::nbd::{self, NbdConfig, NbdListener};
use crate::types::BLOCK_SIZE;

/// Where the node listens.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub nbd_tcp: Option<SocketAddr>,
}

/// A running node.
pub struct Node {
    cache: Arc<Cache>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
    _lock: File,
}

impl Node {
    /// Opens and recovers the node and starts serving.
    pub fn start(hw: HwModel, options: &NodeOptions) -> anyhow::Result<Node> {
        let data_dir = &options.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let lock = lock_data_dir(data_dir)?;
        io::probe().map_err(anyhow::Error::msg)?;

        let ssd_spec = &hw.ssds[0];
        let ssd = Device::open(
            &hw.resolve_path(ssd_spec, data_dir),
            ssd_spec.size,
            ssd_spec.latency,
        )
        .with_context(|| format!("cannot open the vault SSD {:?}", ssd_spec.name))?;
        let mut drives = Vec::new();
        for spec in &hw.nlsas {
            drives.push(
                Device::open(&hw.resolve_path(spec, data_dir), spec.size, spec.latency)
                    .with_context(|| format!("cannot open NL-SAS device {:?}", spec.name))?,
            );
        }
        let array = Array::new(
            drives,
            hw.stripe.data,
            hw.stripe.unit,
            hw.stripe.rows_per_segment,
        );
        if array.geometry().segments() < 16 {
            bail!(
                "the NL-SAS devices hold only {} segments; give them more space or fewer rows_per_segment (at least 16 segments)",
                array.geometry().segments()
            );
        }
        let (meta, recovered, report) =
            MetaStore::open(ssd, array).map_err(|err| anyhow::anyhow!("{err}"))?;
        if report.formatted {
            eprintln!(
                "troika: formatted a new node (serial {}) in {}",
                meta.serial(),
                data_dir.display()
            );
        } else {
            eprintln!(
                "troika: recovered from media in {} ms: replayed {} journal batches ({} records), {} flushed blocks returned to cache",
                report.elapsed.as_millis(),
                report.replayed_batches,
                report.replayed_records,
                report.recovered_blocks
            );
        }
        let meta = Arc::new(meta);
        let dram = hw.dram_per_controller * hw.controllers as u64;
        let cache = Cache::start(meta.clone(), dram, recovered);
        let controllers = Controllers::new(cache.clone(), hw.controllers);
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut sockets = Vec::new();

        let nbd_socket = data_dir.join("nbd.sock");
        let _ = std::fs::remove_file(&nbd_socket);
        let unix = UnixListener::bind(&nbd_socket)
            .with_context(|| format!("cannot listen on {}", nbd_socket.display()))?;
        sockets.push(nbd_socket);
        threads.push(nbd::spawn_server(
            NbdListener::Unix(unix),
            controllers.clone(),
            NbdConfig::default(),
            shutdown.clone(),
        ));
        if let Some(address) = options.nbd_tcp {
            let tcp = TcpListener::bind(address).with_context(|| {
                format!("cannot listen for NBD on {address}; is another server using the port?")
            })?;
            threads.push(nbd::spawn_server(
                NbdListener::Tcp(tcp),
                controllers.clone(),
                NbdConfig::default(),
                shutdown.clone(),
            ));
        }

        let mgmt_socket = data_dir.join("troika.sock");
        let _ = std::fs::remove_file(&mgmt_socket);
        let listener = UnixListener::bind(&mgmt_socket)
            .with_context(|| format!("cannot listen on {}", mgmt_socket.display()))?;
        sockets.push(mgmt_socket);
        let api = Arc::new(NodeApi {
            hw,
            meta,
            cache: cache.clone(),
        });
        threads.push(mgmt::server::spawn_server(listener, api, shutdown.clone()));
        Ok(Node {
            cache,
            shutdown,
            threads,
            sockets,
            _lock: lock,
        })
    }

    /// Serves until SIGINT or SIGTERM, then shuts down cleanly.
    pub fn run_until_signal(self) -> anyhow::Result<()> {
        let signalled = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, signalled.clone())
                .context("cannot install signal handlers")?;
        }
        while !signalled.load(Ordering::Acquire) {
            if self.cache.meta().has_failed() {
                eprintln!(
                    "troika: a durability error stopped the node; restart it to recover from media"
                );
                std::process::exit(2);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "troika: shutting down: closing ports, destaging cached data, writing a checkpoint"
        );
        self.stop()
    }

    /// Closes the ports, destages everything and checkpoints.
    pub fn stop(self) -> anyhow::Result<()> {
        self.shutdown.store(true, Ordering::Release);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.cache
            .flush()
            .map_err(|err| anyhow::anyhow!("final flush failed: {err}"))?;
        self.cache
            .shutdown()
            .map_err(|err| anyhow::anyhow!("shutdown failed: {err}"))?;
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
        eprintln!("troika: stopped cleanly");
        Ok(())
    }
}

/// Takes an exclusive lock on the data directory so two nodes never share it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join("troika.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another troika node is already serving {} (pid {}); stop it first or use another --data directory",
            data_dir.display(),
            holder.trim()
        );
    }
    let _ = file.set_len(0);
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    Ok(file)
}

/// The management API over the live node.
struct NodeApi {
    hw: HwModel,
    meta: Arc<MetaStore>,
    cache: Arc<Cache>,
}

fn mgmt_error(err: MetaError) -> MgmtError {
    match err {
        MetaError::PoolNotFound(what) => MgmtError::pool_not_found(what),
        MetaError::VolumeNotFound(what) => MgmtError::volume_not_found(what),
        MetaError::NameConflict { kind, name } => MgmtError::name_conflict(kind, &name),
        MetaError::PoolNotEmpty(name) => MgmtError::new(
            "POOL_NOT_EMPTY",
            409,
            format!("pool {name:?} still holds volumes; delete them first"),
        ),
        MetaError::Capacity(message) => MgmtError::new("POOL_CAPACITY_EXCEEDED", 409, message),
        MetaError::Invalid(message) => MgmtError::bad_request(message),
        other @ (MetaError::Journal(_) | MetaError::Media(_)) => {
            MgmtError::new("INTERNAL_ERROR", 500, other.to_string())
        }
    }
}

impl NodeApi {
    fn pool_info(&self, pool: &PoolRecord) -> PoolInfo {
        let state = self.meta.state();
        let used = state
            .pools
            .get(&pool.id)
            .map_or(0, |usage| usage.used_bytes());
        let volumes: Vec<&VolumeRecord> = state
            .catalog
            .volumes
            .values()
            .filter(|v| v.pool_id == pool.id)
            .collect();
        let virtual_used: u64 = volumes.iter().map(|v| v.size).sum();
        let state_name = if used >= pool.physical_capacity {
            "LOCKED"
        } else {
            "NORMAL"
        };
        PoolInfo {
            id: pool.id,
            name: pool.name.clone(),
            physical_capacity: pool.physical_capacity,
            virtual_capacity: pool.virtual_capacity,
            allocated_physical_space: used,
            free_physical_space: pool.physical_capacity.saturating_sub(used),
            free_virtual_space: pool.virtual_capacity.saturating_sub(virtual_used),
            allocated_virtual_space: virtual_used,
            volumes_count: volumes.len() as u64,
            state: state_name.into(),
            created_at: pool.created_at,
        }
    }

    fn volume_info(&self, volume: &VolumeRecord) -> VolumeInfo {
        let state = self.meta.state();
        let mapped = state.maps.get(&volume.id).map_or(0, |map| map.len()) * BLOCK_SIZE as u64;
        let pool_name = state
            .catalog
            .pools
            .get(&volume.pool_id)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        VolumeInfo {
            id: volume.id,
            name: volume.name.clone(),
            size: volume.size,
            pool_id: volume.pool_id,
            pool_name,
            provtype: "THIN".into(),
            volume_type: "MASTER".into(),
            write_protected: false,
            used: mapped,
            allocated: mapped,
            serial: format!(
                "6{:015x}{:016x}",
                self.meta.serial() & 0xFFF_FFFF_FFFF_FFFF,
                volume.id
            ),
            created_at: volume.created_at,
        }
    }

    fn find_pool(&self, id: u32) -> Result<PoolRecord, MgmtError> {
        self.meta
            .state()
            .catalog
            .pools
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::pool_not_found(id))
    }

    fn find_volume(&self, id: u32) -> Result<VolumeRecord, MgmtError> {
        self.meta
            .state()
            .catalog
            .volumes
            .get(&id)
            .cloned()
            .ok_or_else(|| MgmtError::volume_not_found(id))
    }
}

impl Management for NodeApi {
    fn system(&self) -> SystemInfo {
        let promised = self
            .meta
            .state()
            .catalog
            .pools
            .values()
            .map(|p| p.physical_capacity)
            .sum();
        SystemInfo {
            name: self.hw.name.clone(),
            serial: self.meta.serial(),
            version: env!("CARGO_PKG_VERSION").into(),
            model: format!(
                "troika {} controllers, {}+2 x {} NL-SAS",
                self.hw.controllers,
                self.hw.stripe.data,
                self.hw.nlsas.len()
            ),
            state: if self.meta.has_failed() {
                "FAILED".into()
            } else {
                "ACTIVE".into()
            },
            physical_capacity: self.meta.usable_blocks() * BLOCK_SIZE as u64,
            allocated_physical_capacity: promised,
        }
    }

    fn create_pool(&self, request: PoolCreate) -> Result<PoolInfo, MgmtError> {
        let virtual_capacity = request
            .virtual_capacity
            .unwrap_or(request.physical_capacity);
        let pool = self
            .meta
            .create_pool(&request.name, request.physical_capacity, virtual_capacity)
            .map_err(|err| match err {
                MetaError::Capacity(message) => {
                    MgmtError::new("SYSTEM_CAPACITY_EXCEEDED", 409, message)
                }
                other => mgmt_error(other),
            })?;
        Ok(self.pool_info(&pool))
    }

    fn pools(&self) -> Vec<PoolInfo> {
        let pools: Vec<PoolRecord> = self.meta.state().catalog.pools.values().cloned().collect();
        pools.iter().map(|pool| self.pool_info(pool)).collect()
    }

    fn pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        Ok(self.pool_info(&self.find_pool(id)?))
    }

    fn delete_pool(&self, id: u32) -> Result<PoolInfo, MgmtError> {
        let info = self.pool(id)?;
        self.meta.delete_pool(id).map_err(mgmt_error)?;
        Ok(info)
    }

    fn create_volume(&self, request: VolumeCreate) -> Result<VolumeInfo, MgmtError> {
        match request
            .provtype
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("THIN") => {}
            Some(other) => {
                return Err(MgmtError::bad_request(format!(
                    "provtype {other:?} is not supported by this release; use THIN"
                )));
            }
        }
        let volume = self
            .meta
            .create_volume(&request.name, request.pool_id, request.size)
            .map_err(mgmt_error)?;
        Ok(self.volume_info(&volume))
    }

    fn volumes(&self) -> Vec<VolumeInfo> {
        let volumes: Vec<VolumeRecord> = self
            .meta
            .state()
            .catalog
            .volumes
            .values()
            .cloned()
            .collect();
        volumes
            .iter()
            .map(|volume| self.volume_info(volume))
            .collect()
    }

    fn volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        Ok(self.volume_info(&self.find_volume(id)?))
    }

    fn resize_volume(&self, id: u32, new_size: u64) -> Result<VolumeInfo, MgmtError> {
        let before = self.find_volume(id)?;
        let volume = self.meta.resize_volume(id, new_size).map_err(mgmt_error)?;
        if new_size < before.size {
            let block = BLOCK_SIZE as u64;
            self.cache
                .discard_blocks(id, new_size / block, before.size / block);
        }
        Ok(self.volume_info(&volume))
    }

    fn delete_volume(&self, id: u32) -> Result<VolumeInfo, MgmtError> {
        let info = self.volume(id)?;
        if let Some(handle) = self.meta.state().volumes.get(&id) {
            handle.deleted.store(true, Ordering::Release);
        }
        self.cache
            .discard_blocks(id, 0, u64::MAX / BLOCK_SIZE as u64);
        self.meta.delete_volume(id).map_err(mgmt_error)?;
        Ok(info)
    }

    fn metrics_text(&self) -> String {
        metrics_text(&self.meta, &self.cache)
    }
}

fn metrics_text(meta: &MetaStore, cache: &Cache) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    let load = |atomic: &std::sync::atomic::AtomicU64| atomic.load(Ordering::Relaxed);
    counter(
        "troika_checksum_repairs_total",
        "Blocks that failed their checksum and were rebuilt from parity.",
        "counter",
        load(&meta.counters.checksum_repairs),
    );
    counter(
        "troika_unrecoverable_reads_total",
        "Blocks that failed their checksum and could not be rebuilt.",
        "counter",
        load(&meta.counters.unrecoverable_reads),
    );
    counter(
        "troika_checkpoints_total",
        "Metadata checkpoints written.",
        "counter",
        load(&meta.counters.checkpoints),
    );
    counter(
        "troika_media_blocks_written_total",
        "User blocks written to the NL-SAS array (destage and cleaning).",
        "counter",
        load(&meta.counters.media_blocks_written),
    );
    counter(
        "troika_media_rows_written_total",
        "Whole rows (stripes with P and Q) written to the NL-SAS array.",
        "counter",
        load(&meta.counters.media_rows_written),
    );
    counter(
        "troika_host_blocks_written_total",
        "4 KiB blocks written by hosts into the cache.",
        "counter",
        load(&cache.counters.blocks_written),
    );
    counter(
        "troika_cache_read_hits_total",
        "Blocks read from the DRAM cache.",
        "counter",
        load(&cache.counters.read_hits),
    );
    counter(
        "troika_cache_read_misses_total",
        "Blocks read from the array.",
        "counter",
        load(&cache.counters.read_misses),
    );
    counter(
        "troika_cache_destaged_blocks_total",
        "Dirty blocks destaged.",
        "counter",
        load(&cache.counters.blocks_destaged),
    );
    counter(
        "troika_cache_vaulted_blocks_total",
        "Dirty blocks copied to the SSD vault by flushes.",
        "counter",
        load(&cache.counters.blocks_vaulted),
    );
    counter(
        "troika_cleaner_relocated_blocks_total",
        "Live blocks moved by segment cleaning.",
        "counter",
        load(&cache.counters.blocks_relocated),
    );
    counter(
        "troika_flushes_total",
        "Flush requests served.",
        "counter",
        load(&cache.counters.flushes),
    );
    counter(
        "troika_cache_dirty_bytes",
        "Bytes written to cache and not yet destaged.",
        "gauge",
        cache.dirty_bytes(),
    );
    counter(
        "troika_cache_capacity_bytes",
        "DRAM cache size.",
        "gauge",
        cache.capacity_bytes(),
    );
    counter(
        "troika_journal_used_bytes",
        "Journal bytes still needed by recovery.",
        "gauge",
        meta.journal().used(),
    );
    let state = meta.state();
    counter(
        "troika_segments_free",
        "Free segments on the array.",
        "gauge",
        state.alloc.free_segments(),
    );
    let _ = writeln!(
        out,
        "# HELP troika_pool_used_bytes Physical bytes used in the pool.\n# TYPE troika_pool_used_bytes gauge"
    );
    for (id, usage) in state.pools.iter() {
        let _ = writeln!(
            out,
            "troika_pool_used_bytes{{pool=\"{}\",id=\"{id}\"}} {}",
            usage.name,
            usage.used_bytes()
        );
    }
    out
}
