//! One sync cycle: lock → fetch → decide → verify → checkout → apply → record, read top to bottom.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use gix::ObjectId;
use gix::bstr::BString;

use crate::apply::{self, Job, Ran};
use crate::changes::{self, changed_paths};
use crate::checkout;
use crate::clock::now;
use crate::commit_id::{self, short_id, short_opt};
use crate::config::Settings;
use crate::deadline;
use crate::decide::{Allowed, Attempt, Decision, History, Refusal, Why, decide, plan_attempt};
use crate::fetch::{self, Fetched, Source};
use crate::hostkey;
use crate::layout::Layout;
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::plan::{self, Plan};
use crate::polling::record::ProbeAnswer;
use crate::polling::{self, Remote, mirrors};
use crate::reboot;
use crate::report;
use crate::rollout;
use crate::secrets::{self, Unsealed};
use crate::splay;
use crate::state::{self, AttemptRecord, SignatureVerdict, State};
use crate::teardown;
use crate::testing::{self, Route};
use crate::verify;
use crate::{reconcile, suspend};

/// How much of an entrypoint log a notification carries (Discord attaches it).
const LOG_TAIL_MAX: u64 = 1024 * 1024;

/// Run one cycle under the lock, then record and report it (still under the lock).
pub fn sync(settings: &Settings) -> Result<Outcome, Failure> {
    let layout = &settings.layout;
    layout.ensure_dirs()?;
    let _lock = layout.lock_run()?;
    layout.remove_stale_temp();
    apply::reap_survivors(&layout.running_group());
    secrets::tmpfs::remove_recorded(&layout.secrets_record());
    if let Some(max) = settings.fleet.splay.filter(|_| !settings.dry_run) {
        // Under the lock: a run started meanwhile exits 75 instead of piling up behind this one.
        splay::sleep(max);
    }
    let started = Instant::now();
    let mut summary = RunSummary {
        host: settings.hostname.clone(),
        tags: settings.fleet.inventory.tags.clone(),
        repository: settings.repo_url_display.clone(),
        started_at: now(),
        ..RunSummary::default()
    };
    let mut result = cycle(settings, layout, &mut summary, started);
    // Every run that leaves the host as it should be may reboot it: a deferred reboot waits for no new commit.
    let mut reboot = None;
    if let Ok(outcome) = result
        && !settings.dry_run
    {
        match reboot::settle(&settings.fleet.reboot, &settings.fleet.inventory.root, layout, outcome) {
            Ok(settled) => {
                summary.reboot_pending_since = settled.pending_since;
                (summary.reboot, reboot) = (settled.event, settled.reboot)
            }
            Err(failure) => result = Err(failure),
        }
    }
    let outcome = match &result {
        Ok(outcome) => *outcome,
        Err(failure) => {
            summary.error = Some(crate::redact::redact(&failure.message()));
            failure.outcome
        }
    };
    summary.set_result(outcome);
    summary.finished_at = now();
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if !settings.dry_run {
        report::after_run(layout, &settings.report, &summary);
    }
    // Last, so that the report is out before the host goes down.
    if let Some(reboot) = reboot {
        reboot.run(&settings.fleet.reboot, layout)?;
    }
    result
}

/// fetch → decide → verify → checkout → teardown → apply → record, filling `summary` on the way.
fn cycle(settings: &Settings, layout: &Layout, summary: &mut RunSummary, started: Instant) -> Result<Outcome, Failure> {
    let mut state = state::load_or_quarantine(&layout.state_file())?;
    let deployed = state.applied_commit.as_deref().map(|hex| commit_id::parse(hex, "applied_commit")).transpose()?;
    summary.live_commit = deployed.map(|d| d.to_string());
    summary.live_since = state.applied_at.clone();
    summary.deployed_from = state.testing_base.as_ref().and(state.deployed_from.clone());
    if let Some(hold) = suspend::active(layout, crate::clock::now_unix(), !settings.dry_run)? {
        let message = hold.describe(crate::clock::now_unix());
        log::info!("{message}: nothing fetched or applied");
        summary.deferred = Some(crate::notify::Deferral { kind: "suspend".into(), message, until: hold.until.clone() });
        (summary.suspended_since, summary.suspended_until) = (Some(hold.since), hold.until);
        summary.suspended_reason = hold.reason;
        return Ok(Outcome::Deferred);
    }

    let source = polling::source_of(&settings.repo_url_display, settings.source_ref.as_deref());
    let context = polling::RunContext {
        source: &source,
        retry: settings.retry,
        ca_file: settings.http_ca_file.as_deref(),
        fetch_timeout: settings.fetch_timeout,
    };
    // A reconcile that is due runs whatever the probe says: the probe cannot end that run. (Only
    // asked when the probe says 304.)
    let reconcile_due = || match (settings.reapply_every, deployed) {
        (Some(every), Some(live)) => !matches!(
            reconcile::due(
                &state,
                live,
                every.as_secs() as i64,
                settings.max_attempts,
                settings.retry,
                crate::clock::now_unix()
            ),
            reconcile::Due::NotYet
        ),
        _ => false,
    };
    let validators = match polling::before_fetch(&settings.polling, context, layout, &state) {
        polling::Before::Unchanged { commit, branch } if !reconcile_due() => {
            // Reboot settling, reporting and metrics still happen: only the fetch is skipped.
            log::info!(
                "up-to-date ({branch} {} per the change probe, in {:.2?})",
                commit_id::short(&commit),
                started.elapsed()
            );
            (summary.branch, summary.previous_commit) = (Some(branch), Some(commit.clone()));
            (summary.commit, summary.probe) = (Some(commit), Some(ProbeAnswer::NotModified));
            summary.commits_behind = Some(0);
            return Ok(Outcome::UpToDate);
        }
        polling::Before::Unchanged { .. } => None,
        polling::Before::Fetch { validators, answer } => {
            summary.probe = answer;
            validators
        }
    };
    let testing_base = state.testing_base.as_deref().map(|hex| commit_id::parse(hex, "testing_base")).transpose()?;
    checkout::start_writeback(layout);
    let (repo, fetched, served_by) = fetch_from_remotes(settings, layout, Have { deployed, testing_base })?;
    crate::failpoint::hit("fetched");
    summary.served_by = Some(served_by.display_url.clone());
    if polling::after_fetch(&settings.polling, &mut state, &source, &served_by, &fetched.branch, validators)
        && !settings.dry_run
    {
        state::save(&layout.state_file(), &state)?;
    }
    let allowed = Allowed { rewind: settings.allow_rewind, diverged: settings.allow_diverged };
    let route = testing::route(&repo, settings.testing.as_ref(), fetched, deployed, &state, allowed)?;
    let fetched = route.fetched.clone();
    let remote = fetched.commit;
    describe(&repo, &fetched, deployed, summary);
    let history = History {
        deployed,
        remote,
        merge_base: match deployed {
            Some(deployed) if deployed != remote => fetch::merge_base(&repo, deployed, remote)?,
            _ => None,
        },
        applied_before: state.applied_history.contains(&remote.to_string()),
        live_is_remote: checkout::live_commit(layout)
            .is_some_and(|live| ObjectId::from_hex(live.as_bytes()).is_ok_and(|live| live == remote)),
    };
    let decision = testing::adjust(&route, decide(&history, allowed));
    let reconcile = match (decision, settings.reapply_every) {
        (Decision::UpToDate, Some(every)) => reconcile::due(
            &state,
            remote,
            every.as_secs() as i64,
            settings.max_attempts,
            settings.retry,
            crate::clock::now_unix(),
        ),
        _ => reconcile::Due::NotYet,
    };
    // Only counted when something is new: a no-op poll walks no history.
    summary.commits_behind = match (decision, deployed) {
        (Decision::UpToDate, _) => Some(0),
        (_, Some(deployed)) => fetch::commits_between(&repo, deployed, remote),
        (_, None) => None,
    };
    let why = match (decision, reconcile) {
        (Decision::Apply(why), _) => why,
        (Decision::UpToDate, reconcile::Due::Run(_)) => Why::Reconcile,
        (Decision::UpToDate, reconcile::Due::GaveUp(n)) => {
            log::error!(
                "reconciling {} failed {n} times in a row; trying again one --reapply-every period after the last failure, or now with gitops sync --retry (log: {})",
                short_id(remote),
                layout.entrypoint_log(remote).display()
            );
            return Ok(Outcome::ApplyFailed);
        }
        (Decision::UpToDate, reconcile::Due::NotYet) => {
            if testing::settle(&mut state, &route, &fetched.branch) && !settings.dry_run {
                state::save(&layout.state_file(), &state)?;
                summary.deployed_from = route.testing.clone();
            }
            log::info!("up-to-date ({} {} in {:.2?})", from_label(&route), short_id(remote), started.elapsed());
            return Ok(Outcome::UpToDate);
        }
        (Decision::Refuse(refusal), _) => return Ok(refuse(refusal, &route, deployed)),
    };
    if why == Why::Reapply {
        log::warn!("the live revision is not the applied commit {}; re-applying it", short_id(remote));
    }

    if let Some(trust) = &settings.trust {
        let record = verify::check(&repo, trust, &fetched, deployed)?;
        let rejected = record.verdict == SignatureVerdict::Rejected;
        if !settings.dry_run {
            state.verification = Some(record);
            if rejected {
                state::save(&layout.state_file(), &state)?;
            }
        }
        if rejected {
            return Ok(Outcome::VerifyFailed);
        }
    }

    // Re-running the live commit is not a rollout of it, and a host's own testing branch is that host's
    // alone: no wave or gate holds either.
    if !matches!(why, Why::Reapply | Why::Reconcile)
        && route.testing.is_none()
        && let Some(hold) = rollout_hold(settings, layout, &repo, &mut state, remote, why)?
    {
        log::info!("{} ({} {}): {}", Outcome::Deferred, fetched.branch, short_id(remote), hold.message);
        if settings.dry_run {
            println!("deferred: {}", hold.message);
        }
        summary.deferred = Some(crate::notify::Deferral {
            kind: hold.kind.to_string(),
            message: hold.message,
            until: hold.until.and_then(crate::clock::rfc3339),
        });
        return Ok(Outcome::Deferred);
    }

    let last_failure = match state.last_failure() {
        Some((hex, n)) => Some((commit_id::parse(hex, "last_attempt.commit")?, n)),
        None => None,
    };
    let planned = match reconcile {
        reconcile::Due::Run(n) => Attempt::Run(n),
        _ => plan_attempt(remote, last_failure, settings.max_attempts, settings.retry),
    };
    let attempt = match planned {
        Attempt::Run(n) => n,
        Attempt::GiveUp(n) => {
            log::error!(
                "commit {} failed {n} times in a row; not retrying it until a newer commit arrives or you run gitops sync --retry (log: {})",
                short_id(remote),
                layout.entrypoint_log(remote).display()
            );
            return Ok(Outcome::ApplyFailed);
        }
    };

    checkout::inspect(&repo, remote, settings.max_checkout_size, settings.max_checkout_files)?;
    let changed = changed_paths(&repo, deployed, remote)?;
    // Decrypted in memory before anything is written: a secret that stops the run leaves the host as it was.
    let inventory = &settings.fleet.inventory;
    let sealed = secrets::sealed_in_commit(&repo, remote, &inventory.root)?;
    let unsealed = secrets::unseal(&settings.secrets, sealed, &inventory.host_dirs)?;
    if settings.dry_run {
        let plan = Plan { why, deployed, fetched: &fetched, attempt, changed: &changed, secrets: &unsealed };
        plan::print(settings, &repo, &plan)?;
        return Ok(Outcome::Applied);
    }

    let served_by = summary.served_by.clone().filter(|_| !settings.polling.mirrors.is_empty());
    let begun = Begun { commit: remote, previous: deployed, attempt, why, at: now(), clock: Instant::now(), served_by };
    if why == Why::Reconcile {
        log::info!(
            "reconciling {} (--reapply-every {:?})",
            short_id(remote),
            settings.reapply_every.unwrap_or_default()
        );
    }
    let (ran, log) = deploy(settings, layout, &repo, &route, deployed, &changed, begun.reason(), &unsealed)?;
    let outcome = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    record(&mut state, layout, begun, outcome, &ran, log.clone(), &route)?;
    if ran.success {
        (summary.live_commit, summary.commits_behind) = (Some(remote.to_string()), Some(0));
        summary.live_since = state.applied_at.clone();
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
            from_label(&route),
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

/// Where the target comes from, for log lines: the branch, or "testing/web-1 (testing branch)".
fn from_label(route: &Route) -> String {
    match &route.testing {
        Some(name) => format!("{name} (testing branch)"),
        None => route.fetched.branch.clone(),
    }
}

/// The rollout policy's word on `remote`; this host's record of the commit is saved when it changed.
fn rollout_hold(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    state: &mut State,
    remote: ObjectId,
    why: Why,
) -> Result<Option<rollout::Hold>, Failure> {
    let inventory = &settings.fleet.inventory;
    let host = rollout::consider::Host {
        name: &settings.hostname,
        tags: &inventory.tags,
        root: &inventory.root,
        gate: settings.fleet.gate.as_ref(),
    };
    let before = state.rollout.clone();
    let hold = rollout::consider::consider(repo, remote, &host, why == Why::FirstDeploy, state)?;
    // A host let through saves its record with the attempt; one held back saves it now (first seen,
    // gate opened), and only when it changed.
    if hold.is_some() && state.rollout != before && !settings.dry_run {
        state::save(&layout.state_file(), state)?;
    }
    Ok(hold)
}

/// The outcome of a refused commit, with the line that tells the operator why and what to do.
fn refuse(refusal: Refusal, route: &Route, deployed: Option<ObjectId>) -> Outcome {
    // The branch's own refusal names the branch and its tip, even when a testing commit is the target.
    let (branch, remote) = match (route.branch_refused, route.base) {
        (Some(_), Some(base)) => (route.fetched.branch.clone(), short_id(base)),
        _ => (from_label(route), short_id(route.fetched.commit)),
    };
    let (branch, deployed) = (&branch, short_opt(deployed));
    match refusal {
        Refusal::NeedPush => {
            log::warn!(
                "remote {branch} is at {remote}, behind the deployed commit {deployed}: it was rewound; push {deployed} back (or revert forward), or deploy the rewind with --allow-rewind"
            );
            Outcome::NeedPush
        }
        Refusal::Diverged => {
            log::warn!(
                "remote {branch} at {remote} and the deployed commit {deployed} have diverged (force-push?); nothing changed; deploy it anyway with --allow-diverged"
            );
            Outcome::Diverged
        }
    }
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
    log::info!(
        "applying {} with {} (attempt {attempt}, {} changed paths)",
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
    let in_cache = ObjectId::from_hex(outgoing.commit.as_bytes())
        .map_err(anyhow::Error::new)
        .and_then(|commit| secrets::sealed_in_commit(repo, commit, &inventory.root));
    let sealed = match in_cache {
        Ok(sealed) => sealed,
        Err(_) => secrets::sealed_in_dir(&outgoing.workdir)?,
    };
    let unsealed = secrets::unseal(&settings.secrets, sealed, &inventory.host_dirs).map_err(|mut failure| {
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
    state.last_attempt = Some(AttemptRecord {
        commit: begun.commit.to_string(),
        previous_commit: begun.previous.map(|d| d.to_string()),
        result: outcome,
        attempts: begun.attempt,
        exit_code: ran.exit_code,
        error: ran.error.clone(),
        started_at: begun.at,
        finished_at: finished_at.clone(),
        duration_ms: begun.clock.elapsed().as_millis() as u64,
        log,
        served_by: begun.served_by.clone(),
    });
    if ran.success && begun.why == Why::Reconcile {
        // The commit went live earlier: applied_at (and the metrics' live-since) stays.
        state.reconciled_at = Some(finished_at);
    } else if ran.success {
        state.record_applied(&begun.commit.to_string(), finished_at);
        testing::record(state, route, &route.fetched.branch);
    }
    state::save(&layout.state_file(), state)?;
    crate::failpoint::hit("state-saved");
    Ok(())
}

/// Fetch from the primary, then from each mirror in order while the ones before could not be reached;
/// returns which remote served the fetch. A remote that answered (even with an error) ends the search.
fn fetch_from_remotes(
    settings: &Settings,
    layout: &Layout,
    have: Have,
) -> anyhow::Result<(gix::Repository, Fetched, Remote)> {
    let primary = Remote::primary(&settings.repo_url, &settings.repo_url_display);
    let remotes: Vec<&Remote> = std::iter::once(&primary).chain(&settings.polling.mirrors).collect();
    let mut unreachable: Vec<String> = Vec::new();
    for (index, remote) in remotes.iter().enumerate() {
        match fetch_or_rebuild(settings, layout, Asked { remote, primary: &primary }, have) {
            Ok((repo, fetched)) => {
                if !unreachable.is_empty() {
                    log::warn!("fetched from {} {} ({})", remote.role(), remote.display_url, unreachable.join("; "));
                }
                return Ok((repo, fetched, (*remote).clone()));
            }
            Err(error) if index + 1 < remotes.len() && mirrors::unreachable(&error) => {
                let next = remotes[index + 1];
                log::warn!(
                    "{} {} cannot be reached ({}); trying {} {}",
                    remote.role(),
                    remote.display_url,
                    Failure::from(anyhow!("{error:#}")).message(),
                    next.role(),
                    next.display_url
                );
                unreachable.push(format!("{} {} unreachable", remote.role(), remote.display_url));
            }
            Err(error) if unreachable.is_empty() => return Err(error),
            Err(error) if mirrors::unreachable(&error) => {
                return Err(error.context(format!("no remote could be reached ({})", unreachable.join("; "))));
            }
            Err(error) => return Err(error.context(unreachable.join("; "))),
        }
    }
    unreachable!("the primary is always tried")
}

/// What this host already has, which a fetch need not bring again.
#[derive(Debug, Clone, Copy)]
struct Have {
    /// The applied commit.
    deployed: Option<ObjectId>,
    /// The branch tip a live testing commit was deployed on.
    testing_base: Option<ObjectId>,
}

/// The remote asked this time, and the primary (whose credentials a mirror on another host does not get).
#[derive(Debug, Clone, Copy)]
struct Asked<'a> {
    remote: &'a Remote,
    primary: &'a Remote,
}

/// Fetch; a damaged cache is only a copy of the remote: rebuild it rather than fail every run from now on.
fn fetch_or_rebuild(
    settings: &Settings,
    layout: &Layout,
    asked: Asked<'_>,
    have: Have,
) -> anyhow::Result<(gix::Repository, Fetched)> {
    match fetch_once(settings, layout, asked, have) {
        Err(error) if cache_damaged(&error) => {
            log::warn!(
                "cache repository {} is damaged ({}); rebuilding it from the remote",
                layout.cache().display(),
                Failure::from(error).message()
            );
            std::fs::remove_dir_all(layout.cache())
                .map_err(|e| anyhow!("removing the damaged cache {}: {e}", layout.cache().display()))?;
            fetch_once(settings, layout, asked, have)
        }
        other => other,
    }
}

/// Open the cache and fetch from `remote`, within --fetch-timeout; ssh's messages explain a failure.
fn fetch_once(
    settings: &Settings,
    layout: &Layout,
    asked: Asked<'_>,
    have: Have,
) -> anyhow::Result<(gix::Repository, Fetched)> {
    let (Asked { remote, primary }, Have { deployed, testing_base }) = (asked, have);
    let repo = fetch::open_cache(
        &layout.cache(),
        &settings.ssh_command,
        settings.http_ca_file.as_deref(),
        settings.fetch_timeout,
    )?;
    let ssh_log = layout.ssh_log();
    let _ = std::fs::remove_file(&ssh_log);
    let source = Source {
        url: &remote.url,
        display_url: &remote.display_url,
        reference: settings.source_ref.as_deref(),
        // The token is for the primary's server: a mirror elsewhere gets only what its own URL carries.
        http_credentials: settings.http_credentials.as_ref().filter(|_| remote == primary || remote.same_host(primary)),
        deployed,
        testing: settings.testing.as_ref().map(|t| t.reference.as_str()),
        testing_base,
    };
    let what = format!("fetching from {}", remote.display_url);
    let (fetched, expired) = deadline::run(settings.fetch_timeout, &what, || fetch::fetch(&repo, source));
    let fetched = match fetched {
        Err(_) if expired => Err(anyhow!(
            "{what}: no answer within --fetch-timeout {:?}; nothing changed; check the network and the Git server",
            settings.fetch_timeout
        )),
        other => other.map_err(|e| {
            hostkey::explain(e, &std::fs::read_to_string(&ssh_log).unwrap_or_default(), &settings.host_keys)
        }),
    }?;
    Ok((repo, fetched))
}

/// Whether the local data is corrupt (as opposed to the network or the remote failing).
fn cache_damaged(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<fetch::CacheDamaged>()
            || cause
                .downcast_ref::<gix::Error>()
                .is_some_and(|e| e.dominant_class() == Some(gix::error::Class::Corruption))
    })
}

/// Fill in what the run is about: branch, commits, subject and author.
fn describe(repo: &gix::Repository, fetched: &Fetched, deployed: Option<ObjectId>, summary: &mut RunSummary) {
    summary.branch = Some(fetched.branch.clone());
    summary.commit = Some(fetched.commit.to_string());
    summary.previous_commit = deployed.map(|d| d.to_string());
    if deployed == Some(fetched.commit) {
        // Up to date: the report carries the subject over from the last run of this commit.
        return;
    }
    if let Ok(commit) = repo.find_commit(fetched.commit) {
        summary.commit_time = commit.time().ok().and_then(|t| crate::clock::rfc3339(t.seconds));
        summary.subject = commit.message().ok().map(|m| m.summary().to_string());
        summary.author = commit.author().ok().map(|a| format!("{} <{}>", a.name, a.email));
    }
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
