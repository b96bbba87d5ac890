//! The release files `just dist` makes (packaging/dist.sh), as an operator meets them: a binary
//! that needs no glibc newer than 2.17 and fits its size budget; checksums; a tarball whose
//! install.sh puts every file where the .deb does, man pages and completions included; an .rpm
//! that Debian's rpm reads, installs into a scratch root (scriptlets run) and verifies; and the
//! tarball installed on Debian 11 (glibc 2.31, where a binary built on this machine does not
//! start) syncing under its own systemd.
//!
//! packaging/dist.sh runs once per test run, into target/tmp/dist, with this test build's gitops
//! writing the man pages and completions (after `tests/run` built it, the release build is a
//! no-op). Needs zig, cargo-zigbuild, cargo-deb, cargo-generate-rpm, objdump and valgrind; some
//! tests also rpm, root, debootstrap and systemd-nspawn. Without them a test says it is skipped, unless
//! GITOPS_TEST_STRICT=1.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::e2e_systemd;
use crate::support;
use crate::support::tooling;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The glibc the release is linked against: packaging/dist.sh's `glibc=`, README's "Where it runs".
const GLIBC_FLOOR: &str = "2.17";
/// The release binary's size budget.
const MAX_BINARY_BYTES: u64 = 8 * 1024 * 1024;

/// The files packaging/dist.sh wrote.
pub(crate) struct Dist {
    pub(crate) dir: PathBuf,
    pub(crate) version: &'static str,
}

impl Dist {
    fn tarball(&self) -> PathBuf {
        self.dir.join(format!("gitops-{}-x86_64-linux-gnu.tar.gz", self.version))
    }

    fn deb(&self) -> PathBuf {
        self.dir.join(format!("gitops_{}-1_amd64.deb", self.version))
    }

    pub(crate) fn rpm(&self) -> PathBuf {
        self.dir.join(format!("gitops-{}-1.x86_64.rpm", self.version))
    }

    /// The tarball unpacked into `dir`: its one top directory.
    fn unpack(&self, dir: &Path) -> PathBuf {
        run(Command::new("tar").arg("-xzf").arg(self.tarball()).arg("-C").arg(dir));
        dir.join(format!("gitops-{}-x86_64-linux-gnu", self.version))
    }
}

/// packaging/dist.sh, run once for all the tests here (the first to ask waits for it).
pub(crate) fn dist() -> &'static Dist {
    static DIST: OnceLock<Dist> = OnceLock::new();
    DIST.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dist");
        let started = std::time::Instant::now();
        run(Command::new(Path::new(MANIFEST_DIR).join("packaging/dist.sh"))
            .arg("--out")
            .arg(&dir)
            .env("GITOPS_GENERATOR", env!("CARGO_BIN_EXE_gitops")));
        eprintln!("packaging/dist.sh took {:.0?}", started.elapsed());
        Dist { dir, version: env!("CARGO_PKG_VERSION") }
    })
}

/// Run `cmd`; panics with its output unless it succeeds. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// "2.17" -> [2, 17], for comparing versions.
fn version(text: &str) -> Vec<u32> {
    text.split('.').map(|n| n.parse().unwrap_or(0)).collect()
}

/// The newest `GLIBC_x.y` a text names (objdump's symbol table, rpm's requirements).
fn newest_glibc(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .max_by_key(|v| version(v))
        .map(String::from)
}

/// Every file below `root` (not directories), by absolute path in the installed system, with its mode.
fn files_below(root: &Path) -> BTreeMap<String, u32> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let name = format!("/{}", path.strip_prefix(root).unwrap().display());
                files.insert(name, meta.permissions().mode() & 0o7777);
            }
        }
    }
    files
}

/// `rwxr-xr-x` -> 0o755.
fn mode_of(perms: &str) -> u32 {
    perms.chars().fold(0, |mode, c| mode << 1 | u32::from(c != '-'))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn release_binary_needs_glibc_2_17_at_most_fits_8_mib_and_says_what_it_is() {
    if !tooling::available(tooling::DIST) {
        return;
    }
    let dist = dist();
    let dir = support::tempdir();
    let bin = dist.unpack(dir.path()).join("gitops");

    let symbols = run(tooling::command("objdump").arg("-T").arg(&bin));
    let newest = newest_glibc(&symbols).expect("the binary links glibc symbols");
    assert!(
        version(&newest) <= version(GLIBC_FLOOR),
        "the release binary needs GLIBC_{newest}, more than {GLIBC_FLOOR}: it would not start on RHEL 8 or Debian 11"
    );
    // Only libraries every glibc system has: glibc's own, zlib and libgcc_s (no OpenSSL, whose
    // soname differs between RHEL 8 and Debian 12).
    let headers = run(tooling::command("objdump").arg("-p").arg(&bin));
    let needed: Vec<&str> = headers.lines().filter_map(|l| l.trim().strip_prefix("NEEDED")).map(str::trim).collect();
    assert!(needed.contains(&"libc.so.6"), "{needed:?}");
    for lib in &needed {
        let glibc = ["libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2"];
        assert!(glibc.contains(lib) || ["libz.so.1", "libgcc_s.so.1"].contains(lib), "NEEDED {lib}: {needed:?}");
    }

    let size = fs::metadata(&bin).unwrap().len();
    assert!(size <= MAX_BINARY_BYTES, "the release binary is {size} bytes, over the 8 MiB budget");

    // The code a no-op poll runs is laid out side by side (packaging/link-order.py), first in the
    // text: without it the poll's pages are spread over the whole text and its peak RSS is ~2 MiB
    // more (`just bench` measures both). The section holds the poll's, a first deploy's and
    // status's functions: about 1.3 MB today, and never a handful.
    let sections = run(tooling::command("objdump").arg("-h").arg(&bin));
    // (size, address) of a section, from objdump -h's "Idx Name Size VMA ..." rows.
    let section = |name: &str| {
        sections.lines().find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u64::from_str_radix(cols[i], 16).unwrap();
            (cols.get(1) == Some(&name)).then(|| (hex(2), hex(3)))
        })
    };
    let (hot, hot_at) =
        section(".text.hot").unwrap_or_else(|| panic!("no .text.hot: the link order was not applied\n{sections}"));
    assert!((512 * 1024..3 * 1024 * 1024).contains(&hot), ".text.hot is {hot} bytes\n{sections}");
    assert!(hot_at < section(".text").unwrap().1, "{sections}");

    let commit = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(MANIFEST_DIR)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or("unknown".to_string(), |out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    let said = run(Command::new(&bin).arg("--version"));
    assert_eq!(said, format!("gitops {} ({commit}, x86_64-linux-gnu glibc \u{2265} {GLIBC_FLOOR})\n", dist.version));

    // What it offers is in its --help: `generate` is not built in (the files ship its output).
    let help = run(Command::new(&bin).arg("--help"));
    assert!(help.contains("install-units") && !help.contains("generate"), "{help}");
    let generate = output(Command::new(&bin).args(["generate", "man", "--out"]).arg(dir.path().join("man")));
    assert_eq!(generate.status.code(), Some(2), "{}", text(&generate));
}

#[test]
fn release_files_are_checksummed_and_package_one_binary() {
    if !tooling::available(tooling::DIST) {
        return;
    }
    let dist = dist();
    let mut names: Vec<String> =
        fs::read_dir(&dist.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let mut expected = vec![name(dist.tarball()), name(dist.deb()), name(dist.rpm()), "SHA256SUMS".to_string()];
    expected.sort();
    assert_eq!(names, expected);
    let sums = fs::read_to_string(dist.dir.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");
    let checked = run(Command::new("sha256sum").args(["--check", "--strict", "SHA256SUMS"]).current_dir(&dist.dir));
    assert_eq!(checked.matches(": OK").count(), 3, "{checked}");

    // The tarball: one directory with everything install.sh installs.
    let listing = run(Command::new("tar").arg("-tzvf").arg(dist.tarball()));
    let top = format!("gitops-{}-x86_64-linux-gnu/", dist.version);
    let mut files: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            assert!(l.split_whitespace().nth(1) == Some("0/0"), "owned by root: {l}");
            let path = l.split_whitespace().last().unwrap();
            path.strip_prefix(&top).unwrap_or_else(|| panic!("{path} outside {top}")).to_string()
        })
        .collect();
    files.sort();
    for file in [
        "gitops",
        "install.sh",
        "gitops.env",
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "systemd/gitops.service",
        "systemd/gitops.timer",
        "systemd/gitops-webhook.service",
        "systemd/gitops-webhook.socket",
        "man/gitops.1",
        "man/gitops-sync.1",
        "completions/gitops.bash",
        "completions/_gitops",
        "completions/gitops.fish",
        "contrib/cron/gitops",
        "contrib/openrc/gitops",
    ] {
        assert!(files.iter().any(|f| f == file), "{file} in the tarball: {files:?}");
    }

    // The .deb and the .rpm carry the tarball's binary.
    let dir = support::tempdir();
    let bin = fs::read(dist.unpack(dir.path()).join("gitops")).unwrap();
    let from_deb = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xOf - ./usr/bin/gitops")
        .arg("sh")
        .arg(dist.deb())
        .output()
        .unwrap();
    assert!(from_deb.status.success() && from_deb.stdout == bin, "the .deb's /usr/bin/gitops is the tarball's");
    let depends = run(Command::new("dpkg-deb").args(["--field"]).arg(dist.deb()).arg("Depends"));
    let libc6 = depends.split(',').find(|d| d.trim().starts_with("libc6 ")).expect("Depends: libc6 (>= …)");
    let wanted = libc6.trim().trim_start_matches("libc6 (>= ").trim_end_matches(')');
    assert!(version(wanted) <= version(GLIBC_FLOOR), "the .deb wants {libc6}: {depends}");
    if tooling::available(&[tooling::RPM]) {
        // The digest rpm recorded for it (rpm -V checks the installed file against it).
        let digests =
            run(tooling::command("rpm").args(["-qp", "--qf", "[%{FILENAMES} %{FILEDIGESTS}\n]"]).arg(dist.rpm()));
        let digest =
            digests.lines().find_map(|l| l.strip_prefix("/usr/bin/gitops ")).expect("/usr/bin/gitops in the .rpm");
        let sum = run(Command::new("sha256sum").arg(dist.unpack(dir.path()).join("gitops")));
        assert_eq!(Some(digest), sum.split_whitespace().next(), "the .rpm's /usr/bin/gitops is the tarball's");
    }
}

#[test]
fn install_sh_puts_every_file_where_the_deb_does_and_the_units_verify() {
    if !tooling::available(&[tooling::DIST, &[tooling::SYSTEMD_ANALYZE, tooling::MAN]].concat()) {
        return;
    }
    let dist = dist();
    let dir = support::tempdir();
    let release = dist.unpack(dir.path());
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let said = run(Command::new(release.join("install.sh")).arg("--root").arg(&root));
    assert!(said.contains("systemctl enable --now gitops.timer"), "it says what comes next: {said}");
    let installed = files_below(&root);

    // What the .deb installs, by path and mode (its man pages gzipped; Debian's zsh directory;
    // the copyright file Debian packages carry instead of the licenses' usual place).
    let deb_listing = run(Command::new("dpkg-deb").arg("--contents").arg(dist.deb()));
    let from_deb: BTreeMap<String, u32> = deb_listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let perms = &l.split_whitespace().next().unwrap()[1..];
            let path = l.split_whitespace().last().unwrap().trim_start_matches('.');
            let path = path.trim_end_matches(".gz").replace("/zsh/vendor-completions/", "/zsh/site-functions/");
            (path, mode_of(perms))
        })
        .filter(|(path, _)| path != "/usr/share/doc/gitops/copyright")
        .collect();
    assert_eq!(installed, from_deb, "install.sh and the .deb install the same files with the same modes");

    // As the packages leave them: configuration root-only, nothing enabled.
    assert_eq!(mode(&root.join("etc/gitops")), 0o700);
    assert_eq!(installed["/etc/gitops/gitops.env"], 0o600);
    assert_eq!(installed["/usr/bin/gitops"], 0o755);
    for unit in ["gitops.service", "gitops.timer", "gitops-webhook.service", "gitops-webhook.socket"] {
        assert_eq!(
            fs::read(root.join("usr/lib/systemd/system").join(unit)).unwrap(),
            fs::read(Path::new(MANIFEST_DIR).join("systemd").join(unit)).unwrap(),
            "{unit} is shipped unchanged"
        );
    }
    assert!(!root.join("etc/systemd").exists(), "install.sh enables nothing");

    // The man pages are where man looks, and the units' Documentation=man:gitops(1) resolves.
    let page = run(tooling::command("man").args(["-w", "-M"]).arg(root.join("usr/share/man")).arg("gitops-sync"));
    assert_eq!(page.trim(), root.join("usr/share/man/man1/gitops-sync.1").display().to_string());
    let bash = output(Command::new("bash").arg("-n").arg(root.join("usr/share/bash-completion/completions/gitops")));
    assert!(bash.status.success(), "{}", text(&bash));

    // systemd-analyze verify against the machine's unit library, as tests/units.rs does for
    // install-units: ExecStart= finds /usr/bin/gitops in the root, the man pages are found.
    let copied = Command::new("cp")
        .args(["-a", "--no-clobber", "/usr/lib/systemd/system/."])
        .arg(root.join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying /usr/lib/systemd/system");
    let verified = output(
        tooling::command("systemd-analyze")
            .env("MANPATH", root.join("usr/share/man"))
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(
                ["gitops.service", "gitops.timer", "gitops-webhook.service", "gitops-webhook.socket"]
                    .map(|u| format!("/usr/lib/systemd/system/{u}")),
            ),
    );
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify complained:\n{}",
        text(&verified)
    );

    // Again, as an upgrade: the operator's env file is kept.
    fs::write(root.join("etc/gitops/gitops.env"), "GITOPS_REPO_URL=/srv/fleet.git\n").unwrap();
    let said = run(Command::new(release.join("install.sh")).arg(format!("--root={}", root.display())));
    assert!(said.contains("kept"), "{said}");
    assert_eq!(fs::read_to_string(root.join("etc/gitops/gitops.env")).unwrap(), "GITOPS_REPO_URL=/srv/fleet.git\n");
    assert_eq!(mode(&root.join("etc/gitops/gitops.env")), 0o600);

    let refused = output(Command::new(release.join("install.sh")).arg("--root").arg(dir.path().join("missing")));
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).contains("is not a directory"), "{}", text(&refused));
}

#[test]
fn rpm_reads_installs_and_verifies_with_debians_rpm() {
    if !tooling::available(&[tooling::DIST, &[tooling::RPM], tooling::ROOTFS].concat()) {
        return;
    }
    let dist = dist();
    let rpm = dist.rpm();
    let query = |args: &[&str]| run(tooling::command("rpm").arg("-qp").args(args).arg(&rpm));

    assert_eq!(
        query(&["--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}"]),
        format!("gitops {} 1 x86_64", dist.version)
    );
    let files = query(&["--list"]);
    for path in [
        "/usr/bin/gitops",
        "/usr/lib/systemd/system/gitops.service",
        "/usr/lib/systemd/system/gitops.timer",
        "/usr/lib/systemd/system/gitops-webhook.service",
        "/usr/lib/systemd/system/gitops-webhook.socket",
        "/etc/gitops/gitops.env",
        "/usr/share/man/man1/gitops.1",
        "/usr/share/man/man1/gitops-sync.1",
        "/usr/share/bash-completion/completions/gitops",
        "/usr/share/zsh/site-functions/_gitops",
        "/usr/share/fish/vendor_completions.d/gitops.fish",
        "/usr/share/licenses/gitops/LICENSE-MIT",
    ] {
        assert!(files.lines().any(|l| l == path), "{path} in the .rpm:\n{files}");
    }
    assert_eq!(query(&["--configfiles"]).trim(), "/etc/gitops/gitops.env");
    let scripts = query(&["--scripts"]);
    assert!(scripts.contains("postinstall scriptlet") && scripts.contains("chmod 0700 /etc/gitops"), "{scripts}");
    assert!(scripts.contains("postuninstall scriptlet") && scripts.contains("daemon-reload"), "{scripts}");

    // Requirements: git, and no glibc newer than the floor. xz, not zstd, for Amazon Linux 2's rpm.
    let requires = query(&["--requires"]);
    assert!(requires.lines().any(|l| l.starts_with("git-core")), "{requires}");
    let newest = newest_glibc(&requires).expect("automatic requirements on libc.so.6(GLIBC_…)");
    assert!(version(&newest) <= version(GLIBC_FLOOR), "the .rpm requires GLIBC_{newest}:\n{requires}");
    assert!(!requires.contains("PayloadIsZstd"), "{requires}");

    // Installed into a scratch root (a Debian rootfs: the scriptlets need a shell), as a
    // kickstart's %post would: the scriptlet locks /etc/gitops down, rpm -V finds every file
    // as packaged, and the binary runs.
    let dir = support::tempdir();
    let root = dir.path().join("root");
    tooling::rootfs_copy(&root);
    let rpm_root = |args: &[&str]| run(tooling::command("rpm").arg("--root").arg(&root).args(args));
    rpm_root(&["--initdb"]);
    // --nodeps: Debian's root has no rpm database of git-core and glibc.
    run(tooling::command("rpm").arg("--root").arg(&root).args(["-i", "--nodeps"]).arg(&rpm));
    assert_eq!(rpm_root(&["-q", "gitops"]).trim(), format!("gitops-{}-1.x86_64", dist.version));
    assert_eq!(mode(&root.join("etc/gitops")), 0o700, "the %post scriptlet ran");
    assert_eq!(mode(&root.join("etc/gitops/gitops.env")), 0o600);
    assert_eq!(rpm_root(&["-V", "--nodeps", "gitops"]), "", "rpm -V: every file as packaged");
    let said = run(Command::new("chroot").arg(&root).args(["/usr/bin/gitops", "--version"]));
    assert!(said.starts_with(&format!("gitops {} (", dist.version)), "{said}");

    // An edited configuration survives removal as .rpmsave; everything else goes.
    fs::write(root.join("etc/gitops/gitops.env"), "GITOPS_REPO_URL=/srv/fleet.git\n").unwrap();
    rpm_root(&["-e", "--nodeps", "gitops"]);
    assert!(!root.join("usr/bin/gitops").exists() && !root.join("usr/lib/systemd/system/gitops.service").exists());
    assert!(root.join("etc/gitops/gitops.env.rpmsave").exists());
}

#[test]
fn tarball_on_debian_11_syncs_under_its_systemd() {
    let needs = [tooling::DIST, tooling::ROOTFS, &[tooling::SSH_KEYGEN, tooling::AGE]].concat();
    if !tooling::available(&needs) {
        return;
    }
    let dist = dist();
    let dir = support::tempdir();
    let root = dir.path().join("root");
    tooling::rootfs_copy_of("bullseye", &root);
    let ldd = e2e_systemd::chroot(&root, &["ldd", "--version"]);
    assert!(ldd.lines().next().is_some_and(|l| l.ends_with(" 2.31")), "Debian 11 has glibc 2.31: {ldd}");

    // Why the release is built as it is: this machine's own build does not start there.
    fs::copy(env!("CARGO_BIN_EXE_gitops"), root.join("tmp/gitops-built-here")).unwrap();
    let here = output(Command::new("chroot").arg(&root).args(["/tmp/gitops-built-here", "--version"]));
    assert!(!here.status.success() && text(&here).contains("GLIBC_2."), "{}", text(&here));

    // The operator's steps: unpack, install.sh, enable (offline, as in an image build).
    fs::copy(dist.tarball(), root.join("tmp/gitops.tar.gz")).unwrap();
    e2e_systemd::chroot(&root, &["tar", "-xzf", "/tmp/gitops.tar.gz", "-C", "/tmp"]);
    let release = format!("/tmp/gitops-{}-x86_64-linux-gnu", dist.version);
    e2e_systemd::chroot(&root, &["sh", &format!("{release}/install.sh")]);
    e2e_systemd::chroot(&root, &["systemctl", "enable", "gitops.timer"]);
    let said = e2e_systemd::chroot(&root, &["gitops", "--version"]);
    assert!(said.contains(&format!("glibc \u{2265} {GLIBC_FLOOR}")), "{said}");
    assert!(root.join("usr/share/man/man1/gitops.1").is_file(), "the man pages came along");
    // systemd 247 would fail the unit for its missing credentials: install.sh clears them there.
    let compat = root.join("usr/lib/systemd/system/gitops.service.d/credentials-need-systemd-250.conf");
    assert!(fs::read_to_string(&compat).is_ok_and(|text| text.ends_with("[Service]\nLoadCredential=\n")), "{compat:?}");

    e2e_systemd::boot_and_apply_two_commits(dir.path(), &root);
}

#[test]
fn deb_installs_on_debian_11_and_purges_cleanly() {
    if !tooling::available(&[tooling::DIST, tooling::ROOTFS].concat()) {
        return;
    }
    let dist = dist();
    let dir = support::tempdir();
    let root = dir.path().join("root");
    tooling::rootfs_copy_of("bullseye", &root);
    fs::copy(dist.deb(), root.join("tmp/gitops.deb")).unwrap();
    // Depends: libc6 (>= 2.17), git: dpkg finds both satisfied by Debian 11's.
    e2e_systemd::chroot(&root, &["dpkg", "-i", "/tmp/gitops.deb"]);
    let said = e2e_systemd::chroot(&root, &["gitops", "--version"]);
    assert!(said.contains(&format!("glibc \u{2265} {GLIBC_FLOOR}")), "{said}");
    let compat = root.join("usr/lib/systemd/system/gitops.service.d/credentials-need-systemd-250.conf");
    assert!(fs::read_to_string(&compat).is_ok_and(|text| text.ends_with("[Service]\nLoadCredential=\n")), "{compat:?}");
    assert_eq!(mode(&root.join("etc/gitops")), 0o700);

    e2e_systemd::chroot(&root, &["dpkg", "--purge", "gitops"]);
    assert!(!root.join("usr/bin/gitops").exists() && !compat.exists(), "purge removes the drop-in too");
    assert!(!root.join("usr/lib/systemd/system/gitops.service.d").exists());
    assert!(!root.join("etc/gitops/gitops.env").exists());
}

/// build.rs compiled and run by hand, as cargo would, with CARGO_MANIFEST_DIR at `dir`: its
/// `GITOPS_VERSION` line.
fn version_line_built_in(dir: &Path) -> String {
    static BUILD_SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    let script = BUILD_SCRIPT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gitops-build-script");
        // The rustc beside the cargo that builds these tests (root's PATH may have none).
        let rustc = Path::new(env!("CARGO")).with_file_name("rustc");
        run(Command::new(if rustc.exists() { rustc } else { PathBuf::from("rustc") })
            .args(["--edition", "2024", "-O", "-o"])
            .arg(&out)
            .arg(Path::new(MANIFEST_DIR).join("build.rs")));
        out
    });
    let said = run(Command::new(script)
        .current_dir(dir)
        .env("CARGO_MANIFEST_DIR", dir)
        .env("CARGO_PKG_VERSION", "9.8.7")
        .env("CARGO_CFG_TARGET_ARCH", "x86_64")
        .env("CARGO_CFG_TARGET_OS", "linux")
        .env("CARGO_CFG_TARGET_ENV", "gnu")
        .env_remove("GITOPS_BUILD_GLIBC"));
    said.lines()
        .find_map(|l| l.strip_prefix("cargo:rustc-env=GITOPS_VERSION="))
        .unwrap_or_else(|| panic!("no GITOPS_VERSION line:\n{said}"))
        .to_string()
}

#[test]
fn version_names_the_commit_of_its_own_checkout_or_unknown() {
    let dir = support::tempdir();
    // A source tarball: no .git anywhere above.
    let tarball = dir.path().join("gitops-9.8.7");
    fs::create_dir(&tarball).unwrap();
    assert_eq!(version_line_built_in(&tarball), "9.8.7 (unknown, x86_64-linux-gnu)");

    // Unpacked inside some other repository: that repository's commit is not ours.
    let git = |args: &[&str], cwd: &Path| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(cwd)
            .env("GIT_CONFIG_GLOBAL", "/dev/null"))
    };
    git(&["init", "-q"], dir.path());
    git(&["commit", "-q", "--allow-empty", "-m", "outer"], dir.path());
    assert_eq!(version_line_built_in(&tarball), "9.8.7 (unknown, x86_64-linux-gnu)");

    // Its own checkout: the short commit of HEAD.
    git(&["init", "-q"], &tarball);
    git(&["commit", "-q", "--allow-empty", "-m", "ours"], &tarball);
    let head = git(&["rev-parse", "--short=7", "HEAD"], &tarball);
    assert_eq!(version_line_built_in(&tarball), format!("9.8.7 ({}, x86_64-linux-gnu)", head.trim()));
}
