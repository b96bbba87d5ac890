//! state.json: what a host remembers between runs, written atomically.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;

/// What state.json records between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The commit whose entrypoint last succeeded ("applied"; what is live is `live`, which can be a commit
    /// whose entrypoint failed).
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
    #[serde(default, skip_serializing_if = "crate::reboot::record::RebootState::is_empty")]
    pub reboot: crate::reboot::record::RebootState,
    /// The ref `applied_commit` came from (`main`, `testing/web-1`), when it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_from: Option<String>,
    /// When `applied_commit` came from a testing branch: the branch's tip it was deployed on. Its
    /// presence is what lets the host leave the testing commit for the branch, and the branch must
    /// not move behind it (the branch's own rewind guard while a testing commit is live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testing_base: Option<String>,
    /// The last successful reconcile (`--reapply-every`) of `applied_commit` (RFC 3339); `applied_at`
    /// stays the time it went live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
    /// The last real fetch: which remote served it, when, and the change probe's validators (kept only
    /// with `--mirror` or `--probe-url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<crate::polling::record::FetchRecord>,
    /// Where this host stands in the rollout of the newest commit with a rollout policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRecord>,
    /// The revision `current` points at and how its entrypoint ended (written when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveRecord>,
    /// The last automatic rollback: from which commit, to which, why, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
}

/// An automatic rollback: recorded before it starts, so that a run killed during it resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// The commit that failed (not retried until a newer commit or `--retry`).
    pub from: String,
    /// The commit gone back to: the one this host applied before.
    pub to: String,
    /// Why, in one line ("health check health.sh exited with code 1 (4 tries)").
    pub why: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended, None while it has not (a run killed during it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Whether going back worked.
    #[serde(default)]
    pub succeeded: bool,
    /// Tries at going back (a failed rollback is tried again, up to `--max-attempts`).
    pub attempts: u32,
    /// Which attempt at `from` failed (a `--retry` is the next one).
    #[serde(default)]
    pub failed_attempt: u32,
}

/// This host and one commit's rollout: kept so that a backdated commit cannot skip the wave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The commit.
    pub commit: String,
    /// When this host first saw it (RFC 3339): the wave starts here without a gate.
    pub first_seen: String,
    /// When this host first saw its gate open (RFC 3339): the wave starts here with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_opened: Option<String>,
    /// The policy let this host go: retries of the commit do not wait again.
    #[serde(default)]
    pub released: bool,
}

/// How many applied commits `applied_history` remembers.
pub const HISTORY_LEN: usize = 100;

/// The outcome of checking signatures for one deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// The commit that was to be deployed.
    pub commit: String,
    /// Whether the deploy may go on.
    #[serde(rename = "result")]
    pub verdict: SignatureVerdict,
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

/// The signature verdict on a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureVerdict {
    /// Every commit (and tag) that had to be signed was, by an allowed key.
    Verified,
    /// One was not: nothing was deployed.
    Rejected,
}

/// How the live revision's entrypoint ended (see `live` for what live and applied mean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiveResult {
    /// Its entrypoint (and, for a reconcile, its last run) succeeded.
    Applied,
    /// Its entrypoint failed or timed out: the revision is live but not in the state it describes.
    Failed,
    /// It went live but no run recorded how its entrypoint ended (a run was killed after the swap).
    Unfinished,
}

impl LiveResult {
    /// The word used in status, metrics labels and notifications.
    pub const fn label(self) -> &'static str {
        match self {
            LiveResult::Applied => "applied",
            LiveResult::Failed => "failed",
            LiveResult::Unfinished => "unfinished",
        }
    }
}

/// state.json's record of the live revision, written when its entrypoint ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The commit `current` pointed at when the entrypoint ended.
    pub commit: String,
    /// How it ended.
    pub result: LiveResult,
    /// When the commit went live (RFC 3339): the start of the run that published it.
    pub since: String,
    /// Why it failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One apply attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The commit attempted.
    pub commit: String,
    /// The commit applied before it, if any.
    pub previous_commit: Option<String>,
    /// Applied or ApplyFailed.
    pub result: Outcome,
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
    /// The remote the commit was fetched from (URL, redacted), when mirrors are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// Why it ran (`GITOPS_REASON`: new-commit, retry, reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl State {
    /// Record a successful apply of `commit`.
    pub fn record_applied(&mut self, commit: &str, at: String) {
        if self.applied_commit.as_deref() != Some(commit) {
            self.reconciled_at = None;
        }
        self.applied_commit = Some(commit.to_string());
        self.applied_at = Some(at);
        self.applied_history.retain(|c| c != commit);
        self.applied_history.push(commit.to_string());
        let excess = self.applied_history.len().saturating_sub(HISTORY_LEN);
        self.applied_history.drain(..excess);
    }

    /// Refuse values no run could have written: every commit a decision reads must be a commit id.
    fn check(&self) -> Result<(), String> {
        let attempt = self.last_attempt.as_ref();
        let commits = [("applied_commit", self.applied_commit.as_deref())]
            .into_iter()
            .chain(self.applied_history.iter().map(|c| ("applied_history", Some(c.as_str()))))
            .chain([("last_attempt.commit", attempt.map(|a| a.commit.as_str()))])
            .chain([("testing_base", self.testing_base.as_deref())])
            .chain([("live.commit", self.live.as_ref().map(|l| l.commit.as_str()))])
            .chain([("rollback.from", self.rollback.as_ref().map(|r| r.from.as_str()))])
            .chain([("rollback.to", self.rollback.as_ref().map(|r| r.to.as_str()))])
            .chain([("last_attempt.previous_commit", attempt.and_then(|a| a.previous_commit.as_deref()))]);
        for (field, value) in commits {
            if let Some(value) = value
                && gix::ObjectId::from_hex(value.as_bytes()).is_err()
            {
                return Err(format!("{field} holds {value:?}, not a commit id"));
            }
        }
        Ok(())
    }

    /// The last failed commit and how many times in a row it failed.
    pub fn last_failure(&self) -> Option<(&str, u32)> {
        self.last_attempt.as_ref().filter(|a| a.result != Outcome::Applied).map(|a| (a.commit.as_str(), a.attempts))
    }
}

/// state.json stays far below this; anything larger is not ours, and is not read into memory.
const MAX_STATE_BYTES: u64 = 4 << 20;

/// Why an existing state.json cannot be used: it is moved aside by [`load_or_quarantine`].
#[derive(Debug)]
pub struct Corrupt(String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corrupt {}

/// Read state.json for a run; a corrupt one is moved aside (never overwritten) and the run starts afresh.
pub fn load_or_quarantine(path: &Path) -> anyhow::Result<State> {
    match load(path) {
        Ok(state) => Ok(state),
        Err(error) if error.downcast_ref::<Corrupt>().is_some() => {
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

/// Read state.json; a missing file is the empty state (first run). A file that is not a regular file
/// (a FIFO would block the read forever), is too large, does not parse or holds an impossible value is
/// [`Corrupt`].
pub fn load(path: &Path) -> anyhow::Result<State> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let corrupt = |why: String| anyhow::Error::new(Corrupt(why)).context(format!("state file {}", path.display()));
    // O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOFOLLOW: the state is ours, not a link's target.
    let file = match fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(corrupt("it is a symbolic link".into())),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        return Err(corrupt(format!("it is not a regular file ({})", file_kind(&meta))));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(corrupt(format!("it holds {} bytes, more than state ever takes ({MAX_STATE_BYTES})", meta.len())));
    }
    let mut text = Vec::new();
    file.take(MAX_STATE_BYTES + 1).read_to_end(&mut text).with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(corrupt(format!("it holds more than {MAX_STATE_BYTES} bytes, more than state ever takes")));
    }
    let state: State = serde_json::from_slice(&text).map_err(|e| corrupt(format!("not valid state JSON: {e}")))?;
    state.check().map_err(corrupt)?;
    Ok(state)
}

/// What kind of non-regular file `meta` describes, for a message.
fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a plain file"
    }
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
    let (tmp, mut file) = create_temp(path).with_context(|| format!("writing {}", path.display()))?;
    let result = (|| {
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

/// Replace `path` by writing a temp file beside it and renaming it over (no fsync).
pub fn write_replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let (tmp, mut file) = create_temp(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// `write_replace` for a file other users must read (the metrics textfile: node_exporter runs as
/// its own user): mode 0644 whatever the umask, set before the rename so it is never seen 0600.
pub fn write_replace_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, mut file) = create_temp(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o644)).with_context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// A new temp file beside `path` (`.NAME.tmp-PID`), created exclusively: a file or symlink someone put
/// under that name is removed, never written through, and one planted in between makes this fail.
fn create_temp(path: &Path) -> std::io::Result<(std::path::PathBuf, File)> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    Ok((tmp, file))
}

/// fsync a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), State::default());
        let state =
            State { applied_commit: Some("0123456789abcdef0123456789abcdef01234567".into()), ..State::default() };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn a_planted_temp_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.prom");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let tmp = dir.path().join(format!(".metrics.prom.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_replace(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
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
    fn odd_state_files_are_corrupt_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let is_corrupt = |path: &Path| load(path).unwrap_err().downcast_ref::<Corrupt>().map(|c| c.to_string());
        // A FIFO: opening it for reading would wait for a writer forever.
        let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(is_corrupt(&path).unwrap().contains("FIFO"));
        fs::remove_file(&path).unwrap();
        // Huge (sparse): refused by its size, never read.
        File::create(&path).unwrap().set_len(1 << 30).unwrap();
        assert!(is_corrupt(&path).unwrap().contains("more than state ever takes"));
        fs::remove_file(&path).unwrap();
        // Parses, but holds what no run writes.
        fs::write(&path, r#"{"applied_commit": "not-a-commit", "applied_at": null, "last_attempt": null}"#).unwrap();
        assert!(is_corrupt(&path).unwrap().contains("applied_commit holds \"not-a-commit\""));
        // A symlink, even to a good file.
        fs::remove_file(&path).unwrap();
        save(&dir.path().join("elsewhere.json"), &State::default()).unwrap();
        std::os::unix::fs::symlink("elsewhere.json", &path).unwrap();
        assert!(is_corrupt(&path).unwrap().contains("symbolic link"));
    }
}
