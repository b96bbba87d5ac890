//! `gitops check`: for each class of finding, a fleet repository with exactly that mistake (and the same
//! repository without it, which passes). Repositories are made with the git CLI, host keys with ssh-keygen,
//! secrets with the age CLI; the hooks and CI snippets people copy are run for real (the pre-commit
//! framework, a git pre-push hook, the README's GitHub Actions and GitLab CI steps).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::*;

/// Exit code of a check with findings.
const FINDINGS: i32 = 1;

const README: &str = include_str!("../README.md");
const PRE_COMMIT_HOOKS: &str = include_str!("../contrib/pre-commit/.pre-commit-hooks.yaml");
/// The pre-push hook example, relative to the repository root.
const PRE_PUSH: &str = "contrib/git-hooks/pre-push";

/// The shared entrypoint of the fixture.
const RUN: &str = "set -eu\nfor role in ${GITOPS_TAGS:-}; do echo \"$role\"; done\n";

/// A working clone of a fleet repository that every check passes: a shared entrypoint with its teardown and
/// health check, a host override, two hosts with keys, a third listed in `.gitops/hosts`, a rollout policy,
/// and (with `secrets`) recipients and age secrets written by the age CLI.
struct Fleet {
    _dir: tempfile::TempDir,
    /// The working clone.
    work: PathBuf,
    /// Where the host and admin keys are (outside the repository).
    keys: PathBuf,
    /// The admin's age recipient (`age1…`), when the fleet has secrets.
    admin: String,
}

impl Fleet {
    /// The fleet, with secrets when the tools for them are here (None: the test is skipped by the gate).
    fn new(secrets: bool) -> Option<Fleet> {
        if secrets && !tooling::available(&[tooling::AGE, tooling::SSH_KEYGEN]) {
            return None;
        }
        let dir = tempdir();
        let work = dir.path().join("fleet");
        let keys = dir.path().join("keys");
        fs::create_dir_all(&work).unwrap();
        fs::create_dir_all(&keys).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        let mut fleet = Fleet { _dir: dir, work, keys, admin: String::new() };
        fleet.script("run.sh", RUN);
        fleet.script("teardown.sh", "rm -f /etc/motd.d/fleet");
        fleet.script("health.sh", "systemctl is-active --quiet nginx");
        fleet.script("hosts/web1/run.sh", "echo canary > /etc/canary\nexec ./run.sh");
        fleet.write("hosts/web2/motd", "web2\n");
        fleet.write(".gitops/hosts", "# hosts without a directory of their own\ndb1\n");
        fleet.write(".gitops/rollout", "canary=web1\nwindow=2h\n");
        if secrets {
            for host in ["web1", "web2"] {
                let key = SigningKey::generate(&fleet.keys, host, "ed25519");
                let public = fs::read_to_string(key.private.with_extension("pub")).unwrap();
                fleet.write(&format!("hosts/{host}/ssh_host_ed25519_key.pub"), &public);
            }
            let identity = fleet.keys.join("admin.agekey");
            let status = tooling::command("age-keygen").arg("-o").arg(&identity).stderr(Stdio::null()).status();
            assert!(status.unwrap().success(), "age-keygen");
            let text = fs::read_to_string(&identity).unwrap();
            fleet.admin = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_string();
            let recipients = format!("admin {}\nhosts/web1/  web1\nshared/      web1 web2\n", fleet.admin);
            fleet.write(".gitops/recipients", &recipients);
            fleet.age("hosts/web1/db.pass.age", &["web1"], true, false);
            fleet.age("shared/token.age", &["web1", "web2"], true, true);
        }
        fleet.commit("a fleet");
        Some(fleet)
    }

    /// Write a file in the working clone.
    fn write(&self, path: &str, content: &str) -> &Self {
        let file = self.work.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, content).unwrap();
        self
    }

    /// Write an executable `#!/bin/sh` script.
    fn script(&self, path: &str, body: &str) -> &Self {
        self.write(path, &format!("#!/bin/sh\n{body}\n"));
        fs::set_permissions(self.work.join(path), fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Encrypt a secret with the age CLI to the host keys of `hosts` (and the admin's age key).
    fn age(&self, path: &str, hosts: &[&str], admin: bool, armor: bool) -> &Self {
        let mut cmd = tooling::command("age");
        cmd.arg("-e");
        for host in hosts {
            cmd.arg("-R").arg(self.keys.join(format!("{host}.pub")));
        }
        if admin {
            cmd.arg("-r").arg(&self.admin);
        }
        if armor {
            cmd.arg("-a");
        }
        let out = self.work.join(path);
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut child = cmd.arg("-o").arg(&out).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("value of {path}\n").as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "age -e {path}");
        self
    }

    /// Stage everything (what `git commit -a` would take).
    fn stage(&self) -> &Self {
        git(&self.work, &["add", "-A"]);
        self
    }

    /// Commit everything; the new commit.
    fn commit(&self, message: &str) -> String {
        self.stage();
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// `gitops check ARGS` in the working clone.
    fn check(&self, args: &[&str]) -> Run {
        gitops_check(&self.work, args)
    }

    /// `gitops check --format json ARGS`: the exit code and the findings (errors and notes).
    fn findings(&self, args: &[&str]) -> (i32, Vec<Found>) {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let run = self.check(&all);
        let doc: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.stdout, run.stderr));
        assert_eq!(doc["schema"], 1);
        let found = doc["findings"].as_array().unwrap().iter().map(Found::from).collect();
        (run.code, found)
    }
}

/// One finding of the JSON output.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    level: String,
    class: String,
    path: Option<String>,
    line: Option<u64>,
    message: String,
}

impl From<&Value> for Found {
    fn from(v: &Value) -> Found {
        Found {
            level: v["level"].as_str().unwrap().to_string(),
            class: v["class"].as_str().unwrap().to_string(),
            path: v["path"].as_str().map(String::from),
            line: v["line"].as_u64(),
            message: v["message"].as_str().unwrap().to_string(),
        }
    }
}

/// The errors (not the notes) among `found`.
fn errors(found: &[Found]) -> Vec<&Found> {
    found.iter().filter(|f| f.level == "error").collect()
}

/// Assert that `found` is exactly one error of `class` at `path` (and `line`) whose message has `says`.
#[track_caller]
fn exactly_one(found: &[Found], class: &str, path: Option<&str>, line: Option<u64>, says: &str) {
    let errors = errors(found);
    assert_eq!(errors.len(), 1, "one finding expected: {errors:#?}");
    let f = errors[0];
    assert_eq!((f.class.as_str(), f.path.as_deref(), f.line), (class, path, line), "{f:#?}");
    assert!(f.message.contains(says), "{:?} does not say {says:?}", f.message);
}

/// `gitops check ARGS` in `dir`, isolated from the machine's configuration.
fn gitops_check(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops"));
    cmd.arg("check").args(args).current_dir(dir);
    isolate(&mut cmd);
    cmd.output().expect("running gitops").into()
}

/// No env file, no host settings from the environment, no user git configuration.
fn isolate(cmd: &mut Command) {
    cmd.env("GITOPS_CONFIG", "/dev/null").env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null");
    for var in ["RUST_LOG", "GITOPS_PATH", "GITOPS_ENTRYPOINT", "GITOPS_TEARDOWN", "GIT_DIR", "GIT_INDEX_FILE"] {
        cmd.env_remove(var);
    }
    for var in ["GITOPS_MAX_CHECKOUT_SIZE", "GITOPS_MAX_CHECKOUT_FILES"] {
        cmd.env_remove(var);
    }
}

/// A PATH with the built gitops first.
fn path_with_gitops() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_gitops")).parent().unwrap().display().to_string();
    format!("{bin}:{}", std::env::var("PATH").unwrap_or_default())
}

#[test]
fn a_clean_fleet_passes_in_the_index_and_at_a_commit_in_every_format() {
    let Some(fleet) = Fleet::new(true) else { return };
    let run = fleet.check(&[]).expect(0);
    let summary = run.stdout.lines().last().unwrap();
    assert!(summary.starts_with("gitops check: clean in the index"), "{}", run.stdout);
    assert!(summary.contains("4 scripts, 2 secrets"), "entrypoints, teardown, health check; {summary}");
    assert_eq!(run.stdout.lines().count(), 1, "nothing but the summary: {}", run.stdout);
    let (code, found) = fleet.findings(&["--rev", "HEAD"]);
    assert_eq!((code, found), (0, vec![]));
    let run = fleet.check(&["--format", "github", "--range", "HEAD~0..HEAD"]).expect(0);
    assert!(!run.stdout.contains("::error"), "{}", run.stdout);
    // A host named on the command line that the repository does not know runs the shared entrypoint.
    fleet.check(&["--host", "lb1.example.com", "--host", "web1.example.com"]).expect(0);
}

#[test]
fn rollout_every_bad_line_is_reported_with_its_line_as_hosts_refuse_it() {
    let Some(fleet) = Fleet::new(false) else { return };
    fleet.write(".gitops/rollout", "canary=web1, web9\nwindow=90\nspeed=fast\n");
    let head = fleet.commit("a bad policy");
    let (code, found) = fleet.findings(&["--rev", &head]);
    assert_eq!(code, FINDINGS);
    let lines: Vec<(Option<u64>, &str)> = found.iter().map(|f| (f.line, f.class.as_str())).collect();
    assert_eq!(lines, [(Some(1), "rollout"), (Some(2), "rollout"), (Some(3), "rollout")], "{found:#?}");
    assert!(found[0].message.contains("canary web9 is not a host of this repository"), "{found:#?}");
    assert!(found[1].message.contains("90 has no unit: did you mean 90s, 90m or 90h?"), "{found:#?}");
    assert!(found[2].message.contains("unknown key \"speed\""), "{found:#?}");
    // web1 is hosts/web1/, db1 is in .gitops/hosts; a host reporting its FQDN is its short name's host.
    fleet.write(".gitops/rollout", "canary=web1.example.com, db1, tag:canary\nwindow=90m\n");
    fleet.commit("fixed");
    assert_eq!(fleet.findings(&["--rev", "HEAD"]), (0, vec![]));

    // The same parser as the hosts': a host refuses the bad commit with the first of those lines.
    let bare = fleet.work.join("../origin.git");
    git(&fleet.work, &["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
    git(&bare, &["update-ref", "refs/heads/main", &head]);
    let host = Host::new(&fleet.work.join(".."), &format!("file://{}", bare.display()));
    let run = host.sync(&[]).expect(VERIFY_FAILED);
    assert!(run.stderr.contains(".gitops/rollout line 1:") || run.stderr.contains("line 2: window"), "{}", run.stderr);
}

#[test]
fn hosts_list_lines_that_are_no_host_name_are_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    fleet.write(".gitops/hosts", "db1\nlb 1\n").stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "hosts", Some(".gitops/hosts"), Some(2), "\"lb 1\" is not a host name");
}

#[test]
fn recipients_bad_lines_hosts_without_keys_and_keys_age_cannot_use_are_reported() {
    let Some(fleet) = Fleet::new(true) else { return };
    let recipients = fs::read_to_string(fleet.work.join(".gitops/recipients")).unwrap();
    fleet.write(".gitops/recipients", &format!("{recipients}db/ db1\n")).stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "recipients", Some(".gitops/recipients"), Some(4), "host db1 has no public key in hosts/db1");

    fleet.write(".gitops/recipients", &format!("{recipients}admin web1\n")).stage();
    exactly_one(&fleet.findings(&[]).1, "recipients", Some(".gitops/recipients"), Some(4), "expected `admin age1…`");

    fleet.write(".gitops/recipients", &format!("{recipients}extra/ ssh-ed25519 AAAAnotakey\n")).stage();
    exactly_one(&fleet.findings(&[]).1, "recipients", Some(".gitops/recipients"), Some(4), "not an ssh-ed25519");

    fleet.write(".gitops/recipients", &recipients).stage();
    assert_eq!(fleet.findings(&[]), (0, vec![]));
}

#[test]
fn an_entrypoint_executable_on_disk_but_not_in_git_is_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    // What core.fileMode=false or a Windows clone records: the disk says 755, Git says 644.
    git(&fleet.work, &["update-index", "--chmod=-x", "hosts/web1/run.sh"]);
    let mode = fs::metadata(fleet.work.join("hosts/web1/run.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "still executable on disk");
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "script", Some("hosts/web1/run.sh"), None, "not executable in Git");
    assert!(found[0].message.contains("git update-index --chmod=+x hosts/web1/run.sh"), "{found:#?}");
    // Only web1 runs it: with --host web2 it is not looked at.
    fleet.check(&["--host", "web2"]).expect(0);
    git(&fleet.work, &["update-index", "--chmod=+x", "hosts/web1/run.sh"]);
    fleet.check(&[]).expect(0);
}

#[test]
fn an_entrypoint_without_a_shebang_is_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    fleet.write("run.sh", RUN).stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "script", Some("run.sh"), Some(1), "has no #! line");
    fleet.write("run.sh", &format!("#!/bin/sh\r\n{RUN}")).stage();
    exactly_one(&fleet.findings(&[]).1, "script", Some("run.sh"), Some(1), "ends in a carriage return");
}

#[test]
fn a_syntax_error_is_reported_at_its_line_by_the_shell_the_shebang_names() {
    let Some(fleet) = Fleet::new(false) else { return };
    fleet.script("run.sh", "set -eu\nif [ -n \"${GITOPS_TAGS:-}\" ]; then\n  echo tagged\n").stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(
        &found,
        "script",
        Some("run.sh"),
        Some(5),
        "does not parse (sh -n: Syntax error: end of file unexpected",
    );
    let text = fleet.check(&[]).expect(FINDINGS).stdout;
    assert!(text.starts_with("run.sh:5: the entrypoint does not parse (sh -n: "), "{text}");

    // Arrays are bash: sh -n refuses them, bash -n (named by the #! line) does not.
    let arrays = "roles=(web db)\nfor r in \"${roles[@]}\"; do echo \"$r\"; done";
    fleet.script("run.sh", arrays).stage();
    exactly_one(&fleet.findings(&[]).1, "script", Some("run.sh"), Some(2), "sh -n: Syntax error");
    fleet.write("run.sh", &format!("#!/usr/bin/env bash\n{arrays}\n")).stage();
    assert_eq!(fleet.findings(&[]), (0, vec![]));
    fleet.write("run.sh", &format!("#!/bin/bash\n{arrays}\nfi\n")).stage();
    exactly_one(&fleet.findings(&[]).1, "script", Some("run.sh"), Some(4), "bash -n: syntax error");
}

#[test]
fn teardown_and_health_checks_are_checked_where_present_as_each_host_resolves_them() {
    let Some(fleet) = Fleet::new(false) else { return };
    fleet.script("teardown.sh", "case x in\n").stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "script", Some("teardown.sh"), Some(3), "the teardown does not parse");
    fleet.script("teardown.sh", "true").stage();

    // web1's own health check overrides the shared one, like its run.sh.
    fleet.write("hosts/web1/health.sh", "#!/bin/sh\ncurl -fsS localhost\n").stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "script", Some("hosts/web1/health.sh"), None, "the health check is not executable in Git");
    fleet.check(&["--host", "web2"]).expect(0);
    // Without a teardown or a health check there is nothing to check: they are optional.
    fs::remove_file(fleet.work.join("hosts/web1/health.sh")).unwrap();
    fs::remove_file(fleet.work.join("teardown.sh")).unwrap();
    fs::remove_file(fleet.work.join("health.sh")).unwrap();
    fleet.stage().check(&[]).expect(0);
}

#[test]
fn a_host_without_an_entrypoint_is_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    // web1 has its own; web2 and db1 fall back to the shared one, which is gone.
    fs::remove_file(fleet.work.join("run.sh")).unwrap();
    fleet.stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "script", Some("run.sh"), None, "no entrypoint for db1, web2");
    // --entrypoint names another one: then that is what must be there.
    let (_, found) = fleet.findings(&["--entrypoint", "bin/apply", "--host", "web1"]);
    exactly_one(&found, "script", Some("bin/apply"), None, "no entrypoint for web1");
}

#[test]
fn a_git_component_anywhere_in_a_commit_is_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    // git itself never writes one: a hand-made tree, as a hostile or broken tool could push.
    let blob = git_stdin(&fleet.work, &["hash-object", "-w", "--stdin"], "[core]\n");
    let roles = git_stdin(&fleet.work, &["mktree"], &format!("100644 blob {blob}\tconfig\n"));
    let mut top = git(&fleet.work, &["ls-tree", "HEAD"]);
    top.push_str(&format!("\n040000 tree {roles}\t.GIT\n"));
    let tree = git_stdin(&fleet.work, &["mktree"], &top);
    let commit = git(&fleet.work, &["commit-tree", &tree, "-p", "HEAD", "-m", "hostile"]);
    let (code, found) = fleet.findings(&["--rev", &commit]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "name", Some(".GIT"), None, "a .git component: every host refuses this commit");
    assert_eq!(fleet.findings(&["--rev", "HEAD"]), (0, vec![]));
}

#[test]
fn a_checkout_over_the_hosts_limits_is_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    let (code, found) = fleet.findings(&["--max-checkout-files", "5"]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "size", None, None, "more than --max-checkout-files 5");
    let (code, found) = fleet.findings(&["--max-checkout-size", "100"]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "size", None, None, "more than --max-checkout-size 100 bytes");
    // The hosts' own setting, from the same variable.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops"));
    cmd.arg("check").current_dir(&fleet.work);
    isolate(&mut cmd);
    let run: Run = cmd.env("GITOPS_MAX_CHECKOUT_FILES", "5").output().unwrap().into();
    assert_eq!(run.code, FINDINGS, "{}", run.stdout);
    fleet.check(&["--max-checkout-files", "100", "--max-checkout-size", "1M"]).expect(0);
}

#[test]
fn a_symlink_out_of_the_repository_is_reported() {
    let Some(fleet) = Fleet::new(false) else { return };
    std::os::unix::fs::symlink("../../../etc/nginx/nginx.conf", fleet.work.join("hosts/web2/nginx.conf")).unwrap();
    std::os::unix::fs::symlink("motd", fleet.work.join("hosts/web2/motd.link")).unwrap();
    fleet.stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "symlink", Some("hosts/web2/nginx.conf"), None, "leads out of the repository");
}

#[test]
fn a_secret_not_encrypted_to_a_host_that_is_given_it_is_reported() {
    let Some(fleet) = Fleet::new(true) else { return };
    // shared/ is for web1 and web2: written for web1 only.
    fleet.age("shared/token.age", &["web1"], true, false).stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "secret", Some("shared/token.age"), None, "not encrypted to web2, which .gitops/recipients");
}

#[test]
fn a_secret_still_encrypted_to_a_host_no_longer_given_it_is_reported() {
    let Some(fleet) = Fleet::new(true) else { return };
    let recipients = fs::read_to_string(fleet.work.join(".gitops/recipients")).unwrap();
    fleet.write(".gitops/recipients", &recipients.replace("web1 web2", "web1")).stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "secret", Some("shared/token.age"), None, "still encrypted to web2, which .gitops/recipients");
    // A key nobody in the repository has: named by its tag.
    let stranger = SigningKey::generate(&fleet.keys, "stranger", "ed25519");
    fleet.write(".gitops/recipients", &recipients).age("shared/token.age", &["web1", "web2", "stranger"], true, true);
    let (_, found) = fleet.stage().findings(&[]);
    exactly_one(&found, "secret", Some("shared/token.age"), None, "encrypted to an ssh-ed25519 key that is no host's");
    drop(stranger);
}

#[test]
fn age_x25519_recipients_are_counted_since_their_stanzas_name_nobody() {
    let Some(fleet) = Fleet::new(true) else { return };
    // The admin's age1… key is missing from web1's secret.
    fleet.age("hosts/web1/db.pass.age", &["web1"], false, false).stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "secret", Some("hosts/web1/db.pass.age"), None, "has 0 X25519 stanza(s) for 1 age1");
}

#[test]
fn a_secret_no_host_can_read_is_reported() {
    let Some(fleet) = Fleet::new(true) else { return };
    fleet.write("shared/token.age", "-----BEGIN AGE ENCRYPTED FILE-----\nnot really\n").stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "secret", Some("shared/token.age"), None, "not a valid age file");
    // One that matches no line of .gitops/recipients: nobody can tell whom it is for.
    fleet.age("shared/token.age", &["web1", "web2"], true, false).age("misc/note.age", &["web1"], true, false);
    let (_, found) = fleet.stage().findings(&[]);
    exactly_one(&found, "secret", Some("misc/note.age"), None, "no line of .gitops/recipients matches it");
}

#[test]
fn plaintext_committed_beside_its_secret_is_reported_but_not_an_untracked_one() {
    let Some(fleet) = Fleet::new(true) else { return };
    // `gitops secrets encrypt` leaves the plaintext; untracked, it is nobody's business but yours.
    fleet.write("shared/token", "value of shared/token.age\n");
    fleet.check(&[]).expect(0);
    git(&fleet.work, &["add", "shared/token"]);
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "plaintext", Some("shared/token"), None, "the plaintext of shared/token.age is committed");
}

#[test]
fn commits_not_signed_by_an_allowed_key_are_reported_as_hosts_verify_them() {
    let Some(fleet) = Fleet::new(false) else { return };
    if !tooling::available(&[tooling::SSH_KEYGEN]) {
        return;
    }
    let alice = SigningKey::generate(&fleet.keys, "alice", "ed25519");
    let signers = allowed_signers(&fleet.keys, &[alice.allowed("alice@example.com", "")]);
    let signers = signers.to_str().unwrap();
    let sign = |message: &str| {
        fleet.stage();
        let key = format!("user.signingkey={}", alice.private.display());
        git(&fleet.work, &["-c", "gpg.format=ssh", "-c", &key, "commit", "-q", "-S", "--allow-empty", "-m", message]);
        git(&fleet.work, &["rev-parse", "HEAD"])
    };
    let base = git(&fleet.work, &["rev-parse", "HEAD"]);
    sign("signed 1");
    fleet.write("hosts/web2/motd", "web2 again\n");
    let unsigned = fleet.commit("unsigned, between signed ones");
    let tip = sign("signed 2");
    let range = format!("{base}..{tip}");
    let (code, found) = fleet.findings(&["--range", &range, "--allowed-signers", signers]);
    assert_eq!(code, FINDINGS);
    let refused = errors(&found);
    assert_eq!(refused.len(), 1, "{found:#?}");
    assert_eq!(refused[0].class, "signature");
    assert!(refused[0].message.starts_with(&format!("commit {unsigned}: commit is not signed")), "{found:#?}");
    // The tip alone is signed; a new branch (old side all zeros) is its whole history, unsigned base included.
    fleet.check(&["--rev", &tip, "--allowed-signers", signers]).expect(0);
    let zeros = format!("{}..{tip}", "0".repeat(40));
    let (_, found) = fleet.findings(&["--range", &zeros, "--allowed-signers", signers]);
    assert_eq!(errors(&found).len(), 2, "{found:#?}");
    let run = fleet.check(&["--range", &range, "--allowed-signers", signers]);
    assert!(run.stdout.lines().last().unwrap().contains("3 commits verified"), "{}", run.stdout);
}

#[test]
fn the_index_is_checked_not_the_disk_and_a_hooks_git_index_file_is_honoured() {
    let Some(fleet) = Fleet::new(false) else { return };
    // Broken on disk, not staged: `git commit` would record the good version.
    fleet.script("run.sh", "if true; then");
    fleet.check(&[]).expect(0);
    fleet.stage().check(&[]).expect(FINDINGS);
    // `git commit -o FILE` commits from a temporary index holding HEAD plus FILE and gives hooks its path as
    // GIT_INDEX_FILE: the broken run.sh staged in the real index is not part of that commit.
    let hook = fleet.work.join(".git/hooks/pre-commit");
    fs::write(&hook, "#!/bin/sh\nexec gitops check\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    fleet.write("hosts/web2/motd", "web2, updated\n");
    let commit = |args: &[&str]| -> Output {
        let mut cmd = Command::new("git");
        cmd.current_dir(&fleet.work).env("PATH", path_with_gitops()).args(["commit", "-q", "-m", "x"]).args(args);
        isolate(&mut cmd);
        cmd.env("GIT_AUTHOR_NAME", "T").env("GIT_AUTHOR_EMAIL", "t@example.invalid");
        cmd.env("GIT_COMMITTER_NAME", "T").env("GIT_COMMITTER_EMAIL", "t@example.invalid");
        cmd.output().unwrap()
    };
    let only = commit(&["-o", "hosts/web2/motd"]);
    assert!(
        only.status.success(),
        "{}{}",
        String::from_utf8_lossy(&only.stdout),
        String::from_utf8_lossy(&only.stderr)
    );
    let all = commit(&[]);
    assert!(!all.status.success(), "the hook stops the commit of the broken run.sh");
    // git shows what a hook prints on its stderr.
    let said = String::from_utf8_lossy(&all.stderr);
    assert!(said.contains("run.sh:2: the entrypoint does not parse"), "{said}");
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let Some(fleet) = Fleet::new(false) else { return };
    let outside = tempdir();
    let run = gitops_check(outside.path(), &[]).expect(USAGE);
    assert!(run.stderr.contains("not in a Git repository"), "{}", run.stderr);
    let run = fleet.check(&["--rev", "no-such-branch"]).expect(USAGE);
    assert!(run.stderr.contains("\"no-such-branch\" does not name an object"), "{}", run.stderr);
    let run = fleet.check(&["--rev", "HEAD:run.sh"]).expect(USAGE);
    assert!(run.stderr.contains("is not a commit"), "{}", run.stderr);
    let run = fleet.check(&["--range", "HEAD"]).expect(USAGE);
    assert!(run.stderr.contains("is not A..B"), "{}", run.stderr);
    let run = fleet.check(&["--allowed-signers", "/dev/null"]).expect(USAGE);
    assert!(run.stderr.contains("--allowed-signers needs --rev or --range"), "{}", run.stderr);
    fleet.check(&["--max-checkout-size", "lots"]).expect(USAGE);
    fleet.check(&["--path", "../elsewhere"]).expect(USAGE);
    fleet.check(&["--rev", "HEAD", "--range", "HEAD..HEAD"]).expect(USAGE);
}

#[test]
fn a_config_root_below_the_repository_is_read_as_hosts_with_that_path_read_it() {
    let Some(fleet) = Fleet::new(false) else { return };
    fs::create_dir_all(fleet.work.join("fleets")).unwrap();
    git(&fleet.work, &["mv", "run.sh", "hosts", ".gitops", "teardown.sh", "health.sh", "fleets/"]);
    fleet.check(&["--path", "./fleets"]).expect(0);
    fleet.write("fleets/.gitops/rollout", "window=2\n").stage();
    let (_, found) = fleet.findings(&["--path", "fleets"]);
    exactly_one(&found, "rollout", Some("fleets/.gitops/rollout"), Some(1), "2 has no unit");
    // From the repository root's point of view there is no entrypoint at all.
    let (_, found) = fleet.findings(&[]);
    exactly_one(&found, "script", Some("run.sh"), None, "the entrypoint is missing");
}

/// `git ARGS` with `input` on stdin; its trimmed stdout.
fn git_stdin(dir: &Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The fenced block of the README whose first line is `first_line` (a file name as a comment).
fn readme_block(first_line: &str) -> String {
    let mut lines = README.lines().skip_while(|l| *l != first_line);
    let block: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
    assert!(!block.is_empty(), "the README has a block starting with {first_line:?}");
    block.join("\n") + "\n"
}

/// `text` (YAML) as JSON, read by PyYAML from the pre-commit venv: the parser real tools use.
fn yaml(text: &str) -> Value {
    let pre_commit = tooling::find("pre-commit").expect("pre-commit, gated by the caller");
    let python = pre_commit.parent().unwrap().join("python3");
    let mut child = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML does not parse:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A command in the fleet's working clone with gitops and the venv's tools on PATH, git isolated.
fn in_fleet(fleet: &Fleet, program: &str) -> Command {
    let mut cmd = Command::new(program);
    let venv = tooling::find("pre-commit").map(|p| p.parent().unwrap().display().to_string()).unwrap_or_default();
    cmd.current_dir(&fleet.work).env("PATH", format!("{venv}:{}", path_with_gitops()));
    isolate(&mut cmd);
    cmd.env("PRE_COMMIT_HOME", fleet.keys.join("pre-commit-cache"));
    for (key, value) in [("NAME", "T"), ("EMAIL", "t@example.invalid")] {
        cmd.env(format!("GIT_AUTHOR_{key}"), value).env(format!("GIT_COMMITTER_{key}"), value);
    }
    cmd
}

/// Both outputs of a finished command, for messages and assertions.
fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_pre_commit_framework_runs_the_hook_from_the_readme_and_from_contrib() {
    if !tooling::available(&[tooling::PRE_COMMIT]) {
        return;
    }
    let Some(fleet) = Fleet::new(false) else { return };
    // The README's `repo: local` hook, installed as people do: pre-commit install, then git commit.
    let config = readme_block("# .pre-commit-config.yaml");
    assert_eq!(yaml(&config)["repos"][0]["hooks"][0]["entry"], "gitops check");
    fleet.write(".pre-commit-config.yaml", &config);
    fleet.commit("pre-commit");
    let install = in_fleet(&fleet, "pre-commit").arg("install").output().unwrap();
    assert!(install.status.success(), "{}", said(&install));
    let commit = |message: &str| in_fleet(&fleet, "git").args(["commit", "-q", "-m", message]).output().unwrap();

    fleet.script("run.sh", "case \"$GITOPS_TAGS\" in\n").stage();
    let refused = commit("broken run.sh");
    assert!(!refused.status.success(), "the hook stops the commit: {}", said(&refused));
    assert!(said(&refused).contains("run.sh:3: the entrypoint does not parse (sh -n:"), "{}", said(&refused));
    let before = git(&fleet.work, &["rev-parse", "HEAD"]);
    fleet.script("run.sh", "case \"$GITOPS_TAGS\" in\n*) ;;\nesac").stage();
    let passed = commit("fixed run.sh");
    assert!(passed.status.success(), "{}", said(&passed));
    assert_ne!(git(&fleet.work, &["rev-parse", "HEAD"]), before, "the good commit was made");

    // contrib/'s .pre-commit-hooks.yaml, as the root of a hook repository named by repo: and rev:.
    let hooks = yaml(PRE_COMMIT_HOOKS);
    assert_eq!(hooks[0]["id"], "gitops-check");
    // The README's copy says what the shipped hook says (which adds a description and its stages).
    let local = yaml(&config)["repos"][0]["hooks"][0].clone();
    let mut shipped = hooks[0].clone();
    shipped.as_object_mut().unwrap().retain(|key, _| local.get(key).is_some());
    assert_eq!(shipped, local, "the README's hook is contrib's");
    let hook_repo = fleet.keys.join("hook-repo");
    fs::create_dir_all(&hook_repo).unwrap();
    git(&hook_repo, &["init", "-q", "-b", "main"]);
    fs::write(hook_repo.join(".pre-commit-hooks.yaml"), PRE_COMMIT_HOOKS).unwrap();
    git(&hook_repo, &["add", "-A"]);
    git(&hook_repo, &["commit", "-q", "-m", "hooks"]);
    let rev = git(&hook_repo, &["rev-parse", "HEAD"]);
    let config =
        format!("repos:\n  - repo: {}\n    rev: {rev}\n    hooks:\n      - id: gitops-check\n", hook_repo.display());
    fleet.write(".pre-commit-config.yaml", &config).stage();
    fleet.write(".gitops/rollout", "canary=web1\nwindow=45\n").stage();
    let run = in_fleet(&fleet, "pre-commit").args(["run", "gitops-check"]).output().unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", said(&run));
    assert!(said(&run).contains(".gitops/rollout:2: window \"45\": 45 has no unit"), "{}", said(&run));
    fleet.write(".gitops/rollout", "canary=web1\nwindow=45m\n").stage();
    let run = in_fleet(&fleet, "pre-commit").args(["run", "gitops-check"]).output().unwrap();
    assert!(run.status.success(), "{}", said(&run));
}

#[test]
fn the_pre_push_hook_refuses_a_push_the_fleet_would_refuse() {
    let Some(fleet) = Fleet::new(false) else { return };
    let bare = fleet.keys.join("origin.git");
    git(&fleet.work, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    git(&fleet.work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let hook = fleet.work.join(".git/hooks/pre-push");
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(PRE_PUSH), &hook).unwrap();
    let push = |args: &[&str]| in_fleet(&fleet, "git").args(["push", "-q", "origin"]).args(args).output().unwrap();
    let remote_main = || git(&bare, &["rev-parse", "--verify", "-q", "refs/heads/main"]);

    // A new branch: the pushed commit alone.
    let first = push(&["main"]);
    assert!(first.status.success(), "{}", said(&first));
    fleet.write(".gitops/rollout", "canary=web1\npace=fast\n");
    let bad = fleet.commit("a typo in the policy");
    let refused = push(&["main"]);
    assert!(!refused.status.success(), "{}", said(&refused));
    assert!(said(&refused).contains(".gitops/rollout:2: unknown key \"pace\""), "{}", said(&refused));
    assert_ne!(remote_main(), bad, "nothing reached the remote");
    let refused = push(&["main:refs/heads/other"]);
    assert!(!refused.status.success(), "a new branch is checked too: {}", said(&refused));

    fleet.write(".gitops/rollout", "canary=web1\npause=yes\n");
    let good = fleet.commit("pause the rollout");
    let pushed = push(&["main"]);
    assert!(pushed.status.success(), "{}", said(&pushed));
    assert_eq!(remote_main(), good);
    // Deleting a branch sends nothing to the hosts.
    let created = in_fleet(&fleet, "git").args(["push", "-q", "--no-verify", "origin", "main:gone"]).output().unwrap();
    assert!(created.status.success());
    let deleted = push(&[":gone"]);
    assert!(deleted.status.success(), "{}", said(&deleted));
}

#[test]
fn the_ci_steps_in_the_readme_run_and_fail_on_findings() {
    if !tooling::available(&[tooling::PRE_COMMIT]) {
        return;
    }
    let Some(fleet) = Fleet::new(false) else { return };
    let github = yaml(&readme_block("# .github/workflows/gitops-check.yml"));
    let steps = github["jobs"]["check"]["steps"].as_array().unwrap();
    let step = steps.iter().find(|s| s["name"] == "gitops check").expect("a step named gitops check");
    let github_run = step["run"].as_str().unwrap().to_string();
    let gitlab = yaml(&readme_block("# .gitlab-ci.yml"));
    let gitlab_script: Vec<String> =
        gitlab["gitops-check"]["script"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().into()).collect();
    assert!(!gitlab_script.is_empty());

    // Each runs as its runner would: bash -e with the runner's variables, in a checkout of the pushed commit.
    let run_steps = |expect: i32| {
        let head = git(&fleet.work, &["rev-parse", "HEAD"]);
        let out = in_fleet(&fleet, "bash").args(["-e", "-c", &github_run]).env("GITHUB_SHA", &head).output().unwrap();
        assert_eq!(out.status.code(), Some(expect), "GitHub step: {}", said(&out));
        let annotations = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut gitlab_out = String::new();
        let mut code = 0;
        for line in &gitlab_script {
            let out = in_fleet(&fleet, "bash")
                .args(["-e", "-c", line])
                .env("CI_COMMIT_BEFORE_SHA", "0".repeat(40))
                .env("CI_COMMIT_SHA", &head)
                .output()
                .unwrap();
            gitlab_out.push_str(&said(&out));
            code = out.status.code().unwrap_or(-1);
            if code != 0 {
                break;
            }
        }
        assert_eq!(code, expect, "GitLab script: {gitlab_out}");
        (annotations, gitlab_out)
    };
    run_steps(0);
    fleet.script("hosts/web1/run.sh", "exec ./run.sh\nfi");
    fleet.commit("a stray fi");
    let (annotations, gitlab_out) = run_steps(FINDINGS);
    assert!(
        annotations.contains(
            "::error file=hosts/web1/run.sh,line=3,title=gitops check (script)::the entrypoint does not parse"
        ),
        "{annotations}"
    );
    assert!(gitlab_out.contains("hosts/web1/run.sh:3: the entrypoint does not parse"), "{gitlab_out}");
}

#[test]
fn what_cannot_be_checked_is_a_note_that_does_not_fail_the_check() {
    let Some(fleet) = Fleet::new(false) else { return };
    // No shell on PATH (a bare CI image): the scripts are checked for all but their syntax, and that is said.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops"));
    cmd.args(["check", "--format", "json"]).current_dir(&fleet.work);
    isolate(&mut cmd);
    let run: Run = cmd.env("PATH", fleet.keys.join("empty")).output().unwrap().into();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let notes: Vec<Found> = doc["findings"].as_array().unwrap().iter().map(Found::from).collect();
    assert_eq!((doc["clean"].as_bool(), doc["notes"].as_u64()), (Some(true), Some(4)), "{notes:#?}");
    assert!(notes.iter().all(|n| n.level == "note" && n.message.contains("its shell sh is not installed")));
    // The #! line's directory is not used to find the shell: only PATH.
    fleet.script("run.sh", "if").write("run.sh", "#!/nonexistent/bin/sh\nif\n").stage();
    let (code, found) = fleet.findings(&[]);
    assert_eq!(code, FINDINGS);
    exactly_one(&found, "script", Some("run.sh"), Some(2), "sh -n:");
}
