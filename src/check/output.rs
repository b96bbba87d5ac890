//! What `gitops check` prints: one line per finding and a summary (text), workflow commands for GitHub
//! Actions (`github`), or one JSON document (`json`, schema in the README).

use std::fmt::Write as _;
use std::time::Duration;

use super::{Finding, Level, Report};
use crate::printable::printable;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path:line: what is wrong; how to fix it`, then a summary line.
    Text,
    /// One JSON document.
    Json,
    /// GitHub Actions annotations (`::error file=PATH,line=N::MESSAGE`), then the summary line.
    Github,
}

/// What was checked, for the summary.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `index` (what git commit would record) or `commit`.
    pub source: &'static str,
    /// The commit checked, when it is a real one.
    pub commit: Option<String>,
    /// The range whose signatures were verified, as given.
    pub range: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The JSON document's schema version: new fields may be added; a changed or removed one bumps it.
const SCHEMA: u32 = 1;

/// Render `report` in `format`.
pub fn render(report: &Report, checked: &Checked, format: Format) -> String {
    let mut findings: Vec<&Finding> = report.findings.iter().collect();
    // The tree's findings first, then file by file and line by line, then the commits'.
    findings.sort_by(|a, b| {
        (a.commit.is_some(), &a.path, a.line, a.class).cmp(&(b.commit.is_some(), &b.path, b.line, b.class))
    });
    match format {
        Format::Json => json(&findings, report, checked),
        Format::Text => {
            let mut out = String::new();
            for finding in findings {
                let _ = writeln!(out, "{}", text_line(finding));
            }
            out + &summary(report, checked) + "\n"
        }
        Format::Github => {
            let mut out = String::new();
            for finding in findings {
                let _ = writeln!(out, "{}", annotation(finding));
            }
            out + &summary(report, checked) + "\n"
        }
    }
}

/// `path:line: message`, `path: message`, or the message alone; notes say so.
fn text_line(finding: &Finding) -> String {
    let note = if finding.level == Level::Note { "note: " } else { "" };
    let message = printable(&finding.message);
    match (&finding.path, finding.line) {
        (Some(path), Some(line)) => format!("{}:{line}: {note}{message}", printable(&path.display().to_string())),
        (Some(path), None) => format!("{}: {note}{message}", printable(&path.display().to_string())),
        (None, _) => format!("{note}{message}"),
    }
}

/// A workflow command: `::error file=PATH,line=N,title=gitops check (CLASS)::MESSAGE`.
fn annotation(finding: &Finding) -> String {
    let command = if finding.level == Level::Note { "notice" } else { "error" };
    let mut properties = Vec::new();
    if let Some(path) = &finding.path {
        properties.push(format!("file={}", property(&path.display().to_string())));
    }
    if let Some(line) = finding.line {
        properties.push(format!("line={line}"));
    }
    properties.push(format!("title={}", property(&format!("gitops check ({})", finding.class.name()))));
    format!("::{command} {}::{}", properties.join(","), data(&finding.message))
}

/// Escape a workflow command's message.
fn data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escape a workflow command's property value.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

/// `gitops check: 2 findings (1 note) in commit 4f1c2ab0e9d1: 1204 paths, 3 scripts, 12 secrets, 5 commits verified, 84 ms`.
fn summary(report: &Report, checked: &Checked) -> String {
    let errors = report.errors();
    let notes = report.findings.len() - errors;
    let verdict = match errors {
        0 => "clean".to_string(),
        1 => "1 finding".to_string(),
        n => format!("{n} findings"),
    };
    let notes = match notes {
        0 => String::new(),
        1 => " (1 note)".to_string(),
        n => format!(" ({n} notes)"),
    };
    let what = match &checked.commit {
        Some(commit) => format!("commit {}", &commit[..commit.len().min(12)]),
        None => "the index (what git commit would record)".to_string(),
    };
    let counts = &report.counts;
    let mut checked_counts = [(counts.entries, "path"), (counts.scripts, "script"), (counts.secrets, "secret")]
        .map(|(n, what)| plural(n, what))
        .join(", ");
    if counts.commits > 0 {
        let _ = write!(checked_counts, ", {} verified", plural(counts.commits, "commit"));
    }
    format!("gitops check: {verdict}{notes} in {what}: {checked_counts}, {} ms", checked.elapsed.as_millis())
}

/// `1 secret`, `2 secrets`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// The JSON document.
fn json(findings: &[&Finding], report: &Report, checked: &Checked) -> String {
    let findings: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "level": if f.level == Level::Note { "note" } else { "error" },
                "class": f.class.name(),
                "path": f.path.as_ref().map(|p| p.to_string_lossy().into_owned()),
                "line": f.line,
                "commit": f.commit,
                "message": f.message,
            })
        })
        .collect();
    let counts = &report.counts;
    let document = serde_json::json!({
        "schema": SCHEMA,
        "source": checked.source,
        "commit": checked.commit,
        "range": checked.range,
        "clean": report.errors() == 0,
        "errors": report.errors(),
        "notes": report.findings.len() - report.errors(),
        "counts": {
            "paths": counts.entries,
            "scripts": counts.scripts,
            "secrets": counts.secrets,
            "commits": counts.commits,
        },
        "findings": findings,
    });
    document.to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::super::Class;
    use super::*;

    #[test]
    fn annotations_escape_what_github_reads_as_syntax() {
        let finding = Finding::at(Class::Script, "a,b:c.sh".as_ref(), Some(3), "100% wrong\nreally");
        assert_eq!(
            annotation(&finding),
            "::error file=a%2Cb%3Ac.sh,line=3,title=gitops check (script)::100%25 wrong%0Areally"
        );
        let note = Finding::tree(Class::Size, "big").note();
        assert_eq!(annotation(&note), "::notice title=gitops check (size)::big");
        assert_eq!(text_line(&note), "note: big");
        assert_eq!(text_line(&finding), "a,b:c.sh:3: 100% wrong\\nreally");
    }
}
