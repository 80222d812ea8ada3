//! Following deployments: `cutover deploy` and `cutover push` show each
//! phase as it happens (a live progress line on a terminal, plain lines
//! otherwise) and end with the outcome; `cutover upgrade` shows each step
//! of an upgrade of cutover itself.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cutover_control::api::{Event, EventKind, Outcome, UpgradeEvent, UpgradeOutcome};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::client::AdminClient;

/// Exit codes of `deploy` and `push`.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_ROLLED_BACK: u8 = 2;

/// Follows one deployment to its end; returns its outcome.
pub async fn follow(client: &AdminClient, id: &str) -> anyhow::Result<Outcome> {
    let mut progress = Progress::new(id);
    read_events(client, &format!("/deployments/{id}/events"), &mut progress)
        .await?
        .with_context(|| format!("the event stream of {id} ended before its outcome"))
}

/// Follows an upgrade of cutover itself: one line per step, then the
/// outcome's message; returns the outcome.
pub async fn follow_upgrade(client: &AdminClient, id: &str) -> anyhow::Result<UpgradeOutcome> {
    read_events(client, &format!("/upgrades/{id}/events"), &mut UpgradeSteps)
        .await?
        .with_context(|| format!("the event stream of {id} ended before its outcome"))
}

/// What a follower does with each event of a stream.
trait Follower {
    /// What each `data:` line holds.
    type Event: DeserializeOwned;
    /// What the last event says.
    type Outcome;
    /// Shows `event`; the outcome when it is the last one.
    fn event(&mut self, event: &Self::Event) -> Option<Self::Outcome>;
    /// Called ten times a second (a live progress line's clock).
    fn tick(&mut self) {}
}

/// Reads the server-sent events at `path` until `follower` sees an outcome
/// (`Some`), or the stream ends without one (`None`). An event this client
/// cannot read is an error: it would otherwise wait for an outcome it
/// cannot recognise.
async fn read_events<F: Follower>(
    client: &AdminClient,
    path: &str,
    follower: &mut F,
) -> anyhow::Result<Option<F::Outcome>> {
    let response = client.stream(path).await?;
    let mut body = response.into_body();
    // Bytes, not text: a character split across two frames must be whole
    // before it is decoded.
    let mut buffer: Vec<u8> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(frame) = frame else { return Ok(None) };
                let frame = frame.context("the event stream broke")?;
                let Some(data) = frame.data_ref() else { continue };
                buffer.extend_from_slice(data);
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffer.drain(..end + 2).collect();
                    for line in String::from_utf8_lossy(&block).lines() {
                        if let Some(json) = line.strip_prefix("data:") {
                            let event: F::Event = serde_json::from_str(json.trim_start())
                                .with_context(|| format!("an event of {path} this cutover does not understand: {json}"))?;
                            if let Some(outcome) = follower.event(&event) {
                                return Ok(Some(outcome));
                            }
                        }
                    }
                }
            }
            _ = ticker.tick() => follower.tick(),
        }
    }
}

/// Prints an upgrade's steps as they come.
struct UpgradeSteps;

impl Follower for UpgradeSteps {
    type Event = UpgradeEvent;
    type Outcome = UpgradeOutcome;

    fn event(&mut self, event: &UpgradeEvent) -> Option<UpgradeOutcome> {
        match event.outcome {
            Some(outcome) => println!("upgrade {}: {}", outcome.as_str(), event.message),
            None => println!("  {}", event.message),
        }
        event.outcome
    }
}

/// The exit code for a set of outcomes: the worst one wins. Anything but
/// `succeeded` and `rolled_back` (`failed`, `interrupted` when cutover
/// stopped during the deployment, `aborted` by someone else) counts as
/// failed.
pub fn exit_code(outcomes: &[Outcome]) -> ExitCode {
    ExitCode::from(exit_status(outcomes))
}

fn exit_status(outcomes: &[Outcome]) -> u8 {
    let known = |o: &Outcome| matches!(o, Outcome::Succeeded | Outcome::RolledBack);
    if outcomes.iter().any(|o| !known(o)) {
        EXIT_FAILED
    } else if outcomes.contains(&Outcome::RolledBack) {
        EXIT_ROLLED_BACK
    } else {
        0
    }
}

/// The exit code of `cutover abort`: 0 once the deployment ended
/// `aborted`; any other end means the abort did not happen (the deployment
/// finished first), 1.
pub fn abort_exit_code(outcome: Outcome) -> ExitCode {
    if outcome == Outcome::Aborted {
        ExitCode::SUCCESS
    } else {
        eprintln!("cutover: the deployment ended {}, not aborted", outcome.as_str());
        ExitCode::from(EXIT_FAILED)
    }
}

/// Renders events.
struct Progress {
    id: String,
    tty: bool,
    phase: Option<(String, Instant)>,
    frame: usize,
}

impl Follower for Progress {
    type Event = Event;
    type Outcome = Outcome;

    fn event(&mut self, event: &Event) -> Option<Outcome> {
        Progress::event(self, event)
    }

    fn tick(&mut self) {
        Progress::tick(self)
    }
}

impl Progress {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            tty: std::io::stdout().is_terminal(),
            phase: None,
            frame: 0,
        }
    }

    /// Shows one event; `Some(outcome)` for the last one.
    fn event(&mut self, event: &Event) -> Option<Outcome> {
        let phase = event.phase.map_or("", |p| p.as_str());
        let message = &event.message;
        let who = event.instance.as_deref().map(|i| format!("{i}: ")).unwrap_or_default();
        match event.kind {
            EventKind::PhaseStarted => self.phase = Some((phase.to_string(), Instant::now())),
            EventKind::PhaseFinished => {
                self.clear_line();
                let ms = event.duration_ms.unwrap_or(0);
                let ok = message.contains(" done ");
                let mark = if ok { "✓" } else { "✗" };
                println!("{} {mark} {:<9} {}", self.id, phase, fmt_ms(ms));
                self.phase = None;
            }
            EventKind::Warning | EventKind::Error => {
                self.clear_line();
                let kind = cutover_control::api::wire_name(&event.kind);
                println!("{}   {kind}: {who}{message}", self.id);
            }
            EventKind::Info if !self.tty => println!("{}   {who}{message}", self.id),
            EventKind::Outcome => {
                self.clear_line();
                println!("{} {message}", self.id);
                // An outcome event always names its outcome; one that does
                // not is read as a failure rather than waited past.
                return Some(event.outcome.unwrap_or(Outcome::Failed));
            }
            EventKind::Info => {}
        }
        None
    }

    /// Redraws the live line on a terminal.
    fn tick(&mut self) {
        const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        if !self.tty {
            return;
        }
        if let Some((phase, since)) = &self.phase {
            self.frame = (self.frame + 1) % SPINNER.len();
            print!(
                "\r\x1b[2K{} {} {:<9} {}",
                self.id,
                SPINNER[self.frame],
                phase,
                fmt_ms(since.elapsed().as_millis() as u64)
            );
            let _ = std::io::stdout().flush();
        }
    }

    fn clear_line(&self) {
        if self.tty {
            print!("\r\x1b[2K");
        }
    }
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

    use Outcome::*;

    #[test]
    fn interrupted_exits_non_zero_like_failed() {
        assert_eq!(exit_status(&[Interrupted]), EXIT_FAILED);
        assert_eq!(exit_status(&[Succeeded, Interrupted]), EXIT_FAILED);
        assert_eq!(exit_status(&[RolledBack, Interrupted]), EXIT_FAILED);
    }

    #[test]
    fn the_worst_outcome_wins() {
        assert_eq!(exit_status(&[Succeeded]), 0);
        assert_eq!(exit_status(&[Succeeded, RolledBack]), EXIT_ROLLED_BACK);
        assert_eq!(exit_status(&[Failed, RolledBack]), EXIT_FAILED);
        assert_eq!(exit_status(&[]), 0);
    }

    #[test]
    fn an_aborted_deployment_is_a_failure_when_deploy_follows_it() {
        assert_eq!(exit_status(&[Succeeded, Aborted]), EXIT_FAILED);
        let aborted: Outcome = serde_json::from_str("\"aborted\"").unwrap();
        assert_eq!(aborted, Aborted);
    }
}
