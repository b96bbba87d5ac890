//! The list of paths changed between the previously applied commit and the new one, and the file
//! (`$GITOPS_CHANGED_FILES`) the entrypoint reads it from.

use anyhow::Context;
use gix::ObjectId;
use gix::bstr::BString;

/// Paths (files and symlinks) added, modified or deleted from `old` to `new`; every path when `old` is None.
pub fn changed_paths(repo: &gix::Repository, old: Option<ObjectId>, new: ObjectId) -> anyhow::Result<Vec<BString>> {
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
    // Bytes, as git and Linux have them: a name that is not UTF-8 must not turn into another name.
    let mut paths: Vec<BString> = changes
        .iter()
        .filter(|change| !change.entry_mode().is_tree())
        .map(|change| change.location().to_owned())
        .collect();
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// The changed-files list: one path per line, as git prints paths with `core.quotePath=false`. Bytes go
/// out as they are (UTF-8 or not), except that a path holding a control character, `"` or `\` is
/// written in double quotes with C escapes (`\n`, `\t`, `\"`, `\\`, `\ooo`), so a name with a newline is
/// still one line and every name reads back exactly.
pub fn listing(paths: &[BString]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        let needs_quotes = path.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\');
        if !needs_quotes {
            out.extend_from_slice(path);
        } else {
            out.push(b'"');
            for &b in path.iter() {
                match b {
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
                    b => out.push(b),
                }
            }
            out.push(b'"');
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_round_trips_every_name_one_per_line() {
        let names: Vec<BString> = [
            &b"run.sh"[..],
            b"caf\xe9.conf",
            b"b\xff",
            b"mnt-data\\x2dvol.mount",
            b"line\nbreak",
            b"say \"hi\"",
            b"bell\x07",
        ]
        .iter()
        .map(|n| BString::from(*n))
        .collect();
        let text = listing(&names);
        assert_eq!(
            text,
            &b"run.sh\ncaf\xe9.conf\nb\xff\n\"mnt-data\\\\x2dvol.mount\"\n\"line\\nbreak\"\n\"say \\\"hi\\\"\"\n\"bell\\007\"\n"[..]
        );
        assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), names.len());
    }
}
