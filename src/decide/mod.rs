//! The decision of a sync run, in one place: the facts it asks for, in order, and the step it returns.
//!
//! A run is facts → one decision → act. [`decide`] is the only place that says what a run does, and it
//! reads like the design note it implements:
//!
//! 1. **Suspended** (`gitops suspend`) beats everything: nothing is fetched, nothing applied.
//! 2. **The change probe** may end the run before any fetch (a 304 after a clean success), except when
//!    a reconcile is due (or given up on for this period): the probe cannot see drift on the host.
//! 3. **Fetch**, then compare the remote commit with what this host runs ([`ancestry`]): up to date, a
//!    reason to apply it, or a rewind or divergence to refuse (need-push, diverged).
//!    **Rolled back** first: a commit this host rolled back from is not tried again until a newer commit
//!    or `--retry` (the host stays on the commit before, exit 33); a rollback that a killed run left
//!    unfinished, or that failed, is resumed (up to `--max-attempts`, then exit 34 until a newer commit).
//! 4. Up to date: **reconcile** when `--reapply-every` says the live commit is due, give up on it for
//!    this period after `--max-attempts` failures, else nothing to do.
//! 5. **Trust**: a commit not signed as required is rejected before anything else reads it.
//! 6. **Rollout**: the policy in the commit may hold this host (wave, gate, pause) — never for a re-run
//!    of the live commit (reapply, reconcile) nor for this host's own testing branch.
//! 7. **Attempts**: a commit that failed `--max-attempts` times in a row is given up until a newer one
//!    arrives or `--retry`; a reconcile counts its own attempts.
//!
//! The answers come from a [`Facts`] implementation at the edge (state directory, network, repository);
//! each question is asked only when its answer can change the step, so a no-op poll reads no policy and
//! verifies nothing. The table tests below answer with plain values.

pub mod ancestry;
pub mod attempt;
pub mod rollback;

use gix::ObjectId;

pub use ancestry::{Allowed, Decision, History, Refusal, Why};
pub use attempt::{Attempt, plan_attempt};

use crate::outcome::{Failure, Outcome};
use crate::reconcile::Due;
use crate::rollout::Hold;

/// The questions [`decide`] asks, answered at the edge.
pub trait Facts {
    /// Whether `gitops suspend` holds this host now.
    fn suspended(&mut self) -> Result<bool, Failure>;
    /// Whether the change probe says nothing changed since the last clean run (false without a probe).
    fn probe_unchanged(&mut self) -> bool;
    /// What `--reapply-every` says about the deployed commit (`NotYet` when it is off or nothing is deployed).
    fn reconcile(&mut self) -> Due;
    /// Fetch, and say what the remote commit (the branch tip, or this host's testing commit) is to this host.
    fn target(&mut self) -> Result<Target, Failure>;
    /// Whether the target is signed as the trust settings require (true without them).
    fn verified(&mut self) -> Result<bool, Failure>;
    /// What the rollout policy in the target says for this host: `Some` holds it.
    fn hold(&mut self, why: Why) -> Result<Option<Hold>, Failure>;
    /// The commit whose last attempt failed, and how many times in a row.
    fn last_failure(&mut self) -> Result<Option<(ObjectId, u32)>, Failure>;
    /// The last automatic rollback, from state.json.
    fn rollback(&mut self) -> Result<Option<Rollback>, Failure>;
}

/// An automatic rollback as state.json records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    /// The commit that failed.
    pub from: ObjectId,
    /// The commit gone back to.
    pub to: ObjectId,
    /// It finished and worked.
    pub done: bool,
    /// Tries at going back so far.
    pub attempts: u32,
}

/// What the fetched remote commit is to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The commit decided about.
    pub commit: ObjectId,
    /// Up to date, apply (why) or refuse (why), testing branches taken into account.
    pub decision: Decision,
    /// It is this host's own testing commit, which no rollout policy holds.
    pub testing: bool,
}

/// The operator's limits on attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-attempts`.
    pub max_attempts: u32,
    /// `--retry`: one more attempt at a commit given up on.
    pub retry: bool,
}

/// What the run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `gitops suspend` holds the host: nothing fetched, nothing applied.
    Suspended,
    /// The change probe said nothing changed: nothing fetched.
    Unchanged,
    /// The remote commit is the live, applied one, and no reconcile is due.
    UpToDate,
    /// The remote moved backwards or sideways: nothing changes.
    Refuse(Refusal),
    /// The commit is not signed as required: nothing changes.
    Reject,
    /// The commit failed `failures` times in a row (a reconcile: within this period): not run again now.
    GiveUp {
        /// Consecutive failures.
        failures: u32,
        /// It is the live commit's reconcile that is given up on.
        reconcile: bool,
    },
    /// The rollout policy holds the host; `released` is what it would do once let through (a dry run
    /// prints it): an `Apply` or a `GiveUp`.
    Hold {
        /// Why, and until when.
        hold: Hold,
        /// The step once released.
        released: Box<Step>,
    },
    /// The target is the commit this host rolled back from: it stays on the commit before.
    RolledBack {
        /// The failed commit.
        from: ObjectId,
        /// The live commit it went back to.
        to: ObjectId,
    },
    /// Go back (again) from `from` to `to`: a rollback a killed run left unfinished, or that failed.
    RollBack {
        /// The failed commit.
        from: ObjectId,
        /// The commit to go back to.
        to: ObjectId,
        /// Which try at going back this is.
        attempt: u32,
    },
    /// Going back failed `failures` times: left for an operator (or a newer commit).
    RollbackGivenUp {
        /// Consecutive failed tries at going back.
        failures: u32,
    },
    /// Run the entrypoint for the target.
    Apply {
        /// Why it is applied.
        why: Why,
        /// Which attempt at the commit this is (1-based).
        attempt: u32,
    },
}

impl Step {
    /// How a run that takes this step ends, when that is known before acting (`Apply` ends as the
    /// entrypoint does).
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Step::Suspended => Some(Outcome::Deferred),
            // A hold that cannot end by itself is an error for the operator, not a wait.
            Step::Hold { hold, .. } => Some(hold.mistake().unwrap_or(Outcome::Deferred)),
            Step::Unchanged | Step::UpToDate => Some(Outcome::UpToDate),
            Step::Refuse(Refusal::NeedPush) => Some(Outcome::NeedPush),
            Step::Refuse(Refusal::Diverged) => Some(Outcome::Diverged),
            Step::Reject => Some(Outcome::VerifyFailed),
            Step::GiveUp { .. } => Some(Outcome::ApplyFailed),
            Step::RolledBack { .. } => Some(Outcome::RolledBack),
            Step::RollbackGivenUp { .. } => Some(Outcome::RollbackFailed),
            Step::Apply { .. } | Step::RollBack { .. } => None,
        }
    }
}

/// Decide the run's step, asking `facts` in the order of the module's list.
pub fn decide(facts: &mut impl Facts, limits: Limits) -> Result<Step, Failure> {
    if facts.suspended()? {
        return Ok(Step::Suspended);
    }
    if facts.probe_unchanged() && facts.reconcile() == Due::NotYet {
        return Ok(Step::Unchanged);
    }
    let target = facts.target()?;
    let rolled_back = facts.rollback()?.filter(|r| r.from == target.commit && !limits.retry);
    if let Some(Rollback { from, to, done, attempts }) = rolled_back {
        return Ok(match done {
            true => Step::RolledBack { from, to },
            false if attempts >= limits.max_attempts => Step::RollbackGivenUp { failures: attempts },
            false => Step::RollBack { from, to, attempt: attempts + 1 },
        });
    }
    let (why, reconcile_attempt) = match target.decision {
        Decision::Refuse(refusal) => return Ok(Step::Refuse(refusal)),
        Decision::Apply(why) => (why, None),
        Decision::UpToDate => match facts.reconcile() {
            Due::NotYet => return Ok(Step::UpToDate),
            Due::GaveUp(failures) => return Ok(Step::GiveUp { failures, reconcile: true }),
            Due::Run(attempt) => (Why::Reconcile, Some(attempt)),
        },
    };
    if !facts.verified()? {
        return Ok(Step::Reject);
    }
    // Re-running the live commit is not a rollout of it, and a testing branch is this host's alone.
    let rerun = matches!(why, Why::Reapply | Why::Reconcile);
    let hold = if rerun || target.testing { None } else { facts.hold(why)? };
    let step = match reconcile_attempt {
        Some(attempt) => Step::Apply { why, attempt },
        None => match plan_attempt(target.commit, facts.last_failure()?, limits.max_attempts, limits.retry) {
            Attempt::Run(attempt) => Step::Apply { why, attempt },
            Attempt::GiveUp(failures) => Step::GiveUp { failures, reconcile: false },
        },
    };
    Ok(match hold {
        Some(hold) => Step::Hold { hold, released: Box::new(step) },
        None => step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    /// Plain answers, and the questions asked (to pin what a step costs).
    #[derive(Clone)]
    struct Answers {
        suspended: bool,
        probe_unchanged: bool,
        reconcile: Due,
        decision: Decision,
        testing: bool,
        verified: bool,
        hold: Option<Hold>,
        last_failure: Option<(ObjectId, u32)>,
        rollback: Option<Rollback>,
        asked: Vec<&'static str>,
    }

    impl Default for Answers {
        fn default() -> Self {
            Answers {
                suspended: false,
                probe_unchanged: false,
                reconcile: Due::NotYet,
                decision: Decision::UpToDate,
                testing: false,
                verified: true,
                hold: None,
                last_failure: None,
                rollback: None,
                asked: Vec::new(),
            }
        }
    }

    impl Facts for Answers {
        fn suspended(&mut self) -> Result<bool, Failure> {
            self.asked.push("suspended");
            Ok(self.suspended)
        }
        fn probe_unchanged(&mut self) -> bool {
            self.asked.push("probe");
            self.probe_unchanged
        }
        fn reconcile(&mut self) -> Due {
            self.asked.push("reconcile");
            self.reconcile
        }
        fn target(&mut self) -> Result<Target, Failure> {
            self.asked.push("fetch");
            Ok(Target { commit: id(2), decision: self.decision, testing: self.testing })
        }
        fn verified(&mut self) -> Result<bool, Failure> {
            self.asked.push("trust");
            Ok(self.verified)
        }
        fn hold(&mut self, _why: Why) -> Result<Option<Hold>, Failure> {
            self.asked.push("policy");
            Ok(self.hold.clone())
        }
        fn last_failure(&mut self) -> Result<Option<(ObjectId, u32)>, Failure> {
            self.asked.push("attempts");
            Ok(self.last_failure)
        }
        fn rollback(&mut self) -> Result<Option<Rollback>, Failure> {
            self.asked.push("rolled back?");
            Ok(self.rollback)
        }
    }

    const LIMITS: Limits = Limits { max_attempts: 3, retry: false };

    fn wave() -> Hold {
        Hold { kind: "wave", message: "waiting for the wave".into(), until: Some(100) }
    }

    fn run(answers: &Answers) -> (Step, Vec<&'static str>) {
        run_with(answers, LIMITS)
    }

    fn run_with(answers: &Answers, limits: Limits) -> (Step, Vec<&'static str>) {
        let mut answers = answers.clone();
        let step = decide(&mut answers, limits).unwrap_or_else(|f| panic!("{}", f.message()));
        (step, answers.asked)
    }

    fn apply(why: Why, attempt: u32) -> Step {
        Step::Apply { why, attempt }
    }

    /// Every step and every reason, with the questions each one asks.
    #[test]
    fn table() {
        let new = Decision::Apply(Why::FastForward);
        let base = Answers::default();
        let cases: Vec<(&str, Answers, Step, &[&str])> = vec![
            (
                "suspended beats everything",
                Answers { suspended: true, probe_unchanged: true, decision: new, ..base.clone() },
                Step::Suspended,
                &["suspended"],
            ),
            (
                "the probe's 304 ends a clean run",
                Answers { probe_unchanged: true, ..base.clone() },
                Step::Unchanged,
                &["suspended", "probe", "reconcile"],
            ),
            (
                "a due reconcile beats a 304",
                Answers { probe_unchanged: true, reconcile: Due::Run(1), ..base.clone() },
                apply(Why::Reconcile, 1),
                &["suspended", "probe", "reconcile", "fetch", "rolled back?", "reconcile", "trust"],
            ),
            (
                "a given-up reconcile beats a 304 too",
                Answers { probe_unchanged: true, reconcile: Due::GaveUp(3), ..base.clone() },
                Step::GiveUp { failures: 3, reconcile: true },
                &["suspended", "probe", "reconcile", "fetch", "rolled back?", "reconcile"],
            ),
            (
                "a no-op verifies nothing and reads no policy",
                base.clone(),
                Step::UpToDate,
                &["suspended", "probe", "fetch", "rolled back?", "reconcile"],
            ),
            (
                "rewound",
                Answers { decision: Decision::Refuse(Refusal::NeedPush), ..base.clone() },
                Step::Refuse(Refusal::NeedPush),
                &["suspended", "probe", "fetch", "rolled back?"],
            ),
            (
                "force-pushed",
                Answers { decision: Decision::Refuse(Refusal::Diverged), ..base.clone() },
                Step::Refuse(Refusal::Diverged),
                &["suspended", "probe", "fetch", "rolled back?"],
            ),
            (
                "a new commit",
                Answers { decision: new, ..base.clone() },
                apply(Why::FastForward, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "the first deploy",
                Answers { decision: Decision::Apply(Why::FirstDeploy), ..base.clone() },
                apply(Why::FirstDeploy, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "allowed rewind",
                Answers { decision: Decision::Apply(Why::Rewind), ..base.clone() },
                apply(Why::Rewind, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "allowed divergence",
                Answers { decision: Decision::Apply(Why::Diverged), ..base.clone() },
                apply(Why::Diverged, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "back from a testing branch",
                Answers { decision: Decision::Apply(Why::LeaveTesting), ..base.clone() },
                apply(Why::LeaveTesting, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "unsigned: rejected before the policy",
                Answers { decision: new, verified: false, hold: Some(wave()), ..base.clone() },
                Step::Reject,
                &["suspended", "probe", "fetch", "rolled back?", "trust"],
            ),
            (
                "a retry",
                Answers { decision: new, last_failure: Some((id(2), 1)), ..base.clone() },
                apply(Why::FastForward, 2),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "another commit's failures do not count",
                Answers { decision: new, last_failure: Some((id(9), 3)), ..base.clone() },
                apply(Why::FastForward, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "given up after max attempts",
                Answers { decision: new, last_failure: Some((id(2), 3)), ..base.clone() },
                Step::GiveUp { failures: 3, reconcile: false },
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "the wave holds a new commit",
                Answers { decision: new, hold: Some(wave()), ..base.clone() },
                Step::Hold { hold: wave(), released: Box::new(apply(Why::FastForward, 1)) },
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "a hold wins over giving up",
                Answers { decision: new, hold: Some(wave()), last_failure: Some((id(2), 3)), ..base.clone() },
                Step::Hold { hold: wave(), released: Box::new(Step::GiveUp { failures: 3, reconcile: false }) },
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "a testing branch is never held by the wave",
                Answers { decision: new, testing: true, hold: Some(wave()), ..base.clone() },
                apply(Why::FastForward, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "attempts"],
            ),
            (
                "a reapply is not a rollout",
                Answers { decision: Decision::Apply(Why::Reapply), hold: Some(wave()), ..base.clone() },
                apply(Why::Reapply, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "attempts"],
            ),
            (
                "a reconcile is not a rollout and counts its own attempts",
                Answers { reconcile: Due::Run(2), hold: Some(wave()), last_failure: Some((id(2), 5)), ..base.clone() },
                apply(Why::Reconcile, 2),
                &["suspended", "probe", "fetch", "rolled back?", "reconcile", "trust"],
            ),
            (
                "a reconcile given up for this period",
                Answers { reconcile: Due::GaveUp(3), ..base.clone() },
                Step::GiveUp { failures: 3, reconcile: true },
                &["suspended", "probe", "fetch", "rolled back?", "reconcile"],
            ),
            (
                "an unsigned reconcile is rejected",
                Answers { reconcile: Due::Run(1), verified: false, ..base.clone() },
                Step::Reject,
                &["suspended", "probe", "fetch", "rolled back?", "reconcile", "trust"],
            ),
        ];
        for (name, answers, want, asked) in cases {
            let (step, questions) = run(&answers);
            assert_eq!(step, want, "{name}");
            assert_eq!(questions, asked, "{name}: the questions asked");
        }
    }

    /// The rows about automatic rollback: a commit rolled back from is not tried again; an unfinished or
    /// failed rollback is resumed, up to the attempt limit; a newer commit, or --retry, moves on.
    #[test]
    fn rollback_rows() {
        let new = Decision::Apply(Why::FastForward);
        let from_target = |done, attempts| Some(Rollback { from: id(2), to: id(1), done, attempts });
        let asked: &[&str] = &["suspended", "probe", "fetch", "rolled back?"];
        let cases: Vec<(&str, Answers, LimitsOr, Step, &[&str])> = vec![
            (
                "stays on the commit before",
                Answers { decision: new, rollback: from_target(true, 1), ..Answers::default() },
                LimitsOr::Default,
                Step::RolledBack { from: id(2), to: id(1) },
                asked,
            ),
            (
                "a killed rollback is resumed",
                Answers { decision: new, rollback: from_target(false, 1), ..Answers::default() },
                LimitsOr::Default,
                Step::RollBack { from: id(2), to: id(1), attempt: 2 },
                asked,
            ),
            (
                "a failing rollback is given up after max attempts",
                Answers { decision: new, rollback: from_target(false, 3), ..Answers::default() },
                LimitsOr::Default,
                Step::RollbackGivenUp { failures: 3 },
                asked,
            ),
            (
                "suspended beats a resume",
                Answers { suspended: true, decision: new, rollback: from_target(false, 1), ..Answers::default() },
                LimitsOr::Default,
                Step::Suspended,
                &["suspended"],
            ),
            (
                "a newer commit moves on",
                Answers {
                    decision: new,
                    rollback: Some(Rollback { from: id(7), to: id(1), done: true, attempts: 1 }),
                    ..Answers::default()
                },
                LimitsOr::Default,
                apply(Why::FastForward, 1),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
            (
                "--retry tries the failed commit again",
                Answers {
                    decision: new,
                    rollback: from_target(true, 1),
                    last_failure: Some((id(2), 1)),
                    ..Answers::default()
                },
                LimitsOr::Retry,
                apply(Why::FastForward, 2),
                &["suspended", "probe", "fetch", "rolled back?", "trust", "policy", "attempts"],
            ),
        ];
        for (name, answers, limits, want, asked) in cases {
            let limits = match limits {
                LimitsOr::Default => LIMITS,
                LimitsOr::Retry => Limits { retry: true, ..LIMITS },
            };
            let (step, questions) = run_with(&answers, limits);
            assert_eq!(step, want, "{name}");
            assert_eq!(questions, asked, "{name}: the questions asked");
        }
        assert_eq!(Step::RolledBack { from: id(2), to: id(1) }.outcome(), Some(Outcome::RolledBack));
        assert_eq!(Step::RollbackGivenUp { failures: 3 }.outcome(), Some(Outcome::RollbackFailed));
    }

    /// Which limits a row runs with.
    enum LimitsOr {
        Default,
        Retry,
    }

    #[test]
    fn retry_lifts_the_limit_once() {
        let given_up = Answers {
            decision: Decision::Apply(Why::FastForward),
            last_failure: Some((id(2), 3)),
            ..Answers::default()
        };
        let (step, _) = run_with(&given_up, Limits { max_attempts: 3, retry: true });
        assert_eq!(step, apply(Why::FastForward, 4));
    }

    #[test]
    fn outcomes_of_the_steps() {
        assert_eq!(Step::Suspended.outcome(), Some(Outcome::Deferred));
        assert_eq!(
            Step::Hold { hold: wave(), released: Box::new(apply(Why::FastForward, 1)) }.outcome(),
            Some(Outcome::Deferred)
        );
        assert_eq!(Step::Unchanged.outcome(), Some(Outcome::UpToDate));
        assert_eq!(Step::Refuse(Refusal::NeedPush).outcome(), Some(Outcome::NeedPush));
        assert_eq!(Step::Refuse(Refusal::Diverged).outcome(), Some(Outcome::Diverged));
        assert_eq!(Step::Reject.outcome(), Some(Outcome::VerifyFailed));
        assert_eq!(Step::GiveUp { failures: 3, reconcile: false }.outcome(), Some(Outcome::ApplyFailed));
        assert_eq!(apply(Why::FirstDeploy, 1).outcome(), None);
    }
}
