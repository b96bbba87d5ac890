//! Reboot by Git, never a loop.
//!
//! A request means "reboot if this host booted before T, at or after T". It comes from the repository (the file
//! `.gitops/reboot` in the config root, holding T) or from the entrypoint (it writes to `$GITOPS_REBOOT_REQUEST`;
//! T is when it wrote). After the reboot the boot time is later than T, so the request is satisfied by
//! construction, with no state needed. state.json adds the second guard: the request and the boot id are
//! recorded before rebooting, and a request is never acted on twice (not in the same boot, and not after a
//! reboot whose boot time is somehow still before T, e.g. a clock set back).
//!
//! The decisions ([`judge`], [`gate`]) are plain functions; [`settle`] does the I/O around them after each cycle.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, anyhow};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod fleetlock;
pub mod record;
pub mod window;

use self::fleetlock::Answer;
pub use self::record::{FleetLockHold, REPO_REQUEST, RebootRecord, RebootState, Request, Source};
use self::window::{LocalTime, Window};
use crate::layout::Layout;
use crate::outcome::{Failure, Outcome};
use crate::state;

/// Test hook: a fake boot id instead of /proc/sys/kernel/random/boot_id (simulates a reboot).
pub const TEST_BOOT_ID: &str = "GITOPS_TEST_BOOT_ID";
/// Test hook: a fake boot time (unix seconds or RFC 3339) instead of /proc/stat's btime.
pub const TEST_BOOT_TIME: &str = "GITOPS_TEST_BOOT_TIME";

/// When a due reboot may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// As soon as a request is due.
    Immediate,
    /// Only inside `--reboot-window`.
    Window,
    /// Only with a slot from the FleetLock server (and inside `--reboot-window`, if one is set).
    Fleetlock,
    /// Never: log that a reboot is due and leave it to the operator.
    Never,
}

/// Validated reboot settings.
#[derive(Debug, Clone)]
pub struct RebootSettings {
    /// When a due reboot may happen.
    pub strategy: Strategy,
    /// Local-time window (strategies window and fleetlock).
    pub window: Option<Window>,
    /// Shell command that reboots the host (`sh -c`).
    pub command: String,
    /// The FleetLock server and this host's identity (strategy fleetlock).
    pub fleetlock: Option<fleetlock::Client>,
}

/// The running boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `/proc/sys/kernel/random/boot_id`: new on every boot.
    pub id: String,
    /// When the host booted (`btime` in /proc/stat).
    pub time: OffsetDateTime,
}

/// What one request calls for in this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The host booted at or after T: nothing to do (and nothing can loop).
    Satisfied,
    /// T has not come yet.
    NotYet,
    /// A reboot for this request was already started in this boot: never twice.
    AlreadyStarted,
    /// The host rebooted for this request, yet its boot time is still before T (clock?): never twice.
    RebootedBefore,
    /// Reboot, when the strategy allows.
    Due,
}

/// Judge request `request` (with T = `not_before`) in `boot` at `now`, given the last reboot gitops started.
pub fn judge(
    request: &Request,
    not_before: OffsetDateTime,
    boot: &Boot,
    now: OffsetDateTime,
    last: Option<&RebootRecord>,
) -> Verdict {
    if boot.time >= not_before {
        return Verdict::Satisfied;
    }
    if let Some(last) = last.filter(|last| last.request.same(request)) {
        if last.boot_id != boot.id {
            return Verdict::RebootedBefore;
        }
        if last.error.is_none() {
            return Verdict::AlreadyStarted;
        }
        // The reboot command failed, so the host never went down: trying again cannot loop.
    }
    if now < not_before { Verdict::NotYet } else { Verdict::Due }
}

/// What the strategy says about a due reboot right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Reboot now.
    Go,
    /// Ask the FleetLock server; reboot only if it grants the slot.
    AskFleetLock,
    /// Outside the reboot window: try again on a later run.
    OutsideWindow,
    /// `--reboot-strategy never`.
    Never,
}

/// Decide from the strategy, the window and the local time.
pub fn gate(strategy: Strategy, window: Option<&Window>, now: Option<LocalTime>) -> Gate {
    let inside = match (window, now) {
        (None, _) => true,
        (Some(window), Some(now)) => window.contains(now),
        // Unknown local time: a window cannot be honoured, so wait rather than reboot at a bad hour.
        (Some(_), None) => false,
    };
    match strategy {
        Strategy::Never => Gate::Never,
        Strategy::Immediate => Gate::Go,
        Strategy::Window | Strategy::Fleetlock if !inside => Gate::OutsideWindow,
        Strategy::Window => Gate::Go,
        Strategy::Fleetlock => Gate::AskFleetLock,
    }
}

/// Parse `.gitops/reboot`: the first line that is not blank or a `#` comment is an RFC 3339 timestamp,
/// the next one (optional) the reason.
pub fn parse_repo_request(text: &str) -> Result<(OffsetDateTime, Option<String>), String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let stamp = lines.next().ok_or("it is empty; write an RFC 3339 time such as 2026-12-01T02:00:00Z")?;
    let at = OffsetDateTime::parse(stamp, &Rfc3339).map_err(|_| {
        format!("{stamp:?} is not an RFC 3339 time; write e.g. 2026-12-01T02:00:00Z or 2026-12-01T03:00:00+01:00")
    })?;
    Ok((at, lines.next().map(reason)))
}

/// A reason as stored: one line, bounded, secrets redacted.
fn reason(text: &str) -> String {
    crate::redact::redact(&text.trim().chars().take(200).collect::<String>())
}

/// Format as RFC 3339 in UTC.
fn stamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default()
}

/// The running boot, from /proc (or the test hooks).
pub fn current_boot() -> anyhow::Result<Boot> {
    let id = match std::env::var(TEST_BOOT_ID) {
        Ok(id) => id,
        Err(_) => fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .context("reading /proc/sys/kernel/random/boot_id (reboots need Linux /proc mounted)")?
            .trim()
            .to_string(),
    };
    let time = match std::env::var(TEST_BOOT_TIME) {
        Ok(text) => parse_time(&text).ok_or_else(|| anyhow!("{TEST_BOOT_TIME}={text:?} is not a time"))?,
        Err(_) => boot_time_from_proc()?,
    };
    Ok(Boot { id, time })
}

/// When this system booted: the kernel's `btime` plus the moment PID 1 started after it. On a host
/// the two are a second apart; in a container the kernel (and btime) is the host's, but PID 1 starts
/// with the container, so a container's reboot moves this forward as a host's reboot does.
fn boot_time_from_proc() -> anyhow::Result<OffsetDateTime> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat for the boot time")?;
    let btime = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| anyhow!("/proc/stat has no btime line; cannot tell when this host booted"))?;
    // starttime is field 22 of /proc/1/stat, in clock ticks since the kernel booted; the command
    // name before it may hold spaces, so count from the last ')'. Unreadable (hidepid): btime alone.
    let pid1_ticks = fs::read_to_string("/proc/1/stat")
        .ok()
        .and_then(|stat| stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse::<i64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as i64).max(1);
    OffsetDateTime::from_unix_timestamp(btime + pid1_ticks / ticks_per_second).context("boot time out of range")
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    match text.trim().parse::<i64>() {
        Ok(seconds) => OffsetDateTime::from_unix_timestamp(seconds).ok(),
        Err(_) => OffsetDateTime::parse(text.trim(), &Rfc3339).ok(),
    }
}

/// The entrypoint's request file: its first line is the reason, its modification time is T.
fn entrypoint_request(path: &Path, commit: Option<String>) -> anyhow::Result<Option<Request>> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading reboot request {}", path.display())),
    };
    let text = fs::read_to_string(path).with_context(|| format!("reading reboot request {}", path.display()))?;
    // Kept to the nanosecond: the boot time (whole seconds, rounded down) then always comes out before T,
    // and T is never in the future, so the request is due at once.
    let written = OffsetDateTime::from(meta.modified().context("reading the time of the reboot request")?);
    let not_before = stamp(written);
    let reason = text.lines().map(str::trim).find(|l| !l.is_empty()).map(reason);
    Ok(Some(Request { source: Source::Entrypoint, not_before, commit, reason }))
}

/// What [`settle`] found: news for the run's report, and a reboot to start once the run is reported.
#[derive(Debug, Default)]
pub struct Settled {
    /// "rebooting for …" and/or "rebooted for …", for notifications.
    pub event: Option<String>,
    /// The reboot decided on, already recorded in state.json.
    pub reboot: Option<Reboot>,
    /// A request that is due (or waits for a successful apply) but was not acted on: its time T.
    pub pending_since: Option<String>,
}

/// A reboot recorded in state.json whose command has not run yet.
#[derive(Debug)]
pub struct Reboot {
    /// The request, as shown in logs and given to the command as `GITOPS_REBOOT_REASON`.
    reason: String,
    /// The boot it was recorded in.
    boot_id: String,
}

/// After a cycle, under the run lock: record the entrypoint's request, notice a completed reboot, give back a
/// FleetLock slot, and decide on a reboot when a request is due and the strategy allows ([`Reboot::run`] starts it).
///
/// Reboots are considered only after runs that leave the live revision as it should be (up-to-date, applied,
/// need-push, diverged); a failed apply keeps its request pending for the next successful run.
pub fn settle(
    reboot: &RebootSettings,
    config_root: &Path,
    layout: &Layout,
    outcome: Outcome,
) -> Result<Settled, Failure> {
    let mut settled = Settled::default();
    let request_file = layout.reboot_request();
    let live_root = layout.current().join(config_root);
    let repo_file = live_root.join(REPO_REQUEST);
    let mut state = state::load(&layout.state_file())?;
    if state.reboot.is_empty() && !request_file.exists() && !repo_file.exists() {
        // The no-op poll: nothing to read, nothing to write.
        return Ok(settled);
    }
    let boot = current_boot()?;
    let before = state.reboot.clone();
    let now = OffsetDateTime::now_utc();
    let live_commit = crate::checkout::live_commit(layout);

    // A reboot gitops started has happened: record and report it.
    if let Some(last) = state.reboot.last.as_mut()
        && last.rebooted_into.is_none()
        && last.error.is_none()
        && last.boot_id != boot.id
    {
        log::info!("rebooted for the {}: boot {} is up since {}", last.request, short_boot(&boot.id), stamp(boot.time));
        last.rebooted_into = Some(boot.id.clone());
        last.booted_at = Some(stamp(boot.time));
        settled.event = Some(format!("rebooted for the {}", last.request));
    }

    // The slot taken before that reboot goes back to the fleet.
    if let Some(hold) = state.reboot.fleetlock.clone()
        && hold.boot_id != boot.id
    {
        match hold.client.steady_state() {
            Ok(Answer::Granted) => {
                log::info!("released the FleetLock slot at {} (group {})", hold.client.url, hold.client.group);
                state.reboot.fleetlock = None;
            }
            Ok(Answer::Refused(why)) => {
                log::warn!(
                    "FleetLock server {} did not release the slot ({why}); trying again next run",
                    hold.client.url
                )
            }
            Err(e) => log::warn!("releasing the FleetLock slot: {e:#}; trying again next run"),
        }
    }

    let attempted = state.last_attempt.as_ref().map(|a| a.commit.clone()).or(live_commit.clone());
    let collected = entrypoint_request(&request_file, attempted)?;
    if let Some(request) = &collected {
        log::info!("recorded the {request}");
        // A later request subsumes an earlier one: one boot after the later T satisfies both.
        let keep_old = state.reboot.pending.as_ref().is_some_and(|p| p.time() > request.time());
        if !keep_old {
            state.reboot.pending = Some(request.clone());
        }
    }

    let acts = matches!(outcome, Outcome::UpToDate | Outcome::Applied | Outcome::NeedPush | Outcome::Diverged);
    if !acts {
        if state.reboot.pending.is_some() && collected.is_some() {
            log::warn!("the reboot waits for a successful apply");
        }
        settled.pending_since = state.reboot.pending.as_ref().map(|p| p.not_before.clone());
        finish(layout, &mut state, &before, collected.is_some(), &request_file)?;
        return Ok(settled);
    }

    let mut requests = Vec::new();
    if let Some(pending) = &state.reboot.pending {
        requests.push(pending.clone());
    }
    match fs::read_to_string(&repo_file) {
        Ok(text) => match parse_repo_request(&text) {
            Ok((at, reason)) => requests.push(Request {
                source: Source::Repo,
                not_before: stamp(at),
                commit: live_commit.clone(),
                reason,
            }),
            Err(e) => log::warn!("ignoring {REPO_REQUEST} in the live revision: {e}"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("ignoring {}: cannot read it ({e})", repo_file.display()),
    }

    // Only runs that applied a revision say the quiet things out loud; polls keep them at debug level.
    let level = if outcome == Outcome::Applied { log::Level::Info } else { log::Level::Debug };
    let mut due: Option<Request> = None;
    for request in requests {
        let Some(not_before) = request.time() else {
            log::warn!("dropping the {request}: its time does not parse");
            state.reboot.pending = None;
            continue;
        };
        match judge(&request, not_before, &boot, now, state.reboot.last.as_ref()) {
            Verdict::Satisfied => {
                log::log!(level, "ignoring the {request}: this host booted at {}, after that time", stamp(boot.time));
                if request.source == Source::Entrypoint {
                    state.reboot.pending = None;
                }
            }
            Verdict::NotYet => log::log!(level, "the {request} is not due yet"),
            Verdict::AlreadyStarted => log::warn!(
                "a reboot for the {request} was started in this boot (boot {}) but the host is still up; not rebooting twice for one request",
                short_boot(&boot.id)
            ),
            Verdict::RebootedBefore => {
                log::warn!(
                    "this host already rebooted for the {request}, yet it booted at {}, before that time (clock wrong?); not rebooting again",
                    stamp(boot.time)
                );
                if request.source == Source::Entrypoint {
                    state.reboot.pending = None;
                }
            }
            Verdict::Due => {
                if due.as_ref().is_none_or(|d| d.time() < Some(not_before)) {
                    due = Some(request);
                }
            }
        }
    }

    if let Some(request) = due {
        // Until a reboot starts below, the due request is pending.
        settled.pending_since = Some(request.not_before.clone());
        let local = window::local_time(now.unix_timestamp());
        match gate(reboot.strategy, reboot.window.as_ref(), local) {
            Gate::Never => {
                log::warn!("the {request} is due, but --reboot-strategy is never: reboot this host when convenient")
            }
            Gate::OutsideWindow => log::info!(
                "the {request} is due; deferred: it is {} local time, outside the reboot window {:?}",
                local.map(|l| l.to_string()).unwrap_or_else(|| "an unknown".into()),
                reboot.window.as_ref().map(|w| w.to_string()).unwrap_or_default()
            ),
            Gate::AskFleetLock => {
                let Some(client) = &reboot.fleetlock else {
                    return Err(anyhow!("--reboot-strategy fleetlock without a FleetLock server").into());
                };
                match client.pre_reboot() {
                    Ok(Answer::Granted) => {
                        log::info!("FleetLock server {} granted the reboot slot (group {})", client.url, client.group);
                        state.reboot.fleetlock =
                            Some(FleetLockHold { client: client.clone(), boot_id: boot.id.clone(), since: stamp(now) });
                        settled.reboot = Some(record(layout, &mut state, request, &boot, now)?);
                    }
                    Ok(Answer::Refused(why)) => log::info!(
                        "the {request} is due; deferred: FleetLock server {} refused the slot ({why}); asking again next run",
                        client.url
                    ),
                    Err(e) => log::warn!("the {request} is due; deferred: {e:#}"),
                }
            }
            Gate::Go => settled.reboot = Some(record(layout, &mut state, request, &boot, now)?),
        }
    }
    finish(layout, &mut state, &before, collected.is_some(), &request_file)?;
    if settled.reboot.is_some() {
        settled.pending_since = None;
    }
    if let Some(reboot) = &settled.reboot {
        let rebooting = format!("rebooting for the {}", reboot.reason);
        settled.event = Some(match settled.event.take() {
            Some(rebooted) => format!("{rebooted}; {rebooting}"),
            None => rebooting,
        });
    }
    Ok(settled)
}

/// Save state.json if the reboot section changed, then drop the consumed request file (after it is recorded).
fn finish(
    layout: &Layout,
    state: &mut state::State,
    before: &RebootState,
    collected: bool,
    request_file: &Path,
) -> Result<(), Failure> {
    if state.reboot != *before {
        state::save(&layout.state_file(), state)?;
    }
    if collected {
        fs::remove_file(request_file).with_context(|| format!("removing {}", request_file.display()))?;
    }
    Ok(())
}

/// Record the reboot (request and boot id) in state.json: from here on, this request is never acted on twice
/// in this boot, whatever happens next.
fn record(
    layout: &Layout,
    state: &mut state::State,
    request: Request,
    boot: &Boot,
    now: OffsetDateTime,
) -> Result<Reboot, Failure> {
    let reason = request.to_string();
    state.reboot.last = Some(RebootRecord {
        request,
        boot_id: boot.id.clone(),
        started_at: stamp(now),
        error: None,
        rebooted_into: None,
        booted_at: None,
    });
    state::save(&layout.state_file(), state)?;
    Ok(Reboot { reason, boot_id: boot.id.clone() })
}

impl Reboot {
    /// Run the reboot command. If it fails, the host is not going down: record why (the reboot is tried
    /// again on the next run, which cannot loop) and give a FleetLock slot taken for it back.
    pub fn run(self, reboot: &RebootSettings, layout: &Layout) -> Result<(), Failure> {
        let command = &reboot.command;
        log::warn!("rebooting for the {}: {command}", self.reason);
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env("GITOPS_REBOOT_REASON", &self.reason)
            .stdin(std::process::Stdio::null())
            .output();
        if let Ok(out) = &output {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            for line in stdout.lines().chain(stderr.lines()) {
                log::info!(target: "reboot-command", "{}", crate::redact::redact(line));
            }
        }
        let error = match output {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr.lines().next().unwrap_or_default().trim().to_string();
                let detail = if first.is_empty() { String::new() } else { format!(": {first}") };
                format!("reboot command {command:?} failed ({}){detail}", out.status)
            }
            Err(e) => format!("reboot command {command:?} could not start: {e}"),
        };
        let mut state = state::load(&layout.state_file())?;
        if let Some(last) = state.reboot.last.as_mut().filter(|last| last.boot_id == self.boot_id) {
            last.error = Some(error.clone());
        }
        if let Some(hold) = state.reboot.fleetlock.take_if(|hold| hold.boot_id == self.boot_id) {
            // Not going down after all: give the slot back so another host can reboot.
            if !matches!(hold.client.steady_state(), Ok(Answer::Granted)) {
                log::warn!("could not give the FleetLock slot back; it is released after the next reboot");
                state.reboot.fleetlock = Some(hold);
            }
        }
        state::save(&layout.state_file(), &state)?;
        Err(anyhow!("{error}; fix --reboot-command (it is tried again on the next run)").into())
    }
}

/// A boot id's first 8 characters (it comes from a file: never slice it by bytes).
fn short_boot(id: &str) -> String {
    id.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn request(source: Source, at: OffsetDateTime) -> Request {
        Request { source, not_before: stamp(at), commit: None, reason: None }
    }

    fn record(req: &Request, boot_id: &str, error: Option<&str>) -> RebootRecord {
        RebootRecord {
            request: req.clone(),
            boot_id: boot_id.into(),
            started_at: String::new(),
            error: error.map(String::from),
            rebooted_into: None,
            booted_at: None,
        }
    }

    #[test]
    fn a_request_is_judged_against_the_boot_time_and_the_last_reboot() {
        let t = datetime!(2026-12-01 02:00 UTC);
        let req = request(Source::Repo, t);
        let old_boot = Boot { id: "b1".into(), time: datetime!(2026-11-01 00:00 UTC) };
        let new_boot = Boot { id: "b2".into(), time: datetime!(2026-12-01 02:05 UTC) };
        let before_t = datetime!(2026-11-30 12:00 UTC);
        let after_t = datetime!(2026-12-01 03:00 UTC);
        let cases = [
            // (boot, now, last reboot) -> verdict
            (&old_boot, after_t, None, Verdict::Due),
            (&old_boot, t, None, Verdict::Due),
            (&old_boot, before_t, None, Verdict::NotYet),
            (&old_boot, after_t, Some(record(&req, "b1", None)), Verdict::AlreadyStarted),
            (&old_boot, after_t, Some(record(&req, "b1", Some("exit 1"))), Verdict::Due),
            (&old_boot, after_t, Some(record(&request(Source::Repo, before_t), "b1", None)), Verdict::Due),
            (&old_boot, after_t, Some(record(&request(Source::Entrypoint, t), "b1", None)), Verdict::Due),
            // After the reboot the boot time is past T: satisfied, whatever the record says. No loop.
            (&new_boot, after_t, Some(record(&req, "b1", None)), Verdict::Satisfied),
            (&new_boot, after_t, None, Verdict::Satisfied),
            // A request older than this boot is ignored.
            (&new_boot, after_t, Some(record(&request(Source::Repo, before_t), "b1", None)), Verdict::Satisfied),
        ];
        for (boot, now, last, want) in cases {
            assert_eq!(judge(&req, t, boot, now, last.as_ref()), want, "{boot:?} {now} {last:?}");
        }
        // Rebooted, but the clock says the new boot is still before T: never a second time.
        let skewed = Boot { id: "b2".into(), time: datetime!(2026-11-30 00:00 UTC) };
        assert_eq!(judge(&req, t, &skewed, after_t, Some(&record(&req, "b1", None))), Verdict::RebootedBefore);
    }

    #[test]
    fn strategies_and_windows_gate_a_due_reboot() {
        let window = Window::parse("Mon-Fri 02:00-04:00").unwrap();
        let inside = Some(LocalTime { weekday: 0, minute: 150 });
        let outside = Some(LocalTime { weekday: 5, minute: 150 });
        assert_eq!(gate(Strategy::Immediate, None, outside), Gate::Go);
        assert_eq!(gate(Strategy::Never, None, inside), Gate::Never);
        assert_eq!(gate(Strategy::Window, Some(&window), inside), Gate::Go);
        assert_eq!(gate(Strategy::Window, Some(&window), outside), Gate::OutsideWindow);
        assert_eq!(gate(Strategy::Window, Some(&window), None), Gate::OutsideWindow);
        assert_eq!(gate(Strategy::Fleetlock, None, outside), Gate::AskFleetLock);
        assert_eq!(gate(Strategy::Fleetlock, Some(&window), inside), Gate::AskFleetLock);
        assert_eq!(gate(Strategy::Fleetlock, Some(&window), outside), Gate::OutsideWindow);
    }

    #[test]
    fn repo_request_file() {
        let (at, reason) = parse_repo_request("# kernel 6.12\n\n2026-12-01T03:00:00+01:00\nkernel 6.12\n").unwrap();
        assert_eq!(at, datetime!(2026-12-01 02:00 UTC));
        assert_eq!(reason.as_deref(), Some("kernel 6.12"));
        assert_eq!(parse_repo_request("2026-12-01T02:00:00Z").unwrap().1, None);
        assert!(parse_repo_request("").unwrap_err().contains("empty"));
        assert!(parse_repo_request("tomorrow").unwrap_err().contains("RFC 3339"));
        assert_eq!(stamp(at), "2026-12-01T02:00:00Z");
    }

    #[test]
    fn state_section_round_trips_and_is_left_out_when_empty() {
        assert!(RebootState::default().is_empty());
        let state = RebootState {
            pending: Some(request(Source::Entrypoint, datetime!(2026-12-01 02:00 UTC))),
            ..RebootState::default()
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<RebootState>(&json).unwrap(), state);
        assert!(!json.contains("fleetlock"), "{json}");
    }
}
