//! The write path: a host write split into sections, back-pressure while the owner's or
//! the mirror's DRAM is full of dirty data, and written zeroes. Each section is written
//! into its owner's and its mirror's slots by `mirror`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Cache, Route};
use crate::meta::VolumeHandle;
use crate::types::{BLOCK_SIZE, ControllerId, IoError, SECTION_SIZE};

impl Cache {
    /// One back-pressure wait: wakes the destage threads and sleeps until one signals space
    /// or `period` passes. The 120 s limit starts at the first wait (`deadline` is `None`
    /// until then), so the fast path reads no clock; past it, `stuck` is the error. A
    /// pause (ownership change) ends the wait with [`IoError::Paused`].
    pub(super) fn wait_for_space(
        &self,
        deadline: &mut Option<Instant>,
        period: Duration,
        stuck: impl FnOnce() -> IoError,
    ) -> Result<(), IoError> {
        if self.shutdown.load(Ordering::Acquire) {
            return Err(IoError::ShuttingDown);
        }
        if self.pausing() {
            return Err(IoError::Paused);
        }
        let limit = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(120));
        if Instant::now() > limit || self.meta.has_failed() {
            return Err(stuck());
        }
        self.kick_all_destagers();
        let mut guard = self.signals.lock.lock();
        self.signals.space.wait_for(&mut guard, period);
        Ok(())
    }

    /// Waits while dirty data fills the owner's or the mirror's DRAM (back-pressure).
    pub(super) fn wait_for_dirty_room(&self, route: Route) -> Result<(), IoError> {
        let full = |id: ControllerId| self.domains[id].dirty_total() >= self.dirty_limit;
        let mut deadline = None;
        while full(route.owner) || route.mirror.is_some_and(full) {
            self.wait_for_space(&mut deadline, Duration::from_millis(20), || {
                IoError::Media {
                    volume: String::new(),
                    detail: "destage made no progress for 120 s; check the NL-SAS devices".into(),
                }
            })?;
        }
        Ok(())
    }

    /// Writes `data` at byte `offset` of `volume` into its sections' owners' caches and
    /// mirrors.
    pub fn write(&self, volume: &VolumeHandle, offset: u64, data: &[u8]) -> Result<(), IoError> {
        Self::check_range(volume, offset, data.len() as u64)?;
        Self::check_writable(volume)?;
        let generation = self.meta.next_generation();
        let mut write_through = false;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let section = at / SECTION_SIZE as u64;
            let within = (at % SECTION_SIZE as u64) as usize;
            let take = (SECTION_SIZE - within).min(data.len() - done);
            let route = self.router.route((volume.id.0, section));
            self.wait_for_dirty_room(route)?;
            self.write_section(
                route,
                volume,
                section,
                within,
                &data[done..done + take],
                generation,
            )?;
            write_through |= route.mirror.is_none();
            done += take;
        }
        self.counters
            .blocks_written
            .fetch_add(data.len().div_ceil(BLOCK_SIZE) as u64, Ordering::Relaxed);
        if write_through {
            // One controller left: the vault is the second copy.
            self.flush()?;
        }
        Ok(())
    }

    /// Which blocks `first..=last` of the section starting at `base_lba` have map entries.
    pub(super) fn mapped_bits(&self, volume: u32, base_lba: u64, first: usize, last: usize) -> u16 {
        let state = self.meta.state();
        if !state.maps.contains(volume) {
            return 0;
        }
        let mut bits = 0u16;
        for block in first..=last {
            if state.maps.get(volume, base_lba + block as u64).is_some() {
                bits |= 1 << block;
            }
        }
        bits
    }

    pub(super) fn write_zero_bytes(
        &self,
        volume: &VolumeHandle,
        offset: u64,
        len: u64,
    ) -> Result<(), IoError> {
        static ZEROES: [u8; SECTION_SIZE] = [0; SECTION_SIZE];
        let mut done = 0;
        while done < len {
            let take = (len - done).min(SECTION_SIZE as u64);
            self.write(volume, offset + done, &ZEROES[..take as usize])?;
            done += take;
        }
        Ok(())
    }

    /// Zeroes a range: as a trim (no space kept), or with `no_hole` as written zeroes.
    pub fn write_zeroes(
        &self,
        volume: &VolumeHandle,
        offset: u64,
        len: u64,
        no_hole: bool,
        fast_only: bool,
    ) -> Result<(), IoError> {
        Self::check_range(volume, offset, len)?;
        if no_hole {
            if fast_only {
                return Err(IoError::NotFast);
            }
            return self.write_zero_bytes(volume, offset, len);
        }
        self.trim(volume, offset, len)
    }
}

/// Bits `first..=last` of a section mask.
pub(super) fn block_mask(first: usize, last: usize) -> u16 {
    let width = last - first + 1;
    let ones = if width >= 16 {
        u16::MAX
    } else {
        (1u16 << width) - 1
    };
    ones << first
}
