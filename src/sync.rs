//! One sync cycle, read top to bottom: lock → gather the facts → decide the step → act on it → record
//! → report. The decision is [`decide::decide`](crate::decide::decide), one pure function; the facts are
//! gathered at the edge ([`facts`]), the step carried out by [`act`] (applying a commit: [`deploy`]), the
//! Git remotes tried in order by [`remotes`].

mod act;
mod deploy;
mod facts;
mod record;
mod release;
mod remotes;
mod rollback;

use std::time::Instant;

use crate::apply;
use crate::checkout;
use crate::clock::now;
use crate::config::Settings;
use crate::decide::{self, Limits};
use crate::layout::Layout;
use crate::notify::RunSummary;
use crate::outcome::{Failure, Outcome};
use crate::reboot;
use crate::report;
use crate::secrets;
use crate::splay;
use crate::state;
use crate::testing::Route;

/// Run one cycle under the lock, then record and report it (still under the lock).
pub fn sync(settings: &Settings) -> Result<Outcome, Failure> {
    // A dry run changes nothing on the host: on one that never ran it fetches into a temporary directory
    // (removed when it ends) instead of creating the state directory; elsewhere it may refresh the cache.
    let scratch = match settings.dry_run && !settings.layout.root.exists() {
        true => Some(crate::layout::Scratch::new()?),
        false => None,
    };
    let layout = scratch.as_ref().map_or(&settings.layout, |scratch| &scratch.layout);
    layout.ensure_dirs()?;
    let _lock = layout.lock_run()?;
    if !settings.dry_run {
        // What a killed run left behind is cleaned up by the next real run, not by a look.
        layout.remove_stale_temp();
        apply::reap_survivors(&layout.running_group());
        secrets::tmpfs::remove_recorded(&layout.secrets_record());
    }
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
    describe_live(layout, &mut summary);
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

/// Gather the facts → decide the step → act on it; the summary is filled once, from what was found and decided.
fn cycle(settings: &Settings, layout: &Layout, summary: &mut RunSummary, started: Instant) -> Result<Outcome, Failure> {
    let mut facts = facts::Gather::new(settings, layout)?;
    let limits = Limits { max_attempts: settings.max_attempts, retry: settings.retry };
    let decided = decide::decide(&mut facts, limits);
    act::describe(&facts, decided.as_ref(), summary);
    act::act(decided?, &mut facts, summary, started)
}

/// What the run left live and what was last applied, as state.json and `current` say after it.
fn describe_live(layout: &Layout, summary: &mut RunSummary) {
    let state = state::load(&layout.state_file()).unwrap_or_default();
    let live = crate::live::of(&state, checkout::live_commit(layout).as_deref());
    summary.live_commit = live.as_ref().map(|l| l.commit.clone());
    summary.live_since = live.as_ref().and_then(|l| l.since.clone());
    summary.live_result = live.map(|l| l.result);
    (summary.applied_commit, summary.applied_at) = (state.applied_commit, state.applied_at);
}

/// Where the target comes from, for log lines: the branch, or "testing/web-1 (testing branch)".
fn from_label(route: &Route) -> String {
    match &route.testing {
        Some(name) => format!("{name} (testing branch)"),
        None => route.fetched.branch.clone(),
    }
}
