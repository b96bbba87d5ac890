//! The Prometheus textfile (node_exporter's textfile collector) written after every run.

use std::fmt::Write as _;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::last_run::RunRecord;
use crate::notify::RunSummary;
use crate::outcome::Outcome;

/// Render the metrics for the run just finished.
pub fn render(record: &RunRecord, run: &RunSummary) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, lines: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "gitops_last_run_timestamp_seconds",
        "When the last run finished.",
        "gauge",
        vec![(String::new(), seconds(&run.finished_at))],
    );
    let success = record.last_success_at.as_deref().map(seconds).unwrap_or(0.0);
    gauge(
        "gitops_last_success_timestamp_seconds",
        "When a run last succeeded (up-to-date or applied).",
        "gauge",
        vec![(String::new(), success)],
    );
    gauge(
        "gitops_run_duration_seconds",
        "Wall time of the last run.",
        "gauge",
        vec![(String::new(), run.duration_ms as f64 / 1000.0)],
    );
    gauge(
        "gitops_last_exit_code",
        "Exit code of the last run.",
        "gauge",
        vec![(String::new(), f64::from(run.exit_code))],
    );
    gauge(
        "gitops_last_result",
        "1 for the result of the last run, 0 for the others.",
        "gauge",
        // Every result a sync can have, so that the gauge always has all its series.
        Outcome::SYNC
            .iter()
            .map(|r| (format!("{{result=\"{r}\"}}"), if *r == run.result { 1.0 } else { 0.0 }))
            .collect(),
    );
    if let (Some(commit), Some(branch)) = (&run.commit, &run.branch) {
        let labels = format!("{{commit=\"{}\",branch=\"{}\"}}", escape(commit), escape(branch));
        gauge("gitops_remote_commit_info", "The remote commit the last run saw.", "gauge", vec![(labels, 1.0)]);
    }
    gauge(
        "gitops_consecutive_failures",
        "Failed runs in a row.",
        "gauge",
        vec![(String::new(), f64::from(record.consecutive_failures))],
    );
    gauge(
        "gitops_apply_failures_total",
        "Failed applies since the state directory was created.",
        "counter",
        vec![(String::new(), record.apply_failures_total as f64)],
    );
    out
}

fn seconds(rfc3339: &str) -> f64 {
    OffsetDateTime::parse(rfc3339, &Rfc3339).map(|t| t.unix_timestamp_nanos() as f64 / 1e9).unwrap_or(0.0)
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
