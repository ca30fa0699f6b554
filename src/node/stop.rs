//! What SIGINT, SIGTERM and SIGHUP do to `troika serve`: always the clean stop.
//!
//! SIGHUP is what a closing terminal sends; it stops the node cleanly like the others
//! (troika has no configuration to reload), so closing the window a node runs in never
//! loses a write a host had acknowledged.
//!
//! What it promises: once [`StopSignals::install`] has returned (the first thing `troika
//! serve` does), none of them ends the process. The first one starts the clean stop
//! (close the ports, end the services, vault, destage, checkpoint, raise
//! `SYSTEM_SHUTDOWN`, exit 0); if the node is still starting, the stop begins as soon as
//! it serves. Nothing the terminal or a pipe does changes that: every message goes
//! through [`say!`](crate::say), which never fails, so a `tee` or `head` that died on
//! the same Ctrl-C cannot end the process before its stop.
//!
//! The second signal does not abort the stop: it makes the node say which phase the stop
//! is in (for destaging, how much cached data is left). A third and every later signal
//! does exactly the same, nothing more: aborting would lose acknowledged writes a host
//! has not flushed yet, and data safety comes first. The operator who accepts that loss
//! sends SIGKILL (`kill -9`): whatever a host flushed is in the vault and survives it.
//!
//! Phases, in the only order the stop moves through them ([`StopPhase::next`]); the
//! thread that runs the stop owns them, the signal thread only reads them to report:
//!
//! ```text
//! Starting → Serving → ClosingPorts → EndingServices → Vaulting → Destaging → Recording → Stopped
//! ```

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cache::Cache;

/// Where the node is on its way from start to a clean exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StopPhase {
    /// Opening devices and recovering from media; a signal is remembered.
    Starting,
    /// Serving hosts until a signal (or a durability failure) arrives.
    Serving,
    /// No new connections: the NBD and iSCSI ports close.
    ClosingPorts,
    /// The NBD server, the management API and the background tasks end.
    EndingServices,
    /// Acknowledged writes are written to the vault.
    Vaulting,
    /// Cached data goes to the NL-SAS drives, then the final checkpoint.
    Destaging,
    /// The `SYSTEM_SHUTDOWN` event is written and synced.
    Recording,
    /// Everything is on media; the process exits.
    Stopped,
}

const PHASES: [StopPhase; 8] = [
    StopPhase::Starting,
    StopPhase::Serving,
    StopPhase::ClosingPorts,
    StopPhase::EndingServices,
    StopPhase::Vaulting,
    StopPhase::Destaging,
    StopPhase::Recording,
    StopPhase::Stopped,
];

impl StopPhase {
    /// The one phase that may follow this one.
    pub fn next(self) -> Option<StopPhase> {
        PHASES.get(self as usize + 1).copied()
    }
}

/// The stop's phase and the signals seen, shared by the thread that runs the stop (the
/// only writer of the phase) and the signal thread.
pub struct StopProgress {
    phase: AtomicU8,
    requested: AtomicBool,
    signals: AtomicU32,
    /// The started node's cache, to tell how much is left to destage.
    cache: OnceLock<Arc<Cache>>,
}

impl StopProgress {
    fn new() -> StopProgress {
        StopProgress {
            phase: AtomicU8::new(StopPhase::Starting as u8),
            requested: AtomicBool::new(false),
            signals: AtomicU32::new(0),
            cache: OnceLock::new(),
        }
    }

    pub fn phase(&self) -> StopPhase {
        PHASES[usize::from(self.phase.load(Ordering::Acquire))]
    }

    /// Moves to `to`, which must be the phase after the current one.
    pub fn advance(&self, to: StopPhase) {
        let from = self.phase();
        assert_eq!(
            from.next(),
            Some(to),
            "stop phase {from:?} cannot go to {to:?}"
        );
        self.phase.store(to as u8, Ordering::Release);
    }

    /// The node serves: the stop may begin, and destaging can be measured.
    pub fn serving(&self, cache: Arc<Cache>) {
        let _ = self.cache.set(cache);
        self.advance(StopPhase::Serving);
    }

    /// Whether a signal asked for the stop.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// What the node is doing now, for an operator who sent another signal.
    pub fn describe(&self) -> String {
        match self.phase() {
            StopPhase::Starting => "opening devices and recovering from media; the clean \
                                    stop begins once the node serves"
                .to_owned(),
            StopPhase::Serving => "beginning the clean stop".to_owned(),
            StopPhase::ClosingPorts => "closing the NBD and iSCSI ports".to_owned(),
            StopPhase::EndingServices => {
                "waiting for the NBD server, the management API and the background tasks to end"
                    .to_owned()
            }
            StopPhase::Vaulting => "writing acknowledged data to the vault".to_owned(),
            StopPhase::Destaging => {
                let dirty = self.cache.get().map_or(0, |cache| cache.dirty_bytes());
                if dirty == 0 {
                    "writing the final checkpoint".to_owned()
                } else {
                    format!("destaging {} MiB of cached data", dirty.div_ceil(1 << 20))
                }
            }
            StopPhase::Recording => "recording the shutdown event".to_owned(),
            StopPhase::Stopped => "exiting".to_owned(),
        }
    }

    /// Called by the signal thread for each SIGINT or SIGTERM.
    fn on_signal(&self, name: &str) {
        let count = self.signals.fetch_add(1, Ordering::AcqRel) + 1;
        self.requested.store(true, Ordering::Release);
        let phase = self.phase();
        if count == 1 {
            if phase == StopPhase::Starting {
                crate::say!(
                    "troika: {name} while starting: the node stops cleanly as soon as it serves"
                );
            }
            // Otherwise the thread that runs the stop announces it.
            return;
        }
        let still = if phase == StopPhase::Starting {
            "still starting"
        } else {
            "still stopping"
        };
        crate::say!(
            "troika: {name} again (signal {count}): {still}: {}; signals do not abort the \
             stop, kill -9 does (flushed writes survive it)",
            self.describe()
        );
    }
}

/// SIGINT and SIGTERM, caught for the whole life of the process by a thread of their own.
pub struct StopSignals {
    progress: Arc<StopProgress>,
}

impl StopSignals {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on: see the module doc for what they do.
    pub fn install() -> anyhow::Result<StopSignals> {
        let mut signals =
            Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot install signal handlers")?;
        let progress = Arc::new(StopProgress::new());
        let watched = progress.clone();
        std::thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                for signal in signals.forever() {
                    watched.on_signal(match signal {
                        SIGINT => "SIGINT",
                        SIGHUP => "SIGHUP",
                        _ => "SIGTERM",
                    });
                }
            })
            .context("cannot start the signal thread")?;
        Ok(StopSignals { progress })
    }

    pub fn progress(&self) -> &StopProgress {
        &self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward_one_at_a_time() {
        let progress = StopProgress::new();
        for pair in PHASES.windows(2) {
            assert_eq!(progress.phase(), pair[0]);
            assert_eq!(pair[0].next(), Some(pair[1]));
            progress.advance(pair[1]);
        }
        assert_eq!(progress.phase().next(), None);
    }

    #[test]
    #[should_panic(expected = "cannot go to")]
    fn a_skipped_phase_is_refused() {
        StopProgress::new().advance(StopPhase::Destaging);
    }

    #[test]
    fn signals_only_report_once_the_stop_is_requested() {
        let progress = StopProgress::new();
        progress.on_signal("SIGINT");
        assert!(progress.requested());
        progress.on_signal("SIGINT");
        progress.on_signal("SIGTERM");
        assert_eq!(progress.signals.load(Ordering::Acquire), 3);
        assert!(progress.describe().starts_with("opening devices"));
    }
}
