//! The one skip gate: a test that needs something the machine may lack (root, sshd, socat,
//! debootstrap, systemd-nspawn, ksvalidator, pre-commit, packer, cloud-init, cargo-deb, man,
//! objdump…) asks `available` first and returns when it says no. The skip is recorded, and the test binary
//! prints a summary of every skip at exit, with the command that installs it all.
//! GITOPS_TEST_STRICT=1 (set by tests/run) turns a skip into a failure naming the tool, so CI
//! never passes by skipping. Also: the cached Debian rootfs the systemd tests boot.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Instant;

/// Something a test needs that a machine may not have: root, or a tool from a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    /// The executable (or "root").
    tool: &'static str,
    /// Where it comes from: a Debian package, or how tests/setup gets it.
    package: &'static str,
}

/// Running as root (mounts, chown, port 22, chroot).
pub const ROOT: Need = Need { tool: "root", package: "run as root" };
pub const SSHD: Need = Need { tool: "sshd", package: "openssh-server" };
pub const SSH_KEYGEN: Need = Need { tool: "ssh-keygen", package: "openssh-client" };
pub const SOCAT: Need = Need { tool: "socat", package: "socat" };
pub const OPENSSL: Need = Need { tool: "openssl", package: "openssl" };
pub const MAN: Need = Need { tool: "man", package: "man-db" };
pub const OBJDUMP: Need = Need { tool: "objdump", package: "binutils" };
pub const SYSTEMD_ANALYZE: Need = Need { tool: "systemd-analyze", package: "systemd" };
pub const SYSTEMCTL: Need = Need { tool: "systemctl", package: "systemd" };
pub const KSVALIDATOR: Need = Need { tool: "ksvalidator", package: "pykickstart from PyPI" };
/// The pre-commit framework (its venv's PyYAML reads the README's CI snippets too).
pub const PRE_COMMIT: Need = Need { tool: "pre-commit", package: "pre-commit from PyPI" };
pub const CLOUD_INIT: Need = Need { tool: "cloud-init", package: "cloud-init" };
pub const PACKER: Need = Need { tool: "packer", package: "packer" };
pub const CARGO_DEB: Need = Need { tool: "cargo-deb", package: "from crates.io" };
pub const PROMETHEUS: Need = Need { tool: "prometheus", package: "prometheus" };
pub const PROMTOOL: Need = Need { tool: "promtool", package: "prometheus" };
pub const NODE_EXPORTER: Need = Need { tool: "prometheus-node-exporter", package: "prometheus-node-exporter" };
#[allow(dead_code)] // the secrets tests
pub const AGE: Need = Need { tool: "age", package: "age" };
pub const CHROMIUM: Need = Need { tool: "chromium", package: "chromium" };
/// What a run asked the kernel to sync, and in which order (the durability test).
pub const STRACE: Need = Need { tool: "strace", package: "strace" };
/// Debian's nginx: the change probe's static file server.
pub const NGINX: Need = Need { tool: "nginx", package: "nginx" };
/// Debian's rpm: the release .rpm inspected and installed with --root.
pub const RPM: Need = Need { tool: "rpm", package: "rpm" };
/// What `packaging/dist.sh` (`just dist`) runs: the glibc 2.17 build and both packages.
pub const DIST: &[Need] = &[
    Need { tool: "cargo-zigbuild", package: "ziglang and cargo-zigbuild from PyPI" },
    CARGO_DEB,
    Need { tool: "cargo-generate-rpm", package: "from crates.io" },
    OBJDUMP,
    // The profile of a no-op poll that lays out the shipped binary's code (packaging/link-order.py).
    Need { tool: "valgrind", package: "valgrind" },
];
/// What booting the cached Debian rootfs with systemd-nspawn takes.
pub const ROOTFS: &[Need] = &[
    ROOT,
    Need { tool: "debootstrap", package: "debootstrap" },
    Need { tool: "systemd-nspawn", package: "systemd-container" },
    Need { tool: "journalctl", package: "systemd" },
];

/// Where tests/setup installs the tools that are not Debian packages, searched after PATH.
const SETUP_BIN_DIRS: &[&str] = &[
    "/usr/sbin",
    "/sbin",
    "/var/cache/gitops-ci/venv/bin",
    "/var/cache/gitops-ci/cargo-deb/bin",
    "/var/cache/gitops-ci/zig/bin",
    "/var/cache/gitops-ci/cargo-generate-rpm/bin",
];

/// The command that installs everything the tests need.
const SETUP: &str = "sudo tests/setup";

/// `tool` as found on PATH or where tests/setup puts it, if it is there and runs.
pub fn find(tool: &str) -> Option<PathBuf> {
    static FOUND: Mutex<Option<HashMap<String, Option<PathBuf>>>> = Mutex::new(None);
    let mut found = FOUND.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cache = found.get_or_insert_with(HashMap::new);
    cache.entry(tool.to_string()).or_insert_with(|| locate(tool)).clone()
}

/// A `Command` for `tool` found by `find` (the bare name when it is not found, to fail loudly).
pub fn command(tool: &str) -> Command {
    Command::new(find(tool).unwrap_or_else(|| PathBuf::from(tool)))
}

/// Search without the cache: an executable file that can actually be started (a script whose
/// interpreter is gone, or a file without exec permission, counts as missing).
fn locate(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(SETUP_BIN_DIRS.iter().map(PathBuf::from));
    dirs.map(|dir| dir.join(tool)).find(|candidate| runs(candidate))
}

/// Whether `program --version` can be started; its exit status does not matter (sshd has no
/// such flag and says so), only that the kernel could execute it.
fn runs(program: &Path) -> bool {
    let executable = fs::metadata(program).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    executable
        && Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

/// The needs in `needs` this machine does not meet.
pub fn missing(needs: &[Need]) -> Vec<Need> {
    needs
        .iter()
        .copied()
        .filter(|need| if *need == ROOT { !super::is_root() } else { find(need.tool).is_none() })
        .collect()
}

/// The gate: true when the calling test can go on. Otherwise the skip is recorded for the
/// summary and the test should return — or, under GITOPS_TEST_STRICT=1, this panics naming
/// what is missing.
pub fn available(needs: &[Need]) -> bool {
    static AT_EXIT: Once = Once::new();
    // libtest captures what tests print and shows it only for failures; a hook that runs when
    // the process exits, after libtest's own summary, writes to the real stderr instead.
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` that never unwinds.
        let registered = unsafe { libc::atexit(print_skips) };
        assert_eq!(registered, 0, "atexit failed");
    });
    let missing = missing(needs);
    if missing.is_empty() {
        return true;
    }
    let names = missing.iter().map(|need| need.to_string()).collect::<Vec<_>>().join(", ");
    if std::env::var("GITOPS_TEST_STRICT").as_deref() == Ok("1") {
        panic!("GITOPS_TEST_STRICT=1 but this test needs {names}: install with {SETUP}");
    }
    eprintln!("skipped: needs {names} (install with {SETUP}; GITOPS_TEST_STRICT=1 makes this a failure)");
    let test = std::thread::current().name().unwrap_or("(unnamed thread)").to_string();
    SKIPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(test).or_default().extend(missing);
    false
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == ROOT || self.tool == self.package {
            write!(f, "{}", self.tool)
        } else {
            write!(f, "{} ({})", self.tool, self.package)
        }
    }
}

/// Skipped tests and what each lacked, printed by `print_skips` when the test binary exits.
static SKIPS: Mutex<BTreeMap<String, Vec<Need>>> = Mutex::new(BTreeMap::new());

/// The summary: how many tests were skipped, for want of what, and the command that fixes it.
/// The list of tests goes to target/tmp/skipped-tests.txt (removed after a run without skips).
extern "C" fn print_skips() {
    let skips = SKIPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let list = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    if skips.is_empty() {
        let _ = fs::remove_file(&list);
        return;
    }
    let mut per_need: BTreeMap<Need, usize> = BTreeMap::new();
    for need in skips.values().flat_map(|needs| needs.iter().collect::<std::collections::BTreeSet<_>>()) {
        *per_need.entry(*need).or_default() += 1;
    }
    let mut counts: Vec<(Need, usize)> = per_need.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let counts = counts.iter().map(|(need, n)| format!("{need} \u{d7}{n}")).collect::<Vec<_>>().join(", ");
    let lines: String = skips
        .iter()
        .map(|(test, needs)| {
            format!("{test}: {}\n", needs.iter().map(|need| need.to_string()).collect::<Vec<_>>().join(", "))
        })
        .collect();
    let listed = fs::write(&list, lines).is_ok();
    let root = skips.values().flatten().any(|need| *need == ROOT);
    let tools = skips.values().flatten().any(|need| *need != ROOT);
    let hint = match (tools, root) {
        (true, false) => format!("install them with: {SETUP}"),
        (false, _) => "they need root: sudo tests/run".to_string(),
        (true, true) => format!("install them with: {SETUP} (and run the root ones with sudo tests/run)"),
    };
    let mut summary = format!(
        "\nskipped {} test{}: {counts} \u{2014} {hint}\n  \
         (`sudo tests/run` installs them and runs everything as root, failing on any skip)\n",
        skips.len(),
        if skips.len() == 1 { "" } else { "s" }
    );
    if listed {
        summary.push_str(&format!("  the skipped tests: {}\n", list.display()));
    }
    let _ = std::io::stderr().write_all(summary.as_bytes());
}

const MAKE_ROOTFS: &str = include_str!("../e2e/make-rootfs.sh");

/// A private copy at `dest` of the cached Debian bookworm rootfs (built first if this version
/// of tests/e2e/make-rootfs.sh has none yet).
pub fn rootfs_copy(dest: &Path) {
    rootfs_copy_of("bookworm", dest);
}

/// The same for another Debian release, e.g. bullseye (Debian 11, glibc 2.31).
pub fn rootfs_copy_of(suite: &str, dest: &Path) {
    let cached = cached_rootfs(suite);
    let copied = Command::new("cp").args(["-a", "--reflink=auto"]).arg(&cached).arg(dest).status().expect("running cp");
    assert!(copied.success(), "copying {} to {}", cached.display(), dest.display());
}

/// The cached rootfs of `suite` under /var/cache/gitops-e2e/SUITE (GITOPS_E2E_CACHE overrides
/// /var/cache/gitops-e2e), named after a hash of make-rootfs.sh so that editing the script
/// rebuilds it.
fn cached_rootfs(suite: &str) -> PathBuf {
    let cache = std::env::var_os("GITOPS_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/gitops-e2e"))
        .join(suite);
    fs::create_dir_all(&cache).unwrap();
    let name = format!("rootfs-{:016x}", fnv1a(MAKE_ROOTFS.as_bytes()));
    let rootfs = cache.join(&name);
    // Test binaries and worktrees on one machine share the cache: one builds, the others wait.
    let lock = fs::File::create(cache.join("lock")).unwrap();
    lock.lock().unwrap();
    if !rootfs.is_dir() {
        let started = Instant::now();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/make-rootfs.sh");
        let out = Command::new("sh").arg(script).arg(&rootfs).arg(suite).output().unwrap();
        assert!(out.status.success(), "building the e2e rootfs failed:\n{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("built {} in {:.0?}", rootfs.display(), started.elapsed());
        // Caches of older versions of the script are dead weight (of this suite: each has its directory).
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
