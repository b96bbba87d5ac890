//! Issue 21, "truthful by default": what gitops says is what the host runs, and a mistake is refused,
//! never obeyed silently. Each test failed before the fix it pins.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::prom;
use crate::support::*;

const DEFERRED: i32 = 11;

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

/// `gate=prometheus` on a host without `--prometheus`, and `canary=` names that match no host reporting
/// to Prometheus, can never open the gate: WARN in the log, a problem in `gitops status`, a deferral
/// kind of their own in the metrics, and never counted as a run that ended as planned.
#[test]
fn a_gate_that_can_never_open_is_a_warning_everywhere() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let textfiles = prom::public_dir(&dir.path().join("textfiles"));
    let remote = Remote::with_script(&dir.path().join("repo"), "true");
    let host = Host::new(dir.path(), &remote.file_url());
    let metrics = textfiles.join("gitops.prom");
    let state = host.state.to_str().unwrap().to_string();
    let sync = |extra: &[&str]| {
        let mut args = vec!["--metrics-file", metrics.to_str().unwrap()];
        args.extend_from_slice(extra);
        host.sync(&args)
    };
    sync(&[]).expect(APPLIED);
    let exporter = prom::NodeExporter::start(&textfiles);
    let prometheus = prom::Prometheus::start(&dir.path().join("prometheus"), std::slice::from_ref(&exporter.address), &[]);
    prometheus.wait_for("gitops_info{host=\"testhost\"}", 1, Duration::from_secs(30));

    remote.write(".gitops/rollout", "canary=web-9\ngate=prometheus\n");
    remote.commit("gate on a canary that does not exist");
    let held = |run: Run, kind: &str, says: &str| {
        let run = run.expect(DEFERRED);
        let warning = run.stderr.lines().find(|l| l.contains(" WARN ")).unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(warning.contains(says), "{}", run.stderr);
        let text = fs::read_to_string(&metrics).unwrap();
        assert!(text.contains(&format!("gitops_deferred{{kind=\"{kind}\"}} 1")), "{text}");
        let status: Run = host.command(&["status", "--state-dir", &state]).output().unwrap().into();
        let status = status.expect(RUNTIME_ERROR).stdout;
        assert!(status.contains(&format!("UNHEALTHY: held back by a configuration mistake ({kind})")), "{status}");
    };
    held(sync(&[]), "gate-unconfigured", "gate=prometheus but this host has no --prometheus");
    held(
        sync(&["--prometheus", &prometheus.url]),
        "canary-unknown",
        "canary=web-9 matches no host that reported to Prometheus",
    );
    let before = fs::read_to_string(&metrics).unwrap();
    let success = |text: &str| {
        text.lines().find(|l| l.starts_with("gitops_last_success_timestamp_seconds ")).unwrap().to_string()
    };
    // Not a success: the textfile still has the time of the apply.
    std::thread::sleep(Duration::from_millis(1100));
    sync(&[]).expect(DEFERRED);
    assert_eq!(success(&fs::read_to_string(&metrics).unwrap()), success(&before));
}
