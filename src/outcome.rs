//! The exit-code contract: every way a run can end and the one code it exits with.

use std::fmt;

/// How a run ended; each variant maps to exactly one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: the remote commit is the deployed one.
    UpToDate,
    /// A new commit was checked out and its entrypoint succeeded.
    Applied,
    /// The remote branch is behind the deployed commit (it was rewound).
    NeedPush,
    /// Remote and deployed histories diverged (force-push).
    Diverged,
    /// The entrypoint failed or timed out; it is retried on the next run.
    ApplyFailed,
    /// A commit or tag that must be signed was not signed by an allowed key.
    VerifyFailed,
    /// Fetch, disk or other runtime failure.
    Runtime,
    /// Bad flags, environment or configuration file.
    Usage,
    /// Another run holds the lock.
    Locked,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub const fn code(self) -> u8 {
        match self {
            Outcome::UpToDate => 0,
            Outcome::Runtime => 1,
            Outcome::Usage => 2,
            Outcome::Applied => 10,
            Outcome::NeedPush => 20,
            Outcome::Diverged => 21,
            Outcome::ApplyFailed => 30,
            Outcome::VerifyFailed => 31,
            Outcome::Locked => 75,
        }
    }

    /// The short name used in logs and state.json.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up-to-date",
            Outcome::Applied => "applied",
            Outcome::NeedPush => "need-push",
            Outcome::Diverged => "diverged",
            Outcome::ApplyFailed => "apply-failed",
            Outcome::VerifyFailed => "verify-failed",
            Outcome::Runtime => "error",
            Outcome::Usage => "usage-error",
            Outcome::Locked => "locked",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The exit-code table shown in `--help` (the README carries the same table).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  up-to-date: nothing to do
  10  applied: a new commit was checked out and its entrypoint succeeded
  20  need-push: the remote branch is behind the deployed commit; nothing changed
  21  diverged: remote and deployed histories diverged; nothing changed
  30  apply failed: entrypoint exited non-zero or timed out (retried next run)
  31  verification failed: a commit is not signed by an allowed key; nothing changed
   1  runtime error (fetch failed, repo unreachable, disk)
   2  usage or configuration error
  75  another run holds the lock";

/// An error that ends a run, tagged with the outcome that decides its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Which exit code this failure maps to.
    pub outcome: Outcome,
    /// The human story: what failed, why, and what to do.
    pub error: anyhow::Error,
}

impl Failure {
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

    const ALL: [Outcome; 9] = [
        Outcome::VerifyFailed,
        Outcome::UpToDate,
        Outcome::Applied,
        Outcome::NeedPush,
        Outcome::Diverged,
        Outcome::ApplyFailed,
        Outcome::Runtime,
        Outcome::Usage,
        Outcome::Locked,
    ];

    #[test]
    fn codes_are_distinct_and_listed_in_help() {
        let mut codes: Vec<u8> = ALL.iter().map(|o| o.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
        for outcome in ALL {
            let line = format!("{:>4}  ", outcome.code());
            assert!(EXIT_CODES_HELP.contains(&line), "{outcome} missing from help");
        }
    }
}
