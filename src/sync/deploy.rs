//! Applying the decided commit: check it out beside the live revision, decrypt its secrets, run the
//! outgoing revision's teardown, publish, run the entrypoint, record the attempt. A dry run stops
//! after the checks and prints the plan instead.

use std::path::PathBuf;
use std::time::Instant;

use gix::ObjectId;
use gix::bstr::BString;

use super::facts::Gather;
use crate::apply::{self, Job, Ran};
use crate::changes::{self, changed_paths};
use crate::checkout;
use crate::clock::now;
use crate::commit_id::{short_id, short_opt};
use crate::config::Settings;
use crate::decide::Why;
use crate::layout::Layout;
use crate::live::{LiveRecord, LiveResult};
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::plan::{self, Plan};
use crate::secrets::{self, Unsealed};
use crate::state::{self, AttemptRecord, State};
use crate::teardown;
use crate::testing::{self, Route};

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
    let fetch = g.fetched()?;
    let (repo, route) = (&fetch.repo, &fetch.route);
    let remote = route.fetched.commit;
    if why == Why::Reapply {
        log::warn!("the live revision is not the applied commit {}; re-applying it", short_id(remote));
    }
    checkout::inspect(repo, remote, settings.max_checkout_size, settings.max_checkout_files)?;
    let changed = changed_paths(repo, deployed, remote)?;
    // Decrypted in memory before anything is written: a secret that stops the run leaves the host as it was.
    let inventory = &settings.fleet.inventory;
    let sealed = secrets::sealed_in_commit(repo, remote, &inventory.root)?;
    let unsealed = match sealed.is_empty() {
        true => secrets::Unsealed::default(),
        false => {
            let recipients = secrets::recipients_in_commit(repo, remote, &inventory.root)?;
            let mine = secrets::Mine::new(&inventory.host_dirs, recipients.as_deref())?;
            secrets::unseal(&settings.secrets, sealed, &mine)?
        }
    };
    if settings.dry_run {
        let fetched = &route.fetched;
        let plan = Plan { why, deployed, fetched, attempt, changed: &changed, secrets: &unsealed, held };
        plan::print(settings, repo, &plan)?;
        return Ok(if held.is_some() { Outcome::Deferred } else { Outcome::Applied });
    }

    let served_by = summary.served_by.clone().filter(|_| !settings.polling.mirrors.is_empty());
    let subject = summary.subject.clone();
    let begun = Begun {
        commit: remote,
        previous: deployed,
        attempt,
        why,
        at: now(),
        clock: Instant::now(),
        served_by,
        subject,
    };
    if why == Why::Reconcile {
        log::info!(
            "reconciling {} (--reapply-every {:?})",
            short_id(remote),
            settings.reapply_every.unwrap_or_default()
        );
    }
    let (ran, log) = deploy(settings, layout, repo, route, deployed, &changed, begun.reason(), &unsealed)?;
    let outcome = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    let route = route.clone();
    record(&mut g.state, layout, begun, outcome, &ran, log.clone(), &route)?;
    if ran.success {
        summary.commits_behind = Some(0);
        summary.deployed_from = route.testing.clone();
    }
    summary.error = ran.error.clone();
    (summary.log_tail, summary.log_truncated) = read_tail(&log, LOG_TAIL_MAX);
    if let Err(e) = checkout::prune(layout, settings.keep_revisions) {
        log::warn!("cleaning up old revisions: {e:#}");
    }
    if let Err(e) = checkout::prune_logs(layout, settings.keep_logs) {
        log::warn!("cleaning up old logs: {e:#}");
    }
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
    Ok(outcome)
}

/// Check out `remote` beside the live revision, write its secrets to a private tmpfs directory, run the
/// outgoing revision's teardown, publish, run the entrypoint. Returns how the entrypoint (or the teardown
/// that kept it from going live) ran, and its log. The secrets directory is gone when this returns.
#[allow(clippy::too_many_arguments)]
fn deploy(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    route: &Route,
    deployed: Option<ObjectId>,
    changed: &[BString],
    reason: Reason,
    unsealed: &Unsealed,
) -> Result<(Ran, PathBuf), Failure> {
    let (fetched, attempt) = (&route.fetched, reason.attempt);
    let remote = fetched.commit;
    let checkout_dir = checkout::materialise(repo, layout, remote, settings.keep_revisions)?;
    crate::failpoint::hit("checkout-complete");
    let changed_file = layout.changed_files(remote);
    state::write_atomic(&changed_file, &changes::listing(changed))?;
    let mounted = secrets::mount(unsealed, &settings.secrets.base, &layout.secrets_record())?;
    crate::failpoint::hit("secrets-written");

    let log = layout.entrypoint_log(remote);
    let inventory = &settings.fleet.inventory;
    let workdir = inventory.workdir(&checkout_dir);
    let entrypoint = inventory.resolve(&settings.entrypoint, |candidate| workdir.join(candidate).is_file());
    let job = Job {
        checkout: &workdir,
        entrypoint: &entrypoint,
        role: "entrypoint",
        env: vec![
            ("GITOPS_COMMIT", remote.to_string()),
            ("GITOPS_PREVIOUS_COMMIT", deployed.map(|d| d.to_string()).unwrap_or_default()),
            ("GITOPS_CHANGED_FILES", changed_file.display().to_string()),
            ("GITOPS_REPO_URL", settings.repo_url_display.clone()),
            ("GITOPS_BRANCH", fetched.branch.clone()),
            ("GITOPS_REF", fetched.reference.clone()),
            ("GITOPS_STATE_DIR", layout.root.display().to_string()),
            ("GITOPS_HOSTNAME", settings.hostname.clone()),
            ("GITOPS_TAGS", inventory.tags_env()),
            ("GITOPS_REBOOT_REQUEST", layout.reboot_request().display().to_string()),
            ("GITOPS_REASON", reason.label.to_string()),
            ("GITOPS_DEPLOYED_FROM", route.testing.clone().unwrap_or_else(|| fetched.branch.clone())),
        ]
        .into_iter()
        .chain(mounted.as_ref().map(|m| ("GITOPS_SECRETS_DIR", m.path().display().to_string())))
        .collect(),
        timeout: settings.apply_timeout,
        log_path: &log,
        group_file: &layout.running_group(),
    };
    // The outgoing revision undoes its own changes first; until it has, the new one does not go live.
    let skip_teardown = settings.fleet.skip_teardown;
    let outgoing_secrets = |outgoing: &teardown::Outgoing| outgoing_secrets(settings, layout, repo, outgoing);
    if let Some(failed) = teardown::before_publish(
        inventory,
        &settings.entrypoint,
        skip_teardown,
        layout,
        remote,
        &job,
        outgoing_secrets,
    )? {
        return Ok(failed);
    }
    checkout::publish(layout, remote)?;
    crate::failpoint::hit("published");
    let paths = if changed.len() == 1 { "path" } else { "paths" };
    log::info!(
        "applying {} with {} (attempt {attempt}, {} changed {paths})",
        short_id(remote),
        entrypoint.display(),
        changed.len()
    );
    Ok((apply::run(&job)?, log))
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

/// An apply attempt as it started: what state.json records about it when it ends.
struct Begun {
    /// The commit attempted.
    commit: ObjectId,
    /// The commit applied before it.
    previous: Option<ObjectId>,
    /// Which attempt at `commit` this is.
    attempt: u32,
    /// Why it runs.
    why: Why,
    /// When it started (RFC 3339).
    at: String,
    /// When it started, for its duration.
    clock: Instant,
    /// The mirror (or primary) that served the fetch, recorded when mirrors are configured.
    served_by: Option<String>,
    /// The commit's subject line, for the history.
    subject: Option<String>,
}

impl Begun {
    /// What the entrypoint is told about this run.
    fn reason(&self) -> Reason {
        Reason { attempt: self.attempt, label: self.why.reason(self.attempt) }
    }
}

/// Which attempt this is and why it runs (`GITOPS_REASON`).
#[derive(Debug, Clone, Copy)]
struct Reason {
    /// Which attempt at the commit this is.
    attempt: u32,
    /// `new-commit`, `retry` or `reconcile`.
    label: &'static str,
}

/// Record the attempt (and, when it succeeded, the applied commit and the ref it came from) in state.json.
fn record(
    state: &mut State,
    layout: &Layout,
    begun: Begun,
    outcome: Outcome,
    ran: &Ran,
    log: PathBuf,
    route: &Route,
) -> Result<(), Failure> {
    let finished_at = now();
    let duration_ms = begun.clock.elapsed().as_millis() as u64;
    state.last_attempt = Some(AttemptRecord {
        commit: begun.commit.to_string(),
        previous_commit: begun.previous.map(|d| d.to_string()),
        result: outcome,
        attempts: begun.attempt,
        exit_code: ran.exit_code,
        error: ran.error.clone(),
        started_at: begun.at.clone(),
        finished_at: finished_at.clone(),
        duration_ms,
        log,
        served_by: begun.served_by.clone(),
        reason: Some(begun.reason().label.to_string()),
    });
    // The live record follows `current`: a teardown that failed kept the previous revision live.
    let commit = begun.commit.to_string();
    if checkout::live_commit(layout).as_deref() == Some(commit.as_str()) {
        let since = state.live.as_ref().filter(|live| live.commit == commit).map(|live| live.since.clone());
        state.live = Some(LiveRecord {
            since: since.unwrap_or_else(|| begun.at.clone()),
            commit,
            result: if ran.success { LiveResult::Applied } else { LiveResult::Failed },
            error: ran.error.clone(),
        });
    }
    if ran.success && begun.why == Why::Reconcile {
        // The commit went live earlier: applied_at (and the metrics' live-since) stays.
        state.reconciled_at = Some(finished_at.clone());
    } else if ran.success {
        state.record_applied(&begun.commit.to_string(), finished_at.clone());
        testing::record(state, route, &route.fetched.branch);
    }
    state::save(&layout.state_file(), state)?;
    crate::failpoint::hit("state-saved");
    crate::history::append(
        layout,
        &crate::history::Entry {
            started_at: begun.at.clone(),
            finished_at,
            commit: begun.commit.to_string(),
            subject: begun.subject.clone(),
            reason: begun.reason().label.to_string(),
            attempt: begun.attempt,
            result: outcome,
            exit_code: ran.exit_code,
            error: ran.error.clone(),
            duration_ms,
            previous_commit: begun.previous.map(|p| p.to_string()),
        },
    );
    Ok(())
}

/// The last `max` bytes of a log (lossy UTF-8), and whether that is less than all of it.
fn read_tail(path: &std::path::Path, max: u64) -> (Option<String>, bool) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return (None, false) };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let skip = len.saturating_sub(max);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(skip)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (None, false);
    }
    (Some(String::from_utf8_lossy(&bytes).into_owned()), skip > 0)
}
