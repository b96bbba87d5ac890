//! `gitops fleet`: the fleet view from Prometheus (what every host's metrics textfile says).

use std::collections::BTreeMap;

use crate::cli::FleetViewArgs;
use crate::fleetview::{self, Thresholds, prometheus, render};
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
    if let Some(branch) = &args.branch {
        hosts.retain(|h| h.branch.as_deref() == Some(branch.as_str()));
    }
    let tips: BTreeMap<String, String> = match (&args.branch, &args.tip) {
        (Some(branch), Some(tip)) => BTreeMap::from([(branch.clone(), tip.to_ascii_lowercase())]),
        _ => BTreeMap::new(),
    };
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
