//! Names, sizes and symlinks: what a host refuses before it writes anything (`checkout::refusals`, the walk
//! `checkout::inspect` does) and after writing it (a symlink out of the checkout).

use std::ops::ControlFlow;

use super::snapshot::{Kind, Snapshot};
use super::{Class, Finding, Report, Settings};
use crate::checkout::{self, Refusal};

/// Add every name, limit and symlink a host refuses.
pub fn check(snapshot: &Snapshot, settings: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let mut refused = Vec::new();
    let totals =
        checkout::refusals(snapshot.repo(), snapshot.commit, settings.max_size, settings.max_entries, |refusal| {
            refused.push(refusal);
            ControlFlow::Continue(())
        })?;
    for refusal in refused {
        report.add(match refusal {
            Refusal::Name { path, why } => Finding::at(
                Class::Name,
                std::path::Path::new(&path),
                None,
                format!("{why}: every host refuses this commit before writing anything (exit 1); rename or remove it"),
            ),
            Refusal::TooManyEntries { .. } => Finding::tree(
                Class::Size,
                format!(
                    "the checkout would create {} files, symlinks and directories, more than --max-checkout-files {}: every host refuses the commit (exit 1); remove some, or raise the limit on the hosts (GITOPS_MAX_CHECKOUT_FILES) and here",
                    totals.entries, settings.max_entries
                ),
            ),
            Refusal::TooLarge { .. } => Finding::tree(
                Class::Size,
                format!(
                    "the checkout would be {} bytes, more than --max-checkout-size {} bytes: every host refuses the commit (exit 1); move large files out of the repository, or raise the limit on the hosts (GITOPS_MAX_CHECKOUT_SIZE) and here",
                    totals.bytes, settings.max_size
                ),
            ),
        });
    }
    for (path, entry) in snapshot.entries() {
        if entry.kind == Kind::Symlink && checkout::resolve_inside(path, |p| snapshot.read_link(p)).is_none() {
            let target = snapshot.read_link(path).unwrap_or_default();
            report.add(Finding::at(
                Class::Symlink,
                path,
                None,
                format!(
                    "symlink to {} leads out of the repository (or loops): every host refuses the checkout (exit 1); make it a relative link inside the repository",
                    target.display()
                ),
            ));
        }
    }
    Ok(())
}
