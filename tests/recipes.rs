//! The install recipes in kickstart/: each validated by its own tool (ksvalidator, packer
//! validate, cloud-init schema), and the kickstart's %post scripts run for real — the fetch
//! step on this host, the install step in a chroot of a Debian rootfs with stub dnf/restorecon.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::support;
use crate::support::tooling;

const KS: &str = include_str!("../kickstart/gitops.ks");
const KS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kickstart/gitops.ks");
const CLOUD_INIT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kickstart/cloud-init.yaml");
const PACKER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kickstart/packer");

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The `%post` sections of the kickstart: (header line, body).
fn post_sections() -> Vec<(String, String)> {
    let mut sections = Vec::new();
    let mut lines = KS.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("%post") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "%end").collect();
            sections.push((line.to_string(), body.join("\n") + "\n"));
        }
    }
    sections
}

#[test]
fn kickstart_passes_ksvalidator_for_rhel9() {
    if !tooling::available(&[tooling::KSVALIDATOR]) {
        return;
    }
    let out = run(tooling::command("ksvalidator").args(["-v", "RHEL9", KS_PATH]));
    assert!(out.status.success(), "ksvalidator:\n{}", text(&out));

    // Guard: ksvalidator does reject a broken kickstart.
    let dir = support::tempdir();
    let broken = dir.path().join("broken.ks");
    fs::write(&broken, KS.replace("rootpw --lock", "rootpw --lock --bogus")).unwrap();
    let out = run(tooling::command("ksvalidator").args(["-v", "RHEL9"]).arg(&broken));
    assert!(!out.status.success(), "ksvalidator accepted {}", text(&out));
}

#[test]
fn kickstart_post_scripts_parse_and_keep_host_keys_checked() {
    let sections = post_sections();
    assert_eq!(sections.len(), 2, "a --nochroot fetch step and the install step");
    assert!(sections[0].0.contains("--nochroot") && !sections[1].0.contains("--nochroot"));
    for (header, body) in &sections {
        assert!(header.contains("--erroronfail"), "{header}: a failed step stops the install");
        // bash -n also warns (exit 0) about a here-document that runs to the end of the script.
        let out = run(Command::new("bash").args(["-n", "-c", body]));
        assert!(out.status.success() && text(&out).is_empty(), "{header}: bash -n: {}", text(&out));
    }
    let install = &sections[1].1;
    // Every here-document's terminator is quoted (no expansion inside) and unique.
    let terminators: Vec<&str> = install.lines().filter_map(|l| l.split_once("<<").map(|(_, t)| t.trim())).collect();
    assert_eq!(terminators.len(), 4, "{terminators:?}");
    let mut unique = terminators.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), terminators.len(), "{terminators:?}");
    assert!(terminators.iter().all(|t| t.starts_with('\'') && t.ends_with('\'')));
    for forbidden in ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "authorized_keys"] {
        assert!(!KS.contains(forbidden), "the kickstart must not contain {forbidden}");
    }
}

/// Run the --nochroot fetch step with `cmdline` as the kernel command line; returns (output, sysroot).
fn fetch_step(dir: &Path, cmdline: &str) -> (Output, std::path::PathBuf) {
    let sysroot = dir.join("sysimage");
    fs::create_dir_all(sysroot.join("root")).unwrap();
    let cmdline_file = dir.join("cmdline");
    fs::write(&cmdline_file, cmdline).unwrap();
    let body = post_sections()[0].1.replace("/proc/cmdline", cmdline_file.to_str().unwrap());
    let out = run(Command::new("bash").args(["-c", &body]).env("ANA_INSTALL_PATH", &sysroot));
    (out, sysroot)
}

#[test]
fn kickstart_fetch_step_installs_only_a_package_with_the_pinned_checksum() {
    let dir = support::tempdir();
    let rpm = dir.path().join("gitops-0.1.0-1.x86_64.rpm");
    fs::write(&rpm, "not really an rpm").unwrap();
    let sum = run(Command::new("sha256sum").arg(&rpm));
    let sha = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_string();

    let (out, sysroot) = fetch_step(
        dir.path(),
        &format!(
            "BOOT_IMAGE=vmlinuz inst.ks=http://x/gitops.ks gitops.rpm={} gitops.rpm_sha256={sha} quiet",
            rpm.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(sysroot.join("root/gitops.rpm")).unwrap(), fs::read(&rpm).unwrap());

    let wrong = "0".repeat(64);
    let (out, _) =
        fetch_step(&dir.path().join("wrong"), &format!("gitops.rpm={} gitops.rpm_sha256={wrong}", rpm.display()));
    assert!(!out.status.success(), "a checksum mismatch stops the install");

    let (out, _) = fetch_step(&dir.path().join("missing"), "BOOT_IMAGE=vmlinuz quiet");
    assert!(!out.status.success());
    assert!(text(&out).contains("boot with gitops.rpm=URL-or-path gitops.rpm_sha256=HEX"), "{}", text(&out));
}

#[test]
fn kickstart_install_step_in_a_chroot_places_config_keys_and_enables_the_timer() {
    if !tooling::available(tooling::ROOTFS) {
        return;
    }
    let dir = support::tempdir();
    let root = dir.path().join("root");
    tooling::rootfs_copy(&root);
    // Stand-ins for Rocky's tools: dnf "installs the package" (binary + units, as the RPM
    // does), restorecon records its call.
    let pkg = root.join("root/pkg");
    fs::create_dir_all(&pkg).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_gitops"), pkg.join("gitops")).unwrap();
    for unit in ["gitops.service", "gitops.timer"] {
        fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd").join(unit), pkg.join(unit)).unwrap();
    }
    let stub = |name: &str, body: &str| {
        let path = root.join("usr/local/bin").join(name);
        fs::write(&path, format!("#!/bin/sh\necho \"{name} $*\" >> /root/calls\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    stub(
        "dnf",
        "install -m 0755 /root/pkg/gitops /usr/bin/gitops\n\
         install -d /usr/lib/systemd/system\n\
         install -m 0644 /root/pkg/gitops.service /root/pkg/gitops.timer /usr/lib/systemd/system/",
    );
    stub("restorecon", "");
    let install = post_sections()[1].1.clone();
    let chroot = |script: &str| {
        fs::write(root.join("root/gitops.rpm"), "rpm").unwrap();
        fs::write(root.join("root/post.sh"), script).unwrap();
        run(Command::new("chroot")
            .arg(&root)
            .args(["/usr/bin/bash", "/root/post.sh"])
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
    };

    // As shipped, the placeholders stop the install.
    let out = chroot(&install);
    assert!(!out.status.success());
    assert!(text(&out).contains("still hold REPLACE-ME placeholders"), "{}", text(&out));

    // Filled in as an operator would, with a real key (gitops parses allowed_signers); the
    // guard's own pattern is left alone.
    let keygen = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
        .arg(dir.path().join("key")));
    assert!(keygen.status.success(), "{}", text(&keygen));
    let private = fs::read_to_string(dir.path().join("key")).unwrap();
    let public = fs::read_to_string(dir.path().join("key.pub")).unwrap();
    let public_key = public.split_whitespace().nth(1).unwrap();
    let filled = install
        .replace("REPLACE-ME/fleet.git", "ops/fleet.git")
        .replace("ssh-ed25519 REPLACE-ME", &format!("ssh-ed25519 {public_key}"))
        .replace("-----BEGIN OPENSSH PRIVATE KEY-----\nREPLACE-ME\n-----END OPENSSH PRIVATE KEY-----\n", &private);
    let out = chroot(&filled);
    assert!(out.status.success(), "%post failed:\n{}", text(&out));
    let calls = fs::read_to_string(root.join("root/calls")).unwrap();
    assert!(calls.contains("dnf install -y --disablerepo=* /root/gitops.rpm"), "{calls}");
    assert!(calls.contains("restorecon -R /etc/gitops"), "{calls}");
    assert!(!root.join("root/gitops.rpm").exists(), "the package file is removed");

    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("etc/gitops"), 0o700);
    assert_eq!(mode("etc/gitops/deploy_key"), 0o600);
    assert_eq!(mode("etc/gitops/gitops.env"), 0o600);
    assert_eq!(mode("etc/gitops/known_hosts"), 0o644);
    assert_eq!(mode("etc/gitops/allowed_signers"), 0o644);
    // Each here-document wrote exactly its own lines.
    assert_eq!(
        fs::read_to_string(root.join("etc/gitops/known_hosts")).unwrap(),
        format!("git.example.com ssh-ed25519 {public_key}\n")
    );
    assert_eq!(fs::read_to_string(root.join("etc/gitops/deploy_key")).unwrap(), private);
    assert!(!root.join("root/.ssh/authorized_keys").exists());
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/timers.target.wants/gitops.timer")).unwrap(),
        Path::new("/usr/lib/systemd/system/gitops.timer")
    );
    let enabled =
        run(Command::new("systemctl").arg(format!("--root={}", root.display())).args(["is-enabled", "gitops.timer"]));
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "enabled");

    // gitops accepts what the kickstart wrote: the env file parses, the key's mode passes the
    // check, known_hosts is readable; only the fetch (of a path that does not exist) fails.
    let out = run(Command::new("chroot").arg(&root).args([
        "/usr/bin/gitops",
        "sync",
        "--repo-url",
        "/srv/none.git",
        "--host",
        "ks-test",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/srv/none.git"), "{}", text(&out));
}

#[test]
fn cloud_init_user_data_passes_the_schema() {
    let script = fs::read_to_string(CLOUD_INIT_PATH).unwrap();
    // The runcmd shell script: the block after `- |`, indented by 6.
    let body: String = script
        .split_once("    - |\n")
        .expect("a runcmd block")
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("      ").unwrap_or(l)))
        .collect();
    let out = run(Command::new("sh").args(["-n", "-c", &body]));
    assert!(out.status.success() && text(&out).is_empty(), "{}", text(&out));
    assert!(body.contains("sha256sum --check") && body.contains("gitops install-units --enable"));
    for forbidden in ["StrictHostKeyChecking=no", "authorized_keys"] {
        assert!(!script.contains(forbidden), "{forbidden}");
    }

    if !tooling::available(&[tooling::CLOUD_INIT]) {
        return;
    }
    let out = run(tooling::command("cloud-init").args(["schema", "--config-file", CLOUD_INIT_PATH]));
    assert!(out.status.success() && text(&out).contains("Valid cloud-config"), "cloud-init schema:\n{}", text(&out));
    // Guard: the schema check does catch a wrong type.
    let dir = support::tempdir();
    let broken = dir.path().join("broken.yaml");
    fs::write(&broken, script.replacen("permissions: \"0600\"", "permissions: 600", 1)).unwrap();
    let out = run(tooling::command("cloud-init").args(["schema", "--config-file"]).arg(&broken));
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn packer_template_validates() {
    if !tooling::available(&[tooling::PACKER]) {
        return;
    }
    let vars = format!("-var-file={PACKER_DIR}/example.pkrvars.hcl");
    let out = run(tooling::command("packer").args(["validate", &vars, PACKER_DIR]));
    assert!(out.status.success(), "packer validate:\n{}", text(&out));
    let out = run(tooling::command("packer").args(["fmt", "-check", PACKER_DIR]));
    assert!(out.status.success(), "packer fmt -check:\n{}", text(&out));

    // Guard: validate does reject a wrong setting.
    let dir = support::tempdir();
    let template = fs::read_to_string(Path::new(PACKER_DIR).join("rocky9.pkr.hcl")).unwrap();
    fs::write(dir.path().join("broken.pkr.hcl"), template.replace("\"qcow2\"", "\"qcow3\"")).unwrap();
    let out = run(tooling::command("packer").args(["validate", &vars]).arg(dir.path()));
    assert!(!out.status.success(), "{}", text(&out));
}

/// "The kickstart installs the .rpm from dist/": the Packer template's recipe, run after
/// `just dist` with a stand-in packer, serves dist's .rpm and passes the SHA-256 that
/// dist/SHA256SUMS lists, which the kickstart's fetch step then accepts.
#[test]
fn packer_recipe_serves_the_dist_rpm_with_its_sha256sums_checksum() {
    if !tooling::available(tooling::DIST) {
        return;
    }
    let dist = crate::dist::dist();
    let template = fs::read_to_string(Path::new(PACKER_DIR).join("rocky9.pkr.hcl")).unwrap();
    let recipe: String = template
        .lines()
        .skip_while(|l| !l.starts_with("#   just dist"))
        .skip(1)
        .take_while(|l| l.starts_with("#   "))
        .map(|l| l.trim_start_matches("#   ").split("   #").next().unwrap().to_string() + "\n")
        .collect();
    assert!(recipe.contains("packer build"), "the recipe in rocky9.pkr.hcl's header:\n{recipe}");

    let dir = support::tempdir();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("kickstart")).unwrap();
    fs::copy(KS_PATH, tree.join("kickstart/gitops.ks")).unwrap();
    std::os::unix::fs::symlink(&dist.dir, tree.join("dist")).unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::write(bin.join("packer"), "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$PACKER_ARGS\"\n").unwrap();
    fs::set_permissions(bin.join("packer"), fs::Permissions::from_mode(0o755)).unwrap();
    let args_file = dir.path().join("packer-args");
    let out = run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", &recipe])
        .current_dir(&tree)
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("PACKER_ARGS", &args_file));
    assert!(out.status.success(), "the recipe failed:\n{recipe}\n{}", text(&out));

    let args = fs::read_to_string(&args_file).unwrap();
    let var = |name: &str| args.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).map(String::from);
    let rpm_name = var("rpm_name").expect("-var rpm_name=");
    let sha = var("rpm_sha256").expect("-var rpm_sha256=");
    assert_eq!(Path::new(&rpm_name), dist.rpm().strip_prefix(&dist.dir).unwrap());
    let served = tree.join("build/http").join(&rpm_name);
    assert_eq!(fs::read(&served).unwrap(), fs::read(dist.rpm()).unwrap());
    assert!(tree.join("build/http/gitops.ks").is_file());

    let (out, sysroot) = fetch_step(
        &dir.path().join("install"),
        &format!("inst.ks=http://x/gitops.ks gitops.rpm={} gitops.rpm_sha256={sha}", served.display()),
    );
    assert!(out.status.success(), "the kickstart refused the recipe's checksum: {}", text(&out));
    assert_eq!(fs::read(sysroot.join("root/gitops.rpm")).unwrap(), fs::read(dist.rpm()).unwrap());
}
