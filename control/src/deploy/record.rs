//! A deployment's record: identity, versions, per-phase timings, events
//! and outcome; live (subscribers are woken on every event) while it runs.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::phase::{Outcome, Phase};
use crate::config::Strategy;

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    PhaseStarted,
    PhaseFinished,
    Info,
    Warning,
    Error,
    Outcome,
}

/// One line of a deployment's story.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// 0, 1, 2, … within the deployment.
    pub seq: u64,
    /// RFC 3339, milliseconds.
    pub at: String,
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub message: String,
    /// For `phase_finished`: how long the phase took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// One phase's timing.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

/// What an entry of the history did: a deployment (deploy, push, rollback)
/// or one of the operator's switches, which go through the same gate and
/// the same history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `cutover deploy` or a push.
    #[default]
    Deploy,
    /// `cutover rollback`: back to the previous committed version.
    Rollback,
    /// `cutover pause`.
    Pause,
    /// `cutover resume`.
    Resume,
    /// `cutover maintenance APP on`.
    MaintenanceOn,
    /// `cutover maintenance APP off`.
    MaintenanceOff,
}

/// A deployment, as `/deployments/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deployment {
    pub id: String,
    pub app: String,
    /// What this entry did; `deploy` for records written before it existed.
    #[serde(default)]
    pub operation: Operation,
    pub strategy: Strategy,
    pub from_version: String,
    pub to_version: String,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The phase in progress (`None` once finished).
    pub phase: Option<Phase>,
    pub outcome: Option<Outcome>,
    /// Why a deployment that did not succeed ended as it did: its first
    /// error (e.g. `steps failed: error rate 20% > 1%`), or the abort.
    /// Kept in listings, which carry no events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub phases: Vec<PhaseTiming>,
    pub events: Vec<Event>,
}

impl Deployment {
    /// A new, not yet started deployment.
    pub fn new(id: String, app: &str, strategy: Strategy, from_version: String, to_version: String) -> Self {
        Self {
            id,
            app: app.to_string(),
            operation: Operation::Deploy,
            strategy,
            from_version,
            to_version,
            started_at: now_rfc3339(),
            finished_at: None,
            duration_ms: None,
            phase: None,
            outcome: None,
            reason: None,
            phases: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Without its events (for listings).
    pub fn summary(&self) -> Self {
        Self {
            events: Vec::new(),
            ..self.clone()
        }
    }
}

/// A running deployment's record, shared by the driver, the admin API and
/// the journal.
pub struct DeploymentLog {
    record: Mutex<Deployment>,
    started: std::time::Instant,
    phase_started: Mutex<Option<std::time::Instant>>,
    /// Number of events so far; ticks on every event.
    changed: watch::Sender<usize>,
    /// Told about every event (journal, metrics).
    observer: Option<Observer>,
}

/// An event's count and what the observer is shown.
type Pushed = (usize, Option<(Event, Deployment)>);

/// Sees every event with the record as it is after it.
pub type Observer = Box<dyn Fn(&Event, &Deployment) + Send + Sync>;

impl std::fmt::Debug for DeploymentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentLog").field("id", &self.id()).finish()
    }
}

impl DeploymentLog {
    pub fn new(record: Deployment) -> Self {
        Self::with_observer(record, None)
    }

    /// A log whose every event is also shown to `observer`.
    pub fn with_observer(record: Deployment, observer: Option<Observer>) -> Self {
        let events = record.events.len();
        Self {
            record: Mutex::new(record),
            started: std::time::Instant::now(),
            phase_started: Mutex::new(None),
            changed: watch::channel(events).0,
            observer,
        }
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> Deployment {
        self.lock().clone()
    }

    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    /// Wakes on every new event.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.changed.subscribe()
    }

    /// Events from `from` on, and whether the deployment has finished:
    /// its outcome event is among the events (so a stream that ends on
    /// `true` has sent the outcome).
    pub fn events_since(&self, from: usize) -> (Vec<Event>, bool) {
        let record = self.lock();
        let events = record.events.get(from..).map(<[Event]>::to_vec).unwrap_or_default();
        let finished = record.events.iter().any(|e| e.kind == EventKind::Outcome);
        (events, finished)
    }

    pub fn phase_started(&self, phase: Phase) {
        *self.phase_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        {
            let mut record = self.lock();
            record.phase = Some(phase);
            record.phases.push(PhaseTiming {
                phase,
                started_at: now_rfc3339(),
                duration_ms: None,
                ok: None,
            });
        }
        self.push(
            EventKind::PhaseStarted,
            Some(phase),
            None,
            format!("{} started", phase.as_str()),
            None,
            None,
        );
    }

    pub fn phase_finished(&self, phase: Phase, ok: bool) {
        let took = self
            .phase_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed());
        let ms = millis(took);
        {
            let mut record = self.lock();
            if let Some(timing) = record.phases.iter_mut().rev().find(|t| t.phase == phase) {
                timing.duration_ms = Some(ms);
                timing.ok = Some(ok);
            }
        }
        let message = format!(
            "{} {} in {}",
            phase.as_str(),
            if ok { "done" } else { "failed" },
            fmt_ms(ms)
        );
        self.push(EventKind::PhaseFinished, Some(phase), None, message, Some(ms), None);
    }

    pub fn info(&self, instance: Option<&str>, message: impl Into<String>) {
        self.push(
            EventKind::Info,
            self.current_phase(),
            instance,
            message.into(),
            None,
            None,
        );
    }

    pub fn warn(&self, instance: Option<&str>, message: impl Into<String>) {
        self.push(
            EventKind::Warning,
            self.current_phase(),
            instance,
            message.into(),
            None,
            None,
        );
    }

    pub fn error(&self, instance: Option<&str>, message: impl Into<String>) {
        let message = message.into();
        let pushed = {
            let mut record = self.lock();
            if record.outcome.is_none() && record.reason.is_none() {
                record.reason = Some(match instance {
                    Some(instance) => format!("{instance}: {message}"),
                    None => message.clone(),
                });
            }
            let phase = record.phase;
            self.append(&mut record, EventKind::Error, phase, instance, message, None, None)
        };
        self.notify(pushed);
    }

    /// Records the outcome; the last event. The outcome and its event are
    /// written under one lock, so whoever sees the deployment finished
    /// also sees the event (a stream never ends without it). A second call
    /// changes nothing.
    pub fn finish(&self, outcome: Outcome) {
        self.finish_with(outcome, |_| {});
    }

    /// [`Self::finish`], running `before_visible` with the finished record
    /// while it is still locked: whatever it does (counting the outcome,
    /// freeing the app) is done before anyone can see the outcome. It runs
    /// even when the outcome was recorded before (then `outcome` is
    /// ignored), so a caller's clean-up never depends on who finished.
    pub fn finish_with(&self, outcome: Outcome, before_visible: impl FnOnce(&Deployment)) {
        let ms = millis(self.started.elapsed());
        let message = format!("deployment {} in {}", outcome.as_str(), fmt_ms(ms));
        let pushed = {
            let mut record = self.lock();
            if record.outcome.is_some() {
                before_visible(&record);
                return;
            }
            record.phase = None;
            record.outcome = Some(outcome);
            match outcome {
                Outcome::Succeeded => record.reason = None,
                Outcome::Aborted => record.reason = Some("aborted by cutover abort".into()),
                _ => {}
            }
            record.finished_at = Some(now_rfc3339());
            record.duration_ms = Some(ms);
            let pushed = self.append(
                &mut record,
                EventKind::Outcome,
                None,
                None,
                message,
                Some(ms),
                Some(outcome),
            );
            before_visible(&record);
            pushed
        };
        self.notify(pushed);
    }

    /// Whether the outcome is recorded.
    pub fn is_finished(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Seconds since the deployment started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn current_phase(&self) -> Option<Phase> {
        self.lock().phase
    }

    fn push(
        &self,
        kind: EventKind,
        phase: Option<Phase>,
        instance: Option<&str>,
        message: String,
        duration_ms: Option<u64>,
        outcome: Option<Outcome>,
    ) {
        let pushed = {
            let mut record = self.lock();
            self.append(&mut record, kind, phase, instance, message, duration_ms, outcome)
        };
        self.notify(pushed);
    }

    /// Appends an event to `record` (locked by the caller); returns what
    /// [`Self::notify`] needs once the lock is released.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        record: &mut Deployment,
        kind: EventKind,
        phase: Option<Phase>,
        instance: Option<&str>,
        message: String,
        duration_ms: Option<u64>,
        outcome: Option<Outcome>,
    ) -> Pushed {
        let event = Event {
            seq: record.events.len() as u64,
            at: now_rfc3339(),
            kind,
            phase,
            instance: instance.map(str::to_string),
            message,
            duration_ms,
            outcome,
        };
        tracing::info!(deployment = %record.id, app = %record.app, kind = ?event.kind, phase = ?event.phase, "{}", event.message);
        record.events.push(event.clone());
        let observed = self.observer.as_ref().map(|_| (event, record.clone()));
        (record.events.len(), observed)
    }

    /// Tells the observer and wakes subscribers (outside the lock).
    fn notify(&self, (count, observed): Pushed) {
        if let (Some(observer), Some((event, record))) = (&self.observer, observed) {
            observer(&event, &record);
        }
        self.changed.send_replace(count);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deployment> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> DeploymentLog {
        DeploymentLog::new(Deployment::new(
            "web-1".into(),
            "web",
            Strategy::Rolling,
            "a".into(),
            "b".into(),
        ))
    }

    #[test]
    fn a_record_with_an_outcome_but_no_outcome_event_is_not_finished() {
        // What the old `finish` left visible between its two lock sections.
        let mut record = Deployment::new("web-1".into(), "web", Strategy::Rolling, "a".into(), "b".into());
        record.outcome = Some(Outcome::Succeeded);
        let log = DeploymentLog::new(record);
        assert!(!log.events_since(0).1);
    }

    #[test]
    fn whoever_sees_the_deployment_finished_sees_the_outcome_event() {
        for _ in 0..200 {
            let log = std::sync::Arc::new(log());
            let watcher = {
                let log = std::sync::Arc::clone(&log);
                std::thread::spawn(move || loop {
                    let (events, finished) = log.events_since(0);
                    if finished {
                        assert_eq!(events.last().map(|e| e.kind), Some(EventKind::Outcome));
                        return;
                    }
                    std::thread::yield_now();
                })
            };
            log.finish(Outcome::Succeeded);
            watcher.join().unwrap();
        }
    }

    #[test]
    fn finish_twice_keeps_the_first_outcome() {
        let log = log();
        log.finish(Outcome::Succeeded);
        log.finish(Outcome::Interrupted);
        let record = log.snapshot();
        assert_eq!(record.outcome, Some(Outcome::Succeeded));
        assert_eq!(record.events.iter().filter(|e| e.kind == EventKind::Outcome).count(), 1);
    }
}
