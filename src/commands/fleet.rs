//! `gitops fleet`: the fleet view from Prometheus (what every host's metrics textfile says), against
//! the repository's tip and the hosts it names when one is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use gix::ObjectId;

use crate::cli::FleetViewArgs;
use crate::fetch;
use crate::fleetview::{self, Thresholds, Verdict, expected, prometheus, render};
use crate::hostkey::HostKeys;
use crate::outcome::{Failure, Outcome};
use crate::parse::parse_duration;

/// The repository's word on the fleet: the tip of one branch and the hosts it names there.
struct Repository {
    branch: String,
    commit: String,
    named: Vec<String>,
}

/// Query, assess, print; the exit code is the fleet's verdict (converged 0, rolling out 4,
/// unsettled 3, no host 5), 1 when Prometheus or the repository cannot be asked.
pub fn run(args: &FleetViewArgs) -> Result<Outcome, Failure> {
    let duration =
        |flag: &str, text: &str| parse_duration(text).map_err(|e| Failure::usage(anyhow!("{flag} {text:?}: {e}")));
    let stale = duration("--stale", &args.stale)?;
    let lookback = duration("--lookback", &args.lookback)?;
    let matchers = prometheus::matchers("--selector", &args.selector).map_err(|e| Failure::usage(anyhow!(e)))?;
    if let Some(tip) = &args.tip
        && (tip.len() != 40 || !tip.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Failure::usage(anyhow!(
            "--tip {tip:?} is not a full commit id (40 hex digits); use `git rev-parse BRANCH` to get one"
        )));
    }
    if args.tip.is_some() && args.branch.is_none() {
        return Err(Failure::usage(anyhow!("--tip needs --branch: the branch whose hosts it is the tip for")));
    }
    let root = match args.path.as_deref() {
        None | Some("") => PathBuf::new(),
        Some(path) if crate::inventory::is_inside_path(path) => PathBuf::from(path),
        Some(path) => {
            return Err(Failure::usage(anyhow!(
                "--path {path:?} must be a directory inside the repository (relative, no ..)"
            )));
        }
    };
    let query = prometheus::Query { url: args.prometheus.clone(), matchers, lookback };
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
    let mut hosts = prometheus::hosts(&query, now).map_err(|e| selector_refused(e, &args.selector))?;
    let repository = match (&args.repo_url, &args.branch, &args.tip) {
        (Some(url), branch, _) => Some(remote_repository(url, branch.as_deref(), &root)?),
        (None, Some(branch), Some(tip)) => {
            let commit = tip.to_ascii_lowercase();
            let named = match &args.repo {
                Some(dir) => local_hosts(dir, &commit, &root)?,
                None => Vec::new(),
            };
            Some(Repository { branch: branch.clone(), commit, named })
        }
        _ => None,
    };
    // Named hosts that answer to no reported name, whatever branch the reported ones deploy.
    let missing = repository.as_ref().map(|r| fleetview::missing(&r.named, &hosts)).unwrap_or_default();
    let tips: BTreeMap<String, String> = repository.iter().map(|r| (r.branch.clone(), r.commit.clone())).collect();
    // With a branch (given, or the repository's HEAD), only its hosts.
    let branch = args.branch.clone().or_else(|| repository.as_ref().map(|r| r.branch.clone()));
    let matched = hosts.len();
    if let Some(branch) = &branch {
        hosts.retain(|h| h.branch.as_deref() == Some(branch.as_str()));
    }
    let limits = Thresholds { stale_seconds: stale.as_secs_f64(), lookback_seconds: lookback.as_secs_f64() };
    let mut fleet = fleetview::assess(hosts, missing, tips, now, limits);
    if fleet.verdict == Verdict::NoHosts {
        let notice = no_hosts(&query, args.selector.trim(), branch.as_deref(), matched, now);
        log::error!("{notice}");
        fleet.notice = Some(notice);
    }
    if let Some(path) = &args.html {
        crate::state::write_replace_public(path, render::html(&fleet).as_bytes()).map_err(Failure::from)?;
        log::info!("wrote the fleet page to {}", path.display());
    }
    if args.json {
        println!("{}", render::json(&fleet));
    } else {
        print!("{}", render::text(&fleet, args.all));
    }
    Ok(fleet.verdict.outcome())
}

/// A query Prometheus cannot parse is the selector's fault (the rest of every query is gitops's own):
/// a usage error that names the selector as typed, not the query it went into. Anything else is
/// Prometheus that cannot be asked (exit 1).
fn selector_refused(error: anyhow::Error, selector: &str) -> Failure {
    let refused = error.chain().find_map(|cause| cause.downcast_ref::<prometheus::Refused>());
    match refused {
        Some(refused) if refused.is_bad_query() && !selector.trim().is_empty() => Failure::usage(anyhow!(
            "--selector '{}': Prometheus cannot parse it ({}); write matchers like {{job=\"node\"}}",
            selector.trim(),
            refused.reason()
        )),
        _ => Failure::from(error),
    }
}

/// The line that says no host matched: which selector (and branch), which Prometheus, and what to do.
fn no_hosts(query: &prometheus::Query, selector: &str, branch: Option<&str>, matched: usize, now: f64) -> String {
    let shown = crate::redact::url(&query.url);
    let selector = if selector.is_empty() { "{}".to_string() } else { selector.to_string() };
    let within = fleetview::duration(query.lookback.as_secs_f64());
    if let (Some(branch), true) = (branch, matched > 0) {
        return format!(
            "no host matched: none of the {matched} hosts with --selector '{selector}' at {shown} deploys branch \
             {branch:?}; fix --branch (or --repo-url, whose HEAD names it), or drop it to see every branch"
        );
    }
    let hint = match prometheus::jobs(&query.url, query.lookback, now) {
        Ok(jobs) if jobs.is_empty() => "Prometheus has no gitops series at all: check that the hosts write \
             --metrics-file into node_exporter's textfile directory and that Prometheus scrapes those exporters"
            .to_string(),
        Ok(jobs) => {
            let jobs: Vec<String> = jobs.iter().map(|(job, n)| format!("{{job=\"{job}\"}} ({n})")).collect();
            format!("gitops hosts report there under {}: fix --selector", jobs.join(", "))
        }
        Err(e) => format!("fix --selector ({e:#})"),
    };
    format!(
        "no host matched: Prometheus at {shown} has no gitops host with --selector '{selector}' in the last {within}; {hint}"
    )
}

/// The hosts a local repository or checkout names at `commit` (`--repo` with `--tip`).
fn local_hosts(dir: &Path, commit: &str, root: &Path) -> Result<Vec<String>, Failure> {
    let repo = gix::open_opts(dir, gix::open::Options::isolated())
        .map_err(|e| Failure::usage(anyhow!("--repo {}: not a Git repository or checkout ({e})", dir.display())))?;
    let id = ObjectId::from_hex(commit.as_bytes()).map_err(|e| Failure::usage(anyhow!("--tip {commit}: {e}")))?;
    if repo.find_commit(id).is_err() {
        return Err(Failure::usage(anyhow!(
            "--tip {commit} is not a commit of --repo {}; fetch it there first (git fetch) or name the repository that has it",
            dir.display()
        )));
    }
    expected::named_hosts(&repo, id, root).map_err(Failure::from)
}

/// The tip of the repository's branch (its HEAD without one) and the hosts it names there: the tip
/// alone is fetched (depth 1) into a throwaway repository, with the transport and trust settings a
/// `gitops sync` on this machine would use.
fn remote_repository(url: &str, branch: Option<&str>, root: &Path) -> Result<Repository, Failure> {
    /// `gitops sync`'s flags, so that their env vars and the env file apply here too.
    #[derive(clap::Parser)]
    struct SyncFlags {
        #[command(flatten)]
        sync: crate::cli::SyncArgs,
    }
    let scratch = std::env::temp_dir().join(format!("gitops-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).map_err(|e| Failure::from(anyhow!("creating {}: {e}", scratch.display())))?;
    let result = (|| {
        let state_dir = scratch.to_string_lossy().into_owned();
        let mut argv = vec!["sync", "--repo-url", url, "--state-dir", &state_dir];
        if let Some(branch) = branch {
            argv.extend(["--branch", branch]);
        }
        let flags = <SyncFlags as clap::Parser>::try_parse_from(argv)
            .map_err(|e| Failure::usage(anyhow!("--repo-url: {}", e.to_string().trim())))?;
        let settings = crate::config::Settings::from_args(flags.sync).map_err(Failure::usage)?;
        if let HostKeys::TrustOnFirstUse(_) = settings.host_keys {
            return Err(Failure::usage(anyhow!(
                "gitops fleet --repo-url does not trust a host key on first use: pin it with --known-hosts FILE (GITOPS_KNOWN_HOSTS)"
            )));
        }
        let repo = fetch::open_cache(
            &scratch.join("tip.git"),
            &settings.ssh_command,
            settings.http_ca_file.as_deref(),
            settings.fetch_timeout,
        )?;
        let source = fetch::Source {
            url: &settings.repo_url,
            display_url: &settings.repo_url_display,
            reference: settings.source_ref.as_deref(),
            http_credentials: settings.http_credentials.as_ref(),
            deployed: None,
            testing: None,
            testing_base: None,
        };
        let what = format!("fetching the tip of {}", settings.repo_url_display);
        let (fetched, expired) =
            crate::deadline::run(settings.fetch_timeout, &what, || fetch::fetch_tip(&repo, source));
        let fetched = match fetched {
            Err(_) if expired => Err(anyhow!("{what}: no answer within --fetch-timeout {:?}", settings.fetch_timeout)),
            other => other,
        }?;
        let named = expected::named_hosts(&repo, fetched.commit, root)
            .map_err(|e| e.context(format!("the hosts {} names", settings.repo_url_display)))?;
        Ok(Repository { branch: fetched.branch, commit: fetched.commit.to_string(), named })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
