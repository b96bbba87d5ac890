//! Which attempt at a commit a run would be, and when to give up on it (`--max-attempts`, `--retry`).

use gix::ObjectId;

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
mod tests {
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
