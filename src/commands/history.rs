//! `gitops history` and `gitops logs`: what ran on this host, from the state directory, no network.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde_json::json;

use crate::cli::{HistoryArgs, LogsArgs};
use crate::clock::{for_humans, now_unix};
use crate::commit_id::short;
use crate::history::{self, Entry};
use crate::layout::Layout;
use crate::outcome::{Failure, Outcome};
use crate::printable::printable;
use crate::state;

/// Print the newest `--limit` deploy attempts, newest first.
pub fn run(args: HistoryArgs) -> Result<Outcome, Failure> {
    let layout = Layout::existing(args.state_dir)?;
    let entries: Vec<Entry> = history::load(&layout).into_iter().take(args.limit).collect();
    if args.json {
        let doc = json!({"version": 1, "entries": entries});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(Outcome::Success);
    }
    if entries.is_empty() {
        println!("no deploy recorded in {} yet", layout.root.display());
        return Ok(Outcome::Success);
    }
    let now = now_unix();
    println!("{:<40} {:<12} {:<11} {:<18} {:>8}  SUBJECT", "WHEN", "COMMIT", "REASON", "RESULT", "TOOK");
    for entry in &entries {
        let result = match entry.exit_code {
            Some(code) if entry.result.is_failure() => format!("{} ({code})", entry.result),
            _ => entry.result.to_string(),
        };
        let mut line = format!(
            "{:<40} {:<12} {:<11} {:<18} {:>7.1}s  {}",
            for_humans(&entry.started_at, now),
            short(&entry.commit),
            entry.reason,
            result,
            entry.duration_ms as f64 / 1000.0,
            entry.subject.as_deref().map(|s| format!("\"{}\"", printable(s))).unwrap_or_default()
        );
        if let Some(error) = &entry.error {
            line.push_str(&format!(" — {}", printable(error)));
        }
        println!("{line}");
    }
    Ok(Outcome::Success)
}

/// Print a header saying which run it was, the outgoing revision's teardown output when one ran before
/// it, then the entrypoint log: of the last attempt, or of the newest attempt at a commit with the prefix.
/// After a rollback, the failed attempt comes first, then the rollback.
pub fn logs(args: LogsArgs) -> Result<Outcome, Failure> {
    let layout = Layout::existing(args.state_dir)?;
    let attempts = history::load(&layout);
    let shown: Vec<(Option<Entry>, PathBuf)> = match args.commit {
        None => {
            let last = state::load(&layout.state_file())?.last_attempt;
            let last = last.ok_or_else(|| anyhow!("no run has logged anything in {} yet", layout.root.display()))?;
            let newest = attempts.iter().position(|e| e.commit == last.commit && e.started_at == last.started_at);
            match newest {
                // The failure that was rolled back, then the rollback.
                Some(at) if attempts[at].reason == "rollback" && attempts.len() > at + 1 => {
                    vec![with_log(&layout, attempts[at + 1].clone()), with_log(&layout, attempts[at].clone())]
                }
                Some(at) => vec![with_log(&layout, attempts[at].clone())],
                None => vec![(Some(from_attempt(&last)), last.log)],
            }
        }
        Some(prefix) => match attempts.into_iter().find(|e| e.commit.starts_with(&prefix)) {
            Some(entry) => vec![with_log(&layout, entry)],
            None => vec![(None, newest_log(&layout, &prefix)?)],
        },
    };
    for (header, log) in shown {
        print_attempt(&layout, header.as_ref(), &log)?;
    }
    Ok(Outcome::Success)
}

/// An attempt and where its log is: recorded with it, or (older histories) named after its commit.
fn with_log(layout: &Layout, entry: Entry) -> (Option<Entry>, PathBuf) {
    let log = entry.log.clone().unwrap_or_else(|| {
        let log = layout.logs().join(format!("{}.log", entry.commit));
        let teardown = layout.logs().join(format!("{}.teardown.log", entry.commit));
        if !log.exists() && teardown.exists() { teardown } else { log }
    });
    (Some(entry), log)
}

/// One attempt: its header, the teardown that ran before it (when its output is there), its log.
fn print_attempt(layout: &Layout, header: Option<&Entry>, log: &Path) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let now = now_unix();
    if let Some(entry) = header {
        let subject = entry.subject.as_deref().map(|s| format!(" \"{}\"", printable(s))).unwrap_or_default();
        let exit = entry.exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
        let _ = writeln!(out, "# commit:  {}{subject}", entry.commit);
        let _ = writeln!(out, "# reason:  {} (attempt {})", entry.reason, entry.attempt);
        let _ = writeln!(out, "# when:    {}", for_humans(&entry.started_at, now));
        let _ = writeln!(out, "# result:  {}{exit}, in {:.1}s", entry.result, entry.duration_ms as f64 / 1000.0);
        if let Some(error) = &entry.error {
            let _ = writeln!(out, "# error:   {}", printable(error));
        }
        // A teardown that failed kept the commit from going live: then its log is the attempt's log.
        let teardown = layout.logs().join(format!("{}.teardown.log", entry.commit));
        if log != teardown
            && let Some(text) = fs::read(&teardown).ok().filter(|text| !text.is_empty())
        {
            let _ = writeln!(out, "# --- teardown of the outgoing revision ({}) ---", teardown.display());
            let _ = out.write_all(&text);
        }
        let what = if log == teardown { "teardown of the outgoing revision" } else { "entrypoint" };
        let _ = writeln!(out, "# --- {what} ({}) ---", log.display());
    }
    let text = fs::read(log)
        .map_err(|e| anyhow!("reading {}: {e}; logs are kept for the last runs only (--keep-logs)", log.display()))?;
    let _ = out.write_all(&text);
    Ok(())
}

/// A header for an attempt recorded before the history file existed.
fn from_attempt(attempt: &state::AttemptRecord) -> Entry {
    Entry {
        started_at: attempt.started_at.clone(),
        finished_at: attempt.finished_at.clone(),
        commit: attempt.commit.clone(),
        subject: None,
        reason: attempt.reason.clone().unwrap_or_else(|| "?".into()),
        attempt: attempt.attempts,
        result: attempt.result,
        exit_code: attempt.exit_code,
        error: attempt.error.clone(),
        duration_ms: attempt.duration_ms,
        previous_commit: attempt.previous_commit.clone(),
        log: Some(attempt.log.clone()),
    }
}

/// The newest entrypoint log of a commit starting with `prefix` (teardown logs are not entrypoint logs).
fn newest_log(layout: &Layout, prefix: &str) -> Result<PathBuf, Failure> {
    let mut matches: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(layout.logs())
        .map_err(|e| anyhow!("reading {}: {e}", layout.logs().display()))?
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.ends_with(".log") && !name.ends_with(".teardown.log")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    matches.sort();
    Ok(matches.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "no log for a commit starting with {prefix:?} in {}; logs are kept for the last runs only",
            layout.logs().display()
        )
    })?)
}
