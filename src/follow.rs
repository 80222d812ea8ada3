//! Following deployments: `cutover deploy` and `cutover push` show each
//! phase as it happens (a live progress line on a terminal, plain lines
//! otherwise) and end with the outcome; `cutover upgrade` shows each step
//! of an upgrade of cutover itself.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::client::AdminClient;

/// Exit codes of `deploy` and `push`.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_ROLLED_BACK: u8 = 2;

/// Follows one deployment to its end; returns its outcome.
pub async fn follow(client: &AdminClient, id: &str) -> anyhow::Result<String> {
    let mut progress = Progress::new(id);
    read_events(client, &format!("/deployments/{id}/events"), &mut progress)
        .await?
        .with_context(|| format!("the event stream of {id} ended before its outcome"))
}

/// Follows an upgrade of cutover itself: one line per step, then the
/// outcome's message; returns the outcome.
pub async fn follow_upgrade(client: &AdminClient, id: &str) -> anyhow::Result<String> {
    read_events(client, &format!("/upgrades/{id}/events"), &mut UpgradeSteps)
        .await?
        .with_context(|| format!("the event stream of {id} ended before its outcome"))
}

/// What a follower does with each event of a stream.
trait Follower {
    /// Shows `event`; the outcome when it is the last one.
    fn event(&mut self, event: &Value) -> Option<String>;
    /// Called ten times a second (a live progress line's clock).
    fn tick(&mut self) {}
}

/// Reads the server-sent events at `path` until `follower` sees an outcome
/// (`Some`), or the stream ends without one (`None`).
async fn read_events(client: &AdminClient, path: &str, follower: &mut impl Follower) -> anyhow::Result<Option<String>> {
    let response = client.stream(path).await?;
    let mut body = response.into_body();
    let mut buffer = String::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(frame) = frame else { return Ok(None) };
                let frame = frame.context("the event stream broke")?;
                let Some(data) = frame.data_ref() else { continue };
                buffer.push_str(&String::from_utf8_lossy(data));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    for line in block.lines() {
                        if let Some(json) = line.strip_prefix("data:") {
                            if let Ok(event) = serde_json::from_str::<Value>(json.trim_start()) {
                                if let Some(outcome) = follower.event(&event) {
                                    return Ok(Some(outcome));
                                }
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
    fn event(&mut self, event: &Value) -> Option<String> {
        let message = event["message"].as_str().unwrap_or_default();
        let outcome = event["outcome"].as_str().map(str::to_string);
        match &outcome {
            Some(outcome) => println!("upgrade {outcome}: {message}"),
            None => println!("  {message}"),
        }
        outcome
    }
}

/// The exit code for a set of outcomes: the worst one wins. `interrupted`
/// (cutover stopped during the deployment) and any outcome this client
/// does not know count as failed.
pub fn exit_code(outcomes: &[String]) -> ExitCode {
    ExitCode::from(exit_status(outcomes))
}

fn exit_status(outcomes: &[String]) -> u8 {
    let known = |o: &String| matches!(o.as_str(), "succeeded" | "rolled_back");
    if outcomes.iter().any(|o| !known(o)) {
        EXIT_FAILED
    } else if outcomes.iter().any(|o| o == "rolled_back") {
        EXIT_ROLLED_BACK
    } else {
        0
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
    fn event(&mut self, event: &Value) -> Option<String> {
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
    fn event(&mut self, event: &Value) -> Option<String> {
        let kind = event["kind"].as_str().unwrap_or("");
        let phase = event["phase"].as_str().unwrap_or("");
        let message = event["message"].as_str().unwrap_or("");
        let instance = event["instance"].as_str();
        match kind {
            "phase_started" => self.phase = Some((phase.to_string(), Instant::now())),
            "phase_finished" => {
                self.clear_line();
                let ms = event["duration_ms"].as_u64().unwrap_or(0);
                let ok = message.contains(" done ");
                let mark = if ok { "✓" } else { "✗" };
                println!("{} {mark} {:<9} {}", self.id, phase, fmt_ms(ms));
                self.phase = None;
            }
            "warning" | "error" => {
                self.clear_line();
                let who = instance.map(|i| format!("{i}: ")).unwrap_or_default();
                println!("{}   {kind}: {who}{message}", self.id);
            }
            "info" if !self.tty => {
                let who = instance.map(|i| format!("{i}: ")).unwrap_or_default();
                println!("{}   {who}{message}", self.id);
            }
            "outcome" => {
                self.clear_line();
                let outcome = event["outcome"].as_str().unwrap_or("unknown").to_string();
                println!("{} {message}", self.id);
                return Some(outcome);
            }
            _ => {}
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

    fn status(outcomes: &[&str]) -> u8 {
        exit_status(&outcomes.iter().map(|o| o.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn interrupted_exits_non_zero_like_failed() {
        assert_eq!(status(&["interrupted"]), EXIT_FAILED);
        assert_eq!(status(&["succeeded", "interrupted"]), EXIT_FAILED);
        assert_eq!(status(&["rolled_back", "interrupted"]), EXIT_FAILED);
    }

    #[test]
    fn the_worst_outcome_wins() {
        assert_eq!(status(&["succeeded"]), 0);
        assert_eq!(status(&["succeeded", "rolled_back"]), EXIT_ROLLED_BACK);
        assert_eq!(status(&["failed", "rolled_back"]), EXIT_FAILED);
        assert_eq!(status(&[]), 0);
    }
}
