//! Applying the decided commit: check it out beside the live revision, decrypt its secrets, run the
//! outgoing revision's teardown, publish, run the entrypoint and the health check, record the attempt;
//! on failure, roll back when that is on. A dry run stops after the checks and prints the plan instead.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gix::ObjectId;
use gix::bstr::BString;

use super::facts::Gather;
use super::record::{self, Begun, Reason};
use super::rollback;
use crate::apply::{self, Job, Ran};
use crate::changes::{self, changed_paths};
use crate::checkout;
use crate::commit_id::{short_id, short_opt};
use crate::config::Settings;
use crate::decide::Why;
use crate::decide::rollback::AfterFailure;
use crate::layout::Layout;
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::plan::{self, Plan};
use crate::secrets::{self, Unsealed};
use crate::state;
use crate::teardown;
use crate::testing::Route;

/// How much of an entrypoint log a notification carries (Discord attaches it).
const LOG_TAIL_MAX: u64 = 1024 * 1024;

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
    checkout::inspect(repo, remote, settings.max_checkout_size, settings.max_checkout_files)?;
    let changed = changed_paths(repo, deployed, remote)?;
    // Decrypted in memory before anything is written: a secret that stops the run leaves the host as it was.
    let unsealed = unseal(settings, repo, remote)?;
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
    let (ran, log) = deploy(settings, layout, repo, route, &release, &unsealed)?;
    let outcome = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    let published = checkout::live_commit(layout).as_deref() == Some(remote.to_string().as_str());
    let after = match ran.success {
        true => AfterFailure::Retry,
        false => crate::decide::rollback::after_failure(on_failure.enabled, published, remote, deployed),
    };
    if let AfterFailure::RollBack(to) = after {
        // Saved with the failed attempt: a run killed from here on resumes the rollback, never retries.
        rollback::intend(&mut g.state, remote, to, ran.error.as_deref().unwrap_or("it failed"));
    }
    let route = route.clone();
    record::record(&mut g.state, layout, begun, outcome, &ran, log.clone(), &route)?;
    if ran.success {
        summary.commits_behind = Some(0);
        summary.deployed_from = route.testing.clone();
    }
    summary.error = ran.error.clone();
    (summary.log_tail, summary.log_truncated) = record::read_tail(&log, LOG_TAIL_MAX);
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
    prune(settings, layout);
    Ok(outcome)
}

/// Old revisions and logs beyond the limits go; a failure to remove them is only logged.
pub fn prune(settings: &Settings, layout: &Layout) {
    if let Err(e) = checkout::prune(layout, settings.keep_revisions) {
        log::warn!("cleaning up old revisions: {e:#}");
    }
    if let Err(e) = checkout::prune_logs(layout, settings.keep_logs) {
        log::warn!("cleaning up old logs: {e:#}");
    }
}

/// The secrets of `commit` this host must and can open, decrypted in memory (exit 32 when one of its
/// own cannot be opened).
pub fn unseal(settings: &Settings, repo: &gix::Repository, commit: ObjectId) -> Result<Unsealed, Failure> {
    let inventory = &settings.fleet.inventory;
    let sealed = secrets::sealed_in_commit(repo, commit, &inventory.root)?;
    if sealed.is_empty() {
        return Ok(Unsealed::default());
    }
    let recipients = secrets::recipients_in_commit(repo, commit, &inventory.root)?;
    let mine = secrets::Mine::new(&inventory.host_dirs, recipients.as_deref())?;
    secrets::unseal(&settings.secrets, sealed, &mine)
}

/// The commit that goes live and how its entrypoint is told about it.
pub struct Release<'a> {
    /// The commit.
    pub commit: ObjectId,
    /// The commit live before it (`GITOPS_PREVIOUS_COMMIT`).
    pub previous: Option<ObjectId>,
    /// The paths that differ (`GITOPS_CHANGED_FILES`).
    pub changed: &'a [BString],
    /// Which attempt and why (`GITOPS_REASON`).
    pub reason: Reason,
    /// For a rollback, the commit that failed (`GITOPS_ROLLED_BACK_FROM`).
    pub rolled_back_from: Option<ObjectId>,
}

/// Check out the release beside the live revision, write its secrets to a private tmpfs directory, run the
/// outgoing revision's teardown, publish, run the entrypoint, then its health check. Returns how the
/// entrypoint, health check (or the teardown that kept it from going live) ran, and the log. The secrets
/// directory is gone when this returns.
pub fn deploy(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    route: &Route,
    release: &Release<'_>,
    unsealed: &Unsealed,
) -> Result<(Ran, PathBuf), Failure> {
    let (fetched, commit, attempt) = (&route.fetched, release.commit, release.reason.attempt);
    // A rollback's crash points have names of their own ("rollback-published"): the tests kill it there.
    let point = |name: &str| match release.rolled_back_from {
        Some(_) => format!("rollback-{name}"),
        None => name.to_string(),
    };
    let checkout_dir = checkout::materialise(repo, layout, commit, settings.keep_revisions)?;
    crate::failpoint::hit(&point("checkout-complete"));
    let changed_file = layout.changed_files(commit);
    state::write_atomic(&changed_file, &changes::listing(release.changed))?;
    let mounted = secrets::mount(unsealed, &settings.secrets.base, &layout.secrets_record())?;
    crate::failpoint::hit(&point("secrets-written"));

    let log = layout.entrypoint_log(commit);
    let inventory = &settings.fleet.inventory;
    let workdir = inventory.workdir(&checkout_dir);
    let entrypoint = inventory.resolve(&settings.entrypoint, |candidate| workdir.join(candidate).is_file());
    let job = Job {
        checkout: &workdir,
        entrypoint: &entrypoint,
        role: "entrypoint",
        env: vec![
            ("GITOPS_COMMIT", commit.to_string()),
            ("GITOPS_PREVIOUS_COMMIT", release.previous.map(|d| d.to_string()).unwrap_or_default()),
            ("GITOPS_CHANGED_FILES", changed_file.display().to_string()),
            ("GITOPS_REPO_URL", settings.repo_url_display.clone()),
            ("GITOPS_BRANCH", fetched.branch.clone()),
            ("GITOPS_REF", fetched.reference.clone()),
            ("GITOPS_STATE_DIR", layout.root.display().to_string()),
            ("GITOPS_HOSTNAME", settings.hostname.clone()),
            ("GITOPS_TAGS", inventory.tags_env()),
            ("GITOPS_REBOOT_REQUEST", layout.reboot_request().display().to_string()),
            ("GITOPS_REASON", release.reason.label.to_string()),
            ("GITOPS_DEPLOYED_FROM", route.testing.clone().unwrap_or_else(|| fetched.branch.clone())),
        ]
        .into_iter()
        .chain(mounted.as_ref().map(|m| ("GITOPS_SECRETS_DIR", m.path().display().to_string())))
        .chain(release.rolled_back_from.map(|from| ("GITOPS_ROLLED_BACK_FROM", from.to_string())))
        .collect(),
        timeout: settings.apply_timeout,
        log_path: &log,
        group_file: &layout.running_group(),
        append: false,
    };
    // The outgoing revision undoes its own changes first; until it has, the new one does not go live.
    let skip_teardown = settings.fleet.skip_teardown;
    let outgoing_secrets = |outgoing: &teardown::Outgoing| outgoing_secrets(settings, layout, repo, outgoing);
    if let Some(failed) = teardown::before_publish(
        inventory,
        &settings.entrypoint,
        skip_teardown,
        layout,
        commit,
        &job,
        outgoing_secrets,
    )? {
        return Ok(failed);
    }
    checkout::publish(layout, commit)?;
    crate::failpoint::hit(&point("published"));
    let paths = if release.changed.len() == 1 { "path" } else { "paths" };
    log::info!(
        "applying {} with {} (attempt {attempt}, {} changed {paths})",
        short_id(commit),
        entrypoint.display(),
        release.changed.len()
    );
    let ran = apply::run(&job)?;
    // The service it started may take a moment: its health check is what says the apply worked.
    let on_disk = |candidate: &Path| workdir.join(candidate).is_file();
    let Some(script) = crate::health::script(inventory, &entrypoint, on_disk).filter(|_| ran.success) else {
        return Ok((ran, log));
    };
    Ok((crate::health::check(&settings.health, &script, &job)?, log))
}

/// The outgoing revision's own secrets for its teardown, from its commit (or, when that is no longer in the
/// cache, its checkout), in a secrets directory of their own.
fn outgoing_secrets(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    outgoing: &teardown::Outgoing,
) -> Result<Option<secrets::tmpfs::Mounted>, Failure> {
    let inventory = &settings.fleet.inventory;
    let in_cache = ObjectId::from_hex(outgoing.commit.as_bytes()).map_err(anyhow::Error::new).and_then(|commit| {
        let sealed = secrets::sealed_in_commit(repo, commit, &inventory.root)?;
        Ok((sealed, secrets::recipients_in_commit(repo, commit, &inventory.root)?))
    });
    let (sealed, recipients) = match in_cache {
        Ok(found) => found,
        Err(_) => (
            secrets::sealed_in_dir(&outgoing.workdir)?,
            std::fs::read_to_string(outgoing.workdir.join(secrets::recipients::FILE)).ok(),
        ),
    };
    let mine = secrets::Mine::new(&inventory.host_dirs, recipients.as_deref())?;
    let unsealed = secrets::unseal(&settings.secrets, sealed, &mine).map_err(|mut failure| {
        failure.error = failure
            .error
            .context(format!("the secrets of the outgoing revision {} (for its teardown)", outgoing.commit));
        failure
    })?;
    secrets::mount(&unsealed, &settings.secrets.base, &layout.secrets_record())
}
