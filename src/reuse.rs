//! Build a new revision out of one that is about to be pruned: keep the files that provably did not
//! change, remove everything else, and let the checkout write only what is missing.
//!
//! Every revision has a manifest, `STATE/manifests/<commit>` (a Git index file): each entry's blob,
//! mode and the stat data of the file as it was written. A file is kept only when the new tree has the
//! same blob and mode at its path and its stat data still match the manifest exactly (inode, size,
//! owner, mtime and ctime to the nanosecond) and it is not "racy" (written in the same clock tick as
//! the manifest, as Git's index rule goes). An entrypoint that edits its checkout in place changes the
//! ctime, which nobody can set back, so its edits are never carried into another revision. Files it
//! added, and anything not in the new tree, are removed. Nothing is shared between revisions (no
//! hard links), so nothing done to one revision can reach another.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::index::entry::{Flags, Mode, Stat, stat};

use crate::layout::Layout;
use crate::state;

/// Stat comparison as strict as Git can make it (`core.trustctime`, `core.checkStat=default`, nanoseconds).
const STRICT: stat::Options = stat::Options { trust_ctime: true, check_stat: true, use_nsec: true, use_stdev: false };

/// Record what was written for `commit`: its index with the stat data of every file.
pub fn save_manifest(layout: &Layout, commit: ObjectId, index: gix::index::State) -> anyhow::Result<()> {
    fs::create_dir_all(layout.manifests()).context("creating the manifests directory")?;
    let path = layout.manifest(&commit.to_string());
    let mut bytes = Vec::new();
    gix::index::File::from_state(index, &path)
        .write_to(&mut bytes, gix::index::write::Options::default())
        .map_err(anyhow::Error::new)
        .context("encoding the revision manifest")?;
    state::write_atomic(&path, &bytes)
}

/// The manifest of `commit`'s revision, if it has a readable one.
pub fn load_manifest(layout: &Layout, commit: &str) -> Option<gix::index::File> {
    let path = layout.manifest(commit);
    match gix::index::File::at(&path, gix::hash::Kind::Sha1, false, Default::default()) {
        Ok(file) => Some(file),
        Err(e) => {
            if path.exists() {
                log::warn!("manifest {} is unreadable ({e}); that revision is not reused", path.display());
            }
            None
        }
    }
}

/// What `refresh` left for the checkout to do.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Files kept as they were.
    pub kept: usize,
    /// Files and directories removed (relative paths).
    pub removed: Vec<PathBuf>,
}

/// Make `dir`, a revision described by `old`, hold only what `new` (the new tree's index) has and
/// provably unchanged: entries kept are flagged `SKIP_WORKTREE` in `new`, with their stat data, so a
/// checkout of `new` writes exactly the missing ones.
pub fn refresh(dir: &Path, old: &gix::index::File, new: &mut gix::index::State) -> anyhow::Result<Refreshed> {
    if attributes_differ(old, new) {
        // Unchanged blobs may be checked out differently now (eol, filters): start from scratch.
        bail!("a .gitattributes file changed");
    }
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    {
        let positions: HashMap<&BStr, usize> =
            new.entries().iter().enumerate().map(|(i, entry)| (entry.path(new), i)).collect();
        let mut dirs: HashSet<&BStr> = HashSet::new();
        for path in positions.keys() {
            let mut path: &[u8] = path.as_bytes();
            while let Some(slash) = path.rfind_byte(b'/') {
                path = &path[..slash];
                if !dirs.insert(path.as_bstr()) {
                    break;
                }
            }
        }
        let plan = Plan { old, new, positions: &positions, dirs: &dirs };
        let mut subdirs = Vec::new();
        plan.walk(dir, &mut BString::default(), &mut kept, &mut removed, Some(&mut subdirs))?;
        // One stat call per file is most of the cost: the top-level directories go to two threads.
        let walked: Vec<anyhow::Result<Walked>> = std::thread::scope(|scope| {
            let plan = &plan;
            let handles: Vec<_> = (0..2)
                .map(|half| {
                    let mine: Vec<BString> = subdirs.iter().skip(half).step_by(2).cloned().collect();
                    scope.spawn(move || {
                        let mut walked = Walked::default();
                        for mut prefix in mine {
                            plan.walk(dir, &mut prefix, &mut walked.0, &mut walked.1, None)?;
                        }
                        Ok(walked)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a directory walk panicked"))))
                .collect()
        });
        for part in walked {
            let (more_kept, more_removed) = part?;
            kept.extend(more_kept);
            removed.extend(more_removed);
        }
    }
    let count = kept.len();
    for (i, stat) in kept {
        let entry = &mut new.entries_mut()[i];
        entry.stat = stat;
        entry.flags.insert(Flags::SKIP_WORKTREE);
    }
    Ok(Refreshed { kept: count, removed })
}

/// Whether any `.gitattributes` differs between the two trees.
fn attributes_differ(old: &gix::index::File, new: &gix::index::State) -> bool {
    let attributes = |state: &gix::index::State| -> Vec<(BString, ObjectId)> {
        state
            .entries()
            .iter()
            .filter(|e| e.path(state).ends_with(b".gitattributes"))
            .map(|e| (e.path(state).to_owned(), e.id))
            .collect()
    };
    attributes(old) != attributes(new)
}

/// Files kept (new entry position and stat data) and paths removed by a walk.
type Walked = (Vec<(usize, Stat)>, Vec<PathBuf>);

/// The new tree as looked up during the walk.
struct Plan<'a> {
    old: &'a gix::index::File,
    new: &'a gix::index::State,
    positions: &'a HashMap<&'a BStr, usize>,
    dirs: &'a HashSet<&'a BStr>,
}

impl Plan<'_> {
    /// Walk `root/prefix` without following symlinks; keep, descend into, or remove each entry.
    /// With `defer`, subdirectories to descend into are collected there instead.
    fn walk(
        &self,
        root: &Path,
        prefix: &mut BString,
        kept: &mut Vec<(usize, Stat)>,
        removed: &mut Vec<PathBuf>,
        mut defer: Option<&mut Vec<BString>>,
    ) -> anyhow::Result<()> {
        let here = root.join(prefix.to_path_lossy());
        for entry in fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let entry = entry.with_context(|| format!("reading {}", here.display()))?;
            let name = entry.file_name();
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name.as_bytes());
            let path = here.join(&name);
            let kind = entry.file_type().with_context(|| format!("reading the type of {}", path.display()))?;
            if kind.is_dir() {
                if self.dirs.contains(prefix.as_bstr()) {
                    match defer.as_deref_mut() {
                        Some(later) => later.push(prefix.clone()),
                        None => self.walk(root, prefix, kept, removed, None)?,
                    }
                } else {
                    fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
                    removed.push(prefix.to_path_lossy().into_owned());
                }
            } else {
                match self.unchanged(prefix.as_bstr(), &entry)? {
                    Some(keep) => kept.push(keep),
                    None => {
                        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                        removed.push(prefix.to_path_lossy().into_owned());
                    }
                }
            }
            prefix.truncate(len);
        }
        Ok(())
    }

    /// The new entry's position and the file's stat data when the file at `path` may stay.
    fn unchanged(&self, path: &BStr, file: &fs::DirEntry) -> anyhow::Result<Option<(usize, Stat)>> {
        let Some(&position) = self.positions.get(path) else { return Ok(None) };
        let Some(recorded) = self.old.entry_by_path(path) else { return Ok(None) };
        let wanted = &self.new.entries()[position];
        if recorded.id != wanted.id || recorded.mode != wanted.mode {
            return Ok(None);
        }
        let meta = file.metadata().with_context(|| format!("reading {}", file.path().display()))?;
        let executable = meta.mode() & 0o100 != 0;
        let kind_matches = match recorded.mode {
            Mode::SYMLINK => meta.file_type().is_symlink(),
            Mode::FILE => meta.is_file() && !executable,
            Mode::FILE_EXECUTABLE => meta.is_file() && executable,
            _ => false,
        };
        let now = stat_of(&meta);
        let same =
            kind_matches && recorded.stat.matches(&now, STRICT) && !recorded.stat.is_racy(self.old.timestamp(), STRICT);
        Ok(same.then_some((position, now)))
    }
}

/// Index stat data of a file, as gix records it after writing one.
fn stat_of(meta: &fs::Metadata) -> Stat {
    let time = |secs: i64, nsecs: i64| stat::Time { secs: secs as u32, nsecs: nsecs as u32 };
    Stat {
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size() as u32,
    }
}
