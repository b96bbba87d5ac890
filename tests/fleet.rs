//! Fleet features end to end: inventory (host overrides, --path, --tags), the teardown stage, reboot by Git
//! (never twice for one request), reboot windows, FleetLock against a real in-test server, and --splay.
//!
//! Reboots are simulated: `--reboot-command` appends to a file, and a "new boot" is a new
//! `GITOPS_TEST_BOOT_ID` / `GITOPS_TEST_BOOT_TIME`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::servers::{FleetLock, Recorder, free_port};
use crate::support::*;

/// One host of a fleet: its state, its name, and a fake boot.
struct Node {
    host: Host,
    url: String,
    name: String,
    /// Where the reboot command records each reboot.
    reboots: PathBuf,
    boot_id: String,
    boot_time: i64,
}

impl Node {
    /// A host called `name` in `root/<name>/`, booted an hour ago.
    fn new(root: &Path, url: &str, name: &str) -> Node {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        Node {
            host: Host::new(&dir, url),
            url: url.to_string(),
            name: name.to_string(),
            reboots: dir.join("reboots"),
            boot_id: format!("{name}-boot-1"),
            boot_time: unix_now() - 3600,
        }
    }

    /// `gitops sync` as this host, with the recording reboot command and its boot.
    fn sync(&self, extra: &[&str]) -> Run {
        self.sync_env(extra, &[])
    }

    fn sync_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let reboot_command = format!("echo \"$GITOPS_REBOOT_REASON\" >> '{}'", self.reboots.display());
        let state = self.host.state.to_str().unwrap();
        let mut args = vec!["sync", "--repo-url", &self.url, "--state-dir", state, "--host", &self.name];
        if !extra.contains(&"--reboot-command") {
            args.extend_from_slice(&["--reboot-command", &reboot_command]);
        }
        args.extend_from_slice(extra);
        let mut cmd = self.host.command(&args);
        cmd.env("GITOPS_TEST_BOOT_ID", &self.boot_id).env("GITOPS_TEST_BOOT_TIME", self.boot_time.to_string());
        for (key, value) in env {
            cmd.env(key, value);
        }
        cmd.output().expect("running gitops").into()
    }

    /// Simulate the reboot: a new boot id, booted now (or at `at`).
    fn boot(&mut self, at: i64) {
        let n: u32 = self.boot_id.rsplit('-').next().unwrap().parse().unwrap();
        self.boot_id = format!("{}-boot-{}", self.name, n + 1);
        self.boot_time = at;
    }

    /// Reboots the reboot command recorded (their reasons).
    fn reboots(&self) -> Vec<String> {
        fs::read_to_string(&self.reboots).unwrap_or_default().lines().map(String::from).collect()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// RFC 3339 for unix seconds, in UTC.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A recording entrypoint: what ran, where, with which tags.
const WHERE: &str = r#"echo "${0#$PWD/} commit=$GITOPS_COMMIT tags=$GITOPS_TAGS pwd=$(pwd)" >> "$TEST_OUT""#;

// ---------------------------------------------------------------------------------------------- inventory

#[test]
fn host_override_wins_fqdn_then_short_name_then_shared() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    remote
        .script("run.sh", WHERE)
        .script("hosts/web1.example.com/run.sh", WHERE)
        .script("hosts/web2/run.sh", WHERE)
        .script("hosts/db1/other.sh", "exit 1");
    let commit = remote.commit("inventory");
    let ran = |name: &str| {
        let node = Node::new(dir.path(), &remote.file_url(), name);
        node.sync(&["--tags", "web, eu-west"]).expect(APPLIED);
        let out = node.host.out_lines();
        assert_eq!(out.len(), 1, "{out:?}");
        let revision = node.host.state.join("revisions").join(&commit);
        assert!(out[0].ends_with(&format!("pwd={}", revision.display())), "runs in the config root: {}", out[0]);
        assert!(out[0].contains("tags=web,eu-west "), "{}", out[0]);
        out[0].split_whitespace().next().unwrap().to_string()
    };

    assert_eq!(ran("web1.example.com"), "hosts/web1.example.com/run.sh", "the FQDN directory first");
    assert_eq!(ran("web2.example.com"), "hosts/web2/run.sh", "then the short name");
    assert_eq!(ran("db1"), "run.sh", "a host directory without the entrypoint falls back to the shared one");
}

#[test]
fn path_makes_a_subdirectory_the_config_root() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    remote
        .script("run.sh", "echo wrong-root >> \"$TEST_OUT\"")
        .script("fleets/eu/run.sh", "echo wrong-fleet >> \"$TEST_OUT\"")
        .script("fleets/us/run.sh", &format!("{WHERE}\ncat \"$GITOPS_CHANGED_FILES\" >> \"$TEST_OUT\""))
        .script("fleets/us/hosts/edge/run.sh", "echo edge-override >> \"$TEST_OUT\"");
    let commit = remote.commit("monorepo");
    let node = Node::new(dir.path(), &remote.file_url(), "app1");

    node.sync(&["--path", "fleets/us"]).expect(APPLIED);

    let out = node.host.out_lines();
    let config_root = node.host.state.join("revisions").join(&commit).join("fleets/us");
    assert!(out[0].starts_with("run.sh "), "{out:?}");
    assert!(out[0].ends_with(&format!("pwd={}", config_root.display())), "{out:?}");
    assert!(out.contains(&"fleets/eu/run.sh".to_string()), "changed paths stay repository-relative: {out:?}");

    let edge = Node::new(dir.path(), &remote.file_url(), "edge");
    edge.sync_env(&[], &[("GITOPS_PATH", "fleets/us")]).expect(APPLIED);
    assert_eq!(edge.host.out_lines(), ["edge-override"], "host overrides live under the config root");
}

#[test]
fn dry_run_shows_which_entrypoint_would_run_on_this_host() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    remote.script("run.sh", "true").script("teardown.sh", "true").script("hosts/web1/run.sh", "true");
    let first = remote.commit("first");
    let web1 = Node::new(dir.path(), &remote.file_url(), "web1.example.com");
    let db1 = Node::new(dir.path(), &remote.file_url(), "db1");

    let run = web1.sync(&["--dry-run", "--tags", "web"]).expect(APPLIED);
    assert!(run.stdout.contains("entrypoint: hosts/web1/run.sh (host override)"), "{}", run.stdout);
    assert!(run.stdout.contains("tags: web\n"), "{}", run.stdout);
    assert!(run.stdout.contains("teardown: none"), "first deploy: {}", run.stdout);
    let run = db1.sync(&["--dry-run"]).expect(APPLIED);
    assert!(run.stdout.contains("entrypoint: run.sh (shared)"), "{}", run.stdout);

    db1.sync(&[]).expect(APPLIED);
    remote.commit("second");
    let before = db1.host.snapshot();
    let run = db1.sync(&["--dry-run"]).expect(APPLIED);
    assert!(run.stdout.contains(&format!("teardown: teardown.sh of the live revision {first}")), "{}", run.stdout);
    let run = db1.sync(&["--dry-run", "--path", "nowhere"]).expect(APPLIED);
    assert!(run.stdout.contains("entrypoint: nowhere/run.sh (shared; not in this commit)"), "{}", run.stdout);
    assert_eq!(db1.host.snapshot(), before, "a dry run changes nothing");
}

#[test]
fn example_repo_shows_a_shared_run_sh_a_host_override_tags_and_teardown() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo/.");
    let copied = std::process::Command::new("cp").arg("-R").arg(&example).arg(&remote.work).status().unwrap();
    assert!(copied.success());
    remote.commit("example");
    let target = dir.path().join("target-root");
    let web1 = Node::new(dir.path(), &remote.file_url(), "web1.example.com");
    let target_env = [("TARGET_ROOT", target.to_str().unwrap())];

    web1.sync_env(&["--tags", "web"], &target_env).expect(APPLIED);

    let read = |path: &str| fs::read_to_string(target.join(path)).ok();
    assert!(read("etc/motd").unwrap().contains("Managed by gitops"));
    assert_eq!(read("etc/canary").as_deref(), Some("web1: canary for the web role\n"), "host override ran");
    assert!(read("etc/web.conf").unwrap().contains("listen 80"), "tag web installs roles/web");

    // The role file leaves the repository: the outgoing revision's teardown removes it from the host.
    remote.remove("roles/web/files/etc/web.conf");
    remote.commit("drop web.conf");
    web1.sync_env(&["--tags", "web"], &target_env).expect(APPLIED);
    assert_eq!(read("etc/web.conf"), None, "teardown.sh undid what the old revision installed");
    assert!(read("etc/motd").is_some());
}

// ---------------------------------------------------------------------------------------------- teardown

#[test]
fn teardown_of_the_outgoing_revision_runs_first_in_its_directory() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    let teardown = r#"echo "teardown ${0#$PWD/} commit=$GITOPS_COMMIT next=$GITOPS_NEXT_COMMIT next_dir=$GITOPS_NEXT_DIR pwd=$(pwd) live=$(readlink "$GITOPS_STATE_DIR/current")" >> "$TEST_OUT""#;
    remote
        .script("run.sh", RECORD)
        .script("teardown.sh", "echo shared-teardown-must-not-run >> \"$TEST_OUT\"; exit 1")
        .script("hosts/node1/run.sh", RECORD)
        .script("hosts/node1/teardown.sh", teardown);
    let first = remote.commit("first");
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    node.sync(&[]).expect(APPLIED);
    assert_eq!(node.host.out_lines(), [format!("applied {first} prev=")], "no teardown on a first deploy");

    remote.remove("hosts/node1/teardown.sh");
    let second = remote.commit("second");
    node.sync(&[]).expect(APPLIED);

    let out = node.host.out_lines();
    let revisions = node.host.state.join("revisions");
    assert_eq!(
        out[1],
        format!(
            "teardown hosts/node1/teardown.sh commit={first} next={second} next_dir={} pwd={} live=revisions/{first}",
            revisions.join(&second).display(),
            revisions.join(&first).display()
        ),
        "the old revision's own teardown, next to its entrypoint, before the swap"
    );
    assert_eq!(out[2], format!("applied {second} prev={first}"));
    assert_eq!(out.len(), 3);
    let log = fs::read_to_string(node.host.state.join(format!("logs/{second}.teardown.log"))).unwrap();
    assert_eq!(log, "", "teardown output has its own log");

    // The second revision has no teardown of its own (the shared one is not next to its entrypoint).
    let third = remote.commit("third");
    node.sync(&[]).expect(APPLIED);
    assert_eq!(node.host.out_lines()[3], format!("applied {third} prev={second}"));
}

#[test]
fn failed_teardown_keeps_the_old_revision_live_and_is_retried_like_a_failed_apply() {
    let dir = tempdir();
    let remote = Remote::new(dir.path());
    remote
        .script("run.sh", RECORD)
        .script("teardown.sh", "echo teardown-ran >> \"$TEST_OUT\"\necho cannot undo >&2\nexit 3");
    let first = remote.commit("first");
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    node.sync(&[]).expect(APPLIED);
    remote.write("x.conf", "x");
    let second = remote.commit("second");

    let run = node.sync(&["--max-attempts", "2"]).expect(APPLY_FAILED);

    assert!(run.stderr.contains("teardown script teardown.sh exited with code 3"), "{}", run.stderr);
    assert_eq!(node.host.current(), Some(first.clone()), "the old revision stays live");
    assert_eq!(node.host.applied(), Some(first.clone()));
    let attempt = &node.host.state_json()["last_attempt"];
    assert_eq!(attempt["commit"], second.as_str());
    assert_eq!(attempt["result"], "apply-failed");
    assert_eq!(attempt["attempts"], 1);
    assert_eq!(attempt["exit_code"], 3);
    assert!(attempt["log"].as_str().unwrap().ends_with(".teardown.log"));
    let log = fs::read_to_string(attempt["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("cannot undo"), "{log}");

    node.sync(&["--max-attempts", "2"]).expect(APPLY_FAILED);
    assert_eq!(node.host.state_json()["last_attempt"]["attempts"], 2);
    node.sync(&["--max-attempts", "2"]).expect(APPLY_FAILED);
    let teardowns = node.host.out_lines().iter().filter(|l| *l == "teardown-ran").count();
    assert_eq!(teardowns, 2, "given up after --max-attempts, like any failed apply");
    assert_eq!(node.host.current(), Some(first.clone()));

    // A broken teardown cannot be fixed by a new commit: the operator skips it once.
    node.sync(&["--skip-teardown"]).expect(APPLIED);
    assert_eq!(node.host.current(), Some(second.clone()));
    assert_eq!(node.host.out_lines().last(), Some(&format!("applied {second} prev={first}")));
}

// ---------------------------------------------------------------------------------------------- reboots

#[test]
fn entrypoint_request_reboots_exactly_once_then_records_the_new_boot() {
    let dir = tempdir();
    let remote = Remote::with_script(
        dir.path(),
        &format!("{RECORD}\necho 'kernel 6.12 installed' > \"$GITOPS_REBOOT_REQUEST\""),
    );
    let mut node = Node::new(dir.path(), &remote.file_url(), "node1");

    let run = node.sync(&[]).expect(APPLIED);
    assert_eq!(node.reboots().len(), 1, "{}", run.stderr);
    assert!(node.reboots()[0].contains("kernel 6.12 installed"), "{:?}", node.reboots());
    let state = node.host.state_json();
    let last = &state["reboot"]["last"];
    assert_eq!(last["boot_id"], "node1-boot-1", "the boot id is recorded before rebooting");
    assert_eq!(last["request"]["source"], "entrypoint");
    assert_eq!(last["request"]["reason"], "kernel 6.12 installed");
    assert!(!node.host.state.join("reboot-request").exists(), "the request file is consumed");

    // The reboot command returned but the host did not go down (yet): never a second reboot.
    let run = node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.reboots().len(), 1);
    assert!(run.stderr.contains("not rebooting twice"), "{}", run.stderr);

    node.boot(unix_now() + 5);
    let run = node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.reboots().len(), 1);
    assert!(
        run.stderr.contains("rebooted for the reboot request \"kernel 6.12 installed\" from the entrypoint"),
        "{}",
        run.stderr
    );
    let state = node.host.state_json();
    assert_eq!(state["reboot"]["last"]["rebooted_into"], "node1-boot-2");
    assert!(state["reboot"]["pending"].is_null(), "the satisfied request is dropped: {state}");

    let before = node.host.snapshot();
    node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.host.snapshot(), before, "a poll after the reboot writes nothing");
    assert_eq!(node.reboots().len(), 1);
}

#[test]
fn repo_request_reboots_hosts_booted_before_it_and_never_loops() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let mut node = Node::new(dir.path(), &remote.file_url(), "node1");
    node.sync(&[]).expect(APPLIED);

    let requested = unix_now() - 60;
    remote.write(".gitops/reboot", &format!("# security update\n{}\nopenssl 3.0.15\n", rfc3339(requested)));
    remote.commit("reboot the fleet");
    let run = node.sync(&[]).expect(APPLIED);
    assert_eq!(node.reboots().len(), 1, "{}", run.stderr);
    assert!(node.reboots()[0].contains("openssl 3.0.15"), "{:?}", node.reboots());
    assert_eq!(node.host.state_json()["reboot"]["last"]["request"]["not_before"], rfc3339(requested).as_str());

    node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.reboots().len(), 1, "same boot: never twice");

    node.boot(unix_now());
    let run = node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.reboots().len(), 1, "booted after T: satisfied, no loop");
    assert!(
        run.stderr.contains("rebooted for the reboot request \"openssl 3.0.15\" from .gitops/reboot"),
        "{}",
        run.stderr
    );
    let before = node.host.snapshot();
    node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.host.snapshot(), before);

    // A host that joins later (booted after T) never reboots for it; the log says why.
    let mut fresh = Node::new(dir.path(), &remote.file_url(), "node2");
    fresh.boot(requested + 1);
    let run = fresh.sync(&[]).expect(APPLIED);
    assert!(fresh.reboots().is_empty());
    assert!(
        run.stderr.contains("ignoring the reboot request \"openssl 3.0.15\" from .gitops/reboot"),
        "{}",
        run.stderr
    );

    // A request for the future waits for its time.
    remote.write(".gitops/reboot", &rfc3339(unix_now() + 3600));
    remote.commit("reboot in an hour");
    let run = node.sync(&[]).expect(APPLIED);
    assert_eq!(node.reboots().len(), 1);
    assert!(run.stderr.contains("is not due yet"), "{}", run.stderr);

    // A file that is not a time is reported, not guessed at.
    remote.write(".gitops/reboot", "tonight\n");
    remote.commit("bad request");
    let run = node.sync(&[]).expect(APPLIED);
    assert!(run.stderr.contains("not an RFC 3339 time"), "{}", run.stderr);
    assert_eq!(node.reboots().len(), 1);
}

#[test]
fn window_defers_a_due_reboot_in_host_local_time_and_never_means_never() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    remote.write(".gitops/reboot", &rfc3339(unix_now() - 60));
    remote.commit("reboot");
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    // Local time is UTC+3 here (POSIX TZ: the offset is west-positive), so a window built from UTC would be wrong.
    let tz = [("TZ", "XYZ-3")];
    let local_minute = ((unix_now() + 3 * 3600) % 86400 / 60) as u16;
    let hhmm = |m: u16| format!("{:02}:{:02}", (m % 1440) / 60, (m % 1440) % 60);
    let closed = format!("{}-{}", hhmm(local_minute + 120), hhmm(local_minute + 180));
    let open = format!("{}-{}", hhmm(local_minute + 1440 - 30), hhmm(local_minute + 30));

    let run = node.sync_env(&["--reboot-strategy", "never"], &tz).expect(APPLIED);
    assert!(run.stderr.contains("--reboot-strategy is never"), "{}", run.stderr);
    let run = node.sync_env(&["--reboot-window", &closed], &tz).expect(UP_TO_DATE);
    assert!(run.stderr.contains("outside the reboot window"), "{}", run.stderr);
    assert!(node.reboots().is_empty());
    // Open at this hour, but on another day of the week (1970-01-01, day 0, was a Thursday).
    let today = ((unix_now() + 3 * 3600) / 86400 + 3) % 7;
    let other_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][((today + 1) % 7) as usize];
    node.sync_env(&["--reboot-strategy", "window", "--reboot-window", &format!("{other_day} {open}")], &tz)
        .expect(UP_TO_DATE);
    assert!(node.reboots().is_empty());

    let run = node.sync_env(&["--reboot-window", &open], &tz).expect(UP_TO_DATE);
    assert_eq!(node.reboots().len(), 1, "the window opened: {}", run.stderr);
}

#[test]
fn failed_reboot_command_exits_1_and_is_tried_again() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    remote.write(".gitops/reboot", &rfc3339(unix_now() - 60));
    remote.commit("reboot");
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    node.sync(&["--reboot-strategy", "never"]).expect(APPLIED);

    let run = node.sync(&["--reboot-command", "echo no polkit >&2; exit 4"]).expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("no polkit") && run.stderr.contains("--reboot-command"), "{}", run.stderr);
    assert!(node.host.state_json()["reboot"]["last"]["error"].as_str().unwrap().contains("exit status: 4"));

    node.sync(&[]).expect(UP_TO_DATE);
    assert_eq!(node.reboots().len(), 1, "the host never went down, so trying again cannot loop");
}

#[test]
fn reboots_are_reported_and_the_report_goes_out_before_the_host_goes_down() {
    let dir = tempdir();
    let receiver = Recorder::start();
    let remote = Remote::with_script(dir.path(), RECORD);
    remote.write(".gitops/reboot", &format!("{}\nopenssl 3.0.15\n", rfc3339(unix_now() - 60)));
    remote.commit("reboot");
    let mut node = Node::new(dir.path(), &remote.file_url(), "node1");
    let notify = format!("json:{}", receiver.url("/hook"));
    // The reboot command checks that the run was already recorded and reported when it is called.
    let last_run = node.host.state.join("last_run.json");
    let command = format!(
        "grep -q 'rebooting for' '{}' && echo reported-first >> '{}'",
        last_run.display(),
        node.reboots.display()
    );

    node.sync(&["--notify", &notify, "--reboot-command", &command]).expect(APPLIED);

    assert_eq!(node.reboots(), ["reported-first"]);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let doc: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let reboot = doc["reboot"].as_str().unwrap_or_default();
    assert!(reboot.starts_with("rebooting for the reboot request \"openssl 3.0.15\" from .gitops/reboot"), "{doc}");

    node.boot(unix_now());
    node.sync(&["--notify", &notify]).expect(UP_TO_DATE);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "a completed reboot is news, even on an up-to-date run");
    let doc: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(doc["result"], "up-to-date");
    assert!(doc["reboot"].as_str().unwrap_or_default().starts_with("rebooted for the reboot request"), "{doc}");
    node.sync(&["--notify", &notify]).expect(UP_TO_DATE);
    assert_eq!(receiver.requests().len(), 2, "reported once");
}

#[test]
fn fleetlock_lets_one_host_reboot_at_a_time() {
    let dir = tempdir();
    let server = FleetLock::start();
    let remote = Remote::with_script(dir.path(), RECORD);
    remote.write(".gitops/reboot", &rfc3339(unix_now() - 60));
    remote.commit("reboot the fleet");
    let mut a = Node::new(dir.path(), &remote.file_url(), "a");
    let mut b = Node::new(dir.path(), &remote.file_url(), "b");
    let sync = |node: &Node, id: &str| {
        node.sync(&["--fleetlock-url", &server.url(), "--fleetlock-group", "workers", "--fleetlock-id", id])
    };

    sync(&a, "id-a").expect(APPLIED);
    assert_eq!(a.reboots().len(), 1, "a got the slot");
    assert_eq!(server.holder().as_deref(), Some("id-a"));

    let run = sync(&b, "id-b").expect(APPLIED);
    assert!(b.reboots().is_empty(), "b must wait while a reboots");
    assert!(run.stderr.contains("refused the slot (HTTP 409: failed_lock: semaphore held by id-a)"), "{}", run.stderr);
    sync(&b, "id-b").expect(UP_TO_DATE);
    assert!(b.reboots().is_empty(), "still held: deferred again");

    a.boot(unix_now());
    let run = sync(&a, "id-a").expect(UP_TO_DATE);
    assert!(run.stderr.contains("released the FleetLock slot"), "{}", run.stderr);
    assert_eq!(server.holder(), None);
    assert!(a.host.state_json()["reboot"]["fleetlock"].is_null());
    assert_eq!(a.reboots().len(), 1);

    sync(&b, "id-b").expect(UP_TO_DATE);
    assert_eq!(b.reboots().len(), 1, "b's turn");
    assert_eq!(server.holder().as_deref(), Some("id-b"));
    b.boot(unix_now());
    sync(&b, "id-b").expect(UP_TO_DATE);
    assert_eq!(server.holder(), None);

    let requests = server.requests();
    let paths: Vec<(&str, &str)> = requests.iter().map(|(p, id, _)| (p.as_str(), id.as_str())).collect();
    assert_eq!(
        paths,
        [
            ("/v1/pre-reboot", "id-a"),
            ("/v1/pre-reboot", "id-b"),
            ("/v1/pre-reboot", "id-b"),
            ("/v1/steady-state", "id-a"),
            ("/v1/pre-reboot", "id-b"),
            ("/v1/steady-state", "id-b"),
        ]
    );
    assert!(requests.iter().all(|(_, _, group)| group == "workers"));
    assert_eq!(server.bad_requests(), 0, "every request carried fleet-lock-protocol: true");
}

#[test]
fn unreachable_fleetlock_server_defers_the_reboot() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    remote.write(".gitops/reboot", &rfc3339(unix_now() - 60));
    remote.commit("reboot");
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    let run = node.sync(&["--fleetlock-url", &url, "--fleetlock-id", "x"]).expect(APPLIED);

    assert!(node.reboots().is_empty());
    assert!(run.stderr.contains("deferred") && run.stderr.contains(&url), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------- splay, flags

#[test]
fn splay_sleeps_before_fetching() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    let started = Instant::now();
    let run = node.sync(&["--splay", "300ms"]).expect(APPLIED);
    assert!(run.stderr.contains("before fetching (--splay 300ms)"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    node.sync_env(&[], &[("GITOPS_SPLAY", "0")]).expect(UP_TO_DATE);
}

#[test]
fn bad_fleet_flags_exit_2_naming_the_flag() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let node = Node::new(dir.path(), &remote.file_url(), "node1");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--path", "../other"], "--path"),
        (vec!["--tags", "a b"], "--tags"),
        (vec!["--teardown", "/bin/true"], "--teardown"),
        (vec!["--reboot-window", "Mon-Fri 2-4"], "--reboot-window"),
        (vec!["--reboot-strategy", "window"], "needs --reboot-window"),
        (vec!["--reboot-strategy", "fleetlock"], "needs --fleetlock-url"),
        (vec!["--reboot-strategy", "immediate", "--reboot-window", "02:00-03:00"], "immediate"),
        (vec!["--reboot-strategy", "sometimes"], "--reboot-strategy"),
        (vec!["--fleetlock-url", "airlock:3333", "--fleetlock-id", "x"], "--fleetlock-url"),
        (vec!["--fleetlock-url", "http://l", "--fleetlock-group", "a b", "--fleetlock-id", "x"], "--fleetlock-group"),
        (vec!["--reboot-command", " "], "--reboot-command"),
        (vec!["--splay", "soon"], "--splay"),
    ];
    for (args, needle) in cases {
        let run = node.sync(&args);
        assert_eq!(run.code, USAGE, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?} should mention {needle}: {}", run.stderr);
    }
    assert!(!node.host.state.exists(), "a usage error touches nothing");
}
