//! The commits a dry run would bring in: short id, subject, author and, where trust is on, each one's
//! signature verdict, newest first.

use std::fmt::Write as _;

use gix::ObjectId;

use crate::printable::printable;
use crate::verify::{self, Trust};

/// The newest commits listed; older ones are counted ("… 12 more").
pub const SHOWN: usize = 20;

/// A walk longer than this is not listed in full, only counted up to it.
const WALK_MAX: usize = 100_000;

/// The lines listing the commits in `remote` that `deployed` does not have (every commit when nothing is
/// deployed, or when `deployed` is not in the cache): a count line, then one line per commit.
pub fn lines(
    repo: &gix::Repository,
    deployed: Option<ObjectId>,
    remote: ObjectId,
    trust: Option<&Trust>,
) -> anyhow::Result<String> {
    let hidden: Vec<ObjectId> = deployed.filter(|d| repo.has_object(*d)).into_iter().collect();
    let walk = repo.rev_walk([remote]).with_hidden(hidden).all().map_err(anyhow::Error::new)?;
    let mut ids = Vec::new();
    let mut total = 0usize;
    for info in walk.take(WALK_MAX) {
        let info = info.map_err(anyhow::Error::new)?;
        if ids.len() < SHOWN {
            ids.push(info.id);
        }
        total += 1;
    }
    let mut out = String::new();
    let counted = if total == WALK_MAX { format!("{total}+") } else { total.to_string() };
    let _ = writeln!(out, "incoming commits ({counted}):");
    for id in ids {
        let _ = writeln!(out, "  {}", describe(repo, id, trust)?);
    }
    if total > SHOWN {
        let _ = writeln!(
            out,
            "  … {} more",
            if total == WALK_MAX { format!("{}+", total - SHOWN) } else { (total - SHOWN).to_string() }
        );
    }
    Ok(out)
}

/// `abc123456789 subject — Author Name [signed by alice | NOT signed by an allowed key: why]`.
fn describe(repo: &gix::Repository, id: ObjectId, trust: Option<&Trust>) -> anyhow::Result<String> {
    let commit = repo.find_commit(id).map_err(anyhow::Error::new)?;
    let subject = commit.message().map(|m| m.summary().to_string()).unwrap_or_default();
    let author = commit.author().map(|a| a.name.to_string()).unwrap_or_default();
    let mut line = format!("{} {} — {}", crate::commit_id::short_id(id), printable(&subject), printable(&author));
    if let Some(trust) = trust {
        match verify::verify_commit(repo, id, &trust.signers)? {
            Ok(signed) => line.push_str(&format!(" [signed by {}]", signed.principal)),
            Err(rejected) => line.push_str(&format!(" [NOT signed by an allowed key: {}]", rejected.reason)),
        }
    }
    Ok(line)
}
