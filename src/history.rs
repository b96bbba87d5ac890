//! `history.jsonl`: one line per deploy attempt (when, commit, subject, reason, result, duration), for
//! `gitops history` and the header of `gitops logs`.
//!
//! Informational, like `last_run.json`: state.json stays the truth a run decides on. Lines are appended
//! (a killed run leaves at most one torn line, which readers skip) and the file is cut back to the newest
//! [`KEEP`] lines when it has grown to twice that.

use std::fs::OpenOptions;
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::outcome::Outcome;

/// How many attempts `gitops history` can show.
pub const KEEP: usize = 200;

/// One deploy attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// The commit attempted.
    pub commit: String,
    /// Its subject line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Why it ran, as `GITOPS_REASON` said: new-commit, retry, reconcile, rollback.
    pub reason: String,
    /// Which attempt at the commit this was.
    pub attempt: u32,
    /// applied or apply-failed (and later rolled-back).
    pub result: Outcome,
    /// The entrypoint's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The commit that was live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_commit: Option<String>,
    /// Its log (`gitops logs` prints it while it is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<std::path::PathBuf>,
}

/// Append `entry`; a failure is logged, never fails the run (the run's truth is in state.json).
pub fn append(layout: &Layout, entry: &Entry) {
    let path = layout.history();
    let before = std::fs::read_to_string(&path).unwrap_or_default();
    // A line torn by a killed run is closed first, so that it does not swallow this one.
    let mut line = if before.is_empty() || before.ends_with('\n') { Vec::new() } else { b"\n".to_vec() };
    line.extend(serde_json::to_vec(entry).unwrap_or_default());
    line.push(b'\n');
    let written = OpenOptions::new().create(true).append(true).open(&path).and_then(|mut file| file.write_all(&line));
    if let Err(e) = written {
        log::warn!("recording the attempt in {}: {e}", path.display());
        return;
    }
    if before.lines().count() + 1 > 2 * KEEP {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let keep: Vec<&str> = text.lines().rev().take(KEEP).collect::<Vec<_>>().into_iter().rev().collect();
        let bytes = format!("{}\n", keep.join("\n"));
        if let Err(e) = crate::state::write_replace(&path, bytes.as_bytes()) {
            log::warn!("trimming {}: {e:#}", path.display());
        }
    }
}

/// The recorded attempts, newest first (torn or foreign lines skipped).
pub fn load(layout: &Layout) -> Vec<Entry> {
    let text = std::fs::read_to_string(layout.history()).unwrap_or_default();
    let mut entries: Vec<Entry> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    entries.reverse();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        Entry {
            started_at: format!("2026-12-04T10:00:{:02}Z", n % 60),
            finished_at: "2026-12-04T10:01:00Z".into(),
            commit: format!("{n:040}"),
            subject: Some(format!("change {n}")),
            reason: "new-commit".into(),
            attempt: 1,
            result: Outcome::Applied,
            exit_code: Some(0),
            error: None,
            duration_ms: 5,
            previous_commit: None,
            log: None,
        }
    }

    #[test]
    fn newest_first_bounded_and_torn_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::from_flag(Some(dir.path().to_path_buf())).unwrap();
        for n in 0..(2 * KEEP + 1) {
            append(&layout, &entry(n));
        }
        let entries = load(&layout);
        assert_eq!(entries.len(), KEEP);
        assert_eq!(entries[0], entry(2 * KEEP));
        let mut file = OpenOptions::new().append(true).open(layout.history()).unwrap();
        file.write_all(b"{\"started_at\": \"torn").unwrap();
        assert_eq!(load(&layout).len(), KEEP);
        append(&layout, &entry(7));
        assert_eq!(load(&layout)[0], entry(7), "the torn line does not swallow the next one");
    }
}
