//! Notifications to real HTTP receivers, the outbox, metrics, `gitops status` and `gitops logs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::servers::{Recorded, Recorder};
use crate::support::*;

/// Split a multipart/form-data body into (headers, content) parts.
fn multipart(request: &Recorded) -> Vec<(String, Vec<u8>)> {
    let content_type = request.header("content-type").expect("content-type");
    let boundary = content_type.split("boundary=").nth(1).expect("boundary").trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &request.body;
    let mut parts = Vec::new();
    let positions: Vec<usize> =
        body.windows(delimiter.len()).enumerate().filter(|(_, w)| *w == delimiter.as_bytes()).map(|(i, _)| i).collect();
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").expect("part headers end");
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        let content = part[split + 4..].strip_suffix(b"\r\n").unwrap_or(&part[split + 4..]).to_vec();
        parts.push((headers, content));
    }
    assert!(
        body.ends_with(format!("{delimiter}--\r\n").as_bytes()) || body.ends_with(format!("{delimiter}--").as_bytes())
    );
    parts
}

#[test]
fn discord_gets_multipart_payload_json_and_the_log_file() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo 'installing nginx'\necho 'done' >&2");
    let discord = Recorder::start();
    let host = Host::new(dir.path(), &remote.file_url());
    let url = format!("discord:{}", discord.url("/api/webhooks/1/tok"));

    host.sync(&["--notify", &url]).expect(APPLIED);

    let requests = discord.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/webhooks/1/tok"));
    let parts = multipart(request);
    assert_eq!(parts.len(), 2, "payload_json and one file");
    assert!(parts[0].0.contains("name=\"payload_json\""), "{}", parts[0].0);
    let payload: serde_json::Value = serde_json::from_slice(&parts[0].1).unwrap();
    let content = payload["content"].as_str().unwrap();
    assert!(content.chars().count() <= 2000);
    assert!(content.contains("testhost: applied main@"), "{content}");
    assert_eq!(payload["embeds"][0]["color"], 0x2ecc71);
    assert_eq!(payload["embeds"][0]["title"], "applied on testhost");
    let commit = remote.head();
    assert_eq!(payload["attachments"][0]["filename"], format!("gitops-{}.log", &commit[..12]));
    assert!(parts[1].0.contains("name=\"files[0]\""), "{}", parts[1].0);
    assert!(parts[1].0.contains(&format!("filename=\"gitops-{}.log\"", &commit[..12])), "{}", parts[1].0);
    assert_eq!(String::from_utf8_lossy(&parts[1].1), "installing nginx\ndone\n");

    // Default --notify-on change: an up-to-date run says nothing.
    host.sync(&["--notify", &url]).expect(UP_TO_DATE);
    assert_eq!(discord.requests().len(), 1);
}

#[test]
fn slack_gets_text_and_the_log_tail_in_a_code_block() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo 'boom' >&2\nexit 4");
    let slack = Recorder::start();
    let host = Host::new(dir.path(), &remote.file_url());

    host.sync(&["--notify", &format!("slack:{}", slack.url("/services/T/B/x"))]).expect(APPLY_FAILED);

    let requests = slack.requests();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("apply-failed") && text.contains("exited with code 4"), "{text}");
    assert_eq!(body["blocks"][0]["type"], "section");
    let code = body["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(code.starts_with("```") && code.contains("boom"), "{code}");
}

#[test]
fn generic_json_document_is_signed_with_hmac() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo hello");
    remote.write("x", "1");
    let second = remote.commit("second change");
    let receiver = Recorder::start();
    let host = Host::new(dir.path(), &remote.file_url());
    let secret = dir.path().join("hmac");
    fs::write(&secret, "shared-hmac-key\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let flags =
        ["--notify", &receiver.url("/hook"), "--notify-secret-file", secret.to_str().unwrap(), "--notify-on", "always"];

    host.sync(&flags).expect(APPLIED);
    host.sync(&flags).expect(UP_TO_DATE);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "--notify-on always reports the no-op too");
    let doc: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    for key in [
        "version",
        "host",
        "repository",
        "branch",
        "previous_commit",
        "commit",
        "subject",
        "author",
        "result",
        "exit_code",
        "error",
        "duration_ms",
        "started_at",
        "finished_at",
        "log_tail",
        "log_truncated",
    ] {
        assert!(doc.get(key).is_some(), "missing {key}: {doc}");
    }
    assert_eq!(doc["commit"], second.as_str());
    assert_eq!(doc["subject"], "second change");
    assert_eq!(doc["author"], "Test <test@example.invalid>");
    assert_eq!(doc["result"], "applied");
    assert_eq!(doc["exit_code"], 10);
    assert_eq!(doc["log_tail"], "hello\n");
    assert!(doc["previous_commit"].is_null());
    // The receiver recomputes the HMAC with openssl over the exact body.
    let expected = openssl_hmac("shared-hmac-key", &requests[0].body);
    assert_eq!(requests[0].header("x-gitops-signature"), Some(format!("sha256={expected}").as_str()));
    let second_doc: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(second_doc["result"], "up-to-date");
    assert_eq!((&doc["live"]["commit"], &doc["live"]["result"]), (&second.as_str().into(), &"applied".into()));
    assert_eq!(doc["applied"]["commit"], second.as_str());

    // A failed apply: the notification says the failed commit is live, and what was last applied.
    remote.script("run.sh", "exit 4");
    let broken = remote.commit("broken");
    host.sync(&flags).expect(APPLY_FAILED);
    let failed: serde_json::Value = serde_json::from_slice(&receiver.requests()[2].body).unwrap();
    assert_eq!((&failed["live"]["commit"], &failed["live"]["result"]), (&broken.as_str().into(), &"failed".into()));
    assert_eq!(failed["applied"]["commit"], second.as_str());
}

fn openssl_hmac(key: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn receiver_down_keeps_the_exit_code_and_delivers_on_the_next_run() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo applied");
    let receiver = Recorder::start();
    let port = receiver.port();
    let url = receiver.url("/hook");
    drop(receiver);
    let host = Host::new(dir.path(), &remote.file_url());

    let run = host.sync(&["--notify", &url]).expect(APPLIED);
    assert!(run.stderr.contains("queued for the next run"), "{}", run.stderr);
    let queued: Vec<_> = fs::read_dir(host.state.join("outbox")).unwrap().collect();
    assert_eq!(queued.len(), 1);

    let receiver = Recorder::start_on(port);
    host.sync(&["--notify", &url]).expect(UP_TO_DATE);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "the queued message, and nothing for the no-op");
    let doc: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(doc["result"], "applied");

    // An HTTP error status is a failure too, and the queue is kept in order.
    receiver.set_status(500);
    remote.write("x", "1");
    remote.commit("second");
    host.sync(&["--notify", &url]).expect(APPLIED);
    receiver.set_status(204);
    host.sync(&["--notify", &url]).expect(UP_TO_DATE);
    let last: serde_json::Value = serde_json::from_slice(&receiver.requests().last().unwrap().body).unwrap();
    assert_eq!(last["commit"], remote.head().as_str());

    let everything = format!("{}{}", run.stdout, run.stderr);
    assert!(!everything.contains(&format!("{port}/hook")), "URL leaked: {everything}");
}

/// Receivers that accept a connection and never answer cost every run at most the reporting deadline
/// (30 s for all targets together), not 30 s each; every message waits in the outbox.
#[test]
fn silent_receivers_cannot_hold_a_run_up() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo applied");
    let host = Host::new(dir.path(), &remote.file_url());
    // Listening, never accepting: the kernel completes the connection, nobody ever answers.
    let silent: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let mut args = Vec::new();
    for listener in &silent {
        args.push("--notify".to_string());
        args.push(format!("json:http://{}/hook", listener.local_addr().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let run = host.sync(&args).expect(APPLIED);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(40), "reporting took {took:?}: {}", run.stderr);
    let queued = fs::read_dir(host.state.join("outbox")).unwrap().count();
    assert_eq!(queued, 3, "every undelivered message is kept: {}", run.stderr);
}

#[test]
fn notification_urls_from_a_file_never_appear_in_output() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo ok");
    let receiver = Recorder::start();
    let secret_url = receiver.url("/api/webhooks/42/very-secret-token-abc");
    let file = dir.path().join("notify");
    fs::write(&file, format!("# fleet channel\njson:{secret_url}\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let host = Host::new(dir.path(), &remote.file_url());

    let run = host.sync(&["--notify-file", file.to_str().unwrap()]).expect(USAGE);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let runs = [
        host.sync(&["--notify-file", file.to_str().unwrap(), "-v"]).expect(APPLIED),
        host.sync(&["--notify", "slack:ftp://very-secret-token-abc", "-v"]).expect(USAGE),
    ];
    assert_eq!(receiver.requests().len(), 1);
    for run in runs {
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(!text.contains("very-secret-token-abc"), "leaked: {text}");
    }
}

#[test]
fn metrics_file_parses_as_prometheus_text() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "exit 1");
    let host = Host::new(dir.path(), &remote.file_url());
    let metrics = dir.path().join("gitops.prom");
    let flags = ["--metrics-file", metrics.to_str().unwrap()];

    host.sync(&flags).expect(APPLY_FAILED);
    host.sync(&flags).expect(APPLY_FAILED);

    let text = fs::read_to_string(&metrics).unwrap();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition format");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(value("gitops_last_exit_code", None), 30.0);
    assert_eq!(value("gitops_last_result", Some(("result", "apply-failed"))), 1.0);
    assert_eq!(value("gitops_last_result", Some(("result", "applied"))), 0.0);
    assert_eq!(value("gitops_consecutive_failures", None), 2.0);
    assert_eq!(value("gitops_apply_failures_total", None), 2.0);
    assert_eq!(value("gitops_last_success_timestamp_seconds", None), 0.0);
    assert!(value("gitops_last_run_timestamp_seconds", None) > 1.7e9);
    assert_eq!(value("gitops_remote_commit_info", Some(("commit", remote.head().as_str()))), 1.0);
    // The failed commit is live, and says so; nothing was ever applied; the error says why.
    let failed = remote.head();
    assert_eq!(value("gitops_live_commit_info", Some(("commit", failed.as_str()))), 1.0);
    assert_eq!(value("gitops_live_commit_info", Some(("result", "failed"))), 1.0);
    assert!(!text.contains("gitops_applied_commit_info"), "{text}");
    assert_eq!(value("gitops_last_error_info", Some(("error", "entrypoint run.sh exited with code 1"))), 1.0);
    assert!(!text.contains("gitops_fetch_info"), "only with --mirror or --probe-url: {text}");
    assert_eq!(value("gitops_metrics_version", None), 2.0);

    remote.script("run.sh", "true");
    let fixed = remote.commit("fix");
    host.sync(&flags).expect(APPLIED);
    let text = fs::read_to_string(&metrics).unwrap();
    for series in [
        format!("gitops_live_commit_info{{commit=\"{fixed}\",branch=\"main\",result=\"applied\"}} 1"),
        format!("gitops_applied_commit_info{{commit=\"{fixed}\",branch=\"main\"}} 1"),
    ] {
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    assert!(!text.contains("gitops_last_error_info") && !text.contains(failed.as_str()), "{text}");
}

/// A commit subject with terminal controls (clear screen, carriage return, a window title) is shown
/// escaped by `gitops status` and in notifications' text, never obeyed.
#[test]
fn repository_text_cannot_drive_the_operators_terminal() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "true");
    remote.write("x", "1");
    remote.commit("\u{1b}[2J\u{1b}]0;pwned\u{7}\rhealth:       OK");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let state = host.state.to_str().unwrap().to_string();
    let run: Run = host.command(&["status", "--state-dir", &state]).output().unwrap().into();
    let run = run.expect(UP_TO_DATE);
    assert!(
        !run.stdout.contains('\u{1b}') && !run.stdout.contains('\r') && !run.stdout.contains('\u{7}'),
        "{:?}",
        run.stdout
    );
    assert!(run.stdout.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\rhealth:"), "{}", run.stdout);
}

#[test]
fn status_reports_health_and_logs_prints_the_run_log() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo first-run-output");
    let host = Host::new(dir.path(), &remote.file_url());
    let state = host.state.to_str().unwrap().to_string();
    let status = |extra: &[&str]| -> Run {
        let mut args = vec!["status", "--state-dir", &state];
        args.extend_from_slice(extra);
        host.command(&args).output().unwrap().into()
    };

    // Before the first sync there is no state directory: said so, naming the flag.
    let run = status(&[]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("no state directory at") && run.stderr.contains("--state-dir"), "{}", run.stderr);
    let logs: Run = host.command(&["logs", "--state-dir", &state]).output().unwrap().into();
    assert!(logs.expect(RUNTIME_ERROR).stderr.contains("no state directory at"));

    host.sync(&[]).expect(APPLIED);
    let run = status(&[]).expect(UP_TO_DATE);
    assert!(run.stdout.contains("health:       OK"), "{}", run.stdout);
    assert!(run.stdout.contains("\"initial\" by Test <test@example.invalid>"), "{}", run.stdout);
    let doc: serde_json::Value = serde_json::from_str(&status(&["--json"]).expect(UP_TO_DATE).stdout).unwrap();
    assert_eq!(doc["applied"]["commit"], remote.head().as_str());
    assert_eq!(doc["last_run"]["result"], "applied");
    assert_eq!(doc["healthy"], true);

    remote.script("run.sh", "echo second-run-output; exit 9");
    let failing = remote.commit("break it");
    host.sync(&[]).expect(APPLY_FAILED);
    let run = status(&[]).expect(RUNTIME_ERROR);
    assert!(run.stdout.contains("UNHEALTHY: last run failed: apply-failed (exit 30)"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("retrying:     {} failed 1 time(s)", &failing[..12])), "{}", run.stdout);
    // The failed commit is live (its entrypoint partly ran); the last applied is the one before.
    let first = host.state_json()["applied_commit"].as_str().unwrap().to_string();
    assert!(
        run.stdout.contains(&format!("live:         {} \"break it\" by Test <test@example.invalid> — entrypoint FAILED: entrypoint run.sh exited with code 9, live since ", &failing[..12])),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("applied:      {} \"initial\"", &first[..12])), "{}", run.stdout);
    // Times as an operator reads them: whole seconds, UTC, and how long ago.
    let last_run = run.stdout.lines().find(|l| l.starts_with("last run:")).unwrap();
    assert!(last_run.contains(" UTC (just now), apply-failed (exit 30)"), "{last_run}");
    assert!(!run.stdout.contains("T1") && !run.stdout.contains("T0") && !run.stdout.contains("T2"), "{}", run.stdout);
    let doc: serde_json::Value = serde_json::from_str(&status(&["--json"]).expect(RUNTIME_ERROR).stdout).unwrap();
    assert_eq!(doc["pending_retry"]["commit"], failing.as_str());
    assert_eq!(doc["live"]["commit"], failing.as_str());
    assert_eq!(doc["live"]["result"], "failed");
    assert_eq!(doc["applied"]["commit"], first.as_str());
    assert!(doc["last_run"]["finished_at"].as_str().unwrap().contains('T'), "JSON keeps RFC 3339");

    let logs: Run = host.command(&["logs", "--state-dir", &state]).output().unwrap().into();
    let logs = logs.expect(UP_TO_DATE).stdout;
    assert!(logs.contains("second-run-output"));
    // A header says which run it was before the log itself.
    assert!(
        logs.starts_with(&format!("# commit:  {failing} \"break it\"\n# reason:  new-commit (attempt 1)\n# when:    ")),
        "{logs}"
    );
    assert!(logs.contains("# result:  apply-failed, exit 9, in "), "{logs}");
    let logs: Run = host.command(&["logs", "--state-dir", &state, &first[..8]]).output().unwrap().into();
    assert!(logs.expect(UP_TO_DATE).stdout.contains("first-run-output"));
    let logs: Run = host.command(&["logs", "--state-dir", &state, "ffffffff"]).output().unwrap().into();
    logs.expect(RUNTIME_ERROR);

    // Stale: with a max age of 1s and nothing for 2s, a healthy-looking host is reported.
    remote.script("run.sh", "true");
    remote.commit("fix");
    host.sync(&[]).expect(APPLIED);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let run = status(&["--max-age", "1s"]).expect(RUNTIME_ERROR);
    assert!(run.stdout.contains("more than --max-age 1s"), "{}", run.stdout);
}

#[test]
fn logs_are_bounded() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "echo run");
    let host = Host::new(dir.path(), &remote.file_url());
    for n in 0..4 {
        remote.write("n", &n.to_string());
        remote.commit("next");
        std::thread::sleep(std::time::Duration::from_millis(15));
        host.sync(&["--keep-logs", "2"]).expect(APPLIED);
    }
    let logs = fs::read_dir(host.state.join("logs"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
        .count();
    assert_eq!(logs, 2);
}
