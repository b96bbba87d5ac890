//! What a dry run shows of the changes: a diffstat, and with `--diff` the unified diff. Secrets (`*.age`)
//! are named, never shown; the caller passes the whole text through the redactor.

use std::fmt::Write as _;

use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};
use gix::diff::blob::unified_diff::{ConsumeBinaryHunk, ContextSize};
use gix::diff::blob::{Algorithm, Diff, InternedInput, UnifiedDiff};

/// The most files a diffstat lists; the rest are counted.
const STAT_MAX: usize = 200;

/// A file larger than this is not diffed line by line (its size change is shown).
const DIFF_MAX_BYTES: usize = 1 << 20;

/// One changed file's contents before and after (empty when absent), and how to show it.
struct Change {
    path: String,
    before: Vec<u8>,
    after: Vec<u8>,
}

impl Change {
    fn is_secret(&self) -> bool {
        self.path.ends_with(crate::secrets::decrypt::SUFFIX)
    }

    fn is_binary(&self) -> bool {
        let sample = |b: &[u8]| b[..b.len().min(8000)].contains(&0);
        sample(&self.before) || sample(&self.after)
    }

    fn too_large(&self) -> bool {
        self.before.len() > DIFF_MAX_BYTES || self.after.len() > DIFF_MAX_BYTES
    }
}

/// The diffstat (and, with `full`, the unified diff) of `paths` from `old` to `new`.
pub fn render(
    repo: &gix::Repository,
    old: Option<ObjectId>,
    new: ObjectId,
    paths: &[BString],
    full: bool,
) -> anyhow::Result<String> {
    let tree = |commit: ObjectId| repo.find_commit(commit).and_then(|c| c.tree()).map_err(anyhow::Error::new);
    let new_tree = tree(new)?;
    let old_tree = match old {
        Some(old) if repo.has_object(old) => Some(tree(old)?),
        _ => None,
    };
    let blob = |tree: Option<&gix::Tree<'_>>, path: &BString| -> Vec<u8> {
        tree.and_then(|t| t.lookup_entry_by_path(path.to_path_lossy()).ok().flatten())
            .filter(|entry| entry.mode().is_blob_or_symlink())
            .and_then(|entry| entry.object().ok())
            .map(|object| object.data.clone())
            .unwrap_or_default()
    };
    let mut stat = String::new();
    let mut diff = String::new();
    let (mut added, mut removed) = (0u64, 0u64);
    for (index, path) in paths.iter().enumerate() {
        let change = Change {
            path: crate::printable::printable(&path.to_str_lossy()).into_owned(),
            before: blob(old_tree.as_ref(), path),
            after: blob(Some(&new_tree), path),
        };
        let counted = if change.is_secret() {
            "secret, not shown".to_string()
        } else if change.is_binary() || change.too_large() {
            format!("{} → {} bytes", change.before.len(), change.after.len())
        } else {
            let input = InternedInput::new(change.before.as_slice(), change.after.as_slice());
            let lines = Diff::compute(Algorithm::Histogram, &input);
            let (plus, minus) = (lines.count_additions(), lines.count_removals());
            (added, removed) = (added + u64::from(plus), removed + u64::from(minus));
            if full {
                write_unified(&mut diff, &change, &lines, &input)?;
            }
            format!("+{plus} -{minus}")
        };
        if full && (change.is_secret() || change.is_binary() || change.too_large()) {
            let _ = writeln!(diff, "diff {}: {counted}", change.path);
        }
        if index < STAT_MAX {
            let _ = writeln!(stat, "  {} | {counted}", change.path);
        }
    }
    if paths.len() > STAT_MAX {
        let _ = writeln!(stat, "  … {} more", paths.len() - STAT_MAX);
    }
    let files = if paths.len() == 1 { "file" } else { "files" };
    let mut out = format!("changed {files} ({}, +{added} -{removed} lines):\n{stat}", paths.len());
    if full {
        out.push_str(&diff);
    }
    Ok(out)
}

/// `--- a/path` / `+++ b/path` and the hunks, as `git diff` prints them.
fn write_unified(out: &mut String, change: &Change, lines: &Diff, input: &InternedInput<&[u8]>) -> anyhow::Result<()> {
    let before = if change.before.is_empty() { "/dev/null".to_string() } else { format!("a/{}", change.path) };
    let after = if change.after.is_empty() { "/dev/null".to_string() } else { format!("b/{}", change.path) };
    let _ = writeln!(out, "diff --git a/{0} b/{0}\n--- {before}\n+++ {after}", change.path);
    let hunks =
        UnifiedDiff::new(lines, input, ConsumeBinaryHunk::new(BString::default(), "\n"), ContextSize::symmetrical(3))
            .consume()?;
    // Repository text never drives the terminal; tabs are kept, they are common in configuration.
    for line in hunks.to_str_lossy().lines() {
        let shown: Vec<String> = line.split('\t').map(|p| crate::printable::printable(p).into_owned()).collect();
        let _ = writeln!(out, "{}", shown.join("\t"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_secret_files_are_told_apart() {
        let change = |path: &str, after: &[u8]| Change { path: path.into(), before: Vec::new(), after: after.to_vec() };
        assert!(change("db.pass.age", b"age-encryption.org/v1\n").is_secret());
        assert!(change("logo.png", b"\x89PNG\0\0").is_binary());
        assert!(!change("run.sh", b"#!/bin/sh\n").is_binary());
    }
}
