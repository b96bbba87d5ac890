//! The fleet at a glance, from what every host's metrics textfile told Prometheus: which commit each
//! host runs, who is behind, failing or silent. Plain data and decisions here; the queries are in
//! [`prometheus`], the output formats in [`render`].

pub mod prometheus;
pub mod render;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::outcome::Outcome;

/// Version of the `--json` document; bumped when a field changes meaning or goes away.
pub const JSON_SCHEMA: u32 = 1;

/// One host, as Prometheus last saw it.
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
    /// The commit applied and live on the host.
    pub live_commit: Option<String>,
    /// When it was applied (Unix seconds).
    pub live_since: Option<f64>,
    /// The remote commit the host saw on its last run.
    pub remote_commit: Option<String>,
    /// When that remote commit was committed (Unix seconds).
    pub remote_commit_time: Option<f64>,
    /// Commits the live commit is behind the host's remote commit, as the host counted them.
    pub commits_behind: Option<u64>,
    /// How the host's last run ended (an exit-code label: up-to-date, applied, apply-failed, …).
    pub last_result: Option<String>,
    /// When the last run finished (Unix seconds).
    pub last_run: Option<f64>,
    /// When a run last succeeded (Unix seconds); None if never.
    pub last_success: Option<f64>,
    /// Failed runs in a row.
    pub consecutive_failures: u64,
    /// Since when a due reboot has been pending (Unix seconds).
    pub reboot_pending_since: Option<f64>,
    /// Why a new commit is held back (wave, gate, halted, pause, suspend), when the last run was deferred.
    pub deferred: Option<String>,
    /// When it goes (Unix seconds), when known.
    pub deferred_until: Option<f64>,
    /// Whether Prometheus scrapes the host's exporter successfully right now.
    pub reporting: bool,
    /// Where the host stands (filled by [`assess`]).
    pub state: State,
}

/// Where a host stands, worst first: every host is in exactly one state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Its last run failed (apply or verification failed, need-push, diverged, runtime error).
    Failing,
    /// Not heard from: its exporter is down, or its last run is older than `--stale`.
    Stale,
    /// Healthy but its live commit is not the tip.
    Behind,
    /// Holding the tip back on purpose: its rollout wave or gate, a pause, a suspend.
    Waiting,
    /// At the tip, with a reboot due that has not happened.
    RebootPending,
    /// At the tip and healthy.
    #[default]
    Converged,
}

impl State {
    /// Every state, worst first (the order of the summary line and the table).
    pub const ALL: [State; 6] =
        [State::Failing, State::Stale, State::Behind, State::Waiting, State::RebootPending, State::Converged];

    /// The words of the summary line.
    pub fn label(self) -> &'static str {
        match self {
            State::Failing => "failing",
            State::Stale => "stale",
            State::Behind => "behind",
            State::Waiting => "waiting",
            State::RebootPending => "reboot pending",
            State::Converged => "converged",
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
    /// The tip per branch: the commit every host on that branch should run.
    pub tips: BTreeMap<String, Tip>,
    /// Hosts per state (every state present, zeros included).
    pub counts: BTreeMap<State, usize>,
    /// Every host, worst first.
    pub hosts: Vec<Host>,
}

/// The commit a branch's hosts should run, and who said so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tip {
    /// Full commit id.
    pub commit: String,
    /// "repository" (asked with --repo-url) or "fleet" (the newest remote commit hosts reported).
    pub source: &'static str,
}

/// Assessment settings.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A host whose last run is older than this many seconds is stale.
    pub stale_seconds: f64,
}

/// Decide every host's state against the tips and order them worst first. `known_tips` are tips
/// read from the repository; branches without one get the newest remote commit their hosts report.
pub fn assess(mut hosts: Vec<Host>, known_tips: BTreeMap<String, String>, now: f64, limits: Thresholds) -> Fleet {
    let mut tips: BTreeMap<String, Tip> =
        known_tips.into_iter().map(|(branch, commit)| (branch, Tip { commit, source: "repository" })).collect();
    for (branch, commit) in fleet_tips(&hosts) {
        tips.entry(branch).or_insert(Tip { commit, source: "fleet" });
    }
    for host in &mut hosts {
        let tip = host.branch.as_ref().and_then(|b| tips.get(b)).map(|t| t.commit.as_str());
        host.state = state_of(host, tip, now, limits);
    }
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
    Fleet { schema: JSON_SCHEMA, now, tips, counts, hosts }
}

/// One host's state: failing beats stale beats behind beats a pending reboot.
fn state_of(host: &Host, tip: Option<&str>, now: f64, limits: Thresholds) -> State {
    let failed = host.last_result.as_deref().and_then(Outcome::from_label).is_some_and(Outcome::is_failure);
    let silent = !host.reporting || host.last_run.is_none_or(|at| now - at > limits.stale_seconds);
    let behind = match (tip, host.live_commit.as_deref()) {
        (Some(tip), Some(live)) => tip != live,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if failed {
        State::Failing
    } else if silent {
        State::Stale
    } else if host.last_result.as_deref() == Some(Outcome::Deferred.label())
        && (behind || host.deferred.as_deref() == Some("suspend"))
    {
        // A suspended host shows even when nothing is new: it would not take the next commit.
        State::Waiting
    } else if behind {
        State::Behind
    } else if host.reboot_pending_since.is_some() {
        State::RebootPending
    } else {
        State::Converged
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

impl Fleet {
    /// Whether a host holds because a canary failed on its commit.
    pub fn halted(&self) -> bool {
        self.hosts.iter().any(|h| h.state == State::Waiting && h.deferred.as_deref() == Some("halted"))
    }

    /// Whether every host is at its tip and healthy (a pending reboot does not count against it).
    pub fn converged(&self) -> bool {
        self.hosts.iter().all(|h| matches!(h.state, State::Converged | State::RebootPending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds { stale_seconds: 900.0 };
    const NOW: f64 = 10_000.0;

    fn host(name: &str, live: &str, remote: &str, result: &str) -> Host {
        Host {
            host: name.into(),
            instance: format!("{name}:9100"),
            job: "node".into(),
            branch: Some("main".into()),
            live_commit: Some(live.into()),
            remote_commit: Some(remote.into()),
            remote_commit_time: Some(if remote == "new" { 2.0 } else { 1.0 }),
            last_result: Some(result.into()),
            last_run: Some(NOW - 60.0),
            last_success: Some(NOW - 60.0),
            reporting: true,
            ..Host::default()
        }
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
        let fleet = assess(hosts, BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.tips["main"], Tip { commit: "new".into(), source: "fleet" });
        let order: Vec<(&str, State)> = fleet.hosts.iter().map(|h| (h.host.as_str(), h.state)).collect();
        assert_eq!(
            order,
            [
                ("broken", State::Failing),
                ("old-run", State::Stale),
                ("silent", State::Stale),
                ("lagging", State::Behind),
                ("reboot", State::RebootPending),
                ("ok", State::Converged),
            ]
        );
        assert_eq!(fleet.counts[&State::Stale], 2);
        assert!(!fleet.converged());
    }

    #[test]
    fn a_suspended_host_is_waiting_even_at_the_tip() {
        let mut suspended = host("s", "new", "new", "deferred");
        suspended.deferred = Some("suspend".into());
        let mut waiting = host("w", "new", "new", "deferred");
        waiting.deferred = Some("wave".into());
        let fleet = assess(vec![suspended, waiting], BTreeMap::new(), NOW, LIMITS);
        let states: Vec<(&str, State)> = fleet.hosts.iter().map(|h| (h.host.as_str(), h.state)).collect();
        assert_eq!(states, [("s", State::Waiting), ("w", State::Converged)]);
    }

    #[test]
    fn a_tip_from_the_repository_wins_over_what_hosts_report() {
        let hosts = vec![host("a", "new", "new", "up-to-date")];
        let fleet = assess(hosts, BTreeMap::from([("main".into(), "newer".into())]), NOW, LIMITS);
        assert_eq!(fleet.hosts[0].state, State::Behind);
        assert_eq!(fleet.tips["main"].source, "repository");
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
        let fleet = assess(vec![prod, a, b, c], BTreeMap::new(), NOW, LIMITS);
        assert_eq!(fleet.tips["prod"].commit, "p1");
        assert_eq!(fleet.tips["main"].commit, "y");
        assert_eq!(fleet.counts[&State::Behind], 1);
        assert_eq!(fleet.counts[&State::Converged], 3);
    }

    #[test]
    fn a_fleet_at_the_tip_with_only_a_pending_reboot_is_converged() {
        let mut reboot = host("r", "new", "new", "up-to-date");
        reboot.reboot_pending_since = Some(NOW);
        let fleet = assess(vec![reboot, host("a", "new", "new", "applied")], BTreeMap::new(), NOW, LIMITS);
        assert!(fleet.converged());
    }
}
