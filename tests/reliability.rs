//! Trying hard to break the promises: kill -9 anywhere, network faults, corrupt caches and state,
//! a full disk, hostile trees, bad input, concurrent runs. Nothing may be lost or half-applied.
//!
//! `GITOPS_LONG_TESTS=1` runs more crash iterations; `GITOPS_TEST_SEED=N` replays a crash sequence.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::servers::{Fault, FaultyProxy, GitDaemon, HttpGit, Sshd};
use crate::support::*;

/// Records the start and the end of every apply, so an interrupted one shows as a start without an end.
const TRACED: &str = r#"echo "start $GITOPS_COMMIT" >> "$TEST_OUT"
sleep 0.05
echo "end $GITOPS_COMMIT" >> "$TEST_OUT""#;

fn count(host: &Host, line: &str) -> usize {
    host.out_lines().iter().filter(|l| l.as_str() == line).count()
}

/// The invariants after a run that was not interrupted: a complete live revision, parseable state,
/// the remote head applied, its apply finished, and no temp files left behind.
fn assert_converged(host: &Host, head: &str) {
    assert_eq!(host.applied().as_deref(), Some(head), "state.json applied commit");
    assert_eq!(host.current().as_deref(), Some(head), "current symlink");
    assert!(host.state.join("current/run.sh").is_file(), "live revision complete");
    assert!(count(host, &format!("end {head}")) >= 1, "apply of {head} finished: {:?}", host.out_lines());
    let leftovers: Vec<String> = [host.state.clone(), host.state.join("revisions"), host.state.join("logs")]
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn kill_at_every_failpoint_then_converge() {
    // (failpoint, how many times the new commit's apply may have finished in total after converging)
    let points = [
        ("fetched", 1),
        ("checkout-written", 1),
        ("checkout-complete", 1),
        ("symlink-created", 1),
        ("published", 1),
        ("state-temp-written", 2),
        ("state-saved", 1),
    ];
    for (point, applies) in points {
        let dir = tempdir();
        let remote = Remote::with_script(dir.path(), TRACED);
        let host = Host::new(dir.path(), &remote.file_url());
        host.sync(&[]).expect(APPLIED);
        remote.write("x", point);
        let head = remote.commit(point);

        host.sync_killed_at(point);
        state_parses(&host);

        let run = host.sync(&[]);
        let expected = if point == "state-saved" { UP_TO_DATE } else { APPLIED };
        assert_eq!(run.code, expected, "{point}: {}", run.stderr);
        assert_converged(&host, &head);
        assert_eq!(count(&host, &format!("end {head}")), applies, "{point}: {:?}", host.out_lines());
    }
}

/// What a power cut can take is what was not synced yet, so the order of the syncs is the promise: a
/// revision is on disk once written (one syncfs on its filesystem for a checkout written in full or with
/// many changes, an fsync of each changed file and directory for one rebuilt from an old revision), then
/// it gets its commit's name, that name is synced before `current` points at it, and the swap is synced.
/// Traced with strace, in the order the kernel saw the calls.
#[test]
fn a_revision_is_on_disk_before_its_name_and_current_point_at_it() {
    if !tooling::available(&[tooling::STRACE]) {
        return;
    }
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    let (url, keep) = (remote.file_url(), ["--keep-revisions", "2"]);
    let revisions = host.state.join("revisions").display().to_string();

    // The first revision is written in full, and so is the second: two are kept, nothing is recycled.
    for (file, message) in [("a.txt", "first"), ("b.txt", "second")] {
        remote.write(&format!("conf/{file}"), message);
        let head = remote.commit(message);
        let traced = Traced::sync(&host, &url, &keep, dir.path());
        let written = traced.last_created_in(&head);
        let synced = traced.after(written, "syncfs", &revisions);
        assert!(synced < traced.named(&head), "{message}: syncfs before the rename: {traced:#?}");
        traced.assert_name_then_current(&host, &head);
    }

    // The third is rebuilt from the first, which the prune would delete: what changed is fsynced.
    remote.write("conf/a.txt", "third");
    let head = remote.commit("third");
    let traced = Traced::sync(&host, &url, &keep, dir.path());
    let (tmp, written) = (traced.temp_dir(&head), traced.last_created_in(&head));
    for path in [format!("{tmp}/conf/a.txt"), format!("{tmp}/conf"), tmp.clone()] {
        assert!(traced.after(written, "fsync", &path) < traced.named(&head), "{path} fsynced first: {traced:#?}");
    }
    traced.assert_name_then_current(&host, &head);

    // Rebuilt from the second with more changes than are worth fsyncing one by one: syncfs again.
    for n in 0..300 {
        remote.write(&format!("many/{n}.txt"), "x");
    }
    let head = remote.commit("many");
    let traced = Traced::sync(&host, &url, &keep, dir.path());
    let synced = traced.after(traced.last_created_in(&head), "syncfs", &revisions);
    assert!(synced < traced.named(&head), "many: syncfs before the rename: {traced:#?}");
    traced.assert_name_then_current(&host, &head);
}

/// The filesystem calls of one `gitops sync` run under strace, in order; descriptors show as the path
/// they were opened on (`fsync(5</state/revisions>)`).
#[derive(Debug)]
struct Traced(Vec<String>);

impl Traced {
    fn sync(host: &Host, url: &str, extra: &[&str], scratch: &Path) -> Traced {
        let log = scratch.join("strace.log");
        let state = host.state.to_str().unwrap();
        let gitops = host.command(&[&["sync", "--repo-url", url, "--state-dir", state], extra].concat());
        let mut strace = tooling::command("strace");
        strace
            .args(["-f", "-qq", "-y", "-s", "4096", "-o"])
            .arg(&log)
            .args([
                "-e",
                "trace=syncfs,fsync,fdatasync,rename,renameat,renameat2,openat,mkdir,mkdirat,symlink,symlinkat",
            ])
            .arg(gitops.get_program())
            .args(gitops.get_args());
        for (key, value) in gitops.get_envs() {
            match value {
                Some(value) => strace.env(key, value),
                None => strace.env_remove(key),
            };
        }
        let run: Run = strace.output().expect("running strace").into();
        run.expect(APPLIED);
        // `PID name(args) = result`; a call another thread interrupted is split, its first half kept.
        let calls = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|line| !line.contains(" resumed>"))
            .filter_map(|line| line.split_once(' ').map(|(_pid, call)| call.trim_start().to_string()))
            .collect();
        Traced(calls)
    }

    fn position(&self, what: &str, test: impl Fn(&str) -> bool) -> usize {
        self.0.iter().position(|call| test(call)).unwrap_or_else(|| panic!("no {what} in {self:#?}"))
    }

    /// The rename that gives `commit`'s revision its name.
    fn named(&self, commit: &str) -> usize {
        let name = format!("/revisions/{commit}\"");
        self.position(&format!("rename to {name}"), |call| call.starts_with("rename") && call.contains(&name))
    }

    /// The temporary directory `commit`'s revision was built in (the source of that rename).
    fn temp_dir(&self, commit: &str) -> String {
        let call = &self.0[self.named(commit)];
        let start = call.find(&format!("/.tmp-{commit}-")).expect("renamed from a temp dir");
        let begin = call[..start].rfind('"').unwrap() + 1;
        let end = start + call[start..].find('"').unwrap();
        call[begin..end].to_string()
    }

    /// The last file, directory or symlink created in `commit`'s temporary directory.
    fn last_created_in(&self, commit: &str) -> usize {
        let tmp = format!("{}/", self.temp_dir(commit));
        let creates = |call: &&String| {
            call.contains(&tmp)
                && (call.starts_with("mkdir")
                    || call.starts_with("symlink")
                    || (call.starts_with("openat(") && call.contains("O_CREAT")))
        };
        let last = self.0.iter().rposition(|call| creates(&call));
        last.unwrap_or_else(|| panic!("nothing created in {tmp}: {self:#?}"))
    }

    /// The first `name` call on a descriptor opened on `path` (for syncfs: on anything below it, the same
    /// filesystem), after position `after`.
    fn after(&self, after: usize, name: &str, path: &str) -> usize {
        let wanted = format!("{name}(");
        let fd = if name == "syncfs" { format!("<{path}") } else { format!("<{path}>") };
        let found = self.0.iter().skip(after + 1).position(|call| call.starts_with(&wanted) && call.contains(&fd));
        after + 1 + found.unwrap_or_else(|| panic!("no {name} of {path} after call {after}: {self:#?}"))
    }

    /// After the rename that names `commit`'s revision: `revisions/` fsynced, then `current` swapped,
    /// then the state directory fsynced.
    fn assert_name_then_current(&self, host: &Host, commit: &str) {
        let named = self.named(commit);
        let revisions = host.state.join("revisions").display().to_string();
        let state = host.state.display().to_string();
        let current = format!("\"{state}/current\"");
        let swapped =
            self.position("the swap of current", |call| call.starts_with("rename") && call.contains(&current));
        assert!(self.after(named, "fsync", &revisions) < swapped, "revisions/ synced before the swap: {self:#?}");
        self.after(swapped, "fsync", &state);
    }
}

/// Processes holding `lock` open, for a failure message.
fn lock_holders(lock: &Path) -> Vec<String> {
    let mut holders = Vec::new();
    for proc_entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == lock)) {
            let cmdline = fs::read(proc_entry.path().join("cmdline")).unwrap_or_default();
            holders.push(format!(
                "{:?}: {}",
                proc_entry.file_name(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    holders
}

fn state_parses(host: &Host) {
    let text = fs::read_to_string(host.state.join("state.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).expect("state.json parses after a kill");
}

/// A small reproducible random source (xorshift64*), so a failing sequence can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_sigkill_during_sync_always_converges() {
    let long = std::env::var_os("GITOPS_LONG_TESTS").is_some();
    let iterations = if long { 60 } else { 12 };
    let seed: u64 = std::env::var("GITOPS_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234);
    eprintln!("random kill test: {iterations} iterations, GITOPS_TEST_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), TRACED);
    let host = Host::new(dir.path(), &remote.file_url());
    let mut kills = 0;
    for i in 0..iterations {
        if !rng.next().is_multiple_of(3) {
            remote.write("n", &i.to_string());
            remote.commit(&format!("change {i}"));
        }
        let mut child = host
            .command(&["sync", "--repo-url", &remote.file_url(), "--state-dir", host.state.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.next() % 120));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // The entrypoint dies with gitops (PR_SET_PDEATHSIG); give it a moment to be reaped.
        std::thread::sleep(Duration::from_millis(20));
        if fs::metadata(host.state.join("state.json")).is_ok() {
            state_parses(&host);
        }
        // A process forked by the killed run may hold the lock until it execs (microseconds, more on a
        // loaded machine): 75 is the documented "try again later", so try again, briefly.
        let mut run = host.sync(&[]);
        for _ in 0..20 {
            if run.code != LOCKED {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            run = host.sync(&[]);
        }
        assert!(
            matches!(run.code, UP_TO_DATE | APPLIED),
            "iteration {i} (seed {seed}): {}\nlock holders: {:?}",
            run.stderr,
            lock_holders(&host.state.join("lock"))
        );
        assert_converged(&host, &remote.head());
    }
    eprintln!("random kill test: {kills} runs killed mid-way");
    assert!(kills > 0, "no run was interrupted: the test proved nothing");
}

#[test]
fn network_faults_exit_1_within_the_fetch_timeout_and_change_nothing() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let daemon = GitDaemon::start(dir.path());
    let daemon_port: u16 = daemon.url("x").rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let proxy = FaultyProxy::start(daemon_port, Fault::Healthy);
    let url = format!("git://127.0.0.1:{}/origin.git", proxy.port());
    let host = Host::new(dir.path(), &url);
    host.sync(&[]).expect(APPLIED);
    remote.write("x", "1");
    let head = remote.commit("second");
    let before = host.snapshot();

    for fault in [Fault::Stall, Fault::DropAfter(300), Fault::DropAfter(0)] {
        proxy.set(fault);
        let started = Instant::now();
        let run = host.sync(&["--fetch-timeout", "2s"]).expect(RUNTIME_ERROR);
        assert!(started.elapsed() < Duration::from_secs(15), "{fault:?} took {:?}", started.elapsed());
        assert!(run.stderr.contains(&url), "{fault:?} names the remote: {}", run.stderr);
        if fault == Fault::Stall {
            assert!(run.stderr.contains("--fetch-timeout"), "{}", run.stderr);
        }
        assert_eq!(
            run.stderr.lines().filter(|l| l.contains("ERROR")).count(),
            1,
            "{fault:?}: one line: {}",
            run.stderr
        );
        assert_eq!(host.snapshot(), before, "{fault:?} changed something");
    }
    let refused = Host::new(dir.path(), &format!("git://127.0.0.1:{}/origin.git", servers_free_port()));
    refused.sync(&[]).expect(RUNTIME_ERROR);

    proxy.set(Fault::Healthy);
    host.sync(&["--fetch-timeout", "2s"]).expect(APPLIED);
    assert_eq!(host.applied(), Some(head));
}

fn servers_free_port() -> u16 {
    support::servers::free_port()
}

#[test]
fn stalled_ssh_and_http_hit_the_fetch_timeout() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let Some(sshd) = Sshd::start(&sshd_dir(dir.path())) else {
        return;
    };
    let sshd_port: u16 = sshd.url(&remote.bare).split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    let ssh_proxy = FaultyProxy::start(sshd_port, Fault::Stall);
    let http = HttpGit::start(dir.path());
    let http_proxy = FaultyProxy::start(http.port(), Fault::Stall);
    let key = sshd.client_key();
    let known = dir.path().join("known_hosts_proxy");
    let pinned = fs::read_to_string(sshd.known_hosts())
        .unwrap()
        .replace(&format!(":{sshd_port}]"), &format!(":{}]", ssh_proxy.port()));
    fs::write(&known, pinned).unwrap();

    let cases = [
        (
            format!("ssh://{}@127.0.0.1:{}{}", whoami(), ssh_proxy.port(), remote.bare.display()),
            vec!["--ssh-key", key.to_str().unwrap(), "--known-hosts", known.to_str().unwrap()],
        ),
        (format!("http://127.0.0.1:{}/origin.git", http_proxy.port()), vec![]),
    ];
    for (url, flags) in cases {
        let host = Host::new(&dir.path().join(url.split(':').next().unwrap()), &url);
        let mut args = flags.clone();
        args.extend(["--fetch-timeout", "2s"]);
        let started = Instant::now();
        let run = host.sync(&args).expect(RUNTIME_ERROR);
        assert!(started.elapsed() < Duration::from_secs(15), "{url} took {:?}", started.elapsed());
        assert!(run.stderr.contains(&url) || run.stderr.contains("127.0.0.1"), "{url}: {}", run.stderr);
        assert!(!host.state.join("state.json").exists());
    }
}

#[test]
fn damaged_cache_is_rebuilt_without_reapplying() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("truncated packs", |cache| {
            for pack in fs::read_dir(cache.join("objects/pack")).unwrap().flatten() {
                fs::OpenOptions::new().write(true).open(pack.path()).unwrap().set_len(64).unwrap();
            }
        }),
        ("objects deleted", |cache| {
            fs::remove_dir_all(cache.join("objects")).unwrap();
            fs::create_dir_all(cache.join("objects/pack")).unwrap();
        }),
        ("refs deleted", |cache| {
            let _ = fs::remove_dir_all(cache.join("refs/gitops"));
            let _ = fs::remove_file(cache.join("packed-refs"));
        }),
        ("whole cache deleted", |cache| fs::remove_dir_all(cache).unwrap()),
    ];
    for (what, damage) in damages {
        let dir = tempdir();
        let remote = Remote::with_script(dir.path(), TRACED);
        let host = Host::new(dir.path(), &remote.file_url());
        host.sync(&[]).expect(APPLIED);
        damage(&host.state.join("cache.git"));

        // Same remote commit: nothing is applied again.
        let run = host.sync(&[]);
        assert_eq!(run.code, UP_TO_DATE, "{what}: {}", run.stderr);
        assert_eq!(count(&host, &format!("end {}", remote.head())), 1, "{what}: re-applied");

        // And the next commit still applies.
        damage_if_present(&host.state.join("cache.git"), damage);
        remote.write("x", what);
        let head = remote.commit(what);
        let run = host.sync(&[]);
        assert_eq!(run.code, APPLIED, "{what}: {}", run.stderr);
        assert_converged(&host, &head);
    }
}

fn damage_if_present(cache: &Path, damage: fn(&Path)) {
    if cache.join("objects/pack").exists() {
        damage(cache);
    }
}

#[test]
fn corrupt_state_json_is_moved_aside_and_reported() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), TRACED);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    fs::write(host.state.join("state.json"), "{\"applied_commit\": tru").unwrap();

    let run = host.sync(&[]).expect(APPLIED);

    assert!(run.stderr.contains("was corrupt") && run.stderr.contains("moved it to"), "{}", run.stderr);
    let aside: Vec<_> = fs::read_dir(&host.state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read_to_string(aside[0].path()).unwrap(), "{\"applied_commit\": tru", "kept as it was");
    assert_converged(&host, &remote.head());
}

/// kill -9 of gitops during the apply: PDEATHSIG ends the entrypoint, not what it started in the
/// background; the next run kills what is left of the recorded process group before anything else.
#[test]
fn what_an_entrypoint_started_does_not_outlive_a_killed_run() {
    let dir = tempdir();
    let script = r#"if [ ! -e "$TEST_OUT.first" ]; then
  touch "$TEST_OUT.first"
  (sleep 3; echo late >> "$TEST_OUT.late") &
  sleep 60
fi"#;
    let remote = Remote::with_script(dir.path(), script);
    let host = Host::new(dir.path(), &remote.file_url());
    let state = host.state.to_str().unwrap().to_string();
    let url = remote.file_url();
    let mut first = host
        .command(&["sync", "--repo-url", &url, "--state-dir", &state, "--host", "testhost"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !Path::new(&format!("{}.first", host.out.display())).exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the entrypoint never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let run = host.sync(&[]).expect(APPLIED);
    assert!(run.stderr.contains("left in process group") && run.stderr.contains("a run that died"), "{}", run.stderr);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!Path::new(&format!("{}.late", host.out.display())).exists(), "a survivor of the killed run went on");
    assert!(!host.state.join("running.pgid").exists());
}

/// A state directory another local user could redirect is refused before anything is written (exit 2):
/// group/other-writable itself or through a parent (a sticky parent such as /tmp is fine), owned by
/// another user, or with `revisions/` or `logs/` replaced by symlinks (which used to make a root run
/// check out into, and prune, the link's target).
#[test]
fn a_state_directory_others_could_redirect_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), TRACED);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let head = remote.head();
    remote.write("more", "x");
    remote.commit("more");
    let chmod = |path: &Path, mode: u32| fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    let refused = |why: &str| {
        let before = host.snapshot();
        let run = host.sync(&[]).expect(USAGE);
        assert!(run.stderr.contains(why) && run.stderr.contains("--state-dir"), "{why}: {}", run.stderr);
        assert_eq!(host.snapshot(), before, "{why}: something changed");
    };

    chmod(&host.state, 0o777);
    refused("is writable by group or others (mode 0777)");
    chmod(&host.state, 0o700);
    let parent = host.state.parent().unwrap();
    chmod(parent, 0o775);
    refused("is writable by group or others (mode 0775)");
    chmod(parent, 0o1777);
    assert_converged(&host, &head);

    // Symlinks where gitops keeps directories: the targets are never written to or pruned.
    let victim = dir.path().join("victim");
    fs::create_dir_all(victim.join("precious")).unwrap();
    fs::write(victim.join("old.log"), "keep me").unwrap();
    for entry in ["revisions", "logs"] {
        let real = host.state.join(format!("{entry}.real"));
        fs::rename(host.state.join(entry), &real).unwrap();
        std::os::unix::fs::symlink(&victim, host.state.join(entry)).unwrap();
        let run = host.sync(&[]).expect(USAGE);
        assert!(run.stderr.contains("is a symbolic link where gitops keeps a directory"), "{}", run.stderr);
        fs::remove_file(host.state.join(entry)).unwrap();
        fs::rename(&real, host.state.join(entry)).unwrap();
    }
    for file in ["last_run.json", "known_hosts", "reboot-request"] {
        let _ = fs::remove_file(host.state.join(file));
        std::os::unix::fs::symlink(victim.join("old.log"), host.state.join(file)).unwrap();
        let run = host.sync(&[]).expect(USAGE);
        assert!(run.stderr.contains("is a symbolic link where gitops keeps a file"), "{file}: {}", run.stderr);
        fs::remove_file(host.state.join(file)).unwrap();
    }
    assert_eq!(fs::read_to_string(victim.join("old.log")).unwrap(), "keep me");
    assert!(victim.join("precious").is_dir() && victim.join("old.log").exists(), "the symlinks' target was touched");
    host.sync(&[]).expect(APPLIED);

    // Owned by another user (root can make that happen).
    if !tooling::available(&[tooling::ROOT]) {
        return;
    }
    std::os::unix::fs::chown(&host.state, Some(65534), None).unwrap();
    refused("is owned by uid 65534");
    std::os::unix::fs::chown(&host.state, Some(0), None).unwrap();
    host.sync(&[]).expect(UP_TO_DATE);
}

/// state.json as a FIFO (a read would wait forever), as a 1 GiB sparse file, with a value no run
/// writes, or as a symlink: each is moved aside like any corrupt state, and the host converges.
#[test]
fn odd_state_json_is_moved_aside_never_waited_on_or_read_whole() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), TRACED);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let state_json = host.state.join("state.json");
    let odd: [(&str, &dyn Fn()); 4] = [
        ("FIFO", &|| mkfifo(&state_json)),
        ("more than state ever takes", &|| fs::File::create(&state_json).unwrap().set_len(1 << 30).unwrap()),
        ("applied_commit holds", &|| {
            fs::write(
                &state_json,
                r#"{"applied_commit": "--upload-pack=touch /tmp/x", "applied_at": null, "last_attempt": null}"#,
            )
            .unwrap()
        }),
        ("symbolic link", &|| std::os::unix::fs::symlink("/etc/passwd", &state_json).unwrap()),
    ];
    for (why, make) in odd {
        fs::remove_file(&state_json).unwrap();
        make();
        let run = host.sync_within(&[], Duration::from_secs(30)).expect(APPLIED);
        assert!(run.stderr.contains("was corrupt") && run.stderr.contains(why), "{why}: {}", run.stderr);
        assert_converged(&host, &remote.head());
        for aside in fs::read_dir(&host.state).unwrap().flatten() {
            if aside.file_name().to_string_lossy().starts_with("state.json.corrupt-") {
                fs::remove_file(aside.path()).unwrap();
            }
        }
    }
    assert!(fs::read_to_string("/etc/passwd").unwrap().contains("root:"), "the symlink's target is untouched");
}

/// Make a FIFO at `path` (reading or writing it blocks until the other end opens it).
fn mkfifo(path: &Path) {
    let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
}

/// A lock file that is a FIFO or a symlink is refused at once (exit 2), never waited on or followed.
#[test]
fn odd_lock_file_is_refused_at_once() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), TRACED);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let lock = host.state.join("lock");
    fs::remove_file(&lock).unwrap();
    mkfifo(&lock);
    let run = host.sync_within(&[], Duration::from_secs(30)).expect(USAGE);
    assert!(run.stderr.contains("is a FIFO") && run.stderr.contains("rm "), "{}", run.stderr);
    fs::remove_file(&lock).unwrap();
    let target = dir.path().join("made-by-a-link");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let run = host.sync_within(&[], Duration::from_secs(30)).expect(USAGE);
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert!(!target.exists(), "the lock symlink was followed");
}

#[test]
fn full_disk_fails_cleanly_and_recovers() {
    if !tooling::available(&[tooling::ROOT]) {
        return;
    }
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), TRACED);
    let mount = dir.path().join("small");
    fs::create_dir_all(&mount).unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&mount).status().unwrap();
    assert!(status.success(), "mount tmpfs");
    let _unmount = Unmount(mount.clone());
    let host = Host::new(&mount, &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let first = remote.head();
    remote.write("big.bin", &"x".repeat(512 * 1024));
    let head = remote.commit("bigger");
    let filler = mount.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();

    let run = host.sync(&[]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("No space left on device"), "{}", run.stderr);
    assert_eq!(host.current(), Some(first.clone()), "the live revision is intact");
    assert!(host.state.join("current/run.sh").is_file());
    assert_eq!(host.applied(), Some(first));

    fs::remove_file(&filler).unwrap();
    host.sync(&[]).expect(APPLIED);
    assert_converged(&host, &head);
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Commit a hand-made tree (entries `mode type id\tname`, as `git mktree` reads them) on top of main.
fn commit_tree(remote: &Remote, entries: &str, literally: bool) -> String {
    let tree = if literally {
        raw_tree(remote, entries)
    } else {
        let mut child = Command::new("git")
            .current_dir(&remote.work)
            .args(["mktree", "--missing"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(entries.as_bytes()).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
    };
    assert!(!tree.is_empty(), "tree not written");
    let commit = git(&remote.work, &["commit-tree", &tree, "-p", "HEAD", "-m", "hostile"]);
    git(&remote.work, &["push", "-q", "--force", "origin", &format!("{commit}:refs/heads/main")]);
    commit
}

/// Write a tree object byte by byte (git's own tools refuse names like `..` and duplicates).
fn raw_tree(remote: &Remote, entries: &str) -> String {
    let mut bytes = Vec::new();
    for line in entries.lines() {
        let (meta, name) = line.split_once('\t').unwrap();
        let fields: Vec<&str> = meta.split_whitespace().collect();
        bytes.extend_from_slice(format!("{} {name}\0", fields[0].trim_start_matches('0')).as_bytes());
        let id = fields[2];
        bytes.extend((0..20).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()));
    }
    let path = remote.work.join("../raw-tree");
    fs::write(&path, bytes).unwrap();
    git(&remote.work, &["hash-object", "-t", "tree", "-w", "--literally", path.to_str().unwrap()])
}

/// Empty files cost no bytes but an inode each: a tiny repository of many of them is refused by
/// --max-checkout-files before anything is written.
#[test]
fn many_empty_files_are_bounded_by_max_checkout_files() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    for d in 0..10 {
        for f in 0..10 {
            remote.write(&format!("d{d}/f{f}"), "");
        }
    }
    remote.commit("many empty files");
    let host = Host::new(dir.path(), &remote.file_url());
    let run = host.sync(&["--max-checkout-files", "50"]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("more than --max-checkout-files (50)"), "{}", run.stderr);
    let revisions: Vec<_> = fs::read_dir(host.state.join("revisions")).unwrap().collect();
    assert!(revisions.is_empty(), "something was written: {revisions:?}");
    // 100 files, 10 directories and run.sh: 111 entries.
    host.sync(&["--max-checkout-files", "110"]).expect(RUNTIME_ERROR);
    host.sync(&["--max-checkout-files", "111"]).expect(APPLIED);
}

#[test]
fn hostile_trees_are_refused_or_contained() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let good = remote.head();
    let run_sh = git(&remote.work, &["rev-parse", "HEAD:run.sh"]);
    let blob = |content: &str| {
        let path = dir.path().join("blob");
        fs::write(&path, content).unwrap();
        git(&remote.work, &["hash-object", "-w", path.to_str().unwrap()])
    };
    let payload = blob("payload\n");
    let abs_link = blob("/etc/shadow");
    let refused = [
        (format!("100755 blob {run_sh}\trun.sh\n120000 blob {abs_link}\tshadow\n"), false, "points outside"),
        (format!("100755 blob {run_sh}\trun.sh\n100644 blob {payload}\t.git\n"), true, ".git component"),
        (format!("100755 blob {run_sh}\trun.sh\n100644 blob {payload}\t..\n"), true, "invalid path component"),
        (
            format!("100644 blob {payload}\tdup\n100644 blob {payload}\tdup\n100755 blob {run_sh}\trun.sh\n"),
            true,
            "duplicate entry",
        ),
    ];
    for (entries, literally, needle) in refused {
        remote.force_push(&good);
        let hostile = commit_tree(&remote, &entries, literally);
        let before = host.snapshot();
        let run = host.sync(&["--allow-diverged"]).expect(RUNTIME_ERROR);
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert_eq!(host.snapshot(), before, "{needle}: something changed");
        assert!(!host.state.join("revisions").join(&hostile).exists());
    }

    // A tiny repository that expands to a large checkout (one blob listed 64 times), and one large file.
    remote.force_push(&good);
    let mb = blob(&"z".repeat(1 << 20));
    let mut bomb = format!("100755 blob {run_sh}\trun.sh\n");
    for i in 0..64 {
        bomb.push_str(&format!("100644 blob {mb}\tcopy{i:02}\n"));
    }
    commit_tree(&remote, &bomb, false);
    let run = host.sync(&["--max-checkout-size", "16M", "--allow-diverged"]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("--max-checkout-size"), "{}", run.stderr);
    host.sync(&["--max-checkout-size", "80M", "--allow-diverged"]).expect(APPLIED);

    // Contained: names like the state files, case twins, a submodule pointing at a local repository.
    let secret_repo = dir.path().join("secret");
    fs::create_dir_all(&secret_repo).unwrap();
    git(&secret_repo, &["init", "-q", "-b", "main"]);
    fs::write(secret_repo.join("secret.txt"), "local secret").unwrap();
    git(&secret_repo, &["add", "-A"]);
    git(&secret_repo, &["commit", "-q", "-m", "secret"]);
    let secret_commit = git(&secret_repo, &["rev-parse", "HEAD"]);
    remote.force_push(&good);
    let contained = format!(
        "100755 blob {run_sh}\trun.sh\n100644 blob {payload}\tstate.json\n100644 blob {payload}\tcurrent\n100644 blob {payload}\tREADME\n100644 blob {payload}\treadme\n160000 commit {secret_commit}\tsub\n"
    );
    let head = commit_tree(&remote, &contained, false);
    fs::write(
        remote.work.join(".gitmodules"),
        format!("[submodule \"sub\"]\n\tpath = sub\n\turl = {}\n", secret_repo.display()),
    )
    .unwrap();
    let state_before = fs::read_to_string(host.state.join("state.json")).unwrap();
    host.sync(&["--allow-diverged"]).expect(APPLIED);
    let live = host.state.join("current");
    assert_eq!(fs::read_to_string(live.join("state.json")).unwrap(), "payload\n");
    assert!(live.join("README").is_file() && live.join("readme").is_file());
    assert!(!live.join("sub/secret.txt").exists(), "a submodule is never fetched");
    assert!(host.state.join("current").is_symlink(), "the repo's `current` file did not replace ours");
    assert_ne!(fs::read_to_string(host.state.join("state.json")).unwrap(), state_before);
    assert_eq!(host.applied(), Some(head));
}

#[test]
fn ten_simultaneous_runs_apply_once() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), &format!("{TRACED}\nsleep 0.5"));
    let host = Host::new(dir.path(), &remote.file_url());
    let state = host.state.to_str().unwrap().to_string();
    let url = remote.file_url();
    let children: Vec<_> = (0..10)
        .map(|_| {
            host.command(&["sync", "--repo-url", &url, "--state-dir", &state])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut codes: Vec<i32> =
        children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap()).collect();
    codes.sort();
    assert_eq!(codes.iter().filter(|c| **c == APPLIED).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == LOCKED).count(), 9, "{codes:?}");
    assert_eq!(count(&host, &format!("start {}", remote.head())), 1, "the entrypoint ran once");
}

#[test]
fn bad_input_table_exits_as_documented_and_changes_nothing() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let write = |name: &str, content: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::write(p(name), content).unwrap();
        fs::set_permissions(p(name), fs::Permissions::from_mode(mode)).unwrap();
    };
    write("key-open", "k", 0o644);
    write("key-ok", "k", 0o600);
    write("signers-garbage", "garbage\n", 0o644);
    write("signers-empty", "# nobody\n", 0o644);
    write("env-bad", "GITOPS_BRANCH main\n", 0o644);
    write("env-badname", "1X=2\n", 0o644);
    write("token-empty", "", 0o600);
    write("notify-open", "https://h/x\n", 0o644);
    write("a-file", "", 0o644);
    let non_utf8 = {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b"/tmp/\xff\xfe-state").to_os_string()
    };

    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--no-such-flag".into()], USAGE, "--no-such-flag"),
        (vec!["--apply-timeout".into(), "soon".into()], USAGE, "--apply-timeout"),
        (vec!["--apply-timeout".into(), "-5s".into()], USAGE, "'-5'"),
        (vec!["--apply-timeout".into(), "99999999999999999999d".into()], USAGE, "--apply-timeout"),
        (vec!["--apply-timeout".into(), "400d".into()], USAGE, "longer than a year"),
        (vec!["--fetch-timeout".into(), "0".into()], USAGE, "--fetch-timeout"),
        (vec!["--max-checkout-size".into(), "lots".into()], USAGE, "--max-checkout-size"),
        (vec!["--keep-revisions".into(), "0".into()], USAGE, "--keep-revisions"),
        (vec!["--keep-revisions".into(), "-1".into()], USAGE, "'-1'"),
        (vec!["--max-attempts".into(), "0".into()], USAGE, "--max-attempts"),
        (vec!["--entrypoint".into(), "../escape.sh".into()], USAGE, "--entrypoint"),
        (vec!["--entrypoint".into(), "/bin/sh".into()], USAGE, "--entrypoint"),
        (vec!["--branch".into(), "bad..name".into()], USAGE, "--branch"),
        (vec!["--ref".into(), "prod".into()], USAGE, "full ref name"),
        (vec!["--ssh-key".into(), p("key-open")], USAGE, "chmod 600"),
        (vec!["--ssh-key".into(), p("missing-key")], USAGE, "missing-key"),
        (vec!["--known-hosts".into(), p("missing-known")], USAGE, "--known-hosts"),
        (vec!["--known-hosts".into(), p("a-file"), "--accept-new-host-key".into()], USAGE, "cannot be used with"),
        (vec!["--allowed-signers".into(), p("signers-garbage")], USAGE, "line 1"),
        (vec!["--allowed-signers".into(), p("signers-empty")], USAGE, "lists no keys"),
        (vec!["--verify".into(), "some".into()], USAGE, "--verify"),
        (vec!["--config".into(), p("env-bad")], USAGE, "line 1"),
        (vec!["--config".into(), p("env-badname")], USAGE, "not a valid variable name"),
        (vec!["--config".into(), p("missing.env")], USAGE, "missing.env"),
        (vec!["--http-token-file".into(), p("token-empty")], USAGE, "is empty"),
        (vec!["--notify-file".into(), p("notify-open")], USAGE, "chmod 600"),
        (vec!["--notify".into(), "gopher://x".into()], USAGE, "notification URL"),
        (vec!["--notify-on".into(), "sometimes".into()], USAGE, "--notify-on"),
        (vec!["--state-dir".into(), format!("{}/sub", p("a-file"))], RUNTIME_ERROR, "state directory"),
        (vec!["--repo-url".into(), "not a url at all".into()], RUNTIME_ERROR, "not a url at all"),
        (vec!["--repo-url".into(), "ftp://h/x.git".into()], RUNTIME_ERROR, "ftp://h/x.git"),
        (vec!["--entrypoint".into(), "missing.sh".into()], APPLY_FAILED, "missing.sh not found"),
    ];
    assert!(cases.len() >= 25);
    for (args, code, needle) in &cases {
        let mut argv: Vec<&str> = vec!["sync"];
        if !args.iter().any(|a| a == "--repo-url") {
            argv.extend(["--repo-url", remote.bare.to_str().unwrap()]);
        }
        if !args.iter().any(|a| a == "--state-dir") {
            argv.extend(["--state-dir", host.state.to_str().unwrap()]);
        }
        argv.extend(args.iter().map(String::as_str));
        let run: Run = host.command(&argv).output().unwrap().into();
        assert_eq!(run.code, *code, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?} should mention {needle:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"), "{}", run.stderr);
        if *code == USAGE {
            assert!(!host.state.join("state.json").exists(), "{args:?} touched the state");
        }
        let error_lines = run.stderr.lines().filter(|l| l.contains("ERROR") || l.starts_with("error:")).count();
        assert!(error_lines <= 1, "{args:?}: one error line: {}", run.stderr);
    }
    // A non-UTF-8 state directory cannot be recorded in state.json or passed to the entrypoint.
    let run: Run = host
        .command(&["sync", "--repo-url", remote.bare.to_str().unwrap()])
        .arg("--state-dir")
        .arg(&non_utf8)
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, USAGE, "{}", run.stderr);
    assert!(run.stderr.contains("not valid UTF-8"), "{}", run.stderr);
    let _ = fs::remove_dir_all(&non_utf8);
}
