//! A real `gitops webhook` on 127.0.0.1 for integration tests, and a raw HTTP client over std TcpStream.
//! The server is killed and reaped on Drop; its log is collected for assertions.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The shared secret every test server gets (unless a test writes its own).
pub const SECRET: &str = "test-webhook-secret-7f3a9c01";

/// Payloads as the forges document them (shapes kept, values made up).
pub const GITHUB_PUSH: &str = include_str!("../fixtures/webhook/github-push.json");
pub const GITHUB_PING: &str = include_str!("../fixtures/webhook/github-ping.json");
pub const GITEA_PUSH: &str = include_str!("../fixtures/webhook/gitea-push.json");
pub const GITLAB_PUSH: &str = include_str!("../fixtures/webhook/gitlab-push.json");

/// Hex HMAC-SHA256 of `body` under `secret`, as forges compute it.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Headers GitHub sends with a delivery of `event`.
pub fn github_headers(event: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("X-GitHub-Event".into(), event.into()),
        ("X-GitHub-Delivery".into(), "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
        ("X-GitHub-Hook-ID".into(), "109948940".into()),
        ("User-Agent".into(), "GitHub-Hookshot/044aadd".into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-Hub-Signature-256".into(), format!("sha256={}", hmac_hex(SECRET, body))),
    ]
}

/// Headers Gitea sends with a push (its own signature and GitHub's).
pub fn gitea_headers(body: &[u8]) -> Vec<(String, String)> {
    let sig = hmac_hex(SECRET, body);
    vec![
        ("X-Gitea-Event".into(), "push".into()),
        ("X-Gitea-Event-Type".into(), "push".into()),
        ("X-Gitea-Delivery".into(), "f6266f16-1bf3-46a5-9ea4-602e06ead473".into()),
        ("X-GitHub-Event".into(), "push".into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-Gitea-Signature".into(), sig.clone()),
        ("X-Hub-Signature-256".into(), format!("sha256={sig}")),
    ]
}

/// Headers GitLab sends with a push (the secret token in clear).
pub fn gitlab_headers(token: &str) -> Vec<(String, String)> {
    vec![
        ("X-Gitlab-Event".into(), "Push Hook".into()),
        ("X-Gitlab-Instance".into(), "https://gitlab.example.com".into()),
        ("X-Gitlab-Webhook-UUID".into(), "9cdee944-1ba1-4b3f-a8d7-f8b3ab1b8a87".into()),
        ("User-Agent".into(), "GitLab/17.6.0".into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-Gitlab-Token".into(), token.into()),
    ]
}

/// Headers of a generic signed delivery (a script or CI job).
pub fn generic_headers(body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-Gitops-Signature".into(), format!("sha256={}", hmac_hex(SECRET, body))),
    ]
}

/// `payload` with its `ref` replaced.
pub fn with_ref(payload: &str, git_ref: &str) -> String {
    let mut value: Value = serde_json::from_str(payload).expect("fixture is JSON");
    value["ref"] = Value::from(git_ref);
    value.to_string()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The response head (status line and headers) as text.
    pub head: String,
    /// The body parsed as JSON (Null when it is not JSON).
    pub json: Value,
}

/// Build a request with Content-Length (for POST) and `Connection: close`.
pub fn raw_request(method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Send `bytes` on a fresh connection and read the reply until the server closes.
pub fn exchange(port: u16, bytes: &[u8]) -> std::io::Result<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    exchange_on(stream, bytes)
}

/// Send `bytes` on `stream` (from another thread, so a server that answers early is still read)
/// and read the reply until the server closes.
pub fn exchange_on(mut stream: TcpStream, bytes: &[u8]) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut writer = stream.try_clone()?;
    let bytes = bytes.to_vec();
    // A server refusing a large body may stop reading; the write side may then fail, which is fine.
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let _ = sender.join();
    parse_reply(&raw)
}

/// Parse a raw HTTP response.
pub fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no complete HTTP response in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok(Reply { status, head: head.to_string(), json: serde_json::from_str(body).unwrap_or(Value::Null) })
}

/// A TCP connection to 127.0.0.1:`port` from the local address `source` (e.g. 127.0.0.2),
/// so that one test can play several clients for the per-source rate limit.
pub fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
    fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
            sin_zero: [0; 8],
        }
    }
    let local = sockaddr(SocketAddrV4::new(source, 0));
    let remote = sockaddr(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned here, with correctly sized addresses;
    // the descriptor is handed to TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket(): {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let bound = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(bound, 0, "bind {source}: {}", std::io::Error::last_os_error());
        let connected = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// A running `gitops webhook`.
pub struct WebhookServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The file the default test trigger appends one line to per run.
    pub out: PathBuf,
    log: Arc<Mutex<String>>,
}

/// The test trigger: one line per run in `out`.
pub fn record_trigger(out: &Path) -> String {
    format!("echo triggered >> '{}'", out.display())
}

/// Write `secret` to `dir/secret` with `mode`; returns the path.
pub fn secret_file(dir: &Path, secret: &str, mode: u32) -> PathBuf {
    let path = dir.join("secret");
    fs::write(&path, format!("{secret}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `gitops webhook ARGS` isolated from the machine's configuration.
pub fn webhook_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops"));
    cmd.arg("webhook")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("GITOPS_BRANCH")
        .env("GITOPS_CONFIG", "/dev/null");
    cmd
}

impl WebhookServer {
    /// `gitops webhook --listen 127.0.0.1:0 --branch main` with the test secret, a recording
    /// trigger and `extra` flags (later flags win).
    pub fn start(dir: &Path, extra: &[&str]) -> WebhookServer {
        let out = dir.join("triggered");
        WebhookServer::start_with(dir, &record_trigger(&out), out, extra)
    }

    /// Like `start`, with another trigger command; `out` is what `triggers()` counts lines of.
    pub fn start_with(dir: &Path, trigger: &str, out: PathBuf, extra: &[&str]) -> WebhookServer {
        let secret = secret_file(dir, SECRET, 0o600);
        let secret = secret.to_str().unwrap();
        let mut args =
            vec!["--listen", "127.0.0.1:0", "--secret-file", secret, "--branch", "main", "--trigger-command", trigger];
        args.extend_from_slice(extra);
        let child =
            webhook_command(&args).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn gitops webhook");
        WebhookServer::attach(child, out)
    }

    /// Collect the log of a started server and wait for its "listening on" line.
    pub fn attach(mut child: Child, out: PathBuf) -> WebhookServer {
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Into the log first, so that whoever gets the port also sees the line.
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let port = rest
                        .split_whitespace()
                        .next()
                        .and_then(|addr| addr.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = port_tx.send(port);
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gitops webhook did not start; log:\n{}", log.lock().unwrap());
            }
        };
        WebhookServer { child, port, out, log }
    }

    /// POST /hooks/push with these headers and body.
    pub fn post(&self, headers: &[(String, String)], body: &[u8]) -> Reply {
        exchange(self.port, &raw_request("POST", "/hooks/push", headers, body))
            .unwrap_or_else(|e| panic!("POST /hooks/push: {e}; log:\n{}", self.log()))
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Reply {
        exchange(self.port, &raw_request("GET", path, &[], b""))
            .unwrap_or_else(|e| panic!("GET {path}: {e}; log:\n{}", self.log()))
    }

    /// Lines the trigger wrote so far.
    pub fn triggers(&self) -> Vec<String> {
        fs::read_to_string(&self.out).unwrap_or_default().lines().map(String::from).collect()
    }

    /// Wait until the trigger wrote `n` lines (panics after 10 s with the log).
    pub fn wait_triggers(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.triggers();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "expected {n} trigger runs, saw {lines:?}; log:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the log contains `needle` (the log is read by a thread, a moment behind the server).
    pub fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Wait until the log says `n` trigger runs have finished (panics after 10 s with the log).
    pub fn wait_runs_done(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = |log: &str| log.matches("trigger: done").count() + log.matches("trigger command").count();
        while done(&self.log()) < n {
            assert!(Instant::now() < deadline, "expected {n} finished trigger runs; log:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Assert that the requests so far started exactly `runs` runs, in a way that cannot pass by
    /// looking too early: a valid push sent now must start a run of its own ("triggered": the
    /// worker was idle, so no run a refused request started is going on) and, once that run is
    /// done, it is run number `runs + 1`.
    pub fn assert_runs_so_far(&self, runs: usize) {
        let body = GITHUB_PUSH.as_bytes();
        let sentinel = self.post(&github_headers("push", body), body);
        self.assert_sentinel_run(&sentinel, runs);
    }

    /// `assert_runs_so_far` with the sentinel push already sent (from a particular source, say).
    pub fn assert_sentinel_run(&self, sentinel: &Reply, runs: usize) {
        assert_eq!(sentinel.json["result"], "triggered", "the worker was busy: {sentinel:?}; log:\n{}", self.log());
        self.wait_runs_done(runs + 1);
        let log = self.log();
        assert_eq!(log.matches("trigger: running").count(), runs + 1, "an unexpected run; log:\n{log}");
        assert_eq!(self.triggers().len(), runs + 1, "an unexpected run: {:?}", self.triggers());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
