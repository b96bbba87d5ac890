//! Automatic rollback (issue 23): a commit that fails its entrypoint or its health check is undone on the
//! host — the failed revision's teardown, `current` back, the commit before run again — and not retried
//! until a newer commit or `--retry`; a killed rollback converges; a canary's rollback halts the wave.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::prom::{self, NodeExporter, Prometheus};
use crate::support::servers::Recorder;
use crate::support::*;

const DEFERRED: i32 = 11;
const ROLLED_BACK: i32 = 33;
const ROLLBACK_FAILED: i32 = 34;

/// The entrypoint: one line per run; a commit with a file `fail` fails, and a rollback run fails while
/// the test has put `$TEST_OUT.break-rollback` in place.
const RUN: &str = r#"echo "run ${GITOPS_COMMIT} ${GITOPS_REASON} from=${GITOPS_ROLLED_BACK_FROM:-}" >> "$TEST_OUT"
echo "logged: ${GITOPS_REASON}"
[ "$GITOPS_REASON" = rollback ] && [ -e "$TEST_OUT.break-rollback" ] && exit 5
[ -e fail ] && exit 1
exit 0"#;

/// A health check that counts its tries in `$TEST_OUT.health`; unhealthy while the commit has `unhealthy`,
/// or until the try named in the commit's `healthy-from` (a service that takes a moment).
const HEALTH: &str = r#"n=$(( $(cat "$TEST_OUT.health" 2>/dev/null || echo 0) + 1 )); echo $n > "$TEST_OUT.health"
echo "health try $n" >> "$TEST_OUT"
[ -e unhealthy ] && exit 1
[ -e healthy-from ] && [ "$n" -lt "$(cat healthy-from)" ] && exit 1
exit 0"#;

/// The teardown of a revision: one line naming the commit and the one that replaces it.
const TEARDOWN: &str = r#"echo "teardown ${GITOPS_COMMIT} next=${GITOPS_NEXT_COMMIT}" >> "$TEST_OUT""#;

/// A repository whose first commit is good, and a host that applied it, with rollback on by policy.
fn applied_once(root: &Path) -> (Remote, Host, String) {
    let remote = Remote::with_script(root, RUN);
    remote.script("health.sh", HEALTH);
    remote.script("teardown.sh", TEARDOWN);
    remote.write(".gitops/rollout", "rollback=yes\n");
    let good = remote.commit("good");
    let host = Host::new(root, &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    fs::remove_file(host.out.with_extension("health")).ok();
    (remote, host, good)
}

/// Lines the runs wrote, from `skip` on.
fn lines_after(host: &Host, skip: usize) -> Vec<String> {
    host.out_lines().into_iter().skip(skip).collect()
}

/// The host is on `commit`: live, applied, and its revision's entrypoint succeeded.
fn assert_on(host: &Host, commit: &str) {
    assert_eq!(host.current().as_deref(), Some(commit), "current");
    assert_eq!(host.applied().as_deref(), Some(commit), "applied_commit");
    let state = host.state_json();
    assert_eq!(state["live"]["commit"], commit, "{state}");
    assert_eq!(state["live"]["result"], "applied", "{state}");
}

#[test]
fn a_failed_entrypoint_is_undone_and_the_commit_before_runs_again() {
    let dir = tempdir();
    let (remote, host, good) = applied_once(dir.path());
    remote.write("fail", "");
    let bad = remote.commit("breaks the entrypoint");
    let before = host.out_lines().len();

    let run = host.sync(&[]).expect(ROLLED_BACK);

    assert_eq!(
        lines_after(&host, before),
        [
            format!("teardown {good} next={bad}"),
            format!("run {bad} new-commit from="),
            format!("teardown {bad} next={good}"),
            format!("run {good} rollback from={bad}"),
            "health try 1".to_string(),
        ],
        "the failed revision's teardown, then the commit before, with its health check"
    );
    assert!(run.stderr.contains(&format!("ROLLING BACK from {} to {}", &bad[..12], &good[..12])), "{}", run.stderr);
    assert!(run.stderr.contains("ROLLED BACK:"), "{}", run.stderr);
    assert_on(&host, &good);
    let state = host.state_json();
    assert_eq!((&state["rollback"]["from"], &state["rollback"]["to"]), (&bad.as_str().into(), &good.as_str().into()));
    assert_eq!(state["rollback"]["succeeded"], true);
    assert!(state["rollback"]["why"].as_str().unwrap().contains("exited with code 1"), "{state}");

    // Seen everywhere: status, history.
    let st = host.state.to_str().unwrap().to_string();
    let status: Run = host.command(&["status", "--state-dir", &st]).output().unwrap().into();
    let status = status.expect(RUNTIME_ERROR).stdout;
    assert!(
        status.contains(&format!(
            "rolled back:  {} \"breaks the entrypoint\": entrypoint run.sh exited with code 1; live: {}",
            &bad[..12],
            &good[..12]
        )),
        "{status}"
    );
    let history: Run = host.command(&["history", "--state-dir", &st, "--json"]).output().unwrap().into();
    let history: serde_json::Value = serde_json::from_str(&history.expect(UP_TO_DATE).stdout).unwrap();
    let reasons: Vec<(&str, &str)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["reason"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons, [("rollback", "applied"), ("new-commit", "apply-failed"), ("new-commit", "applied")]);
    // `gitops logs` shows why: the failed attempt first, then the rollback; the commit gone back to keeps
    // its own apply log.
    let logs: Run = host.command(&["logs", "--state-dir", &st]).output().unwrap().into();
    let logs = logs.expect(UP_TO_DATE).stdout;
    let failed = logs.find(&format!("# commit:  {bad} \"breaks the entrypoint\"")).expect(&logs);
    let rollback = logs.find("# reason:  rollback (attempt 1)").expect(&logs);
    assert!(
        failed < rollback && logs[failed..rollback].contains("# error:   entrypoint run.sh exited with code 1"),
        "{logs}"
    );
    let applied_log = fs::read_to_string(host.state.join(format!("logs/{good}.log"))).unwrap();
    assert_eq!(applied_log, "logged: new-commit\ngitops: health check health.sh (try 1 of 4)\n");
    assert!(logs[rollback..].contains("logged: rollback\n"), "{logs}");

    // Not retried: the next runs stay on the commit before, and say so.
    let before = host.out_lines().len();
    let again = host.sync(&[]).expect(ROLLED_BACK);
    assert!(again.stderr.contains("was rolled back"), "{}", again.stderr);
    host.sync(&[]).expect(ROLLED_BACK);
    assert_eq!(lines_after(&host, before), Vec::<String>::new(), "nothing ran");
    assert_on(&host, &good);

    // --retry tries it again (and it is undone again).
    let retried = host.sync(&["--retry"]).expect(ROLLED_BACK);
    assert!(retried.stderr.contains("attempt 2 of 3"), "{}", retried.stderr);
    assert_eq!(lines_after(&host, before)[1], format!("run {bad} retry from="), "after the teardown of the live one");
    assert_on(&host, &good);

    // A newer, fixed commit goes out, and the rollback is history.
    remote.remove("fail");
    let fixed = remote.commit("fix");
    host.sync(&[]).expect(APPLIED);
    assert_on(&host, &fixed);
    assert!(host.state_json().get("rollback").is_none());
    host.sync(&[]).expect(UP_TO_DATE);
}

#[test]
fn a_failed_health_check_is_tried_again_then_undone() {
    let dir = tempdir();
    let (remote, host, good) = applied_once(dir.path());
    let flags = ["--health-retries", "1", "--health-interval", "100ms"];

    // Healthy on the second try: applied, after a pause.
    remote.write("healthy-from", "2");
    let slow = remote.commit("a service that takes a moment");
    host.sync(&flags).expect(APPLIED);
    assert_on(&host, &slow);
    assert_eq!(fs::read_to_string(host.out.with_extension("health")).unwrap().trim(), "2");

    // Unhealthy on both tries: a failed apply, undone.
    fs::remove_file(host.out.with_extension("health")).unwrap();
    remote.remove("healthy-from");
    remote.write("unhealthy", "");
    let bad = remote.commit("unhealthy");
    let before = host.out_lines().len();
    let run = host.sync(&flags).expect(ROLLED_BACK);
    assert!(run.stderr.contains("health check health.sh exited with code 1 (2 tries)"), "{}", run.stderr);
    assert_eq!(
        lines_after(&host, before),
        [
            format!("teardown {slow} next={bad}"),
            format!("run {bad} new-commit from="),
            "health try 1".to_string(),
            "health try 2".to_string(),
            format!("teardown {bad} next={slow}"),
            format!("run {slow} rollback from={bad}"),
            "health try 3".to_string(),
        ]
    );
    assert_on(&host, &slow);
    let log = fs::read_to_string(host.state.join(format!("logs/{bad}.log"))).unwrap();
    assert!(log.contains("gitops: health check health.sh (try 2 of 2)"), "{log}");
    let _ = good;
}

#[test]
fn the_hosts_no_wins_and_a_first_deploy_has_nothing_to_go_back_to() {
    let dir = tempdir();
    let (remote, host, good) = applied_once(dir.path());
    remote.write("fail", "");
    let bad = remote.commit("breaks");
    // --rollback no beats rollback=yes in the commit: a plain failed apply, retried.
    let run = host.sync(&["--rollback", "no"]).expect(APPLY_FAILED);
    assert!(!run.stderr.contains("ROLLING BACK"), "{}", run.stderr);
    assert_eq!(host.current().as_deref(), Some(bad.as_str()));
    assert_eq!(host.applied().as_deref(), Some(good.as_str()));

    // A host that never applied anything has nothing to go back to: said loudly, retried as usual.
    let fresh = Host::new(&dir.path().join("fresh"), &remote.file_url());
    let run = fresh.sync(&["--rollback"]).expect(APPLY_FAILED);
    assert!(
        run.stderr.contains("rollback is on, but") && run.stderr.contains("nothing to go back to"),
        "{}",
        run.stderr
    );
    assert_eq!(fresh.current().as_deref(), Some(bad.as_str()));
    assert_eq!(fresh.sync(&["--rollback"]).code, APPLY_FAILED, "retried");
}

#[test]
fn a_rollback_that_fails_is_loud_resumed_and_given_up_after_max_attempts() {
    let dir = tempdir();
    let (remote, host, good) = applied_once(dir.path());
    fs::write(host.out.with_extension("break-rollback"), "").unwrap();
    remote.write("fail", "");
    let bad = remote.commit("breaks");

    let run = host.sync(&["--max-attempts", "2"]).expect(ROLLBACK_FAILED);
    assert!(run.stderr.contains("ROLLBACK FAILED"), "{}", run.stderr);
    assert_eq!(host.current().as_deref(), Some(good.as_str()), "the swap back happened");
    assert_eq!(host.state_json()["live"]["result"], "failed");
    // Resumed on the next run (the failed commit is not run again), then given up.
    let before = host.out_lines().len();
    host.sync(&["--max-attempts", "2"]).expect(ROLLBACK_FAILED);
    assert_eq!(lines_after(&host, before), [format!("run {good} rollback from={bad}")]);
    let run = host.sync(&["--max-attempts", "2"]).expect(ROLLBACK_FAILED);
    assert!(run.stderr.contains("failed 2 times; the host needs attention"), "{}", run.stderr);
    assert_eq!(lines_after(&host, before).len(), 1, "given up: nothing ran");

    // Fixed on the host: the next newer commit goes out normally.
    fs::remove_file(host.out.with_extension("break-rollback")).unwrap();
    remote.remove("fail");
    let fixed = remote.commit("fix");
    host.sync(&[]).expect(APPLIED);
    assert_on(&host, &fixed);
}

/// Killed (as by `kill -9`) at every point of a rollback, the next run converges: the commit before is
/// live and applied, the failed commit never ran again, and nothing ran twice at once.
#[test]
fn a_rollback_killed_at_any_point_converges_on_the_next_run() {
    for point in ["state-saved", "rollback-started", "rollback-checkout-complete", "rollback-published"] {
        let dir = tempdir();
        let (remote, host, good) = applied_once(dir.path());
        remote.write("fail", "");
        let bad = remote.commit("breaks");
        host.sync_killed_at(point);
        let before = host.out_lines().len();
        let run = host.sync(&[]);
        assert_eq!(run.code, ROLLED_BACK, "{point}: {}", run.stderr);
        assert_on(&host, &good);
        let ran = lines_after(&host, before);
        assert!(
            !ran.iter().any(|l| l.starts_with(&format!("run {bad}"))),
            "{point}: the failed commit ran again: {ran:?}"
        );
        assert!(ran.contains(&format!("run {good} rollback from={bad}")), "{point}: {ran:?}");
        host.sync(&[]).expect(ROLLED_BACK);
    }
}

#[test]
fn notifications_and_metrics_say_rolled_back_and_a_dry_run_says_it_would() {
    let dir = tempdir();
    let (remote, host, good) = applied_once(dir.path());
    remote.write("fail", "");
    let bad = remote.commit("breaks");
    let dry = host.sync(&["--dry-run"]).expect(APPLIED);
    assert!(
        dry.stdout.contains(&format!("on failure: roll back to {good} (rollback on, by .gitops/rollout)")),
        "{}",
        dry.stdout
    );
    let dry = host.sync(&["--dry-run", "--rollback=no"]).expect(APPLIED);
    assert!(dry.stdout.contains("on failure: stays live and is retried next run (rollback off)"), "{}", dry.stdout);

    let receiver = Recorder::start();
    let metrics = dir.path().join("gitops.prom");
    host.sync(&["--notify", &receiver.url("/hook"), "--metrics-file", metrics.to_str().unwrap()]).expect(ROLLED_BACK);
    let doc: serde_json::Value = serde_json::from_slice(&receiver.requests()[0].body).unwrap();
    assert_eq!(doc["result"], "rolled-back");
    assert_eq!(doc["exit_code"], 33);
    assert_eq!((&doc["rollback"]["from"], &doc["rollback"]["to"]), (&bad.as_str().into(), &good.as_str().into()));
    assert_eq!((&doc["live"]["commit"], &doc["live"]["result"]), (&good.as_str().into(), &"applied".into()));
    let text = fs::read_to_string(&metrics).unwrap();
    for line in ["gitops_last_result{result=\"rolled-back\"} 1\n", "gitops_rollbacks_total 1\n"] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // Staying rolled back is not another rollback.
    host.sync(&["--metrics-file", metrics.to_str().unwrap()]).expect(ROLLED_BACK);
    assert!(fs::read_to_string(&metrics).unwrap().contains("gitops_rollbacks_total 1\n"));
}

/// One of three hosts, a canary, rolls back: the two others hold the commit, through the real
/// Prometheus gate, exactly as for a canary whose apply failed.
#[test]
fn a_canarys_rollback_halts_the_wave_through_the_prometheus_gate() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let public = prom::public_dir(&dir.path().join("textfiles"));
    let remote = Remote::with_script(&dir.path().join("repo"), RUN);
    // The health check fails on the canary only, on commits that carry `break-canary`.
    remote.script("health.sh", r#"[ "$GITOPS_HOSTNAME" = c1 ] && [ -e break-canary ] && exit 1; exit 0"#);
    let good = remote.head();
    let url = remote.file_url();
    let hosts = [("c1", "canary"), ("web-1", ""), ("web-2", "")];
    let mut textfiles = Vec::new();
    for (name, _) in hosts {
        textfiles.push(prom::public_dir(&public.join(name)));
    }
    let sync = |i: usize, extra: &[&str]| -> Run {
        let (name, tags) = hosts[i];
        let host_dir = dir.path().join("hosts").join(name);
        fs::create_dir_all(&host_dir).unwrap();
        let host = Host::new(&host_dir, &url);
        let metrics = textfiles[i].join("gitops.prom");
        let mut args = vec!["sync", "--repo-url", &url, "--state-dir"];
        let state = host.state.to_str().unwrap().to_string();
        args.push(&state);
        args.extend(["--host", name, "--metrics-file", metrics.to_str().unwrap(), "--health-retries", "0"]);
        if !tags.is_empty() {
            args.extend(["--tags", tags]);
        }
        args.extend_from_slice(extra);
        host.command(&args).output().unwrap().into()
    };
    for i in 0..hosts.len() {
        sync(i, &[]).expect(APPLIED);
    }
    let exporters: Vec<NodeExporter> = textfiles.iter().map(|t| NodeExporter::start(t)).collect();
    let targets: Vec<String> = exporters.iter().map(|e| e.address.clone()).collect();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/gitops-rules.yml");
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &targets, &[rules]);
    let gate = ["--prometheus", prometheus.url.as_str(), "--prometheus-selector", "{job=\"node\"}"];

    remote.write(".gitops/rollout", "canary=tag:canary\ngate=prometheus\nwindow=10m\nrollback=yes\n");
    remote.write("break-canary", "x\n");
    let bad = remote.commit("breaks the canary's health");
    sync(0, &gate).expect(ROLLED_BACK);
    prometheus.wait_for("gitops_last_result{result=\"rolled-back\"} == 1", 1, Duration::from_secs(30));
    prometheus.wait_for(&format!("gitops_remote_commit_info{{commit=\"{bad}\"}}"), 1, Duration::from_secs(30));
    for i in 1..hosts.len() {
        let run = sync(i, &gate).expect(DEFERRED);
        assert!(
            run.stderr.contains(&format!("rollout halted: canary c1 failed on {} (rolled-back)", &bad[..12])),
            "{}",
            run.stderr
        );
    }
    let fleet: Run = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["fleet", "--prometheus", &prometheus.url, "--selector", "{job=\"node\"}"])
        .env("GITOPS_CONFIG", "/dev/null")
        .output()
        .unwrap()
        .into();
    assert!(fleet.stdout.contains("c1") && fleet.stdout.contains("failing"), "{}", fleet.stdout);
    // The shipped rules say so at once; the halted hosts are held by the plan, not by a mistake.
    let alert = format!("ALERTS{{alertname=\"GitopsRolledBack\",alertstate=\"firing\",instance=\"{}\"}}", targets[0]);
    prometheus.wait_for(&alert, 1, Duration::from_secs(30));
    assert!(prometheus.query("ALERTS{alertname=\"GitopsMisconfigured\"}").is_empty());
    let _ = good;
}
