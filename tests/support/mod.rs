//! Fixtures for the integration tests: real repositories made with the git CLI and a host running the built binary.

pub mod nginx;
pub mod prom;
pub mod servers;
pub mod tooling;
pub mod webhook;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Exit codes of the documented contract.
pub const UP_TO_DATE: i32 = 0;
pub const RUNTIME_ERROR: i32 = 1;
pub const USAGE: i32 = 2;
pub const APPLIED: i32 = 10;
pub const NEED_PUSH: i32 = 20;
pub const DIVERGED: i32 = 21;
pub const APPLY_FAILED: i32 = 30;
pub const LOCKED: i32 = 75;
pub const VERIFY_FAILED: i32 = 31;

/// Run the git CLI isolated from the user's configuration; panic with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = git_command(dir).args(args).output().expect("running git");
    assert!(
        output.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid");
    cmd
}

/// A bare "origin" repository plus a working clone that commits and pushes to it.
pub struct Remote {
    /// The bare repository hosts fetch from.
    pub bare: PathBuf,
    /// The clone commits are made in.
    pub work: PathBuf,
}

impl Remote {
    /// Create `root/origin.git` (default branch main) and `root/work`.
    pub fn new(root: &Path) -> Remote {
        let bare = root.join("origin.git");
        let work = root.join("work");
        fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote { bare, work }
    }

    /// A remote whose first commit has an executable `run.sh` with `script` as its body.
    pub fn with_script(root: &Path, script: &str) -> Remote {
        let remote = Remote::new(root);
        remote.script("run.sh", script);
        remote.commit("initial");
        remote
    }

    /// Write a file in the working clone.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let file = self.work.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, content).unwrap();
        self
    }

    /// Write an executable shell script (a `#!/bin/sh` line is added).
    pub fn script(&self, path: &str, body: &str) -> &Self {
        self.write(path, &format!("#!/bin/sh\n{body}\n"));
        fs::set_permissions(self.work.join(path), fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Create a symlink in the working clone.
    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        std::os::unix::fs::symlink(target, self.work.join(path)).unwrap();
        self
    }

    /// Delete a file from the working clone.
    pub fn remove(&self, path: &str) -> &Self {
        fs::remove_file(self.work.join(path)).unwrap();
        self
    }

    /// Commit everything and push main; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.commit_with(message, &[])
    }

    /// Commit everything signed by `key` (git's own `gpg.format=ssh` signing) and push main.
    pub fn commit_signed(&self, message: &str, key: &SigningKey) -> String {
        let key = key.private.to_str().unwrap();
        self.commit_with(message, &["-c", "gpg.format=ssh", "-c", &format!("user.signingkey={key}"), "commit", "-S"])
    }

    /// Commit with extra git arguments (`-c k=v …`, then the subcommand) and push main.
    fn commit_with(&self, message: &str, prefix: &[&str]) -> String {
        git(&self.work, &["add", "-A"]);
        let mut args: Vec<&str> = prefix.to_vec();
        if !args.contains(&"commit") {
            args.push("commit");
        }
        args.extend_from_slice(&["-q", "--allow-empty", "-m", message]);
        git(&self.work, &args);
        git(&self.work, &["push", "-q", "origin", "main"]);
        self.head()
    }

    /// The working clone's HEAD commit.
    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Reset main to `rev` and force-push it (rewind or rewrite history).
    pub fn force_push(&self, rev: &str) {
        git(&self.work, &["reset", "-q", "--hard", rev]);
        git(&self.work, &["push", "-q", "--force", "origin", "main"]);
    }

    /// file:// URL of the bare repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// A host: a state directory and the flags every run gets.
pub struct Host {
    /// The state directory.
    pub state: PathBuf,
    /// Where entrypoints in tests write what they saw (exported as TEST_OUT).
    pub out: PathBuf,
    url: String,
    env: Vec<(String, String)>,
}

/// The result of one `gitops` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error (the log).
    pub stderr: String,
}

impl Run {
    /// Assert the exit code, showing the log when it differs.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code; stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Host {
    /// A host in `root/host` syncing from `url`.
    pub fn new(root: &Path, url: &str) -> Host {
        let host_dir = root.join("host");
        fs::create_dir_all(&host_dir).unwrap();
        Host { state: host_dir.join("state"), out: host_dir.join("out"), url: url.to_string(), env: Vec::new() }
    }

    /// Set an environment variable for every run.
    pub fn env(mut self, key: &str, value: &str) -> Host {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command for `gitops ARGS` with this host's environment, isolated from the machine's config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitops"));
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env("GITOPS_CONFIG", "/dev/null")
            .env("TEST_OUT", &self.out)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Run `gitops sync` against this host's remote with `extra` flags.
    pub fn sync(&self, extra: &[&str]) -> Run {
        let state = self.state.to_str().unwrap();
        let mut args = vec!["sync", "--repo-url", &self.url, "--state-dir", state, "--host", "testhost"];
        args.extend_from_slice(extra);
        self.command(&args).output().expect("running gitops").into()
    }

    /// `sync` killed (as by `kill -9`) at the failpoint `point`; fails the test when it was not.
    pub fn sync_killed_at(&self, point: &str) -> Run {
        let state = self.state.to_str().unwrap();
        let args = ["sync", "--repo-url", &self.url, "--state-dir", state, "--host", "testhost"];
        let killed: Run = self.command(&args).env("GITOPS_TEST_FAILPOINT", point).output().unwrap().into();
        assert_eq!(killed.code, -1, "{point}: the failpoint kills the run: {}", killed.stderr);
        killed
    }

    /// `sync`, failing the test (instead of hanging it) when the run does not end within `limit`.
    pub fn sync_within(&self, extra: &[&str], limit: std::time::Duration) -> Run {
        let state = self.state.to_str().unwrap();
        let mut args = vec!["sync", "--repo-url", &self.url, "--state-dir", state, "--host", "testhost"];
        args.extend_from_slice(extra);
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut child = self
            .command(&args)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .expect("running gitops");
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gitops sync hung for {limit:?}; log:\n{}", fs::read_to_string(&err).unwrap_or_default());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(&out).unwrap_or_default(),
            stderr: fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// Parsed state.json.
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.state.join("state.json")).expect("state.json exists")).unwrap()
    }

    /// The applied commit recorded in state.json.
    pub fn applied(&self) -> Option<String> {
        self.state_json()["applied_commit"].as_str().map(String::from)
    }

    /// The commit the `current` symlink points at.
    pub fn current(&self) -> Option<String> {
        let target = fs::read_link(self.state.join("current")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// Lines the entrypoints wrote to TEST_OUT.
    pub fn out_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.out).unwrap_or_default().lines().map(String::from).collect()
    }

    /// Everything in the state dir except run bookkeeping (cache repository, lock, ssh.log, last_run.json), with sizes and file mtimes
    /// (a directory's mtime moves when a temp entry comes and goes): equal snapshots mean nothing changed.
    pub fn snapshot(&self) -> Vec<(PathBuf, u64, std::time::SystemTime, Option<PathBuf>)> {
        let mut entries = Vec::new();
        let mut stack = vec![self.state.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(listing) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in listing {
                let entry = entry.unwrap();
                let path = entry.path();
                let rel = path.strip_prefix(&self.state).unwrap().to_path_buf();
                if ["cache.git", "lock", "ssh.log", "last_run.json"].iter().any(|scratch| rel == Path::new(scratch)) {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                let link = fs::read_link(&path).ok();
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                let modified = if meta.is_dir() { std::time::UNIX_EPOCH } else { meta.modified().unwrap() };
                entries.push((rel, meta.len(), modified, link));
            }
        }
        entries.sort();
        entries.push((
            PathBuf::from("TEST_OUT"),
            fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0),
            std::time::UNIX_EPOCH,
            None,
        ));
        entries
    }
}

/// Whether the tests run as root (mounts, chown and port 22 need it).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// The current user's name, as ssh logs in.
pub fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().expect("running id").stdout).unwrap().trim().to_string()
}

/// A fresh `root/sshd` directory for an `Sshd`'s keys and config.
pub fn sshd_dir(root: &Path) -> PathBuf {
    let dir = root.join("sshd");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("gitops-test-").tempdir().expect("creating a temp dir")
}

/// The script body most tests use: record the commit and the previous one.
pub const RECORD: &str = r#"echo "applied $GITOPS_COMMIT prev=$GITOPS_PREVIOUS_COMMIT" >> "$TEST_OUT""#;

/// An SSH key pair made with ssh-keygen, for signing commits.
pub struct SigningKey {
    /// The private key file.
    pub private: PathBuf,
    /// `keytype base64` of the public key.
    pub public: String,
}

impl SigningKey {
    /// Generate a key of `kind` (ed25519, ecdsa, rsa) as `dir/name` (gate on `tooling::SSH_KEYGEN`).
    pub fn generate(dir: &Path, name: &str, kind: &str) -> SigningKey {
        let private = dir.join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
            .arg(&private)
            .status()
            .expect("running ssh-keygen");
        assert!(status.success(), "ssh-keygen -t {kind}");
        let public_line = fs::read_to_string(private.with_extension("pub")).unwrap();
        let public = public_line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        SigningKey { private, public }
    }

    /// An allowed_signers line for this key with `options` (may be empty).
    pub fn allowed(&self, principal: &str, options: &str) -> String {
        if options.is_empty() {
            format!("{principal} {}\n", self.public)
        } else {
            format!("{principal} {options} {}\n", self.public)
        }
    }

    /// The key's SHA256 fingerprint as ssh-keygen prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.private.with_extension("pub"))
    }
}

/// The SHA256 fingerprint ssh-keygen prints for the first key in a public-key or known_hosts file.
pub fn fingerprint_of(path: &Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(path).output().expect("running ssh-keygen");
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("a fingerprint").to_string()
}

/// Write an allowed_signers file (mode 0644) from lines.
pub fn allowed_signers(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("allowed_signers");
    fs::write(&path, lines.concat()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Remember this thread's panic message, so a guard that prints pages of logs while unwinding
/// can repeat the failure at the end, where a truncated CI log still shows it.
pub fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = format!("{info}");
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
            default(info);
        }));
    });
}

/// The message of the panic this thread is unwinding from, when `record_panics` was called first.
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}
