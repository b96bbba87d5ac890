//! One sync cycle: lock → fetch → decide → verify → checkout → apply → record, read top to bottom.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, anyhow};
use gix::ObjectId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::apply::{self, Job};
use crate::changes::changed_paths;
use crate::checkout;
use crate::config::{Settings, Trust};
use crate::deadline;
use crate::decide::{Attempt, Decision, decide, plan_attempt};
use crate::fetch::{self, Fetched, Source};
use crate::hostkey;
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::reboot;
use crate::report;
use crate::splay;
use crate::state::{self, AttemptRecord, Layout, LockError, VerificationRecord};
use crate::teardown;
use crate::verify;

/// How much of an entrypoint log a notification carries (Discord attaches it).
const LOG_TAIL_MAX: u64 = 1024 * 1024;

/// Run one cycle under the lock, then record and report it (still under the lock).
pub fn sync(settings: &Settings) -> Result<Outcome, Failure> {
    let layout = Layout { root: settings.state_dir.clone() };
    state::ensure_dirs(&layout)?;
    let _lock = lock(&layout)?;
    state::remove_stale_temp(&layout);
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
    let mut result = cycle(settings, &layout, &mut summary, started);
    // Every run that leaves the host as it should be may reboot it: a deferred reboot waits for no new commit.
    let mut reboot = None;
    if let Ok(outcome) = result {
        match reboot::settle(settings, &layout, outcome) {
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
    summary.result = outcome.label().to_string();
    summary.exit_code = outcome.code();
    summary.finished_at = now();
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if !settings.dry_run {
        report::after_run(&layout, &settings.report, &summary);
    }
    // Last, so that the report is out before the host goes down.
    if let Some(reboot) = reboot {
        reboot.run(settings, &layout)?;
    }
    result
}

/// fetch → decide → verify → checkout → teardown → apply → record, filling `summary` on the way.
fn cycle(settings: &Settings, layout: &Layout, summary: &mut RunSummary, started: Instant) -> Result<Outcome, Failure> {
    let mut state = state::load_or_quarantine(&layout.state_file())?;
    let deployed = state.applied_commit.as_deref().map(|hex| parse_id(hex, "applied_commit")).transpose()?;

    let (repo, fetched) = match fetch_once(settings, layout, deployed) {
        Err(error) if cache_damaged(&error) => {
            // The cache is only a copy of the remote: rebuild it rather than fail every run from now on.
            log::warn!(
                "cache repository {} is damaged ({}); rebuilding it from the remote",
                layout.cache().display(),
                Failure::from(error).message()
            );
            std::fs::remove_dir_all(layout.cache())
                .map_err(|e| anyhow!("removing the damaged cache {}: {e}", layout.cache().display()))?;
            fetch_once(settings, layout, deployed)?
        }
        other => other?,
    };
    crate::failpoint::hit("fetched");
    let remote = fetched.commit;
    describe(&repo, &fetched, deployed, summary);
    let merge_base = match deployed {
        Some(deployed) if deployed != remote => fetch::merge_base(&repo, deployed, remote)?,
        _ => None,
    };
    let mut decision = decide(deployed, remote, merge_base);
    if decision == Decision::Diverged && state.applied_history.contains(&remote.to_string()) {
        // A commit this host applied before: a rollback, even if the cache no longer knows the history.
        decision = Decision::NeedPush;
    }
    let live = checkout::live_commit(layout);
    if decision == Decision::UpToDate && live.as_deref() != Some(remote.to_string().as_str()) {
        // A later commit was checked out but never applied (failed, then reverted): converge on the remote again.
        log::warn!(
            "live revision {} is not the applied commit {}; re-applying it",
            live.as_deref().unwrap_or("none"),
            short(remote)
        );
        decision = Decision::Apply;
    }
    let log_result =
        |what: &str| log::info!("{what} ({} {} in {:.2?})", fetched.branch, short(remote), started.elapsed());

    match decision {
        Decision::UpToDate => {
            log_result("up-to-date");
            return Ok(Outcome::UpToDate);
        }
        Decision::NeedPush if !settings.allow_rewind => {
            log::warn!(
                "remote {} is at {}, behind the deployed commit {}: it was rewound; push {} back (or revert forward), or deploy the rewind with --allow-rewind",
                fetched.branch,
                short(remote),
                short_opt(deployed),
                short_opt(deployed),
            );
            return Ok(Outcome::NeedPush);
        }
        Decision::Diverged if !settings.allow_diverged => {
            log::warn!(
                "remote {} at {} and the deployed commit {} have diverged (force-push?); nothing changed; deploy it anyway with --allow-diverged",
                fetched.branch,
                short(remote),
                short_opt(deployed),
            );
            return Ok(Outcome::Diverged);
        }
        _ => {}
    }

    if let Some(trust) = &settings.trust {
        let record = verify_signatures(&repo, trust, &fetched, deployed)?;
        let rejected = record.result != "verified";
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
        Some((hex, n)) => Some((parse_id(hex, "last_attempt.commit")?, n)),
        None => None,
    };
    let attempt = match plan_attempt(remote, last_failure, settings.max_attempts, settings.retry) {
        Attempt::Run(n) => n,
        Attempt::GiveUp(n) => {
            log::error!(
                "commit {} failed {n} times in a row; not retrying it until a newer commit arrives or you run gitops sync --retry (log: {})",
                short(remote),
                log_path(layout, remote).display()
            );
            return Ok(Outcome::ApplyFailed);
        }
    };

    checkout::inspect(&repo, remote, settings.max_checkout_size)?;
    let changed = changed_paths(&repo, deployed, remote)?;
    if settings.dry_run {
        let fleet = fleet_plan(settings, layout, &repo, remote)?;
        print_plan(settings, decision, deployed, &fetched, attempt, &changed, &fleet);
        return Ok(Outcome::Applied);
    }

    let checkout_dir = checkout::materialise(&repo, layout, remote, settings.keep_revisions)?;
    crate::failpoint::hit("checkout-complete");
    let changed_file = layout.logs().join(format!("{remote}.changed"));
    let mut listing = changed.join("\n");
    if !listing.is_empty() {
        listing.push('\n');
    }
    state::write_atomic(&changed_file, listing.as_bytes())?;

    let log = log_path(layout, remote);
    let started_at = now();
    let apply_started = Instant::now();
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
            ("GITOPS_REBOOT_REQUEST", layout.root.join(reboot::ENTRYPOINT_REQUEST).display().to_string()),
        ],
        timeout: settings.apply_timeout,
        log_path: &log,
    };
    // The outgoing revision undoes its own changes first; until it has, the new one does not go live.
    let (ran, log) = match teardown::before_publish(settings, layout, remote, &job)? {
        Some(failed) => failed,
        None => {
            checkout::publish(layout, remote)?;
            crate::failpoint::hit("published");
            log::info!(
                "applying {} with {} (attempt {attempt}, {} changed paths)",
                short(remote),
                entrypoint.display(),
                changed.len()
            );
            (apply::run(&job)?, log.clone())
        }
    };

    let finished_at = now();
    let outcome = if ran.success { Outcome::Applied } else { Outcome::ApplyFailed };
    state.last_attempt = Some(AttemptRecord {
        commit: remote.to_string(),
        previous_commit: deployed.map(|d| d.to_string()),
        result: outcome.label().to_string(),
        attempts: attempt,
        exit_code: ran.exit_code,
        error: ran.error.clone(),
        started_at,
        finished_at: finished_at.clone(),
        duration_ms: apply_started.elapsed().as_millis() as u64,
        log: log.clone(),
    });
    if ran.success {
        state.record_applied(&remote.to_string(), finished_at);
    }
    state::save(&layout.state_file(), &state)?;
    crate::failpoint::hit("state-saved");
    summary.error = ran.error.clone();
    (summary.log_tail, summary.log_truncated) = read_tail(&log, LOG_TAIL_MAX);
    if let Err(e) = checkout::prune(layout, settings.keep_revisions) {
        log::warn!("cleaning up old revisions: {e:#}");
    }
    if let Err(e) = checkout::prune_logs(layout, settings.keep_logs) {
        log::warn!("cleaning up old logs: {e:#}");
    }

    match &ran.error {
        None => log_result(&format!("applied, was {}", short_opt(deployed))),
        Some(error) => log::error!(
            "{error} (commit {}, attempt {attempt} of {}; log: {})",
            short(remote),
            settings.max_attempts,
            log.display()
        ),
    }
    Ok(outcome)
}

/// Open the cache and fetch, within --fetch-timeout; ssh's messages explain a failure.
fn fetch_once(
    settings: &Settings,
    layout: &Layout,
    deployed: Option<ObjectId>,
) -> anyhow::Result<(gix::Repository, Fetched)> {
    let repo = fetch::open_cache(
        &layout.cache(),
        &settings.ssh_command,
        settings.http_ca_file.as_deref(),
        settings.fetch_timeout,
    )?;
    let ssh_log = layout.root.join(crate::config::SSH_LOG);
    let _ = std::fs::remove_file(&ssh_log);
    let source = Source {
        url: &settings.repo_url,
        display_url: &settings.repo_url_display,
        reference: settings.source_ref.as_deref(),
        http_credentials: settings.http_credentials.as_ref(),
        deployed,
    };
    let what = format!("fetching from {}", settings.repo_url_display);
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

fn lock(layout: &Layout) -> Result<state::RunLock, Failure> {
    state::lock(&layout.lock()).map_err(|e| match e {
        LockError::Held(path) => Failure {
            outcome: Outcome::Locked,
            error: anyhow!(
                "another gitops run holds the lock {}; it will pick up any change, try again later",
                path.display()
            ),
        },
        LockError::Io(e) => Failure::from(e),
    })
}

/// Check the tag (if any) and the commits the policy requires; log and return the verdict.
fn verify_signatures(
    repo: &gix::Repository,
    trust: &Trust,
    fetched: &Fetched,
    deployed: Option<ObjectId>,
) -> anyhow::Result<VerificationRecord> {
    let trusted: Vec<ObjectId> = deployed.into_iter().chain(trust.since).collect();
    let mut commits = verify::commits_to_check(repo, fetched.commit, &trusted, trust.policy)?;
    if !commits.contains(&fetched.commit) {
        // A rewind deploys an ancestor of what was verified before: check it all the same.
        commits.push(fetched.commit);
    }
    let tag_verdict = match fetched.tag {
        Some(tag) => Some(verify::verify_tag(repo, tag, &trust.signers)?),
        None => None,
    };
    let verdict = match tag_verdict {
        Some(Err(rejected)) => Err(rejected),
        _ => verify::verify_commits(repo, &commits, &trust.signers)?.map(|mut signed| signed.pop()),
    };
    let mut record = VerificationRecord {
        commit: fetched.commit.to_string(),
        result: "verified".into(),
        object: fetched.commit.to_string(),
        principal: None,
        fingerprint: None,
        reason: None,
        commits_checked: commits.len(),
        at: now(),
    };
    match verdict {
        Ok(head) => {
            let head = head.unwrap_or_else(|| verify::Signed { principal: String::new(), fingerprint: String::new() });
            log::info!(
                "verified {} commit(s) up to {}: signed by {} ({})",
                commits.len(),
                short(fetched.commit),
                head.principal,
                head.fingerprint
            );
            record.principal = Some(head.principal);
            record.fingerprint = Some(head.fingerprint);
        }
        Err(rejected) => {
            log::error!(
                "refusing to deploy {}: {} {} {}; nothing changed (the live revision stays); sign it with an allowed key and push again",
                short(fetched.commit),
                if Some(rejected.object) == fetched.tag { "tag" } else { "commit" },
                rejected.object,
                rejected.reason,
            );
            record.result = "rejected".into();
            record.object = rejected.object.to_string();
            record.fingerprint = rejected.fingerprint;
            record.reason = Some(rejected.reason);
        }
    }
    Ok(record)
}

/// The dry run's inventory lines: which entrypoint would run (resolved in the commit's tree), tags, teardown.
fn fleet_plan(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    remote: ObjectId,
) -> anyhow::Result<String> {
    let inventory = &settings.fleet.inventory;
    let tree = repo
        .find_commit(remote)
        .map_err(anyhow::Error::new)
        .and_then(|c| c.tree().map_err(anyhow::Error::new))
        .with_context(|| format!("reading the tree of commit {remote}"))?;
    let in_tree = |candidate: &std::path::Path| {
        let path = inventory.root.join(candidate);
        tree.lookup_entry_by_path(&path).ok().flatten().is_some_and(|entry| entry.mode().is_blob_or_symlink())
    };
    let entrypoint = inventory.resolve(&settings.entrypoint, in_tree);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "entrypoint: {} ({}{})",
        inventory.root.join(&entrypoint).display(),
        inventory.describe(&entrypoint),
        if in_tree(&entrypoint) { "" } else { "; not in this commit" }
    );
    let _ = writeln!(out, "tags: {}", inventory.tags_env());
    let teardown = match teardown::outgoing(layout, inventory, &settings.entrypoint, remote) {
        Some(_) if settings.fleet.skip_teardown => "skipped (--skip-teardown)".to_string(),
        Some(outgoing) => {
            format!("{} of the live revision {}", inventory.root.join(&outgoing.script).display(), outgoing.commit)
        }
        None => "none".to_string(),
    };
    let _ = writeln!(out, "teardown: {teardown}");
    Ok(out)
}

fn print_plan(
    settings: &Settings,
    decision: Decision,
    deployed: Option<ObjectId>,
    fetched: &Fetched,
    attempt: u32,
    changed: &[String],
    fleet: &str,
) {
    let mut out = String::new();
    let action = match decision {
        Decision::NeedPush => "apply (rewind allowed)",
        Decision::Diverged => "apply (divergence allowed)",
        _ => "apply",
    };
    let _ = writeln!(out, "would: {action}");
    let _ = writeln!(out, "repository: {}", settings.repo_url_display);
    let _ = writeln!(out, "ref: {}", fetched.reference);
    let _ = writeln!(out, "deployed: {}", deployed.map(|d| d.to_string()).unwrap_or_else(|| "none".into()));
    let _ = writeln!(out, "remote: {}", fetched.commit);
    out.push_str(fleet);
    let _ = writeln!(out, "attempt: {attempt} of {}", settings.max_attempts);
    let _ = writeln!(out, "changed files ({}):", changed.len());
    for path in changed {
        let _ = writeln!(out, "  {path}");
    }
    print!("{}", crate::redact::redact(&out));
}

fn log_path(layout: &Layout, commit: ObjectId) -> std::path::PathBuf {
    layout.logs().join(format!("{commit}.log"))
}

/// Parse a commit id stored in state.json.
pub fn parse_id(hex: &str, field: &str) -> Result<ObjectId, Failure> {
    ObjectId::from_hex(hex.as_bytes())
        .map_err(|_| anyhow!("state.json field {field} holds {hex:?}, not a commit id; fix or move state.json aside"))
        .map_err(Failure::from)
}

/// Now, as RFC 3339.
pub fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

fn short(id: ObjectId) -> String {
    id.to_hex_with_len(12).to_string()
}

fn short_opt(id: Option<ObjectId>) -> String {
    id.map(short).unwrap_or_else(|| "none".into())
}
