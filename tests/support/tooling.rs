//! Tests that need optional tooling (root, debootstrap, systemd-nspawn, ksvalidator, packer,
//! cloud-init): find it, or skip with a note — unless GITOPS_TEST_STRICT=1 (set by .ci/run),
//! which turns a missing tool into a failure so CI never passes by skipping.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `tool` as found on PATH.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|candidate| candidate.is_file())
}

/// True when the test can go on; otherwise says why it is skipped (or panics under GITOPS_TEST_STRICT=1).
pub fn available(missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    if std::env::var("GITOPS_TEST_STRICT").as_deref() == Ok("1") {
        panic!("GITOPS_TEST_STRICT=1 but this test cannot run: {why}");
    }
    eprintln!("skipped: {why} (GITOPS_TEST_STRICT=1 makes this a failure)");
    false
}

/// Why `tools` (name, Debian package) are not all usable, if they are not.
pub fn missing(tools: &[(&str, &str)]) -> Option<String> {
    tools.iter().find(|(tool, _)| on_path(tool).is_none()).map(|(tool, package)| format!("needs {tool} ({package})"))
}

/// Why a root with a cached Debian rootfs cannot be had, if it cannot.
pub fn missing_rootfs_tooling() -> Option<String> {
    if !super::is_root() {
        return Some("needs root (debootstrap, chroot, systemd-nspawn)".into());
    }
    missing(&[
        ("debootstrap", "apt-get install debootstrap"),
        ("systemd-nspawn", "apt-get install systemd-container"),
        ("journalctl", "apt-get install systemd"),
    ])
}

const MAKE_ROOTFS: &str = include_str!("../e2e/make-rootfs.sh");

/// A private copy at `dest` of the cached Debian bookworm rootfs (built first if this version
/// of tests/e2e/make-rootfs.sh has none yet).
pub fn rootfs_copy(dest: &Path) {
    let cached = cached_rootfs();
    let copied = Command::new("cp").args(["-a", "--reflink=auto"]).arg(&cached).arg(dest).status().expect("running cp");
    assert!(copied.success(), "copying {} to {}", cached.display(), dest.display());
}

/// The cached rootfs under /var/cache/gitops-e2e (GITOPS_E2E_CACHE overrides), named after a
/// hash of make-rootfs.sh so that editing the script rebuilds it.
fn cached_rootfs() -> PathBuf {
    let cache = std::env::var_os("GITOPS_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/gitops-e2e"));
    fs::create_dir_all(&cache).unwrap();
    let name = format!("rootfs-{:016x}", fnv1a(MAKE_ROOTFS.as_bytes()));
    let rootfs = cache.join(&name);
    // Test binaries and worktrees on one machine share the cache: one builds, the others wait.
    let lock = fs::File::create(cache.join("lock")).unwrap();
    lock.lock().unwrap();
    if !rootfs.is_dir() {
        let started = Instant::now();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/make-rootfs.sh");
        let out = Command::new("sh").arg(script).arg(&rootfs).output().unwrap();
        assert!(out.status.success(), "building the e2e rootfs failed:\n{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("built {} in {:.0?}", rootfs.display(), started.elapsed());
        // Caches of older versions of the script are dead weight.
        for entry in fs::read_dir(&cache).unwrap().flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other.starts_with("rootfs-") && other != name {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    rootfs
}

/// FNV-1a: a stable name for a version of make-rootfs.sh.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
