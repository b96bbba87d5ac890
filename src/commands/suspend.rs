//! `gitops suspend` and `gitops resume`: put a hold on this host's syncs, or lift it.
//!
//! Neither waits for the run lock: the hold is one file replaced atomically, and every run reads it
//! once, at its start, before fetching. A run already in progress finishes what it started (it may
//! be mid-apply, and stopping it there would leave the host half-applied); the lock is only peeked
//! at, to say so.

use anyhow::anyhow;

use crate::cli::{ResumeArgs, SuspendArgs};
use crate::clock;
use crate::layout::{self, Layout};
use crate::outcome::{Failure, Outcome};
use crate::parse::parse_duration;
use crate::suspend::{self, Suspension};

/// Longest `--reason` kept: it goes into every log line, notification and status of the hold.
const MAX_REASON: usize = 500;

/// Suspend syncs on this host, until `gitops resume` or for `--for`.
pub fn suspend(args: SuspendArgs) -> Result<Outcome, Failure> {
    let duration = args
        .for_duration
        .as_deref()
        .map(|text| {
            parse_duration(text).map_err(|e| {
                Failure::usage(anyhow!(
                    "--for {text:?}: {e}; use e.g. 30m, 4h or 2d (or leave it out: until gitops resume)"
                ))
            })
        })
        .transpose()?;
    if duration.is_some_and(|d| d.as_secs() == 0) {
        return Err(Failure::usage(anyhow!(
            "--for: at least one second; use e.g. 30m (or leave it out: until gitops resume)"
        )));
    }
    if let Some(reason) = &args.reason
        && (reason.chars().any(char::is_control) || reason.chars().count() > MAX_REASON)
    {
        return Err(Failure::usage(anyhow!(
            "--reason: one line of at most {MAX_REASON} characters, without control characters; shorten it"
        )));
    }
    let layout = Layout::from_flag(args.state_dir).map_err(Failure::usage)?;
    // A host may be suspended before its first sync (an image being built, a host being racked).
    layout.ensure_dirs()?;
    let now = clock::now_unix();
    let until = match duration {
        Some(duration) => Some(
            clock::rfc3339(now.saturating_add(duration.as_secs() as i64))
                .ok_or_else(|| Failure::usage(anyhow!("--for: the end is out of range; use a shorter duration")))?,
        ),
        None => None,
    };
    let hold = Suspension {
        since: clock::rfc3339(now).unwrap_or_else(clock::now),
        by: suspend::operator(),
        reason: args.reason.filter(|r| !r.trim().is_empty()),
        until,
    };
    if let Ok(Some(previous)) = suspend::load(&layout) {
        log::info!("replacing the hold: {}", previous.describe(now));
    }
    suspend::save(&layout, &hold)?;
    log::info!("{}", hold.describe(now));
    tell_about_run_in_progress(&layout, "is not interrupted; the hold applies from the next run on");
    Ok(Outcome::Success)
}

/// Lift the hold; the next run syncs as usual.
pub fn resume(args: ResumeArgs) -> Result<Outcome, Failure> {
    let layout = Layout::from_flag(args.state_dir).map_err(Failure::usage)?;
    if !layout.root.is_dir() {
        log::info!("not suspended (no state directory at {})", layout.root.display());
        return Ok(Outcome::Success);
    }
    layout::check_trusted(&layout.root)?;
    let now = clock::now_unix();
    let held = suspend::load(&layout).ok().flatten();
    if suspend::clear(&layout)? {
        match held {
            Some(hold) if !hold.expired(now) => log::info!("resumed; was {}", hold.describe(now)),
            _ => log::info!("resumed"),
        }
        tell_about_run_in_progress(&layout, "was started while suspended and stays deferred; the next run syncs");
    } else {
        log::info!("not suspended; nothing to do");
    }
    Ok(Outcome::Success)
}

/// Say so when a run holds the lock now (taken and released at once, never waited for).
fn tell_about_run_in_progress(layout: &Layout, what_happens: &str) {
    if let Err(failure) = layout.lock_run()
        && failure.outcome == Outcome::Locked
    {
        log::info!("a gitops run in progress {what_happens}");
    }
}
