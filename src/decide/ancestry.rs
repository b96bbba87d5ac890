//! What the remote commit is to this host, from the deployed commit, the remote commit and their merge
//! base: up to date, a step forward (or another reason to apply it), or a step back or sideways to refuse.

use gix::ObjectId;

/// What this host knows about the remote commit, gathered before deciding (all plain data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// The applied commit (None before the first deploy).
    pub deployed: Option<ObjectId>,
    /// The remote commit just fetched.
    pub remote: ObjectId,
    /// Merge base of the two (None when they share no history or the deployed commit is not in the cache).
    pub merge_base: Option<ObjectId>,
    /// The remote commit is one this host applied before (state.json's `applied_history`).
    pub applied_before: bool,
    /// The live revision (`current`) is the remote commit's checkout.
    pub live_is_remote: bool,
}

/// The operator's permissions to move backwards or sideways (`--allow-rewind`, `--allow-diverged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allowed {
    /// Deploy a rewound branch.
    pub rewind: bool,
    /// Deploy a diverged branch.
    pub diverged: bool,
}

/// What the run does about the remote commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The remote commit is the deployed and live one.
    UpToDate,
    /// Check out and apply the remote commit, for this reason.
    Apply(Why),
    /// Refuse the remote commit: nothing changes.
    Refuse(Refusal),
}

/// Why the remote commit is refused (without `--allow-rewind` / `--allow-diverged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The remote is behind the deployed commit (a rewind or a rollback).
    NeedPush,
    /// Neither contains the other (force-push), or the deployed commit is unknown.
    Diverged,
}

/// Why a commit is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Nothing was deployed yet.
    FirstDeploy,
    /// The remote descends from the deployed commit.
    FastForward,
    /// It is the applied commit, but another revision is live (a later one was checked out, failed, and
    /// was reverted): converge on it again.
    Reapply,
    /// A rewind or rollback, allowed by `--allow-rewind`.
    Rewind,
    /// A diverged history, allowed by `--allow-diverged`.
    Diverged,
    /// The live commit came from a testing branch that is gone, merged or off the branch: back to the branch.
    LeaveTesting,
    /// The live commit again, on the `--reapply-every` schedule, to repair drift.
    Reconcile,
    /// Back to the commit this host applied before, after a newer one failed (automatic rollback).
    Rollback,
}

impl Why {
    /// `GITOPS_REASON` for the entrypoint: `reconcile` on the `--reapply-every` schedule (retries of it
    /// included), `rollback` when going back after a failure, `retry` for another attempt at a commit
    /// that failed, `new-commit` otherwise.
    pub fn reason(self, attempt: u32) -> &'static str {
        match self {
            Why::Reconcile => "reconcile",
            Why::Rollback => "rollback",
            _ if attempt > 1 => "retry",
            _ => "new-commit",
        }
    }
}

/// What `history.remote` is to this host.
pub fn compare(history: &History, allowed: Allowed) -> Decision {
    let History { deployed, remote, merge_base, applied_before, live_is_remote } = *history;
    let Some(deployed) = deployed else {
        return Decision::Apply(Why::FirstDeploy);
    };
    if deployed == remote {
        return if live_is_remote { Decision::UpToDate } else { Decision::Apply(Why::Reapply) };
    }
    if merge_base == Some(deployed) {
        return Decision::Apply(Why::FastForward);
    }
    // A commit this host applied before is a rollback, even when the cache no longer knows the history.
    let rewound = merge_base == Some(remote) || applied_before;
    match (rewound, allowed) {
        (true, Allowed { rewind: true, .. }) => Decision::Apply(Why::Rewind),
        (true, _) => Decision::Refuse(Refusal::NeedPush),
        (false, Allowed { diverged: true, .. }) => Decision::Apply(Why::Diverged),
        (false, _) => Decision::Refuse(Refusal::Diverged),
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
        let none = Allowed::default();
        let rewind = Allowed { rewind: true, diverged: false };
        let diverged = Allowed { rewind: false, diverged: true };
        let cases = [
            // (deployed, remote, merge base, applied before, live is remote, allowed) -> decision
            (None, a, None, false, false, none, Decision::Apply(Why::FirstDeploy)),
            (Some(a), a, Some(a), true, true, none, Decision::UpToDate),
            (Some(a), a, None, true, true, none, Decision::UpToDate),
            (Some(a), a, None, true, false, none, Decision::Apply(Why::Reapply)),
            (Some(a), b, Some(a), false, false, none, Decision::Apply(Why::FastForward)),
            (Some(b), a, Some(a), true, false, none, Decision::Refuse(Refusal::NeedPush)),
            (Some(b), a, Some(a), false, false, rewind, Decision::Apply(Why::Rewind)),
            (Some(b), a, Some(a), false, false, diverged, Decision::Refuse(Refusal::NeedPush)),
            (Some(a), b, Some(c), false, false, none, Decision::Refuse(Refusal::Diverged)),
            (Some(a), b, None, false, false, none, Decision::Refuse(Refusal::Diverged)),
            (Some(a), b, None, false, false, rewind, Decision::Refuse(Refusal::Diverged)),
            (Some(a), b, None, false, false, diverged, Decision::Apply(Why::Diverged)),
            // A rollback to a commit applied before, with the cache rebuilt (no merge base): still a rewind.
            (Some(a), b, None, true, false, none, Decision::Refuse(Refusal::NeedPush)),
            (Some(a), b, Some(c), true, false, rewind, Decision::Apply(Why::Rewind)),
        ];
        for (deployed, remote, merge_base, applied_before, live_is_remote, allowed, want) in cases {
            let history = History { deployed, remote, merge_base, applied_before, live_is_remote };
            assert_eq!(compare(&history, allowed), want, "{history:?} {allowed:?}");
        }
    }
}
