//! The shipped systemd units: `gitops install-units` writes exactly them, enables the timer the way
//! `systemctl enable` would, and the result passes `systemd-analyze verify`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::tooling;

const UNITS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");

/// Verify `units` (names below /etc/systemd/system) in a scratch root; returns (success, stderr).
fn verify(root: &Path, units: &[String]) -> (bool, String) {
    let output = tooling::command("systemd-analyze")
        // verify runs `man` for every Documentation=man:… page: find ours in the root.
        .env("MANPATH", root.join("usr/share/man"))
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units.iter().map(|u| format!("/etc/systemd/system/{u}")))
        .output()
        .expect("running systemd-analyze");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `gitops install-units ARGS` with the machine's env file out of the way.
fn gitops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(args)
        .env("GITOPS_CONFIG", "/dev/null")
        .env_remove("RUST_LOG")
        .output()
        .expect("running gitops")
}

fn install_units(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["install-units", "--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    gitops(&args)
}

/// The unit files in systemd/, by name.
fn shipped_units() -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(UNITS_DIR).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A root with the real systemd unit library, /usr/bin/gitops, and our units put there by install-units.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("usr/bin")).unwrap();
    fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_gitops"), r.join("usr/bin/gitops")).unwrap();
    // sysinit.target and friends come from the machine's systemd (a copy: verify --root
    // resolves the library's own symlinks inside the root, so a symlinked directory fails).
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying /usr/lib/systemd/system");
    let out = install_units(r, &["--enable"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let man1 = r.join("usr/share/man/man1");
    let out = gitops(&["generate", "man", "--out", man1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    root
}

/// Every file below `dir` with its mode, symlink target and mtime: equal snapshots mean nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Option<PathBuf>, std::time::SystemTime)> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let modified = if meta.is_dir() { std::time::UNIX_EPOCH } else { meta.modified().unwrap() };
            entries.push((
                path.strip_prefix(dir).unwrap().to_path_buf(),
                meta.permissions().mode(),
                fs::read_link(&path).ok(),
                modified,
            ));
        }
    }
    entries.sort();
    entries
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !tooling::available(&[tooling::SYSTEMD_ANALYZE, tooling::MAN]) {
        return;
    }
    let root = scratch_root();
    let (ok, stderr) = verify(root.path(), &shipped_units());
    assert!(ok && stderr.trim().is_empty(), "systemd-analyze verify complained:\n{stderr}");
}

#[test]
fn verify_catches_a_broken_unit() {
    // Guards the test above: a typo must be reported, or passing proves nothing.
    if !tooling::available(&[tooling::SYSTEMD_ANALYZE, tooling::MAN]) {
        return;
    }
    let root = scratch_root();
    let unit = root.path().join("etc/systemd/system/gitops.service");
    let text = fs::read_to_string(&unit).unwrap().replace("Type=oneshot", "Typo=oneshot");
    fs::write(&unit, text).unwrap();
    let (_, stderr) = verify(root.path(), &["gitops.service".to_string()]);
    assert!(stderr.contains("Typo"), "{stderr}");
}

#[test]
fn install_units_writes_exactly_the_shipped_units_and_enables_the_timer() {
    if !tooling::available(&[tooling::SYSTEMCTL]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = install_units(root.path(), &["--enable"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unit_dir = root.path().join("etc/systemd/system");
    for name in shipped_units() {
        assert_eq!(
            fs::read(unit_dir.join(&name)).unwrap(),
            fs::read(Path::new(UNITS_DIR).join(&name)).unwrap(),
            "{name} is embedded unchanged"
        );
    }
    let mut written: Vec<String> = fs::read_dir(&unit_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".wants"))
        .collect();
    written.sort();
    assert_eq!(written, shipped_units(), "every shipped unit is embedded");
    assert_eq!(
        fs::read_link(unit_dir.join("timers.target.wants/gitops.timer")).unwrap(),
        Path::new("/etc/systemd/system/gitops.timer"),
        "the link systemctl enable makes, resolved inside the root"
    );
    // systemctl itself, offline, agrees.
    let enabled = tooling::command("systemctl")
        .arg(format!("--root={}", root.path().display()))
        .args(["is-enabled", "gitops.timer"])
        .output()
        .expect("running systemctl");
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "enabled");
    // Units and their directories are world-readable, whatever gitops's own umask.
    let modes: Vec<u32> = snapshot(root.path()).iter().map(|e| e.1 & 0o7777).collect();
    assert!(modes.iter().all(|m| [0o644, 0o755, 0o777].contains(m)), "{modes:?}");
    // The binary is not there yet: said, not fatal (an image build may install it later).
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("usr/bin/gitops does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_units_twice_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    assert!(install_units(root.path(), &["--enable"]).status.success());
    let before = snapshot(root.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = install_units(root.path(), &["--enable"]);
    assert!(again.status.success());
    assert_eq!(snapshot(root.path()), before);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(log.contains("is up to date") && log.contains("already enabled"), "{log}");
}

#[test]
fn install_units_without_enable_enables_nothing_and_repairs_edited_units() {
    let root = tempfile::tempdir().unwrap();
    assert!(install_units(root.path(), &[]).status.success());
    let unit_dir = root.path().join("etc/systemd/system");
    assert!(!unit_dir.join("timers.target.wants").exists());
    fs::write(unit_dir.join("gitops.timer"), "edited").unwrap();
    assert!(install_units(root.path(), &[]).status.success());
    assert_eq!(
        fs::read(unit_dir.join("gitops.timer")).unwrap(),
        fs::read(Path::new(UNITS_DIR).join("gitops.timer")).unwrap()
    );
}

#[test]
fn install_units_replaces_a_stale_link_and_refuses_a_file_in_its_place() {
    let root = tempfile::tempdir().unwrap();
    let wants = root.path().join("etc/systemd/system/timers.target.wants");
    fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/system/old.timer", wants.join("gitops.timer")).unwrap();
    assert!(install_units(root.path(), &["--enable"]).status.success());
    assert_eq!(fs::read_link(wants.join("gitops.timer")).unwrap(), Path::new("/etc/systemd/system/gitops.timer"));

    fs::remove_file(wants.join("gitops.timer")).unwrap();
    fs::write(wants.join("gitops.timer"), "not a link").unwrap();
    let out = install_units(root.path(), &["--enable"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timers.target.wants/gitops.timer exists and is not a symlink; remove it"), "{stderr}");
}

#[test]
fn install_units_into_a_missing_root_says_so() {
    let out = install_units(Path::new("/nonexistent/gitops-root"), &["--enable"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--root /nonexistent/gitops-root: cannot read it"), "{stderr}");
}

/// The `Key=` values of a unit file, in order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=')).collect()
}

#[test]
fn service_treats_exactly_the_non_error_codes_as_success() {
    // The exit-code contract: 0 up-to-date (always success), 10 applied, 11 deferred, 75 locked succeed;
    // need-push, diverged, apply failed, runtime and usage errors leave the unit failed.
    let text = fs::read_to_string(Path::new(UNITS_DIR).join("gitops.service")).unwrap();
    assert_eq!(values(&text, "SuccessExitStatus"), ["10 11 75"]);
    assert_eq!(values(&text, "Type"), ["oneshot"]);
}

#[test]
fn service_timeout_outlasts_the_default_apply_timeout() {
    let text = fs::read_to_string(Path::new(UNITS_DIR).join("gitops.service")).unwrap();
    let timeout = values(&text, "TimeoutStartSec");
    let minutes: u64 = timeout[0].trim_end_matches("min").parse().unwrap();
    let help = gitops(&["sync", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 30m]"), "{help}");
    assert!(minutes > 30, "TimeoutStartSec={} leaves no room after a 30m apply", timeout[0]);
}

#[test]
fn credential_names_match_what_gitops_reads() {
    // gitops looks for $CREDENTIALS_DIRECTORY/<name>: config::credential("<name>") for sync,
    // CREDENTIAL_NAME for the webhook. Every name has a LoadCredential= in some unit, and every
    // LoadCredential= names something gitops reads.
    let mut read: Vec<String> = Vec::new();
    for file in fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).unwrap() {
        let path = file.unwrap().path();
        let sources =
            if path.is_dir() { fs::read_dir(&path).unwrap().map(|f| f.unwrap().path()).collect() } else { vec![path] };
        for source in sources {
            let code = fs::read_to_string(source).unwrap();
            for marker in ["credential(\"", "CREDENTIAL_NAME: &str = \""] {
                read.extend(code.split(marker).skip(1).map(|rest| rest.split('"').next().unwrap().to_string()));
            }
        }
    }
    read.sort();
    read.dedup();
    assert!(read.len() >= 6, "{read:?}");
    let mut loaded: Vec<String> = Vec::new();
    for unit in shipped_units() {
        let text = fs::read_to_string(Path::new(UNITS_DIR).join(&unit)).unwrap();
        for credential in values(&text, "LoadCredential") {
            let (name, source) = credential.split_once(':').unwrap();
            assert!(read.iter().any(|r| r == name), "{unit}: LoadCredential={credential} is read by nothing");
            loaded.push(name.to_string());
            if unit == "gitops.service" {
                // Optional on every host: from the credential store, where a missing file is
                // skipped (a missing absolute path would fail each run with 243/CREDENTIALS).
                assert_eq!(source, format!("gitops.{name}"), "{unit}: LoadCredential={credential}");
            }
        }
    }
    for name in &read {
        assert!(loaded.contains(name), "no unit has LoadCredential={name}:…");
    }
}

#[test]
fn install_units_works_with_a_broken_env_file() {
    // An image build may carry a half-written /etc/gitops/gitops.env: writing units reads no
    // configuration, so it must not fail on it (a sync does, with exit 2).
    let root = tempfile::tempdir().unwrap();
    let env = root.path().join("broken.env");
    fs::write(&env, "this is not KEY=VALUE\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["install-units", "--root", root.path().to_str().unwrap()])
        .env("GITOPS_CONFIG", &env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sync = Command::new(env!("CARGO_BIN_EXE_gitops")).args(["sync"]).env("GITOPS_CONFIG", &env).output().unwrap();
    assert_eq!(sync.status.code(), Some(2), "{}", String::from_utf8_lossy(&sync.stderr));
}
