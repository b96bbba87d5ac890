//! `gitops sync` end to end: the built binary against real repositories, scenario by scenario.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn first_deploy_checks_out_applies_and_records() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    remote
        .script("run.sh", &format!("{RECORD}\necho to-stdout; echo to-stderr >&2\nenv | grep '^GITOPS_' | sort >> \"$TEST_OUT\"\npwd >> \"$TEST_OUT\""))
        .script("bin/tool", "true")
        .write("conf/app.conf", "x=1\n")
        .symlink("conf/link.conf", "app.conf");
    let commit = remote.commit("first");
    let host = Host::new(dir.path(), &remote.file_url());

    host.sync(&[]).expect(APPLIED);

    assert_eq!(host.current().as_deref(), Some(commit.as_str()));
    assert_eq!(host.applied().as_deref(), Some(commit.as_str()));
    let live = host.state.join("current");
    let mode = fs::metadata(live.join("bin/tool")).unwrap().permissions().mode();
    assert!(mode & 0o100 != 0, "exec bit lost: {mode:o}");
    assert_eq!(fs::read_link(live.join("conf/link.conf")).unwrap().to_str(), Some("app.conf"));
    assert_eq!(fs::read_to_string(live.join("conf/link.conf")).unwrap(), "x=1\n");
    assert!(!live.join(".git").exists(), "a checkout is a tree, not a clone");

    let out = host.out_lines();
    assert_eq!(out[0], format!("applied {commit} prev="));
    let env = |key: &str| out.iter().find_map(|l| l.strip_prefix(&format!("{key}="))).map(String::from);
    assert_eq!(env("GITOPS_COMMIT"), Some(commit.clone()));
    assert_eq!(env("GITOPS_PREVIOUS_COMMIT"), Some(String::new()));
    assert_eq!(env("GITOPS_BRANCH").as_deref(), Some("main"), "default branch comes from the remote's HEAD");
    assert_eq!(env("GITOPS_REPO_URL"), Some(remote.file_url()));
    assert_eq!(env("GITOPS_STATE_DIR").as_deref(), host.state.to_str());
    assert_eq!(env("GITOPS_HOSTNAME").as_deref(), Some("testhost"));
    let changed = fs::read_to_string(env("GITOPS_CHANGED_FILES").unwrap()).unwrap();
    assert_eq!(changed, "bin/tool\nconf/app.conf\nconf/link.conf\nrun.sh\n");
    assert_eq!(out.last().map(String::as_str), host.state.join("revisions").join(&commit).to_str());

    let state = host.state_json();
    let attempt = &state["last_attempt"];
    assert_eq!(attempt["result"], "applied");
    assert_eq!(attempt["attempts"], 1);
    assert_eq!(attempt["exit_code"], 0);
    assert!(attempt["started_at"].as_str().unwrap().ends_with('Z'));
    let log = fs::read_to_string(host.state.join(format!("logs/{commit}.log"))).unwrap();
    assert_eq!(log, "to-stdout\nto-stderr\n", "stdout and stderr saved");

    // Everything gitops writes is private: umask 077.
    for path in ["state.json", "revisions", "logs", "cache.git"] {
        let mode = fs::metadata(host.state.join(path)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}");
    }
}

#[test]
fn second_run_is_up_to_date_and_runs_nothing() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let before = host.snapshot();

    let run = host.sync(&[]).expect(UP_TO_DATE);

    assert!(run.stderr.contains("up-to-date"), "{}", run.stderr);
    assert_eq!(host.out_lines().len(), 1, "entrypoint ran again");
    assert_eq!(host.snapshot(), before);
}

#[test]
fn new_commit_is_applied_with_previous_commit_and_changed_files() {
    let dir = tempdir();
    let remote =
        Remote::with_script(dir.path(), &format!("{RECORD}\ncp \"$GITOPS_CHANGED_FILES\" \"$TEST_OUT.changed\""));
    remote.write("a.txt", "a").write("b.txt", "b").write("keep.txt", "k");
    let first = remote.commit("files");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);

    remote.write("a.txt", "changed").remove("b.txt").write("dir/new.txt", "n");
    let second = remote.commit("change");
    host.sync(&[]).expect(APPLIED);

    assert_eq!(host.out_lines().last().unwrap(), &format!("applied {second} prev={first}"));
    let changed = fs::read_to_string(format!("{}.changed", host.out.display())).unwrap();
    assert_eq!(changed, "a.txt\nb.txt\ndir/new.txt\n");
    assert_eq!(host.current(), Some(second.clone()));
    assert_eq!(host.applied(), Some(second));
}

#[test]
fn rewound_branch_exits_need_push_and_changes_nothing() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let first = remote.head();
    remote.commit("second");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.force_push(&first);
    let before = host.snapshot();

    let run = host.sync(&[]).expect(NEED_PUSH);

    assert!(run.stderr.contains("rewound"), "{}", run.stderr);
    assert_eq!(host.snapshot(), before);
    // The operator may deploy the rewind on purpose.
    host.sync(&["--allow-rewind"]).expect(APPLIED);
    assert_eq!(host.current(), Some(first.clone()));
    assert_eq!(host.applied(), Some(first));
}

#[test]
fn force_push_exits_diverged_until_allowed() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let base = remote.head();
    remote.write("x", "1");
    let deployed = remote.commit("deployed");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.force_push(&base);
    remote.write("y", "2");
    let rewritten = remote.commit("rewritten");
    git(&remote.work, &["push", "-q", "--force", "origin", "main"]);
    let before = host.snapshot();

    let run = host.sync(&[]).expect(DIVERGED);
    assert!(run.stderr.contains("diverged"), "{}", run.stderr);
    assert_eq!(host.snapshot(), before);
    assert_eq!(host.current(), Some(deployed.clone()));
    host.sync(&[]).expect(DIVERGED);

    host.sync(&["--allow-diverged"]).expect(APPLIED);
    assert_eq!(host.current(), Some(rewritten.clone()));
    assert_eq!(host.out_lines().last().unwrap(), &format!("applied {rewritten} prev={deployed}"));
}

#[test]
fn failed_apply_is_retried_up_to_max_attempts_then_waits_for_a_new_commit() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), &format!("{RECORD}\necho boom >&2\nexit 3"));
    let failing = remote.head();
    let host = Host::new(dir.path(), &remote.file_url());

    for attempt in 1..=2 {
        let run = host.sync(&["--max-attempts", "2"]).expect(APPLY_FAILED);
        assert!(run.stderr.contains("exited with code 3"), "{}", run.stderr);
        let state = host.state_json();
        assert_eq!(state["last_attempt"]["attempts"], attempt);
        assert_eq!(state["last_attempt"]["result"], "apply-failed");
        assert_eq!(state["last_attempt"]["exit_code"], 3);
        assert_eq!(state["last_attempt"]["commit"], failing.as_str());
        assert!(state["applied_commit"].is_null());
    }
    assert_eq!(host.out_lines().len(), 2);
    let log = fs::read_to_string(host.state.join(format!("logs/{failing}.log"))).unwrap();
    assert!(log.contains("boom"), "stderr captured: {log}");

    let run = host.sync(&["--max-attempts", "2"]).expect(APPLY_FAILED);
    assert!(run.stderr.contains("--retry"), "{}", run.stderr);
    assert_eq!(host.out_lines().len(), 2, "gave up: entrypoint not run a third time");

    host.sync(&["--max-attempts", "2", "--retry"]).expect(APPLY_FAILED);
    assert_eq!(host.out_lines().len(), 3, "--retry runs it once more");

    remote.script("run.sh", RECORD);
    let fixed = remote.commit("fix");
    host.sync(&["--max-attempts", "2"]).expect(APPLIED);
    assert_eq!(host.applied(), Some(fixed));
    assert_eq!(host.state_json()["last_attempt"]["attempts"], 1);
}

#[test]
fn timeout_kills_the_entrypoint_and_its_children() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "sleep 300 &\necho $! > \"$TEST_OUT.child\"\nsleep 300");
    let host = Host::new(dir.path(), &remote.file_url());
    let started = Instant::now();

    let run = host.sync(&["--apply-timeout", "1s"]).expect(APPLY_FAILED);

    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let child: i32 = fs::read_to_string(format!("{}.child", host.out.display())).unwrap().trim().parse().unwrap();
    assert!(!alive(child), "background child {child} survived the timeout");
    assert!(host.state_json()["last_attempt"]["exit_code"].is_null());
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn concurrent_run_exits_locked_at_once() {
    let dir = tempdir();
    let gate = dir.path().join("gate");
    let remote = Remote::with_script(
        dir.path(),
        &format!("touch \"$TEST_OUT.started\"\nwhile [ ! -e {} ]; do sleep 0.05; done", gate.display()),
    );
    let host = Host::new(dir.path(), &remote.file_url());
    let state = host.state.to_str().unwrap().to_string();
    let url = remote.file_url();
    let mut first = host.command(&["sync", "--repo-url", &url, "--state-dir", &state]).spawn().unwrap();
    let started = format!("{}.started", host.out.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::path::Path::new(&started).exists() {
        assert!(Instant::now() < deadline, "first run never started its entrypoint");
        std::thread::sleep(Duration::from_millis(20));
    }

    let t = Instant::now();
    let run = host.sync(&[]).expect(LOCKED);
    assert!(t.elapsed() < Duration::from_secs(5), "waited for the lock");
    assert!(run.stderr.contains("lock"), "{}", run.stderr);
    // Harmless: not an error for cron (`-q`) to mail.
    assert!(!run.stderr.contains(" ERROR "), "{}", run.stderr);
    assert!(host.sync(&["-q"]).expect(LOCKED).stderr.is_empty());

    fs::write(&gate, "").unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(APPLIED));
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let first = remote.head();
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.write("new.conf", "x");
    let second = remote.commit("second");
    let before = host.snapshot();

    let run = host.sync(&["--dry-run"]).expect(APPLIED);

    assert!(run.stdout.contains("would: apply"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("deployed: {first}")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("remote: {second}")), "{}", run.stdout);
    assert!(run.stdout.contains("  new.conf"), "{}", run.stdout);
    assert_eq!(host.snapshot(), before);

    // On a fresh host too: no checkout, no state.
    let fresh = Host::new(&dir.path().join("other"), &remote.file_url());
    fresh.sync(&["--dry-run"]).expect(APPLIED);
    assert!(!fresh.state.join("state.json").exists());
    assert!(fresh.current().is_none());
}

#[test]
fn symlink_escaping_the_checkout_is_refused() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let good = remote.head();
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.symlink("passwd", "../../../../../../etc/passwd");
    let hostile = remote.commit("hostile");
    let before = host.snapshot();

    let run = host.sync(&[]).expect(RUNTIME_ERROR);

    assert!(run.stderr.contains("symlink passwd"), "{}", run.stderr);
    assert!(run.stderr.lines().filter(|l| l.contains("ERROR")).count() == 1, "one error line: {}", run.stderr);
    assert_eq!(host.snapshot(), before);
    assert_eq!(host.current(), Some(good));
    assert!(!host.state.join("revisions").join(hostile).exists());
}

#[test]
fn unreachable_remote_exits_1_and_leaves_state_alone() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    let before = host.snapshot();
    let port = servers::free_port();
    let url = format!("git://127.0.0.1:{port}/origin.git");
    let down = Host::new(dir.path(), &url);

    let run = down.sync(&[]).expect(RUNTIME_ERROR);

    assert!(run.stderr.contains(&url), "names the remote: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(host.snapshot(), before);

    let missing = Host::new(dir.path(), &format!("{}/nope.git", dir.path().display()));
    let run = missing.sync(&[]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("nope.git"), "{}", run.stderr);
}

#[test]
fn missing_entrypoint_is_a_failed_apply_naming_it() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    remote.write("README", "no script here");
    remote.commit("first");
    let host = Host::new(dir.path(), &remote.file_url());

    let run = host.sync(&[]).expect(APPLY_FAILED);

    assert!(run.stderr.contains("entrypoint run.sh not found"), "{}", run.stderr);
    host.sync(&["--entrypoint", "README"]).expect(APPLY_FAILED);
}

#[test]
fn keeps_only_the_newest_revisions() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    let mut commits = vec![remote.head()];
    host.sync(&["--keep-revisions", "2"]).expect(APPLIED);
    for n in 0..3 {
        remote.write("n", &n.to_string());
        commits.push(remote.commit("next"));
        // Distinct mtimes order the revisions.
        std::thread::sleep(Duration::from_millis(20));
        host.sync(&["--keep-revisions", "2"]).expect(APPLIED);
    }
    let mut kept: Vec<String> = fs::read_dir(host.state.join("revisions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    let mut want = commits[2..].to_vec();
    want.sort();
    assert_eq!(kept, want);
}

#[test]
fn configured_branch_is_followed() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    git(&remote.work, &["checkout", "-q", "-b", "prod"]);
    remote.write("prod.txt", "p");
    git(&remote.work, &["add", "-A"]);
    git(&remote.work, &["commit", "-q", "-m", "prod"]);
    git(&remote.work, &["push", "-q", "origin", "prod"]);
    let prod = remote.head();
    let host = Host::new(dir.path(), &remote.file_url());

    host.sync(&["--branch", "prod"]).expect(APPLIED);
    assert_eq!(host.current(), Some(prod));

    let run = host.sync(&["--branch", "nope"]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("branch \"nope\" does not exist"), "{}", run.stderr);
}

#[test]
fn env_file_configures_a_manual_run_like_the_service() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), "unused");
    let env_file = dir.path().join("gitops.env");
    fs::write(
        &env_file,
        format!(
            "# as in /etc/gitops/gitops.env\nREPO_URL={}\nGITOPS_STATE_DIR=\"{}\"\n",
            remote.file_url(),
            host.state.display()
        ),
    )
    .unwrap();

    let run: Run = host.command(&["sync", "--config", env_file.to_str().unwrap()]).output().unwrap().into();
    run.expect(APPLIED);
    assert_eq!(host.applied(), Some(remote.head()));

    // The real environment wins over the file, and flags win over both.
    let run: Run = host
        .command(&["sync", "--config", env_file.to_str().unwrap(), "--branch", "nope"])
        .env("GITOPS_REPO_URL", remote.file_url())
        .output()
        .unwrap()
        .into();
    assert!(run.expect(RUNTIME_ERROR).stderr.contains("\"nope\""));
}

#[test]
fn bad_flags_and_config_exit_2_with_one_clear_line() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let host = Host::new(dir.path(), &remote.file_url());
    let key = dir.path().join("deploy_key");
    fs::write(&key, "not really a key").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let bad_env = dir.path().join("bad.env");
    fs::write(&bad_env, "GITOPS_BRANCH main\n").unwrap();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["--apply-timeout", "soon"], "--apply-timeout"),
        (vec!["--keep-revisions", "0"], "--keep-revisions"),
        (vec!["--max-attempts", "0"], "--max-attempts"),
        (vec!["--entrypoint", "../escape.sh"], "--entrypoint"),
        (vec!["--branch", "bad..name"], "--branch"),
        (vec!["--ssh-key", key.to_str().unwrap()], "chmod 600"),
        (vec!["--known-hosts", "/nonexistent/known_hosts"], "--known-hosts"),
        (vec!["--config", bad_env.to_str().unwrap()], "line 1"),
        (vec!["--config", "/nonexistent/gitops.env"], "/nonexistent/gitops.env"),
    ];
    for (args, needle) in cases {
        let run = host.sync(&args);
        assert_eq!(run.code, USAGE, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?} should mention {needle}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"), "{}", run.stderr);
    }
    assert!(!host.state.exists(), "a usage error touches nothing");

    let run: Run = host
        .command(&["sync", "--state-dir", "/tmp/x"])
        .env_remove("GITOPS_REPO_URL")
        .env_remove("REPO_URL")
        .output()
        .unwrap()
        .into();
    assert!(run.expect(USAGE).stderr.contains("--repo-url"));
}

/// Names Linux, systemd and git accept but Windows does not (`\x2d` escapes, `:`, `aux`, a trailing
/// dot or space, `?*|<`), names that are not UTF-8 (two that differ in one byte are two files) and a
/// name with a newline: each is deployed byte for byte and listed in $GITOPS_CHANGED_FILES so that it
/// reads back exactly, one entry per line.
#[test]
fn every_name_linux_and_git_accept_is_deployed_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), "cp \"$GITOPS_CHANGED_FILES\" \"$TEST_OUT.changed\"");
    let names: [&[u8]; 11] = [
        b"mnt-data\\x2dvol.mount",
        b"host:8080.conf",
        b"aux.conf",
        b"con",
        b"notes.",
        b"trailing ",
        b"a?b*c|d<e",
        b"caf\xe9.conf",
        b"b\xff",
        b"b\xfe",
        b"line\nbreak",
    ];
    for name in names {
        fs::write(remote.work.join(OsStr::from_bytes(name)), name).unwrap();
    }
    let commit = remote.commit("names");
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);

    let live = host.state.join("revisions").join(&commit);
    for name in names {
        assert_eq!(fs::read(live.join(OsStr::from_bytes(name))).unwrap(), name, "{:?}", String::from_utf8_lossy(name));
    }
    let listed = fs::read(format!("{}.changed", host.out.display())).unwrap();
    let lines: Vec<&[u8]> = listed.strip_suffix(b"\n").unwrap().split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), names.len() + 1, "{:?}", String::from_utf8_lossy(&listed));
    for expected in [
        &b"caf\xe9.conf"[..],
        b"b\xff",
        b"b\xfe",
        b"host:8080.conf",
        b"trailing ",
        b"\"line\\nbreak\"",
        b"\"mnt-data\\\\x2dvol.mount\"",
        b"run.sh",
    ] {
        assert!(
            lines.contains(&expected),
            "{:?} missing from {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(&listed)
        );
    }
}

#[test]
fn readme_demo_applies_then_is_up_to_date() {
    let dir = tempdir();
    let output = std::process::Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.sh"))
        .env("GITOPS_BIN", env!("CARGO_BIN_EXE_gitops"))
        .env("XDG_STATE_HOME", dir.path())
        .env("GITOPS_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let codes: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("==> exit code ")).collect();
    assert_eq!(codes, ["10", "0", "10"], "{log}");
    let motd = fs::read_to_string(dir.path().join("gitops-demo/root/etc/motd")).unwrap();
    assert!(motd.ends_with("Welcome, operator.\n"), "{motd}");
}

#[test]
fn relative_state_dir_works_from_the_current_directory() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), &format!("{RECORD}\necho \"$GITOPS_STATE_DIR\" >> \"$TEST_OUT\""));
    let host = Host::new(dir.path(), &remote.file_url());
    let run: Run = host
        .command(&["sync", "--repo-url", &remote.file_url(), "--state-dir", "relative-state"])
        .current_dir(dir.path())
        .output()
        .unwrap()
        .into();
    run.expect(APPLIED);
    let absolute = dir.path().join("relative-state");
    assert_eq!(host.out_lines().last().map(String::as_str), absolute.to_str());
    assert!(absolute.join("state.json").exists());
}

/// What a checkout holds, comparable across directories: path, kind, exec bit, content or link target.
fn tree_listing(root: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path);
                "dir".into()
            } else {
                let exec = if meta.permissions().mode() & 0o100 != 0 { "exec" } else { "file" };
                format!("{exec} {}", fs::read_to_string(&path).unwrap())
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

#[test]
fn revisions_rebuilt_from_old_ones_match_their_commit_whatever_the_entrypoint_did() {
    let dir = tempdir();
    // The entrypoint keeps a copy of its checkout as it found it, then vandalises it: same-size edits in place
    // (one with the mtime put back), a chmod, new files and directories, a directory swapped for a symlink out
    // of the tree and a file swapped for a directory. None of it may reach a later revision.
    let script = r#"snap="$TEST_OUT.snap/$GITOPS_COMMIT"; rm -rf "$snap"; mkdir -p "$TEST_OUT.snap"; cp -a . "$snap"
printf 'a=9\n' > conf/a.conf
touch -r conf/c.conf "$TEST_OUT.mtime"; printf 'c=9\n' > conf/c.conf; touch -r "$TEST_OUT.mtime" conf/c.conf
chmod +x conf/b.conf
echo junk > junk.txt; mkdir -p extra/deep; echo x > extra/deep/f
rm -rf keep; ln -s /etc keep
rm bin/tool; mkdir bin/tool; echo x > bin/tool/x"#;
    let remote = Remote::with_script(dir.path(), script);
    remote
        .write("conf/a.conf", "a=1\n")
        .write("conf/b.conf", "b=1\n")
        .write("conf/c.conf", "c=1\n")
        .write("keep/x.txt", "x\n")
        .script("bin/tool", "true")
        .symlink("link", "conf/a.conf");
    let mut commits = vec![remote.commit("tree")];
    let host = Host::new(dir.path(), &remote.file_url());
    let snapshot = |commit: &str| tree_listing(&dir.path().join("host/out.snap").join(commit));
    let expected = |commit: &str| {
        let fresh = dir.path().join(format!("fresh-{commit}"));
        fs::create_dir_all(&fresh).unwrap();
        let archive = dir.path().join("archive.tar");
        git(&remote.work, &["archive", "-o", archive.to_str().unwrap(), commit]);
        let status = std::process::Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&fresh).status();
        assert!(status.unwrap().success());
        tree_listing(&fresh)
    };
    host.sync(&["--keep-revisions", "2"]).expect(APPLIED);
    for n in 0..4 {
        remote.write("n", &n.to_string());
        if n == 2 {
            remote.remove("conf/b.conf").write("keep/y.txt", "y\n");
        }
        commits.push(remote.commit(&format!("change {n}")));
        std::thread::sleep(Duration::from_millis(20));
        let run = host.sync(&["--keep-revisions", "2", "-v"]).expect(APPLIED);
        if n >= 1 {
            let (new, old) = (&commits[n + 1], &commits[n - 1]);
            assert!(run.stderr.contains(&format!("built {new} from revision {old}")), "{}", run.stderr);
        }
    }
    for commit in &commits {
        assert_eq!(snapshot(commit), expected(commit), "revision {commit} as its entrypoint found it");
    }

    // A rollback to a revision still on disk repairs it before it runs again.
    let back = commits[3].clone();
    remote.force_push(&back);
    let run = host.sync(&["--keep-revisions", "2", "--allow-rewind", "-v"]).expect(APPLIED);
    assert!(run.stderr.contains(&format!("built {back} from revision {back}")), "{}", run.stderr);
    assert_eq!(snapshot(&back), expected(&back), "revision {back} after the rollback");
}
