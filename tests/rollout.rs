//! Safe rollouts decided in Git (`.gitops/rollout`): canaries first, a wave spread over the window,
//! pause by commit, a Prometheus gate on the canaries' health (Debian's real Prometheus and node
//! exporter). Twenty simulated hosts share one repository; `GITOPS_TEST_NOW` steps their clock.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::prom::{self, NodeExporter, Prometheus};
use crate::support::servers;
use crate::support::*;

const DEFERRED: i32 = 11;
const APPLIED: i32 = 10;

/// One host of the fleet.
struct Node {
    name: String,
    tags: String,
    host: Host,
    url: String,
    textfiles: Option<PathBuf>,
}

impl Node {
    fn new(root: &Path, url: &str, name: &str, tags: &str) -> Node {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        Node { name: name.into(), tags: tags.into(), host: Host::new(&dir, url), url: url.into(), textfiles: None }
    }

    /// `gitops sync` as this host at `now` (None: the real clock), with `extra` flags.
    fn sync_at(&self, now: Option<i64>, extra: &[&str]) -> Run {
        let state = self.host.state.to_str().unwrap();
        let mut args = vec!["sync", "--repo-url", &self.url, "--state-dir", state, "--host", &self.name];
        if !self.tags.is_empty() {
            args.extend(["--tags", &self.tags]);
        }
        let metrics = self.textfiles.as_ref().map(|d| d.join("gitops.prom").to_string_lossy().into_owned());
        if let Some(metrics) = &metrics {
            args.extend(["--metrics-file", metrics]);
        }
        args.extend_from_slice(extra);
        let mut command = self.host.command(&args);
        if let Some(now) = now {
            command.env("GITOPS_TEST_NOW", now.to_string());
        }
        command.output().expect("running gitops").into()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// "… at 2026-12-01 14:32:05 UTC" in a deferred run's log, as Unix seconds.
fn go_time(log: &str) -> i64 {
    let at = log.split("waiting for the wave: ").nth(1).and_then(|l| l.split(", at ").nth(1)).expect(log);
    let at = at.split(" UTC").next().unwrap().replace(' ', "T") + "Z";
    time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp()
}

/// The wave's percentage for a host ("waiting for the wave: 37% of 1h").
fn percent(log: &str) -> u32 {
    let rest = log.split("waiting for the wave: ").nth(1).expect(log);
    rest.split('%').next().unwrap().parse().unwrap()
}

#[test]
fn canaries_go_at_once_and_the_rest_follow_in_a_wave_over_the_window() {
    let dir = tempdir();
    let remote = Remote::with_script(&dir.path().join("repo"), "echo \"$GITOPS_HOSTNAME\" >> \"$TEST_OUT\"");
    let url = remote.file_url();
    let nodes: Vec<Node> = (0..20)
        .map(|i| {
            Node::new(&dir.path().join("hosts"), &url, &format!("host-{i:02}"), if i < 2 { "canary,eu" } else { "eu" })
        })
        .collect();
    let t0 = unix_now();
    let first = remote.head();
    for node in &nodes {
        node.sync_at(Some(t0), &[]).expect(APPLIED);
    }

    remote.write(".gitops/rollout", "# canaries, then everyone within an hour\ncanary=tag:canary\nwindow=1h\n");
    let second = remote.commit("second, rolled out");
    // One host is off when the commit lands and first sees it half an hour later: its window starts then.
    let late = 19;
    let mut go: BTreeMap<usize, i64> = BTreeMap::new();
    let mut slots = Vec::new();
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != late) {
        let run = node.sync_at(Some(t0), &[]);
        if i < 2 {
            run.expect(APPLIED);
            continue;
        }
        // Slot 0 goes at once; every other host defers and says when it will go.
        if run.code == APPLIED {
            continue;
        }
        let run = run.expect(DEFERRED);
        assert!(run.stderr.contains("deferred (main "), "{}", run.stderr);
        let at = go_time(&run.stderr);
        assert!(at > t0 && at < t0 + 3600, "{}: goes within the window: {}", node.name, run.stderr);
        go.insert(i, at);
        slots.push(percent(&run.stderr));
        assert_eq!(node.host.applied().as_deref(), Some(first.as_str()), "nothing applied while deferred");
    }
    // The status and the metrics say it.
    let (i, _) = go.iter().next().unwrap();
    let status =
        nodes[*i].host.command(&["status", "--state-dir", nodes[*i].host.state.to_str().unwrap()]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("held back:") && status.contains("waiting for the wave"), "{status}");
    // The slots spread over the window, differently per host.
    slots.sort();
    assert!(slots.first() < Some(&35) && slots.last() > Some(&65), "slots spread over the window: {slots:?}");

    // Step the clock through the window in 6-minute steps: nobody goes before its slot, everyone by the end.
    let late_node = &nodes[late];
    let late_seen = t0 + 1800;
    for step in 1..=10 {
        let now = t0 + step * 360;
        if now >= late_seen && late_node.host.applied().as_deref() != Some(second.as_str()) {
            let run = late_node.sync_at(Some(now), &[]);
            if run.code == DEFERRED {
                let at = go_time(&run.stderr);
                assert!(at >= late_seen, "the late host's window starts when it first saw the commit");
                go.entry(late).or_insert(at);
            }
        }
        for (i, at) in &go {
            let node = &nodes[*i];
            if node.host.applied().as_deref() == Some(second.as_str()) {
                continue;
            }
            let run = node.sync_at(Some(now), &[]);
            if now >= *at {
                run.expect(APPLIED);
            } else {
                run.expect(DEFERRED);
            }
        }
    }
    let end = late_seen + 3600;
    late_node.sync_at(Some(end), &[]);
    for node in &nodes {
        assert_eq!(node.host.applied().as_deref(), Some(second.as_str()), "{} converged within the window", node.name);
    }
}

#[test]
fn pause_holds_every_host_until_a_later_commit_lifts_it_and_a_bad_policy_applies_nothing() {
    let dir = tempdir();
    let remote = Remote::with_script(&dir.path().join("repo"), "exit 0");
    let url = remote.file_url();
    let nodes: Vec<Node> =
        ["canary-1", "web-1", "web-2"].iter().map(|n| Node::new(&dir.path().join("hosts"), &url, n, "")).collect();
    let first = remote.head();
    for node in &nodes {
        node.sync_at(None, &[]).expect(APPLIED);
    }
    remote.write(".gitops/rollout", "canary=canary-1\npause=yes\n");
    remote.write("new", "x\n");
    remote.commit("paused");
    for node in &nodes {
        let run = node.sync_at(None, &[]).expect(DEFERRED);
        assert!(run.stderr.contains("paused by .gitops/rollout (pause=yes)"), "{}", run.stderr);
        assert_eq!(node.host.applied().as_deref(), Some(first.as_str()));
    }
    // --dry-run says so too.
    let dry = nodes[1].sync_at(None, &["--dry-run"]).expect(DEFERRED);
    assert!(dry.stdout.contains("deferred: paused by"), "{}", dry.stdout);

    // A malformed policy: a verification-class error naming the line; nothing applied.
    remote.write(".gitops/rollout", "canary=canary-1\nwindow=forever\n");
    let broken = remote.commit("broken policy");
    for node in &nodes {
        let run = node.sync_at(None, &[]).expect(31);
        assert!(run.stderr.contains(".gitops/rollout line 2: window \"forever\""), "{}", run.stderr);
        assert_eq!(run.stderr.lines().filter(|l| l.contains("ERROR")).count(), 1, "{}", run.stderr);
        assert_eq!(node.host.applied().as_deref(), Some(first.as_str()));
        assert_ne!(node.host.applied().as_deref(), Some(broken.as_str()));
    }

    // A later commit lifts the pause: everyone moves.
    remote.write(".gitops/rollout", "canary=canary-1\n");
    let lifted = remote.commit("lift the pause");
    for node in &nodes {
        node.sync_at(None, &[]).expect(APPLIED);
        assert_eq!(node.host.applied().as_deref(), Some(lifted.as_str()));
    }
}

#[test]
fn a_failing_canary_halts_the_rollout_through_the_prometheus_gate() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let public = prom::public_dir(&dir.path().join("textfiles"));
    // c1 fails on any commit that carries `break-c1`.
    let remote = Remote::with_script(
        &dir.path().join("repo"),
        "[ \"$GITOPS_HOSTNAME\" = c1 ] && [ -e break-c1 ] && { echo broken >&2; exit 1; }\nexit 0",
    );
    let url = remote.file_url();
    let mut nodes: Vec<Node> = [("c1", "canary"), ("c2", "canary"), ("web-1", ""), ("web-2", ""), ("web-3", "")]
        .iter()
        .map(|(n, t)| Node::new(&dir.path().join("hosts"), &url, n, t))
        .collect();
    for node in &mut nodes {
        node.textfiles = Some(prom::public_dir(&public.join(&node.name)));
        node.sync_at(None, &[]).expect(APPLIED);
    }
    let exporters: Vec<NodeExporter> =
        nodes.iter().map(|n| NodeExporter::start(n.textfiles.as_ref().unwrap())).collect();
    let targets: Vec<String> = exporters.iter().map(|e| e.address.clone()).collect();
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &targets, &[]);
    let gate = ["--prometheus", &prometheus.url, "--prometheus-selector", "{job=\"node\"}"];

    remote.write(".gitops/rollout", "canary=tag:canary\ngate=prometheus\nwindow=10m\n");
    remote.write("break-c1", "x\n");
    let bad = remote.commit("breaks c1");
    nodes[0].sync_at(None, &gate).expect(30);
    nodes[1].sync_at(None, &gate).expect(APPLIED);
    prometheus.wait_for(&format!("gitops_remote_commit_info{{commit=\"{bad}\"}}"), 2, Duration::from_secs(30));
    prometheus.wait_for("gitops_last_exit_code == 30", 1, Duration::from_secs(30));
    // c1's failed commit is live (its entrypoint partly ran): the gate reads that, not its last applied one.
    prometheus.wait_for(
        &format!("gitops_live_commit_info{{commit=\"{bad}\",result=\"failed\"}}"),
        1,
        Duration::from_secs(30),
    );
    for node in &nodes[2..] {
        let run = node.sync_at(None, &gate).expect(DEFERRED);
        assert!(run.stderr.contains(&format!("rollout halted: canary c1 failed on {}", &bad[..12])), "{}", run.stderr);
    }
    prometheus.wait_for("gitops_deferred{kind=\"halted\"}", 3, Duration::from_secs(30));
    let fleet = fleet(&prometheus).expect(3);
    let summary = fleet.stdout.lines().next().unwrap();
    assert!(summary.contains("3 halted · 1 failing") && summary.ends_with("rollout halted"), "{}", fleet.stdout);
    let c1 = fleet.stdout.lines().find(|l| l.starts_with("c1 ")).unwrap();
    assert!(c1.contains(&format!("failing  {} (failed)", &bad[..12])), "{}", fleet.stdout);
    let halted: Vec<&str> = fleet.stdout.lines().skip(2).filter(|l| l.contains(" halted ")).collect();
    assert_eq!(halted.len(), 3, "{}", fleet.stdout);
    assert!(halted.iter().all(|l| l.ends_with(&format!("canary c1 failed on {}", &bad[..12]))), "{}", fleet.stdout);

    // Prometheus out of reach: hold, and say so (fail closed): the run fails, nothing changes by itself.
    let dead = format!("http://127.0.0.1:{}", servers::free_port());
    let run = nodes[2].sync_at(None, &["--prometheus", &dead]).expect(1);
    assert!(run.stderr.contains("holding: the gate cannot be checked"), "{}", run.stderr);

    // The fix: canaries take it, the gate opens, the others wait for their slot in the 10-minute window.
    remote.remove("break-c1");
    let fixed = remote.commit("fixes c1");
    nodes[0].sync_at(None, &gate).expect(APPLIED);
    nodes[1].sync_at(None, &gate).expect(APPLIED);
    prometheus.wait_for(&format!("gitops_applied_commit_info{{commit=\"{fixed}\"}}"), 2, Duration::from_secs(30));
    prometheus.wait_for("gitops_last_exit_code{instance=~\".*\"} == 10", 2, Duration::from_secs(30));
    let opened = unix_now();
    for node in &nodes[2..] {
        let run = node.sync_at(Some(opened), &gate);
        assert!(run.code == APPLIED || run.stderr.contains("waiting for the wave"), "{}", run.stderr);
        node.sync_at(Some(opened + 601), &gate).expect(if run.code == APPLIED { 0 } else { APPLIED });
        assert_eq!(node.host.applied().as_deref(), Some(fixed.as_str()));
    }
}

fn fleet(prometheus: &Prometheus) -> Run {
    Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["fleet", "--prometheus", &prometheus.url, "--selector", "{job=\"node\"}"])
        .env("GITOPS_CONFIG", "/dev/null")
        .output()
        .unwrap()
        .into()
}
