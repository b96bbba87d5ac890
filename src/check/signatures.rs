//! Signatures, as hosts verify them (`verify::commits_to_check` and `verify::verify_commit`): every commit of
//! a range, merges and their second parents included, or one revision and the annotated tag naming it.

use gix::ObjectId;

use super::{Class, Finding, Level, Report};
use crate::signers::AllowedSigners;
use crate::verify::{self, Rejected};

/// Which commits to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// One revision: the commit, and the annotated tag that named it, if one did.
    One {
        /// The commit.
        commit: ObjectId,
        /// The tag object, when the revision was an annotated tag.
        tag: Option<ObjectId>,
    },
    /// What a host deployed at `from` verifies before deploying `to` (`--verify all`); without `from`, what a
    /// first deploy of `to` verifies: its whole history.
    Range {
        /// The deployed commit; None for a new branch.
        from: Option<ObjectId>,
        /// The new tip.
        to: ObjectId,
    },
}

/// Add a finding for every commit (and tag) of `commits` that hosts with `signers` would refuse.
pub fn check(
    repo: &gix::Repository,
    commits: Commits,
    signers: &AllowedSigners,
    signers_file: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut refused: Vec<(&str, Rejected)> = Vec::new();
    let ids = match commits {
        Commits::One { commit, tag } => {
            if let Some(tag) = tag
                && let Err(rejected) = verify::verify_tag(repo, tag, signers)?
            {
                refused.push(("tag", rejected));
            }
            vec![commit]
        }
        Commits::Range { from, to } => {
            verify::commits_to_check(repo, to, &from.into_iter().collect::<Vec<_>>(), verify::Policy::All)?
        }
    };
    for id in &ids {
        if let Err(rejected) = verify::verify_commit(repo, *id, signers)? {
            refused.push(("commit", rejected));
        }
    }
    report.counts.commits += ids.len();
    for (what, rejected) in refused {
        report.add(Finding {
            class: Class::Signature,
            level: Level::Error,
            path: None,
            line: None,
            commit: Some(rejected.object.to_string()),
            message: format!(
                "{what} {}: {}: hosts refuse it and everything after it (exit 31); sign it with a key in {signers_file} (gpg.format=ssh, git commit -S; git rebase --exec 'git commit --amend --no-edit -S' re-signs a branch)",
                rejected.object, rejected.reason
            ),
        });
    }
    Ok(())
}
