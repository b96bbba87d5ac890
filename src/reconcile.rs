//! `--reapply-every`: when the live commit's entrypoint is due to run again to repair drift, and how
//! a failing reconcile backs off (retried like any failure, then left until the next period).

use gix::ObjectId;

use crate::clock;
use crate::state::State;

/// What the schedule says about the live commit at a poll that found nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Its last successful run is recent enough.
    NotYet,
    /// Run its entrypoint; this is attempt `n` of the reconcile.
    Run(u32),
    /// The reconcile failed `n` times in a row within this period: wait for the next one (exit 30 meanwhile).
    GaveUp(u32),
}

/// Whether `live` is due, `every_secs` after its last successful run (apply or reconcile). Failed
/// reconciles are retried on the following polls up to `max_attempts`; after that, the next try is a
/// period after the last failure — never every poll.
pub fn due(state: &State, live: ObjectId, every_secs: i64, max_attempts: u32, retry: bool, now: i64) -> Due {
    let seconds = |at: Option<&str>| at.and_then(clock::unix_seconds).map(|t| t as i64);
    let last_ok = seconds(state.reconciled_at.as_deref()).max(seconds(state.applied_at.as_deref()));
    if last_ok.is_some_and(|ok| now.saturating_sub(ok) < every_secs) {
        return Due::NotYet;
    }
    let live = live.to_string();
    let failed = state.last_failure().filter(|(commit, _)| *commit == live).map(|(_, n)| n);
    let Some(failures) = failed else { return Due::Run(1) };
    if failures < max_attempts || retry {
        return Due::Run(failures + 1);
    }
    let last_try = state.last_attempt.as_ref().and_then(|a| seconds(Some(a.finished_at.as_str())));
    match last_try {
        Some(at) if now.saturating_sub(at) < every_secs => Due::GaveUp(failures),
        // A new period: a fresh round of attempts.
        _ => Due::Run(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::state::AttemptRecord;

    const HOUR: i64 = 3600;

    fn at(seconds: i64) -> String {
        clock::rfc3339(seconds).unwrap()
    }

    fn failed(commit: ObjectId, attempts: u32, finished: i64) -> AttemptRecord {
        AttemptRecord {
            commit: commit.to_string(),
            previous_commit: None,
            result: Outcome::ApplyFailed,
            attempts,
            exit_code: Some(1),
            error: None,
            started_at: at(finished),
            finished_at: at(finished),
            duration_ms: 0,
            log: "x.log".into(),
            served_by: None,
            reason: None,
        }
    }

    #[test]
    fn schedule_then_retries_then_waits_a_period() {
        let live = ObjectId::from_bytes_or_panic(&[7; 20]);
        let t0 = 1_800_000_000;
        let mut state = State { applied_commit: Some(live.to_string()), applied_at: Some(at(t0)), ..State::default() };
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + HOUR - 1), Due::NotYet);
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + HOUR), Due::Run(1));
        state.reconciled_at = Some(at(t0 + HOUR));
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + HOUR + 60), Due::NotYet, "a reconcile restarts the period");
        state.last_attempt = Some(failed(live, 1, t0 + 2 * HOUR));
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + 2 * HOUR + 60), Due::Run(2));
        state.last_attempt = Some(failed(live, 3, t0 + 2 * HOUR + 120));
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + 2 * HOUR + 180), Due::GaveUp(3));
        assert_eq!(due(&state, live, HOUR, 3, true, t0 + 2 * HOUR + 180), Due::Run(4));
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + 3 * HOUR + 120), Due::Run(1), "next period");
        let other = ObjectId::from_bytes_or_panic(&[8; 20]);
        state.last_attempt = Some(failed(other, 3, t0 + 2 * HOUR));
        assert_eq!(due(&state, live, HOUR, 3, false, t0 + 2 * HOUR + 60), Due::Run(1), "another commit's failures");
    }
}
