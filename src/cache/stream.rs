//! Sequential-stream detection for the SSD read cache: a read that continues a stream of
//! one volume beyond the cutoff is a scan, and its blocks are not worth SSD space.
//!
//! The detector remembers a few streams per group of volumes (volume, the furthest byte
//! read, bytes so far), replacing the least recently used. A read that starts near where a
//! stream has reached (within `NEAR` times its own length either side: a host with several
//! reads in flight sends them slightly out of order) extends it; any other read starts a new one. A single
//! read at least `cutoff` long is a stream by itself. The groups are locked apart (by a hash
//! of the volume), so no lock is shared by every read; each is one short lock, never held
//! over I/O.

use parking_lot::Mutex;

/// How many streams each group tracks at once.
const STREAMS: usize = 8;
/// Groups of volumes, each with its own lock.
const GROUPS: usize = 16;
/// How far from a stream's front a read may start and still continue it, in multiples of
/// its own length (small random reads stay far apart; a few large ones in flight do not).
const NEAR: u64 = 4;

#[derive(Clone, Copy, Default)]
struct Stream {
    volume: u32,
    next: u64,
    run: u64,
    last_use: u64,
}

type Group = Mutex<([Stream; STREAMS], u64)>;

/// See the module doc.
pub struct StreamDetector {
    groups: Box<[Group]>,
}

impl Default for StreamDetector {
    fn default() -> Self {
        StreamDetector {
            groups: (0..GROUPS)
                .map(|_| Mutex::new(([Stream::default(); STREAMS], 0)))
                .collect(),
        }
    }
}

impl StreamDetector {
    /// Records a read of `len` bytes at `offset` of `volume`; true when it belongs to a
    /// stream at least `cutoff` bytes long (including this read).
    pub fn sequential(&self, volume: u32, offset: u64, len: u64, cutoff: u64) -> bool {
        let group = (volume as usize).wrapping_mul(0x9E37_79B9) >> 7;
        let mut guard = self.groups[group % GROUPS].lock();
        let (streams, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        let found = streams.iter().position(|s| {
            s.last_use != 0
                && s.volume == volume
                && offset.abs_diff(s.next) <= NEAR.saturating_mul(len)
        });
        let index = found.unwrap_or_else(|| {
            let oldest = (0..STREAMS)
                .min_by_key(|&i| streams[i].last_use)
                .unwrap_or(0);
            streams[oldest] = Stream {
                volume,
                next: offset,
                run: 0,
                last_use: now,
            };
            oldest
        });
        let stream = &mut streams[index];
        stream.run = stream.run.saturating_add(len);
        stream.next = stream.next.max(offset.saturating_add(len));
        stream.last_use = now;
        stream.run >= cutoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_passes_the_cutoff_and_random_reads_do_not() {
        let detector = StreamDetector::default();
        let cutoff = 1 << 20;
        let mut flagged = 0;
        for i in 0..64u64 {
            if detector.sequential(1, i * 65536, 65536, cutoff) {
                flagged += 1;
            }
        }
        // 16 reads of 64K reach 1M: from the 16th on the stream is at the cutoff.
        assert_eq!(flagged, 49);
        for i in 0..64u64 {
            let offset = (i * 7919 % 1000) << 23;
            assert!(!detector.sequential(2, offset, 4096, cutoff));
        }
        // Four reads of 1M in flight at once arrive out of order: still one stream; and a
        // single read of the cutoff's length is a stream by itself.
        for round in 0..8u64 {
            for i in [1u64, 0, 3, 2] {
                let offset = (round * 4 + i) << 20;
                assert!(detector.sequential(5, offset, 1 << 20, cutoff));
            }
        }
        // Interleaved streams of two volumes are both seen.
        for i in 0..40u64 {
            detector.sequential(3, i * 65536, 65536, cutoff);
            detector.sequential(4, i * 65536, 65536, cutoff);
        }
        assert!(detector.sequential(3, 40 * 65536, 65536, cutoff));
        assert!(detector.sequential(4, 40 * 65536, 65536, cutoff));
    }
}
