//! Fault injection and simulated volatile write caches, for tests and hardware-in-the-loop
//! rigs.
//!
//! What it promises:
//!
//! - **Off costs one branch.** Every [`Device`](super::Device) carries a [`DeviceFaults`];
//!   while it has no rule, no write cache and no power cut is under way, the ring checks one
//!   relaxed atomic flag per request and goes on.
//! - **Rules.** A [`FaultRule`] names a device, an operation (read, write, fsync), what
//!   happens ([`FaultEffect`]: EIO, a latency spike, a stall of the whole device, a torn
//!   write) and when ([`FaultTrigger`]: the Nth matching operation after the rule was added,
//!   or each one with a probability drawn from the rule's seed). A torn write lands only a
//!   prefix of its 512-byte sectors and completes with EIO.
//! - **Replayable.** A rule's decisions depend only on its seed and on the sequence of
//!   operations it sees, so the same workload with the same seed fires the same faults. Every
//!   fault that fires is logged ([`FaultPlane::log`], and one line on stderr).
//! - **Volatile write cache.** A device given a cache (`write_cache = "64M"` in the model)
//!   keeps, for every write it acknowledged since its last flush, the bytes it replaced and
//!   the bytes it wrote. A flush (`Sync`) makes every write that completed before the flush
//!   was issued durable; a full cache retires its oldest completed writes (a real drive
//!   destages them on its own).
//! - **Power cut.** [`FaultPlane::power_cut`] stops every device from starting new
//!   operations, lets the kernel finish those in flight, then on every cached device keeps a
//!   random subset of the cached writes (from the seed), tears one of them, undoes the rest,
//!   syncs the files and kills the process with SIGKILL: no clean-up runs, exactly as if the
//!   power went. A restart must recover as after a real power loss.
//!
//! What it assumes: writes that overlap and run at the same moment on one cached device are
//! recorded in the order their submissions reached the cache (the node writes redirect-on-
//! write, so this does not happen on its data path). Files outside the devices (the event log,
//! the user store) are not covered by the simulation: a power cut leaves them as written.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use crate::hw::faults::{FaultEffect, FaultOp, FaultSpec, FaultTrigger};

/// Size of the sectors a torn write is cut at.
pub const SECTOR: usize = 512;
/// Fired faults the plane remembers (oldest dropped first).
const LOG_CAPACITY: usize = 10_000;
/// How long a power cut lets the kernel finish operations already handed to it.
const POWER_CUT_DRAIN: Duration = Duration::from_millis(200);

/// An installed rule with its counters.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    pub id: u64,
    pub spec: FaultSpec,
    /// Matching operations seen so far.
    pub matched: u64,
    /// Times it fired.
    pub fired: u64,
}

/// One fault that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredFault {
    pub rule: u64,
    pub device: String,
    pub op: FaultOp,
    /// The rule's count of matching operations when it fired (1-based).
    pub sequence: u64,
    pub offset: u64,
    pub len: u64,
    pub effect: String,
}

/// What the ring must do with one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Submit it.
    Proceed {
        /// Do not report it complete before this time.
        not_before: Option<Instant>,
        /// For a write on a cached device: its entry in the cache.
        cache_seq: Option<u64>,
        /// For a sync on a cached device: the completion mark it covers.
        sync_mark: Option<u64>,
    },
    /// Fail it with EIO without submitting it (a torn write's prefix has already landed).
    Fail,
}

/// A small deterministic generator (SplitMix64): the same seed, the same sequence.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// A random seed for rules and power cuts given none.
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return crate::clock::now_nanos() ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(bytes)
}

struct RuleState {
    rule: FaultRule,
    rng: SeededRng,
}

/// One write a device's volatile cache holds.
struct CachedWrite {
    seq: u64,
    offset: u64,
    /// What the write replaced.
    old: Vec<u8>,
    /// What it wrote.
    new: Vec<u8>,
    /// Set when the write completed: the cache's completion counter at that moment.
    completed: Option<u64>,
}

/// A device's simulated volatile write cache.
struct WriteCache {
    capacity: u64,
    bytes: u64,
    entries: VecDeque<CachedWrite>,
    next_seq: u64,
    /// Counts completions; a sync covers the writes completed before its mark.
    completions: u64,
}

impl WriteCache {
    fn record(&mut self, file: &File, offset: u64, data: &[u8]) -> u64 {
        let mut old = vec![0u8; data.len()];
        // A read past the end of a file leaves zeros, which is what the file reads as.
        let _ = read_fully(file, offset, &mut old);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += data.len() as u64;
        self.entries.push_back(CachedWrite {
            seq,
            offset,
            old,
            new: data.to_vec(),
            completed: None,
        });
        self.retire_overflow();
        seq
    }

    /// A full cache writes its oldest completed writes to media on its own.
    fn retire_overflow(&mut self) {
        while self.bytes > self.capacity {
            match self.entries.front() {
                Some(entry) if entry.completed.is_some() => {
                    self.bytes -= entry.new.len() as u64;
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    fn completed(&mut self, seq: u64) {
        self.completions += 1;
        let mark = self.completions;
        // Entries stay in sequence order (pushed at the back, retired from the front).
        if let Ok(at) = self.entries.binary_search_by_key(&seq, |e| e.seq) {
            self.entries[at].completed = Some(mark);
        }
        self.retire_overflow();
    }

    /// A sync issued at `mark` succeeded: every write completed before it is durable.
    fn synced(&mut self, mark: u64) {
        let mut bytes = self.bytes;
        self.entries.retain(|entry| match entry.completed {
            Some(done) if done <= mark => {
                bytes -= entry.new.len() as u64;
                false
            }
            _ => true,
        });
        self.bytes = bytes;
    }

    /// The power cut on this device: writes the file back to what survives. Returns what it
    /// did, for the log.
    fn cut(&mut self, file: &File, rng: &mut SeededRng) -> std::io::Result<String> {
        let count = self.entries.len();
        if count == 0 {
            return Ok("cache empty".to_string());
        }
        let kept: Vec<bool> = (0..count).map(|_| rng.below(2) == 0).collect();
        let torn = rng.below(count as u64) as usize;
        let mut torn_sectors = None;
        for entry in self.entries.iter().rev() {
            file.write_all_at(&entry.old, entry.offset)?;
        }
        for (index, entry) in self.entries.iter().enumerate() {
            if index == torn {
                let sectors = entry.new.len() / SECTOR;
                let landed = rng.below(sectors as u64) as usize;
                file.write_all_at(&entry.new[..landed * SECTOR], entry.offset)?;
                torn_sectors = Some((landed, sectors));
            } else if kept[index] {
                file.write_all_at(&entry.new, entry.offset)?;
            }
        }
        file.sync_data()?;
        let persisted = kept
            .iter()
            .enumerate()
            .filter(|(i, k)| **k && *i != torn)
            .count();
        let (landed, sectors) = torn_sectors.unwrap_or((0, 0));
        Ok(format!(
            "{count} cached writes: {persisted} persisted, 1 torn ({landed} of {sectors} sectors), {} lost",
            count - persisted - 1
        ))
    }
}

fn read_fully(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One device's faults: its rules, its stall, its write cache.
pub struct DeviceFaults {
    name: String,
    /// True while anything here needs the ring's attention: the one branch paid per request.
    active: AtomicBool,
    rules: Mutex<Vec<RuleState>>,
    stalled_until: Mutex<Option<Instant>>,
    cache: Option<Mutex<WriteCache>>,
    /// A second descriptor on the device without O_DIRECT, for torn writes (any length),
    /// the bytes a cached write replaces and the power cut's undo.
    raw: Option<File>,
    plane: Option<Arc<PlaneShared>>,
}

impl std::fmt::Debug for DeviceFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFaults")
            .field("name", &self.name)
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

impl DeviceFaults {
    /// Faults of a device that belongs to no plane (never active).
    pub(crate) fn detached(name: String) -> DeviceFaults {
        DeviceFaults {
            name,
            active: AtomicBool::new(false),
            rules: Mutex::new(Vec::new()),
            stalled_until: Mutex::new(None),
            cache: None,
            raw: None,
            plane: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the ring must ask [`DeviceFaults::verdict`] (one relaxed load).
    #[inline(always)]
    pub(crate) fn active(&self) -> bool {
        // A build for measuring what injection costs while off compiles the branch out.
        if cfg!(feature = "without-fault-injection") {
            return false;
        }
        self.active.load(Ordering::Relaxed)
    }

    fn refresh_active(&self, rules: &[RuleState]) {
        let cutting = self
            .plane
            .as_ref()
            .is_some_and(|p| p.cutting.load(Ordering::Acquire));
        let on = !rules.is_empty() || self.cache.is_some() || cutting;
        self.active.store(on, Ordering::Relaxed);
    }

    /// Decides what happens to one operation (called once per operation, before its first
    /// submission) of `len` bytes at `offset`; `data` is a write's buffer.
    pub(crate) fn verdict(
        &self,
        op: FaultOp,
        offset: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Verdict {
        if let Some(plane) = &self.plane {
            plane.wait_while_cutting();
        }
        let mut not_before = None;
        let mut outcome: Option<Verdict> = None;
        {
            let mut rules = self.rules.lock();
            for state in rules.iter_mut().filter(|s| s.rule.spec.op == op) {
                state.rule.matched += 1;
                let fires = match state.rule.spec.trigger {
                    FaultTrigger::Nth(n) => state.rule.matched == n,
                    FaultTrigger::Probability(p) => state.rng.unit() < p,
                };
                if !fires {
                    continue;
                }
                state.rule.fired += 1;
                let effect = state.rule.spec.effect;
                match effect {
                    FaultEffect::Eio => outcome = outcome.or(Some(Verdict::Fail)),
                    FaultEffect::Tear if outcome.is_none() => {
                        let sectors = len as usize / SECTOR;
                        let landed = state.rng.below(sectors as u64) as usize;
                        if let Some(data) = data {
                            self.land_prefix(offset, &data[..landed * SECTOR]);
                        }
                        outcome = Some(Verdict::Fail);
                    }
                    FaultEffect::Tear => {}
                    FaultEffect::DelayMs(ms) => {
                        let at = Instant::now() + Duration::from_millis(ms);
                        not_before = Some(not_before.map_or(at, |b: Instant| b.max(at)));
                    }
                    FaultEffect::StallMs(ms) => {
                        let until = Instant::now() + Duration::from_millis(ms);
                        let mut stalled = self.stalled_until.lock();
                        *stalled = Some(stalled.map_or(until, |s| s.max(until)));
                    }
                }
                if let Some(plane) = &self.plane {
                    plane.record(FiredFault {
                        rule: state.rule.id,
                        device: self.name.clone(),
                        op,
                        sequence: state.rule.matched,
                        offset,
                        len,
                        effect: effect.describe(),
                    });
                }
            }
        }
        if let Some(until) = *self.stalled_until.lock()
            && until > Instant::now()
        {
            not_before = Some(not_before.map_or(until, |b| b.max(until)));
        }
        if let Some(verdict) = outcome {
            return verdict;
        }
        let (cache_seq, sync_mark) = match (&self.cache, &self.raw, op, data) {
            (Some(cache), Some(raw), FaultOp::Write, Some(data)) => {
                (Some(cache.lock().record(raw, offset, data)), None)
            }
            (Some(cache), _, FaultOp::Fsync, _) => (None, Some(cache.lock().completions)),
            _ => (None, None),
        };
        Verdict::Proceed {
            not_before,
            cache_seq,
            sync_mark,
        }
    }

    /// A torn write: its first sectors land (through the cache, which may lose them
    /// like any write), the rest never does.
    fn land_prefix(&self, offset: u64, prefix: &[u8]) {
        let Some(raw) = &self.raw else { return };
        if prefix.is_empty() {
            return;
        }
        match &self.cache {
            Some(cache) => {
                let mut cache = cache.lock();
                let seq = cache.record(raw, offset, prefix);
                let _ = raw.write_all_at(prefix, offset);
                cache.completed(seq);
            }
            None => {
                let _ = raw.write_all_at(prefix, offset);
            }
        }
    }

    /// A cached write finished (successfully or not).
    pub(crate) fn write_finished(&self, seq: u64) {
        if let Some(cache) = &self.cache {
            cache.lock().completed(seq);
        }
    }

    /// A sync issued at `mark` succeeded.
    pub(crate) fn sync_succeeded(&self, mark: u64) {
        if let Some(cache) = &self.cache {
            cache.lock().synced(mark);
        }
    }

    /// Bytes the write cache holds that a power cut could lose.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.lock().bytes)
    }
}

/// What every device of a plane shares.
struct PlaneShared {
    cutting: AtomicBool,
    log: Mutex<VecDeque<FiredFault>>,
    fired_total: AtomicU64,
}

impl PlaneShared {
    fn record(&self, fault: FiredFault) {
        crate::say!(
            "troika: fault injected: {} {} #{} at offset {} ({} bytes): {} (rule {})",
            fault.device,
            fault.op.name(),
            fault.sequence,
            fault.offset,
            fault.len,
            fault.effect,
            fault.rule
        );
        self.fired_total.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock();
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(fault);
    }

    /// A power cut is under way: no new operation starts, ever.
    fn wait_while_cutting(&self) {
        while self.cutting.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Why a fault request was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("no device named {0:?} (the hardware model's device names: {1})")]
    UnknownDevice(String, String),
    #[error("{0}")]
    Invalid(String),
    #[error("no fault rule with id {0}")]
    UnknownRule(u64),
}

/// The node's fault plane: every device's faults, the rules' ids, the log of fired faults.
pub struct FaultPlane {
    shared: Arc<PlaneShared>,
    devices: Mutex<Vec<Arc<DeviceFaults>>>,
    next_rule: AtomicU64,
}

impl Default for FaultPlane {
    fn default() -> Self {
        FaultPlane::new()
    }
}

impl FaultPlane {
    pub fn new() -> FaultPlane {
        FaultPlane {
            shared: Arc::new(PlaneShared {
                cutting: AtomicBool::new(false),
                log: Mutex::new(VecDeque::new()),
                fired_total: AtomicU64::new(0),
            }),
            devices: Mutex::new(Vec::new()),
            next_rule: AtomicU64::new(1),
        }
    }

    /// Makes the faults of the device `name` at `path`, with a volatile write cache of
    /// `write_cache` bytes (0 for none). The device opens with them
    /// ([`Device::with_faults`](super::Device::with_faults)). A device attached under a
    /// name already taken (a drive's replacement) takes the name over, with no rules: rules
    /// and stalls act on the device now in the slot.
    pub fn attach(
        &self,
        name: &str,
        path: &Path,
        write_cache: u64,
    ) -> std::io::Result<Arc<DeviceFaults>> {
        let raw = File::options().read(true).write(true).open(path)?;
        let cache = (write_cache > 0).then(|| {
            Mutex::new(WriteCache {
                capacity: write_cache,
                bytes: 0,
                entries: VecDeque::new(),
                next_seq: 0,
                completions: 0,
            })
        });
        let faults = Arc::new(DeviceFaults {
            name: name.to_string(),
            active: AtomicBool::new(write_cache > 0),
            rules: Mutex::new(Vec::new()),
            stalled_until: Mutex::new(None),
            cache,
            raw: Some(raw),
            plane: Some(self.shared.clone()),
        });
        let mut devices = self.devices.lock();
        devices.retain(|device| device.name != name);
        devices.push(faults.clone());
        Ok(faults)
    }

    fn device(&self, name: &str) -> Result<Arc<DeviceFaults>, FaultError> {
        let devices = self.devices.lock();
        devices
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
                FaultError::UnknownDevice(name.to_string(), names.join(", "))
            })
    }

    /// The device names, in the order attached.
    pub fn device_names(&self) -> Vec<String> {
        self.devices.lock().iter().map(|d| d.name.clone()).collect()
    }

    /// Installs a rule; returns it with its id.
    pub fn inject(&self, spec: FaultSpec) -> Result<FaultRule, FaultError> {
        spec.validate().map_err(FaultError::Invalid)?;
        let device = self.device(&spec.device)?;
        let rule = FaultRule {
            id: self.next_rule.fetch_add(1, Ordering::Relaxed),
            spec: spec.clone(),
            matched: 0,
            fired: 0,
        };
        let mut rules = device.rules.lock();
        rules.push(RuleState {
            rule: rule.clone(),
            rng: SeededRng::new(spec.seed),
        });
        device.refresh_active(&rules);
        Ok(rule)
    }

    /// Every installed rule with its counters, by id.
    pub fn rules(&self) -> Vec<FaultRule> {
        let mut all: Vec<FaultRule> = self
            .devices
            .lock()
            .iter()
            .flat_map(|d| {
                d.rules
                    .lock()
                    .iter()
                    .map(|s| s.rule.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|r| r.id);
        all
    }

    /// Removes one rule.
    pub fn remove(&self, id: u64) -> Result<FaultRule, FaultError> {
        for device in self.devices.lock().iter() {
            let mut rules = device.rules.lock();
            if let Some(at) = rules.iter().position(|s| s.rule.id == id) {
                let removed = rules.remove(at).rule;
                device.refresh_active(&rules);
                return Ok(removed);
            }
        }
        Err(FaultError::UnknownRule(id))
    }

    /// Removes every rule and ends every stall; returns how many rules there were.
    pub fn clear(&self) -> usize {
        let mut count = 0;
        for device in self.devices.lock().iter() {
            let mut rules = device.rules.lock();
            count += rules.len();
            rules.clear();
            *device.stalled_until.lock() = None;
            device.refresh_active(&rules);
        }
        count
    }

    /// The faults that fired, oldest first (the newest 10,000).
    pub fn log(&self) -> Vec<FiredFault> {
        self.shared.log.lock().iter().cloned().collect()
    }

    /// Faults fired since start.
    pub fn fired_total(&self) -> u64 {
        self.shared.fired_total.load(Ordering::Relaxed)
    }

    /// Bytes held in the devices' volatile caches, per device name.
    pub fn cached_bytes(&self) -> Vec<(String, u64)> {
        self.devices
            .lock()
            .iter()
            .map(|d| (d.name.clone(), d.cached_bytes()))
            .collect()
    }

    /// Cuts the power: see the module doc. Never returns.
    pub fn power_cut(&self, seed: u64) -> ! {
        self.shared.cutting.store(true, Ordering::Release);
        for device in self.devices.lock().iter() {
            device.active.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(POWER_CUT_DRAIN);
        for line in self.lose_volatile_writes(seed) {
            crate::say!("troika: power cut: {line}");
        }
        crate::say!("troika: power cut (seed {seed}): the process ends now, with no clean-up");
        // SAFETY: kill on our own pid with SIGKILL, then _exit should it return; neither
        // touches memory of ours.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
            libc::_exit(137)
        }
    }

    /// What a power cut does to the devices' caches, without ending the process: on every
    /// cached device a random subset of the cached writes (from `seed`) persists, one is
    /// torn, the rest are undone. Callers make sure no operation runs meanwhile. Returns a
    /// line per cached device.
    pub fn lose_volatile_writes(&self, seed: u64) -> Vec<String> {
        let mut rng = SeededRng::new(seed);
        let mut report = Vec::new();
        for device in self.devices.lock().iter() {
            if let (Some(cache), Some(raw)) = (&device.cache, &device.raw) {
                let mut cache = cache.lock();
                let line = match cache.cut(raw, &mut rng) {
                    Ok(what) => format!("{}: {what}", device.name),
                    Err(e) => format!("{}: could not write the surviving state: {e}", device.name),
                };
                cache.entries.clear();
                cache.bytes = 0;
                report.push(line);
            }
        }
        report
    }
}

#[cfg(test)]
#[path = "faults_tests.rs"]
mod tests;
