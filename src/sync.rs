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
use crate::splay;
use crate::state::{self, AttemptRecord, SignatureVerdict, State};
use crate::teardown;
use crate::verify;

/// How much of an entrypoint log a notification carries (Discord attaches it).
const LOG_TAIL_MAX: u64 = 1024 * 1024;

/// Run one cycle under the lock, then record and report it (still under the lock).
pub fn sync(settings: &Settings) -> Result<Outcome, Failure> {
    let layout = &settings.layout;
    layout.ensure_dirs()?;
    let _lock = layout.lock_run()?;
    layout.remove_stale_temp();
    apply::reap_survivors(&layout.running_group());
    if let Some(max) = settings.fleet.splay.filter(|_| !settings.dry_run) {
        // Under the lock: a run started meanwhile exits 75 instead of piling up behind this one.
        splay::sleep(max);
    }
    let started = Instant::now();
    let mut summary = RunSummary {
        host: settings.hostname.clone(),
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
            Ok(settled) => (summary.reboot, reboot) = (settled.event, settled.reboot),
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

    let source = polling::source_of(&settings.repo_url_display, settings.source_ref.as_deref());
    let context = polling::RunContext {
        source: &source,
        retry: settings.retry,
        ca_file: settings.http_ca_file.as_deref(),
        fetch_timeout: settings.fetch_timeout,
    };
    let validators = match polling::before_fetch(&settings.polling, context, layout, &state) {
        polling::Before::Unchanged { commit, branch } => {
            // Reboot settling, reporting and metrics still happen: only the fetch is skipped.
            log::info!(
                "up-to-date ({branch} {} per the change probe, in {:.2?})",
                commit_id::short(&commit),
                started.elapsed()
            );
            (summary.branch, summary.previous_commit) = (Some(branch), Some(commit.clone()));
            (summary.commit, summary.probe) = (Some(commit), Some(ProbeAnswer::NotModified));
            return Ok(Outcome::UpToDate);
        }
        polling::Before::Fetch { validators, answer } => {
            summary.probe = answer;
            validators
        }
    };
    let (repo, fetched, served_by) = fetch_from_remotes(settings, layout, deployed)?;
    crate::failpoint::hit("fetched");
    summary.served_by = Some(served_by.display_url.clone());
    if polling::after_fetch(&settings.polling, &mut state, &source, &served_by, &fetched.branch, validators)
        && !settings.dry_run
    {
        state::save(&layout.state_file(), &state)?;
    }
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
    let allowed = Allowed { rewind: settings.allow_rewind, diverged: settings.allow_diverged };
    let why = match decide(&history, allowed) {
        Decision::Apply(why) => why,
        Decision::UpToDate => {
            log::info!("up-to-date ({} {} in {:.2?})", fetched.branch, short_id(remote), started.elapsed());
            return Ok(Outcome::UpToDate);
        }
        Decision::Refuse(refusal) => return Ok(refuse(refusal, &fetched, deployed)),
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

    let last_failure = match state.last_failure() {
        Some((hex, n)) => Some((commit_id::parse(hex, "last_attempt.commit")?, n)),
        None => None,
    };
    let attempt = match plan_attempt(remote, last_failure, settings.max_attempts, settings.retry) {
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
    if settings.dry_run {
        plan::print(settings, &repo, &Plan { why, deployed, fetched: &fetched, attempt, changed: &changed })?;
        return Ok(Outcome::Applied);
    }

    let begun = Begun { commit: remote, previous: deployed, attempt, at: now(), clock: Instant::now() };
    let (ran, log) = deploy(settings, layout, &repo, &fetched, deployed, &changed, attempt)?;
    let outcome = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    let served_by = summary.served_by.clone().filter(|_| !settings.polling.mirrors.is_empty());
    record(&mut state, layout, begun, outcome, &ran, log.clone(), served_by)?;
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
            fetched.branch,
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

/// The outcome of a refused commit, with the line that tells the operator why and what to do.
fn refuse(refusal: Refusal, fetched: &Fetched, deployed: Option<ObjectId>) -> Outcome {
    let (branch, remote, deployed) = (&fetched.branch, short_id(fetched.commit), short_opt(deployed));
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

/// Check out `remote` beside the live revision, run the outgoing revision's teardown, publish, run the
/// entrypoint. Returns how the entrypoint (or the teardown that kept it from going live) ran, and its log.
fn deploy(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    fetched: &Fetched,
    deployed: Option<ObjectId>,
    changed: &[BString],
    attempt: u32,
) -> Result<(Ran, PathBuf), Failure> {
    let remote = fetched.commit;
    let checkout_dir = checkout::materialise(repo, layout, remote, settings.keep_revisions)?;
    crate::failpoint::hit("checkout-complete");
    let changed_file = layout.changed_files(remote);
    state::write_atomic(&changed_file, &changes::listing(changed))?;

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
        ],
        timeout: settings.apply_timeout,
        log_path: &log,
        group_file: &layout.running_group(),
    };
    // The outgoing revision undoes its own changes first; until it has, the new one does not go live.
    let skip_teardown = settings.fleet.skip_teardown;
    if let Some(failed) =
        teardown::before_publish(inventory, &settings.entrypoint, skip_teardown, layout, remote, &job)?
    {
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

/// An apply attempt as it started: what state.json records about it when it ends.
struct Begun {
    /// The commit attempted.
    commit: ObjectId,
    /// The commit applied before it.
    previous: Option<ObjectId>,
    /// Which attempt at `commit` this is.
    attempt: u32,
    /// When it started (RFC 3339).
    at: String,
    /// When it started, for its duration.
    clock: Instant,
}

/// Record the attempt (and, when it succeeded, the applied commit) in state.json.
fn record(
    state: &mut State,
    layout: &Layout,
    begun: Begun,
    outcome: Outcome,
    ran: &Ran,
    log: PathBuf,
    served_by: Option<String>,
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
        served_by,
    });
    if ran.success {
        state.record_applied(&begun.commit.to_string(), finished_at);
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
    deployed: Option<ObjectId>,
) -> anyhow::Result<(gix::Repository, Fetched, Remote)> {
    let primary = Remote::primary(&settings.repo_url, &settings.repo_url_display);
    let remotes: Vec<&Remote> = std::iter::once(&primary).chain(&settings.polling.mirrors).collect();
    let mut unreachable: Vec<String> = Vec::new();
    for (index, remote) in remotes.iter().enumerate() {
        match fetch_or_rebuild(settings, layout, remote, &primary, deployed) {
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

/// Fetch; a damaged cache is only a copy of the remote: rebuild it rather than fail every run from now on.
fn fetch_or_rebuild(
    settings: &Settings,
    layout: &Layout,
    remote: &Remote,
    primary: &Remote,
    deployed: Option<ObjectId>,
) -> anyhow::Result<(gix::Repository, Fetched)> {
    match fetch_once(settings, layout, remote, primary, deployed) {
        Err(error) if cache_damaged(&error) => {
            log::warn!(
                "cache repository {} is damaged ({}); rebuilding it from the remote",
                layout.cache().display(),
                Failure::from(error).message()
            );
            std::fs::remove_dir_all(layout.cache())
                .map_err(|e| anyhow!("removing the damaged cache {}: {e}", layout.cache().display()))?;
            fetch_once(settings, layout, remote, primary, deployed)
        }
        other => other,
    }
}

/// Open the cache and fetch from `remote`, within --fetch-timeout; ssh's messages explain a failure.
fn fetch_once(
    settings: &Settings,
    layout: &Layout,
    remote: &Remote,
    primary: &Remote,
    deployed: Option<ObjectId>,
) -> anyhow::Result<(gix::Repository, Fetched)> {
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
