//! `gitops install-units`: the shipped systemd units, embedded in the binary, written into a root and enabled with symlinks.
//!
//! Image builds (kickstart `%post`, Packer, debootstrap, `docker build`) have no running systemd,
//! so enabling is done the way `systemctl enable` does it on disk: a symlink per `WantedBy=`
//! target in `/etc/systemd/system/<target>.wants/`. Running it again changes nothing.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};

use crate::state::write_atomic_mode;

/// A unit file shipped in `systemd/`.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// File name, e.g. `gitops.timer`.
    pub name: &'static str,
    /// The unit file exactly as shipped.
    pub text: &'static str,
    /// Whether `--enable` enables it. Only the timer: the service is started by it, and a
    /// listening socket is a decision for the operator.
    pub enable: bool,
}

/// Every unit the binary ships, in the order they are written.
pub const UNITS: &[Unit] = &[
    Unit { name: "gitops.service", text: include_str!("../../systemd/gitops.service"), enable: false },
    Unit { name: "gitops.timer", text: include_str!("../../systemd/gitops.timer"), enable: true },
    // Installed, not enabled: a listening socket is the operator's decision (and needs a secret).
    Unit { name: "gitops-webhook.service", text: include_str!("../../systemd/gitops-webhook.service"), enable: false },
    Unit { name: "gitops-webhook.socket", text: include_str!("../../systemd/gitops-webhook.socket"), enable: false },
];

/// Where administrator-installed units live, relative to the root.
const UNIT_DIR: &str = "etc/systemd/system";

/// Write every unit into `root/etc/systemd/system` and, with `enable`, enable the timer.
pub fn install(root: &Path, enable: bool) -> anyhow::Result<()> {
    let meta = fs::metadata(root).with_context(|| {
        format!("--root {}: cannot read it; pass the directory of the system being built", root.display())
    })?;
    if !meta.is_dir() {
        bail!("--root {}: not a directory; pass the directory of the system being built", root.display());
    }
    let unit_dir = root.join(UNIT_DIR);
    create_dir(&unit_dir)?;
    for unit in UNITS {
        let path = unit_dir.join(unit.name);
        if fs::read(&path).is_ok_and(|old| old == unit.text.as_bytes()) {
            log::info!("{} is up to date", path.display());
            continue;
        }
        write_atomic_mode(&path, unit.text.as_bytes(), 0o644)?;
        log::info!("wrote {}", path.display());
    }
    if enable {
        for unit in UNITS.iter().filter(|u| u.enable) {
            for target in wanted_by(unit.text) {
                enable_for(&unit_dir, unit.name, &target)?;
            }
        }
    }
    if !root.join("usr/bin/gitops").exists() {
        log::warn!(
            "{} does not exist: the units run /usr/bin/gitops; install the binary there",
            root.join("usr/bin/gitops").display()
        );
    }
    Ok(())
}

/// `root/etc/systemd/system/<target>.wants/<unit>` → `/etc/systemd/system/<unit>`, as `systemctl enable` makes it.
fn enable_for(unit_dir: &Path, unit: &str, target: &str) -> anyhow::Result<()> {
    let wants = unit_dir.join(format!("{target}.wants"));
    create_dir(&wants)?;
    let link = wants.join(unit);
    // Absolute and without the root prefix: it is resolved inside the installed system.
    let destination = Path::new("/").join(UNIT_DIR).join(unit);
    match fs::read_link(&link) {
        Ok(existing) if existing == destination => {
            log::info!("{unit} is already enabled ({})", link.display());
            return Ok(());
        }
        Ok(_) => fs::remove_file(&link).with_context(|| format!("replacing the stale symlink {}", link.display()))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(_) => {
            bail!("{} exists and is not a symlink; remove it and run install-units --enable again", link.display())
        }
    }
    std::os::unix::fs::symlink(&destination, &link)
        .with_context(|| format!("enabling {unit}: creating the symlink {}", link.display()))?;
    log::info!("enabled {unit}: {} -> {}", link.display(), destination.display());
    Ok(())
}

/// The targets named by `WantedBy=` in the unit's `[Install]` section.
fn wanted_by(text: &str) -> Vec<String> {
    let mut section = "";
    let mut targets = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            section = line;
        } else if section == "[Install]"
            && let Some(value) = line.strip_prefix("WantedBy=")
        {
            targets.extend(value.split_whitespace().map(String::from));
        }
    }
    targets
}

/// `mkdir -p`, giving the directories it creates the usual 0755 (the process umask is 077).
fn create_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", dir.display())),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_timer_is_enabled_and_it_wants_timers_target() {
        let enabled: Vec<&str> = UNITS.iter().filter(|u| u.enable).map(|u| u.name).collect();
        assert_eq!(enabled, ["gitops.timer"]);
        assert_eq!(wanted_by(UNITS[1].text), ["timers.target"]);
        assert!(wanted_by(UNITS[0].text).is_empty());
    }

    #[test]
    fn wanted_by_reads_only_the_install_section() {
        let text = "[Unit]\nWantedBy=nope.target\n[Install]\nWantedBy=a.target b.target\nWantedBy=c.target\n";
        assert_eq!(wanted_by(text), ["a.target", "b.target", "c.target"]);
    }
}
