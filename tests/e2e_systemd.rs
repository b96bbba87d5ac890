//! gitops under a real systemd: boot Debian bookworm with systemd as PID 1 in a
//! `systemd-nspawn --boot` container with gitops installed unchanged — by
//! `gitops install-units --enable` as an image build does, or from the .deb with dpkg — only
//! the timer's delays shortened by a drop-in, and watch from the container's journal and state:
//! the timer applies the first commit and then a pushed one; a reboot requested through Git
//! happens exactly once (nspawn exits 133, the container is booted again, as
//! systemd-nspawn@.service would) and not again after the host is back.
//!
//! Needs root, debootstrap and systemd-nspawn (package systemd-container). Without them the test
//! says it is skipped, unless GITOPS_TEST_STRICT=1 (set by tests/run) turns that into a failure.
//! The rootfs is built once by tests/e2e/make-rootfs.sh and cached (see support/tooling.rs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{Remote, tooling};

/// The entrypoint: records each commit in /etc (the service may change the host) and logs a line;
/// installs the secret when the commit has one, and echoes it (gitops must hide it from the journal).
const RUN_SH: &str = r#"set -eu
mkdir -p /etc/gitops-e2e
echo "$GITOPS_COMMIT" >> /etc/gitops-e2e/applied
echo "e2e: applied $GITOPS_COMMIT on $GITOPS_HOSTNAME"
if [ -n "${GITOPS_SECRETS_DIR:-}" ]; then
  echo "$GITOPS_SECRETS_DIR" > /etc/gitops-e2e/secrets-dir
  cp "$GITOPS_SECRETS_DIR/e2e-token" /etc/gitops-e2e/token
  echo "e2e: token $(cat "$GITOPS_SECRETS_DIR/e2e-token")"
fi"#;

/// The secret the first commit carries, encrypted to the container's SSH host key.
const SECRET: &str = "e2e-secret-value-4242";

/// The only change to the shipped units: fire 1 s after boot, then every 3 s, without jitter.
const TIMER_DROP_IN: &str = "[Timer]
OnBootSec=
OnBootSec=1s
OnUnitActiveSec=3s
RandomizedDelaySec=0
AccuracySec=1s
";

/// What the scenario with a secret needs besides the rootfs: a host key and the age CLI to encrypt to it.
fn rootfs_and_secrets() -> Vec<tooling::Need> {
    [tooling::ROOTFS, &[tooling::SSH_KEYGEN, tooling::AGE]].concat()
}

#[test]
fn timer_applies_first_and_pushed_commits_under_real_systemd() {
    if !tooling::available(&rootfs_and_secrets()) {
        return;
    }
    let dir = support::tempdir();
    let root = install_with_install_units(dir.path());
    boot_and_apply_two_commits(dir.path(), &root);
}

#[test]
fn reboot_requested_through_git_happens_exactly_once() {
    if !tooling::available(tooling::ROOTFS) {
        return;
    }
    let dir = support::tempdir();
    let root = install_with_install_units(dir.path());
    configure(&root);
    let remote = Remote::with_script(dir.path(), RUN_SH);
    let first = remote.head();
    let mut container = Container::boot(&root, &remote.bare, dir.path());
    container.wait_for_applied(&first, Duration::from_secs(60));

    // "Reboot every host that booted before now": T is now, after this container's boot time
    // (which, in a container, is the host kernel's). The default --reboot-command,
    // `systemctl reboot --no-block`, reboots the container and nspawn exits 133.
    let not_before = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    remote.write(".gitops/reboot", &format!("{not_before}\ne2e reboot\n"));
    let second = remote.commit("reboot the fleet");
    let status = container.wait_for_exit(Duration::from_secs(60));
    assert_eq!(status, Some(133), "the container rebooted (nspawn exits 133)");
    assert_eq!(container.state().unwrap()["applied_commit"], second.as_str());

    // Boot it again. The first run after the boot records the reboot and does not reboot again,
    // nor do the runs after it.
    let mut container = Container::boot(&root, &remote.bare, dir.path());
    container.wait_for_journal("rebooted for the reboot request", Duration::from_secs(60));
    let runs_after =
        |c: &Container| c.journal(&["-u", "gitops.service", "-b", "0"]).matches("Starting gitops.service").count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_after(&container) < 3 {
        assert!(Instant::now() < deadline, "the timer keeps running after the reboot");
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = container.power_off();
    assert_eq!(status, Some(0), "still up after 3 runs: no second reboot; SIGTERM powers it off");

    let boots = container.journal(&["--list-boots"]);
    assert_eq!(
        boots.lines().filter(|l| l.split_whitespace().next().is_some_and(|idx| idx.parse::<i32>().is_ok())).count(),
        2,
        "exactly two boots:\n{boots}"
    );
    let state = container.state().expect("state.json");
    let last = &state["reboot"]["last"];
    assert_eq!(last["request"]["not_before"], not_before.as_str(), "{state:#}");
    assert!(last["rebooted_into"].is_string(), "the reboot is recorded: {state:#}");
    assert_eq!(
        fs::read_to_string(root.join("etc/gitops-e2e/applied")).unwrap(),
        format!("{first}\n{second}\n"),
        "the reboot commit was applied once, before the reboot"
    );
    let service = container.journal(&["-u", "gitops.service"]);
    assert_eq!(service.matches("gitops::reboot: rebooted for the reboot request").count(), 1, "{service}");
    assert_eq!(service.matches("gitops::reboot: rebooting for").count(), 1, "{service}");
    // The boot time is when PID 1 started, so the container's reboot satisfies the request by
    // construction (the kernel's btime alone is the host's, still before T): no guard was needed.
    assert!(!service.contains("already rebooted for the reboot request"), "{service}");
}

#[test]
fn deb_package_installs_with_dpkg_and_applies_under_systemd() {
    if !tooling::available(&[rootfs_and_secrets(), vec![tooling::CARGO_DEB]].concat()) {
        return;
    }
    let dir = support::tempdir();
    let deb = build_deb(dir.path());
    let root = dir.path().join("root");
    tooling::rootfs_copy(&root);
    fs::copy(&deb, root.join("tmp/gitops.deb")).unwrap();
    chroot(&root, &["dpkg", "-i", "/tmp/gitops.deb"]);

    // The package's layout, as dpkg recorded it.
    let listed = chroot(&root, &["dpkg", "-L", "gitops"]);
    for path in [
        "/usr/bin/gitops",
        "/usr/lib/systemd/system/gitops.service",
        "/usr/lib/systemd/system/gitops.timer",
        "/etc/gitops/gitops.env",
        "/usr/share/man/man1/gitops.1.gz",
        "/usr/share/man/man1/gitops-sync.1.gz",
        "/usr/share/bash-completion/completions/gitops",
        "/usr/share/zsh/vendor-completions/_gitops",
        "/usr/share/fish/vendor_completions.d/gitops.fish",
    ] {
        assert!(listed.lines().any(|l| l == path), "{path} in the package:\n{listed}");
    }
    // Exactly the units in systemd/, unchanged.
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gitops"))
            .collect();
        names.sort();
        names
    };
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let installed = root.join("usr/lib/systemd/system");
    assert_eq!(names(&installed), names(&shipped));
    for unit in names(&shipped) {
        assert_eq!(
            fs::read(installed.join(&unit)).unwrap(),
            fs::read(shipped.join(&unit)).unwrap(),
            "{unit} is shipped unchanged"
        );
    }
    let conffiles = chroot(&root, &["dpkg-query", "-W", "-f=${Conffiles}", "gitops"]);
    assert!(conffiles.contains("/etc/gitops/gitops.env"), "{conffiles}");
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("etc/gitops"), 0o700, "postinst locks /etc/gitops down");
    assert_eq!(mode("etc/gitops/gitops.env"), 0o600);
    assert!(
        !root.join("etc/systemd/system/timers.target.wants/gitops.timer").exists(),
        "installing does not enable the timer before it is configured"
    );

    // The operator's steps: configure, enable (offline, as in an image build), boot.
    chroot(&root, &["systemctl", "enable", "gitops.timer"]);
    boot_and_apply_two_commits(dir.path(), &root);
}

/// Build the .deb from the test build's binary, with the man pages and completions it generates.
fn build_deb(dir: &Path) -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| manifest_dir.join("target"));
    for (what, out) in [("man", "assets/man"), ("completions", "assets/completions")] {
        let generated = Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["generate", what, "--out"])
            .arg(target.join(out))
            .output()
            .unwrap();
        assert!(generated.status.success());
    }
    // --profile dev packages the binary this test run built (target/debug) instead of building
    // a release: the layout is what is tested here, `just dist` makes the real thing.
    let out = tooling::command("cargo-deb")
        .args(["--no-build", "--profile", "dev", "--fast", "--quiet", "--output"])
        .arg(dir)
        .current_dir(manifest_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo deb:\n{}", String::from_utf8_lossy(&out.stderr));
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb")
}

/// Run a command in `root` with chroot (no boot); panics with its output if it fails.
pub(crate) fn chroot(root: &Path, args: &[&str]) -> String {
    let out =
        Command::new("chroot").arg(root).args(args).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").output().unwrap();
    assert!(
        out.status.success(),
        "chroot {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A rootfs copy with gitops installed the way an image build does: the binary in /usr/bin,
/// then `gitops install-units --enable --root` from the host.
/// Run a freshly copied binary: while another test thread forks, its child briefly holds our write
/// descriptor of the copy, and exec fails with "Text file busy" (ETXTBSY) until that child execs.
fn output_retrying_busy(command: &mut Command) -> std::process::Output {
    for _ in 0..100 {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return result.expect("running the copied binary"),
        }
    }
    panic!("the copied binary stayed busy (ETXTBSY) for 2 s");
}

fn install_with_install_units(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    tooling::rootfs_copy(&root);
    let bin = root.join("usr/bin/gitops");
    fs::copy(env!("CARGO_BIN_EXE_gitops"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let installed = output_retrying_busy(
        Command::new(&bin).args(["install-units", "--enable", "--root"]).arg(&root).env("GITOPS_CONFIG", "/dev/null"),
    );
    assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
    root
}

/// The operator's part: the env file, and the timer's drop-in (the only change to the units).
fn configure(root: &Path) {
    write(&root.join("etc/systemd/system/gitops.timer.d/e2e.conf"), TIMER_DROP_IN);
    write(&root.join("etc/gitops/gitops.env"), "GITOPS_REPO_URL=/srv/fleet.git\nGITOPS_BRANCH=main\n");
}

/// Give the container an SSH host key (gitops's default age identity) and return a remote whose
/// first commit has RUN_SH and `e2e-token.age`, encrypted to that key with the age CLI.
fn remote_with_a_secret(dir: &Path, root: &Path) -> Remote {
    let key = support::SigningKey::generate(dir, "ssh_host_ed25519_key", "ed25519");
    let ssh = root.join("etc/ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::copy(&key.private, ssh.join("ssh_host_ed25519_key")).unwrap();
    fs::set_permissions(ssh.join("ssh_host_ed25519_key"), fs::Permissions::from_mode(0o600)).unwrap();
    let remote = Remote::new(dir);
    remote.script("run.sh", RUN_SH);
    let mut age = tooling::command("age")
        .arg("-R")
        .arg(key.private.with_extension("pub"))
        .arg("-o")
        .arg(remote.work.join("e2e-token.age"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut age.stdin.take().unwrap(), SECRET.as_bytes()).unwrap();
    assert!(age.wait().unwrap().success(), "age -R");
    remote.commit("initial, with a secret");
    remote
}

/// The scenario both installs must pass: with gitops and its units in `root` and the timer
/// enabled, configure it, boot, and watch the timer apply two commits, then idle. The first
/// commit has a secret, decrypted with the host key into the unit's RuntimeDirectory.
pub(crate) fn boot_and_apply_two_commits(dir: &Path, root: &Path) {
    let started = Instant::now();
    configure(root);

    let remote = remote_with_a_secret(dir, root);
    let first = remote.head();
    let mut container = Container::boot(root, &remote.bare, dir);
    let booted = Instant::now();

    container.wait_for_applied(&first, Duration::from_secs(60));
    let first_applied = booted.elapsed();
    remote.write("motd", "pushed\n");
    let second = remote.commit("second");
    container.wait_for_applied(&second, Duration::from_secs(60));
    // One more tick: nothing new, exit 0.
    container.wait_for_journal("up-to-date (main", Duration::from_secs(30));
    // Judged before the power-off: a run it interrupts may fail in any way (killed, or its
    // repository unmounted under it), and that is the shutdown, not gitops.
    let service_before_power_off = container.journal(&["-u", "gitops.service"]);
    let status = container.power_off();
    assert_eq!(status, Some(0), "SIGTERM powers the container off cleanly");

    // From the container's own records.
    assert_eq!(
        fs::read_to_string(root.join("etc/gitops-e2e/applied")).unwrap(),
        format!("{first}\n{second}\n"),
        "each commit applied exactly once, by an entrypoint free to write /etc"
    );
    let state = container.state().expect("state.json");
    assert_eq!(state["last_attempt"]["result"], "applied");
    assert_eq!(state["last_attempt"]["previous_commit"], first.as_str());

    // systemd before 249 (Debian 11) names units in these lines by Description= alone.
    let timer = container.journal(&["-u", "gitops.timer"]);
    assert!(
        timer.lines().any(|l| l.contains("Started gitops") && l.contains("periodic pull of the fleet repository")),
        "timer started at boot:\n{timer}"
    );
    let service = container.journal(&["-u", "gitops.service"]);
    let runs = service
        .lines()
        .filter(|l| l.contains("Starting gitops") && l.contains("pull the fleet repository and apply it"))
        .count();
    assert!(runs >= 3, "the timer started the service at least 3 times:\n{service}");
    assert!(
        service.contains(&format!("e2e: applied {first}")) && service.contains(&format!("e2e: applied {second}")),
        "entrypoint output is in the journal:\n{service}"
    );
    assert!(service.contains(&format!("applied, was {}", &first[..12])), "gitops logged the second apply:\n{service}");
    // The secret: decrypted with the host key into RuntimeDirectory=gitops, read by the entrypoint,
    // hidden from the journal and absent from the state directory.
    assert_eq!(fs::read_to_string(root.join("etc/gitops-e2e/token")).unwrap(), SECRET);
    let secrets_dir = fs::read_to_string(root.join("etc/gitops-e2e/secrets-dir")).unwrap();
    assert!(secrets_dir.starts_with("/run/gitops/gitops-secrets."), "{secrets_dir}");
    assert!(service.contains("e2e: token ***") && !service.contains(SECRET), "redacted in the journal:\n{service}");
    let state_dir = root.join("var/lib/gitops");
    let grep = Command::new("grep").args(["-r", "-l", SECRET]).arg(&state_dir).output().unwrap();
    assert!(grep.stdout.is_empty(), "the secret leaked into {}", String::from_utf8_lossy(&grep.stdout));
    // Exit 10 (applied) and 0 (up-to-date) are successes: the unit never failed, and no
    // missing credential file broke it.
    // (systemd inside nspawn may log "Failed to kill control group …, ignoring": not a failure.)
    let failures: Vec<&str> = service_before_power_off
        .lines()
        .filter(|l| {
            ["Failed with result", "Failed to start", "Main process exited", "CREDENTIALS"]
                .iter()
                .any(|f| l.contains(f))
        })
        .collect();
    assert!(failures.is_empty(), "gitops.service never failed ({failures:?}):\n{service_before_power_off}");
    eprintln!(
        "e2e: first commit applied {first_applied:.1?} after boot, scenario {:.1?}, {runs} runs",
        started.elapsed()
    );
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

static MACHINES: AtomicUsize = AtomicUsize::new(0);

/// A booted container; if the test panics while it lives, its console and journal are printed.
struct Container {
    child: Option<Child>,
    root: PathBuf,
    console: PathBuf,
}

impl Container {
    /// Boot `root` with systemd as PID 1 and the bare repository at /srv/fleet.git (read-only).
    fn boot(root: &Path, bare: &Path, dir: &Path) -> Container {
        // Unique per boot: the tests in this file boot theirs in parallel, some twice.
        let n = MACHINES.fetch_add(1, Ordering::Relaxed);
        support::record_panics();
        let console = dir.join(format!("console-{n}.log"));
        let log = fs::File::create(&console).unwrap();
        let child = Command::new("systemd-nspawn")
            // --register=no --keep-unit: the host's PID 1 need not be systemd (no machined, no bus).
            .args(["-q", "--boot", "--register=no", "--keep-unit", "--link-journal=no"])
            .arg(format!("--machine=gitops-e2e-{}-{n}", std::process::id()))
            .arg("-D")
            .arg(root)
            .arg(format!("--bind-ro={}:/srv/fleet.git", bare.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting systemd-nspawn");
        Container { child: Some(child), root: root.to_path_buf(), console }
    }

    /// state.json as the container's gitops wrote it, if it exists and parses.
    fn state(&self) -> Option<serde_json::Value> {
        let bytes = fs::read(self.root.join("var/lib/gitops/state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Wait until state.json says `commit` is applied; panics (showing the journal) on timeout or if the container died.
    fn wait_for_applied(&mut self, commit: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.state().is_some_and(|s| s["applied_commit"] == commit) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("systemd-nspawn exited ({status}) before {commit} was applied");
            }
            assert!(
                Instant::now() < deadline,
                "{commit} not applied within {timeout:?}; state.json: {:?}",
                self.state()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until the journal of gitops.service shows `text`.
    fn wait_for_journal(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.journal(&["-u", "gitops.service"]).contains(text) {
            assert!(Instant::now() < deadline, "{text:?} not in the journal within {timeout:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Wait for nspawn to exit by itself (a reboot: 133); returns its exit code.
    fn wait_for_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("systemd-nspawn did not exit within {timeout:?}");
    }

    /// SIGTERM to nspawn powers the container off; returns nspawn's exit code.
    fn power_off(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("systemd-nspawn did not power off within 30 s of SIGTERM");
    }

    /// `journalctl` over the container's persistent journal, read from the host.
    fn journal(&self, args: &[&str]) -> String {
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(self.root.join("var/log/journal"))
            .args(["--no-pager", "-o", "short-monotonic"])
            .args(args)
            .output()
            .expect("running journalctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- container console ----\n{}", fs::read_to_string(&self.console).unwrap_or_default());
            eprintln!("---- container journal ----\n{}", self.journal(&[]));
            if let Some(message) = support::last_panic() {
                eprintln!("---- the failure, repeated after the logs ----\n{message}");
            }
        }
    }
}
