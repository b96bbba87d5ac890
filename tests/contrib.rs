//! The non-systemd recipes in contrib/: the cron line and the OpenRC loop run under a real
//! /bin/sh, with a stub `gitops` on PATH that records how it was called.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
const CRON: &str = include_str!("../contrib/cron/gitops");
const OPENRC: &str = include_str!("../contrib/openrc/gitops");

/// A directory with stub `gitops` (records its arguments, exits 10) and `logger` (appends stdin).
fn stubs(dir: &Path) -> String {
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    write("gitops", &format!("echo \"$*\" >> {}/calls\nexit 10", dir.display()));
    write("logger", &format!("echo \"logger $*\" >> {0}/log; cat >> {0}/log", dir.display()));
    format!("{}:/usr/bin:/bin", dir.display())
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn cron_line_runs_sync_quietly_with_a_splay() {
    let dir = tempfile::tempdir().unwrap();
    let path = stubs(dir.path());
    let line = CRON.lines().find(|l| l.starts_with("*/5 ")).expect("a */5 schedule line");
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(fields[5], "root", "cron.d lines name the user");
    // Cron reads an unescaped % as the end of the command.
    assert!(!fields[6].contains('%'), "{line}");
    assert!(CRON.lines().any(|l| l == "SHELL=/bin/sh"));

    // What cron runs, through the shell it names: exec passes gitops's exit code to cron.
    let status = Command::new("sh").arg("-c").arg(fields[6]).env_clear().env("PATH", &path).status().unwrap();
    assert_eq!(status.code(), Some(10));
    assert_eq!(read(&dir.path().join("calls")), "sync -q --splay 4m\n");

    // The real gitops accepts those flags: with them (and --dry-run, which never sleeps) a run
    // gets as far as the fetch, which fails (1), not the arguments (2).
    let out = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["sync", "-q", "--splay", "4m", "--dry-run", "--repo-url", "/nonexistent/repo.git", "--host", "h"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("GITOPS_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn openrc_loop_runs_every_interval_logs_exit_codes_and_stops_on_sigterm() {
    let script = OPENRC;
    assert!(script.starts_with("#!/sbin/openrc-run\n"));
    let parsed = Command::new("sh")
        .arg("-n")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/openrc/gitops"))
        .status()
        .unwrap();
    assert!(parsed.success(), "sh -n contrib/openrc/gitops");
    let body = script
        .split_once("\nloop='")
        .and_then(|(_, rest)| rest.split_once("\ndone'\n"))
        .map(|(body, _)| format!("{body}\ndone"))
        .expect("loop='...' in the OpenRC script");

    let dir = tempfile::tempdir().unwrap();
    let path = stubs(dir.path());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&body)
        .args(["gitops-loop", "1", "0"])
        .env_clear()
        .env("PATH", &path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = Instant::now();
    let status = child.wait().unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(1), "stops at once while sleeping");
    assert_eq!(status.code(), Some(0));

    let calls = read(&dir.path().join("calls"));
    assert!(calls.lines().count() >= 2 && calls.lines().all(|l| l == "sync"), "one sync per interval: {calls:?}");
    let log = read(&dir.path().join("log"));
    assert!(log.contains("logger -t gitops") && log.contains("gitops sync exited 10"), "{log}");
}
