//! Issue 21, "truthful by default": what gitops says is what the host runs, and a mistake is refused,
//! never obeyed silently. Each test failed before the fix it pins.

use std::fs;

use crate::support::*;

/// `gitops history`: every attempt, newest first, with its reason and result; `--json` and `-n`.
#[test]
fn history_lists_every_attempt_newest_first_with_its_reason() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "true");
    let host = Host::new(dir.path(), &remote.file_url());
    let state = host.state.to_str().unwrap().to_string();
    let history = |extra: &[&str]| -> Run {
        let mut args = vec!["history", "--state-dir", &state];
        args.extend_from_slice(extra);
        host.command(&args).output().unwrap().into()
    };
    let first = remote.head();
    let sync = || host.sync(&["--max-attempts", "2"]);
    sync().expect(APPLIED);
    remote.script("run.sh", "echo broken; exit 3");
    let broken = remote.commit("break the web tier");
    sync().expect(APPLY_FAILED);
    sync().expect(APPLY_FAILED);
    sync().expect(APPLY_FAILED); // given up: nothing ran, nothing recorded

    let doc: serde_json::Value = serde_json::from_str(&history(&["--json"]).expect(UP_TO_DATE).stdout).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    let rows: Vec<(&str, &str, &str, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["commit"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (broken.as_str(), "retry", "apply-failed", 2),
            (broken.as_str(), "new-commit", "apply-failed", 1),
            (first.as_str(), "new-commit", "applied", 1),
        ],
        "{doc}"
    );
    assert_eq!(entries[0]["subject"], "break the web tier");
    assert_eq!(entries[0]["exit_code"], 3);
    assert!(entries[0]["started_at"].as_str().unwrap().contains('T'), "JSON keeps RFC 3339");

    let table = history(&["-n", "2"]).expect(UP_TO_DATE).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two attempts:\n{table}");
    assert!(lines[0].starts_with("WHEN") && lines[0].contains("REASON"), "{table}");
    assert!(lines[1].contains(&broken[..12]) && lines[1].contains("retry") && lines[1].contains("apply-failed (3)"));
    assert!(lines[1].contains(" UTC (just now)") && lines[1].contains("\"break the web tier\""), "{table}");
}
