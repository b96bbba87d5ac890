//! Every supported transport against a real server: git daemon, smart HTTP, ssh:// and scp-like, file://.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::servers::{GitDaemon, HttpGit, Sshd};
use crate::support::*;

/// First deploy, up-to-date, then a new commit: the whole cycle over `url`.
fn full_cycle(dir: &Path, remote: &Remote, url: &str, extra: &[&str]) -> Host {
    let host = Host::new(dir, url);
    let first = remote.head();
    host.sync(extra).expect(APPLIED);
    assert_eq!(host.current(), Some(first.clone()));
    host.sync(extra).expect(UP_TO_DATE);
    remote.write("new.txt", "new");
    let second = remote.commit("second");
    host.sync(extra).expect(APPLIED);
    assert_eq!(host.applied(), Some(second.clone()));
    assert_eq!(host.out_lines(), [format!("applied {first} prev="), format!("applied {second} prev={first}")]);
    host
}

#[test]
fn plain_path_and_file_url() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    full_cycle(&dir.path().join("a"), &remote, remote.bare.to_str().unwrap(), &[]);
    full_cycle(&dir.path().join("b"), &remote, &remote.file_url(), &[]);
}

#[test]
fn git_daemon() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let daemon = GitDaemon::start(dir.path());
    full_cycle(dir.path(), &remote, &daemon.url("origin.git"), &[]);
}

#[test]
fn smart_http() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let server = HttpGit::start(dir.path());
    full_cycle(dir.path(), &remote, &server.url("origin.git"), &[]);
    assert!(server.requests() >= 3, "traffic went through http-backend: {}", server.requests());
}

#[test]
fn ssh_url_with_deploy_key_and_pinned_host_key() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let Some(sshd) = Sshd::start(&sshd_dir(dir.path())) else {
        return;
    };
    let key = sshd.client_key();
    let known = sshd.known_hosts();
    let flags = ["--ssh-key", key.to_str().unwrap(), "--known-hosts", known.to_str().unwrap()];
    full_cycle(dir.path(), &remote, &sshd.url(&remote.bare), &flags);
}

#[test]
fn ssh_deploy_key_from_a_systemd_credential() {
    // gitops.service passes the key with LoadCredential=ssh-key:…; systemd copies it 0400 into
    // $CREDENTIALS_DIRECTORY, and gitops uses it when no --ssh-key/GITOPS_SSH_KEY is set.
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let Some(sshd) = Sshd::start(&sshd_dir(dir.path())) else {
        return;
    };
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let key = credentials.join("ssh-key");
    std::fs::copy(sshd.client_key(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    let known = sshd.known_hosts();
    let host =
        Host::new(dir.path(), &sshd.url(&remote.bare)).env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap());
    host.sync(&["--known-hosts", known.to_str().unwrap()]).expect(APPLIED);
    assert_eq!(host.applied(), Some(remote.head()));

    // The credential is held to the same rule as --ssh-key: never readable by others.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = host.sync(&["--known-hosts", known.to_str().unwrap()]).expect(USAGE);
    assert!(run.stderr.contains(&format!("{}: permissions 0644", key.display())), "{}", run.stderr);
}

#[test]
fn ssh_wrong_host_key_is_refused_and_nothing_changes() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let Some(sshd) = Sshd::start(&sshd_dir(dir.path())) else {
        return;
    };
    let url = sshd.url(&remote.bare);
    let key = sshd.client_key();
    let host = Host::new(dir.path(), &url)
        // An operator's environment must not be able to switch host-key checking off.
        .env("GIT_SSH_COMMAND", "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null");
    let good =
        ["--ssh-key", key.to_str().unwrap(), "--known-hosts", sshd.known_hosts().to_str().unwrap().to_string().leak()];
    host.sync(&good).expect(APPLIED);
    remote.write("x", "1");
    remote.commit("second");
    let before = host.snapshot();

    let wrong = sshd.wrong_known_hosts();
    let run = host.sync(&["--ssh-key", key.to_str().unwrap(), "--known-hosts", wrong.to_str().unwrap()]);
    let run = run.expect(RUNTIME_ERROR);

    assert!(
        run.stderr.to_lowercase().contains("host key"),
        "names the host key problem: {}\nsshd: {}",
        run.stderr,
        sshd.log()
    );
    assert_eq!(host.snapshot(), before);
    assert_eq!(host.out_lines().len(), 1);
}

#[test]
fn scp_like_url() {
    if !tooling::available(&[tooling::ROOT]) {
        return;
    }
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let nonce = std::process::id();
    let addr = format!("127.{}.{}.{}", 1 + nonce % 250, (nonce >> 8) % 250, 2 + (nonce >> 16) % 250);
    let Some(sshd) = Sshd::start_on(&sshd_dir(dir.path()), &addr, 22) else {
        return;
    };
    let url = sshd.scp_url(&remote.bare);
    assert!(!url.contains("://"), "{url}");
    let key = sshd.client_key();
    let known = sshd.known_hosts();
    full_cycle(
        dir.path(),
        &remote,
        &url,
        &["--ssh-key", key.to_str().unwrap(), "--known-hosts", known.to_str().unwrap()],
    );
}
