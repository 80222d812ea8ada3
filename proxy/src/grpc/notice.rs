//! When an open gRPC call is ended because its backend drains (a deploy)
//! or cutover stops, and when it is left alone.
//!
//! The rule (SPEC §4 "gRPC and other HTTP/2 streams"): at a moment picked
//! at random within `long_lived.spread` of the drain (the *notice point*,
//! spread like WebSocket closes), an open call gets `long_lived.close_grace`
//! to end on its own; then it is ended with `grpc-status: 14` at the next
//! message boundary. A call that is *being answered* at the notice point
//! (its request complete, no response head yet: a unary call in the
//! backend's hands) is never ended: it is an in-flight request, which runs
//! until its answer or `drain_timeout` (the drain waits for its claim). Its
//! grace starts only when its response head arrives, so the message and
//! trailers that usually come with it pass; a unary call never loses its
//! answer to the notice.
//!
//! ```text
//! Open ─drain/stop─▶ Due(at) ─at─▶ Grace(at + close_grace) ─▶ end at a boundary
//!                             └──▶ Answering ─response head─▶ Grace
//!        (a call whose request ended during its grace, with no head yet,
//!         goes back to Answering)
//! ```

use tokio::sync::watch;
use tokio::time::Instant;

use crate::longlived::{jittered, until_stopped, until_true, CloseReason, LongLivedSettings, Stop};

/// What the notice needs to know about the call right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The response head went to the client.
    pub head_sent: bool,
    /// The client may still send request messages.
    pub request_open: bool,
    /// No response message is half forwarded.
    pub at_boundary: bool,
}

impl Call {
    /// Is the call open-ended (streaming) rather than being answered?
    fn streaming(self) -> bool {
        self.head_sent || self.request_open
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The notice point.
    Due(Instant, CloseReason),
    /// Past the notice point while the backend answers; waits for the head.
    Answering(CloseReason),
    /// The call may end on its own until then.
    Grace(Instant, CloseReason),
    /// Grace is over: end after the message in flight.
    Ending(CloseReason),
}

/// One call's notice.
#[derive(Debug)]
pub struct Notice {
    state: State,
    settings: LongLivedSettings,
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<Stop>,
    drain_seen: bool,
    shutdown_seen: bool,
}

impl Notice {
    /// A notice watching a backend's drain signal and cutover's stop.
    pub fn new(drain: watch::Receiver<bool>, shutdown: watch::Receiver<Stop>, settings: LongLivedSettings) -> Self {
        Self {
            state: State::Open,
            settings,
            drain,
            shutdown,
            drain_seen: false,
            shutdown_seen: false,
        }
    }

    /// Waits for the next signal or deadline and moves on. `Some(reason)`:
    /// end the call now (it is at a boundary). Pends forever when there is
    /// nothing left to wait for. Cancel-safe: use in `select!`, with `call`
    /// as it is when the future is created.
    pub async fn next(&mut self, call: Call) -> Option<CloseReason> {
        let deadline = match self.state {
            State::Due(at, _) | State::Grace(at, _) => Some(at),
            _ => None,
        };
        let open = matches!(self.state, State::Open);
        let before_grace = matches!(self.state, State::Open | State::Due(..) | State::Answering(_));
        tokio::select! {
            _ = until_true(self.drain.clone()), if !self.drain_seen && open => {
                self.drain_seen = true;
                self.state = State::Due(crate::time::after(jittered(self.settings.spread)), CloseReason::Drain);
                None
            }
            stop = until_stopped(self.shutdown.clone()), if !self.shutdown_seen && before_grace => {
                self.shutdown_seen = true;
                self.state = match self.state {
                    State::Due(at, _) => State::Due(at, stop),
                    State::Answering(_) => State::Answering(stop),
                    _ => State::Due(crate::time::after(jittered(self.settings.spread)), stop),
                };
                None
            }
            _ = sleep_until(deadline), if deadline.is_some() => self.deadline_passed(call),
            // Nothing left to wait for (Answering once cutover's stop was
            // seen, Ending): the call's own loop ends it; `next` must not
            // return (a `None` would spin the loop) nor panic.
            else => std::future::pending().await,
        }
    }

    /// The notice point or the end of the grace was reached.
    fn deadline_passed(&mut self, call: Call) -> Option<CloseReason> {
        match self.state {
            State::Due(_, reason) if call.streaming() => {
                self.state = State::Grace(crate::time::after(self.settings.close_grace), reason);
                None
            }
            State::Due(_, reason) => {
                self.state = State::Answering(reason);
                None
            }
            // Its request ended meanwhile: now it is being answered.
            State::Grace(_, reason) if !call.streaming() => {
                self.state = State::Answering(reason);
                None
            }
            State::Grace(_, reason) if call.at_boundary => Some(reason),
            State::Grace(_, reason) => {
                self.state = State::Ending(reason);
                None
            }
            _ => None,
        }
    }

    /// The response head went out: a call being answered gets its grace.
    pub fn head_sent(&mut self) {
        if let State::Answering(reason) = self.state {
            self.state = State::Grace(crate::time::after(self.settings.close_grace), reason);
        }
    }

    /// `Some(reason)` once the call must end at the next boundary.
    pub fn ending(&self) -> Option<CloseReason> {
        match self.state {
            State::Ending(reason) => Some(reason),
            _ => None,
        }
    }

    /// Why the call was ended (`None` while the notice has not started).
    pub fn reason(&self) -> Option<CloseReason> {
        match self.state {
            State::Open => None,
            State::Due(_, r) | State::Answering(r) | State::Grace(_, r) | State::Ending(r) => Some(r),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The grpc-message for a call ended by the proxy.
pub fn message(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Shutdown => "cutover is shutting down: retry the call",
        CloseReason::Upgrade => "cutover is restarting (upgrade): retry the call",
        _ => "the backend is restarting (deploy): retry the call",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> LongLivedSettings {
        LongLivedSettings {
            spread: Duration::from_millis(100),
            close_grace: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn longest(settings: &LongLivedSettings) -> Duration {
        settings.spread + settings.close_grace
    }

    const STREAMING: Call = Call {
        head_sent: true,
        request_open: false,
        at_boundary: true,
    };
    const ANSWERING: Call = Call {
        head_sent: false,
        request_open: false,
        at_boundary: true,
    };

    #[tokio::test(start_paused = true)]
    async fn a_streaming_call_ends_after_the_notice_point_and_its_grace() {
        let (drain, rx) = watch::channel(false);
        let (_stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        drain.send_replace(true);
        let start = Instant::now();
        assert_eq!(notice.next(STREAMING).await, None); // drain seen
        assert_eq!(notice.next(STREAMING).await, None); // notice point
        assert_eq!(notice.next(STREAMING).await, Some(CloseReason::Drain));
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert!(start.elapsed() <= longest(&settings()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_mid_message_ends_at_the_boundary() {
        let (drain, rx) = watch::channel(false);
        let (_stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        drain.send_replace(true);
        let mid = Call {
            at_boundary: false,
            ..STREAMING
        };
        for _ in 0..3 {
            assert_eq!(notice.next(mid).await, None);
        }
        assert_eq!(notice.ending(), Some(CloseReason::Drain));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_being_answered_is_never_ended_before_its_head() {
        let (drain, rx) = watch::channel(false);
        let (_stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        drain.send_replace(true);
        assert_eq!(notice.next(ANSWERING).await, None);
        assert_eq!(notice.next(ANSWERING).await, None);
        // Answering: nothing further happens, however long it takes.
        let waited = tokio::time::timeout(Duration::from_secs(3600), notice.next(ANSWERING)).await;
        assert!(waited.is_err(), "a call being answered was ended");
        // Its head arrives: the grace starts now.
        notice.head_sent();
        let start = Instant::now();
        assert_eq!(notice.next(STREAMING).await, Some(CloseReason::Drain));
        assert!(start.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_stream_that_ends_during_its_grace_is_then_being_answered() {
        let (drain, rx) = watch::channel(false);
        let (_stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        drain.send_replace(true);
        let sending = Call {
            head_sent: false,
            request_open: true,
            at_boundary: true,
        };
        assert_eq!(notice.next(sending).await, None); // drain seen
        assert_eq!(notice.next(sending).await, None); // notice point: grace
        assert_eq!(notice.next(ANSWERING).await, None); // grace over, request done
        let waited = tokio::time::timeout(Duration::from_secs(3600), notice.next(ANSWERING)).await;
        assert!(waited.is_err(), "a call being answered was ended");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_a_notice_too() {
        let (_drain, rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        stop.send_replace(Stop::Shutdown);
        assert_eq!(notice.next(STREAMING).await, None);
        assert_eq!(notice.next(STREAMING).await, None);
        assert_eq!(notice.next(STREAMING).await, Some(CloseReason::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hand_over_is_an_upgrade_notice() {
        let (_drain, rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        stop.send_replace(Stop::Upgrade);
        assert_eq!(notice.next(STREAMING).await, None);
        assert_eq!(notice.next(STREAMING).await, None);
        let reason = notice.next(STREAMING).await;
        assert_eq!(reason, Some(CloseReason::Upgrade));
        assert_eq!(
            message(CloseReason::Upgrade),
            "cutover is restarting (upgrade): retry the call"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_unary_call_in_the_backends_hands_at_shutdown_keeps_waiting() {
        let (_drain, rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        stop.send_replace(Stop::Shutdown);
        assert_eq!(notice.next(ANSWERING).await, None); // stop seen
        assert_eq!(notice.next(ANSWERING).await, None); // notice point: answering
        let waited = tokio::time::timeout(Duration::from_secs(3600), notice.next(ANSWERING)).await;
        assert!(waited.is_err(), "a call being answered was ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_answered_after_a_drain_keeps_waiting_when_cutover_stops() {
        let (drain, rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        drain.send_replace(true);
        assert_eq!(notice.next(ANSWERING).await, None); // drain seen
        assert_eq!(notice.next(ANSWERING).await, None); // notice point: answering
        stop.send_replace(Stop::Shutdown);
        assert_eq!(notice.next(ANSWERING).await, None); // stop seen
        let waited = tokio::time::timeout(Duration::from_secs(3600), notice.next(ANSWERING)).await;
        assert!(waited.is_err(), "a call being answered was ended");
        assert_eq!(notice.reason(), Some(CloseReason::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_ending_mid_message_keeps_waiting() {
        let (drain, rx) = watch::channel(false);
        let (_stop, stop_rx) = watch::channel(Stop::Running);
        let mut notice = Notice::new(rx, stop_rx, settings());
        drain.send_replace(true);
        let mid = Call {
            at_boundary: false,
            ..STREAMING
        };
        for _ in 0..3 {
            assert_eq!(notice.next(mid).await, None);
        }
        // Ending: the stream loop ends the call at the boundary, not the notice.
        let waited = tokio::time::timeout(Duration::from_secs(3600), notice.next(mid)).await;
        assert!(waited.is_err(), "the notice had nothing to wait for");
        assert_eq!(notice.ending(), Some(CloseReason::Drain));
    }

    /// Every state, with every signal seen or not: `next` waits (or
    /// moves on) and never finds all its branches disabled.
    #[tokio::test(start_paused = true)]
    async fn no_state_leaves_the_notice_without_anything_to_wait_for() {
        let at = Instant::now() + Duration::from_secs(1);
        let states = [
            State::Open,
            State::Due(at, CloseReason::Drain),
            State::Answering(CloseReason::Drain),
            State::Grace(at, CloseReason::Shutdown),
            State::Ending(CloseReason::Drain),
        ];
        for state in states {
            for drain_seen in [false, true] {
                for shutdown_seen in [false, true] {
                    let (_drain, rx) = watch::channel(false);
                    let (_stop, stop_rx) = watch::channel(Stop::Running);
                    let mut notice = Notice::new(rx, stop_rx, settings());
                    notice.state = state;
                    notice.drain_seen = drain_seen;
                    notice.shutdown_seen = shutdown_seen;
                    let mid = Call {
                        at_boundary: false,
                        ..STREAMING
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(3600), notice.next(mid)).await;
                }
            }
        }
    }
}
