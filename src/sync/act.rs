//! Acting on the decided step: what each one logs, records and returns, and the summary it reports.

use std::time::Instant;

use super::facts::Gather;
use super::{deploy, release, rollback};
use crate::commit_id::{short_id, short_opt};
use crate::decide::{Decision, Refusal, Step};
use crate::fetch;
use crate::notify::{Deferral, RunSummary};
use crate::outcome::{Failure, Outcome};
use crate::polling::Before;
use crate::polling::record::ProbeAnswer;
use crate::testing;

/// Carry out `step`.
pub fn act(step: Step, g: &mut Gather<'_>, summary: &mut RunSummary, started: Instant) -> Result<Outcome, Failure> {
    // Every step but an apply ends as the decision says; an apply ends as its entrypoint does.
    let decided = step.outcome().unwrap_or(Outcome::Applied);
    match step {
        Step::Suspended => {
            let message = summary.deferred.as_ref().map(|d| d.message.clone()).unwrap_or_default();
            log::info!("{message}: nothing fetched or applied");
            Ok(decided)
        }
        Step::Unchanged => {
            // Reboot settling, reporting and metrics still happen: only the fetch is skipped.
            let (branch, commit) = (summary.branch.clone().unwrap_or_default(), summary.commit.clone());
            let commit = commit.as_deref().map(crate::commit_id::short).unwrap_or("?").to_string();
            log::info!("up-to-date ({branch} {commit} per the change probe, in {:.2?})", started.elapsed());
            Ok(decided)
        }
        Step::UpToDate => {
            let fetch = g.fetched()?;
            let (route, branch) = (fetch.route.clone(), fetch.route.fetched.branch.clone());
            if testing::settle(&mut g.state, &route, &branch) && !g.settings.dry_run {
                g.save()?;
                summary.deployed_from = route.testing.clone();
            }
            let remote = short_id(route.fetched.commit);
            log::info!("up-to-date ({} {remote} in {:.2?})", super::from_label(&route), started.elapsed());
            Ok(decided)
        }
        Step::Refuse(refusal) => {
            refuse(refusal, g)?;
            Ok(decided)
        }
        Step::Reject => Ok(decided),
        Step::GiveUp { failures, reconcile } => {
            let remote = g.fetched()?.route.fetched.commit;
            let log_path = g.layout.entrypoint_log(remote);
            if reconcile {
                log::error!(
                    "reconciling {} failed {failures} times in a row; trying again one --reapply-every period after the last failure, or now with gitops sync --retry (log: {})",
                    short_id(remote),
                    log_path.display()
                );
            } else {
                log::error!(
                    "commit {} failed {failures} times in a row; not retrying it until a newer commit arrives or you run gitops sync --retry (log: {})",
                    short_id(remote),
                    log_path.display()
                );
            }
            Ok(decided)
        }
        Step::Hold { hold, released } => {
            let fetched = &g.fetched()?.route.fetched;
            let what = format!("{} {}", fetched.branch, short_id(fetched.commit));
            let mistake = hold.mistake();
            if mistake.is_none() {
                log::info!("{} ({what}): {}", Outcome::Deferred, hold.message);
            }
            // A dry run goes on to say what the host would do once released.
            let planned = match *released {
                Step::Apply { why, attempt } if g.settings.dry_run => {
                    Some(deploy::apply(g, why, attempt, Some(&hold.message), summary, started)?)
                }
                _ => None,
            };
            match mistake {
                // Held all the same (the gate cannot open), but the run fails: nothing will change by itself.
                Some(outcome) => Err(Failure { outcome, error: anyhow::anyhow!("held ({what}): {}", hold.message) }),
                None => Ok(planned.unwrap_or(decided)),
            }
        }
        Step::Apply { why, attempt } => deploy::apply(g, why, attempt, None, summary, started),
        Step::RollBack { from, to, attempt } if !g.settings.dry_run => {
            let outcome = rollback::roll_back(g, from, to, attempt, summary)?;
            release::prune(g.settings, g.layout);
            Ok(outcome)
        }
        Step::RollBack { from, to, .. } => {
            println!("would: go back from {from} to {to} (a rollback that did not finish)");
            Ok(Outcome::RolledBack)
        }
        Step::RolledBack { from, to } => {
            let why = g.state.rollback.as_ref().map(|r| r.why.clone()).unwrap_or_default();
            log::error!(
                "{} was rolled back ({why}); staying on {}, the commit before, until a newer commit arrives or you run gitops sync --retry",
                short_id(from),
                short_id(to)
            );
            summary.error = Some(format!("rolled back: {why}"));
            if g.settings.dry_run {
                println!("would: stay on {to}: {from} was rolled back ({why}); gitops sync --retry tries it again");
            }
            Ok(decided)
        }
        Step::RollbackGivenUp { failures } => {
            let record = g.state.rollback.clone();
            let (from, to) = record.as_ref().map(|r| (r.from.as_str(), r.to.as_str())).unwrap_or(("?", "?"));
            log::error!(
                "going back from {} to {} failed {failures} times; the host needs attention: fix it and run gitops sync --retry, or push a fix",
                crate::commit_id::short(from),
                crate::commit_id::short(to)
            );
            summary.error = Some(format!("rollback failed {failures} times"));
            Ok(decided)
        }
    }
}

/// What the run found and decided, for the report: filled once, whatever the step (`decided` is the
/// step, or the failure that ended the run while gathering the facts).
pub fn describe(g: &Gather<'_>, decided: Result<&Step, &Failure>, summary: &mut RunSummary) {
    let state = &g.state;
    summary.deployed_from = state.testing_base.as_ref().and(state.deployed_from.clone());
    if let Some(hold) = &g.suspension {
        let now = crate::clock::now_unix();
        let message = hold.describe(now);
        summary.deferred = Some(Deferral { kind: "suspend".into(), message, until: hold.until.clone() });
        (summary.suspended_since, summary.suspended_until) = (Some(hold.since.clone()), hold.until.clone());
        summary.suspended_reason = hold.reason.clone();
    }
    match &g.before {
        Some(Before::Unchanged { commit, branch }) if matches!(decided, Ok(Step::Unchanged)) => {
            (summary.branch, summary.previous_commit) = (Some(branch.clone()), Some(commit.clone()));
            (summary.commit, summary.probe) = (Some(commit.clone()), Some(ProbeAnswer::NotModified));
            summary.commits_behind = Some(0);
        }
        Some(Before::Fetch { answer, .. }) => summary.probe = *answer,
        // A 304 that a due reconcile overrode: the probe's answer, then a fetch.
        Some(Before::Unchanged { .. }) => summary.probe = Some(ProbeAnswer::NotModified),
        None => {}
    }
    summary.served_by = g.served_by.as_ref().map(|remote| remote.display_url.clone());
    let Some(fetch) = &g.fetch else { return };
    let fetched = &fetch.route.fetched;
    summary.branch = Some(fetched.branch.clone());
    summary.commit = Some(fetched.commit.to_string());
    summary.previous_commit = g.deployed.map(|d| d.to_string());
    // Only counted when something is new: a no-op poll walks no history.
    summary.commits_behind = match (fetch.decision, g.deployed) {
        (Decision::UpToDate, _) => Some(0),
        (_, Some(deployed)) => fetch::commits_between(&fetch.repo, deployed, fetched.commit),
        (_, None) => None,
    };
    if g.deployed != Some(fetched.commit)
        && let Ok(commit) = fetch.repo.find_commit(fetched.commit)
    {
        // Up to date: the report carries the subject over from the last run of this commit.
        summary.commit_time = commit.time().ok().and_then(|t| crate::clock::rfc3339(t.seconds));
        summary.subject = commit.message().ok().map(|m| m.summary().to_string());
        summary.author = commit.author().ok().map(|a| format!("{} <{}>", a.name, a.email));
    }
    if matches!(decided, Ok(Step::RolledBack { .. } | Step::RollbackGivenUp { .. } | Step::RollBack { .. })) {
        summary.rollback = g.state.rollback.clone();
    }
    if let Ok(Step::Hold { hold, .. }) = decided {
        summary.deferred = Some(Deferral {
            kind: hold.kind.to_string(),
            message: hold.message.clone(),
            until: hold.until.and_then(crate::clock::rfc3339),
        });
    }
}

/// The line that tells the operator why a commit was refused and what to do.
fn refuse(refusal: Refusal, g: &Gather<'_>) -> Result<(), Failure> {
    let route = &g.fetched()?.route;
    // The branch's own refusal names the branch and its tip, even when a testing commit is the target.
    let (branch, remote) = match (route.branch_refused, route.base) {
        (Some(_), Some(base)) => (route.fetched.branch.clone(), short_id(base)),
        _ => (super::from_label(route), short_id(route.fetched.commit)),
    };
    let (branch, deployed) = (&branch, short_opt(g.deployed));
    match refusal {
        Refusal::NeedPush => log::warn!(
            "remote {branch} is at {remote}, behind the deployed commit {deployed}: it was rewound; push {deployed} back (or revert forward), or deploy the rewind with --allow-rewind"
        ),
        Refusal::Diverged => log::warn!(
            "remote {branch} at {remote} and the deployed commit {deployed} have diverged (force-push?); nothing changed; deploy it anyway with --allow-diverged"
        ),
    }
    Ok(())
}
