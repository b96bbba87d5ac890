//! Safe rollouts on one host: per-host testing branches, `gitops suspend`/`resume`, and the
//! `--reapply-every` reconcile, with the reason each entrypoint run is given.

use std::fs;
use std::path::Path;

use crate::support::*;

const DEFERRED: i32 = 11;

/// The entrypoint: record the commit, why it runs and where it came from; fail while `$TEST_OUT.fail` exists.
const SCRIPT: &str = r#"echo "applied $GITOPS_COMMIT reason=$GITOPS_REASON from=$GITOPS_DEPLOYED_FROM" >> "$TEST_OUT"
[ ! -e "$TEST_OUT.fail" ]"#;

/// A host named `name` with its own state directory under `root/name`.
struct Named {
    host: Host,
    name: &'static str,
    url: String,
}

impl Named {
    fn new(root: &Path, url: &str, name: &'static str) -> Named {
        Named { host: Host::new(&root.join(name), url), name, url: url.to_string() }
    }

    /// `gitops sync --host NAME --testing-branch testing/{host} EXTRA`, at the wall clock or at `now` (Unix seconds).
    fn sync_at(&self, now: Option<i64>, extra: &[&str]) -> Run {
        let state = self.host.state.to_str().unwrap();
        let mut args = vec!["sync", "--repo-url", &self.url, "--state-dir", state, "--host", self.name];
        args.extend_from_slice(&["--testing-branch", "testing/{host}"]);
        args.extend_from_slice(extra);
        let mut command = self.host.command(&args);
        if let Some(now) = now {
            command.env("GITOPS_TEST_NOW", now.to_string());
        }
        command.output().expect("running gitops").into()
    }

    fn sync(&self) -> Run {
        self.sync_at(None, &[])
    }

    fn state_dir(&self) -> &str {
        self.host.state.to_str().unwrap()
    }

    /// `gitops ARGS --state-dir STATE`.
    fn gitops(&self, args: &[&str], now: Option<i64>) -> Run {
        let mut args = args.to_vec();
        args.extend_from_slice(&["--state-dir", self.state_dir()]);
        let mut command = self.host.command(&args);
        if let Some(now) = now {
            command.env("GITOPS_TEST_NOW", now.to_string());
        }
        command.output().expect("running gitops").into()
    }

    /// The last line the entrypoint wrote.
    fn last_out(&self) -> String {
        self.host.out_lines().last().cloned().unwrap_or_default()
    }
}

/// Commit on `branch` (created from `from` when it does not exist) and push it; main stays checked out.
fn commit_on(remote: &Remote, branch: &str, from: &str, message: &str) -> String {
    let exists = git(&remote.work, &["branch", "--list", branch]);
    if exists.is_empty() {
        git(&remote.work, &["checkout", "-q", "-b", branch, from]);
    } else {
        git(&remote.work, &["checkout", "-q", branch]);
    }
    git(&remote.work, &["commit", "-q", "--allow-empty", "-m", message]);
    git(&remote.work, &["push", "-q", "--force", "origin", branch]);
    let commit = remote.head();
    git(&remote.work, &["checkout", "-q", "main"]);
    commit
}

/// Delete `branch` on the remote (and in the working clone).
fn delete_branch(remote: &Remote, branch: &str) {
    git(&remote.work, &["push", "-q", "origin", "--delete", branch]);
    git(&remote.work, &["branch", "-q", "-D", branch]);
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_testing_branch_deploys_on_its_host_only_and_leaving_it_is_accepted() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), SCRIPT);
    let base = remote.head();
    let (web1, web2) =
        (Named::new(dir.path(), &remote.file_url(), "web-1"), Named::new(dir.path(), &remote.file_url(), "web-2"));
    web1.sync().expect(APPLIED);
    web2.sync().expect(APPLIED);
    assert_eq!(web1.last_out(), format!("applied {base} reason=new-commit from=main"));

    let testing = commit_on(&remote, "testing/web-1", "main", "try it on web-1");
    let run = web1.sync().expect(APPLIED);
    assert!(run.stderr.contains("testing/web-1 (testing branch)"), "{}", run.stderr);
    assert_eq!(web1.host.applied().as_deref(), Some(testing.as_str()));
    assert_eq!(web1.last_out(), format!("applied {testing} reason=new-commit from=testing/web-1"));
    let state = web1.host.state_json();
    assert_eq!(state["deployed_from"], "testing/web-1");
    assert_eq!(state["testing_base"], base.as_str());
    web2.sync().expect(UP_TO_DATE);
    assert_eq!(web2.host.applied().as_deref(), Some(base.as_str()), "web-2 ignores web-1's testing branch");
    web1.sync().expect(UP_TO_DATE);

    let status = web1.gitops(&["status", "--json"], None).expect(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["applied"]["testing_branch"], "testing/web-1");
    let text = web1.gitops(&["status"], None).expect(0);
    assert!(text.stdout.contains("deployed from: testing/web-1 (testing branch)"), "{}", text.stdout);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(web1.host.state.join("last_run.json")).unwrap()).unwrap();
    assert_eq!(record["last_run"]["deployed_from"], "testing/web-1");

    // Deleted: back to the branch's tip, although it is behind the testing commit.
    delete_branch(&remote, "testing/web-1");
    web1.sync().expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(base.as_str()));
    assert_eq!(web1.last_out(), format!("applied {base} reason=new-commit from=main"));
    let state = web1.host.state_json();
    assert_eq!(state["deployed_from"], "main");
    assert!(state.get("testing_base").is_none(), "{state}");
    web1.sync().expect(UP_TO_DATE);

    // Merged: the branch's new tip contains the testing commit; the testing branch may stay behind.
    let testing = commit_on(&remote, "testing/web-1", "main", "try again");
    web1.sync().expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(testing.as_str()));
    git(&remote.work, &["merge", "-q", "--no-ff", "-m", "merge the test", "testing/web-1"]);
    git(&remote.work, &["push", "-q", "origin", "main"]);
    let merged = remote.head();
    web1.sync().expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(merged.as_str()));
    assert_eq!(web1.host.state_json()["deployed_from"], "main");
    web2.sync().expect(APPLIED);
    assert_eq!(web2.host.applied().as_deref(), Some(merged.as_str()));
}

#[test]
fn a_testing_branch_off_the_branch_tip_is_ignored_with_a_warning() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), SCRIPT);
    let base = remote.head();
    let web1 = Named::new(dir.path(), &remote.file_url(), "web-1");
    web1.sync().expect(APPLIED);
    let testing = commit_on(&remote, "testing/web-1", "main", "try it");
    web1.sync().expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(testing.as_str()));

    // The branch moves on without it: the testing commit no longer descends from the tip.
    let newer = remote.commit("meanwhile on main");
    let run = web1.sync().expect(APPLIED);
    assert!(
        run.stderr.contains("ignoring testing branch testing/web-1")
            && run.stderr.contains("does not descend from the branch's tip"),
        "{}",
        run.stderr
    );
    assert_eq!(web1.host.applied().as_deref(), Some(newer.as_str()), "back on the branch");
    let run = web1.sync().expect(UP_TO_DATE);
    assert!(run.stderr.contains("ignoring testing branch"), "{}", run.stderr);

    // A fresh host never deploys it either.
    let web1b = Named::new(&dir.path().join("again"), &remote.file_url(), "web-1");
    web1b.sync().expect(APPLIED);
    assert_eq!(web1b.host.applied().as_deref(), Some(newer.as_str()));
    assert_ne!(base, newer);
}

#[test]
fn a_rewind_of_the_branch_is_still_need_push_with_a_testing_branch() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), SCRIPT);
    let first = remote.head();
    let second = remote.commit("second");
    let web1 = Named::new(dir.path(), &remote.file_url(), "web-1");
    web1.sync().expect(APPLIED);

    // The branch is rewound; a testing branch made from the rewound tip does not make it acceptable.
    remote.force_push(&first);
    commit_on(&remote, "testing/web-1", "main", "on the rewound tip");
    web1.sync().expect(NEED_PUSH);
    assert_eq!(web1.host.applied().as_deref(), Some(second.as_str()));
    delete_branch(&remote, "testing/web-1");
    web1.sync().expect(NEED_PUSH);

    // While a testing commit is live, the branch must not fall behind the tip it was deployed on.
    remote.force_push(&second);
    web1.sync().expect(UP_TO_DATE);
    let testing = commit_on(&remote, "testing/web-1", "main", "on second");
    web1.sync().expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(testing.as_str()));
    remote.force_push(&first);
    let run = web1.sync().expect(NEED_PUSH);
    assert!(run.stderr.contains("remote main is at"), "{}", run.stderr);
    delete_branch(&remote, "testing/web-1");
    web1.sync().expect(NEED_PUSH);
    assert_eq!(web1.host.applied().as_deref(), Some(testing.as_str()), "nothing changed");
    web1.sync_at(None, &["--allow-rewind"]).expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(first.as_str()));
}

#[test]
fn suspend_holds_syncs_until_resume_or_for_runs_out() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), SCRIPT);
    let first = remote.head();
    let web1 = Named::new(dir.path(), &remote.file_url(), "web-1");
    web1.sync().expect(APPLIED);

    web1.gitops(&["suspend", "--for", "soon"], None).expect(USAGE);
    web1.gitops(&["suspend", "--reason", "two\nlines"], None).expect(USAGE);
    let t0 = now();
    web1.gitops(&["suspend", "--reason", "kernel upgrade", "--for", "30m"], Some(t0)).expect(0);
    let second = remote.commit("second");
    let run = web1.sync_at(Some(t0 + 60), &[]).expect(DEFERRED);
    assert!(
        run.stderr.contains("suspended by ")
            && run.stderr.contains(": kernel upgrade; until ")
            && run.stderr.contains(" UTC"),
        "{}",
        run.stderr
    );
    assert_eq!(web1.host.applied().as_deref(), Some(first.as_str()));
    let status = web1.gitops(&["status", "--json"], Some(t0 + 60)).expect(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["suspended"]["reason"], "kernel upgrade");
    assert!(status["suspended"]["until"].is_string());
    let text = web1.gitops(&["status"], Some(t0 + 60)).expect(0);
    assert!(text.stdout.contains("suspended:    by ") && text.stdout.contains("kernel upgrade"), "{}", text.stdout);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(web1.host.state.join("last_run.json")).unwrap()).unwrap();
    assert_eq!(record["last_run"]["result"], "deferred");
    assert_eq!(record["last_run"]["suspended_reason"], "kernel upgrade");
    assert!(record["last_run"]["suspended_until"].is_string());

    // --for runs out by itself.
    web1.sync_at(Some(t0 + 31 * 60), &[]).expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(second.as_str()));
    assert!(!web1.host.state.join("suspend.json").exists());
    let status = web1.gitops(&["status", "--json"], None).expect(0);
    assert!(serde_json::from_str::<serde_json::Value>(&status.stdout).unwrap()["suspended"].is_null());

    // Without --for: until gitops resume.
    web1.gitops(&["suspend"], None).expect(0);
    let third = remote.commit("third");
    let run = web1.sync().expect(DEFERRED);
    assert!(run.stderr.contains("until gitops resume"), "{}", run.stderr);
    web1.gitops(&["resume"], None).expect(0);
    web1.gitops(&["resume"], None).expect(0);
    web1.sync().expect(APPLIED);
    assert_eq!(web1.host.applied().as_deref(), Some(third.as_str()));

    // A symlink in its place is refused, not followed.
    std::os::unix::fs::symlink("/etc/hostname", web1.host.state.join("suspend.json")).unwrap();
    web1.sync().expect(USAGE);
}

#[test]
fn reapply_every_reconciles_on_schedule_and_not_more_often() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), SCRIPT);
    let first = remote.head();
    let web1 = Named::new(dir.path(), &remote.file_url(), "web-1");
    let every = ["--reapply-every", "1h", "--max-attempts", "2"];
    let t0 = now();
    let minute = 60;
    web1.sync_at(Some(t0), &every).expect(APPLIED);
    let applied_at = web1.host.state_json()["applied_at"].clone();
    web1.sync_at(Some(t0 + 30 * minute), &every).expect(UP_TO_DATE);
    web1.sync_at(Some(t0 + 59 * minute), &every).expect(UP_TO_DATE);
    assert_eq!(web1.host.out_lines().len(), 1);

    let run = web1.sync_at(Some(t0 + 61 * minute), &every).expect(APPLIED);
    assert!(run.stderr.contains("reconciling"), "{}", run.stderr);
    assert_eq!(web1.last_out(), format!("applied {first} reason=reconcile from=main"));
    let state = web1.host.state_json();
    assert_eq!(state["applied_at"], applied_at, "the commit went live earlier");
    assert!(state["reconciled_at"].is_string());
    web1.sync_at(Some(t0 + 62 * minute), &every).expect(UP_TO_DATE);
    web1.sync_at(Some(t0 + 120 * minute), &every).expect(UP_TO_DATE);
    assert_eq!(web1.host.out_lines().len(), 2, "once per period");
    web1.sync_at(Some(t0 + 122 * minute), &every).expect(APPLIED);
    assert_eq!(web1.host.out_lines().len(), 3);

    // A failing reconcile: retried up to --max-attempts, then left alone until a period after the last failure.
    fs::write(format!("{}.fail", web1.host.out.display()), "").unwrap();
    let t1 = t0 + 190 * minute;
    web1.sync_at(Some(t1), &every).expect(APPLY_FAILED);
    web1.sync_at(Some(t1 + minute), &every).expect(APPLY_FAILED);
    assert_eq!(web1.host.out_lines().len(), 5);
    for later in [2, 5, 30, 60] {
        let run = web1.sync_at(Some(t1 + later * minute), &every).expect(APPLY_FAILED);
        assert!(run.stderr.contains("reconciling") && run.stderr.contains("failed 2 times"), "{}", run.stderr);
    }
    assert_eq!(web1.host.out_lines().len(), 5, "no run while given up");
    fs::remove_file(format!("{}.fail", web1.host.out.display())).unwrap();
    web1.sync_at(Some(t1 + 62 * minute), &every).expect(APPLIED);
    assert_eq!(web1.last_out(), format!("applied {first} reason=reconcile from=main"));
    web1.sync_at(Some(t1 + 63 * minute), &every).expect(UP_TO_DATE);

    // Without the flag, never.
    web1.sync_at(Some(t1 + 600 * minute), &[]).expect(UP_TO_DATE);
}

#[test]
fn the_entrypoint_is_told_why_it_runs() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), SCRIPT);
    let first = remote.head();
    let web1 = Named::new(dir.path(), &remote.file_url(), "web-1");
    web1.sync().expect(APPLIED);
    assert_eq!(web1.last_out(), format!("applied {first} reason=new-commit from=main"));
    fs::write(format!("{}.fail", web1.host.out.display()), "").unwrap();
    let second = remote.commit("second");
    web1.sync().expect(APPLY_FAILED);
    assert_eq!(web1.last_out(), format!("applied {second} reason=new-commit from=main"));
    fs::remove_file(format!("{}.fail", web1.host.out.display())).unwrap();
    web1.sync().expect(APPLIED);
    assert_eq!(web1.last_out(), format!("applied {second} reason=retry from=main"));
}
