//! Materialise a commit's tree into `revisions/<commit>/` beside the live one, then swap `current` atomically.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use gix::ObjectId;

use crate::layout::Layout;
use crate::reuse;
use crate::state::sync_dir;

/// Refuse a hostile tree before anything is written: invalid or duplicate names, `.git` components,
/// more than `max_size` bytes of content (a blob reused many times counts each time) or more than
/// `max_entries` files, symlinks and directories.
///
/// Names are bytes, as Linux and git have them: two names that differ in any byte are two files.
/// Duplicate names matter twice: git never writes them, and gix's index building may panic on them.
pub fn inspect(repo: &gix::Repository, commit: ObjectId, max_size: u64, max_entries: u64) -> anyhow::Result<()> {
    let mut first = None;
    refusals(repo, commit, max_size, max_entries, |refusal| {
        first = Some(refusal);
        ControlFlow::Break(())
    })?;
    match first {
        None => Ok(()),
        Some(Refusal::Name { path, why }) => {
            bail!("refusing commit {commit}: {why} at {path:?}; this is not something git itself writes")
        }
        Some(Refusal::TooManyEntries { path }) => bail!(
            "refusing commit {commit}: its checkout would create more than --max-checkout-files ({max_entries}) files and directories, at {path:?}; raise the limit if this is intended"
        ),
        Some(Refusal::TooLarge { path }) => bail!(
            "refusing commit {commit}: its checkout would exceed --max-checkout-size ({max_size} bytes) at {path:?}; raise the limit if this is intended"
        ),
    }
}

/// What `inspect` refuses in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An invalid path component, a `.git` component or a duplicate entry (`why` says which).
    Name { path: String, why: &'static str },
    /// The first entry past `--max-checkout-files`.
    TooManyEntries { path: String },
    /// The first entry past `--max-checkout-size`.
    TooLarge { path: String },
}

/// The totals a checkout of the tree comes to, as `refusals` counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Files, symlinks, directories and submodules.
    pub entries: u64,
    /// Bytes of content, a blob counted each time it appears.
    pub bytes: u64,
}

/// Walk `commit`'s tree as `inspect` does and tell `refused` what a host refuses, until it says stop: every
/// bad name (its entry is then skipped) and the first entry past each limit. `inspect` stops at the first;
/// `gitops check` goes on, to report them all and the totals.
pub fn refusals(
    repo: &gix::Repository,
    commit: ObjectId,
    max_size: u64,
    max_entries: u64,
    mut refused: impl FnMut(Refusal) -> ControlFlow<()>,
) -> anyhow::Result<Totals> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree_id())
        .map_err(anyhow::Error::new)
        .with_context(|| format!("reading the tree of commit {commit}"))?
        .detach();
    let mut totals = Totals::default();
    let mut stack = vec![(tree, String::new())];
    while let Some((id, prefix)) = stack.pop() {
        let tree = repo.find_tree(id).map_err(anyhow::Error::new).with_context(|| format!("reading tree {id}"))?;
        let decoded = tree.decode().map_err(anyhow::Error::new).with_context(|| format!("decoding tree {id}"))?;
        let mut seen = std::collections::HashSet::new();
        for entry in &decoded.entries {
            let name: &[u8] = entry.filename.as_ref();
            // For messages only: the name itself is never converted.
            let path = format!("{prefix}{}", String::from_utf8_lossy(name));
            let why = if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                Some("an invalid path component")
            } else if name.eq_ignore_ascii_case(b".git") {
                Some("a .git component")
            } else if !seen.insert(name) {
                // Names equal but for case are distinct files on Linux; an exact duplicate is not.
                Some("a duplicate entry")
            } else {
                None
            };
            if let Some(why) = why {
                if refused(Refusal::Name { path, why }).is_break() {
                    return Ok(totals);
                }
                continue;
            }
            totals.entries += 1;
            if totals.entries == max_entries.saturating_add(1)
                && refused(Refusal::TooManyEntries { path: path.clone() }).is_break()
            {
                return Ok(totals);
            }
            if entry.mode.is_tree() {
                stack.push((entry.oid.to_owned(), format!("{path}/")));
            } else if entry.mode.is_commit() {
                log::debug!("submodule {path} is not fetched; it stays an empty directory");
            } else {
                let size = repo
                    .find_header(entry.oid)
                    .map_err(anyhow::Error::new)
                    .with_context(|| format!("reading the size of {path}"))?
                    .size();
                let before = totals.bytes;
                totals.bytes = totals.bytes.saturating_add(size);
                if before <= max_size && totals.bytes > max_size && refused(Refusal::TooLarge { path }).is_break() {
                    return Ok(totals);
                }
            }
        }
    }
    Ok(totals)
}

/// Which path components gix refuses to write. On Linux only what protects this host: `.git` and the
/// spellings that name it on NTFS and HFS+ (a repository checked out on such a mount), `..`, and names
/// with `/` or NUL. Windows' own rules (`aux`, `con`, `:`, `?`, `*`, a trailing dot or space) would
/// refuse names Linux and systemd use every day (`mnt-data\x2dvol.mount`, `host:8080.conf`).
const PATH_PROTECTIONS: gix::validate::path::component::Options =
    gix::validate::path::component::Options { protect_windows: false, protect_hfs: true, protect_ntfs: true };

/// Ensure `revisions/<commit>/` holds the complete tree of `commit` and return its path.
///
/// The tree is written to a temporary directory and renamed into place only when complete
/// and checked, so a directory named after a commit is always whole. When a revision is due to be
/// pruned (more than `keep` with the new one), it becomes that temporary directory instead of being
/// deleted afterwards, and only what changed is written (see `reuse`); an existing revision that is
/// not live is checked against its manifest the same way before it is used again.
pub fn materialise(repo: &gix::Repository, layout: &Layout, commit: ObjectId, keep: usize) -> anyhow::Result<PathBuf> {
    let name = commit.to_string();
    let dest = layout.revision(&name);
    let live = live_commit(layout);
    let base = if dest.is_dir() {
        if live.as_deref() == Some(name.as_str()) || !layout.manifest(&name).exists() {
            return Ok(dest);
        }
        Some(name.clone())
    } else {
        recyclable(layout, keep, live.as_deref(), &name)?
    };
    // Opened before anything is written: syncfs on it then reports every writeback error since, even
    // one another process's sync saw first (a descriptor opened later would miss that one).
    let revisions = fs::File::open(layout.revisions()).context("opening the revisions directory")?;
    let tmp = layout.revisions().join(format!(".tmp-{commit}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    let started = std::time::Instant::now();
    let reused = match base {
        Some(base) => build_from(repo, layout, &base, commit, &tmp),
        None => None,
    };
    let (index, written) = match reused {
        Some(done) => done,
        None => {
            if tmp.exists() {
                fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
            }
            fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let index = write_tree(repo, commit, &tmp, None).inspect_err(|_| {
                let _ = fs::remove_dir_all(&tmp);
            })?;
            (index, None)
        }
    };
    if let Err(e) = check_symlinks(&tmp, &index) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Pruning goes by age: a reused directory is as new as its content. Before the sync, which covers it.
    fs::File::open(&tmp)
        .and_then(|dir| dir.set_modified(std::time::SystemTime::now()))
        .with_context(|| format!("touching {}", tmp.display()))?;
    crate::failpoint::hit("checkout-written");
    let written_in = started.elapsed();
    // The files must be on disk before the name that promises they are complete.
    let how = match written {
        Some(paths) if paths.len() <= FSYNC_EACH_MAX => {
            sync_paths(&tmp, &paths)?;
            format!("{} changed paths fsynced", paths.len())
        }
        Some(paths) => {
            syncfs(&revisions).with_context(|| format!("syncing checkout {} to disk", tmp.display()))?;
            format!("{} changed paths, syncfs", paths.len())
        }
        None => {
            syncfs(&revisions).with_context(|| format!("syncing checkout {} to disk", tmp.display()))?;
            "written in full, syncfs".to_string()
        }
    };
    log::debug!(
        "checkout of {commit}: {how}; written in {written_in:.1?}, synced in {:.1?}",
        started.elapsed() - written_in
    );
    reuse::save_manifest(layout, commit, index)?;
    fs::rename(&tmp, &dest).with_context(|| format!("moving checkout into place at {}", dest.display()))?;
    // The new name must be on disk before `current` points at it.
    revisions.sync_all().context("syncing revisions directory")?;
    Ok(dest)
}

/// Checkouts writing fewer files than this use one thread; larger ones all cores.
const PARALLEL_CHECKOUT_MIN_FILES: usize = 500;

/// Up to this many changed paths are fsynced one by one; more, and one syncfs is cheaper.
const FSYNC_EACH_MAX: usize = 256;

/// The revision the prune after this run would delete, if it has a manifest to be rebuilt from.
fn recyclable(layout: &Layout, keep: usize, live: Option<&str>, target: &str) -> anyhow::Result<Option<String>> {
    let mut others = Vec::new();
    let mut count = 1; // the new revision
    for entry in fs::read_dir(layout.revisions()).context("listing revisions")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == target {
            continue;
        }
        count += 1;
        if Some(name.as_str()) != live {
            others.push((entry.metadata()?.modified()?, name));
        }
    }
    if count <= keep {
        return Ok(None);
    }
    let oldest = others.into_iter().min().map(|(_, name)| name);
    Ok(oldest.filter(|name| layout.manifest(name).exists()))
}

/// Turn revision `base` into `commit`'s tree at `tmp`, writing only what changed; None (and `tmp`
/// gone) when that is not possible, so that the caller writes the whole tree.
fn build_from(
    repo: &gix::Repository,
    layout: &Layout,
    base: &str,
    commit: ObjectId,
    tmp: &Path,
) -> Option<(gix::index::State, Option<Vec<PathBuf>>)> {
    let manifest = reuse::load_manifest(layout, base)?;
    let from = layout.revision(base);
    if let Err(e) = fs::rename(&from, tmp) {
        log::warn!("cannot reuse revision {base} ({e}); writing {commit} in full");
        return None;
    }
    // The manifest describes a directory that no longer exists under its name.
    let _ = fs::remove_file(layout.manifest(base));
    let result = (|| {
        let mut index = index_of(repo, commit)?;
        let refreshed = reuse::refresh(tmp, &manifest, &mut index)?;
        let index = write_tree(repo, commit, tmp, Some(index))?;
        Ok::<_, anyhow::Error>((index, refreshed))
    })();
    match result {
        Ok((mut index, refreshed)) => {
            let mut changed = refreshed.removed;
            for (entry, path) in index.entries_mut_with_paths() {
                if entry.flags.contains(gix::index::entry::Flags::SKIP_WORKTREE) {
                    entry.flags.remove(gix::index::entry::Flags::SKIP_WORKTREE);
                } else {
                    changed.push(PathBuf::from(path.to_string()));
                }
            }
            log::debug!(
                "built {commit} from revision {base}: {} files kept, {} paths written or removed",
                refreshed.kept,
                changed.len()
            );
            Some((index, Some(changed)))
        }
        Err(e) => {
            log::warn!("cannot reuse revision {base} ({e:#}); writing {commit} in full");
            let _ = fs::remove_dir_all(tmp);
            None
        }
    }
}

/// The index of `commit`'s tree, without stat data.
fn index_of(repo: &gix::Repository, commit: ObjectId) -> anyhow::Result<gix::index::State> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree_id())
        .map_err(anyhow::Error::new)
        .with_context(|| format!("reading the tree of commit {commit}"))?;
    gix::index::State::from_tree(&tree, &repo.objects, PATH_PROTECTIONS)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("commit {commit} has a tree that cannot be checked out safely"))
}

/// Check `commit` out into `dir`: all of it into an empty `dir`, or the entries of `index` not
/// flagged `SKIP_WORKTREE` into a refreshed one. Returns the index with the written files' stat data.
fn write_tree(
    repo: &gix::Repository,
    commit: ObjectId,
    dir: &Path,
    index: Option<gix::index::State>,
) -> anyhow::Result<gix::index::State> {
    let fresh = index.is_none();
    let mut index = match index {
        Some(index) => index,
        None => index_of(repo, commit)?,
    };
    let mut options = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
        .map_err(anyhow::Error::new)
        .context("reading checkout options")?;
    options.destination_is_initially_empty = fresh;
    options.validate = PATH_PROTECTIONS;
    options.overwrite_existing = false;
    // Creating files is most of a full checkout's time and spreads over cores (gix gives each thread runs
    // of entries); a reused revision's few changed files are written before a thread would have started.
    let to_write =
        index.entries().iter().filter(|e| !e.flags.contains(gix::index::entry::Flags::SKIP_WORKTREE)).count();
    options.thread_limit = if to_write < PARALLEL_CHECKOUT_MIN_FILES { Some(1) } else { None };
    let objects = repo.objects.clone().into_arc().context("sharing the object database")?;
    let outcome = gix::worktree::state::checkout(
        &mut index,
        dir,
        objects,
        &gix::progress::Discard,
        &gix::progress::Discard,
        &AtomicBool::new(false),
        options,
    )
    .map_err(anyhow::Error::new)
    .with_context(|| format!("checking out commit {commit} into {}", dir.display()))?;
    if let Some(first) = outcome.errors.first() {
        bail!("checking out commit {commit}: {} ({} paths failed)", first.path, outcome.errors.len());
    }
    if let Some(first) = outcome.collisions.first() {
        bail!("checking out commit {commit}: path {} collides with another path", first.path);
    }
    Ok(index)
}

/// Refuse a checkout with a symlink that resolves outside of it (a hostile repository).
///
/// The index lists every symlink the checkout holds: what was not written from it was removed.
fn check_symlinks(root: &Path, index: &gix::index::State) -> anyhow::Result<()> {
    for entry in index.entries().iter().filter(|e| e.mode == gix::index::entry::Mode::SYMLINK) {
        let relative = PathBuf::from(entry.path(index).to_string());
        if resolves_inside(root, &relative).is_none() {
            let target = fs::read_link(root.join(&relative)).unwrap_or_default();
            bail!(
                "refusing checkout: symlink {} -> {} points outside the repository; make it relative and inside the repo",
                relative.display(),
                target.display()
            );
        }
    }
    Ok(())
}

/// Resolve `relative` below `root` the way the kernel would, following symlinks found on disk;
/// None when any step leaves `root` (absolute target, too many `..`) or loops.
fn resolves_inside(root: &Path, relative: &Path) -> Option<PathBuf> {
    resolve_inside(relative, |path| fs::read_link(root.join(path)).ok())
}

/// Resolve `relative` as `resolves_inside` does, with `read_link` giving the target of a path (relative to
/// the root) that is a symlink: on disk for a checkout, from the tree for `gitops check`.
pub fn resolve_inside(relative: &Path, read_link: impl Fn(&Path) -> Option<PathBuf>) -> Option<PathBuf> {
    let mut resolved = PathBuf::new();
    // Components still to walk, front first; a symlink's target is spliced in where the link was.
    let mut queue: VecDeque<Step> = relative.components().map(Step::from).collect();
    let mut hops = 0;
    while let Some(step) = queue.pop_front() {
        match step {
            Step::Absolute => return None,
            Step::Here => {}
            Step::Up => {
                if !resolved.pop() {
                    return None;
                }
            }
            Step::Name(name) => {
                resolved.push(name);
                if let Some(target) = read_link(&resolved) {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    resolved.pop();
                    for step in target.components().rev() {
                        queue.push_front(Step::from(step));
                    }
                }
            }
        }
    }
    Some(resolved)
}

/// One path component, owned.
enum Step {
    Absolute,
    Here,
    Up,
    Name(OsString),
}

impl From<Component<'_>> for Step {
    fn from(c: Component<'_>) -> Self {
        match c {
            Component::RootDir | Component::Prefix(_) => Step::Absolute,
            Component::CurDir => Step::Here,
            Component::ParentDir => Step::Up,
            Component::Normal(name) => Step::Name(name.to_os_string()),
        }
    }
}

/// fsync the files written and the directories whose entries changed, root included.
fn sync_paths(root: &Path, changed: &[PathBuf]) -> anyhow::Result<()> {
    let mut dirs = std::collections::BTreeSet::from([root.to_path_buf()]);
    for path in changed {
        let full = root.join(path);
        // Symlinks and removed paths have nothing to sync but their directory entry.
        if fs::symlink_metadata(&full).is_ok_and(|m| m.is_file()) {
            fs::File::open(&full).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", full.display()))?;
        }
        let mut parent = full.parent();
        while let Some(dir) = parent.filter(|d| d.starts_with(root)) {
            dirs.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    for dir in dirs {
        sync_dir(&dir).with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Write out everything dirty on the filesystem that holds `file` (data and metadata: file contents,
/// inodes, directory entries) and wait for it; its errors include writeback errors since `file` was opened.
fn syncfs(file: &fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs on a valid open descriptor has no memory-safety preconditions.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Point `current` at `revisions/<commit>` with one atomic rename of a relative symlink.
pub fn publish(layout: &Layout, commit: ObjectId) -> anyhow::Result<()> {
    let target = Path::new("revisions").join(commit.to_string());
    let tmp = layout.root.join(format!(".current.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).with_context(|| format!("creating symlink {}", tmp.display()))?;
    crate::failpoint::hit("symlink-created");
    fs::rename(&tmp, layout.current()).with_context(|| format!("swapping {}", layout.current().display()))?;
    sync_dir(&layout.root).context("syncing state directory")?;
    Ok(())
}

/// The commit `current` points at, if any.
pub fn live_commit(layout: &Layout) -> Option<String> {
    let target = fs::read_link(layout.current()).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Delete leftovers of interrupted runs and all but the newest `keep` revisions; the live one always stays.
pub fn prune(layout: &Layout, keep: usize) -> anyhow::Result<()> {
    let live = live_commit(layout);
    let mut revisions = Vec::new();
    for entry in fs::read_dir(layout.revisions()).context("listing revisions")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            // Another run may be writing it only if it holds the lock, which we hold.
            fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        revisions.push((modified, name, entry.path()));
    }
    revisions.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut kept = usize::from(live.is_some());
    for (_, name, path) in revisions {
        if Some(&name) == live.as_ref() {
            continue;
        }
        if kept < keep {
            kept += 1;
            continue;
        }
        log::debug!("removing old revision {name}");
        fs::remove_dir_all(&path).with_context(|| format!("removing old revision {}", path.display()))?;
    }
    // Manifests of revisions that are gone (pruned, or an interrupted run's).
    if let Ok(manifests) = fs::read_dir(layout.manifests()) {
        for entry in manifests.flatten() {
            if !layout.revisions().join(entry.file_name()).is_dir() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Keep the newest `keep` entrypoint logs (with their changed-file lists); delete older ones.
pub fn prune_logs(layout: &Layout, keep: usize) -> anyhow::Result<()> {
    let mut logs = Vec::new();
    for entry in fs::read_dir(layout.logs()).context("listing logs")? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") {
            logs.push((entry.metadata()?.modified()?, path));
        }
    }
    logs.sort_by_key(|l| std::cmp::Reverse(l.0));
    for (_, log) in logs.into_iter().skip(keep) {
        fs::remove_file(&log).with_context(|| format!("removing {}", log.display()))?;
        let _ = fs::remove_file(log.with_extension("changed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlink_resolution_stays_inside_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        symlink("sub", root.join("ok")).unwrap();
        symlink("../etc", root.join("up")).unwrap();
        symlink("/etc/passwd", root.join("abs")).unwrap();
        symlink(".", root.join("dot")).unwrap();
        // Lexically "etc/passwd", really ../etc/passwd: only on-disk resolution catches it.
        symlink("dot/../etc/passwd", root.join("sneaky")).unwrap();
        symlink("sub/../sub/../ok", root.join("fine")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        assert_eq!(resolves_inside(root, Path::new("ok")), Some(PathBuf::from("sub")));
        assert_eq!(resolves_inside(root, Path::new("fine")), Some(PathBuf::from("sub")));
        assert_eq!(resolves_inside(root, Path::new("up")), None);
        assert_eq!(resolves_inside(root, Path::new("abs")), None);
        assert_eq!(resolves_inside(root, Path::new("loop1")), None);
        assert_eq!(resolves_inside(root, Path::new("dot")), Some(PathBuf::new()));
        assert_eq!(resolves_inside(root, Path::new("sneaky")), None);
    }
}
