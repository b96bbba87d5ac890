//! The trigger worker: runs the trigger command, one run at a time, and folds pushes that arrive
//! during a run into exactly one follow-up run.
//!
//! Why a follow-up at all: a push that lands after the running sync fetched would otherwise wait
//! for the next timer tick. Why only one: the follow-up fetches the branch tip, which holds every
//! push received before it started. The follow-up waits for the pushes to stop for [`QUIET`] first,
//! so that a burst of pushes (a merge train, a script pushing many branches' worth of commits) that
//! outlasts a short run still gets one follow-up, not one per gap between runs.

use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;

/// How long pushes must stop before a follow-up run starts (a push to an idle worker starts at once).
const QUIET: Duration = Duration::from_millis(500);

/// What a trigger request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// The worker was idle: a run starts now.
    Started,
    /// A run is in progress: one more run follows it (shared with any other push meanwhile).
    FollowUp,
}

#[derive(Debug, Default)]
struct State {
    /// A run was asked for and has not started yet.
    pending: bool,
    /// The trigger command is running.
    running: bool,
    /// When the last run was asked for.
    last_request: Option<Instant>,
}

/// Handle to the worker thread.
#[derive(Debug)]
pub struct Trigger {
    command: String,
    state: Mutex<State>,
    wake: Condvar,
}

impl Trigger {
    /// Start the worker thread that runs `command` through `/bin/sh -c`.
    pub fn spawn(command: String) -> std::io::Result<Arc<Trigger>> {
        let trigger = Arc::new(Trigger { command, state: Mutex::new(State::default()), wake: Condvar::new() });
        let worker = Arc::clone(&trigger);
        thread::Builder::new().name("trigger".into()).spawn(move || worker.work())?;
        Ok(trigger)
    }

    /// Ask for a run; never waits for one and never interrupts one.
    pub fn request(&self) -> Queued {
        let mut state = self.lock();
        state.pending = true;
        state.last_request = Some(Instant::now());
        self.wake.notify_all();
        if state.running { Queued::FollowUp } else { Queued::Started }
    }

    /// True while a run is going on or asked for (the idle timeout waits for it).
    pub fn is_busy(&self) -> bool {
        let state = self.lock();
        state.pending || state.running
    }

    // A panic elsewhere cannot leave these two flags inconsistent, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work(&self) {
        loop {
            {
                let mut state = self.lock();
                while !state.pending {
                    state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                state.pending = false;
                state.running = true;
            }
            self.run_once();
            let mut state = self.lock();
            // Asked for during the run: a follow-up, once the pushes have stopped for QUIET.
            while state.pending
                && let Some(quiet_left) = state.last_request.map(|at| QUIET.saturating_sub(at.elapsed()))
                && !quiet_left.is_zero()
            {
                state = self.wake.wait_timeout(state, quiet_left).unwrap_or_else(PoisonError::into_inner).0;
            }
            state.running = false;
        }
    }

    fn run_once(&self) {
        let started = Instant::now();
        log::info!("trigger: running {:?}", self.command);
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            // The socket-activation variables were meant for us, not for what we start.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .status();
        // A trigger command that is `gitops sync` itself exits 10 when it applied something: a success.
        let fine = [Outcome::Success, Outcome::Applied, Outcome::Deferred].map(|o| Some(i32::from(o.code())));
        match status {
            Ok(status) if fine.contains(&status.code()) => {
                log::info!("trigger: done in {:.2?} ({status})", started.elapsed())
            }
            Ok(status) => log::warn!(
                "trigger command {:?} {status} after {:.2?}; the next push or the timer tries again (for gitops.service see journalctl -u gitops.service)",
                self.command,
                started.elapsed()
            ),
            Err(e) => {
                log::error!("trigger command {:?}: cannot start /bin/sh: {e}; check that /bin/sh exists", self.command)
            }
        }
    }
}
