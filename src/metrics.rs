//! The Prometheus textfile (node_exporter's textfile collector) written after every run.
//!
//! One small, fixed set of series per host (no per-file or per-commit-history labels): the fleet view
//! (`gitops fleet`, the alert rules, the dashboard) reads these names, so they are a contract too.

use std::fmt::Write as _;

use crate::clock::unix_seconds;
use crate::last_run::RunRecord;
use crate::notify::RunSummary;
use crate::outcome::Outcome;

/// Every metric name this file writes (the fleet view queries them by name).
#[cfg(test)]
pub const NAMES: [&str; 23] = [
    "gitops_info",
    "gitops_live_commit_info",
    "gitops_live_commit_timestamp_seconds",
    "gitops_applied_commit_info",
    "gitops_applied_commit_timestamp_seconds",
    "gitops_remote_commit_info",
    "gitops_remote_commit_timestamp_seconds",
    "gitops_commits_behind",
    "gitops_last_result",
    "gitops_last_exit_code",
    "gitops_last_run_timestamp_seconds",
    "gitops_last_error_info",
    "gitops_last_success_timestamp_seconds",
    "gitops_run_duration_seconds",
    "gitops_consecutive_failures",
    "gitops_apply_failures_total",
    "gitops_rollbacks_total",
    "gitops_reboot_pending",
    "gitops_reboot_pending_since_timestamp_seconds",
    "gitops_deferred",
    "gitops_deferred_until_timestamp_seconds",
    "gitops_fetch_info",
    "gitops_metrics_version",
];

/// Bumped when a name or a label above changes meaning, so dashboards can tell. 2: the live commit has
/// a series of its own; `gitops_applied_commit_info` is the last commit applied successfully.
const FORMAT_VERSION: u32 = 2;

/// The longest error label: a line an operator reads in a table, not a log.
const ERROR_LABEL_MAX: usize = 160;

/// The first line of `text`, at most `max` characters (an ellipsis marks the cut).
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Render the metrics for the run just finished; `fetch_info` when mirrors or a change probe are
/// configured (otherwise the remote is always the one URL and the series would say nothing).
pub fn render(record: &RunRecord, run: &RunSummary, fetch_info: bool) -> String {
    let mut out = Text::default();
    out.metric(
        "gitops_info",
        "This host's gitops: its host name (--host), tags (--tags) and version.",
        "gauge",
        &[(labels(&[("host", &run.host), ("tags", &run.tags.join(",")), ("version", env!("CARGO_PKG_VERSION"))]), 1.0)],
    );
    // Each commit metric has a companion whose value tells the newest series apart: a host that stopped
    // reporting leaves one series per commit it ran behind, and the fleet view wants the last one.
    let branch = run.branch.as_deref().unwrap_or("");
    // Live and applied differ after a failed apply: the failed commit is live, the previous one the last
    // applied. One word per meaning, as in `gitops status` and the notifications.
    if let Some(live) = &run.live_commit {
        let commit = labels(&[("commit", live), ("branch", branch)]);
        let result = run.live_result.map(|r| r.label()).unwrap_or("unfinished");
        out.metric(
            "gitops_live_commit_info",
            "The live commit (the revision current points at) and how its entrypoint ended: applied, failed or unfinished.",
            "gauge",
            &[(labels(&[("commit", live), ("branch", branch), ("result", result)]), 1.0)],
        );
        if let Some(since) = run.live_since.as_deref().and_then(unix_seconds) {
            out.metric(
                "gitops_live_commit_timestamp_seconds",
                "Since when the live commit is live.",
                "gauge",
                &[(commit, since)],
            );
        }
    }
    if let Some(applied) = &run.applied_commit {
        let commit = labels(&[("commit", applied), ("branch", branch)]);
        out.metric(
            "gitops_applied_commit_info",
            "The last commit whose entrypoint succeeded (the live one unless that failed).",
            "gauge",
            &[(commit.clone(), 1.0)],
        );
        if let Some(at) = run.applied_at.as_deref().and_then(unix_seconds) {
            out.metric(
                "gitops_applied_commit_timestamp_seconds",
                "When the last applied commit was applied.",
                "gauge",
                &[(commit, at)],
            );
        }
    }
    if let Some(remote) = &run.commit {
        let commit = labels(&[("commit", remote), ("branch", branch)]);
        out.metric(
            "gitops_remote_commit_info",
            "The remote commit the last run saw (the tip of the branch).",
            "gauge",
            &[(commit.clone(), 1.0)],
        );
        if let Some(at) = run.commit_time.as_deref().and_then(unix_seconds) {
            out.metric(
                "gitops_remote_commit_timestamp_seconds",
                "When the remote commit the last run saw was committed.",
                "gauge",
                &[(commit, at)],
            );
        }
    }
    if let Some(behind) = run.commits_behind {
        out.metric(
            "gitops_commits_behind",
            "Commits on the remote branch that the live commit does not have.",
            "gauge",
            &[(String::new(), behind as f64)],
        );
    }
    // Every result a sync can have, so that the gauge always has all its series.
    let results: Vec<(String, f64)> = Outcome::SYNC
        .iter()
        .map(|r| (labels(&[("result", r.label())]), if *r == run.result { 1.0 } else { 0.0 }))
        .collect();
    out.metric("gitops_last_result", "1 for the result of the last run, 0 for the others.", "gauge", &results);
    out.gauge("gitops_last_exit_code", "Exit code of the last run.", f64::from(run.exit_code));
    out.gauge(
        "gitops_last_run_timestamp_seconds",
        "When the last run finished.",
        unix_seconds(&run.finished_at).unwrap_or(0.0),
    );
    if let Some(error) = run.error.as_deref().filter(|_| run.result.is_failure()) {
        out.metric(
            "gitops_last_error_info",
            "Why the last run failed: the first line of its error (absent after a run that did not fail).",
            "gauge",
            &[(labels(&[("error", &first_line(error, ERROR_LABEL_MAX))]), 1.0)],
        );
    }
    out.gauge(
        "gitops_last_success_timestamp_seconds",
        "When a run last ended as planned (up-to-date, applied, or held back by the rollout policy or a suspension); 0 if never.",
        record.last_success_at.as_deref().and_then(unix_seconds).unwrap_or(0.0),
    );
    out.gauge("gitops_run_duration_seconds", "Wall time of the last run.", run.duration_ms as f64 / 1000.0);
    out.gauge(
        "gitops_consecutive_failures",
        "Failed runs in a row (0 after a success).",
        f64::from(record.consecutive_failures),
    );
    out.metric(
        "gitops_apply_failures_total",
        "Failed applies since the state directory was created.",
        "counter",
        &[(String::new(), record.apply_failures_total as f64)],
    );
    out.metric(
        "gitops_rollbacks_total",
        "Automatic rollbacks (a failed commit undone, going back to the one before) since the state directory was created.",
        "counter",
        &[(String::new(), record.rollbacks_total as f64)],
    );
    let pending = run.reboot_pending_since.as_deref();
    out.gauge(
        "gitops_reboot_pending",
        "1 while a due reboot has not happened yet.",
        f64::from(u8::from(pending.is_some())),
    );
    if let Some(since) = pending.and_then(unix_seconds) {
        out.gauge(
            "gitops_reboot_pending_since_timestamp_seconds",
            "Since when the pending reboot has been due.",
            since,
        );
    }
    if let Some(deferred) = &run.deferred {
        out.metric(
            "gitops_deferred",
            "1 while a new commit is held back, by why: wave, gate, halted, pause or suspend.",
            "gauge",
            &[(labels(&[("kind", &deferred.kind)]), 1.0)],
        );
        if let Some(until) = deferred.until.as_deref().and_then(unix_seconds) {
            out.gauge("gitops_deferred_until_timestamp_seconds", "When the held-back commit goes, when known.", until);
        }
    }
    if fetch_info && (run.served_by.is_some() || run.probe.is_some()) {
        let probe = run.probe.and_then(|p| serde_json::to_value(p).ok());
        let probe = probe.as_ref().and_then(|p| p.as_str()).unwrap_or("");
        out.metric(
            "gitops_fetch_info",
            "Which remote served the last run's fetch (empty when the change probe's 304 ended it) and what the probe said.",
            "gauge",
            &[(labels(&[("remote", run.served_by.as_deref().unwrap_or("")), ("probe", probe)]), 1.0)],
        );
    }
    out.gauge("gitops_metrics_version", "Version of this set of metrics.", f64::from(FORMAT_VERSION));
    out.0
}

/// The textfile being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// One metric family: HELP, TYPE and its samples.
    fn metric(&mut self, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }

    /// A gauge with one unlabelled sample.
    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.metric(name, help, "gauge", &[(String::new(), value)]);
    }
}

/// `{a="x",b="y"}` with the values escaped as the exposition format wants.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(result: Outcome) -> RunSummary {
        let mut run = RunSummary {
            host: "web-1".into(),
            branch: Some("main".into()),
            commit: Some("b".repeat(40)),
            live_commit: Some("b".repeat(40)),
            live_result: Some(crate::live::LiveResult::Failed),
            live_since: Some("2026-12-01T10:01:00Z".into()),
            applied_commit: Some("a".repeat(40)),
            applied_at: Some("2026-12-01T09:00:00Z".into()),
            commit_time: Some("2026-12-01T10:00:00Z".into()),
            error: Some("entrypoint run.sh exited with status 1\nsecond line".into()),
            commits_behind: Some(3),
            finished_at: "2026-12-01T10:05:00Z".into(),
            ..RunSummary::default()
        };
        run.set_result(result);
        run
    }

    #[test]
    fn every_name_written_is_listed_and_every_listed_name_can_be_written() {
        let mut full = run(Outcome::ApplyFailed);
        full.reboot_pending_since = Some("2026-12-01T09:00:00Z".into());
        full.served_by = Some("ssh://mirror/fleet.git".into());
        full.deferred = Some(crate::notify::Deferral {
            kind: "wave".into(),
            message: "waiting".into(),
            until: Some("2026-12-01T11:00:00Z".into()),
        });
        let text = render(&RunRecord::default(), &full, true);
        let written: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(written, NAMES.to_vec());
    }

    #[test]
    fn last_result_has_one_series_per_outcome_and_exactly_one_set() {
        let text = render(&RunRecord::default(), &run(Outcome::ApplyFailed), false);
        let results: Vec<&str> = text.lines().filter(|l| l.starts_with("gitops_last_result{")).collect();
        assert_eq!(results.len(), Outcome::SYNC.len());
        assert_eq!(
            results.iter().filter(|l| l.ends_with(" 1")).collect::<Vec<_>>(),
            [&"gitops_last_result{result=\"apply-failed\"} 1"]
        );
    }

    #[test]
    fn live_and_remote_commits_and_times() {
        let text = render(&RunRecord::default(), &run(Outcome::ApplyFailed), false);
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        assert!(text.contains(&format!("gitops_applied_commit_info{{commit=\"{a}\",branch=\"main\"}} 1")), "{text}");
        assert!(
            text.contains(&format!("gitops_live_commit_info{{commit=\"{b}\",branch=\"main\",result=\"failed\"}} 1"))
        );
        assert!(
            text.contains(&format!(
                "gitops_live_commit_timestamp_seconds{{commit=\"{b}\",branch=\"main\"}} 1796119260\n"
            ))
        );
        assert!(text.contains("gitops_last_error_info{error=\"entrypoint run.sh exited with status 1\"} 1\n"));
        assert!(!text.contains("gitops_fetch_info"), "only with --mirror or --probe-url");
        assert!(text.contains("gitops_commits_behind 3\n"));
        assert!(
            text.contains(&format!(
                "gitops_remote_commit_timestamp_seconds{{commit=\"{b}\",branch=\"main\"}} 1796119200\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "gitops_applied_commit_timestamp_seconds{{commit=\"{a}\",branch=\"main\"}} 1796115600\n"
        )));
        assert!(text.contains("gitops_reboot_pending 0\n"));
        assert!(!text.contains("gitops_reboot_pending_since"));
        assert!(text.contains("gitops_info{host=\"web-1\",tags=\"\",version=\""));
    }

    /// The values a label matcher in the shipped alert rules picks (`result="x"`, `result=~"x|y"`).
    fn alerted(label: &str) -> Vec<&'static str> {
        let rules = include_str!("../contrib/prometheus/gitops-rules.yml");
        let mut values = Vec::new();
        for op in ["=\"", "=~\""] {
            for (at, matcher) in rules.match_indices(&format!("{label}{op}")) {
                let value = rules[at + matcher.len()..].split('"').next().unwrap_or("");
                values.extend(value.split('|'));
            }
        }
        values
    }

    #[test]
    fn every_failed_result_and_every_configuration_mistake_has_an_alert() {
        let results = alerted("result");
        for outcome in Outcome::SYNC.into_iter().filter(|o| o.is_failure()) {
            assert!(results.contains(&outcome.label()), "no rule in gitops-rules.yml alerts on {outcome}: {results:?}");
        }
        let kinds = alerted("kind");
        for kind in crate::notify::MISCONFIGURED {
            assert!(kinds.contains(&kind), "no rule in gitops-rules.yml alerts on gitops_deferred{{kind=\"{kind}\"}}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("host", "a\"b\\c\nd")]), "{host=\"a\\\"b\\\\c\\nd\"}");
    }
}
