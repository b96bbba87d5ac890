//! Applying the decided commit: the checks before anything is written, going live ([`release`]), the
//! record of the attempt, and on failure a rollback when that is on. A dry run stops after the checks and
//! prints the plan instead.

use std::time::Instant;

use super::facts::Gather;
use super::record::{self, Begun};
use super::release::{self, Release};
use super::rollback;
use crate::changes::changed_paths;
use crate::checkout;
use crate::commit_id::{short_id, short_opt};
use crate::decide::Why;
use crate::decide::rollback::AfterFailure;
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::plan::{self, Plan};

/// Apply the fetched target (attempt `attempt`, for `why`), or print the plan on a dry run (`held`: why
/// the host waits, when the plan is what it would do once released).
pub fn apply(
    g: &mut Gather<'_>,
    why: Why,
    attempt: u32,
    held: Option<&str>,
    summary: &mut RunSummary,
    started: Instant,
) -> Result<Outcome, Failure> {
    let (settings, layout, deployed) = (g.settings, g.layout, g.deployed);
    let fetch = g.fetch.as_ref().ok_or_else(|| anyhow::anyhow!("internal: applying a target never fetched"))?;
    let (repo, route) = (&fetch.repo, &fetch.route);
    let remote = route.fetched.commit;
    if why == Why::Reapply {
        log::warn!("the live revision is not the applied commit {}; re-applying it", short_id(remote));
    }
    // Decrypted in memory before anything is written: a secret that stops the run leaves the host as it was.
    let checked = checkout::inspect(repo, remote, settings.max_checkout_size, settings.max_checkout_files)
        .map_err(Failure::from)
        .and_then(|()| Ok(changed_paths(repo, deployed, remote)?))
        .and_then(|changed| Ok((changed, release::unseal(settings, repo, remote)?)));
    let (changed, unsealed) = match (checked, held) {
        // A held host's real run stops at the hold: its dry run exits as that run would, and says what
        // would stop it once released.
        (Err(failure), Some(why)) => {
            println!(
                "deferred: {why}\nonce released, would fail (exit {}): {}",
                failure.outcome.code(),
                failure.message()
            );
            return Ok(Outcome::Deferred);
        }
        (checked, _) => checked?,
    };
    let on_failure = rollback::on_failure(settings, repo, remote, deployed);
    if settings.dry_run {
        let fetched = &route.fetched;
        let plan = Plan { why, deployed, fetched, attempt, changed: &changed, secrets: &unsealed, held, on_failure };
        plan::print(settings, repo, &plan)?;
        return Ok(if held.is_some() { Outcome::Deferred } else { Outcome::Applied });
    }

    let mut begun = Begun::now(remote, deployed, attempt, why);
    begun.served_by = summary.served_by.clone().filter(|_| !settings.polling.mirrors.is_empty());
    begun.subject = summary.subject.clone();
    if why == Why::Reconcile {
        let every = settings.reapply_every.unwrap_or_default();
        log::info!("reconciling {} (--reapply-every {every:?})", short_id(remote));
    }
    let reason = begun.reason();
    let release = Release { commit: remote, previous: deployed, changed: &changed, reason, rolled_back_from: None };
    let (ran, log) = release::go_live(settings, layout, repo, route, &release, &unsealed)?;
    let outcome = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    let published = checkout::live_commit(layout).as_deref() == Some(remote.to_string().as_str());
    let after = match ran.success {
        true => AfterFailure::Retry,
        false => crate::decide::rollback::after_failure(on_failure.enabled, published, remote, deployed),
    };
    if let AfterFailure::RollBack(to) = after {
        // Saved with the failed attempt: a run killed from here on resumes the rollback, never retries.
        rollback::intend(&mut g.state, remote, attempt, to, ran.error.as_deref().unwrap_or("it failed"));
    }
    let route = route.clone();
    record::record(&mut g.state, layout, begun, outcome, &ran, log.clone(), &route)?;
    if published {
        // The target is live, whatever its entrypoint did: the live commit has every commit of the remote.
        summary.commits_behind = Some(0);
    }
    if ran.success {
        summary.deployed_from = route.testing.clone();
    }
    summary.error = ran.error.clone();
    (summary.log_tail, summary.log_truncated) = record::log_tail(&log);
    match &ran.error {
        None => log::info!(
            "applied, was {} ({} {} in {:.2?})",
            short_opt(deployed),
            super::from_label(&route),
            short_id(remote),
            started.elapsed()
        ),
        Some(error) => log::error!(
            "{error} (commit {}, attempt {attempt} of {}; log: {})",
            short_id(remote),
            settings.max_attempts,
            log.display()
        ),
    }
    let outcome = match after {
        AfterFailure::RollBack(to) => rollback::roll_back(g, remote, to, 1, summary)?,
        AfterFailure::NothingToGoBackTo => {
            log::error!(
                "rollback is on, but {} was the first deploy on this host: there is nothing to go back to; it stays live and is retried",
                short_id(remote)
            );
            outcome
        }
        AfterFailure::Retry => outcome,
    };
    release::prune(settings, layout);
    Ok(outcome)
}
