//! Fleet-scale polling: mirrors when the primary (a real `git daemon`) is down, and the change probe
//! (Debian's nginx serving the repository's `info/refs` as a static file) in front of a Git server whose
//! connections are counted.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::nginx::{CountingProxy, Nginx};
use crate::support::servers::GitDaemon;
use crate::support::*;

/// A bare mirror of `remote` at `root/name`, as `git clone --mirror` makes one.
fn mirror_of(remote: &Remote, root: &Path, name: &str) -> std::path::PathBuf {
    let path = root.join(name);
    git(root, &["clone", "-q", "--mirror", remote.bare.to_str().unwrap(), path.to_str().unwrap()]);
    path
}

/// Bring a mirror up to date with the primary.
fn update_mirror(mirror: &Path) {
    git(mirror, &["fetch", "-q", "--prune", "origin"]);
}

/// The recipe of the README: every push runs `git update-server-info`, so `info/refs` changes with the branch.
fn serve_info_refs(remote: &Remote) {
    let hook = remote.bare.join("hooks/post-receive");
    fs::write(&hook, "#!/bin/sh\nexec git update-server-info\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    git(&remote.bare, &["update-server-info"]);
}

#[test]
fn mirrors_serve_the_branch_while_the_primary_is_down() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let primary_root = dir.path().join("primary");
    fs::create_dir(&primary_root).unwrap();
    fs::rename(&remote.bare, primary_root.join("origin.git")).unwrap();
    let remote = Remote { bare: primary_root.join("origin.git"), work: remote.work };
    git(&remote.work, &["remote", "set-url", "origin", remote.bare.to_str().unwrap()]);
    let mirrors_root = dir.path().join("mirrors");
    fs::create_dir(&mirrors_root).unwrap();
    let mirror = mirror_of(&remote, &mirrors_root, "fleet.git");
    let daemon = GitDaemon::start(&primary_root);
    let mirror_daemon = GitDaemon::start(&mirrors_root);
    let (primary_url, mirror_url) = (daemon.url("origin.git"), mirror_daemon.url("fleet.git"));
    let unreachable = format!("git://127.0.0.1:{}/nothing.git", crate::support::servers::free_port());
    let host = Host::new(dir.path(), &primary_url);
    let flags = ["--mirror", &unreachable, "--mirror", &mirror_url];

    // The primary serves while it is up: no mirror is contacted.
    let first = remote.head();
    let run = host.sync(&flags).expect(APPLIED);
    assert!(!run.stderr.contains("trying"), "{}", run.stderr);
    assert_eq!(host.state_json()["fetch"]["served_by"], primary_url.as_str());

    // The primary goes down after a push reached it and the mirror: the second mirror serves the run.
    remote.write("new.txt", "new");
    let second = remote.commit("second");
    update_mirror(&mirror);
    drop(daemon);
    let run = host.sync(&flags).expect(APPLIED);
    assert!(run.stderr.contains("primary") && run.stderr.contains("trying mirror 1"), "{}", run.stderr);
    assert!(run.stderr.contains("trying mirror 2"), "{}", run.stderr);
    assert_eq!(host.applied(), Some(second.clone()));
    assert_eq!(host.out_lines(), [format!("applied {first} prev="), format!("applied {second} prev={first}")]);
    let state = host.state_json();
    assert_eq!(state["last_attempt"]["served_by"], mirror_url.as_str());
    assert_eq!(state["fetch"]["served_by"], mirror_url.as_str());
    let last_run: serde_json::Value =
        serde_json::from_slice(&fs::read(host.state.join("last_run.json")).unwrap()).unwrap();
    assert_eq!(last_run["last_run"]["served_by"], mirror_url.as_str());
    let status: Run = host.command(&["status", "--state-dir", host.state.to_str().unwrap()]).output().unwrap().into();
    assert!(status.stdout.contains(&format!("served by:    {mirror_url}")), "{}", status.stdout);

    // Without a reachable mirror the run fails as it does without mirrors, naming every remote tried.
    drop(mirror_daemon);
    let run = host.sync(&flags).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("no remote could be reached"), "{}", run.stderr);
    assert!(run.stderr.contains(&primary_url) && run.stderr.contains(&unreachable), "{}", run.stderr);
    assert_eq!(host.applied(), Some(second));
}

#[test]
fn a_mirror_that_is_behind_is_need_push_and_nothing_is_applied() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let mirror = mirror_of(&remote, dir.path(), "mirror.git");
    let daemon = GitDaemon::start(dir.path());
    let host = Host::new(dir.path(), &daemon.url("origin.git"));
    let mirror_url = format!("file://{}", mirror.display());
    let flags = ["--mirror", mirror_url.as_str()];
    remote.write("new.txt", "new");
    let second = remote.commit("second");
    host.sync(&flags).expect(APPLIED);
    let current = host.current();

    // The primary is down and the mirror still has the first commit: a rollback the mirror cannot make.
    drop(daemon);
    let run = host.sync(&flags).expect(NEED_PUSH);
    assert!(run.stderr.contains("behind the deployed commit"), "{}", run.stderr);
    assert_eq!((host.applied(), host.current()), (Some(second.clone()), current.clone()));
    assert_eq!(host.out_lines().len(), 1, "nothing ran");
    assert_eq!(host.state_json()["fetch"]["served_by"], mirror_url.as_str());

    // Once the mirror catches up, it serves the deployed commit: up to date.
    update_mirror(&mirror);
    host.sync(&flags).expect(UP_TO_DATE);
    assert_eq!(host.applied(), Some(second));
}

/// A primary behind a connection-counting proxy, and nginx serving its `info/refs` as the probe.
struct Probed {
    dir: tempfile::TempDir,
    remote: Remote,
    _daemon: GitDaemon,
    proxy: CountingProxy,
    nginx: Nginx,
}

impl Probed {
    fn start(script: &str) -> Option<Probed> {
        let dir = tempdir();
        let remote = Remote::with_script(dir.path(), script);
        serve_info_refs(&remote);
        let nginx = Nginx::static_files(&dir.path().join("nginx"), dir.path())?;
        let daemon = GitDaemon::start(dir.path());
        let proxy = CountingProxy::start(daemon.url("").rsplit(':').next()?.trim_end_matches('/').parse().ok()?);
        Some(Probed { dir, remote, _daemon: daemon, proxy, nginx })
    }

    fn host(&self) -> Host {
        Host::new(self.dir.path(), &format!("git://127.0.0.1:{}/origin.git", self.proxy.port()))
    }

    fn probe_url(&self) -> String {
        self.nginx.url("origin.git/info/refs")
    }

    /// Push a commit; nginx's ETag has a one-second granularity, so the push waits for the next second.
    fn push(&self, name: &str) -> String {
        std::thread::sleep(Duration::from_millis(1100));
        self.remote.write(name, name);
        self.remote.commit(name)
    }
}

#[test]
fn a_probe_answering_304_keeps_every_connection_off_the_git_server() {
    let Some(probed) = Probed::start(RECORD) else { return };
    let host = probed.host();
    let probe = probed.probe_url();
    let flags = ["--probe-url", probe.as_str(), "-v"];

    let run = host.sync(&flags).expect(APPLIED);
    assert!(run.stderr.contains("changed (ETag"), "{}", run.stderr);
    assert_eq!(probed.proxy.connections(), 1);
    let state = host.state_json();
    assert!(state["fetch"]["probe"]["etag"].is_string(), "{state}");
    assert!(state["fetch"]["fetched_at"].is_string(), "{state}");

    // Nothing moved: the probe answers 304 and no connection reaches the Git server, run after run.
    for _ in 0..3 {
        let run = host.sync(&flags).expect(UP_TO_DATE);
        assert!(run.stderr.contains("304 Not Modified; not contacting the Git server"), "{}", run.stderr);
    }
    assert_eq!(probed.proxy.connections(), 1, "a 304 run reached the Git server");
    assert_eq!(&probed.nginx.statuses()[1..], [304, 304, 304]);
    let last_run: serde_json::Value =
        serde_json::from_slice(&fs::read(host.state.join("last_run.json")).unwrap()).unwrap();
    assert_eq!(last_run["last_run"]["probe"], "not-modified");
    assert!(last_run["last_run"]["served_by"].is_null());
    let status: Run = host.command(&["status", "--state-dir", host.state.to_str().unwrap()]).output().unwrap().into();
    let status = status.expect(0);
    assert!(status.stdout.contains("served by:    the change probe"), "{}", status.stdout);
    assert!(status.stdout.contains("last fetch:"), "{}", status.stdout);

    // A push changes info/refs: the probe says so and the run fetches and applies.
    let second = probed.push("second");
    host.sync(&flags).expect(APPLIED);
    assert_eq!(host.applied(), Some(second));
    assert_eq!(probed.proxy.connections(), 2);
    host.sync(&flags).expect(UP_TO_DATE);
    assert_eq!(probed.proxy.connections(), 2);
}

#[test]
fn a_probe_that_lies_delays_an_update_by_at_most_probe_max_age() {
    let Some(probed) = Probed::start(RECORD) else { return };
    let host = probed.host();
    let probe = probed.probe_url();
    let flags = ["--probe-url", probe.as_str(), "--probe-max-age", "3s"];
    host.sync(&flags).expect(APPLIED);

    // A push that does not update info/refs: the probe keeps answering 304.
    fs::remove_file(probed.remote.bare.join("hooks/post-receive")).unwrap();
    let second = probed.push("second");
    host.sync(&flags).expect(UP_TO_DATE);
    assert_ne!(host.applied(), Some(second.clone()), "the lie delays the update");
    assert_eq!(probed.proxy.connections(), 1);

    std::thread::sleep(Duration::from_secs(3));
    host.sync(&flags).expect(APPLIED);
    assert_eq!(host.applied(), Some(second));
    assert_eq!(probed.proxy.connections(), 2);
}

#[test]
fn a_probe_that_is_down_means_a_normal_fetch() {
    let Some(probed) = Probed::start(RECORD) else { return };
    let host = probed.host();
    let down = format!("http://127.0.0.1:{}/info/refs", crate::support::servers::free_port());
    let flags = ["--probe-url", down.as_str()];
    host.sync(&flags).expect(APPLIED);
    let run = host.sync(&flags).expect(UP_TO_DATE);
    assert!(run.stderr.contains("fetching from the Git remote"), "{}", run.stderr);
    let second = probed.push("second");
    host.sync(&flags).expect(APPLIED);
    assert_eq!(host.applied(), Some(second));
    assert_eq!(probed.proxy.connections(), 3, "every run fetched");
    let last_run: serde_json::Value =
        serde_json::from_slice(&fs::read(host.state.join("last_run.json")).unwrap()).unwrap();
    assert_eq!(last_run["last_run"]["probe"], "unavailable");
}

#[test]
fn a_304_never_skips_the_retry_of_a_failed_apply() {
    let Some(probed) = Probed::start(r#"[ -e "$TEST_OUT.ok" ] || exit 3; echo ran >> "$TEST_OUT""#) else { return };
    let host = probed.host();
    let probe = probed.probe_url();
    let flags = ["--probe-url", probe.as_str(), "-v"];
    host.sync(&flags).expect(APPLY_FAILED);
    fs::write(format!("{}.ok", host.out.display()), "").unwrap();
    // info/refs has not changed, but the last run failed: fetch, and retry the commit.
    let run = host.sync(&flags).expect(APPLIED);
    assert!(run.stderr.contains("304 Not Modified, but the last run did not end"), "{}", run.stderr);
    assert_eq!(probed.proxy.connections(), 2);
    host.sync(&flags).expect(UP_TO_DATE);
    assert_eq!(probed.proxy.connections(), 2);
}

#[test]
fn a_mirror_elsewhere_gets_its_own_credentials_from_its_url_never_the_primarys_token() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let backend = crate::support::servers::HttpGit::start_with_auth(dir.path(), "bot", "mirror-s3cret");
    let Some(mirror) = crate::support::servers::TlsProxy::start(dir.path(), backend.port()) else { return };
    let primary = format!("https://127.0.0.1:{}/origin.git", crate::support::servers::free_port());
    // gix sends a URL's password only over https.
    let mirror_url = mirror.url("origin.git").replacen("https://", "https://bot:mirror-s3cret@", 1);
    let ca = mirror.ca_file();
    let token = dir.path().join("token");
    fs::write(&token, "primary-t0ken\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let host = Host::new(dir.path(), &primary);
    let flags =
        ["--mirror", &mirror_url, "--http-token-file", token.to_str().unwrap(), "--http-ca-file", ca.to_str().unwrap()];
    let run = host.sync(&flags).expect(APPLIED);
    assert_eq!(host.applied(), Some(remote.head()));
    let shown = mirror.url("origin.git").replacen("https://", "https://bot:***@", 1);
    assert_eq!(host.state_json()["fetch"]["served_by"], shown.as_str());
    assert!(!run.stderr.contains("mirror-s3cret"), "{}", run.stderr);
    let state = fs::read_to_string(host.state.join("state.json")).unwrap();
    assert!(!state.contains("mirror-s3cret") && !state.contains("primary-t0ken"), "{state}");
}
