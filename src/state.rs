//! The state directory: its layout, the run lock, and state.json written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state directory itself.
    pub root: PathBuf,
}

impl Layout {
    /// The lock file held for the whole run.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// The state document.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The bare cache repository fetched into.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache.git")
    }
    /// One checkout per commit lives below here.
    pub fn revisions(&self) -> PathBuf {
        self.root.join("revisions")
    }
    /// Symlink to the live revision.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    /// What each revision was written with (index files), to rebuild one from another.
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }
    /// Entrypoint logs and changed-file lists.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
}

/// What state.json records between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The commit whose entrypoint last succeeded: what this host runs.
    pub applied_commit: Option<String>,
    /// When `applied_commit` was applied (RFC 3339).
    pub applied_at: Option<String>,
    /// The last apply attempt, successful or not.
    pub last_attempt: Option<AttemptRecord>,
    /// The last signature verdict (when verification is configured).
    #[serde(default)]
    pub verification: Option<VerificationRecord>,
    /// Commits applied on this host, oldest first (bounded): the high-water marks that tell a
    /// rollback to any of them apart from new work even when the cache repository is gone.
    #[serde(default)]
    pub applied_history: Vec<String>,
    /// Reboot requests, the reboot in flight and a FleetLock slot held (left out while there are none).
    #[serde(default, skip_serializing_if = "crate::reboot::RebootState::is_empty")]
    pub reboot: crate::reboot::RebootState,
}

/// How many applied commits `applied_history` remembers.
pub const HISTORY_LEN: usize = 100;

/// The outcome of checking signatures for one deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// The commit that was to be deployed.
    pub commit: String,
    /// "verified" or "rejected".
    pub result: String,
    /// The commit or tag that failed (or the head, when verified).
    pub object: String,
    /// Principals of the signer that matched, when verified.
    pub principal: Option<String>,
    /// Fingerprint of the signing key, when there was a readable signature.
    pub fingerprint: Option<String>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// How many commits were checked.
    pub commits_checked: usize,
    /// When (RFC 3339).
    pub at: String,
}

/// One apply attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The commit attempted.
    pub commit: String,
    /// The commit applied before it, if any.
    pub previous_commit: Option<String>,
    /// "applied" or "apply-failed".
    pub result: String,
    /// Consecutive attempts at this commit, this one included.
    pub attempts: u32,
    /// The entrypoint's exit code, None when it was killed or could not start.
    pub exit_code: Option<i32>,
    /// Why it failed, in one line.
    pub error: Option<String>,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Path of the entrypoint's log.
    pub log: PathBuf,
}

impl State {
    /// Record a successful apply of `commit`.
    pub fn record_applied(&mut self, commit: &str, at: String) {
        self.applied_commit = Some(commit.to_string());
        self.applied_at = Some(at);
        self.applied_history.retain(|c| c != commit);
        self.applied_history.push(commit.to_string());
        let excess = self.applied_history.len().saturating_sub(HISTORY_LEN);
        self.applied_history.drain(..excess);
    }

    /// The last failed commit and how many times in a row it failed.
    pub fn last_failure(&self) -> Option<(&str, u32)> {
        self.last_attempt.as_ref().filter(|a| a.result != "applied").map(|a| (a.commit.as_str(), a.attempts))
    }
}

/// Read state.json for a run; a corrupt one is moved aside (never overwritten) and the run starts afresh.
pub fn load_or_quarantine(path: &Path) -> anyhow::Result<State> {
    match load(path) {
        Ok(state) => Ok(state),
        Err(error) if path.exists() && error.downcast_ref::<serde_json::Error>().is_some() => {
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let aside = path.with_file_name(format!("state.json.corrupt-{stamp}"));
            fs::rename(path, &aside).with_context(|| format!("moving corrupt {} aside", path.display()))?;
            log::error!(
                "{} was corrupt ({}); moved it to {} and starting as a new host: the branch head will be verified and applied again",
                path.display(),
                error.root_cause(),
                aside.display()
            );
            Ok(State::default())
        }
        Err(error) => Err(error),
    }
}

/// Read state.json; a missing file is the empty state (first run).
pub fn load(path: &Path) -> anyhow::Result<State> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&text).with_context(|| format!("{} is not valid state JSON", path.display()))
}

/// Write state.json atomically: temp file, fsync, rename, fsync the directory.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(state).context("serialising state")?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Replace `path` with `bytes` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with explicit permissions (the process umask of 077 would make them 0600).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("state path has no parent directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if path.file_name().is_some_and(|n| n == "state.json") {
            crate::failpoint::hit("state-temp-written");
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// fsync a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The exclusive run lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held(PathBuf),
    /// The lock file could not be opened.
    Io(anyhow::Error),
}

/// Take the run lock without waiting.
pub fn lock(path: &Path) -> Result<RunLock, LockError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
        .map_err(LockError::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LockError::Io(anyhow::Error::new(e).context(format!("locking {}", path.display()))))
        }
    }
}

/// Remove temp files that runs killed mid-write left in the state directory (call under the lock).
pub fn remove_stale_temp(layout: &Layout) {
    for dir in [layout.root.clone(), layout.logs()] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                log::debug!("removing {name}, left by an interrupted run");
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Create the state directory tree (mode 0700 through the process umask).
pub fn ensure_dirs(layout: &Layout) -> anyhow::Result<()> {
    for dir in [layout.root.clone(), layout.revisions(), layout.logs()] {
        fs::create_dir_all(&dir).with_context(|| {
            format!("creating state directory {}; check permissions or pass --state-dir", dir.display())
        })?;
    }
    if !layout.root.is_dir() {
        bail!("state directory {} is not a directory", layout.root.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), State::default());
        let state = State { applied_commit: Some("abc".into()), ..State::default() };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{not json").unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("state.json"), "{err}");
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = lock(&path).unwrap();
        assert!(matches!(lock(&path), Err(LockError::Held(_))));
    }
}
