//! Going live: check a commit out beside the live revision, decrypt its secrets into a private tmpfs
//! directory, run the outgoing revision's teardown, publish, run the entrypoint and the health check.
//! Both an apply and a rollback go through here.

use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::bstr::BString;

use super::record::Reason;
use crate::apply::{self, Job, Ran};
use crate::changes;
use crate::checkout;
use crate::commit_id::short_id;
use crate::config::Settings;
use crate::layout::Layout;
use crate::outcome::Failure;
use crate::secrets::{self, Unsealed};
use crate::state;
use crate::teardown;
use crate::testing::Route;

/// Old revisions and logs beyond the limits go; a failure to remove them is only logged.
pub fn prune(settings: &Settings, layout: &Layout) {
    if let Err(e) = checkout::prune(layout, settings.keep_revisions) {
        log::warn!("cleaning up old revisions: {e:#}");
    }
    if let Err(e) = checkout::prune_logs(layout, settings.keep_logs) {
        log::warn!("cleaning up old logs: {e:#}");
    }
}

/// The secrets of `commit` this host must and can open, decrypted in memory (exit 32 when one of its
/// own cannot be opened).
pub fn unseal(settings: &Settings, repo: &gix::Repository, commit: ObjectId) -> Result<Unsealed, Failure> {
    let inventory = &settings.fleet.inventory;
    let sealed = secrets::sealed_in_commit(repo, commit, &inventory.root)?;
    if sealed.is_empty() {
        return Ok(Unsealed::default());
    }
    let recipients = secrets::recipients_in_commit(repo, commit, &inventory.root)?;
    let mine = secrets::Mine::new(&inventory.host_dirs, recipients.as_deref())?;
    secrets::unseal(&settings.secrets, sealed, &mine)
}

/// The commit that goes live and how its entrypoint is told about it.
pub struct Release<'a> {
    /// The commit.
    pub commit: ObjectId,
    /// The commit live before it (`GITOPS_PREVIOUS_COMMIT`).
    pub previous: Option<ObjectId>,
    /// The paths that differ (`GITOPS_CHANGED_FILES`).
    pub changed: &'a [BString],
    /// Which attempt and why (`GITOPS_REASON`).
    pub reason: Reason,
    /// For a rollback, the commit that failed (`GITOPS_ROLLED_BACK_FROM`).
    pub rolled_back_from: Option<ObjectId>,
}

/// Check out the release beside the live revision, write its secrets to a private tmpfs directory, run the
/// outgoing revision's teardown, publish, run the entrypoint, then its health check. Returns how the
/// entrypoint, health check (or the teardown that kept it from going live) ran, and the log. The secrets
/// directory is gone when this returns.
pub fn go_live(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    route: &Route,
    release: &Release<'_>,
    unsealed: &Unsealed,
) -> Result<(Ran, PathBuf), Failure> {
    let (fetched, commit, attempt) = (&route.fetched, release.commit, release.reason.attempt);
    // A rollback's crash points have names of their own ("rollback-published"): the tests kill it there.
    let point = |name: &str| match release.rolled_back_from {
        Some(_) => format!("rollback-{name}"),
        None => name.to_string(),
    };
    let checkout_dir = checkout::materialise(repo, layout, commit, settings.keep_revisions)?;
    crate::failpoint::hit(&point("checkout-complete"));
    let changed_file = layout.changed_files(commit);
    state::write_atomic(&changed_file, &changes::listing(release.changed))?;
    let mounted = secrets::mount(unsealed, &settings.secrets.base, &layout.secrets_record())?;
    crate::failpoint::hit(&point("secrets-written"));

    let log = match release.rolled_back_from {
        Some(_) => layout.rollback_log(commit),
        None => layout.entrypoint_log(commit),
    };
    let inventory = &settings.fleet.inventory;
    let workdir = inventory.workdir(&checkout_dir);
    let entrypoint = inventory.resolve(&settings.entrypoint, |candidate| workdir.join(candidate).is_file());
    let job = Job {
        checkout: &workdir,
        entrypoint: &entrypoint,
        role: "entrypoint",
        env: vec![
            ("GITOPS_COMMIT", commit.to_string()),
            ("GITOPS_PREVIOUS_COMMIT", release.previous.map(|d| d.to_string()).unwrap_or_default()),
            ("GITOPS_CHANGED_FILES", changed_file.display().to_string()),
            ("GITOPS_REPO_URL", settings.repo_url_display.clone()),
            ("GITOPS_BRANCH", fetched.branch.clone()),
            ("GITOPS_REF", fetched.reference.clone()),
            ("GITOPS_STATE_DIR", layout.root.display().to_string()),
            ("GITOPS_HOSTNAME", settings.hostname.clone()),
            ("GITOPS_TAGS", inventory.tags_env()),
            ("GITOPS_REBOOT_REQUEST", layout.reboot_request().display().to_string()),
            ("GITOPS_REASON", release.reason.label.to_string()),
            ("GITOPS_DEPLOYED_FROM", route.testing.clone().unwrap_or_else(|| fetched.branch.clone())),
        ]
        .into_iter()
        .chain(mounted.as_ref().map(|m| ("GITOPS_SECRETS_DIR", m.path().display().to_string())))
        .chain(release.rolled_back_from.map(|from| ("GITOPS_ROLLED_BACK_FROM", from.to_string())))
        .collect(),
        timeout: settings.apply_timeout,
        log_path: &log,
        group_file: &layout.running_group(),
        append: false,
    };
    // The outgoing revision undoes its own changes first; until it has, the new one does not go live.
    let skip_teardown = settings.fleet.skip_teardown;
    let outgoing_secrets = |outgoing: &teardown::Outgoing| outgoing_secrets(settings, layout, repo, outgoing);
    if let Some(failed) = teardown::before_publish(
        inventory,
        &settings.entrypoint,
        skip_teardown,
        layout,
        commit,
        &job,
        outgoing_secrets,
    )? {
        return Ok(failed);
    }
    checkout::publish(layout, commit)?;
    crate::failpoint::hit(&point("published"));
    let paths = if release.changed.len() == 1 { "path" } else { "paths" };
    log::info!(
        "applying {} with {} (attempt {attempt}, {} changed {paths})",
        short_id(commit),
        entrypoint.display(),
        release.changed.len()
    );
    let ran = apply::run(&job)?;
    // The service it started may take a moment: its health check is what says the apply worked.
    let on_disk = |candidate: &Path| workdir.join(candidate).is_file();
    let Some(script) = crate::health::script(inventory, &entrypoint, on_disk).filter(|_| ran.success) else {
        return Ok((ran, log));
    };
    Ok((crate::health::check(&settings.health, &script, &job)?, log))
}

/// The outgoing revision's own secrets for its teardown, from its commit (or, when that is no longer in the
/// cache, its checkout), in a secrets directory of their own.
fn outgoing_secrets(
    settings: &Settings,
    layout: &Layout,
    repo: &gix::Repository,
    outgoing: &teardown::Outgoing,
) -> Result<Option<secrets::tmpfs::Mounted>, Failure> {
    let inventory = &settings.fleet.inventory;
    let in_cache = ObjectId::from_hex(outgoing.commit.as_bytes()).map_err(anyhow::Error::new).and_then(|commit| {
        let sealed = secrets::sealed_in_commit(repo, commit, &inventory.root)?;
        Ok((sealed, secrets::recipients_in_commit(repo, commit, &inventory.root)?))
    });
    let (sealed, recipients) = match in_cache {
        Ok(found) => found,
        Err(_) => (
            secrets::sealed_in_dir(&outgoing.workdir)?,
            std::fs::read_to_string(outgoing.workdir.join(secrets::recipients::FILE)).ok(),
        ),
    };
    let mine = secrets::Mine::new(&inventory.host_dirs, recipients.as_deref())?;
    let unsealed = secrets::unseal(&settings.secrets, sealed, &mine).map_err(|mut failure| {
        failure.error = failure
            .error
            .context(format!("the secrets of the outgoing revision {} (for its teardown)", outgoing.commit));
        failure
    })?;
    secrets::mount(&unsealed, &settings.secrets.base, &layout.secrets_record())
}
