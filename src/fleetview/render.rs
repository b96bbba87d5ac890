//! The fleet as text (summary line, then a table worst first), as JSON, and as one self-contained HTML page.

use std::fmt::Write as _;

use super::{Fleet, Host, State, Verdict, duration};
use crate::commit_id::short;
use crate::printable::printable;

/// `312 hosts · 297 at 4f1c2ab (tip) · 9 behind · 3 failing · 2 stale · 1 missing · 1 reboot pending`.
pub fn summary(fleet: &Fleet) -> String {
    let total = fleet.hosts.len();
    let mut parts = vec![format!("{total} host{}", if total == 1 { "" } else { "s" })];
    let tips: Vec<String> = fleet.tips.iter().map(|(branch, tip)| format!("{branch} {}", short(&tip.commit))).collect();
    let at_tip = fleet.counts.get(&State::Converged).copied().unwrap_or(0);
    parts.push(match (fleet.tips.len(), fleet.tips.values().next()) {
        (1, Some(tip)) => format!("{at_tip} at {} (tip)", short(&tip.commit)),
        (0, _) => format!("{at_tip} converged (no tip known)"),
        _ => format!("{at_tip} at tip ({})", tips.join(", ")),
    });
    for state in [
        State::Behind,
        State::Waiting,
        State::Pending,
        State::Halted,
        State::Failing,
        State::Misconfigured,
        State::Stale,
        State::Missing,
        State::RebootPending,
    ] {
        let n = fleet.counts.get(&state).copied().unwrap_or(0);
        if n > 0 {
            parts.push(format!("{n} {}", state.label()));
        }
    }
    match fleet.verdict {
        Verdict::RollingOut => parts.push("rolling out".into()),
        _ if fleet.counts.get(&State::Halted).is_some_and(|n| *n > 0) => parts.push("rollout halted".into()),
        _ => {}
    }
    printable(&parts.join(" · ")).into_owned()
}

/// The table's columns, one row per host.
const COLUMNS: [&str; 9] =
    ["HOST", "STATE", "LIVE", "APPLIED", "BEHIND", "LAST RESULT", "LAST SUCCESS", "FAILURES", "WHY"];

/// One host's cells, in the order of `COLUMNS`.
fn cells(host: &Host, now: f64) -> [String; 9] {
    let age = |at: Option<f64>| at.map(|at| format!("{} ago", duration(now - at))).unwrap_or_else(|| "never".into());
    let missing = host.state == State::Missing;
    let dash = || "-".to_string();
    [
        printable(&host.host).into_owned(),
        host.state.label().to_string(),
        // A live commit whose entrypoint did not succeed says so next to it.
        match (host.live_commit.as_deref(), host.live_result.as_deref()) {
            (None, _) => dash(),
            (Some(live), None | Some("applied")) => short(live).to_string(),
            (Some(live), Some(result)) => format!("{} ({})", short(live), printable(result)),
        },
        // The last commit applied successfully, only where it is not the live one.
        match (host.applied_commit.as_deref(), host.live_commit.as_deref()) {
            (Some(applied), Some(live)) if applied == live => dash(),
            (Some(applied), _) => short(applied).to_string(),
            (None, Some(_)) if host.live_result.as_deref() != Some("applied") => "none".into(),
            (None, _) => dash(),
        },
        // A host behind the tip that counted 0 has not fetched the tip yet: it cannot know how far.
        match (host.state, host.commits_behind) {
            (State::Missing, _) => dash(),
            (State::Converged | State::RebootPending, _) => "0".into(),
            (State::Behind | State::Waiting | State::Pending | State::Halted | State::Misconfigured, Some(0))
            | (_, None) => "?".into(),
            (_, Some(n)) => n.to_string(),
        },
        printable(host.last_result.as_deref().unwrap_or("-")).into_owned(),
        if missing { dash() } else { age(host.last_success) },
        if missing { dash() } else { host.consecutive_failures.to_string() },
        printable(host.why.as_deref().unwrap_or("-")).into_owned(),
    ]
}

/// The summary line, then the hosts that are not converged (every host with `all`), worst first.
pub fn text(fleet: &Fleet, all: bool) -> String {
    let mut out = summary(fleet);
    out.push('\n');
    let rows: Vec<[String; 9]> =
        fleet.hosts.iter().filter(|h| all || h.state != State::Converged).map(|h| cells(h, fleet.now)).collect();
    if rows.is_empty() {
        return out;
    }
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&COLUMNS.map(String::from));
    for row in &rows {
        line(row);
    }
    out
}

/// The `--json` document (schema in the README, versioned by `schema`).
pub fn json(fleet: &Fleet) -> String {
    serde_json::to_string_pretty(fleet).unwrap_or_default()
}

/// One page, no external assets and no script: the summary and every host, worst first.
pub fn html(fleet: &Fleet) -> String {
    let generated = crate::clock::rfc3339(fleet.now as i64).unwrap_or_default();
    let mut rows = String::new();
    for host in &fleet.hosts {
        let cells = cells(host, fleet.now);
        let _ = write!(rows, "<tr class=\"{}\">", state_class(host.state));
        for (column, cell) in COLUMNS.iter().zip(&cells) {
            match *column {
                "STATE" => {
                    let _ = write!(rows, "<td><span class=\"badge\">{}</span></td>", escape(cell));
                }
                "WHY" => {
                    let _ = write!(rows, "<td class=\"why\">{}</td>", escape(cell));
                }
                _ => {
                    let _ = write!(rows, "<td>{}</td>", escape(cell));
                }
            }
        }
        rows.push_str("</tr>\n");
    }
    let head: String = COLUMNS.iter().map(|c| format!("<th>{}</th>", escape(c))).collect();
    let tips: String = fleet
        .tips
        .iter()
        .map(|(branch, tip)| {
            format!("<li>{}: <code>{}</code> (from the {})</li>", escape(branch), escape(&tip.commit), tip.source)
        })
        .collect();
    let notice =
        fleet.notice.as_deref().map(|n| format!("<p class=\"notice\">{}</p>\n", escape(n))).unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gitops fleet</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1b1f24; }}
h1 {{ font-size: 1.3em; }}
.summary {{ font-size: 1.15em; font-weight: 600; margin: 0.5em 0 1em; }}
.notice {{ background: #ffebe9; border-left: 4px solid #cf222e; padding: 0.5em 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #d0d7de; white-space: nowrap; }}
th {{ background: #f6f8fa; }}
td.why {{ color: #57606a; white-space: normal; min-width: 14em; max-width: 24em; }}
.badge {{ display: inline-block; padding: 0 0.5em; border-radius: 1em; font-weight: 600; }}
tr.failing td {{ background: #ffebe9; }}
tr.failing .badge {{ background: #cf222e; color: #fff; }}
tr.misconfigured td {{ background: #ffebe9; }}
tr.misconfigured .badge {{ background: #8250df; color: #fff; }}
tr.stale td {{ background: #fff8c5; }}
tr.stale .badge {{ background: #bf8700; color: #fff; }}
tr.missing td {{ background: #fff8c5; font-style: italic; }}
tr.missing .badge {{ background: #6e7781; color: #fff; }}
tr.halted td {{ background: #fff1e5; }}
tr.halted td:first-child {{ box-shadow: inset 4px 0 #bc4c00; }}
tr.halted .badge {{ background: #bc4c00; color: #fff; }}
tr.behind td {{ background: #ddf4ff; }}
tr.behind .badge {{ background: #0969da; color: #fff; }}
tr.waiting td {{ background: #f6f8fa; color: #57606a; }}
tr.waiting .badge {{ border: 1px dashed #57606a; }}
tr.pending td {{ color: #57606a; }}
tr.pending .badge {{ border: 1px dotted #0969da; color: #0969da; }}
tr.reboot-pending td {{ background: #fbefff; }}
tr.reboot-pending .badge {{ border: 1px solid #8250df; }}
tr.converged .badge {{ color: #1a7f37; }}
footer {{ margin-top: 1em; color: #57606a; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>gitops fleet</h1>
{notice}<p class="summary">{summary}</p>
<ul class="tips">{tips}</ul>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{rows}</tbody>
</table>
<footer>Generated by gitops {version} at {generated} from Prometheus.</footer>
</body>
</html>
"#,
        summary = escape(&summary(fleet)),
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn state_class(state: State) -> &'static str {
    match state {
        State::Failing => "failing",
        State::Misconfigured => "misconfigured",
        State::Stale => "stale",
        State::Missing => "missing",
        State::Halted => "halted",
        State::Behind => "behind",
        State::Waiting => "waiting",
        State::Pending => "pending",
        State::RebootPending => "reboot-pending",
        State::Converged => "converged",
    }
}

/// Text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fleetview::{Thresholds, assess};

    const TIP: &str = "4f1c2ab000000000000000000000000000000000";

    fn host(name: &str, live: &str, result: &str) -> Host {
        Host {
            host: name.into(),
            instance: format!("{name}:9100"),
            job: "node".into(),
            branch: Some("main".into()),
            live_commit: Some(live.into()),
            live_result: Some("applied".into()),
            applied_commit: Some(live.into()),
            remote_commit: Some(TIP.into()),
            last_result: Some(result.into()),
            last_run: Some(990.0),
            last_success: Some(400.0),
            reporting: true,
            ..Host::default()
        }
    }

    fn fleet() -> Fleet {
        let mut broken = host("web-<3>", TIP, "apply-failed");
        broken.live_result = Some("failed".into());
        broken.applied_commit = Some("1111111000000000000000000000000000000000".into());
        broken.last_error = Some("entrypoint run.sh exited with status 1".into());
        broken.consecutive_failures = 2;
        broken.commits_behind = Some(0);
        let mut waiting = host("web-w", "1111111000000000000000000000000000000000", "deferred");
        waiting.deferred = Some("gate".into());
        assess(
            vec![host("a", TIP, "up-to-date"), host("b", TIP, "applied"), broken, waiting],
            vec!["ghost".into()],
            BTreeMap::new(),
            1000.0,
            Thresholds { stale_seconds: 900.0, lookback_seconds: 86400.0 },
        )
    }

    #[test]
    fn summary_and_table_show_the_unsettled_hosts_worst_first_and_why() {
        let text = text(&fleet(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "5 hosts · 2 at 4f1c2ab00000 (tip) · 1 waiting · 1 failing · 1 missing");
        assert!(lines[1].starts_with("HOST     STATE    LIVE                   APPLIED"), "{text}");
        assert!(
            lines[2].starts_with("web-<3>  failing  4f1c2ab00000 (failed)  111111100000  0       apply-failed"),
            "{text}"
        );
        assert!(lines[2].ends_with("10m ago       2         entrypoint run.sh exited with status 1"), "{text}");
        assert!(lines[3].starts_with("ghost    missing  -                      -             -       -"), "{text}");
        assert!(lines[3].ends_with("named in the repository, not seen in the last 1d"), "{text}");
        assert!(lines[4].ends_with("gate: waiting for the canaries"), "{text}");
        assert_eq!(lines.len(), 5);
        assert_eq!(super::text(&fleet(), true).lines().count(), 7);
    }

    #[test]
    fn the_page_escapes_what_hosts_report_and_styles_each_state() {
        let page = html(&fleet());
        assert!(page.contains("<td>web-&lt;3&gt;</td>"));
        assert!(!page.contains("<script"));
        assert!(page.contains("5 hosts · 2 at 4f1c2ab00000 (tip) · 1 waiting · 1 failing · 1 missing"));
        for state in State::ALL.iter().filter(|s| **s != State::Converged) {
            assert!(page.contains(&format!("tr.{} td {{", state_class(*state))), "{state:?} has a style");
        }
    }
}
