//! Block I/O traces: the request type the replay runs, and a generator of synthetic mixes
//! (Zipf at several skews, a loop a bit larger than a cache, scans through a hot set, a
//! working set that moves, and a Zipf mix with writes), deterministic from a seed, so
//! the unit tests and `troika-cache-replay` replay the very same traces.
//!
//! Block keys: a request covers the 4 KiB blocks its byte range touches; block `n` of the
//! trace's address space is key `n`. Generated keys are spread over the address space
//! (a fixed bijection), so that hot keys are not neighbours.

use std::fmt;
use std::str::FromStr;

use crate::io::faults::SeededRng;

/// The replay's block size, the array's block and checksum unit.
pub const BLOCK_BYTES: u64 = 4096;

/// One traced request, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub offset: u64,
    pub size: u32,
    pub write: bool,
}

impl Request {
    /// A one-block request for block key `block`.
    pub fn block(block: u64, write: bool) -> Request {
        Request {
            offset: block * BLOCK_BYTES,
            size: BLOCK_BYTES as u32,
            write,
        }
    }

    /// The block keys it touches (none when its size is 0).
    pub fn blocks(&self) -> std::ops::Range<u64> {
        let first = self.offset / BLOCK_BYTES;
        let end = (self.offset + u64::from(self.size)).div_ceil(BLOCK_BYTES);
        first..end.max(first)
    }
}

/// A small, fast, seedable generator: the project's SplitMix64 ([`SeededRng`]), so the
/// traces are the same on every machine and every run (the crate keeps `rand` for tests
/// only), with a multiply-shift `below` (no modulo bias).
pub struct Rng(SeededRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SeededRng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0.unit()
    }

    /// Uniform in [0, bound) (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Zipf ranks in [0, n): rank `r` has weight 1 / (r + 1)^skew. Sampled by inverting the
/// cumulative weights (a binary search), exact for any skew, 8 bytes a rank.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, skew: f64) -> Zipf {
        let mut cumulative = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(skew);
            cumulative.push(total);
        }
        for weight in &mut cumulative {
            *weight /= total;
        }
        Zipf { cumulative }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let point = rng.unit();
        let rank = self.cumulative.partition_point(|weight| *weight <= point);
        rank.min(self.cumulative.len().saturating_sub(1)) as u64
    }
}

/// A synthetic workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mix {
    /// Reads of `universe` blocks with Zipf popularity of this skew.
    Zipf(f64),
    /// Half the reads loop over a set of 5.5% of the universe (a bit larger than a cache
    /// of 5% of the trace's blocks), half are Zipf 0.8 over the universe.
    Loop,
    /// Two thirds Zipf 1.0 reads of the universe, one third sequential reads of blocks
    /// never read again (a backup scan through the hot set).
    Scan,
    /// Zipf 0.9 reads of a window of half the universe that slides by half the universe
    /// over the trace (yesterday's hot blocks cool down).
    Moving,
    /// Zipf 0.9 over the universe, a quarter of the requests writes (each invalidates the
    /// block's cached copy).
    ReadWrite,
}

impl Mix {
    /// The mixes the replay and the tests run by default.
    pub fn standard() -> Vec<Mix> {
        vec![
            Mix::Zipf(0.6),
            Mix::Zipf(0.8),
            Mix::Zipf(1.0),
            Mix::Zipf(1.2),
            Mix::Loop,
            Mix::Scan,
            Mix::Moving,
            Mix::ReadWrite,
        ]
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mix::Zipf(skew) => write!(f, "zipf-{skew:.1}"),
            Mix::Loop => f.write_str("loop"),
            Mix::Scan => f.write_str("scan"),
            Mix::Moving => f.write_str("moving"),
            Mix::ReadWrite => f.write_str("zipf-0.9-rw"),
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        match text {
            "loop" => return Ok(Mix::Loop),
            "scan" => return Ok(Mix::Scan),
            "moving" => return Ok(Mix::Moving),
            "zipf-0.9-rw" | "rw" => return Ok(Mix::ReadWrite),
            _ => {}
        }
        let skew = text
            .strip_prefix("zipf-")
            .and_then(|skew| skew.parse::<f64>().ok())
            .filter(|skew| skew.is_finite() && *skew >= 0.0 && *skew <= 5.0);
        skew.map(Mix::Zipf).ok_or_else(|| {
            format!(
                "unknown trace kind {text:?}: use zipf-SKEW (0 to 5, e.g. zipf-0.8), loop, \
                 scan, moving or zipf-0.9-rw"
            )
        })
    }
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct TraceSpec {
    pub mix: Mix,
    pub requests: usize,
    /// Distinct blocks the Zipf parts draw from.
    pub universe: u64,
    pub seed: u64,
}

/// Spreads block numbers over a 2^36-block space (a bijection: multiplication by an odd
/// number modulo a power of two), so popular blocks are not neighbours.
fn spread(block: u64) -> u64 {
    block.wrapping_mul(0x2545_F491_4F6C_DD1D) & ((1 << 36) - 1)
}

/// The requests of `spec`.
pub fn generate(spec: &TraceSpec) -> Vec<Request> {
    let universe = spec.universe.max(1);
    let mut rng = Rng::new(spec.seed ^ 0xA076_1D64_78BD_642F);
    let mut trace = Vec::with_capacity(spec.requests);
    match spec.mix {
        Mix::Zipf(skew) => {
            let zipf = Zipf::new(universe, skew);
            for _ in 0..spec.requests {
                trace.push(Request::block(spread(zipf.sample(&mut rng)), false));
            }
        }
        Mix::Loop => {
            let zipf = Zipf::new(universe, 0.8);
            let length = (universe * 11 / 200).max(1);
            let mut next = 0;
            for _ in 0..spec.requests {
                let block = if rng.below(2) == 0 {
                    next = (next + 1) % length;
                    universe + next
                } else {
                    zipf.sample(&mut rng)
                };
                trace.push(Request::block(spread(block), false));
            }
        }
        Mix::Scan => {
            let zipf = Zipf::new(universe, 1.0);
            let mut scanned = 0;
            for _ in 0..spec.requests {
                let block = if rng.below(3) == 0 {
                    scanned += 1;
                    universe + scanned
                } else {
                    zipf.sample(&mut rng)
                };
                trace.push(Request::block(spread(block), false));
            }
        }
        Mix::Moving => {
            let window = (universe / 2).max(1);
            let zipf = Zipf::new(window, 0.9);
            for at in 0..spec.requests {
                let shift = (at as u64 * window) / spec.requests as u64;
                // New blocks enter hottest (rank 0) and cool as the window slides on.
                let block = shift + (window - 1 - zipf.sample(&mut rng));
                trace.push(Request::block(spread(block), false));
            }
        }
        Mix::ReadWrite => {
            let zipf = Zipf::new(universe, 0.9);
            for _ in 0..spec.requests {
                let write = rng.below(4) == 0;
                trace.push(Request::block(spread(zipf.sample(&mut rng)), write));
            }
        }
    }
    trace
}
