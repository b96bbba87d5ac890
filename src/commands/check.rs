//! `gitops check [PATH] [--rev REV | --range A..B]`: open the repository, take the tree hosts would read (the
//! index, or a commit), run the checks, print the findings; exit 0 clean, 1 findings, 2 usage.

use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use anyhow::anyhow;
use gix::ObjectId;

use crate::check::output::{self, Checked};
use crate::check::signatures::{self, Commits};
use crate::check::snapshot::Snapshot;
use crate::check::{self, Settings};
use crate::cli::{CheckArgs, TrustArgs};
use crate::inventory;
use crate::outcome::{Failure, Outcome};
use crate::parse::parse_size;

/// Run the checks and print the report.
pub fn run(args: CheckArgs) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let settings = settings(&args).map_err(Failure::usage)?;
    let signers = match &args.allowed_signers {
        None => None,
        Some(_) if args.rev.is_none() && args.range.is_none() => {
            return Err(Failure::usage(anyhow!(
                "--allowed-signers needs --rev or --range: the index has no signatures (check the commits a push sends)"
            )));
        }
        Some(file) => {
            let trust = TrustArgs {
                allowed_signers: Some(file.clone()),
                policy: crate::verify::Policy::All,
                verify_since: None,
            };
            let trust = crate::config::trust(trust).map_err(Failure::usage)?;
            trust.map(|trust| (trust.signers, file.display().to_string()))
        }
    };
    // Hooks get GIT_DIR and GIT_INDEX_FILE from git: honour them, as git itself does.
    let repo = gix::ThreadSafeRepository::discover_with_environment_overrides(&args.path)
        .map_err(|e| Failure::usage(anyhow!("{}: not in a Git repository ({e})", args.path.display())))?
        .to_thread_local()
        .with_object_memory();
    let resolve = |spec: &str| -> Result<ObjectId, Failure> {
        repo.rev_parse_single(spec).map(|id| id.detach()).map_err(|e| {
            Failure::usage(anyhow!(
                "{spec:?} does not name an object in {} ({e}); fetch it or fix the revision",
                repo.path().display()
            ))
        })
    };
    let peel = |id: ObjectId| -> Result<ObjectId, Failure> {
        let commit = repo.find_object(id).map_err(anyhow::Error::new)?.peel_to_commit();
        Ok(commit.map_err(|e| Failure::usage(anyhow!("{id} is not a commit ({e}); name a commit, branch or tag")))?.id)
    };
    let (snapshot, commits) = match (&args.rev, &args.range) {
        (Some(rev), _) => {
            let target = resolve(rev)?;
            let commit = peel(target)?;
            let tag = (target != commit).then_some(target);
            (Snapshot::of_commit(&repo, commit)?, Some(Commits::One { commit, tag }))
        }
        (None, Some(range)) => {
            let (from, to) = range.split_once("..").ok_or_else(|| {
                Failure::usage(anyhow!("--range {range:?} is not A..B; give the commits before and after the push"))
            })?;
            // A pre-push hook and a new branch's push event give the old side as all zeros: nothing yet.
            let from = if from.bytes().all(|b| b == b'0') { None } else { Some(peel(resolve(from)?)?) };
            let to = peel(resolve(to)?)?;
            (Snapshot::of_commit(&repo, to)?, Some(Commits::Range { from, to }))
        }
        (None, None) => (Snapshot::of_index(&repo)?, None),
    };
    let mut report = check::check(&snapshot, &settings)?;
    if let (Some((signers, file)), Some(commits)) = (&signers, commits) {
        signatures::check(&repo, commits, signers, file, &mut report)?;
    }
    let checked = Checked {
        source: if commits.is_some() { "commit" } else { "index" },
        commit: commits.is_some().then(|| snapshot.commit.to_string()),
        range: args.range.clone(),
        elapsed: started.elapsed(),
    };
    print!("{}", output::render(&report, &checked, args.format));
    Ok(if report.errors() == 0 { Outcome::Success } else { Outcome::CheckFindings })
}

/// The hosts' settings from the flags, validated as `gitops sync` validates them.
fn settings(args: &CheckArgs) -> anyhow::Result<Settings> {
    let inside = |flag: &str, value: &str| -> anyhow::Result<PathBuf> {
        if !inventory::is_inside_path(value) {
            anyhow::bail!("{flag} {value:?} must be a path inside the repository (relative, no '..')");
        }
        // `./fleets` and `fleets` are one directory; the tree knows only the second.
        Ok(Path::new(value).components().filter(|c| matches!(c, Component::Normal(_))).collect())
    };
    let root = match args.config_root.as_deref().map(str::trim) {
        None | Some("") => PathBuf::new(),
        Some(path) => inside("--path", path)?,
    };
    for host in &args.hosts {
        if !inventory::is_plain_name(host) {
            anyhow::bail!("--host {host:?} cannot name a directory under hosts/; pass a plain host name");
        }
    }
    let max_size = parse_size(&args.max_checkout_size)
        .map_err(|e| anyhow!("--max-checkout-size {:?}: {e}; use e.g. 500M or 2G", args.max_checkout_size))?;
    Ok(Settings {
        root,
        hosts: args.hosts.clone(),
        entrypoint: inside("--entrypoint", &args.entrypoint)?,
        teardown: inside("--teardown", &args.teardown)?,
        max_size,
        max_entries: args.max_checkout_files,
    })
}
