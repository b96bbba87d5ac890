//! The state directory: where it is (validated once for every command), every path inside it, and the run lock.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use gix::ObjectId;

use crate::outcome::{Failure, Outcome};

/// State directory when neither `--state-dir` nor systemd's `$STATE_DIRECTORY` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gitops";

/// Paths inside the state directory; nothing else builds one.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state directory itself (absolute, valid UTF-8).
    pub root: PathBuf,
}

impl Layout {
    /// The state directory named by `--state-dir`, else systemd's `$STATE_DIRECTORY`, else the default;
    /// made absolute (the entrypoint runs elsewhere and is given this path) and refused unless UTF-8.
    pub fn from_flag(flag: Option<PathBuf>) -> anyhow::Result<Layout> {
        let root = flag
            .or_else(|| {
                // systemd passes a colon-separated list when the unit names several directories.
                std::env::var("STATE_DIRECTORY")
                    .ok()
                    .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
                    .filter(|dir| !dir.as_os_str().is_empty())
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if root.to_str().is_none() {
            bail!(
                "--state-dir {}: the path is not valid UTF-8, which state.json and the entrypoint's environment need; choose another path",
                root.display()
            );
        }
        let root = std::path::absolute(&root)
            .with_context(|| format!("--state-dir {}: cannot make it absolute", root.display()))?;
        Ok(Layout { root })
    }

    /// For commands that only read the state (status, logs): the directory must already exist
    /// (exit 1 when it does not, as for any unhealthy host).
    pub fn existing(flag: Option<PathBuf>) -> Result<Layout, Failure> {
        let layout = Layout::from_flag(flag).map_err(Failure::usage)?;
        if !layout.root.is_dir() {
            return Err(Failure::from(anyhow!(
                "no state directory at {}: gitops has not run here with this --state-dir; pass --state-dir DIR (the one gitops sync uses) or run gitops sync first",
                layout.root.display()
            )));
        }
        Ok(layout)
    }

    /// The lock file held for the whole run.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// The state document.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The last run and the counters the metrics need (`gitops status` reads it).
    pub fn last_run(&self) -> PathBuf {
        self.root.join("last_run.json")
    }
    /// The bare cache repository fetched into.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache.git")
    }
    /// One checkout per commit lives below here.
    pub fn revisions(&self) -> PathBuf {
        self.root.join("revisions")
    }
    /// The checkout of one commit (named by its full hex id).
    pub fn revision(&self, commit: &str) -> PathBuf {
        self.revisions().join(commit)
    }
    /// Symlink to the live revision.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    /// What each revision was written with (index files), to rebuild one from another.
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }
    /// The manifest of one revision.
    pub fn manifest(&self, commit: &str) -> PathBuf {
        self.manifests().join(commit)
    }
    /// Entrypoint logs and changed-file lists.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The entrypoint's log for `commit`.
    pub fn entrypoint_log(&self, commit: ObjectId) -> PathBuf {
        self.logs().join(format!("{commit}.log"))
    }
    /// The log of a rollback to `commit` (its apply log stays as it was).
    pub fn rollback_log(&self, commit: ObjectId) -> PathBuf {
        self.logs().join(format!("{commit}.rollback.log"))
    }
    /// One line per deploy attempt (`gitops history`).
    pub fn history(&self) -> PathBuf {
        self.root.join("history.jsonl")
    }
    /// The teardown script's log, run before `next` went live.
    pub fn teardown_log(&self, next: ObjectId) -> PathBuf {
        self.logs().join(format!("{next}.teardown.log"))
    }
    /// The paths `commit` changed (`$GITOPS_CHANGED_FILES`).
    pub fn changed_files(&self, commit: ObjectId) -> PathBuf {
        self.logs().join(format!("{commit}.changed"))
    }
    /// ssh's messages (`ssh -E`), folded into our one-line errors.
    pub fn ssh_log(&self) -> PathBuf {
        self.root.join("ssh.log")
    }
    /// Host keys pinned on first use (`--accept-new-host-key`).
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }
    /// The process group of the entrypoint (or teardown) running now, for the next run to clean up after a crash.
    pub fn running_group(&self) -> PathBuf {
        self.root.join("running.pgid")
    }
    /// The secrets directories of the entrypoint (or teardown) running now, for the next run to remove after a crash.
    pub fn secrets_record(&self) -> PathBuf {
        self.root.join("secrets.dirs")
    }
    /// Where the entrypoint asks for a reboot (`$GITOPS_REBOOT_REQUEST`).
    pub fn reboot_request(&self) -> PathBuf {
        self.root.join("reboot-request")
    }
    /// The hold `gitops suspend` puts on this host (absent when not suspended).
    pub fn suspension(&self) -> PathBuf {
        self.root.join("suspend.json")
    }
    /// Undelivered notifications, one directory per target.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// Create the state directory tree (mode 0700 through the process umask), refusing one that someone
    /// else could redirect (see [`check_trusted`]) and internal entries that are not what gitops made.
    pub fn ensure_dirs(&self) -> Result<(), Failure> {
        let existed = self.root.is_dir();
        check_trusted(&self.root)?;
        for dir in [self.root.clone(), self.revisions(), self.logs()] {
            fs::create_dir_all(&dir).with_context(|| {
                format!("creating state directory {}; check permissions or pass --state-dir", dir.display())
            })?;
        }
        if !existed {
            // Made just now: its parents were checked above, now the directory itself.
            check_trusted(&self.root)?;
        }
        // Entries only gitops makes: a symlink in their place would send its writes and deletions elsewhere.
        let dirs = [self.revisions(), self.logs(), self.manifests(), self.cache(), self.outbox()];
        for dir in dirs {
            match fs::symlink_metadata(&dir) {
                Ok(meta) if !meta.is_dir() => {
                    return Err(Failure::usage(anyhow!(
                        "{} is {} where gitops keeps a directory; remove it (rm {}) and run again",
                        dir.display(),
                        if meta.file_type().is_symlink() { "a symbolic link" } else { "not a directory" },
                        dir.display()
                    )));
                }
                _ => {}
            }
        }
        // Files gitops (or ssh, or the entrypoint) writes by name: a symlink there would aim the write.
        for file in [
            self.last_run(),
            self.known_hosts(),
            self.ssh_log(),
            self.reboot_request(),
            self.secrets_record(),
            self.suspension(),
        ] {
            if fs::symlink_metadata(&file).is_ok_and(|meta| meta.file_type().is_symlink()) {
                return Err(Failure::usage(anyhow!(
                    "{} is a symbolic link where gitops keeps a file; remove it (rm {}) and run again",
                    file.display(),
                    file.display()
                )));
            }
        }
        if let Ok(meta) = fs::symlink_metadata(self.current())
            && !meta.file_type().is_symlink()
        {
            return Err(Failure::usage(anyhow!(
                "{} is not the symlink gitops publishes revisions with; move it away and run again",
                self.current().display()
            )));
        }
        Ok(())
    }

    /// Take the run lock without waiting; a held lock is [`Outcome::Locked`]. The lock file must be a
    /// regular file of ours: a symlink is not followed, and a FIFO or device is refused, never waited on.
    pub fn lock_run(&self) -> Result<RunLock, Failure> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.lock();
        let not_ours = |what: &str| {
            Failure::usage(anyhow!(
                "lock file {} is {what}, not a file gitops made; remove it (rm {}) and run again",
                path.display(),
                path.display()
            ))
        };
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_ours("a symbolic link")),
            // A FIFO without a reader.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(not_ours("a FIFO")),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("opening lock file {}", path.display())).into());
            }
        };
        if !file.metadata().is_ok_and(|meta| meta.is_file()) {
            return Err(not_ours("not a regular file"));
        }
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Failure {
                outcome: Outcome::Locked,
                error: anyhow!(
                    "another gitops run holds the lock {}; it will pick up any change, try again later",
                    path.display()
                ),
            }),
            Err(fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context(format!("locking {}", path.display())).into())
            }
        }
    }

    /// Remove temp files that runs killed mid-write left in the state directory (call under the lock).
    pub fn remove_stale_temp(&self) {
        for dir in [self.root.clone(), self.logs()] {
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
}

/// A private state directory for one dry run on a host that has never run: a dry run must leave no
/// state directory behind, so it fetches here (mode 0700, under `$TMPDIR`) and this is removed on drop.
pub struct Scratch {
    /// The layout inside it.
    pub layout: Layout,
}

impl Scratch {
    /// Make the directory.
    pub fn new() -> Result<Scratch, Failure> {
        use std::os::unix::ffi::OsStrExt;
        let template = std::env::temp_dir().join("gitops-dry-run-XXXXXX");
        let mut bytes = template.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        // SAFETY: `bytes` is a NUL-terminated template ending in XXXXXX that mkdtemp rewrites in place.
        let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if made.is_null() {
            let error = std::io::Error::last_os_error();
            return Err(Failure::from(anyhow!(
                "making a temporary directory for the dry run in {}: {error}; set TMPDIR to a writable directory",
                std::env::temp_dir().display()
            )));
        }
        bytes.pop();
        let root = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        Ok(Scratch { layout: Layout { root } })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.layout.root) {
            log::warn!("removing the dry run's temporary directory {}: {e}", self.layout.root.display());
        }
    }
}

/// Refuse (exit 2) a state directory that a user other than this one or root could redirect, as ssh's
/// StrictModes does for `~/.ssh`: the directory must be owned by this user, and it and every parent up to
/// `/` owned by this user or root and writable by no one else. A sticky parent (`/tmp`) is allowed: there
/// nobody can rename or remove what they do not own.
pub fn check_trusted(root: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // The nearest directory that exists, with symlinks resolved: what the writes really go through.
    let existing = root.ancestors().find(|dir| dir.exists()).unwrap_or(Path::new("/"));
    let real = fs::canonicalize(existing).with_context(|| format!("--state-dir {}: resolving it", root.display()))?;
    let state_dir_exists = existing == root;
    for (depth, dir) in real.ancestors().enumerate() {
        let meta =
            fs::metadata(dir).with_context(|| format!("--state-dir {}: reading {}", root.display(), dir.display()))?;
        let mode = meta.mode() & 0o7777;
        let is_state_dir = depth == 0 && state_dir_exists;
        let owner_ok = if is_state_dir { meta.uid() == me } else { meta.uid() == me || meta.uid() == 0 };
        if !owner_ok {
            let owners = if is_state_dir { format!("this user ({me})") } else { format!("this user ({me}) or root") };
            return Err(Failure::usage(anyhow!(
                "--state-dir {}: {} is owned by uid {}, not by {owners}, so its owner could redirect what gitops writes; run chown {me} {} or choose another --state-dir",
                root.display(),
                dir.display(),
                meta.uid(),
                dir.display()
            )));
        }
        let sticky = mode & 0o1000 != 0 && !is_state_dir;
        if mode & 0o022 != 0 && !sticky {
            return Err(Failure::usage(anyhow!(
                "--state-dir {}: {} is writable by group or others (mode {:04o}), who could redirect what gitops writes; run chmod go-w {}",
                root.display(),
                dir.display(),
                mode,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The exclusive run lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout { root: dir.path().to_path_buf() };
        let _held = layout.lock_run().unwrap();
        assert_eq!(layout.lock_run().unwrap_err().outcome, Outcome::Locked);
    }

    #[test]
    fn an_odd_lock_file_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout { root: dir.path().to_path_buf() };
        let fifo = std::ffi::CString::new(layout.lock().to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let refused = layout.lock_run().unwrap_err();
        assert_eq!(refused.outcome, Outcome::Usage);
        assert!(refused.message().contains("is a FIFO"), "{}", refused.message());
        fs::remove_file(layout.lock()).unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, layout.lock()).unwrap();
        assert!(layout.lock_run().unwrap_err().message().contains("symbolic link"));
        assert!(!target.exists(), "the link was followed");
    }

    #[test]
    fn relative_state_dir_is_made_absolute() {
        let layout = Layout::from_flag(Some(PathBuf::from("some/state"))).unwrap();
        assert!(layout.root.is_absolute() && layout.root.ends_with("some/state"));
    }
}
