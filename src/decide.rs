//! The pure decision: what to do given the deployed commit, the remote commit and their merge base.

use gix::ObjectId;

/// What the comparison of deployed and remote history calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The remote commit is the deployed one.
    UpToDate,
    /// The remote descends from the deployed commit, or nothing was deployed yet.
    Apply,
    /// The remote is an ancestor of the deployed commit: the branch was rewound.
    NeedPush,
    /// Neither contains the other (force-push), or the deployed commit is unknown to the remote.
    Diverged,
}

/// Decide from `deployed` (None before the first deploy), `remote`, and their merge base
/// (None when they share no history or the deployed commit is not in the cache).
pub fn decide(deployed: Option<ObjectId>, remote: ObjectId, merge_base: Option<ObjectId>) -> Decision {
    let Some(deployed) = deployed else {
        return Decision::Apply;
    };
    if deployed == remote {
        Decision::UpToDate
    } else if merge_base == Some(deployed) {
        Decision::Apply
    } else if merge_base == Some(remote) {
        Decision::NeedPush
    } else {
        Decision::Diverged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    #[test]
    fn table() {
        let (a, b, c) = (id(1), id(2), id(3));
        let cases = [
            // (deployed, remote, merge base) -> decision
            (None, a, None, Decision::Apply),
            (Some(a), a, Some(a), Decision::UpToDate),
            (Some(a), a, None, Decision::UpToDate),
            (Some(a), b, Some(a), Decision::Apply),
            (Some(b), a, Some(a), Decision::NeedPush),
            (Some(a), b, Some(c), Decision::Diverged),
            (Some(a), b, None, Decision::Diverged),
        ];
        for (deployed, remote, base, want) in cases {
            assert_eq!(decide(deployed, remote, base), want, "{deployed:?} {remote:?} {base:?}");
        }
    }
}

/// Whether to run the entrypoint for a commit the decision says to apply, given earlier failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Run it; this is attempt number `n` (1-based) for that commit.
    Run(u32),
    /// The commit already failed `n` times in a row: wait for a newer commit or `--retry`.
    GiveUp(u32),
}

/// Plan the attempt at `target`, given the last failed commit and its consecutive failure count.
pub fn plan_attempt(target: ObjectId, last_failed: Option<(ObjectId, u32)>, max_attempts: u32, retry: bool) -> Attempt {
    match last_failed {
        Some((commit, failures)) if commit == target => {
            if failures >= max_attempts && !retry {
                Attempt::GiveUp(failures)
            } else {
                Attempt::Run(failures + 1)
            }
        }
        _ => Attempt::Run(1),
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    #[test]
    fn retries_until_max_then_gives_up_until_new_commit_or_retry() {
        let (a, b) = (ObjectId::from_bytes_or_panic(&[1; 20]), ObjectId::from_bytes_or_panic(&[2; 20]));
        assert_eq!(plan_attempt(a, None, 3, false), Attempt::Run(1));
        assert_eq!(plan_attempt(a, Some((a, 1)), 3, false), Attempt::Run(2));
        assert_eq!(plan_attempt(a, Some((a, 2)), 3, false), Attempt::Run(3));
        assert_eq!(plan_attempt(a, Some((a, 3)), 3, false), Attempt::GiveUp(3));
        assert_eq!(plan_attempt(a, Some((a, 3)), 3, true), Attempt::Run(4));
        assert_eq!(plan_attempt(b, Some((a, 3)), 3, false), Attempt::Run(1));
    }
}
