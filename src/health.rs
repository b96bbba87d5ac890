//! The health check: `health.sh` beside the entrypoint (a host's own in `hosts/<name>/` first, like the
//! entrypoint), run after a successful entrypoint with the same environment and secrets, and tried again
//! a few times with a pause, for services that take a moment to come up. A failed check is a failed apply.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::apply::{self, Job, Ran};
use crate::inventory::Inventory;
use crate::parse::parse_duration;

/// The health check's file name, beside the entrypoint.
pub const SCRIPT: &str = "health.sh";

/// `--health-timeout`, `--health-retries`, `--health-interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Kill a try after this long.
    pub timeout: Duration,
    /// Tries after the first one.
    pub retries: u32,
    /// Pause between tries.
    pub interval: Duration,
}

impl HealthSettings {
    /// Validate the flags; errors name the flag and the fix.
    pub fn from_args(timeout: &str, retries: u32, interval: &str) -> anyhow::Result<HealthSettings> {
        let timeout =
            parse_duration(timeout).map_err(|e| anyhow!("--health-timeout {timeout:?}: {e}; use e.g. 60s or 5m"))?;
        let interval =
            parse_duration(interval).map_err(|e| anyhow!("--health-interval {interval:?}: {e}; use e.g. 5s or 1m"))?;
        if retries > 100 {
            bail!(
                "--health-retries {retries}: at most 100; a service that needs longer needs a longer --health-interval"
            );
        }
        Ok(HealthSettings { timeout, retries, interval })
    }
}

/// The health check that belongs to `entrypoint` (both relative to the config root), if the revision has
/// one: `exists` says whether a path is a file there (a checkout on disk, or a commit's tree).
pub fn script(inventory: &Inventory, entrypoint: &Path, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let beside = entrypoint.parent().and_then(|dir| inventory.host_dirs.iter().find(|host| dir == *host));
    // A host's entrypoint override lives in hosts/<name>/: look for the check the same way, from the top.
    let shared = match beside {
        Some(_) => PathBuf::from(SCRIPT),
        None => entrypoint.parent().unwrap_or(Path::new("")).join(SCRIPT),
    };
    let resolved = inventory.resolve(&shared, &exists);
    exists(&resolved).then_some(resolved)
}

/// Run the check `script` with the entrypoint job's environment, appending to its log, until it passes
/// or the tries run out. The returned `Ran` is the last try's, its error naming the check and the tries.
pub fn check(settings: &HealthSettings, script: &Path, entrypoint_job: &Job) -> anyhow::Result<Ran> {
    let tries = settings.retries + 1;
    let mut last = None;
    for attempt in 1..=tries {
        let mut log = std::fs::OpenOptions::new().append(true).open(entrypoint_job.log_path)?;
        writeln!(log, "gitops: health check {} (try {attempt} of {tries})", script.display())?;
        drop(log);
        let job = Job {
            checkout: entrypoint_job.checkout,
            entrypoint: script,
            role: "health check",
            env: entrypoint_job.env.clone(),
            timeout: settings.timeout,
            log_path: entrypoint_job.log_path,
            group_file: entrypoint_job.group_file,
            append: true,
        };
        let ran = apply::run(&job)?;
        if ran.success {
            if attempt > 1 {
                log::info!("health check {} passed on try {attempt} of {tries}", script.display());
            }
            return Ok(ran);
        }
        log::warn!(
            "health check {} failed (try {attempt} of {tries}): {}",
            script.display(),
            ran.error.as_deref().unwrap_or("?")
        );
        last = Some(ran);
        if attempt < tries {
            std::thread::sleep(settings.interval);
        }
    }
    let mut ran = last.ok_or_else(|| anyhow!("internal: no health check try ran"))?;
    let tries = if tries == 1 { "1 try".to_string() } else { format!("{tries} tries") };
    ran.error = ran.error.map(|e| format!("{e} ({tries})"));
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_units_and_sane_retries() {
        let ok = HealthSettings::from_args("60s", 3, "5s").unwrap();
        assert_eq!((ok.timeout, ok.retries, ok.interval), (Duration::from_secs(60), 3, Duration::from_secs(5)));
        assert!(HealthSettings::from_args("60", 3, "5s").unwrap_err().to_string().contains("did you mean 60s"));
        assert!(HealthSettings::from_args("60s", 1000, "5s").is_err());
    }

    #[test]
    fn the_check_sits_beside_the_entrypoint_and_a_hosts_own_wins() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = Inventory::new(PathBuf::new(), "web1", vec![], PathBuf::from("teardown.sh"));
        let run = Path::new("run.sh");
        let on_disk = |p: &Path| dir.path().join(p).is_file();
        assert_eq!(script(&inventory, run, on_disk), None);
        std::fs::write(dir.path().join("health.sh"), "").unwrap();
        assert_eq!(script(&inventory, run, on_disk), Some(PathBuf::from("health.sh")));
        std::fs::create_dir_all(dir.path().join("hosts/web1")).unwrap();
        std::fs::write(dir.path().join("hosts/web1/health.sh"), "").unwrap();
        assert_eq!(script(&inventory, run, on_disk), Some(PathBuf::from("hosts/web1/health.sh")));
        assert_eq!(
            script(&inventory, Path::new("hosts/web1/run.sh"), on_disk),
            Some(PathBuf::from("hosts/web1/health.sh"))
        );
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/health.sh"), "").unwrap();
        let other = Inventory::new(PathBuf::new(), "db1", vec![], PathBuf::from("teardown.sh"));
        assert_eq!(script(&other, Path::new("bin/apply"), on_disk), Some(PathBuf::from("bin/health.sh")));
    }
}
