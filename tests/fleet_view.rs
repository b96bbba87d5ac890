//! The fleet view against Debian's real Prometheus and node exporter: every simulated host is a
//! real `gitops sync` with its own --host, state directory and textfile directory, served by its
//! own node exporter (running as `nobody`, as Debian's runs as `prometheus`); `gitops fleet`,
//! the alert rules and the dashboard's queries read what Prometheus scraped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::prom::{self, NodeExporter, Prometheus};
use crate::support::servers;
use crate::support::*;

/// Fails on the commit that carries `fail-broken`, for the host called broken; asks for a reboot
/// on the host called rebooter.
const SCRIPT: &str = r#"case "$GITOPS_HOSTNAME" in
  broken) [ ! -e fail-broken ] || { echo "broken on purpose" >&2; exit 1; } ;;
  rebooter) echo "kernel updated" > "$GITOPS_REBOOT_REQUEST" ;;
esac
exit 0"#;

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/gitops-rules.yml")
}

/// One simulated host: state, textfile directory, exporter.
struct Node {
    name: String,
    host: Host,
    textfiles: PathBuf,
    url: String,
}

impl Node {
    fn new(root: &Path, public: &Path, url: &str, name: &str) -> Node {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        Node {
            name: name.into(),
            host: Host::new(&dir, url),
            textfiles: prom::public_dir(&public.join(name)),
            url: url.into(),
        }
    }

    fn metrics_file(&self) -> PathBuf {
        self.textfiles.join("gitops.prom")
    }

    fn sync(&self) -> Run {
        self.sync_with(&[])
    }

    /// `gitops sync` as this host with `extra` flags (--tags, --prometheus).
    fn sync_with(&self, extra: &[&str]) -> Run {
        let (state, metrics) = (self.host.state.to_str().unwrap(), self.metrics_file());
        let mut args = vec![
            "sync",
            "--repo-url",
            &self.url,
            "--state-dir",
            state,
            "--host",
            &self.name,
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--reboot-strategy",
            "never",
        ];
        args.extend_from_slice(extra);
        self.host.command(&args).output().expect("running gitops").into()
    }

    /// Rewrite the textfile as a gitops that still writes metrics version 1 would have: no live-commit
    /// or error series (its applied commit was the live one).
    fn as_metrics_version_1(&self) {
        let text = fs::read_to_string(self.metrics_file()).unwrap();
        let old: Vec<&str> = text
            .lines()
            .filter(|l| !["gitops_live_commit_", "gitops_last_error_info"].iter().any(|name| l.contains(name)))
            .map(|l| if l.starts_with("gitops_metrics_version ") { "gitops_metrics_version 1" } else { l })
            .collect();
        assert!(old.contains(&"gitops_metrics_version 1") && old.len() < text.lines().count(), "{text}");
        replace(&self.metrics_file(), &(old.join("\n") + "\n"));
    }
}

/// Replace a textfile atomically, readable by the exporter, as gitops does.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    fs::write(&temp, text).unwrap();
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&temp, path).unwrap();
}

/// `gitops fleet` with these flags.
fn fleet(prometheus: &Prometheus, extra: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["fleet", "--prometheus", &prometheus.url, "--selector", "{job=\"node\"}"])
        .args(extra)
        .env("GITOPS_CONFIG", "/dev/null")
        .env_remove("RUST_LOG")
        .output()
        .expect("running gitops fleet")
        .into()
}

/// The rows of `gitops fleet`'s table (cells are separated by two spaces or more).
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip(2)
        .map(|l| l.split("  ").filter(|c| !c.is_empty()).map(|c| c.trim().to_string()).collect())
        .collect()
}

/// A temp dir that `nobody` can traverse (the exporters read textfiles below it).
fn public_tempdir() -> tempfile::TempDir {
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn fleet_shows_who_is_failing_stale_pending_or_due_a_reboot_then_converged() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = public_tempdir();
    let public = prom::public_dir(&dir.path().join("textfiles"));
    let remote = Remote::with_script(&dir.path().join("repo"), SCRIPT);
    let first = remote.head();
    let url = remote.file_url();
    let names = ["web-1", "web-2", "broken", "lagging", "silent", "rebooter"];
    let nodes: Vec<Node> = names.iter().map(|n| Node::new(&dir.path().join("hosts"), &public, &url, n)).collect();
    for node in &nodes {
        node.sync().expect(10);
    }
    let mut exporters: Vec<NodeExporter> = nodes.iter().map(|n| NodeExporter::start(&n.textfiles)).collect();
    let targets: Vec<String> = exporters.iter().map(|e| e.address.clone()).collect();
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &targets, &[rules()]);

    // A second commit: everyone but `lagging` syncs (its timer has not fired yet); `broken` fails on
    // it; `silent` goes quiet.
    remote.write("fail-broken", "x\n");
    let second = remote.commit("second");
    for node in &nodes {
        match node.name.as_str() {
            "lagging" => continue,
            "broken" => node.sync().expect(30),
            _ => node.sync().expect(10),
        };
    }
    let silent = names.iter().position(|n| *n == "silent").unwrap();
    prometheus.wait_for(&format!("gitops_applied_commit_info{{commit=\"{second}\"}}"), 4, Duration::from_secs(30));
    prometheus.wait_for("gitops_last_result{result=\"apply-failed\"} == 1", 1, Duration::from_secs(30));
    exporters[silent].stop();
    prometheus.wait_for("up == 0", 1, Duration::from_secs(30));

    let run = fleet(&prometheus, &[]).expect(3);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let tip = &second[..12];
    assert_eq!(
        lines[0],
        format!("6 hosts · 2 at {tip} (tip) · 1 pending · 1 failing · 1 stale · 1 reboot pending"),
        "{}",
        run.stdout
    );
    assert!(lines[1].starts_with("HOST "), "{}", run.stdout);
    let rows = table(&run.stdout);
    let order: Vec<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(
        order,
        [("broken", "failing"), ("silent", "stale"), ("lagging", "pending"), ("rebooter", "reboot pending")],
        "{}",
        run.stdout
    );
    // broken: the failed commit is live (its entrypoint partly ran), the first one the last applied;
    // why: the error's first line.
    assert_eq!(rows[0][2], format!("{tip} (failed)"), "{}", run.stdout);
    assert_eq!(rows[0][3], &first[..12]);
    assert_eq!(rows[0][5], "apply-failed");
    assert_eq!(rows[0][7], "1", "one failed run in a row: {}", run.stdout);
    assert!(rows[0][8].contains("exited with code 1"), "{}", run.stdout);
    assert_eq!(rows[1][2], &second[..12], "the silent host's last known commit: {}", run.stdout);
    assert!(rows[1][8].starts_with("exporter not answering; last report "), "{}", run.stdout);
    assert_eq!(rows[2][2], &first[..12]);
    assert_eq!(rows[2][3], "-", "the live commit is the applied one: {}", run.stdout);
    assert!(rows[2][8].starts_with("not polled since the tip appeared (last run "), "{}", run.stdout);
    assert!(rows[3][8].starts_with("reboot due for "), "{}", run.stdout);

    // --all adds the two converged hosts; --json carries the same, parseable.
    assert_eq!(fleet(&prometheus, &["--all"]).expect(3).stdout.lines().count(), 8);
    let json: serde_json::Value = serde_json::from_str(&fleet(&prometheus, &["--json"]).expect(3).stdout).unwrap();
    assert_eq!(json["schema"], 2);
    assert_eq!(json["verdict"], "unsettled");
    assert_eq!(json["tips"]["main"]["commit"], second.as_str());
    assert_eq!(json["tips"]["main"]["source"], "fleet");
    assert_eq!(json["counts"]["failing"], 1);
    assert_eq!(json["counts"]["converged"], 2);
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 6);
    assert_eq!(hosts[0]["host"], "broken");
    assert_eq!(hosts[0]["live_commit"], second.as_str());
    assert_eq!(hosts[0]["live_result"], "failed");
    assert_eq!(hosts[0]["applied_commit"], first.as_str());
    assert_eq!(hosts[0]["last_result"], "apply-failed");
    assert!(hosts[0]["last_error"].as_str().unwrap().contains("exited with code 1"), "{json}");
    assert_eq!(hosts[0]["why"], hosts[0]["last_error"]);
    assert_eq!(hosts[1]["reporting"], false);
    assert_eq!(hosts[1]["version"], env!("CARGO_PKG_VERSION"), "known from before it went silent");
    assert_eq!(hosts[1]["live_result"], "applied", "its live commit's result at its last scrape: {json}");

    // The tip as the repository says, for one branch: a commit nobody has reported yet makes every
    // host that reports pending (none has polled since it appeared), and
    // the hosts it names that never reported are missing (a directory under hosts/, a line of
    // .gitops/hosts; web-1 is named by its FQDN's short name).
    remote.write("hosts/db-1/run.sh", "exit 0\n");
    remote.write(".gitops/hosts", "# the fleet\nweb-1\nweb-2\nbroken\nlagging\nsilent\nrebooter\nlb-1\n");
    let third = remote.commit("third, not synced: names db-1 and lb-1, which never reported");
    let run = fleet(&prometheus, &["--repo-url", &url]).expect(3);
    assert_eq!(
        run.stdout.lines().next().unwrap(),
        format!("8 hosts · 0 at {} (tip) · 4 pending · 1 failing · 1 stale · 2 missing", &third[..12]),
        "{}",
        run.stdout
    );
    let rows = table(&run.stdout);
    let missing: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "missing").collect();
    assert_eq!(missing.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["db-1", "lb-1"], "{}", run.stdout);
    assert_eq!(missing[0][8], "named in the repository, not seen in the last 7d");
    let missing_at = rows.iter().position(|r| r[1] == "missing").unwrap();
    assert!(
        rows[..missing_at].iter().all(|r| r[1] == "failing" || r[1] == "stale"),
        "sorted with the unsettled: {}",
        run.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&fleet(&prometheus, &["--repo-url", &url, "--branch", "main", "--json"]).expect(3).stdout)
            .unwrap();
    assert_eq!(json["tips"]["main"]["source"], "repository");
    assert_eq!(json["counts"]["pending"], 4, "the hosts on the fleet's tip have not seen the repository's: {json}");
    assert_eq!(json["counts"]["behind"], 0, "{json}");
    assert_eq!(json["counts"]["missing"], 2, "{json}");
    // The same from a checkout that has the tip, without the network.
    let work = remote.work.to_str().unwrap();
    let run = fleet(&prometheus, &["--branch", "main", "--tip", &third, "--repo", work]).expect(3);
    assert!(run.stdout.lines().next().unwrap().ends_with(" · 1 stale · 2 missing"), "{}", run.stdout);
    // Under another config root, nothing is named.
    let run = fleet(&prometheus, &["--branch", "main", "--tip", &third, "--repo", work, "--path", "fleet"]).expect(3);
    assert!(!run.stdout.contains("missing"), "{}", run.stdout);
    let run = fleet(&prometheus, &["--branch", "main", "--tip", &first]).expect(3);
    assert!(run.stdout.starts_with(&format!("6 hosts · 1 at {} (tip) · ", &first[..12])), "{}", run.stdout);
    // A branch nobody deploys is not a converged fleet.
    let run = fleet(&prometheus, &["--branch", "other"]).expect(5);
    assert_eq!(run.stdout, "0 hosts · 0 converged (no tip known)\n");
    assert!(
        run.stderr
            .contains("no host matched: none of the 6 hosts with --selector '{job=\"node\"}' at http://127.0.0.1:")
            && run.stderr.contains("deploys branch \"other\"; fix --branch"),
        "{}",
        run.stderr
    );

    // The rules see the same fleet (their `for:` keeps them pending, not yet firing).
    prometheus.wait_for("ALERTS{alertname=\"GitopsSilent\"}", 1, Duration::from_secs(10));
    let pending = prometheus.query("ALERTS{alertstate=\"pending\"}");
    let alerts: Vec<(String, String)> = pending
        .iter()
        .map(|a| {
            (a["metric"]["alertname"].as_str().unwrap().into(), a["metric"]["instance"].as_str().unwrap_or("").into())
        })
        .collect();
    let broken = &targets[names.iter().position(|n| *n == "broken").unwrap()];
    assert!(alerts.contains(&("GitopsApplyFailing".into(), broken.clone())), "{alerts:?}");
    assert!(alerts.contains(&("GitopsSilent".into(), targets[silent].clone())), "{alerts:?}");
    assert!(alerts.iter().any(|(name, _)| name == "GitopsFleetSplit"), "{alerts:?}");

    // 5 of 6 hosts reporting, 2 commits live, 1 failing, 1 pending a reboot. The failing host is live
    // on the tip (its entrypoint failed there): it lacks no commit. The pending host has not run since
    // the push, so its own count cannot know yet.
    let stats = [
        ("Hosts reporting", 5.0),
        ("Commits live", 2.0),
        ("Failing", 1.0),
        ("Misconfigured", 0.0),
        ("Stale (no success for 15m)", 0.0),
        ("Behind the remote", 0.0),
        ("Reboot pending", 1.0),
    ];
    dashboard_queries_return_the_fleet(&prometheus, &stats);

    // The page for operators without Grafana.
    let page = dir.path().join("fleet.html");
    fleet(&prometheus, &["--html", page.to_str().unwrap()]).expect(3);
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("<td>broken</td><td><span class=\"badge\">failing</span></td>"), "{html}");
    assert_eq!(fs::metadata(&page).unwrap().permissions().mode() & 0o777, 0o644);

    // Everyone converges: the failure is reverted, lagging syncs, silent reports again.
    remote.remove("fail-broken");
    let fixed = remote.commit("fixed");
    for node in &nodes {
        node.sync().expect(10);
    }
    let port = targets[silent].rsplit(':').next().unwrap().parse().unwrap();
    exporters[silent] = NodeExporter::start_on(&nodes[silent].textfiles, port);
    prometheus.wait_for(
        &format!("gitops_applied_commit_info{{commit=\"{fixed}\"}} and on (instance) up == 1"),
        6,
        Duration::from_secs(30),
    );
    let run = fleet(&prometheus, &[]).expect(0);
    assert_eq!(
        run.stdout.lines().next().unwrap(),
        format!("6 hosts · 5 at {} (tip) · 1 reboot pending", &fixed[..12]),
        "{}",
        run.stdout
    );
}

#[test]
fn a_push_is_a_rollout_going_as_planned_until_a_host_that_polled_since_still_lacks_it() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = public_tempdir();
    let public = prom::public_dir(&dir.path().join("textfiles"));
    let remote = Remote::with_script(&dir.path().join("repo"), "exit 0");
    let first = remote.head();
    // `mirrored` fetches from a mirror that is not updated: it lags.
    let mirror = dir.path().join("mirror.git");
    git(dir.path(), &["clone", "-q", "--bare", remote.bare.to_str().unwrap(), mirror.to_str().unwrap()]);
    let mirror_url = format!("file://{}", mirror.display());
    let hosts = dir.path().join("hosts");
    let nodes: Vec<Node> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|n| Node::new(&hosts, &public, &remote.file_url(), n))
        .chain([Node::new(&hosts, &public, &mirror_url, "mirrored")])
        .collect();
    for node in &nodes {
        node.sync().expect(10);
    }
    let exporters: Vec<NodeExporter> = nodes.iter().map(|n| NodeExporter::start(&n.textfiles)).collect();
    let targets: Vec<String> = exporters.iter().map(|e| e.address.clone()).collect();
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &targets, &[]);
    prometheus.wait_for(&format!("gitops_live_commit_info{{commit=\"{first}\"}}"), 4, Duration::from_secs(30));
    fleet(&prometheus, &[]).expect(0);

    // A push; web-1's timer fires first. The others have not polled since: the rollout goes as planned.
    let second = remote.commit("second");
    nodes[0].sync().expect(10);
    prometheus.wait_for(&format!("gitops_live_commit_info{{commit=\"{second}\"}}"), 1, Duration::from_secs(30));
    let run = fleet(&prometheus, &[]).expect(4);
    let tip = &second[..12];
    assert_eq!(run.stdout.lines().next().unwrap(), format!("4 hosts · 1 at {tip} (tip) · 3 pending · rolling out"));
    for row in table(&run.stdout) {
        assert_eq!(row[1], "pending", "{}", run.stdout);
        assert_eq!(row[4], "?", "it cannot know how far behind it is: {}", run.stdout);
        assert!(row[8].starts_with("not polled since the tip appeared (last run ") && row[8].ends_with(" ago)"));
    }
    let json: serde_json::Value = serde_json::from_str(&fleet(&prometheus, &["--json"]).expect(4).stdout).unwrap();
    assert_eq!((json["schema"].as_u64(), json["verdict"].as_str()), (Some(2), Some("rolling-out")), "{json}");
    assert_eq!((json["counts"]["pending"].as_u64(), json["counts"]["behind"].as_u64()), (Some(3), Some(0)));

    // `mirrored` polls after the tip appeared and its mirror still serves the first commit: that needs
    // a look. Then web-1 runs again: the tip was still first seen when web-1 went live on it.
    nodes[3].sync().expect(0);
    nodes[0].sync().expect(0);
    prometheus.wait_for("gitops_last_result{result=\"up-to-date\"} == 1", 2, Duration::from_secs(30));
    let run = fleet(&prometheus, &[]).expect(3);
    assert_eq!(run.stdout.lines().next().unwrap(), format!("4 hosts · 1 at {tip} (tip) · 1 behind · 2 pending"));
    let rows = table(&run.stdout);
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("mirrored", "behind"), "{}", run.stdout);
    assert!(
        rows[0][8].ends_with(&format!(" saw {}, not the tip: a lagging mirror or another ref?", &first[..12])),
        "{}",
        run.stdout
    );

    // The mirror catches up; everyone polls.
    git(&mirror, &["fetch", "-q", "origin", "+main:main"]);
    for node in &nodes[1..] {
        node.sync().expect(10);
    }
    prometheus.wait_for(&format!("gitops_live_commit_info{{commit=\"{second}\"}}"), 4, Duration::from_secs(30));
    assert_eq!(fleet(&prometheus, &[]).expect(0).stdout, format!("4 hosts · 4 at {tip} (tip)\n"));
}

/// Fails on any commit that carries `break-c1`, for the host called c1.
const ROLLOUT_SCRIPT: &str = r#"[ "$GITOPS_HOSTNAME" = c1 ] && [ -e break-c1 ] && { echo "migration failed" >&2; exit 1; }
exit 0"#;

#[test]
fn a_healthy_wave_is_rolling_out_and_a_halt_a_mistake_or_a_missing_host_is_unsettled() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = public_tempdir();
    let public = prom::public_dir(&dir.path().join("textfiles"));
    let remote = Remote::with_script(&dir.path().join("repo"), ROLLOUT_SCRIPT);
    let first = remote.head();
    let url = remote.file_url();
    // Canaries c1, c2 and old-agent (a host whose gitops still writes metrics version 1); db-1 has no
    // --prometheus although the rollout gates on it.
    let names = ["c1", "c2", "old-agent", "web-1", "web-2", "web-3", "web-4", "db-1"];
    let nodes: Vec<Node> = names.iter().map(|n| Node::new(&dir.path().join("hosts"), &public, &url, n)).collect();
    let node = |name: &str| nodes.iter().find(|n| n.name == name).unwrap();
    let canary = ["--tags", "canary"];
    for node in &nodes {
        node.sync().expect(10);
    }
    let exporters: Vec<NodeExporter> = nodes.iter().map(|n| NodeExporter::start(&n.textfiles)).collect();
    let targets: Vec<String> = exporters.iter().map(|e| e.address.clone()).collect();
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &targets, &[rules()]);
    let gate = ["--prometheus", &prometheus.url, "--prometheus-selector", "{job=\"node\"}"];

    // A wave: the canaries take the commit at once, everyone else within two hours.
    remote.write(".gitops/rollout", "canary=tag:canary\nwindow=2h\n");
    let wave = remote.commit("a wave over two hours");
    for name in ["c1", "c2", "old-agent"] {
        node(name).sync_with(&canary).expect(10);
    }
    node("old-agent").as_metrics_version_1();
    for name in ["web-1", "web-2", "web-3", "web-4", "db-1"] {
        node(name).sync().expect(11);
    }
    prometheus.wait_for("gitops_deferred{kind=\"wave\"}", 5, Duration::from_secs(30));
    prometheus.wait_for(&format!("gitops_applied_commit_info{{commit=\"{wave}\"}}"), 3, Duration::from_secs(30));
    prometheus.wait_for("gitops_metrics_version == 1", 1, Duration::from_secs(30));
    let run = fleet(&prometheus, &[]).expect(4);
    assert_eq!(
        run.stdout.lines().next().unwrap(),
        format!("8 hosts · 3 at {} (tip) · 5 waiting · rolling out", &wave[..12]),
        "the version-1 host is live on its applied commit: {}",
        run.stdout
    );
    for row in table(&run.stdout) {
        assert_eq!(row[1], "waiting", "{}", run.stdout);
        assert!(row[8].starts_with("wave, until ") && row[8].contains(" UTC (in "), "{}", run.stdout);
    }
    let json: serde_json::Value = serde_json::from_str(&fleet(&prometheus, &["--json"]).expect(4).stdout).unwrap();
    assert_eq!(json["verdict"], "rolling-out");

    // The next commit gates on the canaries and breaks c1: web-1 asks before the canaries ran (it
    // waits for them), web-2 and web-3 after c1 failed (halted); web-4 still waits for its slot of the
    // wave; db-1 cannot ask. The repository names lb-1, which never reported.
    remote.write(".gitops/rollout", "canary=tag:canary\ngate=prometheus\nwindow=2h\n");
    remote.write(".gitops/hosts", &format!("{}\nlb-1\n", names.join("\n")));
    remote.write("break-c1", "x\n");
    let bad = remote.commit("migrate users, gated on the canaries");
    node("web-1").sync_with(&gate).expect(11);
    node("db-1").sync().expect(2);
    // gate=prometheus without --prometheus: sync names the mistake in its textfile.
    let db1 = fs::read_to_string(node("db-1").metrics_file()).unwrap();
    assert!(db1.contains("gitops_deferred{kind=\"gate-unconfigured\"} 1"), "{db1}");
    node("c1").sync_with(&canary).expect(30);
    node("c2").sync_with(&canary).expect(10);
    node("old-agent").sync_with(&canary).expect(10);
    node("old-agent").as_metrics_version_1();
    prometheus.wait_for(
        &format!("gitops_live_commit_info{{commit=\"{bad}\",result=\"failed\"}}"),
        1,
        Duration::from_secs(30),
    );
    prometheus.wait_for(&format!("gitops_applied_commit_info{{commit=\"{bad}\"}}"), 2, Duration::from_secs(30));
    for name in ["web-2", "web-3"] {
        let run = node(name).sync_with(&gate).expect(11);
        assert!(run.stderr.contains("rollout halted: canary c1 failed"), "{}", run.stderr);
    }
    prometheus.wait_for("gitops_deferred{kind=\"halted\"}", 2, Duration::from_secs(30));
    prometheus.wait_for("gitops_deferred{kind=\"gate-unconfigured\"}", 1, Duration::from_secs(30));
    // The shipped rules see the mistake (pending for its `for:`), and not the plan.
    let alerts = prometheus.wait_for("ALERTS{alertname=\"GitopsMisconfigured\"}", 1, Duration::from_secs(10));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["metric"]["kind"], "gate-unconfigured", "{alerts:?}");
    assert_eq!(alerts[0]["metric"]["instance"], targets[names.iter().position(|n| *n == "db-1").unwrap()].as_str());

    let run = fleet(&prometheus, &["--repo-url", &url]).expect(3);
    let tip = &bad[..12];
    assert_eq!(
        run.stdout.lines().next().unwrap(),
        format!(
            "9 hosts · 2 at {tip} (tip) · 2 waiting · 2 halted · 1 failing · 1 misconfigured · 1 missing · rollout halted"
        ),
        "{}",
        run.stdout
    );
    let rows = table(&run.stdout);
    let states: Vec<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(
        states,
        [
            ("c1", "failing"),
            ("db-1", "misconfigured"),
            ("lb-1", "missing"),
            ("web-2", "halted"),
            ("web-3", "halted"),
            ("web-4", "waiting"),
            ("web-1", "waiting"),
        ],
        "{}",
        run.stdout
    );
    let why = |host: &str| rows.iter().find(|r| r[0] == host).unwrap()[8].clone();
    assert_eq!(rows[0][2], format!("{tip} (failed)"));
    assert_eq!(rows[0][3], &wave[..12], "c1's last applied commit");
    assert!(why("c1").contains("exited with code 1"), "{}", run.stdout);
    assert_eq!(why("db-1"), "gate-unconfigured: gate=prometheus in .gitops/rollout, but this host has no --prometheus");
    assert_eq!(why("web-2"), format!("canary c1 failed on {tip}"));
    assert_eq!(why("web-1"), "gate: waiting for the canaries");
    assert!(why("web-4").starts_with("wave, until "), "{}", run.stdout);
    assert_eq!(rows.iter().find(|r| r[0] == "web-4").unwrap()[2], &first[..12]);

    // The dashboard counts the same: c1 failing, db-1 held by a mistake; two commits live (the canaries'
    // and the others'); the hosts held back know how far behind they are.
    let stats = [
        ("Hosts reporting", 8.0),
        ("Commits live", 2.0),
        ("Failing", 1.0),
        ("Misconfigured", 1.0),
        ("Stale (no success for 15m)", 0.0),
        ("Behind the remote", 5.0),
        ("Reboot pending", 0.0),
    ];
    dashboard_queries_return_the_fleet(&prometheus, &stats);

    // The page: waiting and halted rows look different, and the worst come first.
    let page = dir.path().join("fleet.html");
    fleet(&prometheus, &["--repo-url", &url, "--html", page.to_str().unwrap()]).expect(3);
    render_in_chromium(&page, &dir.path().join("fleet.png"));
}

/// One host, `web-1`, applied and scraped by its exporter into a Prometheus that has seen it.
struct OneHost {
    remote: Remote,
    prometheus: Prometheus,
    /// Scrapes on as long as the test holds this.
    _exporter: NodeExporter,
}

fn one_host_fleet(dir: &Path) -> OneHost {
    let public = prom::public_dir(&dir.join("textfiles"));
    let remote = Remote::with_script(&dir.join("repo"), "exit 0");
    let node = Node::new(&dir.join("hosts"), &public, &remote.file_url(), "web-1");
    node.sync().expect(10);
    let exporter = NodeExporter::start(&node.textfiles);
    let prometheus = Prometheus::start(&dir.join("prometheus"), std::slice::from_ref(&exporter.address), &[]);
    prometheus.wait_for("gitops_info", 1, Duration::from_secs(30));
    OneHost { remote, prometheus, _exporter: exporter }
}

#[test]
fn a_selector_that_matches_no_host_is_not_a_converged_fleet() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = public_tempdir();
    let host = one_host_fleet(dir.path());
    let prometheus = &host.prometheus;
    fleet(prometheus, &[]).expect(0);

    // A typo: `nodes`. The line names the selector, the Prometheus (password hidden) and the fix.
    let with_password = prometheus.url.replace("http://", "http://admin:hunter2@");
    let typo = |extra: &[&str]| -> Run {
        Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["fleet", "--prometheus", &with_password, "--selector", "{job=\"nodes\"}"])
            .args(extra)
            .env("GITOPS_CONFIG", "/dev/null")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
            .into()
    };
    let run = typo(&[]).expect(5);
    assert_eq!(run.stdout, "0 hosts · 0 converged (no tip known)\n");
    let shown = with_password.replace("hunter2", "***");
    assert!(
        run.stderr.contains(&format!(
            "no host matched: Prometheus at {shown} has no gitops host with --selector '{{job=\"nodes\"}}' in the last 7d; \
             gitops hosts report there under {{job=\"node\"}} (1): fix --selector"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let run = typo(&["--json"]).expect(5);
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["verdict"], "no-hosts");
    assert!(json["notice"].as_str().unwrap().starts_with("no host matched: "), "{json}");
    let page = dir.path().join("fleet.html");
    typo(&["--html", page.to_str().unwrap()]).expect(5);
    assert!(fs::read_to_string(&page).unwrap().contains("<p class=\"notice\">no host matched: "));
}

#[test]
fn fleet_names_a_prometheus_it_cannot_query_without_its_password() {
    let port = servers::free_port();
    let run: Run = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["fleet", "--prometheus", &format!("http://admin:hunter2@127.0.0.1:{port}")])
        .env("GITOPS_CONFIG", "/dev/null")
        .output()
        .unwrap()
        .into();
    let run = run.expect(1);
    assert!(
        run.stderr.contains(&format!("querying Prometheus at http://admin:***@127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2"));
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

#[test]
fn bad_fleet_flags_exit_2_with_one_line() {
    for (args, says) in [
        (&["--selector", "{job=\"node\""][..], "unbalanced braces"),
        // Found before Prometheus is asked (it would be refused there: a usage error all the same).
        (
            &["--selector", "{job=node}"][..],
            "--selector '{job=node}': the value of job is not quoted; write matchers like {job=\"node\"}",
        ),
        (&["--selector", "up"][..], "--selector 'up': up alone is a metric name, not a label matcher; write matchers"),
        (&["--prometheus-selector", "{job=node}"][..], "--selector '{job=node}': the value of job is not quoted"),
        (&["--stale", "soon"][..], "--stale \"soon\""),
        (&["--stale", "15"][..], "--stale \"15\": 15 has no unit: did you mean 15s, 15m or 15h?"),
        (&["--path", "../fleet"][..], "--path \"../fleet\" must be a directory inside the repository"),
        (&["--branch", "main", "--tip", "abc"][..], "not a full commit id"),
        (&["--tip", &"a".repeat(40)][..], "--tip needs --branch"),
    ] {
        let run: Run = Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["fleet", "--prometheus", "http://127.0.0.1:9"])
            .args(args)
            .env("GITOPS_CONFIG", "/dev/null")
            .output()
            .unwrap()
            .into();
        let run = run.expect(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}

#[test]
fn fleet_help_gives_each_flag_one_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["fleet", "--help"])
        .env("GITOPS_CONFIG", "/dev/null")
        .env("GITOPS_PROMETHEUS", "http://admin:hunter2@prometheus:9090")
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    // The variable is named, its value (a password, maybe) is not shown.
    assert!(help.contains("[env: GITOPS_PROMETHEUS]") && !help.contains("hunter2"), "{help}");
    let selector = help.lines().find(|l| l.trim_start().starts_with("--selector")).expect(&help);
    assert_eq!(selector.matches("[default:").count(), 1, "{selector}");
    // Read as `gitops sync` reads it: the same variable, and sync's name for it.
    assert!(
        selector.ends_with(
            "[default: every gitops series] [env: GITOPS_PROMETHEUS_SELECTOR=] [alias: --prometheus-selector]"
        ),
        "{selector}"
    );
}

#[test]
fn a_selector_prometheus_cannot_parse_is_a_usage_error_that_names_it_as_typed() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = tempdir();
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &[], &[]);
    // Matchers that look right but that Prometheus refuses (a regex that does not compile, an
    // unknown escape): its answer names a column in gitops's own query; the line names the selector.
    for (selector, reason) in
        [(r#"{job=~"("}"#, "error parsing regexp: missing closing )"), (r#"{job="a\q"}"#, "unknown escape sequence")]
    {
        let run: Run = Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["fleet", "--prometheus", &prometheus.url, "--selector", selector])
            .env("GITOPS_CONFIG", "/dev/null")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
            .into();
        let run = run.expect(2);
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            line.contains(&format!("--selector '{selector}': Prometheus cannot parse it ({reason}")),
            "{selector}: {line}"
        );
        assert!(line.ends_with("; write matchers like {job=\"node\"}"), "{line}");
        let said = line.split_once("--selector").unwrap().1;
        assert!(!said.contains("1:") && !said.contains("invalid parameter"), "no column of our query: {line}");
    }
}

#[test]
fn fleet_reads_the_selector_where_sync_does() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = public_tempdir();
    let host = one_host_fleet(dir.path());
    let (prometheus, remote) = (&host.prometheus, &host.remote);
    let env_file = dir.path().join("gitops.env");
    fs::write(&env_file, "GITOPS_PROMETHEUS_SELECTOR='{job=\"nodes\"}'\n").unwrap();
    let gitops = |args: &[&str], env: &[(&str, &str)]| -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gitops"));
        command.args(["fleet", "--prometheus", &prometheus.url]).args(args).env_remove("RUST_LOG");
        command.env("GITOPS_CONFIG", "/dev/null").env_remove("GITOPS_PROMETHEUS_SELECTOR");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap().into()
    };
    let typo = "--selector '{job=\"nodes\"}'";
    // The variable, from the environment and from the env file: the typo matches nobody.
    let run = gitops(&[], &[("GITOPS_PROMETHEUS_SELECTOR", "{job=\"nodes\"}")]).expect(5);
    assert!(run.stderr.contains(typo), "{}", run.stderr);
    let run = gitops(&[], &[("GITOPS_CONFIG", env_file.to_str().unwrap())]).expect(5);
    assert!(run.stderr.contains(typo), "{}", run.stderr);
    // The flag wins over both, under either name.
    gitops(&["--selector", "{job=\"node\"}"], &[("GITOPS_CONFIG", env_file.to_str().unwrap())]).expect(0);
    let run = gitops(&["--prometheus-selector", "{job=\"node\"}"], &[("GITOPS_PROMETHEUS_SELECTOR", "{job=\"x\"}")]);
    assert_eq!(run.expect(0).stdout, "1 host · 1 at ".to_string() + &remote.head()[..12] + " (tip)\n");
}

#[test]
fn metrics_reach_a_non_root_exporter_and_pass_promtool() {
    if !tooling::available(prom::NEEDS) {
        return;
    }
    let dir = public_tempdir();
    let public = prom::public_dir(&dir.path().join("textfiles"));
    let remote = Remote::with_script(&dir.path().join("repo"), "exit 0");
    let node = Node::new(&dir.path().join("hosts"), &public, &remote.file_url(), "web-1");
    // A file left 0600 by an older gitops is replaced by a readable one.
    fs::write(node.metrics_file(), "").unwrap();
    fs::set_permissions(node.metrics_file(), fs::Permissions::from_mode(0o600)).unwrap();
    node.sync().expect(10);
    assert_eq!(fs::metadata(node.metrics_file()).unwrap().permissions().mode() & 0o777, 0o644);
    let text = fs::read_to_string(node.metrics_file()).unwrap();
    let mut check = tooling::command("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The exporter (not root) serves it.
    let exporter = NodeExporter::start(&node.textfiles);
    let scraped = exporter.scrape();
    let head = remote.head();
    assert!(
        scraped.contains(&format!("gitops_applied_commit_info{{branch=\"main\",commit=\"{head}\"}} 1")),
        "{scraped}"
    );
    assert!(scraped.contains("gitops_info{host=\"web-1\""), "{scraped}");
    assert!(scraped.contains("\nnode_textfile_scrape_error 0\n"), "{scraped}");
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    if !tooling::available(&[tooling::PROMTOOL]) {
        return;
    }
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    for args in [&["check", "rules", "gitops-rules.yml"][..], &["test", "rules", "gitops-rules.test.yml"][..]] {
        let out = tooling::command("promtool").args(args).current_dir(&contrib).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Open the page in headless Chromium: the rendered DOM shows the summary and the hosts, and the
/// screenshot is a real picture (GITOPS_SCREENSHOT_OUT=FILE keeps a copy, for the README).
fn render_in_chromium(page: &Path, png: &Path) {
    if !tooling::available(&[tooling::CHROMIUM]) {
        return;
    }
    let chromium = |extra: &[&str]| {
        let profile = tempdir();
        let out = tooling::command("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,640"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("running chromium");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(dom.contains("9 hosts · 2 at "), "{dom}");
    assert!(dom.contains("<tr class=\"failing\"><td>c1</td>"), "{dom}");
    // Waiting and halted rows are told apart: their own class, and their own style in the page.
    assert!(dom.contains("<tr class=\"halted\"><td>web-2</td>"), "{dom}");
    assert!(dom.contains("<tr class=\"waiting\"><td>web-1</td>"), "{dom}");
    let rule = |selector: &str| {
        let at = dom.find(&format!("{selector} {{")).unwrap_or_else(|| panic!("no style for {selector}: {dom}"));
        dom[at..].split_once('}').unwrap().0.split_once('{').unwrap().1.trim().to_string()
    };
    assert_ne!(rule("tr.waiting td"), rule("tr.halted td"));
    assert_ne!(rule("tr.waiting .badge"), rule("tr.halted .badge"));
    chromium(&[&format!("--screenshot={}", png.display())]);
    let picture = fs::read(png).expect("chromium wrote the screenshot");
    assert!(picture.starts_with(b"\x89PNG"), "a PNG");
    assert!(picture.len() > 10_000, "a page with a table is more than a blank picture ({} bytes)", picture.len());
    if let Some(keep) = std::env::var_os("GITOPS_SCREENSHOT_OUT") {
        fs::copy(png, keep).unwrap();
    }
}

/// Every query of the Grafana dashboard runs on this Prometheus and returns rows; the stat panels
/// count what the scenario made (`expected_stats`: every stat panel's title and value).
fn dashboard_queries_return_the_fleet(prometheus: &Prometheus, expected_stats: &[(&str, f64)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/gitops-fleet.json");
    let dashboard: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let mut stats = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            // Grafana's "All" for $job is the variable's allValue.
            let expr = target["expr"].as_str().unwrap().replace("$job", ".+");
            let rows = prometheus.query(&expr);
            assert!(!rows.is_empty(), "panel {title:?}: {expr} returned nothing");
            if panel["type"] == "stat" {
                let (_, want) = expected_stats.iter().find(|(t, _)| *t == title).expect("every stat panel is checked");
                let got: f64 = rows[0]["value"][1].as_str().unwrap().parse().unwrap();
                assert_eq!(got, *want, "panel {title:?}: {expr}");
                stats += 1;
            }
        }
    }
    assert_eq!(stats, expected_stats.len());
}
