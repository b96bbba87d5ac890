//! Issue 21, "truthful by default": what gitops says is what the host runs, and a mistake is refused,
//! never obeyed silently. Each test failed before the fix it pins.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use crate::support::{prom, servers};

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
/// to Prometheus, can never open the gate: the host holds, and the run fails (exit 2, a configuration
/// error, so systemd and alerting see it) with one line naming the fix; a problem in `gitops status`, a
/// deferral kind of their own in the metrics, never counted as a run that ended as planned. A gate whose
/// Prometheus cannot be asked holds and fails the same way (exit 1).
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
    let prometheus =
        prom::Prometheus::start(&dir.path().join("prometheus"), std::slice::from_ref(&exporter.address), &[]);
    prometheus.wait_for("gitops_info{host=\"testhost\"}", 1, Duration::from_secs(30));

    remote.write(".gitops/rollout", "canary=web-9\ngate=prometheus\n");
    remote.commit("gate on a canary that does not exist");
    let held = |run: Run, code: i32, kind: &str, says: &str| {
        let run = run.expect(code);
        let error = run.stderr.lines().find(|l| l.contains(" ERROR ")).unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(error.contains("held (main ") && error.contains(says), "{}", run.stderr);
        let text = fs::read_to_string(&metrics).unwrap();
        assert!(text.contains(&format!("gitops_deferred{{kind=\"{kind}\"}} 1")), "{text}");
        let status: Run = host.command(&["status", "--state-dir", &state]).output().unwrap().into();
        let status = status.expect(RUNTIME_ERROR).stdout;
        assert!(status.contains(&format!("UNHEALTHY: held back, and it cannot end by itself ({kind})")), "{status}");
    };
    held(sync(&[]), USAGE, "gate-unconfigured", "gate=prometheus but this host has no --prometheus");
    held(
        sync(&["--prometheus", &prometheus.url]),
        USAGE,
        "canary-unknown",
        "canary=web-9 matches no host that reported to Prometheus",
    );
    let dead = format!("http://127.0.0.1:{}", servers::free_port());
    held(sync(&["--prometheus", &dead]), RUNTIME_ERROR, "gate-unreachable", "the gate cannot be checked");
    let before = fs::read_to_string(&metrics).unwrap();
    let success = |text: &str| {
        text.lines().find(|l| l.starts_with("gitops_last_success_timestamp_seconds ")).unwrap().to_string()
    };
    // Not a success: the textfile still has the time of the apply.
    std::thread::sleep(Duration::from_millis(1100));
    sync(&[]).expect(USAGE);
    assert_eq!(success(&fs::read_to_string(&metrics).unwrap()), success(&before));
}

/// A dry run lists what comes in: how many commits and each one (the newest 20), then a diffstat;
/// `--diff` shows the diff, never a secret's contents nor a value the redactor hides.
#[test]
fn a_dry_run_lists_the_incoming_commits_and_a_diffstat() {
    if !tooling::available(&[tooling::AGE]) {
        return;
    }
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "true");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    for n in 1..=22 {
        remote.write("app.conf", &format!("workers = {n}\nlisten = 80\n"));
        remote.commit(&format!("tune workers to {n}"));
    }
    // A secret for some other host (an X25519 key this host does not have): skipped, and never shown.
    let key = dir.path().join("other.key");
    let made = Command::new("age-keygen").arg("-o").arg(&key).output().unwrap();
    let recipient = String::from_utf8_lossy(&made.stderr).trim().trim_start_matches("Public key: ").to_string();
    let sealed = dir.path().join("sealed");
    fs::write(dir.path().join("plain"), "ciphertext-is-not-shown\n").unwrap();
    let age =
        Command::new("age").args(["-a", "-r", &recipient, "-o"]).arg(&sealed).arg(dir.path().join("plain")).status();
    assert!(age.unwrap().success());
    remote.write("secret.age", &fs::read_to_string(&sealed).unwrap());
    remote.write("tabs.conf", "a\tb\n");
    let tip = remote.commit("add a secret");
    let before = host.snapshot();

    let run = host.sync(&["--dry-run"]).expect(APPLIED);
    let out = &run.stdout;
    assert!(out.contains("incoming commits (23):\n"), "{out}");
    assert!(out.contains(&format!("  {} add a secret — Test\n", &tip[..12])), "{out}");
    assert!(out.contains("tune workers to 22 — Test") && out.contains("tune workers to 4 — Test"), "{out}");
    assert!(!out.contains("tune workers to 3 — Test") && out.contains("  … 3 more\n"), "the newest 20: {out}");
    assert!(out.contains("changed files (3, +3 -0 lines):\n"), "{out}");
    assert!(out.contains("  app.conf | +2 -0\n") && out.contains("  secret.age | secret, not shown\n"), "{out}");
    assert!(!out.contains("diff --git"), "{out}");
    assert_eq!(host.snapshot(), before);

    let run = host.sync(&["--dry-run", "--diff"]).expect(APPLIED);
    let out = &run.stdout;
    assert!(out.contains("diff --git a/app.conf b/app.conf\n--- /dev/null\n+++ b/app.conf\n@@ -1,0 +1,2 @@\n+workers = 22\n+listen = 80\n"), "{out}");
    assert!(out.contains("+a\tb\n"), "tabs are kept: {out}");
    assert!(out.contains("diff secret.age: secret, not shown\n") && !out.contains("AGE ENCRYPTED"), "{out}");
    host.sync(&["--diff"]).expect(USAGE);
}

/// A dry run on a host that never ran creates no state directory (nor a lock, nor a cache): it fetches
/// into a temporary directory that is gone when it ends.
#[test]
fn a_dry_run_on_a_new_host_leaves_no_state_directory() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "true");
    let host = Host::new(dir.path(), &remote.file_url());
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let state = dir.path().join("nonexistent/deep/state");
    let run: Run = host
        .command(&["sync", "--repo-url", &remote.file_url(), "--state-dir", state.to_str().unwrap(), "--dry-run"])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap()
        .into();
    let run = run.expect(APPLIED);
    assert!(run.stdout.contains("would: apply"), "{}", run.stdout);
    assert!(!dir.path().join("nonexistent").exists(), "a dry run created the state directory");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "the temporary fetch is removed");
}

/// A held host's dry run says why it waits and what it would do once released (exit 11, as the real run).
#[test]
fn a_held_hosts_dry_run_says_what_it_would_do_once_released() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "true");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.write(".gitops/rollout", "pause=yes\n");
    remote.write("app.conf", "x\n");
    let paused = remote.commit("paused change");
    let run = host.sync(&["--dry-run"]).expect(DEFERRED);
    assert!(run.stdout.starts_with("deferred: paused by .gitops/rollout (pause=yes)"), "{}", run.stdout);
    assert!(run.stdout.contains("\nonce released, would: apply\n"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("  {} paused change — Test\n", &paused[..12])), "{}", run.stdout);
    assert!(run.stdout.contains("  app.conf | +1 -0\n"), "{}", run.stdout);
    // What would stop it once released is said, and the dry run still exits as the real run would (11).
    let run = host.sync(&["--dry-run", "--max-checkout-files", "1"]).expect(DEFERRED);
    assert!(run.stdout.contains("\nonce released, would fail (exit 1): "), "{}", run.stdout);
    host.sync(&["--max-checkout-files", "1"]).expect(DEFERRED);
}

/// Where trust is on, each incoming commit in a dry run says who signed it.
#[test]
fn a_dry_run_shows_each_incoming_commits_signer() {
    if !tooling::available(&[tooling::SSH_KEYGEN]) {
        return;
    }
    let dir = tempdir();
    let alice = SigningKey::generate(dir.path(), "alice", "ed25519");
    let remote = Remote::new(dir.path());
    remote.script("run.sh", "true");
    remote.commit_signed("initial", &alice);
    let signers = allowed_signers(dir.path(), &[alice.allowed("alice@example.org", "")]);
    let host = Host::new(dir.path(), &remote.file_url());
    let trust = ["--allowed-signers", signers.to_str().unwrap()];
    host.sync(&trust).expect(APPLIED);
    remote.write("a", "1");
    let signed = remote.commit_signed("signed change", &alice);
    let run = host.sync(&[&trust[..], &["--dry-run"]].concat()).expect(APPLIED);
    assert!(
        run.stdout.contains(&format!("  {} signed change — Test [signed by alice@example.org]\n", &signed[..12])),
        "{}",
        run.stdout
    );
}

/// "1 changed paths" no more.
#[test]
fn one_changed_path_is_one_path() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "true");
    let host = Host::new(dir.path(), &remote.file_url());
    let run = host.sync(&[]).expect(APPLIED);
    assert!(run.stderr.contains("(attempt 1, 1 changed path)"), "{}", run.stderr);
}

/// gix's "Could not verify … Could not retrieve metadata of "/tmp/nope.git/.git"" (wrong for a bare
/// path) becomes one line naming the URL, the reason and the fix.
#[test]
fn a_remote_that_cannot_be_reached_is_one_line_with_the_reason_and_the_fix() {
    let dir = tempdir();
    let not_a_repo = dir.path().join("plain-dir");
    fs::create_dir(&not_a_repo).unwrap();
    let refused = format!("git://127.0.0.1:{}/fleet.git", servers::free_port());
    for (url, says) in [
        (
            format!("file://{}/nope.git", dir.path().display()),
            format!("{}/nope.git does not exist; check --repo-url", dir.path().display()),
        ),
        (
            not_a_repo.display().to_string(),
            format!(
                "{} is not a Git repository (no HEAD and objects/, no .git); point --repo-url at",
                not_a_repo.display()
            ),
        ),
        (
            refused.clone(),
            format!("connecting to {refused}: the connection was refused; check that the Git server runs"),
        ),
    ] {
        let host = Host::new(dir.path(), &url);
        let run = host.sync(&[]).expect(RUNTIME_ERROR);
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert!(errors[0].contains(&url) && errors[0].contains(&says), "{}", errors[0]);
        assert!(!errors[0].contains("metadata") && !errors[0].contains("os error"), "{}", errors[0]);
    }
}

/// A number without a unit was read as seconds (`window=90` rolled a fleet out in 90 s): refused
/// everywhere with the hint, in the rollout policy (exit 31, nothing applied) and in flags (exit 2).
#[test]
fn a_duration_without_a_unit_is_refused_with_a_hint() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let applied = host.applied();
    remote.write(".gitops/rollout", "canary=web-1\nwindow=90\n");
    remote.commit("a window without a unit");
    let run = host.sync(&[]).expect(VERIFY_FAILED);
    assert!(
        run.stderr.contains(".gitops/rollout line 2: window \"90\": 90 has no unit: did you mean 90s, 90m or 90h?"),
        "{}",
        run.stderr
    );
    assert_eq!(host.applied(), applied, "nothing applied");
    for (flag, value) in [("--apply-timeout", "90"), ("--fetch-timeout", "30"), ("--reapply-every", "3600")] {
        let run = host.sync(&[flag, value]).expect(USAGE);
        assert!(
            run.stderr.contains(&format!("{flag} \"{value}\": {value} has no unit: did you mean")),
            "{}",
            run.stderr
        );
    }
    let state = host.state.to_str().unwrap().to_string();
    let run: Run = host.command(&["status", "--state-dir", &state, "--max-age", "60"]).output().unwrap().into();
    let run = run.expect(USAGE);
    assert!(run.stderr.contains("60 has no unit: did you mean 60s, 60m or 60h?"), "{}", run.stderr);
    host.sync(&["--splay", "0"]).expect(VERIFY_FAILED); // 0 needs no unit
}

/// `gitops logs` shows the outgoing revision's teardown output before the entrypoint's, each under a
/// line that says which it is.
#[test]
fn logs_show_the_teardown_that_ran_before_the_entrypoint() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo entrypoint-output");
    remote.script("teardown.sh", "echo teardown-output-of-$GITOPS_COMMIT");
    let first = remote.commit("with a teardown");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.write("x", "1");
    let second = remote.commit("second");
    host.sync(&[]).expect(APPLIED);
    let state = host.state.to_str().unwrap().to_string();
    let logs: Run = host.command(&["logs", "--state-dir", &state]).output().unwrap().into();
    let logs = logs.expect(UP_TO_DATE).stdout;
    let teardown = logs.find("# --- teardown of the outgoing revision").expect(&logs);
    let output = logs.find(&format!("teardown-output-of-{first}")).expect(&logs);
    let entrypoint = logs.find("# --- entrypoint").expect(&logs);
    assert!(teardown < output && output < entrypoint && logs[entrypoint..].contains("entrypoint-output"), "{logs}");
    assert!(logs.starts_with(&format!("# commit:  {second} \"second\"")), "{logs}");
}

/// `--help` shows which variables a flag reads, never their values: a repository URL, a notification
/// URL, a Prometheus or FleetLock URL can carry a password or a token.
#[test]
fn help_never_prints_the_values_of_secret_bearing_variables() {
    let secrets = [
        ("GITOPS_REPO_URL", "https://deploy:s3cret-token-1@git.example.com/fleet.git"),
        ("GITOPS_NOTIFY", "https://hooks.example.com/s3cret-token-2"),
        ("GITOPS_PROMETHEUS", "https://user:s3cret-token-3@prom.example.com"),
        ("GITOPS_FLEETLOCK_URL", "https://user:s3cret-token-4@lock.example.com"),
        ("GITOPS_MIRRORS", "https://user:s3cret-token-5@mirror.example.com/fleet.git"),
        ("GITOPS_PROBE_URL", "https://user:s3cret-token-6@probe.example.com/info/refs"),
    ];
    for command in [&["sync", "--help"][..], &["fleet", "--help"][..]] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops"));
        cmd.args(command).env("GITOPS_CONFIG", "/dev/null");
        for (key, value) in secrets {
            cmd.env(key, value);
        }
        let help = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert!(help.contains("GITOPS_REPO_URL") || command[0] == "fleet", "{help}");
        assert!(!help.contains("s3cret"), "{command:?} printed a secret:\n{help}");
    }
}
