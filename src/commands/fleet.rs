//! `gitops fleet`: the fleet view from Prometheus (what every host's metrics textfile says).

use std::collections::BTreeMap;

use crate::cli::FleetViewArgs;
use crate::fetch;
use crate::fleetview::{self, Thresholds, prometheus, render};
use crate::hostkey::HostKeys;
use crate::outcome::{Failure, Outcome};
use crate::parse::parse_duration;

/// Query, assess, print; exit 0 when every host is converged, 3 when not, 1 when Prometheus cannot be asked.
pub fn run(args: &FleetViewArgs) -> Result<Outcome, Failure> {
    let duration = |flag: &str, text: &str| {
        parse_duration(text).map_err(|e| Failure::usage(anyhow::anyhow!("{flag} {text:?}: {e}")))
    };
    let stale = duration("--stale", &args.stale)?;
    let lookback = duration("--lookback", &args.lookback)?;
    let matchers = prometheus::matchers(&args.selector).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    if let Some(tip) = &args.tip
        && (tip.len() != 40 || !tip.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--tip {tip:?} is not a full commit id (40 hex digits); use `git rev-parse BRANCH` to get one"
        )));
    }
    if args.tip.is_some() && args.branch.is_none() {
        return Err(Failure::usage(anyhow::anyhow!("--tip needs --branch: the branch whose hosts it is the tip for")));
    }
    let query = prometheus::Query { url: args.prometheus.clone(), matchers, lookback };
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
    let mut hosts = prometheus::hosts(&query, now)?;
    let tips: BTreeMap<String, String> = match (&args.repo_url, &args.branch, &args.tip) {
        (Some(url), branch, _) => BTreeMap::from([repository_tip(url, branch.as_deref())?]),
        (None, Some(branch), Some(tip)) => BTreeMap::from([(branch.clone(), tip.to_ascii_lowercase())]),
        _ => BTreeMap::new(),
    };
    // With a branch (given, or the repository's HEAD), only its hosts.
    if let Some(branch) = args.branch.as_ref().or(tips.keys().next()) {
        hosts.retain(|h| h.branch.as_deref() == Some(branch.as_str()));
    }
    let fleet = fleetview::assess(hosts, tips, now, Thresholds { stale_seconds: stale.as_secs_f64() });
    if let Some(path) = &args.html {
        crate::state::write_replace_public(path, render::html(&fleet).as_bytes()).map_err(Failure::from)?;
        log::info!("wrote the fleet page to {}", path.display());
    }
    if args.json {
        println!("{}", render::json(&fleet));
    } else {
        print!("{}", render::text(&fleet, args.all));
    }
    Ok(if fleet.converged() { Outcome::Success } else { Outcome::FleetUnsettled })
}

/// (branch, commit) of the repository's tip: one ref listing into a throwaway cache, with the
/// transport and trust settings a `gitops sync` on this machine would use.
fn repository_tip(url: &str, branch: Option<&str>) -> Result<(String, String), Failure> {
    /// `gitops sync`'s flags, so that their env vars and the env file apply here too.
    #[derive(clap::Parser)]
    struct SyncFlags {
        #[command(flatten)]
        sync: crate::cli::SyncArgs,
    }
    let scratch = std::env::temp_dir().join(format!("gitops-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).map_err(|e| Failure::from(anyhow::anyhow!("creating {}: {e}", scratch.display())))?;
    let result = (|| {
        let state_dir = scratch.to_string_lossy().into_owned();
        let mut argv = vec!["sync", "--repo-url", url, "--state-dir", &state_dir];
        if let Some(branch) = branch {
            argv.extend(["--branch", branch]);
        }
        let flags = <SyncFlags as clap::Parser>::try_parse_from(argv)
            .map_err(|e| Failure::usage(anyhow::anyhow!("--repo-url: {}", e.to_string().trim())))?;
        let settings = crate::config::Settings::from_args(flags.sync).map_err(Failure::usage)?;
        if let HostKeys::TrustOnFirstUse(_) = settings.host_keys {
            return Err(Failure::usage(anyhow::anyhow!(
                "gitops fleet --repo-url does not trust a host key on first use: pin it with --known-hosts FILE (GITOPS_KNOWN_HOSTS)"
            )));
        }
        let repo = fetch::open_cache(
            &scratch.join("cache.git"),
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
        let what = format!("listing the refs of {}", settings.repo_url_display);
        let (listed, expired) =
            crate::deadline::run(settings.fetch_timeout, &what, || fetch::remote_tip(&repo, source));
        let (tip, branch) = match listed {
            Err(_) if expired => {
                Err(anyhow::anyhow!("{what}: no answer within --fetch-timeout {:?}", settings.fetch_timeout))
            }
            other => other,
        }?;
        Ok((branch, tip.to_string()))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
