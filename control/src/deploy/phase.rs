//! The deploy state machine: phases, outcomes and the one transition
//! function (SPEC §4).
//!
//! ```text
//! rolling:    build ─▶ clone ─▶ route ─▶ upgrade ─▶ switch ─▶ done
//!               │        │                  │          ▲
//!               ▼        ▼                  ▼          │ ok (rolled back)
//!             failed   failed            rollback ─────┘
//!                                           │ fails: clones become the originals
//!                                           ▼
//!                                       rolled_back
//!
//! stopstart:  build ─▶ stop ─▶ start ─▶ done
//!               │                │        ▲
//!               ▼                ▼        │ ok (rolled back)
//!             failed          rollback ───┘
//!                                │ fails
//!                                ▼
//!                              failed
//!
//! canary:     build ─▶ canary ─▶ steps ─▶ promote ─▶ done
//!               │        │         │ breach / abort
//!               ▼        ▼         ▼
//!             failed   failed   rollback ─▶ rolled_back (aborted)
//!
//! bluegreen:  build ─▶ green ─▶ swap ─▶ done
//!               │        │ └─ abort ─▶ rollback ─▶ aborted
//!               ▼        ▼
//!             failed   failed
//! ```
//!
//! `cutover abort` is honoured at the next transition out of a phase that
//! comes before the new version serves alone ([`abortable`]): the
//! deployment takes the way back (rolling: the rollback path; stopstart:
//! restart the previous version; canary: the rollback; bluegreen: the
//! green set is stopped) and ends `aborted`. Once the new version serves
//! alone, an abort changes nothing.

use serde::{Deserialize, Serialize};

use crate::config::Strategy;

/// A step of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Run `hooks.build`; nothing has changed yet.
    Build,
    /// rolling: start one clone per instance on the current version.
    Clone,
    /// rolling: swap traffic to the clones; drain and stop the originals.
    Route,
    /// rolling: start the originals on the new version; `hooks.deploy`.
    Upgrade,
    /// rolling: swap traffic back to the originals; drain and stop the
    /// clones; `hooks.post_deploy`.
    Switch,
    /// stopstart: take the app out of the table (requests hold); drain and
    /// stop its instances.
    Stop,
    /// stopstart: start the new version; `hooks.deploy`; serve it;
    /// `hooks.post_deploy`.
    Start,
    /// Start the previous version again in the original slots; canary:
    /// the canaries leave the table, drain and stop.
    Rollback,
    /// canary: start the new version's instances beside the stable ones.
    Canary,
    /// canary: walk the steps, the analysis judging each one.
    Steps,
    /// canary: the new version serves alone; the stable instances drain
    /// and stop.
    Promote,
    /// bluegreen: start a full set of the new version.
    Green,
    /// bluegreen: one table swap to the green set; the previous set stays
    /// warm (no traffic) for `keep_previous`.
    Swap,
    /// Record the outcome.
    Done,
}

impl Phase {
    /// Every phase, for metrics that show one series per phase.
    pub const ALL: [Phase; 14] = [
        Phase::Build,
        Phase::Clone,
        Phase::Route,
        Phase::Upgrade,
        Phase::Switch,
        Phase::Stop,
        Phase::Start,
        Phase::Rollback,
        Phase::Canary,
        Phase::Steps,
        Phase::Promote,
        Phase::Green,
        Phase::Swap,
        Phase::Done,
    ];

    /// The lowercase name used in events, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Build => "build",
            Phase::Clone => "clone",
            Phase::Route => "route",
            Phase::Upgrade => "upgrade",
            Phase::Switch => "switch",
            Phase::Stop => "stop",
            Phase::Start => "start",
            Phase::Rollback => "rollback",
            Phase::Canary => "canary",
            Phase::Steps => "steps",
            Phase::Promote => "promote",
            Phase::Green => "green",
            Phase::Swap => "swap",
            Phase::Done => "done",
        }
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new version serves.
    Succeeded,
    /// Nothing changed (build or clone failed), or (stopstart) even the
    /// previous version could not be started again.
    Failed,
    /// The new version never got ready; the previous version serves.
    RolledBack,
    /// cutover stopped (SIGTERM) or was killed during it; the last
    /// committed version serves at the next start.
    Interrupted,
    /// Stopped by `cutover abort`; the previous version serves.
    Aborted,
}

impl Outcome {
    /// Every outcome, for series created at 0.
    pub const ALL: [Outcome; 5] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::Interrupted,
        Outcome::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Interrupted => "interrupted",
            Outcome::Aborted => "aborted",
        }
    }
}

/// What follows a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Phase(Phase),
    Finish(Outcome),
}

/// What the driver knows besides the phase that ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// A rollback phase succeeded: `done` reports `rolled_back`.
    pub rolling_back: bool,
    /// `cutover abort` was honoured (see [`abortable`]): the way back is
    /// taken and `done` reports `aborted`.
    pub aborting: bool,
}

/// Whether an abort requested while `phase` ran is honoured when it ends:
/// the phase comes before the new version serves alone.
pub fn abortable(strategy: Strategy, phase: Phase) -> bool {
    use Phase::*;
    match strategy {
        Strategy::Rolling => matches!(phase, Build | Clone | Route | Upgrade),
        Strategy::Stopstart => matches!(phase, Build | Stop),
        Strategy::Canary => matches!(phase, Build | Canary | Steps),
        Strategy::Bluegreen => matches!(phase, Build | Green),
    }
}

/// Whether an abort requested now could no longer happen: the deployment
/// is in a phase after which its new version serves alone, or already
/// going back (`rollback`). Before its first phase it can still be aborted.
pub fn too_late_to_abort(strategy: Strategy, phase: Option<Phase>) -> bool {
    match phase {
        None => false,
        Some(Phase::Rollback) => true,
        Some(phase) => !abortable(strategy, phase),
    }
}

/// The transition function: where a deployment goes after `phase` ended
/// with `ok`, given `flags`.
pub fn transition(strategy: Strategy, phase: Phase, ok: bool, flags: Flags) -> Next {
    use Next::{Finish, Phase as Go};
    use Phase::*;
    let back = if flags.aborting {
        Outcome::Aborted
    } else {
        Outcome::RolledBack
    };
    match (strategy, phase, ok) {
        (_, Build, true) if flags.aborting => Finish(Outcome::Aborted),
        (_, Build, true) => match strategy {
            Strategy::Rolling => Go(Clone),
            Strategy::Stopstart => Go(Stop),
            Strategy::Canary => Go(Canary),
            Strategy::Bluegreen => Go(Green),
        },
        (_, Build, false) => Finish(Outcome::Failed),

        // Aborted with the clones ready: the switch back to the originals
        // (which never stopped) removes them.
        (Strategy::Rolling, Clone, true) if flags.aborting => Go(Switch),
        (Strategy::Rolling, Clone, true) => Go(Route),
        (Strategy::Rolling, Clone, false) => Finish(Outcome::Failed),
        (Strategy::Rolling, Route, _) if flags.aborting => Go(Rollback),
        (Strategy::Rolling, Route, _) => Go(Upgrade),
        (Strategy::Rolling, Upgrade, true) if !flags.aborting => Go(Switch),
        (Strategy::Rolling, Upgrade, _) => Go(Rollback),
        (Strategy::Rolling, Rollback, true) => Go(Switch),
        // The clones stay and become the originals: still the old version.
        (Strategy::Rolling, Rollback, false) => Finish(back),
        (Strategy::Rolling, Switch, _) => Go(Done),

        (Strategy::Stopstart, Stop, _) if flags.aborting => Go(Rollback),
        (Strategy::Stopstart, Stop, _) => Go(Start),
        (Strategy::Stopstart, Start, true) => Go(Done),
        (Strategy::Stopstart, Start, false) => Go(Rollback),
        (Strategy::Stopstart, Rollback, true) => Go(Done),
        (Strategy::Stopstart, Rollback, false) => Finish(Outcome::Failed),

        (Strategy::Canary, Canary, true) if flags.aborting => Go(Rollback),
        (Strategy::Canary, Canary, true) => Go(Steps),
        (Strategy::Canary, Canary, false) => Finish(Outcome::Failed),
        (Strategy::Canary, Steps, true) if !flags.aborting => Go(Promote),
        (Strategy::Canary, Steps, _) => Go(Rollback),
        // The stable instances never stopped: whatever the canaries did,
        // the previous version serves.
        (Strategy::Canary, Rollback, _) => Finish(back),
        (Strategy::Canary, Promote, _) => Go(Done),

        (Strategy::Bluegreen, Green, true) if flags.aborting => Go(Rollback),
        (Strategy::Bluegreen, Green, true) => Go(Swap),
        (Strategy::Bluegreen, Green, false) => Finish(Outcome::Failed),
        (Strategy::Bluegreen, Swap, _) => Go(Done),
        // The green set is stopped; the previous set never stopped.
        (Strategy::Bluegreen, Rollback, _) => Finish(back),

        (_, Done, _) => Finish(if flags.aborting {
            Outcome::Aborted
        } else if flags.rolling_back {
            Outcome::RolledBack
        } else {
            Outcome::Succeeded
        }),

        // Phases that do not belong to the strategy end it as failed; the
        // driver never asks for them.
        (Strategy::Rolling, Stop | Start | Canary | Steps | Promote | Green | Swap, _)
        | (Strategy::Stopstart, Clone | Route | Upgrade | Switch | Canary | Steps | Promote | Green | Swap, _)
        | (Strategy::Canary, Clone | Route | Upgrade | Switch | Stop | Start | Green | Swap, _)
        | (Strategy::Bluegreen, Clone | Route | Upgrade | Switch | Stop | Start | Canary | Steps | Promote, _) => {
            Finish(Outcome::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Next::{Finish, Phase as Go};
    use Phase::*;

    fn walk(strategy: Strategy, fails: &[Phase]) -> (Vec<Phase>, Outcome) {
        walk_aborting(strategy, fails, None)
    }

    /// Walks the machine with the given results per phase (missing = ok),
    /// an abort requested while `abort_in` runs.
    fn walk_aborting(strategy: Strategy, fails: &[Phase], abort_in: Option<Phase>) -> (Vec<Phase>, Outcome) {
        let mut phase = Build;
        let mut seen = vec![Build];
        let mut flags = Flags::default();
        let mut failed_once = Vec::new();
        let mut abort_requested = false;
        loop {
            // A phase fails at most once (the rollback's switch must work).
            let ok = !fails.contains(&phase) || failed_once.contains(&phase);
            if !ok {
                failed_once.push(phase);
            }
            if phase == Rollback && ok {
                flags.rolling_back = true;
            }
            abort_requested |= abort_in == Some(phase);
            if abort_requested && abortable(strategy, phase) {
                flags.aborting = true;
            }
            match transition(strategy, phase, ok, flags) {
                Go(next) => {
                    seen.push(next);
                    phase = next;
                }
                Finish(outcome) => return (seen, outcome),
            }
        }
    }

    #[test]
    fn rolling_happy_path() {
        let (phases, outcome) = walk(Strategy::Rolling, &[]);
        assert_eq!(phases, [Build, Clone, Route, Upgrade, Switch, Done]);
        assert_eq!(outcome, Outcome::Succeeded);
    }

    #[test]
    fn rolling_build_or_clone_failure_changes_nothing() {
        assert_eq!(walk(Strategy::Rolling, &[Build]), (vec![Build], Outcome::Failed));
        assert_eq!(walk(Strategy::Rolling, &[Clone]), (vec![Build, Clone], Outcome::Failed));
    }

    #[test]
    fn rolling_upgrade_failure_rolls_back_through_switch() {
        let (phases, outcome) = walk(Strategy::Rolling, &[Upgrade]);
        assert_eq!(phases, [Build, Clone, Route, Upgrade, Rollback, Switch, Done]);
        assert_eq!(outcome, Outcome::RolledBack);
    }

    #[test]
    fn rolling_failed_rollback_keeps_the_clones_and_is_rolled_back() {
        let (phases, outcome) = walk(Strategy::Rolling, &[Upgrade, Rollback]);
        assert_eq!(phases, [Build, Clone, Route, Upgrade, Rollback]);
        assert_eq!(outcome, Outcome::RolledBack);
    }

    #[test]
    fn stopstart_paths() {
        assert_eq!(
            walk(Strategy::Stopstart, &[]),
            (vec![Build, Stop, Start, Done], Outcome::Succeeded)
        );
        assert_eq!(walk(Strategy::Stopstart, &[Build]), (vec![Build], Outcome::Failed));
        assert_eq!(
            walk(Strategy::Stopstart, &[Start]),
            (vec![Build, Stop, Start, Rollback, Done], Outcome::RolledBack)
        );
        assert_eq!(
            walk(Strategy::Stopstart, &[Start, Rollback]),
            (vec![Build, Stop, Start, Rollback], Outcome::Failed)
        );
    }

    #[test]
    fn phases_of_the_other_strategy_fail() {
        assert_eq!(
            transition(Strategy::Stopstart, Clone, true, Flags::default()),
            Finish(Outcome::Failed)
        );
        assert_eq!(
            transition(Strategy::Rolling, Stop, true, Flags::default()),
            Finish(Outcome::Failed)
        );
        assert_eq!(
            transition(Strategy::Bluegreen, Steps, true, Flags::default()),
            Finish(Outcome::Failed)
        );
    }

    #[test]
    fn canary_paths() {
        assert_eq!(
            walk(Strategy::Canary, &[]),
            (vec![Build, Canary, Steps, Promote, Done], Outcome::Succeeded)
        );
        assert_eq!(
            walk(Strategy::Canary, &[Canary]),
            (vec![Build, Canary], Outcome::Failed),
            "canaries that never got ready changed nothing"
        );
        assert_eq!(
            walk(Strategy::Canary, &[Steps]),
            (vec![Build, Canary, Steps, Rollback], Outcome::RolledBack),
            "a breach rolls back"
        );
        assert_eq!(
            walk_aborting(Strategy::Canary, &[Steps], Some(Steps)),
            (vec![Build, Canary, Steps, Rollback], Outcome::Aborted)
        );
        assert_eq!(
            walk_aborting(Strategy::Canary, &[], Some(Canary)),
            (vec![Build, Canary, Rollback], Outcome::Aborted)
        );
        assert_eq!(
            walk_aborting(Strategy::Canary, &[], Some(Promote)),
            (vec![Build, Canary, Steps, Promote, Done], Outcome::Succeeded),
            "too late once the canaries serve alone"
        );
    }

    #[test]
    fn bluegreen_paths() {
        assert_eq!(
            walk(Strategy::Bluegreen, &[]),
            (vec![Build, Green, Swap, Done], Outcome::Succeeded)
        );
        assert_eq!(
            walk(Strategy::Bluegreen, &[Green]),
            (vec![Build, Green], Outcome::Failed)
        );
        assert_eq!(
            walk_aborting(Strategy::Bluegreen, &[], Some(Green)),
            (vec![Build, Green, Rollback], Outcome::Aborted)
        );
        assert_eq!(
            walk_aborting(Strategy::Bluegreen, &[], Some(Swap)),
            (vec![Build, Green, Swap, Done], Outcome::Succeeded)
        );
    }

    #[test]
    fn abort_takes_the_way_back_of_rolling_and_stopstart() {
        assert_eq!(
            walk_aborting(Strategy::Rolling, &[], Some(Build)),
            (vec![Build], Outcome::Aborted)
        );
        assert_eq!(
            walk_aborting(Strategy::Rolling, &[], Some(Clone)),
            (vec![Build, Clone, Switch, Done], Outcome::Aborted),
            "the clones go, the originals never stopped"
        );
        assert_eq!(
            walk_aborting(Strategy::Rolling, &[], Some(Upgrade)),
            (
                vec![Build, Clone, Route, Upgrade, Rollback, Switch, Done],
                Outcome::Aborted
            )
        );
        assert_eq!(
            walk_aborting(Strategy::Rolling, &[], Some(Switch)),
            (vec![Build, Clone, Route, Upgrade, Switch, Done], Outcome::Succeeded)
        );
        assert_eq!(
            walk_aborting(Strategy::Stopstart, &[], Some(Stop)),
            (vec![Build, Stop, Rollback, Done], Outcome::Aborted)
        );
        assert_eq!(
            walk_aborting(Strategy::Stopstart, &[], Some(Start)),
            (vec![Build, Stop, Start, Done], Outcome::Succeeded)
        );
    }

    #[test]
    fn an_abort_is_too_late_once_the_new_version_serves_alone_or_it_goes_back() {
        use Phase::*;
        for (strategy, late) in [
            (Strategy::Rolling, Switch),
            (Strategy::Stopstart, Start),
            (Strategy::Canary, Promote),
            (Strategy::Bluegreen, Swap),
            (Strategy::Canary, Rollback),
        ] {
            assert!(too_late_to_abort(strategy, Some(late)), "{strategy:?} {late:?}");
        }
        for (strategy, early) in [
            (Strategy::Rolling, Upgrade),
            (Strategy::Stopstart, Stop),
            (Strategy::Canary, Steps),
            (Strategy::Bluegreen, Green),
        ] {
            assert!(!too_late_to_abort(strategy, Some(early)), "{strategy:?} {early:?}");
        }
        assert!(!too_late_to_abort(Strategy::Rolling, None));
    }
}
