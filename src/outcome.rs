//! The exit-code contract: every way a run can end and the one code it exits with.

use std::fmt;

/// How a command ended; each variant maps to exactly one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Nothing to do: the remote commit is the deployed one.
    #[default]
    UpToDate,
    /// A new commit was checked out and its entrypoint succeeded.
    Applied,
    /// A new commit is held back on purpose (rollout wave or gate, pause, suspend); nothing changed.
    Deferred,
    /// The remote branch is behind the deployed commit (it was rewound).
    NeedPush,
    /// Remote and deployed histories diverged (force-push).
    Diverged,
    /// The entrypoint failed or timed out; it is retried on the next run.
    ApplyFailed,
    /// A commit or tag that must be signed was not signed by an allowed key.
    VerifyFailed,
    /// A secret for this host could not be decrypted, or a secret failed authentication (tampered, truncated).
    SecretsFailed,
    /// The commit failed its entrypoint or health check and the host went back to the commit before.
    RolledBack,
    /// The commit failed, and going back to the commit before failed too.
    RollbackFailed,
    /// Fetch, disk or other runtime failure.
    Runtime,
    /// Bad flags, environment or configuration file.
    Usage,
    /// Another run holds the lock.
    Locked,
    /// A command other than `sync` did what was asked (status healthy, units written, webhook idle).
    Success,
    /// `gitops fleet`: some host is failing, misconfigured, stale, missing, halted or behind the tip.
    FleetUnsettled,
    /// `gitops check`: the fleet would refuse or fail on what was checked.
    CheckFindings,
    /// `gitops fleet`: nobody is unsettled and some hosts hold the tip back on purpose or have not polled since the
    /// push (a rollout going as planned).
    FleetRollingOut,
    /// `gitops fleet`: no host reported with the selector (and branch); a typo is not a converged fleet.
    FleetNoHosts,
}

impl Outcome {
    /// Every way `gitops sync` can end, in the order the exit-code table lists them.
    pub const SYNC: [Outcome; 13] = [
        Outcome::UpToDate,
        Outcome::Applied,
        Outcome::Deferred,
        Outcome::NeedPush,
        Outcome::Diverged,
        Outcome::ApplyFailed,
        Outcome::VerifyFailed,
        Outcome::SecretsFailed,
        Outcome::RolledBack,
        Outcome::RollbackFailed,
        Outcome::Runtime,
        Outcome::Usage,
        Outcome::Locked,
    ];

    /// Every way `gitops fleet` can end, in the order its exit-code table lists them.
    pub const FLEET: [Outcome; 6] = [
        Outcome::Success,
        Outcome::FleetRollingOut,
        Outcome::FleetUnsettled,
        Outcome::FleetNoHosts,
        Outcome::Runtime,
        Outcome::Usage,
    ];

    /// The process exit code for this outcome.
    pub const fn code(self) -> u8 {
        match self {
            Outcome::UpToDate | Outcome::Success => 0,
            Outcome::Runtime | Outcome::CheckFindings => 1,
            Outcome::Usage => 2,
            Outcome::Applied => 10,
            Outcome::Deferred => 11,
            Outcome::NeedPush => 20,
            Outcome::Diverged => 21,
            Outcome::ApplyFailed => 30,
            Outcome::VerifyFailed => 31,
            Outcome::SecretsFailed => 32,
            Outcome::RolledBack => 33,
            Outcome::RollbackFailed => 34,
            Outcome::FleetUnsettled => 3,
            Outcome::FleetRollingOut => 4,
            Outcome::FleetNoHosts => 5,
            Outcome::Locked => 75,
        }
    }

    /// The short name used in logs, state.json, notifications and metrics labels.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up-to-date",
            Outcome::Applied => "applied",
            Outcome::Deferred => "deferred",
            Outcome::NeedPush => "need-push",
            Outcome::Diverged => "diverged",
            Outcome::ApplyFailed => "apply-failed",
            Outcome::VerifyFailed => "verify-failed",
            Outcome::SecretsFailed => "secrets-failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::RollbackFailed => "rollback-failed",
            Outcome::Runtime => "error",
            Outcome::Usage => "usage-error",
            Outcome::Locked => "locked",
            Outcome::Success => "ok",
            Outcome::FleetUnsettled => "unsettled",
            Outcome::CheckFindings => "findings",
            Outcome::FleetRollingOut => "rolling-out",
            Outcome::FleetNoHosts => "no-hosts",
        }
    }

    /// What the code means to an operator, as the exit-code table says it.
    pub const fn meaning(self) -> &'static str {
        match self {
            Outcome::UpToDate => "nothing to do",
            Outcome::Applied => "a new commit was checked out and its entrypoint succeeded",
            Outcome::Deferred => "held back on purpose (rollout wave or gate, pause, suspend); the live revision stays",
            Outcome::NeedPush => "the remote branch is behind the deployed commit; nothing changed",
            Outcome::Diverged => "remote and deployed histories diverged; nothing changed",
            Outcome::ApplyFailed => "the entrypoint or health check failed (retried next run unless rolled back)",
            Outcome::VerifyFailed => "a commit (or tag) is not signed by an allowed key; nothing changed",
            Outcome::SecretsFailed => "this host cannot decrypt a secret, or one was tampered with; nothing changed",
            Outcome::RolledBack => "the commit failed and was undone; the commit before is live again",
            Outcome::RollbackFailed => "the commit failed and going back failed too; the host needs attention",
            Outcome::Runtime => "runtime error (fetch failed, repo unreachable, disk); the message says what and why",
            Outcome::Usage => "usage or configuration error",
            Outcome::Locked => "another run holds the lock",
            Outcome::Success => "done",
            Outcome::CheckFindings => {
                "findings (one line each): hosts would refuse or fail on it, or it could not be read"
            }
            Outcome::FleetUnsettled => "some host is failing, misconfigured, stale, missing, halted or behind the tip",
            Outcome::FleetRollingOut => {
                "rolling out as planned: none unsettled, some wait (wave, gate, pause, suspend) or are pending"
            }
            Outcome::FleetNoHosts => "no host matched the selector (and --branch): a typo is not a converged fleet",
        }
    }

    /// Whether a run that ended so needs an operator's attention (health, `--notify-on failure`).
    pub const fn is_failure(self) -> bool {
        !matches!(self, Outcome::UpToDate | Outcome::Applied | Outcome::Deferred | Outcome::Locked | Outcome::Success)
    }

    /// The outcome a label names (state files and reports written by this or an earlier version).
    pub fn from_label(label: &str) -> Option<Outcome> {
        Outcome::SYNC.into_iter().chain([Outcome::Success]).find(|o| o.label() == label)
    }

    /// End the process now with this outcome's code, from a thread that cannot hand it back to `main`
    /// (the fetch watchdog, when the fetch is stuck in a read nothing can interrupt).
    pub fn exit_now(self) -> ! {
        std::process::exit(i32::from(self.code()))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

impl<'de> serde::Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let label = String::deserialize(deserializer)?;
        Outcome::from_label(&label).ok_or_else(|| serde::de::Error::custom(format!("unknown result {label:?}")))
    }
}

/// An exit-code table for `--help`: one `code  meaning` line per row.
pub fn exit_codes_help(rows: impl IntoIterator<Item = (Outcome, String)>) -> String {
    let mut help = String::from("Exit codes:");
    for (outcome, meaning) in rows {
        help.push_str(&format!("\n{:>4}  {meaning}", outcome.code()));
    }
    help
}

/// The table of `gitops sync`'s exit codes (the README and the man page carry the same rows).
pub fn sync_exit_codes_help() -> String {
    exit_codes_help(Outcome::SYNC.map(|o| (o, format!("{}: {}", o.label(), o.meaning()))))
}

/// An error that ends a run, tagged with the outcome that decides its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Which exit code this failure maps to.
    pub outcome: Outcome,
    /// The human story: what failed, why, and what to do.
    pub error: anyhow::Error,
}

impl Failure {
    /// A secret that stops the run (exit 32).
    pub fn secrets(error: impl Into<anyhow::Error>) -> Self {
        Failure { outcome: Outcome::SecretsFailed, error: error.into() }
    }

    /// A configuration or usage error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure { outcome: Outcome::Usage, error: error.into() }
    }
}

impl Failure {
    /// The error chain on one line: "what failed: why: underlying cause".
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for cause in self.error.chain() {
            let text = cause.to_string().replace('\n', " ");
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            // An explained error says it all; what is under it is for code, not for the operator.
            if cause.is::<crate::remote_error::Explained>() {
                break;
            }
        }
        parts.join(": ")
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure { outcome: Outcome::Runtime, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_codes_are_distinct_and_only_share_the_generic_ones_with_sync() {
        let mut codes: Vec<u8> = Outcome::FLEET.iter().map(|o| o.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
        for fleet in [Outcome::FleetRollingOut, Outcome::FleetUnsettled, Outcome::FleetNoHosts] {
            assert!(Outcome::SYNC.iter().all(|o| o.code() != fleet.code()), "{fleet}");
        }
    }

    #[test]
    fn sync_codes_are_distinct_labelled_and_listed_in_help() {
        let mut codes: Vec<u8> = Outcome::SYNC.iter().map(|o| o.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Outcome::SYNC.len());
        let help = sync_exit_codes_help();
        for outcome in Outcome::SYNC.into_iter().chain([Outcome::Success]) {
            assert_eq!(Outcome::from_label(outcome.label()), Some(outcome));
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
        }
        for outcome in Outcome::SYNC {
            assert!(
                help.contains(&format!("{:>4}  {}: ", outcome.code(), outcome.label())),
                "{outcome} missing: {help}"
            );
        }
    }
}
