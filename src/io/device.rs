//! Devices: a regular file or a block device opened for direct I/O.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use parking_lot::Mutex;

use super::faults::DeviceFaults;
use crate::hw::LatencyModel;

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The path does not exist and no size was given to create a backing file.
    #[error(
        "device {path}: does not exist (give a size in the hardware model to create a backing file)"
    )]
    Missing { path: PathBuf },
    /// Creating or extending the backing file failed.
    #[error("device {path}: cannot create a backing file of {size} bytes: {source}")]
    Create {
        path: PathBuf,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    /// The filesystem holding the path refuses O_DIRECT.
    #[error(
        "device {path}: the filesystem does not support O_DIRECT (direct I/O); put the data directory on ext4, xfs or btrfs, or name a block device"
    )]
    NoDirectIo { path: PathBuf },
    /// Opening failed for another reason (permissions, busy device, ...).
    #[error("device {path}: cannot open for direct read/write: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is neither a regular file nor a block device.
    #[error("device {path}: not a regular file or a block device")]
    NotADevice { path: PathBuf },
    /// The size could not be read.
    #[error("device {path}: cannot read its size: {source}")]
    Size {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A file or block device opened `O_RDWR | O_DIRECT | O_CLOEXEC`, with an optional simulated
/// latency model. I/O goes through an [`IoRing`](super::IoRing).
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    size: u64,
    block_device: bool,
    latency: Option<LatencyModel>,
    /// Where the simulated head is and when it is free (only used with a latency model).
    sim: Mutex<SimState>,
    /// Injected faults and the simulated write cache (inactive unless a plane attached some).
    faults: Arc<DeviceFaults>,
}

#[derive(Debug)]
struct SimState {
    head: u64,
    busy_until: Option<Instant>,
}

impl Device {
    /// Opens `path` for direct I/O. If it does not exist and `create_size` is given, a sparse
    /// regular file of that size is created first; an existing regular file smaller than
    /// `create_size` is extended. A block device's size comes from `BLKGETSIZE64`.
    pub fn open(
        path: &Path,
        create_size: Option<u64>,
        latency: Option<LatencyModel>,
    ) -> Result<Device, DeviceError> {
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => match create_size {
                Some(size) => create_sparse(path, size)?,
                None => {
                    return Err(DeviceError::Missing {
                        path: path.to_path_buf(),
                    });
                }
            },
            Err(source) => {
                return Err(DeviceError::Open {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::EINVAL) {
                    DeviceError::NoDirectIo {
                        path: path.to_path_buf(),
                    }
                } else {
                    DeviceError::Open {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        let size_error = |source| DeviceError::Size {
            path: path.to_path_buf(),
            source,
        };
        let file_type = file.metadata().map_err(size_error)?.file_type();
        let (size, block_device) = if file_type.is_block_device() {
            (
                block_device_size(file.as_raw_fd()).map_err(size_error)?,
                true,
            )
        } else if file_type.is_file() {
            let mut size = file.metadata().map_err(size_error)?.len();
            if let Some(wanted) = create_size.filter(|&wanted| wanted > size) {
                file.set_len(wanted).map_err(|source| DeviceError::Create {
                    path: path.to_path_buf(),
                    size: wanted,
                    source,
                })?;
                size = wanted;
            }
            (size, false)
        } else {
            return Err(DeviceError::NotADevice {
                path: path.to_path_buf(),
            });
        };
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Device {
            faults: Arc::new(DeviceFaults::detached(name)),
            file,
            path: path.to_path_buf(),
            size,
            block_device,
            latency,
            sim: Mutex::new(SimState {
                head: 0,
                busy_until: None,
            }),
        })
    }

    /// The same device with the faults (rules, write cache) a
    /// [`FaultPlane`](super::FaultPlane) made for it; its name becomes theirs.
    pub fn with_faults(mut self, faults: Arc<DeviceFaults>) -> Device {
        self.faults = faults;
        self
    }

    /// A second handle on the same device (the same file, fault rules and simulated write
    /// cache) that presents only its first `len` bytes as its size. An SSD that holds both
    /// the write vault and the read cache gives the vault such a view of its head, so the
    /// vault lays itself out there and never reaches the cache's bytes at the tail.
    pub fn limited_view(&self, len: u64) -> std::io::Result<Device> {
        Ok(Device {
            file: self.file.try_clone()?,
            path: self.path.clone(),
            size: self.size.min(len),
            block_device: self.block_device,
            latency: self.latency,
            sim: Mutex::new(SimState {
                head: 0,
                busy_until: None,
            }),
            faults: self.faults.clone(),
        })
    }

    /// The device's name in the hardware model (the file stem for a device opened alone).
    pub fn name(&self) -> &str {
        self.faults.name()
    }

    pub(crate) fn faults(&self) -> &DeviceFaults {
        &self.faults
    }

    /// The path the device was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether this is a block device (rather than a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The simulated latency model, if any.
    pub fn latency(&self) -> Option<LatencyModel> {
        self.latency
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// For a device with a latency model: the earliest time an operation of `len` bytes at
    /// `offset` submitted `now` may be reported complete. Deterministic: a rotating drive
    /// serves one operation at a time (each starts when the previous one ends) and seeks in
    /// proportion to the distance from where the previous one ended; a flash device serves
    /// operations in parallel, each taking its fixed time plus transfer.
    pub(crate) fn simulated_completion(
        &self,
        now: Instant,
        offset: u64,
        len: u64,
        op: SimOp,
    ) -> Option<Instant> {
        let model = self.latency?;
        match model {
            LatencyModel::Ssd { read_us, write_us } => {
                let fixed = match op {
                    SimOp::Read => read_us,
                    SimOp::Write | SimOp::Sync => write_us,
                };
                Some(now + Duration::from_micros(fixed) + transfer_time(len, SSD_BYTES_PER_SEC))
            }
            LatencyModel::Hdd { seek_us, rpm } => {
                let mut sim = self.sim.lock();
                let half_rotation = Duration::from_micros(60_000_000 / rpm / 2);
                let service = match op {
                    // A cache flush on a drive costs about one rotation's wait.
                    SimOp::Sync => half_rotation,
                    SimOp::Read | SimOp::Write => {
                        let distance = offset.abs_diff(sim.head);
                        let seek = if self.size == 0 {
                            0
                        } else {
                            (u128::from(seek_us) * u128::from(distance.min(self.size))
                                / u128::from(self.size)) as u64
                        };
                        sim.head = offset.saturating_add(len);
                        Duration::from_micros(seek)
                            + half_rotation
                            + transfer_time(len, HDD_BYTES_PER_SEC)
                    }
                };
                let start = sim.busy_until.map_or(now, |busy| busy.max(now));
                let done = start + service;
                sim.busy_until = Some(done);
                Some(done)
            }
        }
    }
}

/// What kind of operation a simulated latency is computed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SimOp {
    Read,
    Write,
    Sync,
}

const HDD_BYTES_PER_SEC: u64 = 200_000_000;
const SSD_BYTES_PER_SEC: u64 = 2_000_000_000;

fn transfer_time(len: u64, bytes_per_sec: u64) -> Duration {
    Duration::from_nanos((u128::from(len) * 1_000_000_000 / u128::from(bytes_per_sec)) as u64)
}

fn create_sparse(path: &Path, size: u64) -> Result<(), DeviceError> {
    let create_error = |source| DeviceError::Create {
        path: path.to_path_buf(),
        size,
        source,
    };
    // Private from the first byte: a device file holds volume data.
    let file = crate::private_files::open_or_create(path, OpenOptions::new().write(true))
        .map_err(create_error)?;
    file.set_len(size).map_err(create_error)
}

/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)` in the generic ioctl encoding (x86, Arm,
/// RISC-V, s390); the libc crate does not export it.
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc64"
)))]
fn block_device_size(fd: RawFd) -> std::io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = (2 << 30) | (8 << 16) | (0x12 << 8) | 114;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes exactly one u64 through the pointer, which points to a
    // live, writable u64 on our stack; fd is an open descriptor owned by the caller.
    let rc = unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(size)
    }
}

/// On architectures with a different ioctl encoding, seek to the end instead (same answer
/// for a block device).
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc64"
))]
fn block_device_size(fd: RawFd) -> std::io::Result<u64> {
    // SAFETY: lseek only reads the descriptor number; fd is open and owned by the caller.
    let end = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
    if end < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(end as u64)
    }
}
