//! The fleet at a glance, from what every host's metrics textfile told Prometheus: which commit each
//! host runs, who is behind, failing, silent or missing, and why. Plain data and decisions here; the
//! queries are in [`prometheus`], the hosts a repository names in [`expected`], the output formats in
//! [`render`].

pub mod expected;
pub mod prometheus;
pub mod render;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::commit_id::short;
use crate::outcome::Outcome;

/// Version of the `--json` document; bumped when a field changes meaning or goes away.
/// 2: `live_commit` is the commit `current` points at (failed or not), `state` has new values.
pub const JSON_SCHEMA: u32 = 2;

/// One host, as Prometheus last saw it (or as the repository names it, for a missing host).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Host {
    /// The host's name (`gitops --host`), else its scrape instance.
    pub host: String,
    /// The scrape target (`instance` label).
    pub instance: String,
    /// The scrape job (`job` label).
    pub job: String,
    /// gitops version on the host.
    pub version: Option<String>,
    /// The branch the host deploys.
    pub branch: Option<String>,
    /// The live commit: the revision `current` points at, whatever its entrypoint did (for a host on
    /// metrics version 1, its applied commit).
    pub live_commit: Option<String>,
    /// How the live commit's entrypoint ended: `applied`, `failed` or `unfinished` (None: version 1).
    pub live_result: Option<String>,
    /// Since when it is live (Unix seconds).
    pub live_since: Option<f64>,
    /// The last commit whose entrypoint succeeded: the live one unless that failed.
    pub applied_commit: Option<String>,
    /// When it was applied (Unix seconds).
    pub applied_at: Option<f64>,
    /// The remote commit the host saw on its last run.
    pub remote_commit: Option<String>,
    /// When that remote commit was committed (Unix seconds).
    pub remote_commit_time: Option<f64>,
    /// Commits the live commit is behind the host's remote commit, as the host counted them.
    pub commits_behind: Option<u64>,
    /// How the host's last run ended (an exit-code label: up-to-date, applied, apply-failed, …).
    pub last_result: Option<String>,
    /// The first line of the last run's error, when it failed.
    pub last_error: Option<String>,
    /// When the last run finished (Unix seconds).
    pub last_run: Option<f64>,
    /// When a run last ended as planned (Unix seconds); None if never.
    pub last_success: Option<f64>,
    /// Failed runs in a row.
    pub consecutive_failures: u64,
    /// Since when a due reboot has been pending (Unix seconds).
    pub reboot_pending_since: Option<f64>,
    /// Why a new commit is held back (wave, gate, halted, pause, suspend, or a configuration mistake:
    /// gate-unconfigured, canary-unknown, gate-unreachable), when the last run was deferred.
    pub deferred: Option<String>,
    /// When it goes (Unix seconds), when known.
    pub deferred_until: Option<f64>,
    /// Whether Prometheus scrapes the host's exporter successfully right now.
    pub reporting: bool,
    /// Where the host stands (filled by [`assess`]).
    pub state: State,
    /// Why, in a few words: the error, the age of the last report, what it waits for (filled by [`assess`]).
    pub why: Option<String>,
}

/// Where a host stands, worst first: every host is in exactly one state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Its last run failed (apply or verification failed, need-push, diverged, runtime error), or its
    /// live commit's entrypoint failed.
    Failing,
    /// Held back by a configuration mistake (`gate=prometheus` without `--prometheus`, canaries that
    /// match no host, a Prometheus the gate cannot ask): it would wait forever.
    Misconfigured,
    /// Not heard from: its exporter is down, or its last run is older than `--stale`.
    Stale,
    /// Named by the repository (`hosts/<name>/`, `.gitops/hosts`) but never seen within the lookback.
    Missing,
    /// Holding the tip back because a canary failed on it: the rollout needs a fix or a revert.
    Halted,
    /// Healthy, not live on the tip, and it ran after the tip appeared: its last run saw another commit
    /// (a lagging mirror, another ref), or saw the tip and did not take it.
    Behind,
    /// Holding the tip back on purpose: its rollout wave or gate, a pause, a suspend.
    Waiting,
    /// Healthy, not live on the tip, and it has not run since the tip appeared: it takes it on its next
    /// poll (a rollout going as planned).
    Pending,
    /// At the tip, with a reboot due that has not happened.
    RebootPending,
    /// At the tip and healthy.
    #[default]
    Converged,
}

impl State {
    /// Every state, worst first (the order of the table).
    pub const ALL: [State; 10] = [
        State::Failing,
        State::Misconfigured,
        State::Stale,
        State::Missing,
        State::Halted,
        State::Behind,
        State::Waiting,
        State::Pending,
        State::RebootPending,
        State::Converged,
    ];

    /// The words of the summary line and the table.
    pub fn label(self) -> &'static str {
        match self {
            State::Failing => "failing",
            State::Misconfigured => "misconfigured",
            State::Stale => "stale",
            State::Missing => "missing",
            State::Halted => "halted",
            State::Behind => "behind",
            State::Waiting => "waiting",
            State::Pending => "pending",
            State::RebootPending => "reboot pending",
            State::Converged => "converged",
        }
    }

    /// Whether a host in this state needs someone to look (the rollout will not settle by itself).
    pub fn is_unsettled(self) -> bool {
        !matches!(self, State::Waiting | State::Pending | State::RebootPending | State::Converged)
    }
}

/// The fleet in one word: what `gitops fleet` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every host is at its tip and healthy (a pending reboot aside).
    Converged,
    /// Nobody is unsettled, and some hosts hold the tip back on purpose (wave, gate, pause, suspend)
    /// or have not polled since it appeared.
    RollingOut,
    /// Some host is failing, misconfigured, stale, missing, halted or behind.
    Unsettled,
    /// No host reported with the selector (and branch): a typo is not a converged fleet.
    NoHosts,
}

impl Verdict {
    /// The exit code's outcome.
    pub fn outcome(self) -> Outcome {
        match self {
            Verdict::Converged => Outcome::Success,
            Verdict::RollingOut => Outcome::FleetRollingOut,
            Verdict::Unsettled => Outcome::FleetUnsettled,
            Verdict::NoHosts => Outcome::FleetNoHosts,
        }
    }
}

/// What the whole fleet looks like at `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    /// Version of this document's shape.
    pub schema: u32,
    /// When it was assessed (Unix seconds).
    pub now: f64,
    /// The fleet in one word.
    pub verdict: Verdict,
    /// The tip per branch: the commit every host on that branch should run.
    pub tips: BTreeMap<String, Tip>,
    /// Hosts per state (every state present, zeros included).
    pub counts: BTreeMap<State, usize>,
    /// Every host, worst first.
    pub hosts: Vec<Host>,
    /// What the operator must know before the hosts (no host matched: the selector and what to do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// The commit a branch's hosts should run, and who said so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tip {
    /// Full commit id.
    pub commit: String,
    /// "repository" (--repo-url, or --tip) or "fleet" (the newest remote commit hosts reported).
    pub source: &'static str,
}

/// Assessment settings.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A host whose last run is older than this many seconds is stale.
    pub stale_seconds: f64,
    /// How far back Prometheus was asked about hosts (a missing host was not seen within it).
    pub lookback_seconds: f64,
}

/// The names the repository gives that no reported host answers to (`hosts/web1/` is
/// web1.example.com's too), in the repository's order.
pub fn missing(named: &[String], reported: &[Host]) -> Vec<String> {
    named.iter().filter(|name| !reported.iter().any(|h| crate::inventory::names_host(name, &h.host))).cloned().collect()
}

/// Decide every host's state against the tips and order them worst first. `known_tips` are tips
/// read from the repository; branches without one get the newest remote commit their hosts report.
/// `missing` are hosts the repository names that did not report (on the one known tip's branch).
pub fn assess(
    mut hosts: Vec<Host>,
    missing: Vec<String>,
    known_tips: BTreeMap<String, String>,
    now: f64,
    limits: Thresholds,
) -> Fleet {
    let reported = hosts.len();
    let mut tips: BTreeMap<String, Tip> =
        known_tips.into_iter().map(|(branch, commit)| (branch, Tip { commit, source: "repository" })).collect();
    for (branch, commit) in fleet_tips(&hosts) {
        tips.entry(branch).or_insert(Tip { commit, source: "fleet" });
    }
    let tip_of = |host: &Host| host.branch.as_ref().and_then(|b| tips.get(b)).map(|t| t.commit.as_str());
    let seen = tips_seen(&hosts, &tips);
    for host in &mut hosts {
        let tip = tip_of(host);
        let tip_seen = host.branch.as_ref().and_then(|b| seen.get(b)).copied();
        host.state = state_of(host, tip, tip_seen, now, limits);
    }
    let whys: Vec<Option<String>> = hosts.iter().map(|h| why(h, tip_of(h), &hosts, now, limits)).collect();
    for (host, why) in hosts.iter_mut().zip(whys) {
        host.why = why;
    }
    let branch = if tips.len() == 1 { tips.keys().next().cloned() } else { None };
    hosts.extend(missing.into_iter().map(|name| Host {
        host: name,
        branch: branch.clone(),
        state: State::Missing,
        why: Some(format!("named in the repository, not seen in the last {}", duration(limits.lookback_seconds))),
        ..Host::default()
    }));
    hosts.sort_by(|a, b| {
        let since_success = |h: &Host| h.last_success.unwrap_or(0.0);
        (a.state, since_success(a), &a.host)
            .partial_cmp(&(b.state, since_success(b), &b.host))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut counts: BTreeMap<State, usize> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for host in &hosts {
        *counts.entry(host.state).or_default() += 1;
    }
    let verdict = if reported == 0 {
        Verdict::NoHosts
    } else if hosts.iter().any(|h| h.state.is_unsettled()) {
        Verdict::Unsettled
    } else if hosts.iter().any(|h| matches!(h.state, State::Waiting | State::Pending)) {
        Verdict::RollingOut
    } else {
        Verdict::Converged
    };
    Fleet { schema: JSON_SCHEMA, now, verdict, tips, counts, hosts, notice: None }
}

/// Whether the deferral kind is a configuration mistake rather than the plan.
fn misconfigured(kind: Option<&str>) -> bool {
    kind.is_some_and(|kind| crate::notify::MISCONFIGURED.contains(&kind))
}

/// When each branch's tip was first seen, as far as the hosts tell (None: no host has reported it
/// yet, e.g. a tip from the repository). A host live on the tip says when it went live there, which
/// later runs do not move; a host that only saw it (held back by its wave) says when it last ran.
fn tips_seen(hosts: &[Host], tips: &BTreeMap<String, Tip>) -> BTreeMap<String, f64> {
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    for host in hosts {
        let Some((branch, tip)) = host.branch.as_ref().and_then(|b| tips.get(b).map(|t| (b, t.commit.as_str()))) else {
            continue;
        };
        let at = if host.live_commit.as_deref() == Some(tip) {
            host.live_since.or(host.last_run)
        } else if host.remote_commit.as_deref() == Some(tip) {
            host.last_run
        } else {
            None
        };
        if let Some(at) = at {
            seen.entry(branch.clone()).and_modify(|first| *first = first.min(at)).or_insert(at);
        }
    }
    seen
}

/// One host's state: failing beats misconfigured beats stale beats halted beats behind beats waiting
/// beats pending beats a pending reboot. `tip_seen`: when a host first reported the tip.
fn state_of(host: &Host, tip: Option<&str>, tip_seen: Option<f64>, now: f64, limits: Thresholds) -> State {
    let failed = host.last_result.as_deref().and_then(Outcome::from_label).is_some_and(Outcome::is_failure)
        || host.live_result.as_deref() == Some("failed");
    let deferred = host.last_result.as_deref() == Some(Outcome::Deferred.label());
    let silent = !host.reporting || host.last_run.is_none_or(|at| now - at > limits.stale_seconds);
    let behind = match (tip, host.live_commit.as_deref()) {
        (Some(tip), Some(live)) => tip != live,
        (Some(_), None) => true,
        (None, _) => false,
    };
    // A host held by a mistake fails its runs (exit 2 or 1): what it needs is the mistake fixed.
    let live_failed = host.live_result.as_deref() == Some("failed");
    if live_failed || failed && !misconfigured(host.deferred.as_deref()) {
        State::Failing
    } else if misconfigured(host.deferred.as_deref()) {
        State::Misconfigured
    } else if silent {
        State::Stale
    } else if deferred && behind && host.deferred.as_deref() == Some("halted") {
        State::Halted
    } else if deferred && (behind || host.deferred.as_deref() == Some("suspend")) {
        // A suspended host shows even when nothing is new: it would not take the next commit.
        State::Waiting
    } else if behind {
        // Not polled since the tip appeared: it takes the tip on its next run. A run after that which
        // still did not is a lagging mirror or another ref, and needs a look.
        let ran_since = matches!((host.last_run, tip_seen), (Some(ran), Some(seen)) if ran >= seen);
        if ran_since { State::Behind } else { State::Pending }
    } else if host.reboot_pending_since.is_some() {
        State::RebootPending
    } else {
        State::Converged
    }
}

/// Why `host` is in its state, in a few words (None when there is nothing to say).
fn why(host: &Host, tip: Option<&str>, fleet: &[Host], now: f64, limits: Thresholds) -> Option<String> {
    let ago = |at: f64| format!("{} ago", duration(now - at));
    match host.state {
        State::Failing => Some(match (&host.last_error, host.live_result.as_deref(), &host.live_commit) {
            (Some(error), _, _) => error.clone(),
            // The last run did not fail (or said nothing), but the live revision's entrypoint did.
            (None, Some("failed"), Some(live)) => format!("the entrypoint of the live commit {} failed", short(live)),
            _ => host.last_result.clone().unwrap_or_else(|| "failed".into()),
        }),
        State::Misconfigured => {
            let kind = host.deferred.as_deref().unwrap_or("?");
            Some(match kind {
                "gate-unconfigured" => {
                    format!("{kind}: gate=prometheus in .gitops/rollout, but this host has no --prometheus")
                }
                "canary-unknown" => format!("{kind}: canary= in .gitops/rollout matches no host in Prometheus"),
                "gate-unreachable" => {
                    format!("{kind}: this host cannot ask Prometheus for the gate; check --prometheus")
                }
                _ => kind.to_string(),
            })
        }
        State::Stale => {
            let last = host.last_run.map(|at| format!("last report {}", ago(at)));
            let last = last.unwrap_or_else(|| "no run reported".into());
            Some(if host.reporting {
                format!("{last} (--stale {})", duration(limits.stale_seconds))
            } else {
                format!("exporter not answering; {last}")
            })
        }
        State::Missing => None,
        State::Halted => {
            let held = host.remote_commit.as_deref();
            // The canary is the failing host on the commit this one holds back.
            let canaries: Vec<&str> = fleet
                .iter()
                .filter(|h| h.state == State::Failing)
                .filter(|h| {
                    held.is_some()
                        && (h.live_commit.as_deref() == held && h.live_result.as_deref() == Some("failed")
                            || h.remote_commit.as_deref() == held)
                })
                .map(|h| h.host.as_str())
                .collect();
            let on = held.map(short).unwrap_or("the new commit");
            Some(match canaries.as_slice() {
                [] => format!("a canary failed on {on}"),
                [one] => format!("canary {one} failed on {on}"),
                many => format!("canaries {} failed on {on}", many.join(", ")),
            })
        }
        State::Behind => {
            let ran = host.last_run.map(ago).unwrap_or_else(|| "?".into());
            Some(match host.remote_commit.as_deref() {
                Some(remote) if Some(remote) == tip => format!("last run {ran} saw the tip and did not take it"),
                Some(remote) => {
                    format!("last run {ran} saw {}, not the tip: a lagging mirror or another ref?", short(remote))
                }
                None => format!("last run {ran}, after the tip appeared"),
            })
        }
        State::Pending => host.last_run.map(|at| format!("not polled since the tip appeared (last run {})", ago(at))),
        State::Waiting => {
            let kind = host.deferred.as_deref().unwrap_or("held");
            Some(match (kind, host.deferred_until) {
                ("wave", Some(until)) => {
                    format!("wave, until {} (in {})", clock_time(until, now), duration(until - now))
                }
                ("gate", _) => "gate: waiting for the canaries".into(),
                ("pause", _) => "pause=yes in .gitops/rollout".into(),
                ("suspend", Some(until)) => format!("suspended until {}", clock_time(until, now)),
                ("suspend", None) => "suspended (gitops resume lifts it)".into(),
                (kind, Some(until)) => format!("{kind}, until {}", clock_time(until, now)),
                (kind, None) => kind.to_string(),
            })
        }
        State::RebootPending => host.reboot_pending_since.map(|at| format!("reboot due for {}", duration(now - at))),
        State::Converged => None,
    }
}

/// `14:32 UTC` today, `2026-12-01 14:32 UTC` on another day.
fn clock_time(at: f64, now: f64) -> String {
    let text = crate::clock::rfc3339(at as i64).unwrap_or_default();
    let today = crate::clock::rfc3339(now as i64).unwrap_or_default();
    let (date, time) = text.split_once('T').unwrap_or((&text, ""));
    let hhmm = time.get(..5).unwrap_or(time);
    if today.starts_with(date) { format!("{hhmm} UTC") } else { format!("{date} {hhmm} UTC") }
}

/// `45s`, `12m`, `3h`, `2d`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Per branch, the newest remote commit any host reports (by commit time; on a tie, or without
/// times, the one most hosts report).
fn fleet_tips(hosts: &[Host]) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<(&str, &str), (f64, usize)> = BTreeMap::new();
    for host in hosts {
        if let (Some(branch), Some(commit)) = (&host.branch, &host.remote_commit) {
            let entry = seen.entry((branch.as_str(), commit.as_str())).or_insert((f64::MIN, 0));
            entry.0 = entry.0.max(host.remote_commit_time.unwrap_or(f64::MIN));
            entry.1 += 1;
        }
    }
    let mut tips: BTreeMap<String, ((f64, usize), String)> = BTreeMap::new();
    for ((branch, commit), rank) in seen {
        let better =
            tips.get(branch).is_none_or(|(best, _)| rank.partial_cmp(best) == Some(std::cmp::Ordering::Greater));
        if better {
            tips.insert(branch.to_string(), (rank, commit.to_string()));
        }
    }
    tips.into_iter().map(|(branch, (_, commit))| (branch, commit)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds { stale_seconds: 900.0, lookback_seconds: 7.0 * 86400.0 };
    const NOW: f64 = 10_000.0;

    fn host(name: &str, live: &str, remote: &str, result: &str) -> Host {
        Host {
            host: name.into(),
            instance: format!("{name}:9100"),
            job: "node".into(),
            branch: Some("main".into()),
            live_commit: Some(live.into()),
            live_result: Some("applied".into()),
            applied_commit: Some(live.into()),
            remote_commit: Some(remote.into()),
            remote_commit_time: Some(if remote == "new" { 2.0 } else { 1.0 }),
            last_result: Some(result.into()),
            last_run: Some(NOW - 60.0),
            last_success: Some(NOW - 60.0),
            reporting: true,
            ..Host::default()
        }
    }

    fn deferred(name: &str, kind: &str) -> Host {
        let mut h = host(name, "old", "new", "deferred");
        h.deferred = Some(kind.into());
        h
    }

    fn states(fleet: &Fleet) -> Vec<(&str, State)> {
        fleet.hosts.iter().map(|h| (h.host.as_str(), h.state)).collect()
    }

    #[test]
    fn each_host_lands_in_its_worst_state_and_the_worst_come_first() {
        let mut silent = host("silent", "new", "new", "up-to-date");
        silent.reporting = false;
        let mut old_run = host("old-run", "new", "new", "up-to-date");
        old_run.last_run = Some(NOW - 901.0);
        let mut reboot = host("reboot", "new", "new", "applied");
        reboot.reboot_pending_since = Some(NOW - 10.0);
        let hosts = vec![
            host("ok", "new", "new", "up-to-date"),
            host("lagging", "old", "old", "up-to-date"),
            host("broken", "old", "new", "apply-failed"),
            silent,
            old_run,
            reboot,
        ];
        let fleet = assess(hosts, vec!["ghost".into()], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.tips["main"], Tip { commit: "new".into(), source: "fleet" });
        assert_eq!(
            states(&fleet),
            [
                ("broken", State::Failing),
                ("old-run", State::Stale),
                ("silent", State::Stale),
                ("ghost", State::Missing),
                ("lagging", State::Behind),
                ("reboot", State::RebootPending),
                ("ok", State::Converged),
            ]
        );
        assert_eq!(fleet.counts[&State::Stale], 2);
        assert_eq!(fleet.counts[&State::Missing], 1);
        assert_eq!(fleet.verdict, Verdict::Unsettled);
    }

    #[test]
    fn a_live_commit_whose_entrypoint_failed_is_failing_on_it_and_says_why() {
        // The last run was deferred (a newer commit waits for its wave), but what runs is broken.
        let mut broken = deferred("broken", "wave");
        broken.live_commit = Some("bad".into());
        broken.live_result = Some("failed".into());
        broken.applied_commit = Some("old".into());
        let mut erred = host("erred", "new", "new", "apply-failed");
        erred.last_error = Some("entrypoint run.sh exited with status 1".into());
        let fleet = assess(vec![broken, erred], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(states(&fleet), [("broken", State::Failing), ("erred", State::Failing)]);
        assert_eq!(fleet.hosts[0].why.as_deref(), Some("the entrypoint of the live commit bad failed"));
        assert_eq!(fleet.hosts[1].why.as_deref(), Some("entrypoint run.sh exited with status 1"));
    }

    #[test]
    fn a_healthy_wave_is_rolling_out_and_a_halt_or_a_mistake_is_unsettled() {
        let mut wave = deferred("w", "wave");
        wave.deferred_until = Some(NOW + 37.0 * 60.0);
        let canary = host("canary", "new", "new", "applied");
        let fleet = assess(vec![wave.clone(), canary.clone()], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.verdict, Verdict::RollingOut);
        assert_eq!(fleet.hosts[0].why.as_deref(), Some("wave, until 03:23 UTC (in 37m)"));

        let mut failed_canary = host("c1", "new", "new", "apply-failed");
        failed_canary.live_result = Some("failed".into());
        let halted = deferred("h", "halted");
        let fleet = assess(vec![wave.clone(), halted, failed_canary], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(states(&fleet), [("c1", State::Failing), ("h", State::Halted), ("w", State::Waiting)]);
        assert_eq!(fleet.hosts[1].why.as_deref(), Some("canary c1 failed on new"));
        assert_eq!(fleet.verdict, Verdict::Unsettled);

        let unreachable = deferred("m", "gate-unreachable");
        let fleet = assess(vec![wave.clone(), unreachable], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.hosts[0].state, State::Misconfigured, "a Prometheus the gate cannot ask is no plan");
        assert_eq!(
            fleet.hosts[0].why.as_deref(),
            Some("gate-unreachable: this host cannot ask Prometheus for the gate; check --prometheus")
        );
        for kind in crate::notify::MISCONFIGURED {
            let fleet =
                assess(vec![wave.clone(), canary.clone(), deferred("m", kind)], vec![], BTreeMap::new(), NOW, LIMITS);
            assert_eq!(fleet.hosts[0].state, State::Misconfigured, "{kind}");
            assert!(fleet.hosts[0].why.as_deref().unwrap().starts_with(&format!("{kind}: ")));
            assert_eq!(fleet.verdict, Verdict::Unsettled, "{kind} is never rolling out as planned");
        }
    }

    #[test]
    fn no_host_reported_is_its_own_verdict_even_with_missing_ones() {
        assert_eq!(assess(vec![], vec![], BTreeMap::new(), NOW, LIMITS).verdict, Verdict::NoHosts);
        let fleet = assess(vec![], vec!["web1".into()], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.verdict, Verdict::NoHosts);
        assert_eq!(fleet.counts[&State::Missing], 1);
    }

    #[test]
    fn missing_hosts_are_the_named_ones_nobody_answers_to() {
        let reported = [host("web1.example.com", "a", "a", "applied"), host("db1", "a", "a", "applied")];
        let named = ["db1", "lb1", "web1", "web1.example.org"].map(String::from);
        assert_eq!(missing(&named, &reported), ["lb1", "web1.example.org"]);
    }

    #[test]
    fn stale_hosts_say_how_old_their_last_report_is() {
        let mut down = host("down", "new", "new", "up-to-date");
        down.reporting = false;
        down.last_run = Some(NOW - 3.0 * 3600.0);
        let mut old = host("old", "new", "new", "up-to-date");
        old.last_run = Some(NOW - 1000.0);
        let fleet = assess(vec![down, old], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.hosts[0].why.as_deref(), Some("exporter not answering; last report 3h ago"));
        assert_eq!(fleet.hosts[1].why.as_deref(), Some("last report 16m ago (--stale 15m)"));
    }

    #[test]
    fn a_suspended_host_is_waiting_even_at_the_tip() {
        let mut suspended = host("s", "new", "new", "deferred");
        suspended.deferred = Some("suspend".into());
        let mut waiting = host("w", "new", "new", "deferred");
        waiting.deferred = Some("wave".into());
        let fleet = assess(vec![suspended, waiting], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(states(&fleet), [("s", State::Waiting), ("w", State::Converged)]);
    }

    #[test]
    fn a_tip_from_the_repository_wins_over_what_hosts_report() {
        let hosts = vec![host("a", "new", "new", "up-to-date")];
        let fleet = assess(hosts, vec![], BTreeMap::from([("main".into(), "newer".into())]), NOW, LIMITS);
        // Nobody has reported it yet: nobody has polled since it appeared.
        assert_eq!(fleet.hosts[0].state, State::Pending);
        assert_eq!(fleet.tips["main"].source, "repository");
        assert_eq!(fleet.verdict, Verdict::RollingOut);
    }

    #[test]
    fn a_host_that_has_not_polled_since_the_tip_appeared_is_pending_not_behind() {
        // The canary went live on the tip 5 minutes ago (and has run since: that does not move it).
        let mut canary = host("canary", "new", "new", "applied");
        canary.live_since = Some(NOW - 300.0);
        canary.last_run = Some(NOW - 30.0);
        // Its timer has not fired since.
        let mut slow = host("slow", "old", "old", "up-to-date");
        slow.last_run = Some(NOW - 400.0);
        let fleet = assess(vec![canary.clone(), slow.clone()], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(states(&fleet), [("slow", State::Pending), ("canary", State::Converged)]);
        assert_eq!(fleet.hosts[0].why.as_deref(), Some("not polled since the tip appeared (last run 6m ago)"));
        assert_eq!(fleet.verdict, Verdict::RollingOut, "a push is a rollout going as planned");

        // It ran after the canary took the tip and still saw the old commit: a lagging mirror.
        let mut mirrored = host("mirrored", "old", "old", "up-to-date");
        mirrored.last_run = Some(NOW - 100.0);
        let fleet = assess(vec![canary, slow, mirrored], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(
            states(&fleet),
            [("mirrored", State::Behind), ("slow", State::Pending), ("canary", State::Converged)]
        );
        assert_eq!(
            fleet.hosts[0].why.as_deref(),
            Some("last run 1m ago saw old, not the tip: a lagging mirror or another ref?")
        );
        assert_eq!(fleet.verdict, Verdict::Unsettled);
    }

    #[test]
    fn hosts_held_back_by_their_wave_tell_when_the_tip_was_seen() {
        // Nobody is live on the tip; the waiting host saw it on its last run, a minute ago.
        let mut waiting = deferred("w", "wave");
        waiting.last_run = Some(NOW - 60.0);
        let mut before = host("before", "old", "old", "up-to-date");
        before.last_run = Some(NOW - 120.0);
        let mut after = host("after", "old", "old", "up-to-date");
        after.last_run = Some(NOW - 30.0);
        let mut silent = host("silent", "old", "old", "up-to-date");
        silent.reporting = false;
        let fleet = assess(vec![waiting, before, after, silent], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(
            states(&fleet),
            [("silent", State::Stale), ("after", State::Behind), ("w", State::Waiting), ("before", State::Pending)]
        );
    }

    #[test]
    fn branches_have_their_own_tips_and_without_times_the_majority_wins() {
        let mut prod = host("p", "p1", "p1", "up-to-date");
        prod.branch = Some("prod".into());
        let mut a = host("a", "x", "x", "up-to-date");
        let mut b = host("b", "y", "y", "up-to-date");
        let mut c = host("c", "y", "y", "up-to-date");
        for h in [&mut a, &mut b, &mut c] {
            h.remote_commit_time = None;
        }
        let fleet = assess(vec![prod, a, b, c], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.tips["prod"].commit, "p1");
        assert_eq!(fleet.tips["main"].commit, "y");
        assert_eq!(fleet.counts[&State::Behind], 1);
        assert_eq!(fleet.counts[&State::Converged], 3);
    }

    #[test]
    fn a_fleet_at_the_tip_with_only_a_pending_reboot_is_converged() {
        let mut reboot = host("r", "new", "new", "up-to-date");
        reboot.reboot_pending_since = Some(NOW);
        let fleet = assess(vec![reboot, host("a", "new", "new", "applied")], vec![], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.verdict, Verdict::Converged);
        assert_eq!(fleet.hosts[0].why.as_deref(), Some("reboot due for 0s"));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(59.0), "59s");
        assert_eq!(duration(7200.0), "2h");
        assert_eq!(duration(-3.0), "0s");
        assert_eq!(clock_time(86400.0 + 3600.0, 86400.0), "01:00 UTC");
        assert_eq!(clock_time(2.0 * 86400.0, 86400.0), "1970-01-03 00:00 UTC");
    }
}
