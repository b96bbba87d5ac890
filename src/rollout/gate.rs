//! The Prometheus gate: the canaries' health on a commit, as their metrics tell it.

use std::time::Duration;

use super::GateState;
use crate::commit_id::short;
use crate::fleetview::{Host, prometheus};
use crate::outcome::Outcome;

/// Canaries that reported within this long count (`min_canaries` defaults to all of them).
pub const RECENT: Duration = Duration::from_secs(15 * 60);

/// Where the gate asks.
#[derive(Debug, Clone)]
pub struct Source {
    /// Prometheus base URL (`--prometheus`).
    pub url: String,
    /// Label matchers for the fleet's series (`--prometheus-selector`).
    pub matchers: String,
}

/// Ask Prometheus about the canaries (as of now: the wall clock, whatever a test's clock says) and
/// judge; any failure to ask is `Unknown` (the caller holds).
pub fn check(source: &Source, names: &[String], tags: &[String], commit: &str, min: Option<u32>) -> GateState {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
    match prometheus::canaries(&source.url, &source.matchers, names, tags, RECENT, now) {
        Ok(canaries) if canaries.is_empty() => GateState::Misconfigured("canary-unknown", unknown(source, names, tags)),
        Ok(canaries) => judge(&canaries, commit, min),
        Err(e) => GateState::Unknown(format!("{e:#}")),
    }
}

/// Why no canary answered: a name or tag that matches no host, or canaries that stopped reporting.
fn unknown(source: &Source, names: &[String], tags: &[String]) -> String {
    let wanted: Vec<String> = names.iter().cloned().chain(tags.iter().map(|t| format!("tag:{t}"))).collect();
    let selector = if source.matchers.is_empty() { String::new() } else { format!(" matching {}", source.matchers) };
    format!(
        "canary={} matches no host that reported to Prometheus{selector} in the last {} minutes; check the names against the canaries' --host (and --tags), and that they report",
        wanted.join(","),
        RECENT.as_secs() / 60
    )
}

/// Open when at least `min` canaries (default: every canary seen) are live on `commit` with its
/// entrypoint applied and a successful last run, and none failed on it.
pub fn judge(canaries: &[Host], commit: &str, min: Option<u32>) -> GateState {
    let result = |h: &Host| h.last_result.as_deref().and_then(Outcome::from_label);
    let live_on = |h: &Host| h.live_commit.as_deref() == Some(commit);
    // Failed on the commit: live on it with its entrypoint failed, or saw it and could not make it
    // live because applying (metrics version 1), verifying or decrypting it failed, or it was rolled back.
    let failed_on = |h: &Host| {
        live_on(h) && h.live_result.as_deref() == Some("failed")
            || h.remote_commit.as_deref() == Some(commit)
                && !live_on(h)
                && matches!(
                    result(h),
                    Some(
                        Outcome::ApplyFailed
                            | Outcome::VerifyFailed
                            | Outcome::SecretsFailed
                            | Outcome::RolledBack
                            | Outcome::RollbackFailed
                    )
                )
    };
    if let Some(bad) = canaries.iter().find(|h| failed_on(h)) {
        return GateState::Halted(format!(
            "canary {} failed on {} ({})",
            bad.host,
            short(commit),
            match result(bad) {
                Some(outcome) if outcome.is_failure() => outcome.label(),
                _ => bad.live_result.as_deref().unwrap_or("?"),
            }
        ));
    }
    if canaries.is_empty() {
        return GateState::Waiting(format!("no canary reported in the last {} minutes", RECENT.as_secs() / 60));
    }
    // A host on metrics version 1 does not say how the live commit's entrypoint ended: its last run does.
    let healthy = |h: &Host| {
        live_on(h)
            && h.live_result.as_deref().is_none_or(|r| r == "applied")
            && result(h).is_some_and(|r| !r.is_failure())
    };
    let live = canaries.iter().filter(|h| healthy(h)).count();
    let needed = min.map(|n| n as usize).unwrap_or(canaries.len());
    if live >= needed {
        GateState::Open
    } else {
        GateState::Waiting(format!("{live} of {needed} canaries live on {}", short(commit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(name: &str, live: &str, remote: &str, result: &str) -> Host {
        Host {
            host: name.into(),
            live_commit: Some(live.into()),
            remote_commit: Some(remote.into()),
            last_result: Some(result.into()),
            ..Host::default()
        }
    }

    #[test]
    fn opens_when_enough_canaries_are_live_and_halts_when_one_fails() {
        let ok = canary("a", "new", "new", "applied");
        let lagging = canary("b", "old", "old", "up-to-date");
        let failing = canary("c", "old", "new", "apply-failed");
        assert_eq!(
            judge(&[ok.clone(), lagging.clone()], "new", None),
            GateState::Waiting("1 of 2 canaries live on new".into())
        );
        assert_eq!(judge(&[ok.clone(), lagging], "new", Some(1)), GateState::Open);
        assert_eq!(
            judge(&[ok.clone(), failing], "new", Some(1)),
            GateState::Halted("canary c failed on new (apply-failed)".into())
        );
        assert!(matches!(judge(&[], "new", None), GateState::Waiting(_)));
        let secrets = canary("f", "old", "new", "secrets-failed");
        assert_eq!(
            judge(&[ok.clone(), secrets], "new", Some(1)),
            GateState::Halted("canary f failed on new (secrets-failed)".into())
        );
        let rolled_back = canary("e", "old", "new", "rolled-back");
        assert_eq!(
            judge(&[ok.clone(), rolled_back], "new", Some(1)),
            GateState::Halted("canary e failed on new (rolled-back)".into())
        );
        // A failure on another commit does not halt this one.
        assert_eq!(judge(&[ok.clone(), canary("d", "old", "older", "apply-failed")], "new", Some(1)), GateState::Open);
    }

    #[test]
    fn a_canary_live_on_the_commit_whose_entrypoint_failed_halts() {
        // Metrics version 2: the failed commit is live, with result "failed".
        let mut failed = canary("c1", "new", "new", "apply-failed");
        failed.live_result = Some("failed".into());
        failed.applied_commit = Some("old".into());
        let mut ok = canary("c2", "new", "new", "applied");
        ok.live_result = Some("applied".into());
        assert_eq!(
            judge(&[ok.clone(), failed.clone()], "new", Some(1)),
            GateState::Halted("canary c1 failed on new (apply-failed)".into())
        );
        // Its next run gives up (--max-attempts) or is deferred: still failed on the commit.
        failed.last_result = Some("deferred".into());
        assert_eq!(
            judge(&[ok.clone(), failed], "new", Some(1)),
            GateState::Halted("canary c1 failed on new (failed)".into())
        );
        // Live on it, but killed before its entrypoint ended: not healthy, not failed either.
        let mut unfinished = canary("c3", "new", "new", "error");
        unfinished.live_result = Some("unfinished".into());
        assert_eq!(judge(&[ok, unfinished], "new", None), GateState::Waiting("1 of 2 canaries live on new".into()));
    }
}
