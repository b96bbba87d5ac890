//! The trigger worker: runs the trigger command, one run at a time, and folds pushes that arrive
//! during a run into exactly one follow-up run.
//!
//! Why a follow-up at all: a push that lands after the running sync fetched would otherwise wait
//! for the next timer tick. Why only one: the follow-up fetches the branch tip, which holds every
//! push received before it started.

use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

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
            self.lock().running = false;
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
        match status {
            Ok(status) if status.success() => {
                log::info!("trigger: done in {:.2?}", started.elapsed())
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
