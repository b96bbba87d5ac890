//! `last_run.json`: the last run and the counters the metrics need, for `gitops status` and the textfile.

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::notify::RunSummary;
use crate::outcome::Outcome;
use crate::state::write_replace;

/// What `last_run.json` keeps between runs: the last run and the counters the metrics need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The last run that held the lock.
    pub last_run: Option<RunSummary>,
    /// When a run last ended as planned (up-to-date, applied, or held back by the rollout policy or a
    /// suspension): the figure `gitops status --max-age` and `gitops_last_success_timestamp_seconds` read.
    pub last_success_at: Option<String>,
    /// Failed runs in a row.
    pub consecutive_failures: u32,
    /// Failed applies since the state directory was created.
    pub apply_failures_total: u64,
    /// Automatic rollbacks done since the state directory was created (those that failed included).
    #[serde(default)]
    pub rollbacks_total: u64,
}

/// Read `last_run.json`; missing or unreadable means no record yet.
pub fn load(layout: &Layout) -> RunRecord {
    std::fs::read(layout.last_run()).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// Fold a finished run into the record and write it; returns the record and the run as recorded
/// (an up-to-date run carries over the subject and author of the last run of its commit).
pub fn record(layout: &Layout, summary: &RunSummary) -> (RunRecord, RunSummary) {
    let mut record = load(layout);
    let mut summary = summary.clone();
    if let Some(last) = record.last_run.as_ref().filter(|last| last.commit == summary.commit) {
        // An up-to-date run does not read its commit; it is the one the last run reported on.
        summary.subject = summary.subject.or_else(|| last.subject.clone());
        summary.author = summary.author.or_else(|| last.author.clone());
        summary.commit_time = summary.commit_time.or_else(|| last.commit_time.clone());
    }
    record.last_run = Some(summary.clone());
    if summary.result.is_failure() {
        record.consecutive_failures += 1;
    } else if summary.as_planned() {
        record.consecutive_failures = 0;
        record.last_success_at = Some(summary.finished_at.clone());
    }
    if matches!(summary.result, Outcome::ApplyFailed | Outcome::RolledBack | Outcome::RollbackFailed) {
        record.apply_failures_total += 1;
    }
    // Counted by the run that did it, not by the runs that stay rolled back afterwards.
    let rolled_back_now = summary.rollback.as_ref().is_some_and(|r| r.started_at >= summary.started_at);
    if rolled_back_now && matches!(summary.result, Outcome::RolledBack | Outcome::RollbackFailed) {
        record.rollbacks_total += 1;
    }
    // Informational and rewritten every run: atomic (rename) but not fsynced, to keep no-op polls cheap.
    if let Err(e) = write_replace(&layout.last_run(), &serde_json::to_vec_pretty(&record).unwrap_or_default()) {
        log::warn!("recording the run for gitops status: {e:#}");
    }
    (record, summary)
}
