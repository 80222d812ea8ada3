//! The canary strategy's parts (SPEC §4 "canary"):
//!
//! - [`traffic`]: the seam to the data plane (split, measurements).
//! - [`analysis`]: the new version's measurements against the limits.
//! - [`steps`]: walking the steps, the analysis judging each one.
//!
//! A running deployment and the verbs (`promote`, `abort`, canary status)
//! meet in its [`Steering`].

pub mod analysis;
pub mod steps;
pub mod traffic;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use analysis::Judgement;

/// How often the analysis looks at the measurements (SPEC: continuously).
pub const ANALYSIS_TICK: Duration = Duration::from_millis(250);

/// What the verbs asked of a running deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// `cutover abort`.
    pub abort: bool,
    /// `cutover promote` at this (0-based) manual step.
    pub promoted: Option<usize>,
    /// `cutover promote --full`: through every remaining step.
    pub full: bool,
}

/// Where a canary is, for `cutover status` and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// 0-based index of the current step.
    pub step: usize,
    pub steps: usize,
    /// Percent of new requests the new version gets now.
    pub weight: u8,
    /// At a `manual` pause, waiting for `cutover promote`.
    pub waiting_manual: bool,
    /// What the analysis last saw in this step.
    pub judgement: Option<Judgement>,
}

/// Called with every progress change (`None` once the canary is over).
pub type ProgressObserver = Box<dyn Fn(Option<&Progress>) + Send + Sync>;

/// Shared by one running deployment and the verbs that steer it.
pub struct Steering {
    signals: watch::Sender<Signals>,
    progress: Mutex<Option<Progress>>,
    observer: Option<ProgressObserver>,
    /// How often the analysis runs.
    pub tick: Duration,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("signals", &*self.signals.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for Steering {
    fn default() -> Self {
        Self::new(ANALYSIS_TICK, None)
    }
}

/// Why a promote was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromoteRefused {
    /// Not at a manual pause (and, for a full promote, not in the steps).
    NotAtPause,
}

impl Steering {
    /// Steering whose analysis runs every `tick`, telling `observer` of
    /// every progress change.
    pub fn new(tick: Duration, observer: Option<ProgressObserver>) -> Self {
        Self {
            signals: watch::channel(Signals::default()).0,
            progress: Mutex::new(None),
            observer,
            tick,
        }
    }

    /// Asks the deployment to stop and go back (honoured at its next safe
    /// point; see `phase::abortable`).
    pub fn abort(&self) {
        self.signals.send_modify(|s| s.abort = true);
    }

    /// Whether an abort was asked for.
    pub fn abort_requested(&self) -> bool {
        self.signals.borrow().abort
    }

    /// Moves a canary past its manual pause, or (`full`) through every
    /// remaining step. Refused unless the canary waits at a manual pause,
    /// or (`full`) walks its steps.
    pub fn promote(&self, full: bool) -> Result<(), PromoteRefused> {
        let progress = self.lock().clone();
        match progress {
            Some(p) if p.waiting_manual => {
                self.signals.send_modify(|s| {
                    s.promoted = Some(p.step);
                    s.full |= full;
                });
                Ok(())
            }
            Some(_) if full => {
                self.signals.send_modify(|s| s.full = true);
                Ok(())
            }
            _ => Err(PromoteRefused::NotAtPause),
        }
    }

    /// Where the canary is; `None` outside the steps.
    pub fn progress(&self) -> Option<Progress> {
        self.lock().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Signals> {
        self.signals.subscribe()
    }

    pub(crate) fn signals(&self) -> Signals {
        *self.signals.borrow()
    }

    pub(crate) fn set_progress(&self, progress: Option<Progress>) {
        *self.lock() = progress.clone();
        if let Some(observer) = &self.observer {
            observer(progress.as_ref());
        }
    }

    pub(crate) fn update_progress(&self, change: impl FnOnce(&mut Progress)) {
        let progress = {
            let mut slot = self.lock();
            if let Some(p) = slot.as_mut() {
                change(p);
            }
            slot.clone()
        };
        if let (Some(observer), Some(progress)) = (&self.observer, &progress) {
            observer(Some(progress));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Progress>> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A shared handle, as the controller keeps it per running deployment.
pub type SharedSteering = Arc<Steering>;
