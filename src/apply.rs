//! Run the entrypoint in the checkout with a documented environment, a timeout and a saved log.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::printable::printable;
use crate::procfs;

/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for output still buffered after the entrypoint exited.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// What to run and how.
#[derive(Debug)]
pub struct Job<'a> {
    /// Checkout root: the working directory.
    pub checkout: &'a Path,
    /// Entrypoint path relative to the checkout.
    pub entrypoint: &'a Path,
    /// What it is called in messages: "entrypoint" or "teardown".
    pub role: &'static str,
    /// `GITOPS_*` variables added to our own environment.
    pub env: Vec<(&'static str, String)>,
    /// Kill the process group after this long.
    pub timeout: Duration,
    /// Where the combined stdout+stderr is saved.
    pub log_path: &'a Path,
    /// Where its process group is recorded while it runs, for [`reap_survivors`].
    pub group_file: &'a Path,
    /// Add to the log instead of starting it afresh (the health check after the entrypoint).
    pub append: bool,
}

/// How the entrypoint ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// True when it exited 0.
    pub success: bool,
    /// Its exit code, None when killed by a signal or not started.
    pub exit_code: Option<i32>,
    /// Why it failed, in one line.
    pub error: Option<String>,
}

impl Ran {
    fn failed(exit_code: Option<i32>, error: String) -> Ran {
        Ran { success: false, exit_code, error: Some(error) }
    }
}

/// Run the entrypoint; Err only when our side fails (the log cannot be written).
pub fn run(job: &Job) -> anyhow::Result<Ran> {
    let program = job.checkout.join(job.entrypoint);
    let shown = format!("{} {}", job.role, job.entrypoint.display());
    // O_NOFOLLOW: a symlink planted in logs/ is refused, never written through.
    let mut log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .append(job.append)
        .truncate(!job.append)
        .custom_flags(libc::O_NOFOLLOW)
        .open(job.log_path)
        .with_context(|| format!("creating log {}", job.log_path.display()))?;
    if !program.is_file() {
        let message = format!("{shown} not found in this commit; add it to the repository or set --entrypoint");
        writeln!(log, "gitops: {message}")?;
        return Ok(Ran::failed(None, message));
    }
    let (reader, writer) = std::io::pipe().context("creating the entrypoint's output pipe")?;
    let mut command = Command::new(&program);
    command
        .current_dir(job.checkout)
        // Only the secrets directory this run made, never one inherited from gitops's own environment.
        .env_remove("GITOPS_SECRETS_DIR")
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("duplicating the output pipe")?)
        .stderr(writer)
        // Its own process group, so a timeout kills everything it started.
        .process_group(0);
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe and touch no memory of ours.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        command.pre_exec(move || {
            // If gitops is killed (OOM, kill -9), its entrypoint must not go on running beside the next run.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // gitops may have died between fork and prctl, when the death signal could not yet be armed.
            // (No allocation here: after fork only async-signal-safe work is allowed.)
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = command.spawn();
    // The parent's copies of the write end must be closed, or the reader never sees EOF.
    drop(command);
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "; make it executable (chmod +x and git add it, or git update-index --chmod=+x) and commit"
            } else {
                "; check its #! line"
            };
            let message = format!("{shown} could not be started: {e}{hint}");
            writeln!(log, "gitops: {message}")?;
            return Ok(Ran::failed(None, message));
        }
    };
    let (done_tx, done_rx) = mpsc::channel();
    let log_copy = log.try_clone().context("sharing the log file")?;
    std::thread::spawn(move || {
        stream_output(reader, log_copy);
        let _ = done_tx.send(());
    });

    let started = Instant::now();
    let pgid = child.id() as i32;
    // If gitops dies now, PDEATHSIG reaches the entrypoint but not what it started: the next run kills
    // what is left of this group (cron and manual runs have no systemd control group to do it).
    if let Some(leader) = procfs::process(pgid) {
        let record = format!("{pgid} {} {}\n", leader.start, procfs::boot_id());
        // Not fsynced: the record only matters while this boot lasts (it names the boot), and every
        // microsecond before it exists is one in which a killed run could leave the group unrecorded.
        if let Err(e) = crate::state::write_replace(job.group_file, record.as_bytes()) {
            log::warn!("recording the {} process group: {e:#}", job.role);
        }
    }
    // A quick entrypoint is noticed within a millisecond or two; a long one costs a wake-up every 20 ms.
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the entrypoint")? {
            break Some(status);
        }
        if started.elapsed() >= job.timeout {
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let ran = match status {
        Some(status) => judge(status, &shown),
        None => {
            log::error!("{shown} still running after {:?}; killing its process group", job.timeout);
            kill_group(pgid, &mut child);
            Ran::failed(
                None,
                format!(
                    "{shown} timed out after {:?} and was killed; raise --apply-timeout or make it faster",
                    job.timeout
                ),
            )
        }
    };
    if done_rx.recv_timeout(DRAIN_WAIT).is_err() {
        log::warn!("{shown} left a process holding its output open; not waiting for it");
    }
    let _ = std::fs::remove_file(job.group_file);
    if let Some(error) = &ran.error {
        writeln!(log, "gitops: {error}")?;
    }
    log.sync_all().ok();
    Ok(ran)
}

/// Kill what is left of an entrypoint's process group recorded by a run that died during its apply
/// (call under the run lock, before anything else). A group is ours only in the same boot, and only if
/// its leader is gone or is the very process recorded (same start time): a process group id can be
/// reused only once no process is left in the old group.
pub fn reap_survivors(group_file: &Path) {
    let Ok(record) = std::fs::read_to_string(group_file) else { return };
    let fields: Vec<&str> = record.split_whitespace().collect();
    let parsed = match fields.as_slice() {
        [pgid, start, boot] => pgid.parse::<i32>().ok().zip(start.parse::<u64>().ok()).map(|(p, s)| (p, s, *boot)),
        _ => None,
    };
    if let Some((pgid, start, boot)) = parsed
        && pgid > 1
        && boot == procfs::boot_id()
    {
        let processes = procfs::processes();
        let members = processes.iter().filter(|p| p.pgrp == pgid).count();
        let reused = processes.iter().any(|p| p.pid == pgid && p.start != start);
        if members > 0 && !reused {
            log::warn!(
                "killing {members} process(es) left in process group {pgid} by the entrypoint of a run that died; an entrypoint never runs beside the next run's"
            );
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_file(group_file);
}

fn judge(status: ExitStatus, shown: &str) -> Ran {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ran { success: true, exit_code: Some(0), error: None },
        (Some(code), _) => Ran::failed(Some(code), format!("{shown} exited with code {code}")),
        (None, Some(signal)) => Ran::failed(None, format!("{shown} was killed by signal {signal}")),
        (None, None) => Ran::failed(None, format!("{shown} ended without an exit status")),
    }
}

/// SIGTERM the group, give it a grace period, then SIGKILL whatever is left.
fn kill_group(pgid: i32, child: &mut std::process::Child) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above; members that outlived the leader are still in the group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

/// Copy the entrypoint's output to its log file and, line by line, to our log.
fn stream_output(reader: std::io::PipeReader, mut log: File) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = crate::redact::redact(&String::from_utf8_lossy(&line));
                let _ = log.write_all(text.as_bytes());
                // The log file keeps the bytes; our own log line must not let them drive a terminal.
                log::info!(target: "entrypoint", "{}", printable(text.trim_end_matches(['\n', '\r'])));
            }
        }
    }
}
