//! The shipped systemd units pass `systemd-analyze verify` against a root holding the built binary.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Verify `units` (paths below systemd/) in a scratch root; returns (success, stderr).
fn verify(root: &Path, units: &[&str]) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units.iter().map(|u| format!("/etc/systemd/system/{u}")))
        .output()
        .expect("systemd-analyze is installed (package systemd)");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A root with the real systemd unit library, /usr/bin/gitops and our units.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("usr/bin")).unwrap();
    fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_gitops"), r.join("usr/bin/gitops")).unwrap();
    // sysinit.target and friends come from the machine's systemd (a copy: verify --root
    // resolves the library's own symlinks inside the root, so a symlinked directory fails).
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying /usr/lib/systemd/system");
    for entry in fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), r.join("etc/systemd/system").join(entry.file_name())).unwrap();
    }
    root
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let root = scratch_root();
    let units = ["gitops.service", "gitops.timer", "gitops-webhook.socket", "gitops-webhook.service"];
    let (ok, stderr) = verify(root.path(), &units);
    assert!(ok && stderr.trim().is_empty(), "systemd-analyze verify complained:\n{stderr}");
}

#[test]
fn verify_catches_a_broken_unit() {
    // Guards the test above: a typo must be reported, or passing proves nothing.
    let root = scratch_root();
    let unit = root.path().join("etc/systemd/system/gitops.service");
    let text = fs::read_to_string(&unit).unwrap().replace("Type=oneshot", "Typo=oneshot");
    fs::write(&unit, text).unwrap();
    let (_, stderr) = verify(root.path(), &["gitops.service"]);
    assert!(stderr.contains("Typo"), "{stderr}");
}
