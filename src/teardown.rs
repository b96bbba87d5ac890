//! Teardown stage: before a new revision goes live, the outgoing one undoes what it installed.
//!
//! The outgoing revision is the live one (`current`) when it is not the revision being applied. Its teardown
//! script sits next to its own resolved entrypoint (host override or shared) and runs in its own config root,
//! with `GITOPS_COMMIT` set to the outgoing commit and `GITOPS_NEXT_COMMIT` / `GITOPS_NEXT_DIR` to the incoming
//! one. `current` is swapped only after it succeeds: if it fails, the old revision stays live and the attempt
//! counts as a failed apply of the new commit (exit 30, retried up to `--max-attempts`).

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::apply::{self, Job, Ran};
use crate::checkout;
use crate::commit_id::{short, short_id};
use crate::inventory::Inventory;
use crate::layout::Layout;
use crate::outcome::Failure;
use crate::secrets::tmpfs::Mounted;

/// The outgoing revision's teardown script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The outgoing (live) commit.
    pub commit: String,
    /// Its config root: the working directory.
    pub workdir: PathBuf,
    /// The script, relative to `workdir`.
    pub script: PathBuf,
}

/// The teardown to run before `next` goes live: None on a first deploy, when `next` is already live
/// (a retry), or when the live revision has no teardown script.
pub fn outgoing(layout: &Layout, inventory: &Inventory, entrypoint: &Path, next: ObjectId) -> Option<Outgoing> {
    let live = checkout::live_commit(layout)?;
    if ObjectId::from_hex(live.as_bytes()).is_ok_and(|live| live == next) {
        return None;
    }
    let checkout = layout.revision(&live);
    if !checkout.is_dir() {
        log::warn!("the live revision {} is missing; it cannot run a teardown", checkout.display());
        return None;
    }
    let workdir = inventory.workdir(&checkout);
    // The outgoing revision's own entrypoint decides which teardown belongs to it.
    let resolved = inventory.resolve(entrypoint, |candidate| workdir.join(candidate).is_file());
    let script = inventory.teardown_for(&resolved);
    workdir.join(&script).is_file().then_some(Outgoing { commit: live, workdir, script })
}

/// Run the teardown with the entrypoint's environment, re-pointed at the outgoing commit and its own secrets.
pub fn run(
    outgoing: &Outgoing,
    next: ObjectId,
    next_job: &Job,
    secrets_dir: Option<&Path>,
    log_path: &Path,
) -> anyhow::Result<Ran> {
    let next_dir = next_job.checkout;
    let mut env: Vec<(&'static str, String)> = next_job
        .env
        .iter()
        .filter(|(key, _)| !matches!(*key, "GITOPS_COMMIT" | "GITOPS_PREVIOUS_COMMIT" | "GITOPS_SECRETS_DIR"))
        .cloned()
        .collect();
    if let Some(dir) = secrets_dir {
        env.push(("GITOPS_SECRETS_DIR", dir.display().to_string()));
    }
    env.push(("GITOPS_COMMIT", outgoing.commit.clone()));
    env.push(("GITOPS_NEXT_COMMIT", next.to_string()));
    env.push(("GITOPS_NEXT_DIR", next_dir.display().to_string()));
    log::info!(
        "tearing down {} ({}) before {} goes live",
        short(&outgoing.commit),
        outgoing.script.display(),
        short_id(next)
    );
    apply::run(&Job {
        checkout: &outgoing.workdir,
        entrypoint: &outgoing.script,
        role: "teardown script",
        env,
        timeout: next_job.timeout,
        log_path,
        group_file: next_job.group_file,
        append: false,
    })
}

/// The teardown step of a sync: before `next` goes live, run the outgoing revision's teardown with the
/// environment of `next`'s entrypoint job and the outgoing revision's own secrets (`secrets` decrypts them;
/// they are removed when the teardown ends). Some((ran, log)) when it failed: then `next` must not go live.
/// `skip` is `--skip-teardown`.
pub fn before_publish(
    inventory: &Inventory,
    entrypoint: &Path,
    skip: bool,
    layout: &Layout,
    next: ObjectId,
    job: &Job,
    secrets: impl FnOnce(&Outgoing) -> Result<Option<Mounted>, Failure>,
) -> Result<Option<(Ran, PathBuf)>, Failure> {
    let Some(outgoing) = outgoing(layout, inventory, entrypoint, next) else {
        return Ok(None);
    };
    if skip {
        log::warn!("not running {} of {} (--skip-teardown)", outgoing.script.display(), outgoing.commit);
        return Ok(None);
    }
    let log_path = layout.teardown_log(next);
    let mounted = secrets(&outgoing)?;
    let mut ran = run(&outgoing, next, job, mounted.as_ref().map(Mounted::path), &log_path)?;
    drop(mounted);
    if ran.success {
        return Ok(None);
    }
    ran.error = ran.error.map(|error| {
        format!(
            "{error}; {} stays live and {} is not applied (fix the host, or once: gitops sync --skip-teardown)",
            short(&outgoing.commit),
            short_id(next)
        )
    });
    Ok(Some((ran, log_path)))
}
