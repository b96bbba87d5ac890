//! The fleet as text (summary line, then a table worst first), as JSON, and as one self-contained HTML page.

use std::fmt::Write as _;

use super::{Fleet, Host, State};
use crate::commit_id::short;
use crate::printable::printable;

/// `312 hosts · 297 at 4f1c2ab (tip) · 9 behind · 3 failing · 2 stale · 1 reboot pending`.
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
    for state in [State::Behind, State::Waiting, State::Failing, State::Stale, State::RebootPending] {
        let n = fleet.counts.get(&state).copied().unwrap_or(0);
        if n > 0 {
            parts.push(format!("{n} {}", state.label()));
        }
    }
    if fleet.halted() {
        parts.push("rollout halted".into());
    }
    printable(&parts.join(" · ")).into_owned()
}

/// The table's columns, one row per host.
const COLUMNS: [&str; 9] =
    ["HOST", "STATE", "LIVE", "BEHIND", "LAST RESULT", "LAST SUCCESS", "FAILURES", "REBOOT", "HELD"];

/// One host's cells, in the order of `COLUMNS`.
fn cells(host: &Host, now: f64) -> [String; 9] {
    let age = |at: Option<f64>| at.map(|at| format!("{} ago", duration(now - at))).unwrap_or_else(|| "never".into());
    [
        printable(&host.host).into_owned(),
        host.state.label().to_string(),
        host.live_commit.as_deref().map(short).unwrap_or("-").to_string(),
        // A host behind the tip that counted 0 has not fetched the tip yet: it cannot know how far.
        match (host.state, host.commits_behind) {
            (State::Converged | State::RebootPending, _) => "0".into(),
            (State::Behind | State::Waiting, Some(0)) | (_, None) => "?".into(),
            (_, Some(n)) => n.to_string(),
        },
        printable(host.last_result.as_deref().unwrap_or("-")).into_owned(),
        age(host.last_success),
        host.consecutive_failures.to_string(),
        host.reboot_pending_since.map(|at| format!("due {} ago", duration(now - at))).unwrap_or_else(|| "-".into()),
        match (&host.deferred, host.deferred_until) {
            (Some(kind), Some(until)) if host.state == State::Waiting => {
                format!("{kind}, in {}", duration(until - now))
            }
            (Some(kind), None) if host.state == State::Waiting => kind.clone(),
            _ => "-".into(),
        },
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
        for cell in &cells {
            let _ = write!(rows, "<td>{}</td>", escape(cell));
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
table {{ border-collapse: collapse; }}
th, td {{ text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #d0d7de; }}
th {{ background: #f6f8fa; }}
tr.failing td {{ background: #ffebe9; }}
tr.stale td {{ background: #fff8c5; }}
tr.behind td {{ background: #ddf4ff; }}
tr.waiting td {{ background: #eef1f4; }}
tr.reboot-pending td {{ background: #fbefff; }}
footer {{ margin-top: 1em; color: #57606a; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>gitops fleet</h1>
<p class="summary">{summary}</p>
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
        State::Stale => "stale",
        State::Behind => "behind",
        State::Waiting => "waiting",
        State::RebootPending => "reboot-pending",
        State::Converged => "converged",
    }
}

/// Text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// `45s`, `12m`, `3h`, `2d`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fleetview::{Thresholds, assess};

    fn fleet() -> Fleet {
        let host = |name: &str, live: &str, result: &str| Host {
            host: name.into(),
            instance: format!("{name}:9100"),
            job: "node".into(),
            branch: Some("main".into()),
            live_commit: Some(live.into()),
            remote_commit: Some("4f1c2ab000000000000000000000000000000000".into()),
            last_result: Some(result.into()),
            last_run: Some(990.0),
            last_success: Some(400.0),
            reporting: true,
            ..Host::default()
        };
        let tip = "4f1c2ab000000000000000000000000000000000";
        let mut broken = host("web-<3>", "1111111000000000000000000000000000000000", "apply-failed");
        broken.consecutive_failures = 2;
        broken.commits_behind = Some(4);
        assess(
            vec![host("a", tip, "up-to-date"), host("b", tip, "applied"), broken],
            BTreeMap::new(),
            1000.0,
            Thresholds { stale_seconds: 900.0 },
        )
    }

    #[test]
    fn summary_and_table_show_the_unsettled_hosts_worst_first() {
        let text = text(&fleet(), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "3 hosts · 2 at 4f1c2ab00000 (tip) · 1 failing");
        assert!(lines[1].starts_with("HOST     STATE    LIVE"), "{text}");
        assert!(lines[2].starts_with("web-<3>  failing  111111100000  4"), "{text}");
        assert!(lines[2].contains("apply-failed  10m ago"), "{text}");
        assert_eq!(lines.len(), 3);
        assert_eq!(super::text(&fleet(), true).lines().count(), 5);
    }

    #[test]
    fn the_page_escapes_what_hosts_report() {
        let page = html(&fleet());
        assert!(page.contains("<td>web-&lt;3&gt;</td>"));
        assert!(!page.contains("<script"));
        assert!(page.contains("3 hosts · 2 at 4f1c2ab00000 (tip) · 1 failing"));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(59.0), "59s");
        assert_eq!(duration(7200.0), "2h");
        assert_eq!(duration(-3.0), "0s");
    }
}
