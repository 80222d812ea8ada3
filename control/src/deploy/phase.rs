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
//! ```

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
    /// Start the previous version again in the original slots.
    Rollback,
    /// Record the outcome.
    Done,
}

impl Phase {
    /// Every phase, for metrics that show one series per phase.
    pub const ALL: [Phase; 9] = [
        Phase::Build,
        Phase::Clone,
        Phase::Route,
        Phase::Upgrade,
        Phase::Switch,
        Phase::Stop,
        Phase::Start,
        Phase::Rollback,
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
}

impl Outcome {
    /// Every outcome, for series created at 0.
    pub const ALL: [Outcome; 4] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::RolledBack,
        Outcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What follows a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Phase(Phase),
    Finish(Outcome),
}

/// The transition function: where a deployment goes after `phase` ended
/// with `ok`. `rolling_back` is true once a rollback succeeded, so `done`
/// reports `rolled_back` rather than `succeeded`.
pub fn transition(strategy: Strategy, phase: Phase, ok: bool, rolling_back: bool) -> Next {
    use Next::{Finish, Phase as Go};
    use Phase::*;
    match (strategy, phase, ok) {
        (_, Build, true) => match strategy {
            Strategy::Rolling => Go(Clone),
            Strategy::Stopstart => Go(Stop),
        },
        (_, Build, false) => Finish(Outcome::Failed),

        (Strategy::Rolling, Clone, true) => Go(Route),
        (Strategy::Rolling, Clone, false) => Finish(Outcome::Failed),
        (Strategy::Rolling, Route, _) => Go(Upgrade),
        (Strategy::Rolling, Upgrade, true) => Go(Switch),
        (Strategy::Rolling, Upgrade, false) => Go(Rollback),
        (Strategy::Rolling, Rollback, true) => Go(Switch),
        // The clones stay and become the originals: still the old version.
        (Strategy::Rolling, Rollback, false) => Finish(Outcome::RolledBack),
        (Strategy::Rolling, Switch, _) => Go(Done),

        (Strategy::Stopstart, Stop, _) => Go(Start),
        (Strategy::Stopstart, Start, true) => Go(Done),
        (Strategy::Stopstart, Start, false) => Go(Rollback),
        (Strategy::Stopstart, Rollback, true) => Go(Done),
        (Strategy::Stopstart, Rollback, false) => Finish(Outcome::Failed),

        (_, Done, _) => Finish(if rolling_back {
            Outcome::RolledBack
        } else {
            Outcome::Succeeded
        }),

        // Phases that do not belong to the strategy end it as failed; the
        // driver never asks for them.
        (Strategy::Stopstart, Clone | Route | Upgrade | Switch, _) | (Strategy::Rolling, Stop | Start, _) => {
            Finish(Outcome::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Next::{Finish, Phase as Go};
    use Phase::*;

    /// Walks the machine with the given results per phase (missing = ok).
    fn walk(strategy: Strategy, fails: &[Phase]) -> (Vec<Phase>, Outcome) {
        let mut phase = Build;
        let mut seen = vec![Build];
        let mut rolling_back = false;
        let mut failed_once = Vec::new();
        loop {
            // A phase fails at most once (the rollback's switch must work).
            let ok = !fails.contains(&phase) || failed_once.contains(&phase);
            if !ok {
                failed_once.push(phase);
            }
            if phase == Rollback && ok {
                rolling_back = true;
            }
            match transition(strategy, phase, ok, rolling_back) {
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
            transition(Strategy::Stopstart, Clone, true, false),
            Finish(Outcome::Failed)
        );
        assert_eq!(
            transition(Strategy::Rolling, Stop, true, false),
            Finish(Outcome::Failed)
        );
    }
}
