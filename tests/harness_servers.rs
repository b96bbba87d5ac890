//! Self-tests for tests/support/servers.rs, using only the git CLI, so a broken harness
//! is told apart from a broken gitops.

use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::servers::{GitDaemon, HttpGit, Sshd};
use crate::support::tooling;
use tempfile::TempDir;

/// Runs git isolated from the machine's system/global config.
fn git(dir: &Path, args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn git")
}

fn git_ok(dir: &Path, args: &[&str], envs: &[(&str, String)]) -> String {
    let out = git(dir, args, envs);
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("git output is utf-8")
}

/// A bare `srv/origin.git` with one commit on main; returns (tmp, srv dir, commit id).
fn origin() -> (TempDir, PathBuf, String) {
    let tmp = TempDir::new().expect("create temp dir");
    let work = tmp.path().join("work");
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir srv");
    git_ok(tmp.path(), &["init", "-q", "-b", "main", "work"], &[]);
    std::fs::write(work.join("app.conf"), "v1\n").expect("write file");
    git_ok(&work, &["add", "."], &[]);
    git_ok(&work, &["commit", "-q", "-m", "first"], &[]);
    let sha = git_ok(&work, &["rev-parse", "HEAD"], &[]).trim().to_string();
    git_ok(tmp.path(), &["clone", "-q", "--bare", "work", "srv/origin.git"], &[]);
    (tmp, srv, sha)
}

/// ls-remote and clone through `url`, checking both see the commit.
fn assert_serves(tmp: &Path, url: &str, sha: &str, envs: &[(&str, String)]) {
    let refs = git_ok(tmp, &["ls-remote", url], envs);
    assert!(refs.contains(&format!("{sha}\trefs/heads/main")), "ls-remote {url}: {refs}");
    git_ok(tmp, &["clone", "-q", url, "out"], envs);
    let head = git_ok(&tmp.join("out"), &["rev-parse", "HEAD"], &[]);
    assert_eq!(head.trim(), sha);
}

fn ssh_env(key: &Path, known: &Path) -> Vec<(&'static str, String)> {
    let cmd = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o BatchMode=yes",
        key.display(),
        known.display()
    );
    vec![("GIT_SSH_COMMAND", cmd)]
}

#[test]
fn git_daemon_serves_clone() {
    let (tmp, srv, sha) = origin();
    let daemon = GitDaemon::start(&srv);
    assert_serves(tmp.path(), &daemon.url("origin.git"), &sha, &[]);
}

#[test]
fn http_backend_serves_clone_over_protocol_v2() {
    let (tmp, srv, sha) = origin();
    let http = HttpGit::start(&srv);
    let url = http.url("origin.git");
    assert_serves(tmp.path(), &url, &sha, &[]);
    assert!(http.requests() > 0);

    // Proves the Git-Protocol header reaches http-backend, otherwise it silently falls back to v0.
    let env = [("GIT_TRACE_PACKET", "1".to_string())];
    let out = git(tmp.path(), &["-c", "protocol.version=2", "ls-remote", &url], &env);
    assert!(out.status.success());
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(trace.contains("< version 2"), "not protocol v2:\n{trace}");
}

#[test]
fn http_backend_accepts_chunked_post_with_expect_continue() {
    let (_tmp, srv, sha) = origin();
    let http = HttpGit::start(&srv);
    let port = http.url("").rsplit(':').next().expect("port in url").trim_end_matches('/').to_string();
    let mut s = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect to HttpGit");
    // A v2 ls-refs request, split across two chunks the way curl streams an unknown-length body.
    let (a, b) = ("0014command=ls-refs\n", "00010000");
    let req = format!(
        "POST /origin.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nGit-Protocol: version=2\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nExpect: 100-continue\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    s.write_all(req.as_bytes()).expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    assert!(resp.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), "{resp}");
    assert!(resp.contains(&format!("{sha} refs/heads/main")), "{resp}");
    assert_eq!(http.requests(), 1);
}

#[test]
fn sshd_serves_clone_and_rejects_wrong_host_key() {
    let (tmp, srv, sha) = origin();
    let Some(sshd) = Sshd::start(tmp.path()) else {
        return;
    };
    let repo = srv.join("origin.git");
    let url = sshd.url(&repo);
    let env = ssh_env(&sshd.client_key(), &sshd.known_hosts());
    let out = git(tmp.path(), &["ls-remote", &url], &env);
    assert!(
        out.status.success(),
        "ls-remote over ssh failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_serves(tmp.path(), &url, &sha, &env);

    let bad = ssh_env(&sshd.client_key(), &sshd.wrong_known_hosts());
    let out = git(tmp.path(), &["clone", "-q", &url, "impostor"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "clone with a wrong pinned host key must fail");
    assert!(err.contains("Host key verification failed"), "{err}");
}

#[test]
fn sshd_serves_scp_like_url_on_port_22() {
    if !tooling::available(&[tooling::ROOT]) {
        return;
    }
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let addr = format!("127.{}.{}.{}", 1 + r % 254, (r >> 8) % 256, 1 + (r >> 16) % 254);
    let (tmp, srv, sha) = origin();
    let Some(sshd) = Sshd::start_on(tmp.path(), &addr, 22) else {
        return;
    };
    let url = sshd.scp_url(&srv.join("origin.git"));
    assert!(url.ends_with(&format!("@{addr}:{}", srv.join("origin.git").display())));
    let env = ssh_env(&sshd.client_key(), &sshd.known_hosts());
    assert_serves(tmp.path(), &url, &sha, &env);
}
