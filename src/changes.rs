//! The list of paths changed between the previously applied commit and the new one.

use anyhow::Context;
use gix::ObjectId;

/// Paths (files and symlinks) added, modified or deleted from `old` to `new`; every path when `old` is None.
pub fn changed_paths(repo: &gix::Repository, old: Option<ObjectId>, new: ObjectId) -> anyhow::Result<Vec<String>> {
    let tree_of = |commit: ObjectId| {
        repo.find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(anyhow::Error::new)
            .with_context(|| format!("reading the tree of {commit}"))
    };
    let new_tree = tree_of(new)?;
    // A previous commit missing from the cache (history rewritten) is treated as "everything changed".
    let old_tree = match old {
        Some(old) if repo.has_object(old) => Some(tree_of(old)?),
        _ => None,
    };
    let options = gix::diff::Options::default().with_rewrites(None);
    let changes = repo
        .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), Some(options))
        .map_err(anyhow::Error::new)
        .context("diffing the previous and new trees")?;
    let mut paths: Vec<String> = changes
        .iter()
        .filter(|change| !change.entry_mode().is_tree())
        .map(|change| change.location().to_string())
        .collect();
    paths.sort();
    paths.dedup();
    Ok(paths)
}
