//! Sequential-stream detection for the SSD read cache: a read that continues a stream of
//! one volume beyond the cutoff is a scan, and its blocks are not worth SSD space.
//!
//! The detector remembers a few streams (volume, where the next read would start, bytes so
//! far), replacing the least recently used; a read that starts where a stream left off
//! extends it, any other read starts a new one. It never blocks on I/O: one short lock.

use parking_lot::Mutex;

/// How many streams are tracked at once.
const STREAMS: usize = 16;

#[derive(Clone, Copy, Default)]
struct Stream {
    volume: u32,
    next: u64,
    run: u64,
    last_use: u64,
}

/// See the module doc.
pub struct StreamDetector {
    streams: Mutex<([Stream; STREAMS], u64)>,
}

impl Default for StreamDetector {
    fn default() -> Self {
        StreamDetector {
            streams: Mutex::new(([Stream::default(); STREAMS], 0)),
        }
    }
}

impl StreamDetector {
    /// Records a read of `len` bytes at `offset` of `volume`; true when it belongs to a
    /// stream longer than `cutoff` bytes (including this read).
    pub fn sequential(&self, volume: u32, offset: u64, len: u64, cutoff: u64) -> bool {
        let mut guard = self.streams.lock();
        let (streams, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        let found = streams
            .iter()
            .position(|s| s.last_use != 0 && s.volume == volume && s.next == offset);
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
        stream.next = offset.saturating_add(len);
        stream.last_use = now;
        stream.run > cutoff
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
        // 16 reads of 64K reach 1M; from the 17th on the stream is past the cutoff.
        assert_eq!(flagged, 48);
        for i in 0..64u64 {
            let offset = (i * 7919 % 1000) << 20;
            assert!(!detector.sequential(2, offset, 4096, cutoff));
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
