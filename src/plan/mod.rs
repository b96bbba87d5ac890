//! The dry run's plan: what a real run would do, printed, nothing changed.

mod diff;
mod incoming;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use gix::ObjectId;

use crate::config::Settings;
use crate::decide::Why;
use crate::fetch::Fetched;
use crate::printable::printable;
use crate::secrets::Unsealed;
use crate::teardown;

/// What the dry run found out, to be printed.
pub struct Plan<'a> {
    /// Why the commit would be applied.
    pub why: Why,
    /// The applied commit, if any.
    pub deployed: Option<ObjectId>,
    /// What was fetched.
    pub fetched: &'a Fetched,
    /// Which attempt at the commit this would be.
    pub attempt: u32,
    /// The paths the commit changes.
    pub changed: &'a [gix::bstr::BString],
    /// Its secrets: those this host would decrypt and those it skips (only names are printed).
    pub secrets: &'a Unsealed,
    /// Why the host is held back now, when it is: the plan is what it would do once released.
    pub held: Option<&'a str>,
    /// What a failure of the commit would lead to.
    pub on_failure: crate::decide::rollback::OnFailure,
}

/// Print the plan (redacted), with the entrypoint resolved in the commit's tree and the teardown that would run.
pub fn print(settings: &Settings, repo: &gix::Repository, plan: &Plan<'_>) -> anyhow::Result<()> {
    let fleet = fleet_lines(settings, repo, plan.fetched.commit)?;
    let mut out = String::new();
    let action = match plan.why {
        Why::Rewind => "apply (rewind allowed)",
        Why::Diverged => "apply (divergence allowed)",
        Why::LeaveTesting => "apply (back from the testing branch)",
        Why::Reconcile => "re-apply the live commit (reconcile)",
        Why::Rollback => "go back to the commit before (rollback)",
        Why::FirstDeploy | Why::FastForward | Why::Reapply => "apply",
    };
    match plan.held {
        Some(why) => {
            let _ = writeln!(out, "deferred: {why}");
            let _ = writeln!(out, "once released, would: {action}");
        }
        None => {
            let _ = writeln!(out, "would: {action}");
        }
    }
    let _ = writeln!(out, "repository: {}", settings.repo_url_display);
    let _ = writeln!(out, "ref: {}", plan.fetched.reference);
    let _ = writeln!(out, "deployed: {}", plan.deployed.map(|d| d.to_string()).unwrap_or_else(|| "none".into()));
    let _ = writeln!(out, "remote: {}", plan.fetched.commit);
    out.push_str(&fleet);
    let _ = writeln!(out, "attempt: {} of {}", plan.attempt, settings.max_attempts);
    let on_failure = plan.on_failure;
    let _ = match (on_failure.enabled, on_failure.to) {
        (true, Some(to)) => writeln!(out, "on failure: roll back to {to} (rollback on, by {})", on_failure.source),
        (true, None) => writeln!(out, "on failure: nothing to roll back to (first deploy); retried next run"),
        (false, _) => writeln!(out, "on failure: stays live and is retried next run (rollback off)"),
    };
    if plan.why != Why::Reconcile && plan.why != Why::Reapply {
        out.push_str(&incoming::lines(repo, plan.deployed, plan.fetched.commit, settings.trust.as_ref())?);
    }
    out.push_str(&diff::render(repo, plan.deployed, plan.fetched.commit, plan.changed, settings.diff)?);
    let _ = writeln!(out, "secrets to decrypt ({}):", plan.secrets.files.len());
    for (name, _) in &plan.secrets.files {
        let _ = writeln!(out, "  {}", printable(&name.display().to_string()));
    }
    let _ = writeln!(out, "secrets skipped, for other hosts ({}):", plan.secrets.skipped.len());
    for path in &plan.secrets.skipped {
        let _ = writeln!(out, "  {}", printable(&path.display().to_string()));
    }
    print!("{}", crate::redact::redact(&out));
    Ok(())
}

/// The inventory lines: which entrypoint would run (resolved in the commit's tree), tags, teardown.
fn fleet_lines(settings: &Settings, repo: &gix::Repository, remote: ObjectId) -> anyhow::Result<String> {
    let inventory = &settings.fleet.inventory;
    let tree = repo
        .find_commit(remote)
        .map_err(anyhow::Error::new)
        .and_then(|c| c.tree().map_err(anyhow::Error::new))
        .with_context(|| format!("reading the tree of commit {remote}"))?;
    let in_tree = |candidate: &Path| {
        let path = inventory.root.join(candidate);
        tree.lookup_entry_by_path(&path).ok().flatten().is_some_and(|entry| entry.mode().is_blob_or_symlink())
    };
    let entrypoint = inventory.resolve(&settings.entrypoint, in_tree);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "entrypoint: {} ({}{})",
        inventory.root.join(&entrypoint).display(),
        inventory.describe(&entrypoint),
        if in_tree(&entrypoint) { "" } else { "; not in this commit" }
    );
    let _ = writeln!(out, "tags: {}", inventory.tags_env());
    let teardown = match teardown::outgoing(&settings.layout, inventory, &settings.entrypoint, remote) {
        Some(_) if settings.fleet.skip_teardown => "skipped (--skip-teardown)".to_string(),
        Some(outgoing) => {
            format!("{} of the live revision {}", inventory.root.join(&outgoing.script).display(), outgoing.commit)
        }
        None => "none".to_string(),
    };
    let _ = writeln!(out, "teardown: {teardown}");
    Ok(out)
}
