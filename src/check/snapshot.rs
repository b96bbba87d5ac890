//! What `gitops check` reads: the tree of a commit, or the tree `git commit` would record now (the index),
//! with the same modes and bytes a host's checkout gets. Nothing is read from the working tree's files.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use gix::ObjectId;

/// What a path is in Git.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file, mode 100644.
    File,
    /// An executable file, mode 100755.
    Executable,
    /// A symbolic link; its blob is the target.
    Symlink,
    /// A directory (a tree).
    Directory,
    /// A submodule, which hosts do not fetch.
    Submodule,
}

/// One path of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Its object.
    pub oid: ObjectId,
}

/// Every path of one tree, by its path relative to the repository root.
pub struct Snapshot<'repo> {
    repo: &'repo gix::Repository,
    /// The commit hosts would check out: a real one, or one made in memory from the index.
    pub commit: ObjectId,
    entries: HashMap<PathBuf, Entry>,
}

impl<'repo> Snapshot<'repo> {
    /// The tree of `commit`.
    pub fn of_commit(repo: &'repo gix::Repository, commit: ObjectId) -> anyhow::Result<Snapshot<'repo>> {
        let reading = || format!("reading the tree of commit {commit}");
        let tree =
            repo.find_commit(commit).and_then(|c| c.tree_id()).map_err(anyhow::Error::new).with_context(reading)?;
        let mut entries = HashMap::new();
        let mut stack = vec![(tree.detach(), PathBuf::new())];
        while let Some((id, prefix)) = stack.pop() {
            let tree = repo.find_tree(id).map_err(anyhow::Error::new).with_context(reading)?;
            let decoded = tree.decode().map_err(anyhow::Error::new).with_context(reading)?;
            for entry in &decoded.entries {
                let path = prefix.join(OsStr::from_bytes(entry.filename.as_ref()));
                let kind = if entry.mode.is_tree() {
                    stack.push((entry.oid.to_owned(), path.clone()));
                    Kind::Directory
                } else if entry.mode.is_commit() {
                    Kind::Submodule
                } else if entry.mode.is_link() {
                    Kind::Symlink
                } else if entry.mode.is_executable() {
                    Kind::Executable
                } else {
                    Kind::File
                };
                entries.insert(path, Entry { kind, oid: entry.oid.to_owned() });
            }
        }
        Ok(Snapshot { repo, commit, entries })
    }

    /// What `git commit` would record now: the index (`GIT_INDEX_FILE` when a hook is given one), made into a
    /// tree and a commit that exist only in memory (`repo` must keep written objects in memory).
    pub fn of_index(repo: &'repo gix::Repository) -> anyhow::Result<Snapshot<'repo>> {
        use gix::index::entry::{Flags, Mode, Stage};
        use gix::objs::tree::EntryKind;
        let index = repo
            .index_or_empty()
            .map_err(anyhow::Error::new)
            .with_context(|| format!("reading the index {}", repo.index_path().display()))?;
        let empty = ObjectId::empty_tree(repo.object_hash());
        let mut editor = repo.edit_tree(empty).map_err(anyhow::Error::new).context("building the index's tree")?;
        for entry in index.entries() {
            let path = entry.path(&index);
            if entry.stage() != Stage::Unconflicted {
                return Err(anyhow!(
                    "{path} is unmerged (a merge or rebase is in progress); resolve it and git add it, then check again"
                ));
            }
            // `git add -N` only announces a file: git commit records it once it is really added.
            if entry.flags.contains(Flags::INTENT_TO_ADD) {
                continue;
            }
            let kind = match entry.mode {
                Mode::FILE_EXECUTABLE => EntryKind::BlobExecutable,
                Mode::SYMLINK => EntryKind::Link,
                Mode::COMMIT => EntryKind::Commit,
                Mode::DIR => EntryKind::Tree,
                _ => EntryKind::Blob,
            };
            editor
                .upsert(path, kind, entry.id)
                .map_err(anyhow::Error::new)
                .with_context(|| format!("adding {path}"))?;
        }
        let tree = editor.write().map_err(anyhow::Error::new).context("writing the index's tree in memory")?.detach();
        let nobody =
            gix::actor::Signature { name: "gitops check".into(), email: "".into(), time: gix::date::Time::default() };
        let commit = gix::objs::Commit {
            tree,
            parents: Default::default(),
            author: nobody.clone(),
            committer: nobody,
            encoding: None,
            message: "the index, as git commit would record it\n".into(),
            extra_headers: Vec::new(),
        };
        let commit = repo.write_object(&commit).map_err(anyhow::Error::new).context("writing the index's commit")?;
        Snapshot::of_commit(repo, commit.detach())
    }

    /// The repository the objects are read from.
    pub fn repo(&self) -> &'repo gix::Repository {
        self.repo
    }

    /// The entry at `path`, if there is one.
    pub fn get(&self, path: &Path) -> Option<Entry> {
        self.entries.get(path).copied()
    }

    /// Every path and its entry, in path order.
    pub fn entries(&self) -> Vec<(&Path, Entry)> {
        let mut all: Vec<(&Path, Entry)> = self.entries.iter().map(|(path, entry)| (path.as_path(), *entry)).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// How many files, symlinks, directories and submodules there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The content of the blob at `path` (a file's bytes, a symlink's target); None when `path` is not a blob.
    pub fn read(&self, path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
        match self.get(path) {
            Some(Entry { kind: Kind::File | Kind::Executable | Kind::Symlink, oid }) => self.blob(oid).map(Some),
            _ => Ok(None),
        }
    }

    /// The bytes of the blob `oid`.
    pub fn blob(&self, oid: ObjectId) -> anyhow::Result<Vec<u8>> {
        let blob =
            self.repo.find_blob(oid).map_err(anyhow::Error::new).with_context(|| format!("reading blob {oid}"))?;
        Ok(blob.data.clone())
    }

    /// The target of the symlink at `path` (relative to the repository root), as a checkout would have it.
    pub fn read_link(&self, path: &Path) -> Option<PathBuf> {
        match self.get(path) {
            Some(Entry { kind: Kind::Symlink, oid }) => {
                self.blob(oid).ok().map(|target| PathBuf::from(OsStr::from_bytes(&target)))
            }
            _ => None,
        }
    }

    /// Where `path` leads once its symlinks are followed as the kernel would in a checkout, and the entry there;
    /// None when it leaves the repository, loops or leads nowhere.
    pub fn follow(&self, path: &Path) -> Option<(PathBuf, Entry)> {
        let resolved = crate::checkout::resolve_inside(path, |p| self.read_link(p))?;
        let entry = self.get(&resolved)?;
        Some((resolved, entry))
    }

    /// Whether `path` is a regular file once followed (what a host's `is_file()` on its checkout says).
    pub fn is_file(&self, path: &Path) -> bool {
        self.follow(path).is_some_and(|(_, entry)| matches!(entry.kind, Kind::File | Kind::Executable))
    }

    /// The names of the directories right below `dir`.
    pub fn subdirectories(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .filter(|(path, entry)| entry.kind == Kind::Directory && path.parent() == Some(dir))
            .filter_map(|(path, _)| path.file_name()?.to_str().map(String::from))
            .collect();
        names.sort();
        names
    }
}
