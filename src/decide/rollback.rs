//! Automatic rollback: whether a failed commit is undone, and what to go back to (pure).

use gix::ObjectId;

/// What follows a failed apply (entrypoint or health check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Leave the failed commit live; it is retried on the next runs (rollback off, or it never went live).
    Retry,
    /// Go back to this commit, the one this host applied before.
    RollBack(ObjectId),
    /// Rollback is on but there is nothing to go back to: the first deploy (retried like any failure).
    NothingToGoBackTo,
}

/// What a failure of the commit about to be applied would lead to, and who said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnFailure {
    /// Rollback is on for this commit.
    pub enabled: bool,
    /// Where that was decided: `--rollback`, `.gitops/rollout`, or neither.
    pub source: &'static str,
    /// The commit it would go back to (the one applied before), if any.
    pub to: Option<ObjectId>,
}

/// Whether rollback is on: the host's `--rollback` wins, either way; without it, `rollback=` in the
/// failed commit's `.gitops/rollout`; off when neither says.
pub fn enabled(host: Option<bool>, policy: Option<bool>) -> bool {
    host.or(policy).unwrap_or(false)
}

/// What to do after `failed` failed: `published` when it went live (a teardown that failed kept it
/// from going live: the previous revision never stopped), `previous` the commit this host applied before.
pub fn after_failure(enabled: bool, published: bool, failed: ObjectId, previous: Option<ObjectId>) -> AfterFailure {
    match previous {
        _ if !enabled || !published => AfterFailure::Retry,
        None => AfterFailure::NothingToGoBackTo,
        // A re-run of the live commit (reconcile, reapply) has nothing else to go back to.
        Some(previous) if previous == failed => AfterFailure::Retry,
        Some(previous) => AfterFailure::RollBack(previous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_setting_wins_either_way() {
        assert!(!enabled(None, None));
        assert!(enabled(None, Some(true)));
        assert!(!enabled(Some(false), Some(true)), "the host says no");
        assert!(enabled(Some(true), Some(false)), "the host says yes");
        assert!(enabled(Some(true), None));
    }

    #[test]
    fn what_follows_a_failure() {
        let (a, b) = (ObjectId::from_bytes_or_panic(&[1; 20]), ObjectId::from_bytes_or_panic(&[2; 20]));
        assert_eq!(after_failure(true, true, b, Some(a)), AfterFailure::RollBack(a));
        assert_eq!(after_failure(false, true, b, Some(a)), AfterFailure::Retry, "off");
        assert_eq!(after_failure(true, false, b, Some(a)), AfterFailure::Retry, "never went live");
        assert_eq!(after_failure(true, true, b, None), AfterFailure::NothingToGoBackTo, "first deploy");
        assert_eq!(after_failure(true, true, a, Some(a)), AfterFailure::Retry, "a reconcile of the live commit");
        assert_eq!(after_failure(false, true, b, None), AfterFailure::Retry);
    }
}
