//! What an attempt leaves behind: state.json's attempt, live and applied records (one atomic save),
//! and a line in the history.

use std::path::PathBuf;
use std::time::Instant;

use gix::ObjectId;

use crate::apply::Ran;
use crate::checkout;
use crate::clock::now;
use crate::decide::Why;
use crate::layout::Layout;
use crate::live::{LiveRecord, LiveResult};
use crate::outcome::{Failure, Outcome};
use crate::state::{self, AttemptRecord, State};
use crate::testing::{self, Route};

/// An apply attempt as it started: what state.json records about it when it ends.
pub struct Begun {
    /// The commit attempted.
    pub commit: ObjectId,
    /// The commit applied before it.
    pub previous: Option<ObjectId>,
    /// Which attempt at `commit` this is.
    pub attempt: u32,
    /// Why it runs.
    pub why: Why,
    /// When it started (RFC 3339).
    pub at: String,
    /// When it started, for its duration.
    pub clock: Instant,
    /// The mirror (or primary) that served the fetch, recorded when mirrors are configured.
    pub served_by: Option<String>,
    /// The commit's subject line, for the history.
    pub subject: Option<String>,
}

impl Begun {
    /// An attempt at `commit` starting now.
    pub fn now(commit: ObjectId, previous: Option<ObjectId>, attempt: u32, why: Why) -> Begun {
        Begun { commit, previous, attempt, why, at: now(), clock: Instant::now(), served_by: None, subject: None }
    }

    /// What the entrypoint is told about this run.
    pub fn reason(&self) -> Reason {
        Reason { attempt: self.attempt, label: self.why.reason(self.attempt) }
    }
}

/// Which attempt this is and why it runs (`GITOPS_REASON`).
#[derive(Debug, Clone, Copy)]
pub struct Reason {
    /// Which attempt at the commit this is.
    pub attempt: u32,
    /// `new-commit`, `retry`, `reconcile` or `rollback`.
    pub label: &'static str,
}

/// Record the attempt (and, when it succeeded, the applied commit and the ref it came from) in state.json.
pub fn record(
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
        log: log.clone(),
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
    } else if ran.success && begun.why == Why::Rollback {
        // Back where it was: the ref it came from is what state.json already says.
        state.record_applied(&begun.commit.to_string(), finished_at.clone());
    } else if ran.success {
        state.record_applied(&begun.commit.to_string(), finished_at.clone());
        testing::record(state, route, &route.fetched.branch);
        // A newer commit (or a retried one) went live: an earlier rollback is history.
        state.rollback = None;
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
            log: Some(log),
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

/// How much of an entrypoint log a notification carries (Discord attaches it).
const LOG_TAIL_MAX: u64 = 1024 * 1024;

/// The end of the log at `path` for the report, and whether it is less than all of it.
pub fn log_tail(path: &std::path::Path) -> (Option<String>, bool) {
    read_tail(path, LOG_TAIL_MAX)
}
