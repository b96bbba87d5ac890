//! `gitops verify [REV]`: the signature verdict for commits, printed, nothing applied.

use anyhow::{Context, anyhow};
use gix::ObjectId;

use crate::cli::VerifyArgs;
use crate::config;
use crate::layout::Layout;
use crate::outcome::{Failure, Outcome};
use crate::state;
use crate::verify;

/// Verify and print one line per commit; exit 0 when all are good, 31 otherwise.
pub fn run(args: VerifyArgs) -> Result<Outcome, Failure> {
    let trust = config::trust(args.trust).map_err(Failure::usage)?.ok_or_else(|| {
        Failure::usage(anyhow!("gitops verify needs --allowed-signers FILE (or GITOPS_ALLOWED_SIGNERS)"))
    })?;
    let (repo, default_rev, deployed) = match args.repo {
        Some(dir) => {
            let repo = gix::open_opts(&dir, gix::open::Options::isolated())
                .or_else(|_| gix::discover(&dir))
                .map_err(anyhow::Error::new)
                .with_context(|| format!("--repo {}: not a Git repository", dir.display()))?;
            (repo, "HEAD", None)
        }
        None => {
            let layout = Layout::from_flag(args.state_dir).map_err(Failure::usage)?;
            if !layout.cache().exists() {
                return Err(Failure::usage(anyhow!(
                    "no cache repository in {}: run gitops sync first, or pass --repo DIR",
                    layout.root.display()
                )));
            }
            let repo = gix::open_opts(layout.cache(), gix::open::Options::isolated())
                .map_err(anyhow::Error::new)
                .with_context(|| format!("opening {}", layout.cache().display()))?;
            let deployed = state::load(&layout.state_file())?
                .applied_commit
                .and_then(|hex| ObjectId::from_hex(hex.as_bytes()).ok());
            (repo, "refs/gitops/remote", deployed)
        }
    };
    let rev = args.rev.unwrap_or_else(|| default_rev.to_string());
    let resolve = |spec: &str| -> anyhow::Result<ObjectId> {
        repo.rev_parse_single(spec).map(|id| id.detach()).map_err(anyhow::Error::new).with_context(|| {
            format!("{spec:?} does not name an object in {}; fetch it or fix the revision", repo.path().display())
        })
    };
    let peel = |id: ObjectId| -> anyhow::Result<ObjectId> {
        Ok(repo.find_object(id).map_err(anyhow::Error::new)?.peel_to_commit().map_err(anyhow::Error::new)?.id)
    };

    let mut good = true;
    let commits = match rev.split_once("..") {
        Some((from, to)) => {
            let hidden = resolve(from)?;
            let head = peel(resolve(to)?)?;
            verify::commits_to_check(&repo, head, &[peel(hidden)?], verify::Policy::All)?
        }
        None => {
            let target = resolve(&rev)?;
            let head = peel(target)?;
            if target != head {
                good &= report("tag", verify::verify_tag(&repo, target, &trust.signers)?);
            }
            let trusted: Vec<ObjectId> = deployed.into_iter().chain(trust.since).collect();
            verify::commits_to_check(&repo, head, &trusted, trust.policy)?
        }
    };
    for id in &commits {
        let verdict = verify::verify_commit(&repo, *id, &trust.signers)?;
        good &= report(&id.to_string(), verdict);
    }
    println!("{} {} commit(s)", if good { "verified" } else { "REFUSED:" }, commits.len());
    Ok(if good { Outcome::Success } else { Outcome::VerifyFailed })
}

fn report(what: &str, verdict: Result<verify::Signed, verify::Rejected>) -> bool {
    match verdict {
        Ok(signed) => {
            println!("ok   {what} signed by {} ({})", signed.principal, signed.fingerprint);
            true
        }
        Err(rejected) => {
            println!("FAIL {} {}", rejected.object, rejected.reason);
            false
        }
    }
}
