//! The operator's switches (SPEC §2, §4, §9): `pause`/`resume` hold an
//! app's new requests (in-flight ones finish), `maintenance` answers them
//! with 503 and the maintenance page. Neither touches the app's instances.
//!
//! Each verb takes the gate like a deployment (refused with 409 while a
//! deployment of the app runs, or while cutover stops or upgrades), then
//! writes the journal (the switches and the number of the history record,
//! in one atomic write), then changes [`Routing`](crate::routing::Routing),
//! which publishes one table. The switches live in `Routing` per app, not
//! in a table, so every later table carries them, a deployment's swaps
//! included. Each change is a record in the history with its
//! [`Operation`]; a call that changes nothing answers the state and
//! records nothing. At start-up [`super::boot::restore_switches`] puts the
//! journaled switches back before the first table is published.

use std::sync::Arc;
use std::time::Duration;

use super::phase::Outcome;
use super::record::{now_rfc3339, Deployment, DeploymentLog, Operation};
use super::{Controller, DeployError};
use crate::api::progressive::{AppSwitches, Maintenance, Paused};
use crate::config::bounds::DurationBounds;
use crate::config::AppConfig;

/// `max_pause`: at least 100ms (a shorter hold is a 503 with extra
/// steps), at most an hour (a client held longer has long given up; the
/// pause itself lasts until `resume`, however long).
pub const MAX_PAUSE: DurationBounds = DurationBounds {
    min: Duration::from_millis(100),
    max: Duration::from_secs(60 * 60),
};

/// The longest maintenance message, in bytes: it is sent in every
/// maintenance answer.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// What an app's switches ask of the data plane, in the terms of its
/// `AppMode` (the adapter in `routing/modes_adapter.rs` maps one to the
/// other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Requests go to the app.
    Serving,
    /// New requests are held, each at most `max_pause`.
    Paused { max_pause: Duration },
    /// Requests get 503 and the maintenance page naming `message`.
    Maintenance { message: Option<Arc<str>> },
}

impl Wanted {
    /// What `switches` ask for. Maintenance wins over a pause (nothing
    /// reaches the app either way, and a maintenance page is the clearer
    /// answer); when maintenance ends, the pause applies again.
    pub fn of(switches: &AppSwitches) -> Self {
        if let Some(maintenance) = &switches.maintenance {
            return Wanted::Maintenance {
                message: maintenance.message.as_deref().map(Arc::from),
            };
        }
        match &switches.paused {
            // Within the bounds even if the journal on disk says otherwise:
            // the data plane adds it to the arrival of every held request.
            Some(paused) => Wanted::Paused {
                max_pause: Duration::from_millis(paused.max_pause_ms).clamp(MAX_PAUSE.min, MAX_PAUSE.max),
            },
            None => Wanted::Serving,
        }
    }
}

impl Controller {
    /// Pauses `app`: its new requests are held until [`Self::resume`], each
    /// at most `max_pause` (then 503 with `Retry-After`). Pausing a paused
    /// app changes its `max_pause` (the pause keeps its start).
    pub fn pause(&self, app: &str, max_pause: Duration) -> Result<AppSwitches, DeployError> {
        if !MAX_PAUSE.contains(max_pause) {
            return Err(DeployError::InvalidConfig(format!(
                "max_pause must be between {} and {}, got {}",
                human(MAX_PAUSE.min),
                human(MAX_PAUSE.max),
                human(max_pause)
            )));
        }
        let max_pause_ms = u64::try_from(max_pause.as_millis()).unwrap_or(u64::MAX);
        self.switch(app, Operation::Pause, |current| {
            let mut next = current.clone();
            let since = current.paused.as_ref().map_or_else(now_rfc3339, |p| p.since.clone());
            next.paused = Some(Paused { since, max_pause_ms });
            let held = format!("requests held up to {}", human(max_pause));
            let what = match &current.paused {
                Some(was) => format!(
                    "pause changed; {held} (was {})",
                    human(Duration::from_millis(was.max_pause_ms))
                ),
                None if current.maintenance.is_some() => {
                    format!("paused; {held} once maintenance is off")
                }
                None => format!("paused; {held}"),
            };
            (next, what)
        })
    }

    /// Ends `app`'s pause: held requests go on. Not paused: nothing to do.
    pub fn resume(&self, app: &str) -> Result<AppSwitches, DeployError> {
        self.switch(app, Operation::Resume, |current| {
            let mut next = current.clone();
            next.paused = None;
            let what = if current.maintenance.is_some() {
                "resumed; maintenance stays on"
            } else {
                "resumed; held requests go on to the app"
            };
            (next, what.to_string())
        })
    }

    /// Turns `app`'s maintenance mode on (with `message` on its page; a
    /// second call replaces the message) or off. A blank message is none;
    /// a message only goes with `on`.
    pub fn maintenance(&self, app: &str, on: bool, message: Option<String>) -> Result<AppSwitches, DeployError> {
        let message = check_message(message)?;
        if !on && message.is_some() {
            return Err(DeployError::InvalidConfig(
                "a maintenance message only goes with maintenance on".into(),
            ));
        }
        let operation = if on {
            Operation::MaintenanceOn
        } else {
            Operation::MaintenanceOff
        };
        self.switch(app, operation, |current| {
            let mut next = current.clone();
            let what = match (on, &current.maintenance) {
                (true, None) => {
                    next.maintenance = Some(Maintenance {
                        since: now_rfc3339(),
                        message: message.clone(),
                    });
                    format!(
                        "maintenance on; requests get 503 with the maintenance page{}",
                        said(&message)
                    )
                }
                (true, Some(was)) => {
                    next.maintenance = Some(Maintenance {
                        since: was.since.clone(),
                        message: message.clone(),
                    });
                    format!("maintenance message changed{}", said(&message))
                }
                (false, _) => {
                    next.maintenance = None;
                    if current.paused.is_some() {
                        "maintenance off; the pause holds requests until resume".to_string()
                    } else {
                        "maintenance off; requests reach the app again".to_string()
                    }
                }
            };
            (next, what)
        })
    }

    /// `app`'s switches (none for an unknown app).
    pub fn switches(&self, app: &str) -> AppSwitches {
        self.supervisor.routing().switches(app)
    }

    /// The path every switch takes (see the module's doc): `change` gives
    /// the switches wanted from the current ones, and what changed, for
    /// the history record.
    fn switch(
        &self,
        app: &str,
        operation: Operation,
        change: impl FnOnce(&AppSwitches) -> (AppSwitches, String),
    ) -> Result<AppSwitches, DeployError> {
        let gate = self.exclusive();
        let Some(runtime) = self.supervisor.app(app) else {
            return Err(DeployError::UnknownApp(app.to_string()));
        };
        gate.refuse_when_stopping(app)?;
        gate.refuse_busy([&app.to_string()])?;
        let routing = self.supervisor.routing();
        let current = routing.switches(app);
        let (next, what) = change(&current);
        if next == current {
            return Ok(current);
        }
        // One write holds the switches and the record's number: if it
        // fails, nothing changed.
        let mut number = 0;
        self.journal.update(|s| {
            number = s.next_deployment.saturating_add(1);
            s.next_deployment = number;
            if next == AppSwitches::default() {
                s.switches.remove(app);
            } else {
                s.switches.insert(app.to_string(), next.clone());
            }
        })?;
        routing.set_switches(app, next.clone());
        self.record_switch(&runtime.config, operation, number, what);
        Ok(next)
    }

    /// Puts a switch in the history (journal and this run's list), as a
    /// record of `operation` on the app's current version with one event
    /// saying `what` changed. Not a deployment: not counted in
    /// `cutover_deployments_total`.
    fn record_switch(&self, config: &AppConfig, operation: Operation, number: u64, what: String) {
        let version = config.version();
        let id = format!("{}-{number}", config.name);
        let mut record = Deployment::new(id, &config.name, config.deploy_strategy, version.clone(), version);
        record.operation = operation;
        let log = Arc::new(DeploymentLog::new(record));
        log.info(None, what);
        log.finish(Outcome::Succeeded);
        self.remember(&log);
        if let Err(e) = self.journal.append_history(&log.snapshot()) {
            tracing::error!(error = %e, app = %config.name, "cannot append the switch to the deployment history");
        }
    }
}

/// A maintenance message as given: blank is none; at most
/// [`MAX_MESSAGE_BYTES`], no control characters (it goes into a page,
/// a JSON answer and the journal as one line).
fn check_message(message: Option<String>) -> Result<Option<String>, DeployError> {
    let Some(message) = message.filter(|m| !m.trim().is_empty()) else {
        return Ok(None);
    };
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(DeployError::InvalidConfig(format!(
            "the maintenance message is {} bytes; it may be at most {MAX_MESSAGE_BYTES} bytes",
            message.len()
        )));
    }
    if let Some(c) = message.chars().find(|c| c.is_control()) {
        return Err(DeployError::InvalidConfig(format!(
            "the maintenance message contains the control character U+{:04X}; write it as one line of plain text",
            u32::from(c)
        )));
    }
    Ok(Some(message))
}

/// `: "message"` for an event, or nothing.
fn said(message: &Option<String>) -> String {
    message.as_ref().map_or_else(String::new, |m| format!(": {m:?}"))
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused(max_pause_ms: u64) -> AppSwitches {
        AppSwitches {
            paused: Some(Paused {
                since: now_rfc3339(),
                max_pause_ms,
            }),
            maintenance: None,
        }
    }

    #[test]
    fn a_journaled_max_pause_out_of_bounds_is_brought_within_them() {
        let max_pause = |switches: &AppSwitches| match Wanted::of(switches) {
            Wanted::Paused { max_pause } => max_pause,
            other => panic!("{other:?}"),
        };
        assert_eq!(max_pause(&paused(u64::MAX)), MAX_PAUSE.max);
        assert_eq!(max_pause(&paused(0)), MAX_PAUSE.min);
        assert_eq!(max_pause(&paused(2500)), Duration::from_millis(2500));
    }

    #[test]
    fn maintenance_wins_over_a_pause_and_nothing_is_serving() {
        assert_eq!(Wanted::of(&AppSwitches::default()), Wanted::Serving);
        let mut both = paused(1000);
        both.maintenance = Some(Maintenance {
            since: now_rfc3339(),
            message: Some("soon".into()),
        });
        assert_eq!(
            Wanted::of(&both),
            Wanted::Maintenance {
                message: Some(Arc::from("soon"))
            }
        );
    }

    #[test]
    fn messages_are_one_line_of_at_most_a_kibibyte() {
        assert_eq!(check_message(None).unwrap(), None);
        assert_eq!(check_message(Some(" \t ".into())).unwrap(), None);
        assert_eq!(
            check_message(Some("back soon".into())).unwrap().as_deref(),
            Some("back soon")
        );
        assert!(check_message(Some("x".repeat(MAX_MESSAGE_BYTES))).is_ok());
        assert!(check_message(Some("x".repeat(MAX_MESSAGE_BYTES + 1))).is_err());
        assert!(check_message(Some("a\u{7f}b".into())).is_err());
        assert!(check_message(Some("tab\there".into())).is_err());
    }
}
