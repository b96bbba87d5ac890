//! The secrets directory: a fresh private directory per entrypoint run on tmpfs, removed however the run ends.
//!
//! Each run makes `<base>/gitops-secrets.<pid>.<n>` (0700, files 0400) and records its path in the state
//! directory before writing anything there; the directory goes when its [`Mounted`] is dropped, and a run
//! killed before that (`kill -9`) leaves the record, from which the next run removes it under the lock.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// Where secrets are decrypted when neither `--secrets-dir` nor systemd's `$RUNTIME_DIRECTORY` says otherwise.
pub const DEFAULT_BASE: &str = "/run/gitops/secrets";

/// Prefix of the per-run directories, the only entries gitops removes from the base.
const RUN_DIR_PREFIX: &str = "gitops-secrets.";

/// The directory the per-run secrets directories are made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The directory.
    pub path: PathBuf,
    /// Named by `--secrets-dir`: the operator vouches for it, so it need not be tmpfs.
    pub explicit: bool,
}

impl Base {
    /// `--secrets-dir`, else the first of systemd's `$RUNTIME_DIRECTORY`, else [`DEFAULT_BASE`].
    pub fn choose(flag: Option<PathBuf>, runtime_directory: Option<&str>) -> Base {
        match flag {
            Some(path) => Base { path: std::path::absolute(&path).unwrap_or(path), explicit: true },
            None => {
                let runtime = runtime_directory.and_then(|dirs| dirs.split(':').next()).filter(|d| !d.is_empty());
                Base { path: PathBuf::from(runtime.unwrap_or(DEFAULT_BASE)), explicit: false }
            }
        }
    }
}

/// ramfs's statfs f_type (linux/magic.h; libc does not export it).
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Whether a `statfs` filesystem type keeps its files in memory only.
pub fn is_memory_fs(f_type: u64) -> bool {
    f_type == libc::TMPFS_MAGIC as u64 || f_type == RAMFS_MAGIC
}

/// Whether `path` is on tmpfs or ramfs (false when it cannot be told).
pub fn is_on_memory_fs(path: &Path) -> bool {
    fs_type(path).is_ok_and(is_memory_fs)
}

/// The filesystem type of `path` (statfs f_type).
fn fs_type(path: &Path) -> anyhow::Result<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow!("secrets directory {}: the path contains a NUL byte", path.display()))?;
    // SAFETY: statfs(2) writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("secrets directory {}: cannot tell its filesystem", path.display()));
    }
    Ok(stat.f_type as u64)
}

/// A per-run secrets directory holding decrypted files; removed (with its record) when dropped.
#[derive(Debug)]
pub struct Mounted {
    dir: PathBuf,
    record: PathBuf,
}

impl Mounted {
    /// Make a fresh private directory in `base` (refused off tmpfs/ramfs unless explicit), recording its path
    /// in `record` first so that a killed run's directory is found by the next one.
    pub fn create(base: &Base, record: &Path) -> anyhow::Result<Mounted> {
        prepare_base(base)?;
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.path.join(format!("{RUN_DIR_PREFIX}{}.{n}", std::process::id()));
        let mut recorded = recorded(record);
        recorded.push(dir.clone());
        write_record(record, &recorded)?;
        // mkdir fails on anything already there, a symlink included: the directory is ours and new.
        fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| {
            format!(
                "creating the secrets directory {}; remove what is there or choose another --secrets-dir",
                dir.display()
            )
        })?;
        Ok(Mounted { dir, record: record.to_path_buf() })
    }

    /// The directory (`$GITOPS_SECRETS_DIR`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Write one decrypted file at `relative` (its directories 0700, the file 0400, never through a symlink).
    pub fn write(&self, relative: &Path, plaintext: &[u8]) -> anyhow::Result<()> {
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("secret {}: not a plain relative path", relative.display());
        }
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("writing secret {}", path.display()))?;
        file.write_all(plaintext).with_context(|| format!("writing secret {}", path.display()))?;
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::error!(
                "removing the secrets directory {}: {e}; remove it by hand (the next run tries again)",
                self.dir.display()
            ),
        }
        if !self.dir.exists() {
            let others: Vec<PathBuf> = recorded(&self.record).into_iter().filter(|d| *d != self.dir).collect();
            if let Err(e) = write_record(&self.record, &others) {
                log::warn!("{e:#}");
            }
        }
    }
}

/// The directories listed in `record`, one a line.
fn recorded(record: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string(record).unwrap_or_default();
    text.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect()
}

/// List `dirs` in `record`, or remove it when there are none.
fn write_record(record: &Path, dirs: &[PathBuf]) -> anyhow::Result<()> {
    if dirs.is_empty() {
        return match fs::remove_file(record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow!("removing {}: {e}", record.display())),
            _ => Ok(()),
        };
    }
    let text: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
    crate::state::write_atomic(record, text.as_bytes())
}

/// Create the base if missing (0700) and refuse one that is not on tmpfs/ramfs (unless explicit) or that
/// someone else could read or redirect.
fn prepare_base(base: &Base) -> anyhow::Result<()> {
    let shown = base.path.display();
    if !base.path.is_dir() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&base.path).with_context(|| {
            format!("creating the secrets directory {shown}; check permissions or pass --secrets-dir DIR")
        })?;
    }
    if !base.explicit {
        let f_type = fs_type(&base.path)?;
        if !is_memory_fs(f_type) {
            bail!(
                "secrets directory {shown} is not on tmpfs (filesystem type {f_type:#x}), so decrypted secrets would be written to disk; run under systemd with RuntimeDirectory=gitops, mount a tmpfs there, or name a directory with --secrets-dir"
            );
        }
    }
    let meta = fs::symlink_metadata(&base.path).with_context(|| format!("secrets directory {shown}"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "secrets directory {shown} must be a directory owned by this user ({me}) and writable by no one else (it is uid {}, mode {:04o}); run chown {me} {shown} && chmod 0700 {shown}, or choose another --secrets-dir",
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Remove what a killed run left: the directories named in `record`, then the record (call under the run lock).
pub fn remove_recorded(record: &Path) {
    let mut left = Vec::new();
    for dir in recorded(record) {
        let ours = dir.file_name().is_some_and(|name| name.to_string_lossy().starts_with(RUN_DIR_PREFIX));
        if !ours || !fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir()) {
            continue;
        }
        log::warn!("removing the secrets directory {} left by a run that was killed", dir.display());
        if let Err(e) = fs::remove_dir_all(&dir) {
            log::error!("removing {}: {e}; remove it by hand", dir.display());
            left.push(dir);
        }
    }
    if let Err(e) = write_record(record, &left) {
        log::warn!("{e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_the_flag_then_systemds_runtime_directory_then_the_default() {
        let flag = Base::choose(Some(PathBuf::from("/dev/shm/g")), Some("/run/gitops"));
        assert_eq!(flag, Base { path: PathBuf::from("/dev/shm/g"), explicit: true });
        let runtime = Base::choose(None, Some("/run/gitops:/run/other"));
        assert_eq!(runtime, Base { path: PathBuf::from("/run/gitops"), explicit: false });
        assert_eq!(Base::choose(None, None).path, PathBuf::from(DEFAULT_BASE));
        assert_eq!(Base::choose(None, Some("")).path, PathBuf::from(DEFAULT_BASE));
    }

    #[test]
    fn only_memory_filesystems_count() {
        assert!(is_memory_fs(0x0102_1994));
        assert!(is_memory_fs(0x8584_58f6));
        assert!(!is_memory_fs(0xEF53), "ext4");
    }
}
