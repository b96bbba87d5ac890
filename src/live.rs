//! What runs on the host: the revision `current` points at, and whether its entrypoint succeeded.
//!
//! Two words, one meaning each, everywhere (status, metrics, notifications, the fleet view):
//! **live** is the commit `current` points at, whatever its entrypoint did; **applied** is the last
//! commit whose entrypoint succeeded. After a failed apply they differ: the failed commit is live
//! (its entrypoint partly ran) and the previous one is the last applied.

use crate::state::State;
pub use crate::state::{LiveRecord, LiveResult};

/// The live revision as the operator is told about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// The commit `current` points at.
    pub commit: String,
    /// How its entrypoint ended.
    pub result: LiveResult,
    /// Since when it is live (RFC 3339), when known.
    pub since: Option<String>,
    /// Why its entrypoint failed.
    pub error: Option<String>,
}

/// What is live, given state.json and the commit `current` points at (`None`: nothing deployed).
/// A state.json written before the live record existed is read the way that version wrote it.
pub fn of(state: &State, current: Option<&str>) -> Option<Live> {
    let current = current?;
    if let Some(record) = state.live.as_ref().filter(|r| r.commit == current) {
        return Some(Live {
            commit: current.to_string(),
            result: record.result,
            since: Some(record.since.clone()),
            error: record.error.clone(),
        });
    }
    let attempt = state.last_attempt.as_ref().filter(|a| a.commit == current);
    let (result, since, error) = match attempt {
        // Without a live record, the last attempt at the live commit says how its entrypoint ended.
        Some(a) if !a.result.is_failure() => (LiveResult::Applied, Some(a.started_at.clone()), None),
        Some(a) if state.live.is_none() => (LiveResult::Failed, Some(a.started_at.clone()), a.error.clone()),
        _ if state.live.is_none() && state.applied_commit.as_deref() == Some(current) => {
            (LiveResult::Applied, state.applied_at.clone(), None)
        }
        _ => (LiveResult::Unfinished, None, None),
    };
    Some(Live { commit: current.to_string(), result, since, error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::state::AttemptRecord;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn attempt(commit: &str, result: Outcome) -> AttemptRecord {
        AttemptRecord {
            commit: commit.into(),
            previous_commit: None,
            result,
            attempts: 1,
            exit_code: Some(1),
            error: Some("entrypoint run.sh exited with status 1".into()),
            started_at: "2026-12-04T10:00:00Z".into(),
            finished_at: "2026-12-04T10:00:01Z".into(),
            duration_ms: 1000,
            log: "log".into(),
            served_by: None,
            reason: None,
        }
    }

    #[test]
    fn the_live_record_says_how_the_current_revision_ended() {
        let state = State {
            applied_commit: Some(A.into()),
            live: Some(LiveRecord {
                commit: B.into(),
                result: LiveResult::Failed,
                since: "2026-12-04T10:00:00Z".into(),
                error: Some("boom".into()),
            }),
            ..State::default()
        };
        let live = of(&state, Some(B)).unwrap();
        assert_eq!((live.result, live.error.as_deref()), (LiveResult::Failed, Some("boom")));
        // `current` moved on without a record (killed after the swap): nobody knows how it ended.
        let state = State { live: state.live.clone(), ..State::default() };
        assert_eq!(of(&state, Some(A)).unwrap().result, LiveResult::Unfinished);
        assert_eq!(of(&state, None), None);
    }

    #[test]
    fn an_older_state_file_is_read_from_the_applied_commit_and_the_last_attempt() {
        let failed = State {
            applied_commit: Some(A.into()),
            last_attempt: Some(attempt(B, Outcome::ApplyFailed)),
            ..State::default()
        };
        assert_eq!(of(&failed, Some(B)).unwrap().result, LiveResult::Failed);
        // A teardown that failed kept A live: A's own entrypoint succeeded.
        assert_eq!(of(&failed, Some(A)).unwrap().result, LiveResult::Applied);
        let applied = State {
            applied_commit: Some(B.into()),
            last_attempt: Some(attempt(B, Outcome::Applied)),
            ..State::default()
        };
        assert_eq!(of(&applied, Some(B)).unwrap().result, LiveResult::Applied);
        assert_eq!(of(&State::default(), Some(B)).unwrap().result, LiveResult::Unfinished);
    }
}
