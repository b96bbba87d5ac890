//! A deadline for work that may block in a read we cannot interrupt (a fetch over a stalled network).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::outcome::Outcome;
use crate::procfs;

/// How long the blocked work gets to notice its killed children before the process gives up.
const GRACE: Duration = Duration::from_secs(3);

/// Run `work`; if it has not finished after `timeout`, kill our child processes (ssh, upload-pack) so
/// it fails, and if it still does not return, log `what` and end the process as a runtime failure
/// (nothing has been written yet).
/// Returns the work's result and whether the deadline passed.
pub fn run<T>(timeout: Duration, what: &str, work: impl FnOnce() -> T) -> (T, bool) {
    let (done, wait) = mpsc::channel::<()>();
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let what = what.to_string();
    let watchdog = std::thread::spawn(move || {
        if !matches!(wait.recv_timeout(timeout), Err(RecvTimeoutError::Timeout)) {
            return;
        }
        flag.store(true, Ordering::SeqCst);
        kill_descendants();
        if matches!(wait.recv_timeout(GRACE), Err(RecvTimeoutError::Timeout)) {
            log::error!(
                "{what}: no answer within --fetch-timeout {timeout:?}; nothing changed; check the network and the Git server"
            );
            Outcome::Runtime.exit_now();
        }
    });
    let result = work();
    let _ = done.send(());
    let _ = watchdog.join();
    (result, expired.load(Ordering::SeqCst))
}

/// SIGKILL every process descended from this one.
fn kill_descendants() {
    let parents: Vec<(i32, i32)> = procfs::processes().iter().map(|p| (p.pid, p.ppid)).collect();
    let mut victims = vec![std::process::id() as i32];
    let mut index = 0;
    while index < victims.len() {
        let parent = victims[index];
        victims.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    for pid in victims.into_iter().skip(1) {
        // SAFETY: kill(2) only sends a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
