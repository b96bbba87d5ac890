//! Automatic rollback: after a commit failed its entrypoint or health check, the failed revision's
//! teardown runs, `current` goes back to the commit this host applied before, and that commit's
//! entrypoint (and health check) runs again with `GITOPS_REASON=rollback`. The intent is saved with the
//! failed attempt, so a run killed at any point resumes the rollback instead of retrying the failure.

use gix::ObjectId;

use super::facts::Gather;
use super::record::{self, Begun, Reason};
use super::release::{self, Release};
use crate::changes::changed_paths;
use crate::clock::now;
use crate::commit_id::short_id;
use crate::config::Settings;
use crate::decide::Why;
use crate::decide::rollback::OnFailure;
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::state::{RollbackRecord, State};

/// Whether a failure of `commit` would roll back, to what (`deployed`), and why.
pub fn on_failure(
    settings: &Settings,
    repo: &gix::Repository,
    commit: ObjectId,
    deployed: Option<ObjectId>,
) -> OnFailure {
    let root = &settings.fleet.inventory.root;
    let policy = settings.rollback.is_none().then(|| crate::rollout::consider::rollback_wanted(repo, commit, root));
    let policy = policy.flatten();
    let source = match (settings.rollback, policy) {
        (Some(_), _) => "--rollback",
        (None, Some(_)) => ".gitops/rollout",
        (None, None) => "default",
    };
    let enabled = crate::decide::rollback::enabled(settings.rollback, policy);
    OnFailure { enabled, source, to: deployed.filter(|d| *d != commit) }
}

/// Record the intent to go back from `from` (which failed at attempt `failed_attempt`) to `to`; the
/// caller saves it with the failed attempt.
pub fn intend(state: &mut State, from: ObjectId, failed_attempt: u32, to: ObjectId, why: &str) {
    state.rollback = Some(RollbackRecord {
        from: from.to_string(),
        to: to.to_string(),
        why: why.to_string(),
        started_at: now(),
        finished_at: None,
        succeeded: false,
        attempts: 0,
        failed_attempt,
    });
}

/// Go back from `from` to `to` (try `attempt`): the failed revision's teardown, the swap, `to`'s entrypoint
/// and health check. Ends rolled-back (33) or rollback-failed (34), and says so loudly.
pub fn roll_back(
    g: &mut Gather<'_>,
    from: ObjectId,
    to: ObjectId,
    attempt: u32,
    summary: &mut RunSummary,
) -> Result<Outcome, Failure> {
    let (settings, layout) = (g.settings, g.layout);
    let why = g.state.rollback.as_ref().map(|r| r.why.clone()).unwrap_or_else(|| "it failed".into());
    match g.state.rollback.as_mut() {
        Some(record) if ObjectId::from_hex(record.from.as_bytes()).is_ok_and(|f| f == from) => {
            record.attempts = attempt
        }
        _ => intend(&mut g.state, from, 1, to, &why),
    }
    g.save()?;
    crate::failpoint::hit("rollback-started");
    log::error!(
        "ROLLING BACK from {} to {}, the commit this host ran before ({why}; try {attempt} of {})",
        short_id(from),
        short_id(to),
        settings.max_attempts
    );
    let fetch = g.fetch.as_ref().ok_or_else(|| anyhow::anyhow!("internal: rolling back without a fetch"))?;
    let (repo, route) = (&fetch.repo, fetch.route.clone());
    let ran = changed_paths(repo, Some(from), to).map_err(Failure::from).and_then(|changed| {
        let unsealed = release::unseal(settings, repo, to)?;
        let reason = Reason { attempt, label: Why::Rollback.reason(attempt) };
        let release =
            Release { commit: to, previous: Some(from), changed: &changed, reason, rolled_back_from: Some(from) };
        release::go_live(settings, layout, repo, &route, &release, &unsealed)
    });
    let (ran, log) = match ran {
        Ok(done) => done,
        // Recorded as tried: the next run resumes it, up to --max-attempts.
        Err(failure) => {
            let error = failure.error.context(format!("rolling back from {} to {}", short_id(from), short_id(to)));
            return Err(Failure { outcome: Outcome::RollbackFailed, error });
        }
    };
    if let Some(record) = g.state.rollback.as_mut() {
        (record.finished_at, record.succeeded) = (Some(now()), ran.success);
    }
    let mut begun = Begun::now(to, Some(from), attempt, Why::Rollback);
    begun.subject = repo.find_commit(to).ok().and_then(|c| c.message().ok().map(|m| m.summary().to_string()));
    let result = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    record::record(&mut g.state, layout, begun, result, &ran, log.clone(), &route)?;
    summary.rollback = g.state.rollback.clone();
    // Back on the commit before: the remote's commits since then are what the live commit lacks.
    summary.commits_behind = crate::fetch::commits_between(repo, to, route.fetched.commit);
    (summary.log_tail, summary.log_truncated) = record::log_tail(&log);
    if ran.success {
        log::error!(
            "ROLLED BACK: {} failed ({why}); {} is live again and applied; {} is not retried until a newer commit or gitops sync --retry",
            short_id(from),
            short_id(to),
            short_id(from)
        );
        summary.error = Some(format!("{why}; rolled back to {}", short_id(to)));
        return Ok(Outcome::RolledBack);
    }
    let error = ran.error.unwrap_or_default();
    log::error!(
        "ROLLBACK FAILED: going back from {} to {} failed too ({error}); the host needs attention (log: {})",
        short_id(from),
        short_id(to),
        log.display()
    );
    summary.error = Some(format!("{why}; rolling back to {} failed: {error}", short_id(to)));
    Ok(Outcome::RollbackFailed)
}
