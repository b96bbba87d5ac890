//! `gitops webhook` end to end: the built binary on 127.0.0.1, real HTTP over TCP, a trigger
//! command that records its runs, and every hostile case the server must survive.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::tempdir;
use crate::support::webhook::*;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn signed_github_push_to_the_branch_triggers_a_sync() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let body = GITHUB_PUSH.as_bytes();

    let reply = server.post(&github_headers("push", body), body);

    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.json["result"], "triggered");
    assert_eq!(reply.json["branch"], "main");
    assert_eq!(reply.json["commit"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert!(reply.head.contains("Content-Type: application/json"));
    assert_eq!(server.wait_triggers(1), ["triggered"]);
}

#[test]
fn signed_gitea_push_triggers_a_sync() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let body = GITEA_PUSH.as_bytes();

    let reply = server.post(&gitea_headers(body), body);

    assert_eq!((reply.status, reply.json["result"].as_str()), (202, Some("triggered")));
    server.wait_triggers(1);
    assert!(server.wait_log("gitea \"push\""), "{}", server.log());
}

#[test]
fn gitlab_push_with_the_token_triggers_a_sync() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);

    let reply = server.post(&gitlab_headers(SECRET), GITLAB_PUSH.as_bytes());

    assert_eq!((reply.status, reply.json["result"].as_str()), (202, Some("triggered")));
    assert_eq!(reply.json["commit"], "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    server.wait_triggers(1);
}

#[test]
fn generic_signed_push_triggers_a_sync() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let body = br#"{"ref":"refs/heads/main","after":"5eac7ee8a1b2c3d4e5f60718293a4b5c6d7e8f90"}"#;

    let reply = server.post(&generic_headers(body), body);

    assert_eq!((reply.status, reply.json["result"].as_str()), (202, Some("triggered")));
    server.wait_triggers(1);
}

#[test]
fn unsigned_or_wrongly_signed_pushes_get_401_and_trigger_nothing() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let body = GITHUB_PUSH.as_bytes();
    let other_secret = format!("sha256={}", hmac_hex("not-the-secret-at-all", body));
    let other_body = format!("sha256={}", hmac_hex(SECRET, b"{}"));
    let good = github_headers("push", body);
    let without_signature: Vec<_> = good.iter().filter(|(k, _)| k != "X-Hub-Signature-256").cloned().collect();
    let mut cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("no signature", without_signature.clone()),
        ("signed with another secret", h(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &other_secret)])),
        ("signature of another body", h(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &other_body)])),
        (
            "sha1 signature only",
            h(&[("X-GitHub-Event", "push"), ("X-Hub-Signature", "sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12")]),
        ),
        ("gitea signature not hex", h(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", "zzzz")])),
        ("gitlab token wrong", gitlab_headers("test-webhook-secret-7f3a9c00")),
        ("gitlab token empty", gitlab_headers("")),
    ];
    // A right signature does not excuse a wrong one next to it.
    let mut mixed = good.clone();
    mixed.push(("X-Gitlab-Token".into(), "guess".into()));
    cases.push(("right signature plus wrong token", mixed));

    for (case, headers) in &cases {
        let reply = server.post(headers, body);
        assert_eq!(reply.status, 401, "{case}: {reply:?}");
        assert!(reply.json["error"].is_string(), "{case}: {reply:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    // ": 401" is the status after the request line; a bare "401" could be part of a port number.
    let refusals = |log: &str| log.lines().filter(|l| l.contains(": 401")).count();
    while refusals(&server.log()) < cases.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    assert_eq!(refusals(&log), cases.len(), "{log}");
    assert!(log.contains("WARN") && log.contains("127.0.0.1:"), "401s are logged with the source address:\n{log}");
    assert!(!log.contains(SECRET), "the secret leaked into the log:\n{log}");

    // The same server still accepts the real thing: the refusals were about the credentials, and
    // none of them started a run.
    let sentinel = server.post(&good, body);
    assert_eq!(sentinel.status, 202);
    server.assert_sentinel_run(&sentinel, 0);
}

#[test]
fn pushes_to_other_branches_and_tags_are_ignored() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    for git_ref in ["refs/heads/feature/x", "refs/tags/v1.2.0", "refs/heads/mainline"] {
        let body = with_ref(GITHUB_PUSH, git_ref);
        let reply = server.post(&github_headers("push", body.as_bytes()), body.as_bytes());
        assert_eq!(reply.status, 202, "{git_ref}: {reply:?}");
        assert_eq!(reply.json["result"], "ignored", "{git_ref}: {reply:?}");
        assert!(reply.json["reason"].is_string());
    }
    // Other events of a configured webhook are ignored too.
    let issue = br#"{"action":"opened","issue":{"number":1}}"#;
    let reply = server.post(&github_headers("issues", issue), issue);
    assert_eq!((reply.status, reply.json["result"].as_str()), (202, Some("ignored")));
    server.assert_runs_so_far(0);
}

#[test]
fn without_a_branch_the_payloads_default_branch_triggers() {
    let dir = tempdir();
    // GITOPS_BRANCH unset: `gitops sync` deploys the default branch, so that is what triggers.
    let out = dir.path().join("triggered");
    let secret = secret_file(dir.path(), SECRET, 0o600);
    let child = webhook_command(&[
        "--listen",
        "127.0.0.1:0",
        "--secret-file",
        secret.to_str().unwrap(),
        "--trigger-command",
        &record_trigger(&out),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let server = WebhookServer::attach(child, out);

    let feature = with_ref(GITEA_PUSH, "refs/heads/feature");
    let reply = server.post(&gitea_headers(feature.as_bytes()), feature.as_bytes());
    assert_eq!(reply.json["result"], "ignored", "{reply:?}");
    let main = GITEA_PUSH.as_bytes();
    let reply = server.post(&gitea_headers(main), main);
    assert_eq!(reply.json["result"], "triggered", "{reply:?}");
    assert_eq!(server.wait_triggers(1).len(), 1);
}

#[test]
fn github_ping_answers_200_and_triggers_nothing() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let body = GITHUB_PING.as_bytes();

    let reply = server.post(&github_headers("ping", body), body);

    assert_eq!((reply.status, reply.json["result"].as_str()), (200, Some("pong")));
    // A ping is authenticated like everything else.
    let mut unsigned = github_headers("ping", body);
    unsigned.retain(|(k, _)| k != "X-Hub-Signature-256");
    assert_eq!(server.post(&unsigned, body).status, 401);
    server.assert_runs_so_far(0);
}

#[test]
fn healthz_answers_json() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let reply = server.get("/healthz");
    assert_eq!((reply.status, reply.json["status"].as_str()), (200, Some("ok")));
}

#[test]
fn a_2_mib_body_gets_413_and_the_server_carries_on() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let mut body = GITHUB_PUSH.trim_end().trim_end_matches('}').to_string();
    body.push_str(&format!(",\"padding\":\"{}\"}}", "x".repeat(2 * 1024 * 1024)));
    let body = body.as_bytes();

    let reply = server.post(&github_headers("push", body), body);

    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.json["error"].as_str().unwrap().contains("1048576"));
    server.assert_runs_so_far(0);
    // The limit is a flag; the same payload passes when it allows it.
    assert_eq!(server.get("/healthz").status, 200);
    let dir = tempdir();
    let roomy = WebhookServer::start(dir.path(), &["--max-body-size", "4M"]);
    assert_eq!(roomy.post(&github_headers("push", body), body).status, 202);
}

#[test]
fn malformed_json_gets_400_and_triggers_nothing() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    for body in [
        &b"{\"ref\": \"refs/heads/main\""[..],
        b"not json at all",
        b"",
        b"\xff\xfe\x00garbage",
        br#"{"after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#, // JSON, but a push without ref
    ] {
        let reply = server.post(&github_headers("push", body), body);
        assert_eq!(reply.status, 400, "{:?}: {reply:?}", String::from_utf8_lossy(body));
    }
    // A form-encoded delivery (a forge setting) is refused with the fix in the message.
    let form = b"payload=%7B%7D";
    let mut headers = github_headers("push", form);
    headers.retain(|(k, _)| k != "Content-Type");
    headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
    let reply = server.post(&headers, form);
    assert_eq!(reply.status, 415);
    assert!(reply.json["error"].as_str().unwrap().contains("application/json"));
    server.assert_runs_so_far(0);
}

#[test]
fn hostile_requests_are_answered_and_never_crash_the_server() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &[]);
    let port = server.port;
    let huge_header = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let many_headers = format!("GET /healthz HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"\x00\x01\x02\x03 garbage\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"GET /hooks/push HTTP/1.1\r\n\r\n".to_vec(), 405),
        (b"DELETE /healthz HTTP/1.1\r\n\r\n".to_vec(), 405),
        (b"POST /hooks/push HTTP/1.1\r\n\r\n".to_vec(), 411),
        (b"POST /hooks/push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), 411),
        (b"POST /hooks/push HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), 400),
        (b"POST /hooks/push HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        (b"POST /hooks/push HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(), 400),
        (huge_header.into_bytes(), 431),
        (many_headers.into_bytes(), 431),
    ];
    for (bytes, status) in &cases {
        let reply = exchange(port, bytes).unwrap_or_else(|e| {
            panic!("{:?}: {e}\n{}", String::from_utf8_lossy(&bytes[..40.min(bytes.len())]), server.log())
        });
        assert_eq!(reply.status, *status, "{:?}", String::from_utf8_lossy(&bytes[..40.min(bytes.len())]));
        assert!(reply.json["error"].is_string(), "{reply:?}");
    }
    // A client that connects and leaves, or sends half a line and leaves.
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"POST /hooks/pu").unwrap();
    drop(half);
    // HEAD gets headers only.
    let mut head = TcpStream::connect(("127.0.0.1", port)).unwrap();
    head.write_all(b"HEAD /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    head.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n"), "{text:?}");

    assert_eq!(server.get("/healthz").status, 200, "the server survived:\n{}", server.log());
    assert!(server.triggers().is_empty());
}

/// Read from `stream` until the server closes it; returns how long that took.
fn time_until_closed(mut stream: TcpStream, started: Instant) -> Duration {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => continue,
        }
    }
}

#[test]
fn slowloris_clients_are_dropped_within_the_timeout_while_others_are_served() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &["--read-timeout", "1s"]);
    let port = server.port;
    let started = Instant::now();

    // 1: half a request head, then silence.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"POST /hooks/push HTTP/1.1\r\nHost: x\r\n").unwrap();
    // 2: a head that trickles in, one byte every 100 ms: each read is quick, the whole is not.
    let trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = trickle.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        let head = format!("GET /healthz HTTP/1.1\r\nX-Slow: {}\r\n\r\n", "s".repeat(100));
        for byte in head.bytes() {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    // 3: a complete head announcing 100 bytes of body, then 10 of them and silence.
    let mut body_stall = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = GITHUB_PUSH.as_bytes();
    let mut request = raw_request("POST", "/hooks/push", &github_headers("push", body), body);
    request.truncate(request.len() - body.len() + 10);
    body_stall.write_all(&request).unwrap();

    // Meanwhile, everyone else is served at once.
    for _ in 0..3 {
        let asked = Instant::now();
        assert_eq!(server.get("/healthz").status, 200);
        assert!(asked.elapsed() < Duration::from_millis(500), "{:?}", asked.elapsed());
    }
    let signed = server.post(&github_headers("push", body), body);
    assert_eq!(signed.status, 202);

    for (what, stream) in [("stalled head", stalled), ("trickled head", trickle), ("stalled body", body_stall)] {
        let closed_after = time_until_closed(stream, started);
        assert!(
            closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
            "{what}: closed after {closed_after:?}"
        );
    }
    let _ = trickler.join();
    server.wait_triggers(1);
    server.assert_runs_so_far(1);
    assert!(server.wait_log("request body not received within 1s"), "{}", server.log());
    let log = server.log();
    assert!(log.contains("request head not received within 1s"), "{log}");
    assert!(log.contains("request body not received within 1s"), "{log}");
}

#[test]
fn connections_beyond_the_bound_are_refused_with_503() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &["--max-connections", "2", "--read-timeout", "1s"]);
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    thread::sleep(Duration::from_millis(200));

    // Read without sending: the refusal comes at once, whatever the request would have been.
    let mut third = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    third.read_to_end(&mut raw).unwrap();
    let refused = parse_reply(&raw).unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json["error"], "too many connections");
    assert!(server.wait_log("refused 1 connection(s)"), "{}", server.log());

    // Once the silent ones are dropped by the read timeout, there is room again.
    for stream in idle {
        time_until_closed(stream, Instant::now());
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(server.get("/healthz").status, 200, "{}", server.log());
}

#[test]
fn too_many_requests_get_429_per_source_and_overall() {
    let dir = tempdir();
    let server = WebhookServer::start(dir.path(), &["--rate-limit-per-source", "3", "--rate-limit-total", "5"]);
    let port = server.port;
    let get =
        |source: Ipv4Addr| exchange_on(connect_from(source, port), &raw_request("GET", "/healthz", &[], b"")).unwrap();
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..3 {
        assert_eq!(get(one).status, 200);
    }
    let limited = get(one);
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.json["error"].as_str().unwrap().contains("from this address"));
    assert!(limited.head.contains("Retry-After: "), "{}", limited.head);

    // Pushes count as well, and a refused push is never looked at, signed or not.
    let body = GITHUB_PUSH.as_bytes();
    let push = |source: Ipv4Addr| {
        let request = raw_request("POST", "/hooks/push", &github_headers("push", body), body);
        exchange_on(connect_from(source, port), &request).unwrap()
    };
    assert_eq!(push(one).status, 429);

    // Another source has its own budget, up to the total: 3 + 2 = 5. Its push (the sentinel) is
    // the only run: the refused one started none.
    let sentinel = push(two);
    assert_eq!(sentinel.status, 202, "{sentinel:?}");
    server.assert_sentinel_run(&sentinel, 0);
    assert_eq!(get(two).status, 200);
    let limited = get(two);
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.json["error"].as_str().unwrap().contains("overall"));
}

#[test]
fn pushes_during_a_run_coalesce_into_exactly_one_more_run() {
    let dir = tempdir();
    let out = dir.path().join("runs");
    let trigger = format!("echo start >> '{0}'; sleep 1; echo end >> '{0}'", out.display());
    let server = WebhookServer::start_with(dir.path(), &trigger, out, &[]);
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body);

    assert_eq!(server.post(&headers, body).json["result"], "triggered");
    server.wait_triggers(1); // the first run has started and sleeps
    for n in 0..5 {
        let reply = server.post(&headers, body);
        assert_eq!((reply.status, reply.json["result"].as_str()), (202, Some("queued")), "push {n} during the run");
    }
    assert_eq!(server.wait_triggers(4), ["start", "end", "start", "end"], "runs never overlap");

    // Once the two runs are done the worker is idle: the next push starts a run at once again,
    // and it is the third (no other run was left queued).
    server.wait_runs_done(2);
    assert_eq!(server.post(&headers, body).json["result"], "triggered");
    server.wait_runs_done(3);
    assert_eq!(server.triggers(), ["start", "end", "start", "end", "start", "end"]);
    assert_eq!(server.log().matches("trigger: running").count(), 3, "{}", server.log());
}

/// A burst of pushes that outlasts a short run: the first push starts a run at once, the rest make one
/// follow-up once the pushes stop (not one run per gap between runs).
#[test]
fn a_burst_of_pushes_makes_one_run_and_one_follow_up() {
    let dir = tempdir();
    let out = dir.path().join("runs");
    let trigger = format!("echo start >> '{0}'; sleep 0.05; echo end >> '{0}'", out.display());
    let limits = ["--rate-limit-per-source", "100", "--rate-limit-total", "100"];
    let server = WebhookServer::start_with(dir.path(), &trigger, out, &limits);
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body);
    for n in 0..50 {
        let reply = server.post(&headers, body);
        assert_eq!(reply.status, 202, "push {n}: {reply:?}");
        thread::sleep(Duration::from_millis(15));
    }
    server.wait_runs_done(2);
    // The follow-up waits 0.5 s of quiet; anything else would have started by then.
    thread::sleep(Duration::from_millis(1500));
    let runs = server.log().matches("trigger: running").count();
    assert_eq!(runs, 2, "50 pushes in a burst: {runs} runs; log:\n{}", server.log());
}

/// A trigger command that is `gitops sync` itself and applied something exits 10: a success, not a warning.
#[test]
fn a_trigger_that_applied_is_a_success() {
    let dir = tempdir();
    let out = dir.path().join("runs");
    let trigger = format!("echo ran >> '{}'; exit 10", out.display());
    let server = WebhookServer::start_with(dir.path(), &trigger, out, &[]);
    let body = GITHUB_PUSH.as_bytes();
    assert_eq!(server.post(&github_headers("push", body), body).status, 202);
    server.wait_runs_done(1);
    let log = server.log();
    assert!(log.contains("trigger: done") && !log.contains("WARN"), "{log}");
}

#[test]
fn default_trigger_waits_for_a_sync_in_progress_then_starts_one() {
    // A stand-in for systemctl: `show` prints the unit state from a file, `start` records itself.
    let dir = tempdir();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let state = dir.path().join("unit-state");
    let calls = dir.path().join("systemctl-calls");
    let shows = dir.path().join("systemctl-shows");
    fs::write(&state, "activating\n").unwrap();
    let fake = format!(
        "#!/bin/sh\ncase \"$1\" in\n  show) echo show >> '{}'; cat '{}' ;;\n  start) echo \"start $*\" >> '{}' ;;\n  *) exit 1 ;;\nesac\n",
        shows.display(),
        state.display(),
        calls.display()
    );
    fs::write(bin.join("systemctl"), fake).unwrap();
    fs::set_permissions(bin.join("systemctl"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let secret = secret_file(dir.path(), SECRET, 0o600);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let child =
        webhook_command(&["--listen", "127.0.0.1:0", "--secret-file", secret.to_str().unwrap(), "--branch", "main"])
            .env("PATH", path)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let server = WebhookServer::attach(child, calls.clone());
    let body = GITHUB_PUSH.as_bytes();

    assert_eq!(server.post(&github_headers("push", body), body).json["result"], "triggered");
    // The timer's run is still going: starting now would only join it, so nothing is started.
    // Once the trigger has looked at the state twice, it has decided at least once to wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&shows).unwrap_or_default().lines().count() < 2 {
        assert!(Instant::now() < deadline, "the trigger never checked the state twice; log:\n{}", server.log());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.triggers().is_empty(), "started while a run was in progress");
    fs::write(&state, "inactive\n").unwrap();
    assert_eq!(server.wait_triggers(1), ["start start gitops.service"]);
}

#[test]
fn refuses_to_start_without_a_private_secret() {
    let dir = tempdir();
    let run = |args: &[&str]| {
        let output = webhook_command(args).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };

    let (code, stderr) = run(&["--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no webhook secret") && stderr.contains("--secret-file"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let open = secret_file(dir.path(), SECRET, 0o644);
    let (code, stderr) = run(&["--listen", "127.0.0.1:0", "--secret-file", open.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("0644 are too open") && stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(SECRET));

    let missing = dir.path().join("nope");
    let (code, stderr) = run(&["--listen", "127.0.0.1:0", "--secret-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot read it"), "{stderr}");

    let weak = secret_file(dir.path(), "hunter2", 0o600);
    let (code, stderr) = run(&["--listen", "127.0.0.1:0", "--secret-file", weak.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("openssl rand -hex 32") && !stderr.contains("hunter2"), "{stderr}");

    // With a secret but no socket at all.
    let good = secret_file(dir.path(), SECRET, 0o600);
    let (code, stderr) = run(&["--secret-file", good.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--listen ADDR:PORT"), "{stderr}");
}

#[test]
fn secret_from_a_systemd_credential() {
    let dir = tempdir();
    let creds = dir.path().join("credentials");
    fs::create_dir(&creds).unwrap();
    fs::write(creds.join("webhook-secret"), SECRET).unwrap();
    let out = dir.path().join("triggered");
    let child =
        webhook_command(&["--listen", "127.0.0.1:0", "--branch", "main", "--trigger-command", &record_trigger(&out)])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let server = WebhookServer::attach(child, out);
    let body = GITHUB_PUSH.as_bytes();
    assert_eq!(server.post(&github_headers("push", body), body).status, 202);
    server.wait_triggers(1);
}

/// The binary started as systemd would: `listener` as fd 3, LISTEN_FDS=1, LISTEN_PID = its own pid.
fn socket_activated_command(listener: &TcpListener, args: &[&str]) -> std::process::Command {
    let fd = listener.as_raw_fd();
    // LISTEN_PID must be the pid of the exec'd binary, known only after fork: the shell sets it
    // to its own pid ($$) and then execs, keeping that pid.
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" webhook \"$@\"")
        .arg(env!("CARGO_BIN_EXE_gitops"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("GITOPS_BRANCH")
        .env("GITOPS_CONFIG", "/dev/null")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "gitops-webhook.socket")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // dup2(3, 3) would keep close-on-exec set; clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn socket_activated(listener: &TcpListener, args: &[&str], out: std::path::PathBuf) -> WebhookServer {
    let child = socket_activated_command(listener, args).spawn().expect("spawn socket-activated webhook");
    WebhookServer::attach(child, out)
}

#[test]
fn socket_activation_serves_the_inherited_socket_and_exits_when_idle() {
    let dir = tempdir();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let secret = secret_file(dir.path(), SECRET, 0o600);
    let out = dir.path().join("triggered");
    // The trigger also reports whether the listening socket or LISTEN_* leaked into it.
    let trigger = format!(
        "echo triggered >> '{0}'; if [ -e /proc/$$/fd/3 ]; then echo fd3-leaked >> '{0}'; fi; env | grep '^LISTEN_' >> '{0}'; true",
        out.display()
    );
    let args = [
        "--secret-file",
        secret.to_str().unwrap(),
        "--branch",
        "main",
        "--trigger-command",
        &trigger,
        "--idle-timeout",
        "1s",
    ];
    let mut server = socket_activated(&listener, &args, out.clone());
    assert_eq!(server.port, port, "serves the inherited socket");
    assert!(server.wait_log("socket from systemd"), "{}", server.log());

    let body = GITHUB_PUSH.as_bytes();
    assert_eq!(server.post(&github_headers("push", body), body).status, 202);
    server.wait_runs_done(1);
    assert_eq!(server.triggers(), ["triggered"], "nothing leaked into the trigger");

    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running after the idle timeout:\n{}", server.log()));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(server.wait_log("no request for 1s; exiting"), "{}", server.log());

    // As with systemd, the socket outlives the process: a request made now waits in the
    // backlog and is answered by the next activation.
    let early = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let waiting = thread::spawn(move || exchange_on(early, &raw_request("GET", "/healthz", &[], b"")).unwrap());
    thread::sleep(Duration::from_millis(200));
    let _again = socket_activated(&listener, &args, out);
    assert_eq!(waiting.join().unwrap().status, 200);
}

#[test]
fn socket_activation_and_listen_together_are_refused() {
    let dir = tempdir();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let secret = secret_file(dir.path(), SECRET, 0o600);
    let args = ["--secret-file", secret.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    let mut cmd = socket_activated_command(&listener, &args);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("LISTEN_FDS"), "{stderr}");
}
